#pragma once
/// \file epsilon_eta.hpp
/// Truncation sampling of Hewitt et al. 2022 (HF `EpsilonLogitsWarper`, `EtaLogitsWarper`):
/// epsilon masks tokens with probability below a fixed epsilon; eta below
/// min(epsilon, sqrt(epsilon) * exp(-entropy)). Both keep the `min_tokens_to_keep` best.

#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "itscale/core/errors.hpp"
#include "itscale/kernels/top_k.hpp"
#include "itscale/processors/probabilities.hpp"
#include "itscale/processors/processor.hpp"

namespace itscale {
inline namespace v0 {

namespace detail {
/// Masks tokens with probability < cutoff, except those at or above the k-th largest logit
/// (HF's `scores < topk(scores, k)[-1]` guard, so ties at the k-th value survive too).
inline void mask_below_probability(std::span<float> row, float cutoff, std::size_t min_keep,
                                   workspace& ws) noexcept {
  const std::size_t n = row.size();
  auto probs = std::span(ws.values2).first(n);
  softmax_f32(row, probs);
  const float guard = kernels::kth_largest(row, min_keep < n ? min_keep : n);
  for (std::size_t i = 0; i < n; ++i)
    if (probs[i] < cutoff && row[i] < guard) row[i] = masked_logit;
}
}  // namespace detail

class epsilon_filter {
 public:
  /// Throws `invalid_option` unless 0 < epsilon < 1 and min_tokens_to_keep >= 1.
  explicit epsilon_filter(float epsilon, std::size_t min_tokens_to_keep = 1)
      : eps_(epsilon), min_keep_(min_tokens_to_keep) {
    if (!(epsilon > 0 && epsilon < 1))
      throw invalid_option("itscale: epsilon_cutoff must be in (0, 1), got " + detail::num(epsilon));
    if (min_tokens_to_keep == 0) throw invalid_option("itscale: min_tokens_to_keep must be >= 1, got 0");
  }

  void apply(std::span<float> row, const step_context& ctx) const noexcept {
    detail::mask_below_probability(row, eps_, min_keep_, *ctx.ws);
  }

 private:
  float eps_;
  std::size_t min_keep_;
};

class eta_filter {
 public:
  /// Throws `invalid_option` unless 0 < epsilon < 1 and min_tokens_to_keep >= 1.
  explicit eta_filter(float epsilon, std::size_t min_tokens_to_keep = 1)
      : eps_(epsilon), min_keep_(min_tokens_to_keep) {
    if (!(epsilon > 0 && epsilon < 1))
      throw invalid_option("itscale: eta_cutoff must be in (0, 1), got " + detail::num(epsilon));
    if (min_tokens_to_keep == 0) throw invalid_option("itscale: min_tokens_to_keep must be >= 1, got 0");
  }

  void apply(std::span<float> row, const step_context& ctx) const noexcept {
    const float entropy = detail::entropy_f32(row, std::span(ctx.ws->values2).first(row.size()));
    const float eta = std::fmin(eps_, std::sqrt(eps_) * std::exp(-entropy));
    detail::mask_below_probability(row, eta, min_keep_, *ctx.ws);
  }

 private:
  float eps_;
  std::size_t min_keep_;
};

}  // namespace v0
}  // namespace itscale
