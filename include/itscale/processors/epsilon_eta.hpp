#pragma once
/// \file epsilon_eta.hpp
/// Truncation sampling of Hewitt et al. 2022 (HF `EpsilonLogitsWarper`, `EtaLogitsWarper`):
/// epsilon masks tokens with probability below a fixed epsilon; eta below
/// min(epsilon, sqrt(epsilon) * exp(-entropy)). Both keep the `min_tokens_to_keep` best.

#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/kernels/top_k.hpp"
#include "itscale/processors/live_set.hpp"
#include "itscale/processors/probabilities.hpp"
#include "itscale/processors/processor.hpp"

ITSCALE_BEGIN_NAMESPACE

namespace detail {
/// Masks the tokens of `alive` with probability < cutoff, except those at or above the k-th
/// largest logit (HF's `scores < topk(scores, k)[-1]` guard, so ties at the k-th value survive
/// too). `probs`: softmax_f32_at(row, alive).
inline live_set mask_below_probability(std::span<float> row, std::span<token_id> alive, std::span<const float> probs,
                                       float cutoff, std::size_t min_keep, workspace& ws) noexcept {
  const float guard = kth_largest_at(row, alive, min_keep < row.size() ? min_keep : row.size(), ws);
  bool masked_any = false;
  for (std::size_t j = 0; j < alive.size(); ++j) {
    const auto t = static_cast<std::size_t>(alive[j]);
    if (probs[j] < cutoff && row[t] < guard) {
      row[t] = masked_logit;
      masked_any = true;
    }
  }
  return masked_any ? prune_live(row, alive) : live_set{alive, true};
}

/// `epsilon` if it is in (0, 1) and `min_keep >= 1`; else `invalid_option` naming `option`.
inline float checked_cutoff(const char* option, float epsilon, std::size_t min_keep) {
  if (!(epsilon > 0 && epsilon < 1))
    throw invalid_option(std::string("itscale: ") + option + " must be in (0, 1), got " + num(epsilon));
  if (min_keep == 0) throw invalid_option("itscale: min_tokens_to_keep must be >= 1, got 0");
  return epsilon;
}
}  // namespace detail

class epsilon_filter {
 public:
  /// Throws `invalid_option` unless 0 < epsilon < 1 and min_tokens_to_keep >= 1.
  explicit epsilon_filter(float epsilon, std::size_t min_tokens_to_keep = 1)
      : eps_(detail::checked_cutoff("epsilon_cutoff", epsilon, min_tokens_to_keep)), min_keep_(min_tokens_to_keep) {}

  void apply(std::span<float> row, const step_context& ctx) const noexcept { (void)apply(row, ctx, live_set{}); }

  /// As `apply`, touching only the unmasked tokens `live` (listed first if unknown); returns the
  /// tokens left unmasked.
  live_set apply(std::span<float> row, const step_context& ctx, live_set live) const noexcept {
    const std::span<token_id> alive = detail::list_live(row, live, *ctx.ws);
    if (alive.empty()) return {alive, true};
    auto probs = std::span(ctx.ws->values).first(alive.size());
    detail::softmax_f32_at(row, alive, probs);
    return detail::mask_below_probability(row, alive, probs, eps_, min_keep_, *ctx.ws);
  }

 private:
  float eps_;
  std::size_t min_keep_;
};

class eta_filter {
 public:
  /// Throws `invalid_option` unless 0 < epsilon < 1 and min_tokens_to_keep >= 1.
  explicit eta_filter(float epsilon, std::size_t min_tokens_to_keep = 1)
      : eps_(detail::checked_cutoff("eta_cutoff", epsilon, min_tokens_to_keep)), min_keep_(min_tokens_to_keep) {}

  void apply(std::span<float> row, const step_context& ctx) const noexcept { (void)apply(row, ctx, live_set{}); }

  /// As `apply`, touching only the unmasked tokens `live` (listed first if unknown); returns the
  /// tokens left unmasked.
  live_set apply(std::span<float> row, const step_context& ctx, live_set live) const noexcept {
    const std::span<token_id> alive = detail::list_live(row, live, *ctx.ws);
    if (alive.empty()) return {alive, true};
    auto probs = std::span(ctx.ws->values).first(alive.size());
    const float entropy = detail::entropy_f32_at(row, alive, probs);  // leaves the softmax in probs
    const float eta = std::fmin(eps_, std::sqrt(eps_) * std::exp(-entropy));
    return detail::mask_below_probability(row, alive, probs, eta, min_keep_, *ctx.ws);
  }

 private:
  float eps_;
  std::size_t min_keep_;
};

ITSCALE_END_NAMESPACE
