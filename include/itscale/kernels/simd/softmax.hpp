#pragma once
/// \file simd/softmax.hpp
/// SIMD softmax and log-softmax over one row (`itscale::kernels::simd::softmax<Arch>`), in place
/// or out of place, `noexcept`, no allocation. Semantics: see the public `kernels/softmax.hpp`.
///
/// Cost: max pass + one exp pass (stores exp, sums it) + one scaling pass. The exp pass is the
/// floor (softmax is bounded by exp throughput); the other two run at load/store speed.
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
///   relative error per probability 1.09e-6 on every arch, for every p >= 1e-30 (the kernels test's
///   rows within 20 of the max: 1.07e-6 on avx2 / avx512, 1.10e-6 on sse2).
///   It is dominated by rounding x - max to float before the exp (2^-24 |x - max| relative), which
///   every float32 softmax (torch's included) shares; the exp and the sum add ~3e-7.

#include <cassert>
#include <cmath>
#include <cstddef>
#include <span>

#include "itscale/kernels/simd/reduce.hpp"

namespace itscale {
inline namespace v0 {
namespace kernels {
namespace simd {

/// out[i] = exp(in[i] - max) / sum_j exp(in[j] - max). Preconditions: no NaN or +inf, at least
/// one entry `> -inf`, `out.size() == in.size()` (`out` may alias `in`).
template <class Arch>
void softmax(std::span<const float> in, std::span<float> out) noexcept {
  using B = detail::fbatch<Arch>;
  constexpr std::size_t L = detail::lanes<Arch>;
  assert(in.size() == out.size());
  const float m = max<Arch>(in);
  const double s = detail::exp_sum<Arch>(in, m, out.data());
  const auto inv = static_cast<float>(1.0 / s);
  const B ib(inv);
  float* p = out.data();
  const std::size_t n = out.size();
  std::size_t i = 0;
  for (; i + L <= n; i += L) (B::load_unaligned(p + i) * ib).store_unaligned(p + i);
  if (i < n) detail::store_tail<Arch>(detail::load_tail<Arch>(p + i, n - i, 0.0f) * ib, p + i, n - i);
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
}  // namespace v0
}  // namespace itscale
