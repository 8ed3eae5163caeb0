#pragma once
/// \file top_p.hpp
/// Nucleus (top-p) filtering (HF `TopPLogitsWarper`): sort ascending, accumulate probabilities,
/// mask the tokens whose cumulative probability is <= 1 - top_p; the `min_tokens_to_keep` best
/// are always kept. Ties follow the library rule (the lower token id ranks higher).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <span>
#include <string>

#include "itscale/core/errors.hpp"
#include "itscale/processors/probabilities.hpp"
#include "itscale/processors/processor.hpp"

namespace itscale {
inline namespace v0 {

namespace detail {
/// Fills `ids[0, n)` with 0..n-1 ordered from the lowest-ranked token to the highest.
inline void sort_by_rank_ascending(std::span<const float> row, std::span<token_id> ids) noexcept {
  std::iota(ids.begin(), ids.end(), token_id{0});
  std::sort(ids.begin(), ids.end(), [row](token_id a, token_id b) {
    const float va = row[static_cast<std::size_t>(a)], vb = row[static_cast<std::size_t>(b)];
    return va < vb || (va == vb && a > b);
  });
}
}  // namespace detail

class top_p_filter {
 public:
  /// Throws `invalid_option` unless 0 < top_p <= 1 and min_tokens_to_keep >= 1. A double, as in
  /// HF where `1 - top_p` is computed in Python before torch rounds it to float32: from a float
  /// 0.9f the cut would land three float steps away from HF's.
  explicit top_p_filter(double top_p, std::size_t min_tokens_to_keep = 1)
      : p_(top_p), min_keep_(min_tokens_to_keep) {
    if (!(top_p > 0 && top_p <= 1))
      throw invalid_option("itscale: top_p must be in (0, 1], got " + detail::num(top_p));
    if (min_tokens_to_keep == 0) throw invalid_option("itscale: min_tokens_to_keep must be >= 1, got 0");
  }

  void apply(std::span<float> row, const step_context& ctx) const noexcept {
    const std::size_t n = row.size();
    auto ids = std::span(ctx.ws->ids).first(n);
    auto probs = std::span(ctx.ws->values).first(n);
    detail::sort_by_rank_ascending(row, ids);
    // HF softmaxes the sorted row: same values, but torch's float sum runs in sorted order.
    for (std::size_t j = 0; j < n; ++j) probs[j] = row[static_cast<std::size_t>(ids[j])];
    detail::softmax_f32(probs, probs);
    // HF compares the float32 cumulative sum with (1 - top_p) rounded to float32.
    const auto cut = static_cast<float>(1.0 - p_);
    const std::size_t protected_from = n > min_keep_ ? n - min_keep_ : 0;
    double cum = 0;
    for (std::size_t j = 0; j < protected_from; ++j) {
      cum += probs[j];
      if (static_cast<float>(cum) <= cut) row[static_cast<std::size_t>(ids[j])] = masked_logit;
      else break;  // the cumulative sum only grows: nothing after j is removed
    }
  }

 private:
  double p_;
  std::size_t min_keep_;
};

}  // namespace v0
}  // namespace itscale
