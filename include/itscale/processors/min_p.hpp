#pragma once
/// \file min_p.hpp
/// Min-p filtering (HF `MinPLogitsWarper`, Nguyen et al. 2024): masks tokens whose probability is
/// below min_p times the probability of the most likely token; the `min_tokens_to_keep` best
/// (library tie rule) are always kept.

#include <cstddef>
#include <span>
#include <string>

#include "itscale/core/errors.hpp"
#include "itscale/kernels/top_k.hpp"
#include "itscale/processors/probabilities.hpp"
#include "itscale/processors/processor.hpp"

namespace itscale {
inline namespace v0 {

class min_p_filter {
 public:
  /// Throws `invalid_option` unless 0 <= min_p <= 1 and min_tokens_to_keep >= 1.
  explicit min_p_filter(float min_p, std::size_t min_tokens_to_keep = 1)
      : min_p_(min_p), min_keep_(min_tokens_to_keep) {
    if (!(min_p >= 0 && min_p <= 1))
      throw invalid_option("itscale: min_p must be in [0, 1], got " + detail::num(min_p));
    if (min_tokens_to_keep == 0) throw invalid_option("itscale: min_tokens_to_keep must be >= 1, got 0");
  }

  void apply(std::span<float> row, const step_context& ctx) const noexcept {
    const std::size_t n = row.size();
    auto probs = std::span(ctx.ws->values).first(n);
    detail::softmax_f32(row, probs);
    float top = 0;
    for (float p : probs) top = p > top ? p : top;
    const float threshold = min_p_ * top;
    // The min_tokens_to_keep best tokens survive whatever their probability.
    const std::size_t keep = min_keep_ < n ? min_keep_ : n;
    auto best = std::span(ctx.ws->ids).first(keep);
    auto best_values = std::span(ctx.ws->values2).first(keep);
    kernels::top_k(row, best, best_values);
    for (token_id t : best) probs[static_cast<std::size_t>(t)] = threshold;  // mark as kept
    for (std::size_t i = 0; i < n; ++i)
      if (probs[i] < threshold) row[i] = masked_logit;
  }

 private:
  float min_p_;
  std::size_t min_keep_;
};

}  // namespace v0
}  // namespace itscale
