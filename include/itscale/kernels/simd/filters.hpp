#pragma once
/// \file simd/filters.hpp
/// SIMD truncation filters for sampling, templated on the xsimd arch: masking below a logit
/// threshold (min-p needs no exp: threshold = max + ln p) and top-p without sorting the
/// vocabulary. Semantics: see the public `kernels/filters.hpp`.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include "itscale/kernels/simd/select.hpp"

namespace itscale {
inline namespace v0 {
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
    if (!xsimd::any(xsimd::max(xsimd::max(y0, y1), xsimd::max(y2, y3)) > ninf)) continue;
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

/// Top-p: keeps the smallest rank-prefix (larger logit first; equal logits: lower index first)
/// whose probability mass reaches `p` of the total, masks the rest (-inf); returns how many are
/// kept. `keys`: scratch for the tokens of one histogram bin, `row.size()` entries always suffice
/// (typically a few hundred are used). Preconditions: 0 < p <= 1, no NaN or +inf, some entry > -inf.
///
/// No sort of the vocabulary: pass 1 max; pass 2 exp and a 4096-bin histogram of mass over
/// (max - logit) in [0, 24) (one overflow bin beyond); the bin where the cumulative mass crosses
/// p * total is the only one whose tokens are collected and sorted; pass 3 masks.
template <class Arch>
std::size_t top_p_mask(std::span<float> row, double p, std::span<std::uint64_t> keys) noexcept {
  using B = detail::fbatch<Arch>;
  using I = detail::ibatch<Arch>;
  constexpr std::size_t L = detail::lanes<Arch>;
  constexpr std::size_t bins = 4096;
  constexpr float range = 24.0f;
  const std::size_t n = row.size();
  const float m = max<Arch>(row);
  double mass[bins + 1] = {};
  const B mb(m), scale(static_cast<float>(bins) / range), top(static_cast<float>(bins));
  alignas(64) float e[L];
  alignas(64) std::int32_t bi[L];
  const auto bin_of = [&](B x) { return xsimd::batch_cast<std::int32_t>(xsimd::min((mb - x) * scale, top)); };
  std::size_t i = 0;
  for (; i + L <= n; i += L) {
    const B x = B::load_unaligned(row.data() + i);
    xsimd::exp(x - mb).store_aligned(e);
    bin_of(x).store_aligned(bi);
    for (std::size_t l = 0; l < L; ++l) {
      const auto j = static_cast<std::size_t>(bi[l]);
      mass[j] += static_cast<double>(e[l]);
    }
  }
  if (i < n) {
    const B x = detail::load_tail<Arch>(row.data() + i, n - i, detail::neg_inf);
    xsimd::exp(x - mb).store_aligned(e);
    bin_of(x).store_aligned(bi);
    for (std::size_t l = 0; l < n - i; ++l) {
      const auto j = static_cast<std::size_t>(bi[l]);
      mass[j] += static_cast<double>(e[l]);
    }
  }
  double total = 0;
  for (double v : mass) total += v;
  const double target = p * total;
  double before = 0;
  std::size_t cut = 0, kept_above = 0;
  while (cut < bins && before + mass[cut] < target) before += mass[cut++];
  // Count the tokens of the bins above the cut (scaled distance < cut: the truncation to the bin
  // index is monotone) and collect the crossing bin's tokens, best first.
  const I cut_b(static_cast<std::int32_t>(cut));
  const B cut_f(static_cast<float>(cut));
  std::size_t c = 0;
  for (i = 0; i < n; i += L) {
    const std::size_t len = i + L <= n ? L : n - i;
    const B x = len == L ? B::load_unaligned(row.data() + i) : detail::load_tail<Arch>(row.data() + i, len, detail::neg_inf);
    const I b = bin_of(x);
    kept_above += static_cast<std::size_t>(__builtin_popcount(detail::movemask<Arch>((mb - x) * scale < cut_f)));
    if (xsimd::any(b == cut_b)) {
      b.store_aligned(bi);
      for (std::size_t l = 0; l < len; ++l)
        if (bi[l] == static_cast<std::int32_t>(cut) && row[i + l] > detail::neg_inf)
          keys[c++] = detail::rank_key<Arch>(row[i + l], static_cast<std::uint32_t>(i + l));
    }
  }
  std::sort(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(c), detail::key_greater<Arch>{});
  // The first token of the bin whose inclusion reaches the target is the last one kept.
  std::size_t j = 0;
  double acc = before;
  for (; j < c; ++j) {
    acc += static_cast<double>(xsimd::exp(B(detail::rank_value<Arch>(keys[j])) - mb).get(0));
    if (acc >= target) break;
  }
  if (j == c) j = c == 0 ? 0 : c - 1;  // rounding: keep the whole bin
  if (c == 0) return count_unmasked<Arch>(row);  // nothing to cut (cannot happen with p <= 1)
  const float tau = detail::rank_value<Arch>(keys[j]);
  const std::uint32_t last_index = detail::rank_index<Arch>(keys[j]);
  // Mask below tau, and tau itself after the last kept index.
  const B tb(tau), ninf(detail::neg_inf);
  float* q = row.data();
  i = 0;
  for (; i + L <= n; i += L) {
    const B x = B::load_unaligned(q + i);
    xsimd::select(x < tb, ninf, x).store_unaligned(q + i);
  }
  if (i < n) {
    const B x = detail::load_tail<Arch>(q + i, n - i, 0.0f);
    detail::store_tail<Arch>(xsimd::select(x < tb, ninf, x), q + i, n - i);
  }
  for (std::size_t t = last_index + 1; (t = find_first_equal<Arch>(row, tau, t)) != npos; ++t) q[t] = detail::neg_inf;
  return kept_above + j + 1;
}

}  // namespace simd
}  // namespace kernels
}  // namespace v0
}  // namespace itscale
