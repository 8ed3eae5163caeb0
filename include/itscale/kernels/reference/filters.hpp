#pragma once
/// \file reference/filters.hpp
/// The scalar reference (`itscale::kernels::reference`): the simple, obviously correct version
/// every SIMD kernel is tested against (house rule 4). Not the hot path.
/// Masking below a logit threshold and listing the entries that remain unmasked.

#include <cstddef>
#include <limits>
#include <span>

#include "itscale/core/types.hpp"

namespace itscale {
inline namespace v0 {
namespace kernels {
namespace reference {

/// Writes the ids of the entries `> -inf` to `ids` in increasing order; returns how many.
inline std::size_t collect_unmasked(std::span<const float> row, std::span<token_id> ids) noexcept {
  std::size_t n = 0;
  for (std::size_t i = 0; i < row.size(); ++i)
    if (row[i] > -std::numeric_limits<float>::infinity()) ids[n++] = static_cast<token_id>(i);
  return n;
}

/// Sets every entry `< threshold` to -inf and lists the rest as `collect_unmasked` does.
inline std::size_t mask_below_collect(std::span<float> row, float threshold, std::span<token_id> kept) noexcept {
  for (float& x : row)
    if (x < threshold) x = -std::numeric_limits<float>::infinity();
  return collect_unmasked(row, kept);
}

}  // namespace reference
}  // namespace kernels
}  // namespace v0
}  // namespace itscale
