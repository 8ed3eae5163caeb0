#pragma once
/// \file kernels/beam_select.hpp
/// Selection over several rows at once — beam search's candidate step — without writing out the
/// K x V scores: a threshold filter compares each score with the running m-th best as it is
/// computed in registers (see `kernels/simd/select.hpp`).

#include <cstddef>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/kernels/dispatch.hpp"
#include "itscale/kernels/kernel_types.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {

/// The best `out.size()` candidates (r, t) over `rows`, scored `(rows[r][t] - sub[r]) + add[r]`
/// in float; best first; equal scores: lower (r, t) first. Candidates scoring -inf or NaN are
/// never selected; returns the number written. Preconditions: `sub.size() == add.size() ==
/// rows.size()`, finite shifts, fewer than 2^31 entries in all.
inline std::size_t top_k_rows(std::span<const std::span<const float>> rows, std::span<const float> sub,
                              std::span<const float> add, std::span<row_candidate> out) noexcept {
  return ITSCALE_KERNEL(top_k_rows)(rows, sub, add, out);
}

/// Beam selection: the best `out.size()` (usually 2K) of `(rows[r][t] - logsumexp(rows[r])) +
/// offsets[r]` — log-softmax plus each beam's running score — computing the K logsumexps and the
/// selection in three reads per row, never writing a log-prob. Same ranking and result as
/// `top_k_rows`; `offsets.size() == rows.size()`.
inline std::size_t beam_select(std::span<const std::span<const float>> rows, std::span<const float> offsets,
                               std::span<row_candidate> out) noexcept {
  return ITSCALE_KERNEL(beam_select)(rows, offsets, out);
}

}  // namespace kernels
ITSCALE_END_NAMESPACE
