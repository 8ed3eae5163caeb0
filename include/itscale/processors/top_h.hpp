#pragma once
/// \file top_h.hpp
/// Top-H (HF `TopHLogitsWarper`; Potraghloo et al. 2025, "Top-H decoding"): among the 100 most
/// likely tokens (renormalised), keep the best ones while their cumulative entropy contribution
/// -p log p stays within top_h times the entropy of that top-100 distribution; the best token is
/// always kept.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/kernels/reference/reduce.hpp"
#include "itscale/kernels/top_k.hpp"
#include "itscale/processors/live_set.hpp"
#include "itscale/processors/probabilities.hpp"
#include "itscale/processors/processor.hpp"

ITSCALE_BEGIN_NAMESPACE

class top_h_filter {
 public:
  /// HF considers the 100 most likely tokens.
  static constexpr std::size_t candidates = 100;

  /// Throws `invalid_option` unless 0 < top_h <= 1.
  explicit top_h_filter(float top_h) : h_(top_h) {
    if (!(top_h > 0 && top_h <= 1))
      throw invalid_option("itscale: top_h must be in (0, 1], got " + detail::num(top_h));
  }

  void apply(std::span<float> row, const step_context& ctx) const noexcept { (void)apply(row, ctx, live_set{}); }

  /// As `apply`; returns the kept tokens (the ranking is over the whole row either way).
  live_set apply(std::span<float> row, const step_context& ctx, live_set /*live*/) const noexcept {
    const std::size_t n = row.size();
    const std::size_t m = n < candidates ? n : candidates;
    auto ids = std::span(ctx.ws->ids).first(m);
    auto vals = std::span(ctx.ws->values).first(m);
    kernels::top_k(row, ids, vals);
    // torch's Categorical over the candidates: logits normalised by logsumexp, probabilities by
    // the float32 softmax kernel, entropy = -sum(logit * p).
    const float lse = kernels::reference::logsumexp(vals);  // torch-like double sum (100 values)
    for (float& v : vals) v -= lse;
    auto probs = std::span(ctx.ws->values2).first(m);
    detail::softmax_f32(vals, probs);
    double entropy = 0;
    for (std::size_t j = 0; j < m; ++j)
      if (vals[j] != masked_logit) entropy -= static_cast<double>(vals[j] * probs[j]);
    const float tau = static_cast<float>(entropy) * h_;
    // Keep the prefix of the ranking whose cumulative -p log p is <= tau; the best always stays.
    std::size_t kept = 1;
    double cum = 0;
    for (std::size_t j = 0; j < m; ++j) {
      const float p = probs[j];
      if (p == 0) break;  // -0 * log 0 is NaN in torch: the comparison fails from here on
      cum += static_cast<double>(-p * std::log(p));
      if (static_cast<float>(cum) <= tau) kept = j + 1 > kept ? j + 1 : kept;
      else break;
    }
    // Mask everything, then restore the kept tokens.
    for (std::size_t j = 0; j < kept; ++j) probs[j] = row[static_cast<std::size_t>(ids[j])];
    for (float& x : row) x = masked_logit;
    for (std::size_t j = 0; j < kept; ++j) row[static_cast<std::size_t>(ids[j])] = probs[j];
    // The kept tokens (unmasked ones only: with fewer than `kept` finite logits the ranking
    // reaches masked entries), in id order for the filters after this one.
    std::size_t live = 0;
    for (std::size_t j = 0; j < kept; ++j)
      if (probs[j] != masked_logit) ctx.ws->live[live++] = ids[j];
    std::sort(ctx.ws->live.begin(), ctx.ws->live.begin() + static_cast<std::ptrdiff_t>(live));
    return {std::span(ctx.ws->live).first(live), true};
  }

 private:
  float h_;
};

ITSCALE_END_NAMESPACE
