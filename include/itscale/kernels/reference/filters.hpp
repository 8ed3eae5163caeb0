#pragma once
/// \file reference/filters.hpp
/// The scalar reference (`itscale::kernels::reference`): the simple, obviously correct version
/// every SIMD kernel is tested against (house rule 4). Not the hot path.
/// The truncation filters of `kernels/filters.hpp` by their definitions, in float64 where the
/// kernels approximate: min-p threshold, masking below a threshold, top-p, and listing the entries
/// that remain unmasked.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/reference/reduce.hpp"
#include "itscale/kernels/reference/top_k.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {
namespace reference {

/// Writes the ids of the entries `> -inf` to `ids` in increasing order; returns how many.
inline std::size_t collect_unmasked(std::span<const float> row, std::span<token_id> ids) noexcept {
  std::size_t n = 0;
  for (std::size_t i = 0; i < row.size(); ++i)
    if (row[i] > -std::numeric_limits<float>::infinity()) ids[n++] = static_cast<token_id>(i);
  return n;
}

/// Sets every entry `< threshold` to -inf; returns how many entries stay `> -inf`.
inline std::size_t mask_below(std::span<float> row, float threshold) noexcept {
  std::size_t kept = 0;
  for (float& x : row) {
    if (x < threshold) x = -std::numeric_limits<float>::infinity();
    kept += x > -std::numeric_limits<float>::infinity();
  }
  return kept;
}

/// max(row) + ln(p): the logit below which min-p masks.
[[nodiscard]] inline float min_p_threshold(std::span<const float> row, float p) noexcept { return max(row) + std::log(p); }

/// Top-p by the definition: rank the tokens (larger logit first, equal logits lower id first),
/// keep the shortest prefix whose float64 mass sum exp(x - max) reaches p of the total, mask the
/// rest; returns how many are kept. `order`: scratch of row.size() ids. Preconditions: as
/// `kernels::top_p_mask`.
inline std::size_t top_p_mask(std::span<float> row, double p, std::span<token_id> order) noexcept {
  const std::size_t n = row.size();
  std::iota(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), token_id{0});
  std::sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n),
            [row](token_id a, token_id b) { return ranks_above(row, a, b); });
  const double m = max(row);
  double total = 0;
  for (float x : row) total += std::exp(static_cast<double>(x) - m);
  double mass = 0;
  std::size_t kept = 0;
  while (kept < n && (kept == 0 || mass < p * total))
    mass += std::exp(static_cast<double>(row[static_cast<std::size_t>(order[kept++])]) - m);
  for (std::size_t j = kept; j < n; ++j) row[static_cast<std::size_t>(order[j])] = -std::numeric_limits<float>::infinity();
  return kept;
}

/// Sets every entry `< threshold` to -inf and lists the rest as `collect_unmasked` does.
inline std::size_t mask_below_collect(std::span<float> row, float threshold, std::span<token_id> kept) noexcept {
  for (float& x : row)
    if (x < threshold) x = -std::numeric_limits<float>::infinity();
  return collect_unmasked(row, kept);
}

}  // namespace reference
}  // namespace kernels
ITSCALE_END_NAMESPACE
