#pragma once
/// \file simd/filters.hpp
/// SIMD truncation filters for sampling, templated on the xsimd arch: masking below a logit
/// threshold (min-p needs no exp: threshold = max + ln p) and top-p without sorting the
/// vocabulary. Semantics: see the public `kernels/filters.hpp`.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/kernels/simd/select.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {
namespace simd {

/// Sets every entry `< threshold` to -inf; returns how many entries are left `> -inf`.
template <class Arch>
std::size_t mask_below(std::span<float> row, float threshold) noexcept {
  using B = detail::fbatch<Arch>;
  constexpr std::size_t L = detail::lanes<Arch>;
  const B tb(threshold), ninf(detail::neg_inf);
  float* p = row.data();
  const std::size_t n = row.size();
  std::size_t i = 0;
  for (; i + L <= n; i += L) {
    const B x = B::load_unaligned(p + i);
    xsimd::select(x < tb, ninf, x).store_unaligned(p + i);
  }
  if (i < n) {
    const B x = detail::load_tail<Arch>(p + i, n - i, 0.0f);
    detail::store_tail<Arch>(xsimd::select(x < tb, ninf, x), p + i, n - i);
  }
  return count_unmasked<Arch>(row);
}

namespace detail {
/// Appends `base + l` to `out` for every bit l of `bits`, lowest first; returns the new end.
/// A template on the arch like every helper here (see arch.hpp: no ODR hazard across flags).
template <class Arch>
inline token_id* append_lanes(std::uint32_t bits, std::size_t base, token_id* out) noexcept {
  for (; bits != 0; bits &= bits - 1)
    *out++ = static_cast<token_id>(base + static_cast<std::size_t>(__builtin_ctz(bits)));
  return out;
}
}  // namespace detail

/// Writes the ids of the entries `> -inf` to `ids` in increasing order; returns how many.
/// Precondition: `ids` has room for them (`row.size()` always suffices). One read of the row;
/// the writes cost per kept entry, so a row masked down to a few tokens costs a max pass.
template <class Arch>
std::size_t collect_unmasked(std::span<const float> row, std::span<token_id> ids) noexcept {
  using B = detail::fbatch<Arch>;
  constexpr std::size_t L = detail::lanes<Arch>;
  const B ninf(detail::neg_inf);
  const float* p = row.data();
  const std::size_t n = row.size();
  token_id* out = ids.data();
  std::size_t i = 0;
  for (; i + L <= n; i += L)
    out = detail::append_lanes<Arch>(detail::movemask<Arch>(B::load_unaligned(p + i) > ninf), i, out);
  if (i < n) {
    const B x = detail::load_tail<Arch>(p + i, n - i, detail::neg_inf);
    out = detail::append_lanes<Arch>(detail::movemask<Arch>(x > ninf), i, out);
  }
  return static_cast<std::size_t>(out - ids.data());
}

/// `mask_below` that also writes the ids of the entries left `> -inf` to `kept` (increasing);
/// returns how many. Precondition: `kept` has room for them (`row.size()` always suffices).
template <class Arch>
std::size_t mask_below_collect(std::span<float> row, float threshold, std::span<token_id> kept) noexcept {
  using B = detail::fbatch<Arch>;
  constexpr std::size_t L = detail::lanes<Arch>;
  const B tb(threshold), ninf(detail::neg_inf);
  float* p = row.data();
  const std::size_t n = row.size();
  token_id* out = kept.data();
  const auto cut = [&](std::size_t at) {
    const B x = B::load_unaligned(p + at);
    const B y = xsimd::select(x < tb, ninf, x);
    y.store_unaligned(p + at);
    return y;
  };
  std::size_t i = 0;
  // Four batches per test: after a top-k almost every batch is all masked, so the lane lists are
  // rarely built and the loop runs at the speed of its loads and stores.
  for (; i + 4 * L <= n; i += 4 * L) {
    const B y0 = cut(i), y1 = cut(i + L), y2 = cut(i + 2 * L), y3 = cut(i + 3 * L);
    // A NaN left in one batch must not hide kept entries of the others: see block_may_pass (arch.hpp).
    if (!detail::block_may_pass<Arch>(y0, y1, y2, y3, ninf)) continue;
    out = detail::append_lanes<Arch>(detail::movemask<Arch>(y0 > ninf), i, out);
    out = detail::append_lanes<Arch>(detail::movemask<Arch>(y1 > ninf), i + L, out);
    out = detail::append_lanes<Arch>(detail::movemask<Arch>(y2 > ninf), i + 2 * L, out);
    out = detail::append_lanes<Arch>(detail::movemask<Arch>(y3 > ninf), i + 3 * L, out);
  }
  for (; i + L <= n; i += L) out = detail::append_lanes<Arch>(detail::movemask<Arch>(cut(i) > ninf), i, out);
  if (i < n) {
    const B t = detail::load_tail<Arch>(p + i, n - i, detail::neg_inf);
    const B x = xsimd::select(t < tb, ninf, t);
    detail::store_tail<Arch>(x, p + i, n - i);
    out = detail::append_lanes<Arch>(detail::movemask<Arch>(x > ninf), i, out);
  }
  return static_cast<std::size_t>(out - kept.data());
}

/// The min-p logit threshold max + ln(p): a token's probability is >= p * max probability exactly
/// when its logit is >= this (up to the rounding of one addition). `-inf` for p = 0.
template <class Arch>
[[nodiscard]] float min_p_threshold(std::span<const float> row, float p) noexcept {
  return max<Arch>(row) + std::log(p);
}

namespace detail {

/// The exp of every top-p mass (one function, so the sample, the mass pass and the refinement
/// give each token the same mass). Its argument is x - max <= 0.
template <class Arch>
[[nodiscard]] inline fbatch<Arch> top_p_exp(fbatch<Arch> x_minus_max) noexcept {
  return exp_nonpositive<Arch>(x_minus_max);
}

/// The next float above a finite `v` (std::nextafter is an inline library function: a copy
/// compiled with AVX flags could stand in for a baseline caller; see arch.hpp).
template <class Arch>
[[nodiscard]] inline float next_up(float v) noexcept {
  const float w = v + 0.0f;  // -0 -> +0
  const auto u = std::bit_cast<std::uint32_t>(w);
  if (w == 0.0f) return std::bit_cast<float>(std::uint32_t{1});
  return std::bit_cast<float>(static_cast<std::int32_t>(u) >= 0 ? u + 1 : u - 1);
}

/// Logit thresholds the mass pass measures (the mass of the entries `>= t` for each).
inline constexpr std::size_t top_p_cuts = 6;
/// Strided sample that places them, and its histogram.
inline constexpr std::size_t top_p_sample = 2048;
inline constexpr std::size_t top_p_sample_bins = 512;

/// Places `top_p_cuts` thresholds (descending; unused ones +inf, which nothing reaches) around
/// where a strided sample of the row crosses `p` of its mass: the sample's crossing value `v`
/// and the float just above it (so a crossing inside a run of equal logits is found without
/// listing them), and the values about 24 and 96 sample entries above and below it. Only speed
/// depends on them: the mass pass is exact for any cuts. Each cut costs the mass pass a compare
/// and a masked add per batch (~3.5 us at V = 128 256 on AVX-512); the sample's crossing misses
/// the true one by ~15 sample entries (median, N(0,1) logits, p = 0.9), up to ~70 (p99).
template <class Arch>
void top_p_place_cuts(const float* row, std::size_t n, float m, double p, float (&cut)[top_p_cuts]) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t L = lanes<Arch>, S = top_p_sample, SB = top_p_sample_bins;
  for (float& c : cut) c = pos_inf;
  if (n < 4 * S) return;  // no cuts: the whole row is refined (short rows only)
  const std::size_t stride = n / S;
  alignas(64) float xs[S], es[S];
  float lowest = m;
  for (std::size_t j = 0; j < S; ++j) {
    xs[j] = row[j * stride];
    if (xs[j] > neg_inf && xs[j] < lowest) lowest = xs[j];
  }
  // Bins over the distance below the max, at most 32 wide (e^-32 is no mass); -inf to the last.
  const float span = m - lowest < 32.0f ? m - lowest : 32.0f;
  const float inv = span > 0.0f ? static_cast<float>(SB) / span : 0.0f;
  const float width = span / static_cast<float>(SB);
  using I = ibatch<Arch>;
  alignas(64) std::int32_t bs[S];
  const B mb(m), ib(inv), top(static_cast<float>(SB - 1)), ninf(neg_inf);
  for (std::size_t j = 0; j < S; j += L) {
    const B x = B::load_aligned(xs + j);
    top_p_exp<Arch>(x - mb).store_aligned(es + j);
    xsimd::batch_cast<std::int32_t>(xsimd::select(x > ninf, xsimd::min((mb - x) * ib, top), top)).store_aligned(bs + j);
  }
  double mass[SB] = {};
  std::uint32_t count[SB] = {};
  double total = 0;
  for (std::size_t j = 0; j < S; ++j) {  // exp(-inf) = 0: only the count needs the test
    const auto b = static_cast<std::size_t>(bs[j]);
    mass[b] += static_cast<double>(es[j]);
    count[b] += xs[j] > neg_inf ? 1u : 0u;
    total += static_cast<double>(es[j]);
  }
  // The max itself (weighted as one entry, not a stride's worth): a lone peak holding the mass
  // (which the stride misses 60 times in 61) then puts the crossing at m.
  mass[0] += 1.0 / static_cast<double>(stride);
  total += 1.0 / static_cast<double>(stride);
  const double target = p * total;
  double acc = 0;
  std::size_t bc = 0;
  while (bc + 1 < SB && acc + mass[bc] < target) acc += mass[bc++];
  // The largest sampled value in the crossing bin (m for bin 0).
  const B bcb(static_cast<float>(bc));
  B best(bc == 0 ? m : neg_inf);
  for (std::size_t j = 0; j < S; j += L)
    best = xsimd::max(best, xsimd::select(xsimd::batch_cast<float>(I::load_aligned(bs + j)) == bcb, B::load_aligned(xs + j), ninf));
  const float v = reduce_max<Arch>(best);
  if (v == neg_inf) return;
  std::size_t c = 0;
  cut[c++] = next_up<Arch>(v);
  cut[c++] = v;
  for (std::uint32_t want : {24u, 96u}) {
    std::uint32_t got = 0;
    std::size_t b = bc;
    while (b > 0 && got < want) got += count[--b];
    if (got >= want) cut[c++] = m - static_cast<float>(b) * width;
    got = 0;
    b = bc;
    while (b + 1 < SB && got < want) got += count[++b];
    if (got >= want) cut[c++] = m - static_cast<float>(b + 1) * width;
  }
  for (std::size_t a = 1; a < top_p_cuts; ++a)  // descending
    for (std::size_t b = a; b > 0 && cut[b - 1] < cut[b]; --b) {
      const float t = cut[b];
      cut[b] = cut[b - 1];
      cut[b - 1] = t;
    }
}

/// The mass pass: `total` = sum of exp(x - m) over the row, `above[k]` = the same over the
/// entries `>= cut[k]`. Float lanes flushed into doubles every 64 batches (each lane adds at most
/// 64 terms in float, ~1e-7 relative error at any length). Sums over nested sets in one order:
/// `above` is non-decreasing as the cuts descend.
template <class Arch>
void top_p_masses(const float* row, std::size_t n, float m, const float (&cut)[top_p_cuts], double& total,
                  double (&above)[top_p_cuts]) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t L = lanes<Arch>, T = top_p_cuts;
  const B mb(m), zero(0.0f);
  B cb[T];
  for (std::size_t k = 0; k < T; ++k) cb[k] = B(cut[k]);
  total = 0;
  for (double& a : above) a = 0;
  std::size_t i = 0;
  const auto block = [&](std::size_t end, auto load) {
    B s = zero, a[T];
    for (std::size_t k = 0; k < T; ++k) a[k] = zero;
    // Two batches per step: their exps interleave (the exp is a dependency chain of FMAs).
    for (; i + 2 * L <= end; i += 2 * L) {
      const B x0 = load(i), x1 = load(i + L);
      B e[2] = {x0 - mb, x1 - mb};
      exp_nonpositive<Arch, 2>(e);
      s += e[0] + e[1];
      for (std::size_t k = 0; k < T; ++k) a[k] = masked_add<Arch>(masked_add<Arch>(a[k], x0 >= cb[k], e[0]), x1 >= cb[k], e[1]);
    }
    for (; i < end; i += L) {
      const B x = load(i);
      const B e = top_p_exp<Arch>(x - mb);
      s += e;
      for (std::size_t k = 0; k < T; ++k) a[k] = masked_add<Arch>(a[k], x >= cb[k], e);
    }
    total += static_cast<double>(reduce_add<Arch>(s));
    for (std::size_t k = 0; k < T; ++k) above[k] += static_cast<double>(reduce_add<Arch>(a[k]));
  };
  const std::size_t full = n - n % L;
  while (i < full) block(full - i < 64 * L ? full : i + 64 * L, [&](std::size_t at) { return B::load_unaligned(row + at); });
  if (i < n) block(i + L, [&](std::size_t at) { return load_tail<Arch>(row + at, n - at, neg_inf); });
}

/// Lists the rank keys of the entries with `lo <= x < hi` in `keys` (increasing index order;
/// `lo > -inf`), masks the entries `< lo` (they rank below the crossing) and counts those `>= hi`
/// (they rank above it) into `above`; returns how many were listed. The branch on "any listed"
/// is cheaper than an unconditional compress while about a quarter of the batches list one.
template <class Arch>
std::size_t top_p_collect(float* row, std::size_t n, float lo, float hi, std::uint64_t* keys,
                          std::size_t& above) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t L = lanes<Arch>;
  const B lb(lo), hb(hi), ninf(neg_inf), one(1.0f), zero(0.0f);
  alignas(64) float tv[L];
  alignas(64) std::int32_t ti[L];
  std::size_t c = 0;
  above = 0;
  // A full batch at `at` may store a whole batch of keys at keys + c: c <= at, so it fits in n.
  const auto take = [&](B x, std::size_t at) {
    const auto in = (x >= lb) & (x < hb);
    if (!xsimd::any(in)) return;
    c += compress_keys<Arch>(x, in, static_cast<std::int32_t>(at), keys + c);
  };
  const auto take_tail = [&](B x, std::size_t at) {
    const auto in = (x >= lb) & (x < hb);
    const std::size_t got = compress<Arch>(x, in, static_cast<std::int32_t>(at), tv, ti);
    for (std::size_t j = 0; j < got; ++j) keys[c++] = rank_key<Arch>(tv[j], static_cast<std::uint32_t>(ti[j]));
  };
  std::size_t i = 0;
  while (i + L <= n) {
    // Float lane counters are exact up to 2^24: flushed every 2^20 batches.
    B cnt = zero;
    const std::size_t stop = n - (n - i) % L, end = stop - i < (std::size_t{1} << 20) * L ? stop : i + (std::size_t{1} << 20) * L;
    for (; i < end; i += L) {
      const B x = B::load_unaligned(row + i);
      xsimd::select(x < lb, ninf, x).store_unaligned(row + i);
      cnt += xsimd::select(x >= hb, one, zero);
      take(x, i);
    }
    above += static_cast<std::size_t>(reduce_add<Arch>(cnt));
  }
  if (i < n) {
    const B x = load_tail<Arch>(row + i, n - i, neg_inf);
    store_tail<Arch>(xsimd::select(x < lb, ninf, x), row + i, n - i);
    above += static_cast<std::size_t>(reduce_add<Arch>(xsimd::select(x >= hb, one, zero)));
    take_tail(x, i);
  }
  return c;
}

/// How many of `avail` equal entries of mass `e` (each) must follow `before` to reach `target`:
/// the smallest j >= 1 with before + j e >= target, or `avail` if none.
template <class Arch>
[[nodiscard]] std::size_t top_p_equal_count(double before, double target, double e, std::size_t avail) noexcept {
  const double q = (target - before) / e;
  std::size_t j = !(q < static_cast<double>(avail)) ? avail : q <= 1.0 ? 1 : static_cast<std::size_t>(std::ceil(q));
  while (j > 1 && before + static_cast<double>(j - 1) * e >= target) --j;
  while (j < avail && before + static_cast<double>(j) * e < target) ++j;
  return j;
}

/// exp(v - m) for one value, as the mass pass computed it.
template <class Arch>
[[nodiscard]] inline double top_p_mass_of(float v, float m) noexcept {
  return static_cast<double>(top_p_exp<Arch>(fbatch<Arch>(v) - fbatch<Arch>(m)).get(0));
}

/// The key of the token where the cumulative mass, starting from `before` and adding the
/// candidates `src[0, c)` (c >= 1, increasing index order) best first, first reaches `target`
/// (the lowest-ranked candidate if rounding leaves it short). `work`: room for c keys, may be
/// `src` (then `src` is overwritten, else it is left as it is). Repeatedly
/// histograms the candidates' mass over their value range and keeps the crossing bin's; a set of
/// equal values is resolved by counting (ranked by index = the order they are in); a few are
/// sorted.
template <class Arch>
[[nodiscard]] std::uint64_t top_p_refine(const std::uint64_t* src, std::uint64_t* work, std::size_t c, float m,
                                         double before, double target) noexcept {
  const std::uint64_t* keys = src;
  using B = fbatch<Arch>;
  constexpr std::size_t L = lanes<Arch>, max_bins = 4096;
  const B mb(m);
  double mass[max_bins];
  alignas(64) float vs[L], es[L];
  alignas(64) std::int32_t bs[L];
  for (;;) {
    std::uint32_t kmin = 0xFFFFFFFFu, kmax = 0;
    for (std::size_t j = 0; j < c; ++j) {
      const auto k = static_cast<std::uint32_t>(keys[j] >> 32);
      kmin = k < kmin ? k : kmin;
      kmax = k > kmax ? k : kmax;
    }
    if (kmin == kmax) {  // all equal: ranked by index, the order they are in
      const double e = top_p_mass_of<Arch>(from_order_key<Arch>(kmin), m);
      return keys[top_p_equal_count<Arch>(before, target, e, c) - 1];
    }
    const float vlo = from_order_key<Arch>(kmin), vhi = from_order_key<Arch>(kmax);
    std::size_t nb = 64;  // about c / 2 bins
    while (nb < max_bins && 2 * nb < c) nb *= 2;
    const float scale = static_cast<float>(nb) / (vhi - vlo);
    if (c <= 64 || !(scale > 0.0f) || !(scale < pos_inf)) {
      if (keys != work)
        for (std::size_t j = 0; j < c; ++j) work[j] = keys[j];
      std::sort(work, work + c, key_greater<Arch>{});
      for (std::size_t j = 0; j < c; ++j) {
        before += top_p_mass_of<Arch>(rank_value<Arch>(work[j]), m);
        if (before >= target) return work[j];
      }
      return work[c - 1];
    }
    // Bins of the value, ascending; computed the same way (in batches) both times.
    const B lob(vlo), sb(scale), top(static_cast<float>(nb - 1));
    const auto bins = [&](std::size_t at, std::size_t len, bool with_mass) {
      for (std::size_t l = 0; l < L; ++l) vs[l] = l < len ? rank_value<Arch>(keys[at + l]) : vlo;
      const B v = B::load_aligned(vs);
      xsimd::batch_cast<std::int32_t>(xsimd::min((v - lob) * sb, top)).store_aligned(bs);
      if (with_mass) top_p_exp<Arch>(v - mb).store_aligned(es);
    };
    for (std::size_t j = 0; j < nb; ++j) mass[j] = 0.0;
    for (std::size_t at = 0; at < c; at += L) {
      const std::size_t len = c - at < L ? c - at : L;
      bins(at, len, true);
      for (std::size_t l = 0; l < len; ++l) mass[bs[l]] += static_cast<double>(es[l]);
    }
    std::size_t b = nb;
    double acc = before;
    while (b > 0 && acc + mass[b - 1] < target) acc += mass[--b];
    if (b == 0) {  // short by rounding: keep them all
      std::uint64_t lowest = keys[0];
      for (std::size_t j = 1; j < c; ++j) lowest = keys[j] < lowest ? keys[j] : lowest;
      return lowest;
    }
    --b;
    // The bin is monotone in the value, so bin b is a range of order keys: find its ends by
    // bisection (the same float operations as the batches, one lane at a time), then keep the
    // keys in it with integer compares instead of recomputing every key's bin.
    const auto bin_at = [&](std::uint32_t ok) {
      const float t = (from_order_key<Arch>(ok) - vlo) * scale;
      return static_cast<std::size_t>(static_cast<std::int32_t>(t < static_cast<float>(nb - 1) ? t : static_cast<float>(nb - 1)));
    };
    const auto first_at_least = [&](std::size_t bin) {  // smallest order key in [kmin, kmax] with bin >= `bin`
      std::uint32_t lo_k = kmin, hi_k = kmax;
      while (lo_k < hi_k) {
        const std::uint32_t mid = lo_k + (hi_k - lo_k) / 2;
        if (bin_at(mid) >= bin)
          hi_k = mid;
        else
          lo_k = mid + 1;
      }
      return lo_k;
    };
    const std::uint64_t klo = std::uint64_t{first_at_least(b)} << 32;
    const std::uint64_t khi = b + 1 < nb ? std::uint64_t{first_at_least(b + 1)} << 32 : ~std::uint64_t{0};
    std::size_t kept = 0;
    for (std::size_t j = 0; j < c; ++j) {
      const std::uint64_t kj = keys[j];
      work[kept] = kj;
      kept += kj >= klo && (kj < khi || b + 1 == nb) ? 1u : 0u;
    }
    before = acc;
    c = kept;
    keys = work;
  }
}

/// Masks everything ranked below (tau, last): entries `< tau`, and entries equal to tau after
/// index `last`; returns how many entries stay > -inf.
template <class Arch>
std::size_t top_p_apply(float* row, std::size_t n, float tau, std::size_t last) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t L = lanes<Arch>;
  const B tb(tau), ninf(neg_inf), one(1.0f), zero(0.0f);
  std::size_t kept = 0;
  const auto run = [&](std::size_t from, std::size_t to, auto drop) {
    std::size_t i = from;
    while (i + L <= to) {
      // Float lane counters are exact up to 2^24: flushed every 2^20 batches.
      B cnt = zero;
      const std::size_t stop = to - (to - i) % L, end = stop - i < (std::size_t{1} << 20) * L ? stop : i + (std::size_t{1} << 20) * L;
      for (; i < end; i += L) {
        const B x = B::load_unaligned(row + i);
        const auto d = drop(x);
        xsimd::select(d, ninf, x).store_unaligned(row + i);
        cnt += xsimd::select(d, zero, one);
      }
      kept += static_cast<std::size_t>(reduce_add<Arch>(cnt));
    }
    if (i < to) {
      const B x = load_tail<Arch>(row + i, to - i, neg_inf);
      const auto d = drop(x);
      store_tail<Arch>(xsimd::select(d, ninf, x), row + i, to - i);
      kept += static_cast<std::size_t>(reduce_add<Arch>(xsimd::select(d, zero, one)));
    }
  };
  const std::size_t split = last + 1 < n ? last + 1 : n;
  run(0, split, [&](B x) { return x < tb; });
  run(split, n, [&](B x) { return x <= tb; });
  return kept;
}

/// Index of the j-th (1-based) entry equal to `v`, or of the last one if there are fewer.
template <class Arch>
[[nodiscard]] std::size_t top_p_nth_equal(const float* row, std::size_t n, float v, std::size_t j) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t L = lanes<Arch>;
  const B vb(v);
  std::size_t seen = 0, last = 0;
  for (std::size_t i = 0; i < n; i += L) {
    const B x = i + L <= n ? B::load_unaligned(row + i) : load_tail<Arch>(row + i, n - i, neg_inf);
    std::uint32_t bits = movemask<Arch>(x == vb);
    if (bits == 0) continue;
    const auto cnt = static_cast<std::size_t>(__builtin_popcount(bits));
    if (seen + cnt < j) {
      seen += cnt;
      last = i + static_cast<std::size_t>(31 - __builtin_clz(bits));
      continue;
    }
    for (; seen + 1 < j; ++seen) bits &= bits - 1;
    return i + static_cast<std::size_t>(__builtin_ctz(bits));
  }
  return last;
}

}  // namespace detail

/// Top-p: keeps the smallest rank-prefix (larger logit first; equal logits: lower index first)
/// whose probability mass reaches `p` of the total, masks the rest (-inf); returns how many are
/// kept. `keys`: scratch, `row.size()` entries always suffice (typically a few thousand are used).
/// Preconditions: 0 < p <= 1, no NaN or +inf, some entry > -inf.
///
/// No sort of the vocabulary, and no per-entry scalar work on the whole row (a 4096-bin mass
/// histogram scattered entry by entry cost ~2.5 cycles per entry, 150 us at V = 128 256):
/// 1. max; a strided sample of 2048 entries places 6 logit cuts around where the mass crosses p;
/// 2. one exp pass sums the total mass and the mass above each cut in SIMD (masked adds): the
///    crossing token lies between two adjacent cuts (typically ~1-3% of the row);
/// 3. one compare pass masks the entries below that interval and lists the interval's tokens
///    (compress); a few histogram rounds over the list find the crossing token (a run of equal
///    logits is resolved by counting, never by sorting; a final handful is sorted);
/// 4. the listed tokens ranked below it are masked through the list (a crossing inside a run of
///    equal logits between two cuts skips the list: one pass finds the run's needed member).
/// The cuts only affect speed: a crossing outside them lists a larger interval, still exact.
template <class Arch>
std::size_t top_p_mask(std::span<float> row, double p, std::span<std::uint64_t> keys) noexcept {
  constexpr std::size_t T = detail::top_p_cuts;
  const std::size_t n = row.size();
  float* q = row.data();
  if (!(p < 1.0)) return count_unmasked<Arch>(row);  // every entry > -inf has mass > 0
  const float m = max<Arch>(row);
  float cut[T];
  detail::top_p_place_cuts<Arch>(q, n, m, p, cut);
  double total = 0, above[T];
  detail::top_p_masses<Arch>(q, n, m, cut, total, above);
  const double target = p * total;
  // The crossing lies in [lo, hi): the mass >= hi is short of the target, the mass >= lo is not.
  std::size_t k = 0;
  while (k < T && above[k] < target) ++k;
  const float lo = k < T ? cut[k] : std::numeric_limits<float>::lowest();
  const float hi = k > 0 ? cut[k - 1] : detail::pos_inf;
  const double before = k > 0 ? above[k - 1] : 0.0;
  if (hi == detail::next_up<Arch>(lo)) {
    // A run of logits equal to lo: ranked by index, so count how many are needed.
    const float tau = lo;
    const std::size_t j = detail::top_p_equal_count<Arch>(before, target, detail::top_p_mass_of<Arch>(lo, m), n);
    const std::size_t last = detail::top_p_nth_equal<Arch>(q, n, lo, j);
    return detail::top_p_apply<Arch>(q, n, tau, last);
  }
  std::size_t above_hi = 0;
  const std::size_t c = detail::top_p_collect<Arch>(q, n, lo, hi, keys.data(), above_hi);
  if (c == 0) return detail::top_p_apply<Arch>(q, n, hi, n);  // unreachable: mass in [lo, hi) > 0
  // Refine in the free part of `keys` when there is room, so the listed keys remain to be masked
  // directly; otherwise (over half the row listed) refine in place and mask by a pass.
  const bool spare = keys.size() - c >= c;
  std::uint64_t* work = spare ? keys.data() + c : keys.data();
  const std::uint64_t key = detail::top_p_refine<Arch>(keys.data(), work, c, m, before, target);
  if (!spare) return detail::top_p_apply<Arch>(q, n, detail::rank_value<Arch>(key), detail::rank_index<Arch>(key));
  std::size_t kept = above_hi;
  for (std::size_t j = 0; j < c; ++j) {
    const std::uint64_t kj = keys[j];
    const bool keep = kj >= key;
    const std::size_t t = detail::rank_index<Arch>(kj);
    q[t] = keep ? q[t] : detail::neg_inf;
    kept += keep ? 1u : 0u;
  }
  return kept;
}

}  // namespace simd
}  // namespace kernels
ITSCALE_END_NAMESPACE
