#pragma once
/// \file sample.hpp
/// Drawing tokens from a row of (processed) logits with counter-based randomness:
/// - `sample_inverse_cdf`: the inverse CDF of softmax(row) with one uniform, so one counter-based
///   uniform per step fixes the draw;
/// - `gumbel_max` / `gumbel_top_k`: argmax / top-k of row + Gumbel noise, the noise of token t a
///   pure function of (seed, stream, step, t), so draws do not depend on batch composition.
///   Gumbel-top-k samples k tokens without replacement (Kool et al. 2019, stochastic beam search).

#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/core/rng.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/dispatch.hpp"
#include "itscale/kernels/kernel_types.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/top_k.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {

/// The token t with cdf(t-1) <= u * total < cdf(t) over p ∝ exp(row - max), skipping masked
/// entries; `u` in [0, 1). Returns `npos` only if every entry is masked. Float exps (as the
/// softmax kernel) accumulated in double: the draw equals that of a float64 inverse CDF unless
/// u * total lies within ~1e-7 relative of a CDF step. Precondition: no NaN or +inf.
[[nodiscard]] inline std::size_t sample_inverse_cdf(std::span<const float> row, double u) noexcept {
  return ITSCALE_KERNEL(sample_inverse_cdf)(row, u);
}

/// Gumbel noise of token `t`: -log(-log(u)), u = rng.uniform(step, t) (53 random bits; u = 0
/// gives -inf, never the argmax).
[[nodiscard]] inline float gumbel_noise(const counter_rng& rng, std::uint32_t step, std::uint32_t t) noexcept {
  return static_cast<float>(-std::log(-std::log(rng.uniform(step, t))));
}

/// Writes row[t] + gumbel_noise(rng, step, t) to `out[t]` (masked entries stay -inf). `out` may
/// alias `row`. Scalar: one Philox call and two logs per token.
inline void gumbel_perturb(std::span<const float> row, const counter_rng& rng, std::uint32_t step,
                           std::span<float> out) noexcept {
  assert(out.size() == row.size());
  for (std::size_t t = 0; t < row.size(); ++t)
    out[t] = row[t] == masked_logit ? masked_logit : row[t] + gumbel_noise(rng, step, static_cast<std::uint32_t>(t));
}

/// One sample from softmax(row) by the Gumbel-max trick: argmax over t of row[t] + noise(t)
/// (ties to the lower index). `scratch`: row.size() floats. `npos` if every entry is masked.
[[nodiscard]] inline std::size_t gumbel_max(std::span<const float> row, const counter_rng& rng, std::uint32_t step,
                                            std::span<float> scratch) noexcept {
  auto perturbed = scratch.first(row.size());
  gumbel_perturb(row, rng, step, perturbed);
  const std::size_t t = argmax(perturbed);
  return t == npos || perturbed[t] == masked_logit ? npos : t;
}

/// k samples without replacement from softmax(row) (Gumbel-top-k): the k best of the perturbed
/// row, best first; `values` receives the perturbed scores (the keys of stochastic beam search).
/// `scratch`: row.size() floats. Preconditions: as `top_k`.
inline void gumbel_top_k(std::span<const float> row, const counter_rng& rng, std::uint32_t step,
                         std::span<token_id> indices, std::span<float> values, std::span<float> scratch) noexcept {
  auto perturbed = scratch.first(row.size());
  gumbel_perturb(row, rng, step, perturbed);
  top_k(perturbed, indices, values);
}

}  // namespace kernels
ITSCALE_END_NAMESPACE
