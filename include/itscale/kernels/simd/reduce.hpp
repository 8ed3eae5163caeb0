#pragma once
/// \file simd/reduce.hpp
/// SIMD reductions over one row, templated on the xsimd arch (`itscale::kernels::simd::X<Arch>`):
/// max, argmax, logsumexp (also over many rows), find_invalid, count_unmasked, and the exp-sum
/// pass that softmax, logsumexp and sampling share. `noexcept`, no allocation. Semantics are those
/// of the scalar reference in `kernels/reference/reduce.hpp`; see the public `kernels/reduce.hpp`.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/kernels/kernel_types.hpp"
#include "itscale/kernels/simd/arch.hpp"
#include "itscale/kernels/simd/exp.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {
namespace simd {

namespace detail {

inline constexpr float neg_inf = -std::numeric_limits<float>::infinity();
inline constexpr float pos_inf = std::numeric_limits<float>::infinity();

/// Loads the `n < lanes` trailing entries at `p`, the other lanes set to `fill`.
template <class Arch>
[[nodiscard]] inline fbatch<Arch> load_tail(const float* p, std::size_t n, float fill) noexcept {
  alignas(64) float t[lanes<Arch>];
  for (std::size_t l = 0; l < lanes<Arch>; ++l) t[l] = l < n ? p[l] : fill;
  return fbatch<Arch>::load_aligned(t);
}

/// Stores the first `n < lanes` lanes of `x` to `p`.
template <class Arch>
inline void store_tail(fbatch<Arch> x, float* p, std::size_t n) noexcept {
  alignas(64) float t[lanes<Arch>];
  x.store_aligned(t);
  for (std::size_t l = 0; l < n; ++l) p[l] = t[l];
}

/// sum over the row of exp(x - m), optionally storing every exp to `out` (may alias `row`).
/// Precondition: every x - m <= 0 or -inf (m >= the row's max), no NaN: the exp is
/// `exp_nonpositive` (simd/exp.hpp), which flushes results below FLT_MIN to 0.
/// Float lanes, four accumulators, flushed into a double every 64 iterations: each lane adds at
/// most 64 terms in float, so the sum's relative error stays ~1e-7 at any row length.
template <class Arch>
[[nodiscard]] inline double exp_sum(std::span<const float> row, float m, float* out) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t L = lanes<Arch>;
  const B mb(m);
  const float* p = row.data();
  const std::size_t n = row.size();
  double total = 0;
  std::size_t i = 0;
  while (i + 4 * L <= n) {
    B a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
    const std::size_t stop = n - (n - i) % (4 * L);
    const std::size_t block_end = i + 64 * 4 * L < stop ? i + 64 * 4 * L : stop;
    for (; i < block_end; i += 4 * L) {
      B e[4] = {B::load_unaligned(p + i) - mb, B::load_unaligned(p + i + L) - mb,
                B::load_unaligned(p + i + 2 * L) - mb, B::load_unaligned(p + i + 3 * L) - mb};
      exp_nonpositive<Arch, 4>(e);  // four exps interleaved (see simd/exp.hpp)
      if (out) {
        e[0].store_unaligned(out + i);
        e[1].store_unaligned(out + i + L);
        e[2].store_unaligned(out + i + 2 * L);
        e[3].store_unaligned(out + i + 3 * L);
      }
      a0 += e[0];
      a1 += e[1];
      a2 += e[2];
      a3 += e[3];
    }
    total += static_cast<double>(reduce_add<Arch>((a0 + a1) + (a2 + a3)));
  }
  B a(0.0f);
  for (; i + L <= n; i += L) {
    const B e = exp_nonpositive<Arch>(B::load_unaligned(p + i) - mb);
    if (out) e.store_unaligned(out + i);
    a += e;
  }
  if (i < n) {
    const B e = exp_nonpositive<Arch>(load_tail<Arch>(p + i, n - i, neg_inf) - mb);  // exp(-inf) = 0
    if (out) store_tail<Arch>(e, out + i, n - i);
    a += e;
  }
  return total + static_cast<double>(reduce_add<Arch>(a));
}

}  // namespace detail

/// The largest value; `-inf` for an empty row. Precondition: no NaN.
template <class Arch>
[[nodiscard]] float max(std::span<const float> row) noexcept {
  using B = detail::fbatch<Arch>;
  constexpr std::size_t L = detail::lanes<Arch>;
  const float* p = row.data();
  const std::size_t n = row.size();
  B m0(detail::neg_inf), m1(detail::neg_inf), m2(detail::neg_inf), m3(detail::neg_inf);
  std::size_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    m0 = xsimd::max(m0, B::load_unaligned(p + i));
    m1 = xsimd::max(m1, B::load_unaligned(p + i + L));
    m2 = xsimd::max(m2, B::load_unaligned(p + i + 2 * L));
    m3 = xsimd::max(m3, B::load_unaligned(p + i + 3 * L));
  }
  for (; i + L <= n; i += L) m0 = xsimd::max(m0, B::load_unaligned(p + i));
  if (i < n) m1 = xsimd::max(m1, detail::load_tail<Arch>(p + i, n - i, detail::neg_inf));
  return detail::reduce_max<Arch>(xsimd::max(xsimd::max(m0, m1), xsimd::max(m2, m3)));
}

/// Index of the first entry equal to `v` at or after `from`, or `npos`.
template <class Arch>
[[nodiscard]] std::size_t find_first_equal(std::span<const float> row, float v, std::size_t from = 0) noexcept {
  using B = detail::fbatch<Arch>;
  constexpr std::size_t L = detail::lanes<Arch>;
  const B vb(v);
  const float* p = row.data();
  const std::size_t n = row.size();
  std::size_t i = from;
  for (; i + L <= n; i += L) {
    const std::uint32_t bits = detail::movemask<Arch>(B::load_unaligned(p + i) == vb);
    if (bits != 0) return i + static_cast<std::size_t>(__builtin_ctz(bits));
  }
  for (; i < n; ++i)
    if (p[i] == v) return i;
  return npos;
}

/// Index of the largest value, ties to the lowest index; `npos` for an empty row. Two passes
/// (max, then the first lane equal to it): both run at load speed, faster than carrying indices.
/// Precondition: no NaN.
template <class Arch>
[[nodiscard]] std::size_t argmax(std::span<const float> row) noexcept {
  if (row.empty()) return npos;
  return find_first_equal<Arch>(row, max<Arch>(row));
}

namespace detail {

/// Upper bound on the chunks of `exp_sum_online`: the chunk references fit on the stack.
inline constexpr std::size_t online_max_chunks = 64;

/// Result of `exp_sum_online`: the row's max, sum of exp(x - max), and how the row was chunked.
/// The exps stored for chunk k (entries [k * chunk, (k + 1) * chunk)) are exp(x - ref[k]),
/// ref[k] <= max; multiplying them by exp(ref[k] - max) / sum normalises them.
struct online_sum {
  float max = neg_inf;
  double sum = 0;
  std::size_t chunk = 0;
  std::size_t chunks = 0;
  float ref[online_max_chunks];
};

/// Max and exp-sum of the row in one read of it from L2 (softmax, logsumexp): the row is split
/// into at most 64 chunks of >= 32 unrolled iterations (8 KiB on avx512); the exps of chunk k are
/// taken relative to the running max (the max of chunks 0..k), while the same loop takes the max
/// of chunk k + 1 — its loads and max ops go to the load and add pipes, idle under the FMA-bound
/// exps, so the separate max pass (2.5 us of 24 at V = 128 256 on Zen 5) disappears. When the
/// running max rises the double sum is rescaled once per chunk, not per element; the stored exps
/// keep their chunk's reference and the caller's scaling pass applies it (softmax).
/// Optionally stores every exp to `out` (may alias `row`: chunk k is written while chunk k + 1 is
/// read). Precondition: no NaN. A `+inf` entry gives max = +inf (its exps are 0, sum unspecified);
/// an all `-inf` row gives max = -inf and sum 0.
/// Accuracy: as `exp_sum` with m = max; an entry in a chunk whose reference is below the max
/// has x - ref rounded instead of x - max (no larger), then one more float rounding in the scale.
template <class Arch>
inline void exp_sum_online(std::span<const float> row, float* out, online_sum& res) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t L = lanes<Arch>, U = 4 * L;
  const float* p = row.data();
  const std::size_t n = row.size();
  std::size_t c = (n + online_max_chunks - 1) / online_max_chunks;
  c = (c + U - 1) / U * U;
  if (c < 32 * U) c = 32 * U;
  res.chunk = c;
  res.chunks = (n + c - 1) / c;
  float run = neg_inf;
  double sum = 0;
  float next_max = n == 0 ? neg_inf : max<Arch>(row.first(c < n ? c : n));
  for (std::size_t k = 0; k < res.chunks; ++k) {
    const std::size_t lo = k * c, len = c < n - lo ? c : n - lo;
    const std::size_t nlo = lo + len, nlen = nlo >= n ? 0 : (c < n - nlo ? c : n - nlo);
    if (next_max > run) {
      // run == -inf: nothing summed yet (and -inf - x would be NaN in the exp's argument).
      if (run != neg_inf) sum *= std::exp(static_cast<double>(run) - static_cast<double>(next_max));
      run = next_max;
    }
    res.ref[k] = run;
    // An all -inf prefix has run == -inf: x - run is NaN, which exp_nonpositive maps to 0.
    const B mb(run);
    B m0(neg_inf), m1(neg_inf), m2(neg_inf), m3(neg_inf);
    const float* q = p + lo;
    const float* nq = p + nlo;
    float* w = out != nullptr ? out + lo : nullptr;
    const std::size_t full = len - len % U, nfull = nlen - nlen % U;
    double csum = 0;
    std::size_t i = 0;
    while (i < full) {
      // Float lanes flushed into a double every 64 iterations, as in exp_sum.
      B a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
      const std::size_t block_end = i + 64 * U < full ? i + 64 * U : full;
      for (; i < block_end; i += U) {
        if (i < nfull) {  // only the last chunk is shorter, so this is false at most at its end
          m0 = xsimd::max(m0, B::load_unaligned(nq + i));
          m1 = xsimd::max(m1, B::load_unaligned(nq + i + L));
          m2 = xsimd::max(m2, B::load_unaligned(nq + i + 2 * L));
          m3 = xsimd::max(m3, B::load_unaligned(nq + i + 3 * L));
        }
        B e[4] = {B::load_unaligned(q + i) - mb, B::load_unaligned(q + i + L) - mb,
                  B::load_unaligned(q + i + 2 * L) - mb, B::load_unaligned(q + i + 3 * L) - mb};
        exp_nonpositive<Arch, 4>(e);  // four exps interleaved (see simd/exp.hpp)
        if (w != nullptr) {
          e[0].store_unaligned(w + i);
          e[1].store_unaligned(w + i + L);
          e[2].store_unaligned(w + i + 2 * L);
          e[3].store_unaligned(w + i + 3 * L);
        }
        a0 += e[0];
        a1 += e[1];
        a2 += e[2];
        a3 += e[3];
      }
      csum += static_cast<double>(reduce_add<Arch>((a0 + a1) + (a2 + a3)));
    }
    if (i < len) {  // the last chunk's tail
      B a(0.0f);
      for (; i + L <= len; i += L) {
        const B e = exp_nonpositive<Arch>(B::load_unaligned(q + i) - mb);
        if (w != nullptr) e.store_unaligned(w + i);
        a += e;
      }
      if (i < len) {
        const B e = exp_nonpositive<Arch>(load_tail<Arch>(q + i, len - i, neg_inf) - mb);
        if (w != nullptr) store_tail<Arch>(e, w + i, len - i);
        a += e;
      }
      csum += static_cast<double>(reduce_add<Arch>(a));
    }
    sum += csum;
    float nm = reduce_max<Arch>(xsimd::max(xsimd::max(m0, m1), xsimd::max(m2, m3)));
    if (nlen > nfull) {
      const float t = max<Arch>(std::span<const float>(nq + nfull, nlen - nfull));
      nm = t > nm ? t : nm;
    }
    next_max = nm;
  }
  res.max = run;
  res.sum = sum;
}

}  // namespace detail

/// log(sum(exp(row))) as max + log(sum exp(row - max)); `-inf` for an empty or fully masked row,
/// `+inf` if an entry is `+inf`. One read of the row: `detail::exp_sum_online` takes each chunk's
/// max in the loop that exps the previous chunk (a per-element online rescale would cost a second
/// exp; a separate max pass costs a second read of the row from L2).
template <class Arch>
[[nodiscard]] float logsumexp(std::span<const float> row) noexcept {
  detail::online_sum s;
  detail::exp_sum_online<Arch>(row, nullptr, s);
  if (s.max == detail::neg_inf || s.max == detail::pos_inf) return s.max;
  return s.max + static_cast<float>(std::log(s.sum));
}

/// logsumexp of each of `out.size()` consecutive rows of `vocab` entries in `rows`.
/// Precondition: `rows.size() == out.size() * vocab`.
template <class Arch>
void logsumexp_rows(std::span<const float> rows, std::size_t vocab, std::span<float> out) noexcept {
  for (std::size_t r = 0; r < out.size(); ++r) out[r] = logsumexp<Arch>(rows.subspan(r * vocab, vocab));
}

/// Index of the first NaN or `+inf`, or `npos`. One compare per batch: `!(x < +inf)` holds
/// exactly for NaN and +inf.
template <class Arch>
[[nodiscard]] std::size_t find_invalid(std::span<const float> row) noexcept {
  using B = detail::fbatch<Arch>;
  constexpr std::size_t L = detail::lanes<Arch>;
  const B inf(detail::pos_inf);
  const float* p = row.data();
  const std::size_t n = row.size();
  std::size_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    const auto ok = (B::load_unaligned(p + i) < inf) && (B::load_unaligned(p + i + L) < inf) &&
                    (B::load_unaligned(p + i + 2 * L) < inf) && (B::load_unaligned(p + i + 3 * L) < inf);
    if (!xsimd::all(ok)) break;
  }
  for (; i + L <= n; i += L) {
    const std::uint32_t bad = ~detail::movemask<Arch>(B::load_unaligned(p + i) < inf) & ((1u << L) - 1u);
    if (bad != 0) return i + static_cast<std::size_t>(__builtin_ctz(bad));
  }
  for (; i < n; ++i)
    if (!(p[i] < detail::pos_inf)) return i;
  return npos;
}

/// Number of entries `> -inf`.
template <class Arch>
[[nodiscard]] std::size_t count_unmasked(std::span<const float> row) noexcept {
  using B = detail::fbatch<Arch>;
  constexpr std::size_t L = detail::lanes<Arch>;
  const B ninf(detail::neg_inf), one(1.0f), zero(0.0f);
  const float* p = row.data();
  const std::size_t n = row.size();
  std::size_t total = 0;
  std::size_t i = 0;
  while (i + L <= n) {
    // Float lane counters are exact up to 2^24: flushed every 2^20 batches.
    B c(0.0f);
    const std::size_t stop = n - (n - i) % L;
    const std::size_t block_end = i + (std::size_t{1} << 20) * L < stop ? i + (std::size_t{1} << 20) * L : stop;
    for (; i < block_end; i += L) c += xsimd::select(B::load_unaligned(p + i) > ninf, one, zero);
    total += static_cast<std::size_t>(xsimd::hadd(c));
  }
  for (; i < n; ++i) total += p[i] > detail::neg_inf ? 1u : 0u;
  return total;
}

}  // namespace simd
}  // namespace kernels
ITSCALE_END_NAMESPACE
