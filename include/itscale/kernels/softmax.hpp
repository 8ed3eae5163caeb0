#pragma once
/// \file softmax.hpp
/// softmax and log-softmax over one row, in place or out of place. `-inf` entries get
/// probability 0 (log-probability `-inf`). Preconditions: no NaN or +inf, at least one entry
/// `> -inf`, `out.size() == in.size()` (out may alias in). SIMD: one exp pass that takes the max
/// chunk by chunk, stores and sums, then one scaling pass (see `kernels/simd/softmax.hpp` for the
/// measured accuracy);
/// the scalar reference is `kernels/reference/softmax.hpp`.

#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/kernels/dispatch.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {

/// out[i] = exp(in[i] - max) / sum_j exp(in[j] - max).
inline void softmax(std::span<const float> in, std::span<float> out) noexcept { ITSCALE_KERNEL(softmax)(in, out); }

inline void softmax(std::span<float> row) noexcept { softmax(row, row); }

/// out[i] = in[i] - logsumexp(in).
inline void log_softmax(std::span<const float> in, std::span<float> out) noexcept {
  ITSCALE_KERNEL(log_softmax)(in, out);
}

inline void log_softmax(std::span<float> row) noexcept { log_softmax(row, row); }

}  // namespace kernels
ITSCALE_END_NAMESPACE
