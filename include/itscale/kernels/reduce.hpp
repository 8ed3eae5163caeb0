#pragma once
/// \file reduce.hpp
/// One-pass reductions over a logits row: max, argmax, logsumexp (one row or many), the validity
/// scan used at the API boundary, and the unmasked count. SIMD (see `dispatch.hpp` for how the
/// arch is chosen); the scalar reference is `kernels/reference/reduce.hpp`. Kernels are
/// `noexcept` and never allocate.

#include <cstddef>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/kernels/dispatch.hpp"
#include "itscale/kernels/kernel_types.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {

/// The largest value of `row`; `-inf` for an empty row. Precondition: no NaN.
[[nodiscard]] inline float max(std::span<const float> row) noexcept { return ITSCALE_KERNEL(max)(row); }

/// Index of the largest value; ties go to the lowest index (as `torch.argmax`). `npos` for an
/// empty row. Precondition: no NaN.
[[nodiscard]] inline std::size_t argmax(std::span<const float> row) noexcept { return ITSCALE_KERNEL(argmax)(row); }

/// log(sum(exp(row))), computed as max + log(sum(exp(row - max))) so large logits do not
/// overflow. `-inf` when every entry is `-inf` (or the row is empty), `+inf` if an entry is
/// `+inf`. Float exps (kernels/simd/exp.hpp: <= 1 ULP with FMA, 2 without), summed in float lanes flushed to double every 64 terms
/// per lane: within ~1e-6 absolute of the float64 value. Precondition: no NaN.
[[nodiscard]] inline float logsumexp(std::span<const float> row) noexcept { return ITSCALE_KERNEL(logsumexp)(row); }

/// Batched: `out[r] = logsumexp(rows[r * vocab, (r + 1) * vocab))`. Precondition:
/// `rows.size() == out.size() * vocab`.
inline void logsumexp(std::span<const float> rows, std::size_t vocab, std::span<float> out) noexcept {
  ITSCALE_KERNEL(logsumexp_rows)(rows, vocab, out);
}

/// Index of the first entry that is NaN or +inf (logits a backend must never produce), or `npos`.
[[nodiscard]] inline std::size_t find_invalid(std::span<const float> row) noexcept {
  return ITSCALE_KERNEL(find_invalid)(row);
}

/// Number of entries that are not masked (`> -inf`).
[[nodiscard]] inline std::size_t count_unmasked(std::span<const float> row) noexcept {
  return ITSCALE_KERNEL(count_unmasked)(row);
}

}  // namespace kernels
ITSCALE_END_NAMESPACE
