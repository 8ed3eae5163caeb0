#pragma once
/// \file sparse.hpp
/// Kernels over the listed unmasked tokens of a row (a `live_set` after a top-k: 40 of 128 256),
/// so that drawing and normalising cost O(S) instead of a pass over the vocabulary. Scalar on
/// purpose: S is small, and double exps give the float64 result the dense kernels approximate.
/// Precondition everywhere: `ids` increasing, in range, and every entry of `row` outside `ids` is
/// -inf (masked).

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/kernel_types.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {

/// As `sample_inverse_cdf(row, u)`: the token t with cdf(t-1) <= u * total < cdf(t) over
/// p ∝ exp(row - max), the CDF taken in token order. `npos` when `ids` is empty.
[[nodiscard]] inline std::size_t sample_inverse_cdf(std::span<const float> row, std::span<const token_id> ids,
                                                    double u) noexcept {
  if (ids.empty()) return npos;
  float m = -std::numeric_limits<float>::infinity();
  for (token_id t : ids) m = row[static_cast<std::size_t>(t)] > m ? row[static_cast<std::size_t>(t)] : m;
  double total = 0;
  for (token_id t : ids) total += std::exp(static_cast<double>(row[static_cast<std::size_t>(t)] - m));
  const double target = u * total;
  double acc = 0;
  for (token_id t : ids) {
    acc += std::exp(static_cast<double>(row[static_cast<std::size_t>(t)] - m));
    if (acc > target) return static_cast<std::size_t>(t);
  }
  return static_cast<std::size_t>(ids.back());  // rounding left target >= total: the last token
}

/// As `logsumexp(row)`, over the listed tokens (double accumulation). -inf when `ids` is empty.
[[nodiscard]] inline float logsumexp(std::span<const float> row, std::span<const token_id> ids) noexcept {
  float m = -std::numeric_limits<float>::infinity();
  for (token_id t : ids) m = row[static_cast<std::size_t>(t)] > m ? row[static_cast<std::size_t>(t)] : m;
  if (m == -std::numeric_limits<float>::infinity()) return m;
  double s = 0;
  for (token_id t : ids) s += std::exp(static_cast<double>(row[static_cast<std::size_t>(t)] - m));
  return m + static_cast<float>(std::log(s));
}

}  // namespace kernels
ITSCALE_END_NAMESPACE
