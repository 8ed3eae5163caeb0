#pragma once
/// \file reference/softmax.hpp
/// The scalar reference (`itscale::kernels::reference`): the simple, obviously correct version
/// every SIMD kernel is tested against (house rule 4). Not the hot path.
/// softmax and log-softmax over one row, in place or out of place. `-inf` entries get
/// probability 0 (log-probability `-inf`). Preconditions: no NaN, at least one entry `> -inf`,
/// `out.size() == in.size()` (out may alias in).

#include <cassert>
#include <cmath>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/kernels/reference/reduce.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {
namespace reference {

/// out[i] = exp(in[i] - max) / sum_j exp(in[j] - max).
inline void softmax(std::span<const float> in, std::span<float> out) noexcept {
  assert(in.size() == out.size());
  const float m = max(in);
  double s = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const float e = std::exp(in[i] - m);
    out[i] = e;
    s += e;
  }
  const auto inv = static_cast<float>(1.0 / s);
  for (float& x : out) x *= inv;
}

inline void softmax(std::span<float> row) noexcept { softmax(row, row); }

/// out[i] = in[i] - logsumexp(in).
inline void log_softmax(std::span<const float> in, std::span<float> out) noexcept {
  assert(in.size() == out.size());
  const float lse = logsumexp(in);
  for (std::size_t i = 0; i < in.size(); ++i) out[i] = in[i] - lse;
}

inline void log_softmax(std::span<float> row) noexcept { log_softmax(row, row); }

}  // namespace reference
}  // namespace kernels
ITSCALE_END_NAMESPACE
