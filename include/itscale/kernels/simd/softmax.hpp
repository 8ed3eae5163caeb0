#pragma once
/// \file simd/softmax.hpp
/// SIMD softmax and log-softmax over one row (`itscale::kernels::simd::softmax<Arch>`), in place
/// or out of place, `noexcept`, no allocation. Semantics: see the public `kernels/softmax.hpp`.
///
/// Cost: one exp pass that also takes the max (chunk by chunk, see `detail::exp_sum_online`),
/// stores the exps and sums them, + one scaling pass. The exp pass is the floor (softmax is
/// bounded by exp throughput); the scaling pass runs at L2 load/store speed.
///
/// Accuracy (measured by tests/kernels/exp_accuracy.cpp, built once per arch; the ctest run checks
/// every 97th float, `--full` every float):
/// - the kernels' float `exp` (kernels/simd/exp.hpp: Cody-Waite reduction, degree-6 polynomial,
///   exponent-field scaling), over all 1 118 699 521 floats of [-87, 0] against the correctly
///   rounded exp: at most 1 ULP on fma3+avx2 and avx512bw (Horner with fused FMAs); at most 2 ULP
///   without FMA (sse2 build; one float, x = -5.8913684, is 2 ULP, every other within 1). Results
///   below FLT_MIN (x < -87.3365) flush to +0, so `-inf` logits give exactly 0.
///   (xsimd 8.1's `exp`, used before: 2 ULP on every arch, and ~1.4x slower on avx512bw.)
/// - softmax against a float64 softmax of the same float logits, V = 128 256, sigma ~ 5: largest
///   relative error per probability 1.06e-6 (avx2, avx512) / 1.08e-6 (sse2), for every p >= 1e-30
///   (the kernels test's rows within 20 of the max: 1.07e-6 on every arch).
///   It is dominated by rounding x - max to float before the exp (2^-24 |x - max| relative), which
///   every float32 softmax (torch's included) shares; the exp and the sum add ~3e-7.

#include <cassert>
#include <cmath>
#include <cstddef>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/kernels/simd/reduce.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {
namespace simd {

/// out[i] = exp(in[i] - max) / sum_j exp(in[j] - max). Preconditions: no NaN or +inf, at least
/// one entry `> -inf`, `out.size() == in.size()` (`out` may alias `in`).
template <class Arch>
void softmax(std::span<const float> in, std::span<float> out) noexcept {
  using B = detail::fbatch<Arch>;
  constexpr std::size_t L = detail::lanes<Arch>;
  assert(in.size() == out.size());
  detail::online_sum s;
  detail::exp_sum_online<Arch>(in, out.data(), s);
  // Chunk k holds exp(x - ref[k]): one factor per chunk, exp(ref[k] - max) / sum (= 1 / sum for
  // every chunk at or after the one holding the max).
  float* p = out.data();
  const std::size_t n = out.size();
  for (std::size_t k = 0; k < s.chunks; ++k) {
    const double f = std::exp(static_cast<double>(s.ref[k]) - static_cast<double>(s.max)) / s.sum;
    const B ib(static_cast<float>(f));
    const std::size_t hi = (k + 1) * s.chunk < n ? (k + 1) * s.chunk : n;
    std::size_t i = k * s.chunk;
    for (; i + L <= hi; i += L) (B::load_unaligned(p + i) * ib).store_unaligned(p + i);
    if (i < hi) detail::store_tail<Arch>(detail::load_tail<Arch>(p + i, hi - i, 0.0f) * ib, p + i, hi - i);
  }
}

/// out[i] = in[i] - logsumexp(in) (one subtraction per entry, so equal logits stay equal).
/// Preconditions: as `softmax`.
template <class Arch>
void log_softmax(std::span<const float> in, std::span<float> out) noexcept {
  using B = detail::fbatch<Arch>;
  constexpr std::size_t L = detail::lanes<Arch>;
  assert(in.size() == out.size());
  const float lse = logsumexp<Arch>(in);
  const B lb(lse);
  const float* p = in.data();
  float* q = out.data();
  const std::size_t n = in.size();
  std::size_t i = 0;
  for (; i + L <= n; i += L) (B::load_unaligned(p + i) - lb).store_unaligned(q + i);
  if (i < n) detail::store_tail<Arch>(detail::load_tail<Arch>(p + i, n - i, 0.0f) - lb, q + i, n - i);
}

}  // namespace simd
}  // namespace kernels
ITSCALE_END_NAMESPACE
