#pragma once
/// \file top_p.hpp
/// Nucleus (top-p) filtering (HF `TopPLogitsWarper`): sort ascending, accumulate probabilities,
/// mask the tokens whose cumulative probability is <= 1 - top_p; the `min_tokens_to_keep` best
/// are always kept. Ties follow the library rule (the lower token id ranks higher).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/processors/live_set.hpp"
#include "itscale/processors/probabilities.hpp"
#include "itscale/processors/processor.hpp"

ITSCALE_BEGIN_NAMESPACE

namespace detail {
/// Orders the tokens `ids` from the lowest-ranked to the highest.
inline void sort_by_rank_ascending(std::span<const float> row, std::span<token_id> ids) noexcept {
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

  void apply(std::span<float> row, const step_context& ctx) const noexcept { (void)apply(row, ctx, live_set{}); }

  /// As `apply`, touching only the unmasked tokens `live` (listed first if unknown); returns the
  /// tokens left unmasked.
  live_set apply(std::span<float> row, const step_context& ctx, live_set live) const noexcept {
    const std::span<token_id> alive = detail::list_live(row, live, *ctx.ws);
    const std::size_t n = row.size(), S = alive.size();
    if (S == 0) return {alive, true};
    // HF sorts the whole row ascending: the n - S masked tokens come first (probability 0), so
    // the survivors sit at sorted positions M + r and only they need sorting.
    const std::size_t M = n - S;
    auto ids = std::span(ctx.ws->ids).first(S);
    auto probs = std::span(ctx.ws->values).first(S);
    std::copy(alive.begin(), alive.end(), ids.begin());
    detail::sort_by_rank_ascending(row, ids);
    // HF softmaxes the sorted row: torch's float lane sum runs over sorted positions.
    const float m = row[static_cast<std::size_t>(ids[S - 1])];
    for (std::size_t r = 0; r < S; ++r) probs[r] = std::exp(row[static_cast<std::size_t>(ids[r])] - m);
    const float inv = 1.0f / detail::torch_lane_sum_at(
                                 S, [M](std::size_t r) { return M + r; }, [probs](std::size_t r) { return probs[r]; });
    // HF compares the float32 cumulative sum with (1 - top_p) rounded to float32; the masked
    // prefix adds zeros.
    const auto cut = static_cast<float>(1.0 - p_);
    const std::size_t protected_from = n > min_keep_ ? n - min_keep_ : 0;
    double cum = 0;
    bool masked_any = false;
    for (std::size_t r = 0; M + r < protected_from; ++r) {
      cum += probs[r] * inv;
      if (static_cast<float>(cum) > cut) break;  // the cumulative sum only grows: nothing after r is removed
      row[static_cast<std::size_t>(ids[r])] = masked_logit;
      masked_any = true;
    }
    return masked_any ? detail::prune_live(row, alive) : live_set{alive, true};
  }

 private:
  double p_;
  std::size_t min_keep_;
};

ITSCALE_END_NAMESPACE
