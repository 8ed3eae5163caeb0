#pragma once
/// \file top_k.hpp
/// The k largest entries of a row, sorted descending; ties go to the lower index. This is the
/// library's one tie rule for ranking tokens: among exactly equal logits, the lower token id ranks
/// higher. SIMD threshold filter for k <= 1024 (or any k with a scratch buffer), radix select
/// above (see `kernels/simd/select.hpp`); the scalar reference is `kernels/reference/top_k.hpp`.

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/dispatch.hpp"
#include "itscale/kernels/reference/top_k.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {

/// True when token `a` ranks above token `b` (larger value, or equal value and lower index).
using reference::ranks_above;

/// Writes the indices and values of the `k = indices.size()` highest-ranked entries of `row`,
/// best first. Preconditions: `1 <= k <= row.size()`, `values.size() == k`, no NaN,
/// `row.size() < 2^31`. O(V) for k <= 1024 (threshold filter, 32 KiB of stack), radix select
/// (four passes) above; no allocation.
inline void top_k(std::span<const float> row, std::span<token_id> indices, std::span<float> values) noexcept {
  assert(!indices.empty() && indices.size() <= row.size() && values.size() == indices.size());
  ITSCALE_KERNEL(top_k)(row, indices, values, {});
}

/// As above with a caller-provided candidate buffer: with `scratch.size() >= 2 * k + 64` the
/// threshold filter runs for any k (no stack buffer, no radix passes).
inline void top_k(std::span<const float> row, std::span<token_id> indices, std::span<float> values,
                  std::span<std::uint64_t> scratch) noexcept {
  assert(!indices.empty() && indices.size() <= row.size() && values.size() == indices.size());
  ITSCALE_KERNEL(top_k)(row, indices, values, scratch);
}

/// The k-th largest value of `row` (1 <= k <= row.size(); no NaN). -0 and +0 are one value.
[[nodiscard]] inline float kth_largest(std::span<const float> row, std::size_t k) noexcept {
  assert(k >= 1 && k <= row.size());
  return ITSCALE_KERNEL(kth_largest)(row, k);
}

/// Older signature: `scratch` is no longer needed (kept so callers compile unchanged).
[[nodiscard]] inline float kth_largest(std::span<const float> row, std::size_t k, std::span<float> /*scratch*/) noexcept {
  return kth_largest(row, k);
}

}  // namespace kernels
ITSCALE_END_NAMESPACE
