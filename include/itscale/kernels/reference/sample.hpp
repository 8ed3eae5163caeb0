#pragma once
/// \file reference/sample.hpp
/// The scalar reference (`itscale::kernels::reference`): the simple, obviously correct version
/// every SIMD kernel is tested against (house rule 4). Not the hot path.
/// Drawing a token from a row of (processed) logits with one uniform number: the inverse CDF of
/// softmax(row), so one counter-based uniform per step fixes the draw.

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/kernels/reference/reduce.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {
namespace reference {

/// The token t with cdf(t-1) <= u * total < cdf(t) over p ∝ exp(row - max), skipping masked
/// entries; `u` in [0, 1). Returns `npos` only if every entry is masked. Accumulates in double so
/// the result does not drift with the vocabulary size.
[[nodiscard]] inline std::size_t sample_inverse_cdf(std::span<const float> row, double u) noexcept {
  const float m = max(row);
  if (m == -std::numeric_limits<float>::infinity()) return npos;
  double total = 0;
  for (float x : row) total += std::exp(static_cast<double>(x) - m);
  const double target = u * total;
  double acc = 0;
  std::size_t last = npos;
  for (std::size_t i = 0; i < row.size(); ++i) {
    if (row[i] == -std::numeric_limits<float>::infinity()) continue;
    acc += std::exp(static_cast<double>(row[i]) - m);
    last = i;
    if (acc > target) return i;
  }
  return last;  // rounding left target >= acc: the last unmasked token closes the interval
}

}  // namespace reference
}  // namespace kernels
ITSCALE_END_NAMESPACE
