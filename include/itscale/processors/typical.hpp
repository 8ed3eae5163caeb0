#pragma once
/// \file typical.hpp
/// Locally typical sampling (HF `TypicalLogitsWarper`, Meister et al. 2023): rank tokens by how
/// close their surprisal is to the entropy, keep the closest ones until their probability mass
/// reaches `mass` (all tokens as close as the last kept one are kept too).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <span>
#include <string>

#include "itscale/core/errors.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/processors/probabilities.hpp"
#include "itscale/processors/processor.hpp"

namespace itscale {
inline namespace v0 {

class typical_filter {
 public:
  /// Throws `invalid_option` unless 0 < mass < 1 (HF's rule) and min_tokens_to_keep >= 1.
  explicit typical_filter(float mass, std::size_t min_tokens_to_keep = 1)
      : mass_(mass), min_keep_(min_tokens_to_keep) {
    if (!(mass > 0 && mass < 1))
      throw invalid_option("itscale: typical_p must be in (0, 1), got " + detail::num(mass));
    if (min_tokens_to_keep == 0) throw invalid_option("itscale: min_tokens_to_keep must be >= 1, got 0");
  }

  void apply(std::span<float> row, const step_context& ctx) const noexcept {
    const std::size_t n = row.size();
    auto shifted = std::span(ctx.ws->values).first(n);
    auto probs = std::span(ctx.ws->values2).first(n);
    auto ids = std::span(ctx.ws->ids).first(n);
    // |surprisal - entropy| per token, from torch's float32 log_softmax; masked tokens are
    // infinitely far.
    auto logp = shifted;
    detail::log_softmax_f32(row, logp);
    double ent = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (row[i] != masked_logit) ent -= static_cast<double>(logp[i] * std::exp(logp[i]));
    const auto entropy = static_cast<float>(ent);
    for (std::size_t i = 0; i < n; ++i)
      shifted[i] = row[i] == masked_logit ? INFINITY : std::fabs(-logp[i] - entropy);
    // Closest first; equal distances: the lower token id first (library tie rule).
    std::iota(ids.begin(), ids.end(), token_id{0});
    std::sort(ids.begin(), ids.end(), [shifted](token_id a, token_id b) {
      const float va = shifted[static_cast<std::size_t>(a)], vb = shifted[static_cast<std::size_t>(b)];
      return va < vb || (va == vb && a < b);
    });
    // HF softmaxes the logits in that order (torch's float sum runs in sorted order).
    for (std::size_t j = 0; j < n; ++j) probs[j] = row[static_cast<std::size_t>(ids[j])];
    detail::softmax_f32(probs, probs);
    // last = number of sorted tokens whose cumulative probability is still < mass (HF's rule).
    std::size_t last = 0;
    double cum = 0;
    for (std::size_t j = 0; j < n; ++j) {
      cum += probs[j];
      if (static_cast<float>(cum) < mass_) ++last;
      else break;
    }
    last = std::min(last, n - 1);
    const float limit = shifted[static_cast<std::size_t>(ids[last])];
    for (std::size_t j = std::min(min_keep_, n); j < n; ++j) {
      const auto t = static_cast<std::size_t>(ids[j]);
      if (shifted[t] > limit) row[t] = masked_logit;
    }
  }

 private:
  float mass_;
  std::size_t min_keep_;
};

}  // namespace v0
}  // namespace itscale
