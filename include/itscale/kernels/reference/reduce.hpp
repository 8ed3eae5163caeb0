#pragma once
/// \file reference/reduce.hpp
/// The scalar reference (`itscale::kernels::reference`): the simple, obviously correct version
/// every SIMD kernel is tested against (house rule 4). Not the hot path.
/// One-pass reductions over a logits row: max, argmax, logsumexp, and the validity scan used at
/// the API boundary. Kernels are `noexcept` and never allocate.

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/kernels/kernel_types.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {
namespace reference {

/// The largest value of `row`; `-inf` for an empty row. Precondition: no NaN.
[[nodiscard]] inline float max(std::span<const float> row) noexcept {
  float m = -std::numeric_limits<float>::infinity();
  for (float x : row) m = x > m ? x : m;
  return m;
}

/// Index of the largest value; ties go to the lowest index (as `torch.argmax`). `npos` for an
/// empty row. Precondition: no NaN.
[[nodiscard]] inline std::size_t argmax(std::span<const float> row) noexcept {
  if (row.empty()) return npos;
  std::size_t best = 0;
  for (std::size_t i = 1; i < row.size(); ++i)
    if (row[i] > row[best]) best = i;
  return best;
}

/// log(sum(exp(row))), computed as max + log(sum(exp(row - max))) so large logits do not
/// overflow. `-inf` when every entry is `-inf` (or the row is empty), `+inf` when an entry is
/// `+inf`. The sum is accumulated in double: the row can hold 10^5+ terms.
[[nodiscard]] inline float logsumexp(std::span<const float> row) noexcept {
  const float m = max(row);
  if (m == -std::numeric_limits<float>::infinity() || m == std::numeric_limits<float>::infinity()) return m;
  double s = 0;
  for (float x : row) s += std::exp(static_cast<double>(x - m));
  return m + static_cast<float>(std::log(s));
}

/// Index of the first entry that is NaN or +inf (logits a backend must never produce), or `npos`.
[[nodiscard]] inline std::size_t find_invalid(std::span<const float> row) noexcept {
  for (std::size_t i = 0; i < row.size(); ++i)
    if (std::isnan(row[i]) || row[i] == std::numeric_limits<float>::infinity()) return i;
  return npos;
}

/// Number of entries that are not masked (`> -inf`).
[[nodiscard]] inline std::size_t count_unmasked(std::span<const float> row) noexcept {
  std::size_t n = 0;
  for (float x : row) n += x > -std::numeric_limits<float>::infinity() ? 1u : 0u;
  return n;
}

}  // namespace reference
}  // namespace kernels
ITSCALE_END_NAMESPACE
