#pragma once
/// \file filters.hpp
/// Truncation filters for sampling as kernels, without a sort of the vocabulary:
/// - `min_p_threshold`: the logit below which min-p masks (max + ln p; no exp);
/// - `mask_below`: masks every logit below a threshold (`mask_below_collect` also lists the rest);
/// - `collect_unmasked`: the ids of the entries `> -inf`;
/// - `top_p_mask`: nucleus filtering by a search for the mass threshold (no sort of the row).
/// These follow the mathematical definitions with the library tie rule (equal logits: the lower
/// token id ranks higher). The HF-conformant processors in `processors/` reproduce torch's
/// float32 rounding instead and use these kernels only where that is bit-identical.

#include <cstddef>
#include <cstdint>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/kernels/dispatch.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {

/// Sets every entry `< threshold` to -inf; returns how many entries stay `> -inf`.
inline std::size_t mask_below(std::span<float> row, float threshold) noexcept {
  return ITSCALE_KERNEL(mask_below)(row, threshold);
}

/// `mask_below` that also writes the ids of the entries left `> -inf` to `kept`, in increasing
/// order; returns how many. Precondition: `kept.size() >=` that count (`row.size()` suffices).
inline std::size_t mask_below_collect(std::span<float> row, float threshold, std::span<token_id> kept) noexcept {
  return ITSCALE_KERNEL(mask_below_collect)(row, threshold, kept);
}

/// Writes the ids of the entries `> -inf` to `ids` in increasing order; returns how many. One
/// read of the row, writes only per unmasked entry: lets filters after a top-k touch only the
/// survivors. Precondition: `ids.size() >=` that count (`row.size()` suffices).
inline std::size_t collect_unmasked(std::span<const float> row, std::span<token_id> ids) noexcept {
  return ITSCALE_KERNEL(collect_unmasked)(row, ids);
}

/// max(row) + ln(p): p(t) >= p * max_t' p(t') exactly when row[t] >= this (up to one rounding).
/// `-inf` for p = 0. Preconditions: 0 <= p <= 1, no NaN.
[[nodiscard]] inline float min_p_threshold(std::span<const float> row, float p) noexcept {
  return ITSCALE_KERNEL(min_p_threshold)(row, p);
}

/// Keeps the smallest prefix of the ranking (larger logit first, equal logits lower id first)
/// whose probability reaches `p` of the total mass — HF's top-p rule "drop a token when the mass
/// ranked strictly above it already reaches p" — and masks the rest; returns how many are kept.
/// `keys`: scratch of `row.size()` entries (the tokens between two sampled logit cuts are listed
/// there, typically 1-3% of the row). Preconditions: 0 < p <= 1, no NaN or +inf, some entry > -inf.
/// O(V) with no per-entry scalar work over the row: max, a strided sample that places a few cuts,
/// one exp pass with the mass above each cut, one compare pass that masks and lists the crossing
/// interval, then work proportional to that list (equal logits are counted, never sorted).
inline std::size_t top_p_mask(std::span<float> row, double p, std::span<std::uint64_t> keys) noexcept {
  return ITSCALE_KERNEL(top_p_mask)(row, p, keys);
}

}  // namespace kernels
ITSCALE_END_NAMESPACE
