#pragma once
/// \file arch.hpp
/// Internal: the few arch-specific helpers the SIMD kernels need and xsimd 8.1 lacks
/// (horizontal max, a lane bit mask, compress of the selected lanes). This is the ONE header
/// with intrinsics; every kernel above it is written against `xsimd::batch<float, Arch>`.
///
/// Every helper is a template on `Arch`, so each instantiation is its own symbol: translation
/// units compiled with different `-m` flags (runtime dispatch) never share a definition (no ODR
/// hazard). Intrinsic branches are `if constexpr` on the arch and guarded by xsimd's
/// `XSIMD_WITH_*`, so a baseline (SSE2) build never sees an AVX type; anything without a
/// specialised branch takes the portable store-and-loop path, which is correct on every arch.

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#if XSIMD_WITH_SSE2 || XSIMD_WITH_AVX || XSIMD_WITH_AVX512F
#include <immintrin.h>

#include "itscale/core/abi.hpp"
#endif

ITSCALE_BEGIN_NAMESPACE
namespace kernels {
namespace simd {
namespace detail {

template <class Arch>
using fbatch = xsimd::batch<float, Arch>;
template <class Arch>
using ibatch = xsimd::batch<std::int32_t, Arch>;
template <class Arch>
using fmask = xsimd::batch_bool<float, Arch>;

template <class Arch>
inline constexpr std::size_t lanes = fbatch<Arch>::size;

template <class Arch, class Base>
inline constexpr bool is_a = std::is_base_of_v<Base, Arch>;

/// The largest lane. Once per row, so the shuffles only matter for short rows.
template <class Arch>
[[nodiscard]] inline float reduce_max(fbatch<Arch> x) noexcept {
#if XSIMD_WITH_AVX512F
  if constexpr (is_a<Arch, xsimd::avx512f>) {
    const __m512 v = x;
    const __m256 h = _mm256_max_ps(_mm512_castps512_ps256(v),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
  } else
#endif
#if XSIMD_WITH_AVX
  if constexpr (is_a<Arch, xsimd::avx>) {
    const __m256 v = x;
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
  } else
#endif
#if XSIMD_WITH_SSE2
  if constexpr (is_a<Arch, xsimd::sse2>) {
    __m128 q = x;
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
  } else
#endif
  {
    alignas(64) float t[lanes<Arch>];
    x.store_aligned(t);
    float m = t[0];
    for (std::size_t l = 1; l < lanes<Arch>; ++l) m = t[l] > m ? t[l] : m;
    return m;
  }
}

/// Bit l set when lane l of `m` is true.
template <class Arch>
[[nodiscard]] inline std::uint32_t movemask(fmask<Arch> m) noexcept {
#if XSIMD_WITH_AVX512F
  if constexpr (is_a<Arch, xsimd::avx512f>) {
    return static_cast<std::uint32_t>(static_cast<__mmask16>(m));
  } else
#endif
#if XSIMD_WITH_AVX
  if constexpr (is_a<Arch, xsimd::avx>) {
    return static_cast<std::uint32_t>(_mm256_movemask_ps(static_cast<__m256>(m)));
  } else
#endif
#if XSIMD_WITH_SSE2
  if constexpr (is_a<Arch, xsimd::sse2>) {
    return static_cast<std::uint32_t>(_mm_movemask_ps(static_cast<__m128>(m)));
  } else
#endif
  {
    alignas(64) float t[lanes<Arch>];
    xsimd::select(m, fbatch<Arch>(1.0f), fbatch<Arch>(0.0f)).store_aligned(t);
    std::uint32_t bits = 0;
    for (std::size_t l = 0; l < lanes<Arch>; ++l) bits |= (t[l] != 0.0f ? 1u : 0u) << l;
    return bits;
  }
}

/// Lanes where `x > t` or either is NaN (`!(x <= t)`), in one compare.
template <class Arch>
[[nodiscard]] inline fmask<Arch> gt_or_unordered(fbatch<Arch> x, fbatch<Arch> t) noexcept {
#if XSIMD_WITH_AVX512F
  if constexpr (is_a<Arch, xsimd::avx512f>) {
    return fmask<Arch>(_mm512_cmp_ps_mask(static_cast<__m512>(x), static_cast<__m512>(t), _CMP_NLE_UQ));
  } else
#endif
#if XSIMD_WITH_AVX
  if constexpr (is_a<Arch, xsimd::avx>) {
    return fmask<Arch>(_mm256_cmp_ps(static_cast<__m256>(x), static_cast<__m256>(t), _CMP_NLE_UQ));
  } else
#endif
#if XSIMD_WITH_SSE2
  if constexpr (is_a<Arch, xsimd::sse2>) {
    return fmask<Arch>(_mm_cmpnle_ps(static_cast<__m128>(x), static_cast<__m128>(t)));
  } else
#endif
  {
    return !(x <= t);
  }
}

/// The block test of the filters: false only if no lane of `v0..v3` is `> t`, so the block can be
/// skipped; true sends it to the per-batch path (which decides exactly, and never selects a NaN).
/// Two pairwise maxes, each compared: x86's max returns its second operand when either is NaN, so
/// a NaN in one batch replaces the other batch's value in that lane. Folding all four batches into
/// one max (the earlier test) let a NaN hide a finite entry above `t` in another batch: max(v0, v1)
/// is NaN, and then max(NaN, max(v2, v3)) drops it. Here each pair's max is either the larger
/// non-NaN value or NaN, and NaN counts as "may pass" (`gt_or_unordered`); that holds as well for
/// maxes that propagate NaN or ignore it (other arches). Cost: one compare more than one max.
template <class Arch>
[[nodiscard]] inline bool block_may_pass(fbatch<Arch> v0, fbatch<Arch> v1, fbatch<Arch> v2, fbatch<Arch> v3,
                                         fbatch<Arch> t) noexcept {
  return xsimd::any(gt_or_unordered<Arch>(xsimd::max(v0, v1), t) | gt_or_unordered<Arch>(xsimd::max(v2, v3), t));
}

#if XSIMD_WITH_AVX2
/// For each 8-bit lane mask, the lanes to gather (selected lanes first), one byte per lane.
inline constexpr auto avx2_compress_table = [] {
  struct table {
    std::uint64_t v[256];
  } t{};
  for (unsigned m = 0; m < 256; ++m) {
    std::uint64_t packed = 0;
    unsigned n = 0;
    for (unsigned l = 0; l < 8; ++l)
      if (m >> l & 1u) packed |= std::uint64_t{l} << (8 * n++);
    t.v[m] = packed;
  }
  return t;
}();
#endif

/// Writes the values and indices (`base + lane`) of the lanes selected by `m` to `out_v` /
/// `out_i`, packed, and returns how many. Both outputs need room for a whole batch (lanes
/// entries): full registers are stored, which is faster than a masked store. AVX-512 compresses
/// into a register then stores (the memory-destination compress is microcoded and slow on AMD
/// Zen 4/5); AVX2 permutes with a lookup table; other arches loop over the set bits.
template <class Arch>
inline std::size_t compress(fbatch<Arch> x, fmask<Arch> m, std::int32_t base, float* out_v,
                            std::int32_t* out_i) noexcept {
#if XSIMD_WITH_AVX512F
  if constexpr (is_a<Arch, xsimd::avx512f>) {
    const __mmask16 k = m;
    const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(base),
                                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    _mm512_storeu_ps(out_v, _mm512_maskz_compress_ps(k, x));
    _mm512_storeu_si512(out_i, _mm512_maskz_compress_epi32(k, idx));
    return static_cast<std::size_t>(__builtin_popcount(k));
  } else
#endif
#if XSIMD_WITH_AVX2
  if constexpr (is_a<Arch, xsimd::avx2>) {
    const unsigned bits = movemask<Arch>(m);
    const __m256i perm = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(avx2_compress_table.v[bits])));
    const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(base), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_storeu_ps(out_v, _mm256_permutevar8x32_ps(x, perm));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_i), _mm256_permutevar8x32_epi32(idx, perm));
    return static_cast<std::size_t>(__builtin_popcount(bits));
  } else
#endif
  {
    alignas(64) float t[lanes<Arch>];
    x.store_aligned(t);
    std::uint32_t bits = movemask<Arch>(m);
    std::size_t n = 0;
    while (bits != 0) {
      const auto l = static_cast<unsigned>(__builtin_ctz(bits));
      bits &= bits - 1;
      out_v[n] = t[l];
      out_i[n] = base + static_cast<std::int32_t>(l);
      ++n;
    }
    return n;
  }
}

/// Writes the 64-bit rank keys of the lanes selected by `m` to `out`, packed, and returns how
/// many: key = order-preserving bits of the value (-0 as +0) << 32 | (2^32 - 1 - (base + lane)),
/// the layout of select.hpp's `rank_key`. `out` needs room for a whole batch (full registers are
/// stored). AVX-512 builds the keys in registers (no per-lane loop, so no branch that depends on
/// how many lanes survive: the threshold filters call this at unpredictable moments); other arches
/// compress, then loop.
template <class Arch>
inline std::size_t compress_keys(fbatch<Arch> x, fmask<Arch> m, std::int32_t base, std::uint64_t* out) noexcept {
#if XSIMD_WITH_AVX512F
  if constexpr (is_a<Arch, xsimd::avx512f>) {
    const __mmask16 k = m;
    const __m512i u = _mm512_castps_si512(_mm512_add_ps(x, _mm512_setzero_ps()));  // -0 + 0 = +0
    const __m512i ok = _mm512_xor_si512(u, _mm512_or_si512(_mm512_srai_epi32(u, 31), _mm512_set1_epi32(INT32_MIN)));
    const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(base),
                                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m512i lo = _mm512_maskz_compress_epi32(k, _mm512_xor_si512(idx, _mm512_set1_epi32(-1)));
    const __m512i hi = _mm512_maskz_compress_epi32(k, ok);
    const auto key = [&](int half) {
      const __m256i l = half == 0 ? _mm512_castsi512_si256(lo) : _mm512_extracti64x4_epi64(lo, 1);
      const __m256i h = half == 0 ? _mm512_castsi512_si256(hi) : _mm512_extracti64x4_epi64(hi, 1);
      return _mm512_or_si512(_mm512_slli_epi64(_mm512_cvtepu32_epi64(h), 32), _mm512_cvtepu32_epi64(l));
    };
    _mm512_storeu_si512(out, key(0));
    _mm512_storeu_si512(out + 8, key(1));
    return static_cast<std::size_t>(__builtin_popcount(k));
  } else
#endif
  {
    alignas(64) float tv[lanes<Arch>];
    alignas(64) std::int32_t ti[lanes<Arch>];
    const std::size_t c = compress<Arch>(x, m, base, tv, ti);
    for (std::size_t j = 0; j < c; ++j) {
      const std::uint32_t u = __builtin_bit_cast(std::uint32_t, tv[j] + 0.0f);
      const std::uint32_t ok = (u >> 31) != 0 ? ~u : (u | 0x80000000u);
      out[j] = std::uint64_t{ok} << 32 | (0xFFFFFFFFu - static_cast<std::uint32_t>(ti[j]));
    }
    return c;
  }
}

/// `acc + (m ? x : 0)` lane-wise. AVX-512 adds under the mask register in one instruction (a
/// select then an add is two); top-p's mass pass does this once per threshold per batch.
template <class Arch>
[[nodiscard]] inline fbatch<Arch> masked_add(fbatch<Arch> acc, fmask<Arch> m, fbatch<Arch> x) noexcept {
#if XSIMD_WITH_AVX512F
  if constexpr (is_a<Arch, xsimd::avx512f>) {
    const __m512 a = acc;
    return _mm512_mask_add_ps(a, static_cast<__mmask16>(m), a, x);
  } else
#endif
  {
    return acc + xsimd::select(m, x, fbatch<Arch>(0.0f));
  }
}

/// a * b + c rounded once on arches with FMA. xsimd 8.1's `fma` for AVX-512 is a multiply then
/// an add, fused only when the compiler contracts across them (g++ in GNU mode does, clang does
/// not): the exp's polynomial went from 1 to 2 ULP under clang. Elsewhere xsimd's `fma` is used.
template <class Arch>
[[nodiscard]] inline __attribute__((always_inline)) fbatch<Arch> fmadd(fbatch<Arch> a, fbatch<Arch> b,
                                                                         fbatch<Arch> c) noexcept {
#if XSIMD_WITH_AVX512F
  if constexpr (is_a<Arch, xsimd::avx512f>) {
    return _mm512_fmadd_ps(a, b, c);
  } else
#endif
  {
    return xsimd::fma(a, b, c);
  }
}

/// Sum of the lanes (xsimd's `hadd`), named for symmetry with `reduce_max`.
template <class Arch>
[[nodiscard]] inline float reduce_add(fbatch<Arch> x) noexcept {
  return xsimd::hadd(x);
}

}  // namespace detail
}  // namespace simd
}  // namespace kernels
ITSCALE_END_NAMESPACE
