#pragma once
/// \file simd/exp.hpp
/// Internal: the kernels' float exp, templated on the xsimd arch. Softmax, logsumexp and sampling
/// are bounded by exp throughput, and xsimd 8.1's `exp` spends ops the kernels do not need
/// (`nearbyint` + `to_int` + an `ldexp` multiply, two compare/selects, `1 + ...` as a separate
/// add). This one rounds with a magic-number FMA whose low bits are already the integer n, and
/// scales by 2^n with one integer add to the exponent field.
///
/// Algorithm: x = n ln2 + r with n = round(x / ln2), |r| <= ln2/2 (+ a hair without FMA);
/// two-constant Cody-Waite split (ln2hi has 9 significant bits, so n * ln2hi is exact and
/// x - n * ln2hi is exact by Sterbenz, with or without FMA); exp(r) by a degree-6 polynomial in
/// Horner form (6 FMAs); result bits = bits(exp(r)) + (n << 23), exact whenever the result is a
/// normal float, i.e. for x in [ln FLT_MIN, ln FLT_MAX]. Cost per batch: 9 FMAs, 1 subtract,
/// 1 shift, 1 integer add (+ 1 compare/select for the underflow): on Zen 5 it is bound by the two
/// FMA pipes.
///
/// Accuracy: measured exhaustively by tests/kernels/exp_accuracy.cpp (see kernels/simd/softmax.hpp
/// for the figures). Without FMA (SSE2) `xsimd::fma` is a multiply then an add: n may then be off
/// by one near a rounding tie, which only widens |r| by ~1e-5 — still within the polynomial's range.
///
/// Every function is a template on `Arch` (see simd/arch.hpp: no ODR hazard across per-arch
/// translation units) and uses xsimd only, no intrinsics.

#include <cstddef>
#include <cstdint>
#include <limits>

#include "itscale/core/abi.hpp"
#include "itscale/kernels/simd/arch.hpp"

// Always inlined: a call would pass the batches through memory, and in a large translation unit GCC
// stops inlining such functions (xsimd's exp was an out-of-line call inside exp_sum in the kernels
// benchmark binary).
#if defined(__GNUC__) || defined(__clang__)
#define ITSCALE_EXP_INLINE inline __attribute__((always_inline))
#else
#define ITSCALE_EXP_INLINE inline
#endif

ITSCALE_BEGIN_NAMESPACE
namespace kernels {
namespace simd {
namespace detail {

/// Below this the exact result is subnormal: the kernels flush it to 0 (the exponent-field add is
/// only exact for normal results). ln(FLT_MIN) = -87.3365447505..., this float is the first above.
inline constexpr float exp_lo = -87.33654022216796875f;
/// Above this (the last float <= ln(FLT_MAX) = 88.7228390520...) exp overflows to +inf.
inline constexpr float exp_hi = 88.72283172607421875f;

/// Whether `xsimd::fma` is one fused instruction on this arch (else it is a multiply then an add).
/// Arches not listed take the unfused-safe polynomial form, which is correct everywhere.
template <class Arch>
inline constexpr bool fused_fma = is_a<Arch, xsimd::fma3<xsimd::sse4_2>> || is_a<Arch, xsimd::fma3<xsimd::avx>> ||
                                  is_a<Arch, xsimd::fma3<xsimd::avx2>> || is_a<Arch, xsimd::avx512f>;

/// exp(x) for x in [exp_lo, exp_hi] on each of N batches, in place; unspecified outside that
/// range. Every step is applied to all N batches before the next: the exp is a chain of ~12
/// dependent ops, and emitting N independent chains interleaved lets the core overlap them without
/// relying on the out-of-order window (GCC keeps the source order here; measured ~6% faster than
/// one batch after another on Zen 5).
template <class Arch, std::size_t N>
ITSCALE_EXP_INLINE void exp_core(fbatch<Arch> (&x)[N]) noexcept {
  using B = fbatch<Arch>;
  using I = ibatch<Arch>;
  // 1.5 * 2^23: adding it rounds x / ln2 to the nearest integer (ties to even), which lands in the
  // low mantissa bits of t; subtracting t back from it gives -n as a float, exactly.
  const B magic(12582912.0f);
  B t[N], r[N];
  for (std::size_t j = 0; j < N; ++j) t[j] = fmadd<Arch>(x[j], B(1.44269504088896341f), magic);
  for (std::size_t j = 0; j < N; ++j) r[j] = magic - t[j];  // -n (fma(-n, c, x): no negate op)
  // Cody-Waite: ln2hi has 9 significant bits, so n * ln2hi is exact and x - n * ln2hi too.
  for (std::size_t j = 0; j < N; ++j) x[j] = fmadd<Arch>(r[j], B(0.693359375f), x[j]);
  for (std::size_t j = 0; j < N; ++j) r[j] = fmadd<Arch>(r[j], B(-2.12194440e-4f), x[j]);  // ln2lo
  // exp(r), |r| <= ln2/2: the degree-6 polynomial 1 + r + r^2 q(r), q of degree 4 with the
  // Cephes/xsimd coefficients. With fused FMA, all in Horner form (6 FMAs): exhaustively 1 ULP on
  // [-87, 0], where xsimd's (r^2 q + r) + 1, one op more, reaches 2 ULP near |r| = ln2/2. Without
  // FMA every Horner step rounds twice and pure Horner is 2 ULP on ~1e-6 of [-87, 0]; the r^2
  // form keeps the rounding on the small terms and is 2 ULP at one float, so it is used there.
  // (A degree-5 polynomial saves one FMA, ~7%, but is 2 ULP on 0.3% of [-87, 0].)
  for (std::size_t j = 0; j < N; ++j) x[j] = fmadd<Arch>(B(1.3997796e-3f), r[j], B(8.3955629e-3f));
  for (std::size_t j = 0; j < N; ++j) x[j] = fmadd<Arch>(x[j], r[j], B(4.1665401e-2f));
  for (std::size_t j = 0; j < N; ++j) x[j] = fmadd<Arch>(x[j], r[j], B(1.6666277e-1f));
  for (std::size_t j = 0; j < N; ++j) x[j] = fmadd<Arch>(x[j], r[j], B(0.5f));
  if constexpr (fused_fma<Arch>) {
    for (std::size_t j = 0; j < N; ++j) x[j] = fmadd<Arch>(x[j], r[j], B(1.0f));
    for (std::size_t j = 0; j < N; ++j) x[j] = fmadd<Arch>(x[j], r[j], B(1.0f));
  } else {
    for (std::size_t j = 0; j < N; ++j) x[j] = fmadd<Arch>(x[j], r[j] * r[j], r[j]) + B(1.0f);
  }
  // * 2^n: bits(t) = bits(1.5 * 2^23) + n and bits(1.5 * 2^23) << 23 overflows to 0, so the
  // shift is n << 23, added to the exponent field. Exact while the result is a normal float.
  for (std::size_t j = 0; j < N; ++j)
    x[j] = xsimd::bitwise_cast<B>(xsimd::bitwise_cast<I>(x[j]) + (xsimd::bitwise_cast<I>(t[j]) << 23));
}

/// exp for every float x <= exp_hi on N batches in place, the hot path of softmax / logsumexp
/// (their inputs are x - max <= 0): x < exp_lo, -inf included, gives exactly +0, so masked logits
/// contribute nothing. A NaN gives 0 too (the kernels' inputs have no NaN); x > exp_hi is
/// unspecified. One compare and one (zero-masking) select more than `exp_core`.
template <class Arch, std::size_t N>
ITSCALE_EXP_INLINE void exp_nonpositive(fbatch<Arch> (&x)[N]) noexcept {
  using B = fbatch<Arch>;
  fmask<Arch> keep[N];
  for (std::size_t j = 0; j < N; ++j) keep[j] = x[j] >= B(exp_lo);
  exp_core<Arch, N>(x);
  for (std::size_t j = 0; j < N; ++j) x[j] = xsimd::select(keep[j], x[j], B(0.0f));
}

/// One batch of `exp_nonpositive`.
template <class Arch>
[[nodiscard]] ITSCALE_EXP_INLINE fbatch<Arch> exp_nonpositive(fbatch<Arch> x) noexcept {
  fbatch<Arch> a[1] = {x};
  exp_nonpositive<Arch, 1>(a);
  return a[0];
}

/// exp for every float: within 2 ULP of the correctly rounded exp on [exp_lo, exp_hi]; +0 below
/// exp_lo (subnormal results flush to 0; -inf gives 0); +inf above exp_hi (+inf gives +inf);
/// NaN in, NaN out.
template <class Arch>
[[nodiscard]] ITSCALE_EXP_INLINE fbatch<Arch> exp(fbatch<Arch> x) noexcept {
  using B = fbatch<Arch>;
  B y = exp_nonpositive<Arch>(x);
  y = xsimd::select(x > B(exp_hi), B(std::numeric_limits<float>::infinity()), y);
  return xsimd::select(xsimd::isnan(x), x + x, y);  // x + x quiets a signalling NaN
}

}  // namespace detail
}  // namespace simd
}  // namespace kernels
ITSCALE_END_NAMESPACE

#undef ITSCALE_EXP_INLINE
