#pragma once
/// \file simd/select.hpp
/// SIMD selection kernels templated on the xsimd arch: top-k (values + indices, sorted, ties to
/// the lower index), the k-th largest value, and the top m over several rows with a per-row
/// affine shift (beam search's candidate selection). `noexcept`, no allocation. Semantics: see
/// the public `kernels/top_k.hpp` and `kernels/beam_select.hpp`.
///
/// Small k: one-pass threshold filter. Each batch is compared with the running k-th best value;
/// the rare survivors are compressed into a buffer of 64-bit keys (order-preserving float bits
/// above, the complemented index below, so "larger key" is exactly "ranks higher"); when the
/// buffer fills, an nth_element keeps the best k and raises the threshold. On typical logits the
/// threshold climbs within a few hundred entries and the loop runs at the speed of a max pass.
/// Worst case every entry survives and each re-selection is amortised over capacity - k new
/// entries: O(V) still. Sorted input would be that case in index order; the row's last block is
/// filtered first to start the pass (`filter_row`), which makes ascending rows cheap (k = 40:
/// ~390 us -> ~7 us). For larger k the filter starts from a threshold read off
/// a strided sample (about 4/3 k entries expected above it; rerun from -inf if fewer than k pass),
/// which skips the climb: k = 1024 at V = 128 256 went from ~140 us to ~17 us (avx512).
///
/// Large k: radix select on the order-preserving float bits (three histogram passes of 11, 11 and
/// 10 bits) finds the k-th key exactly; one more pass collects the winners; they are sorted.

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/kernels/kernel_types.hpp"
#include "itscale/kernels/simd/reduce.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {
namespace simd {

/// Entries of the on-stack candidate buffer the scratch-less overloads use; the filter path is
/// taken for k <= `filter_max_k`.
inline constexpr std::size_t stack_buffer_keys = 4096;
inline constexpr std::size_t filter_max_k = 1024;

namespace detail {

/// Order-preserving unsigned image of a non-NaN float (-0 and +0 map to the same key, as they
/// compare equal). These small helpers are templates on Arch too, like everything compiled into
/// the per-arch translation units: a non-template inline function emitted there with AVX-512 code
/// could be the copy the linker keeps for a baseline caller.
template <class Arch>
[[nodiscard]] inline std::uint32_t order_key(float v) noexcept {
  const auto u = std::bit_cast<std::uint32_t>(v + 0.0f);  // -0 + 0 = +0
  return (u >> 31) != 0 ? ~u : (u | 0x80000000u);
}
template <class Arch>
[[nodiscard]] inline float from_order_key(std::uint32_t k) noexcept {
  return std::bit_cast<float>((k >> 31) != 0 ? (k & 0x7FFFFFFFu) : ~k);
}
/// Larger key = ranks higher: larger value, then lower index.
template <class Arch>
[[nodiscard]] inline std::uint64_t rank_key(float v, std::uint32_t index) noexcept {
  return std::uint64_t{order_key<Arch>(v)} << 32 | (0xFFFFFFFFu - index);
}
template <class Arch>
[[nodiscard]] inline std::uint32_t rank_index(std::uint64_t key) noexcept {
  return 0xFFFFFFFFu - static_cast<std::uint32_t>(key);
}
template <class Arch>
[[nodiscard]] inline float rank_value(std::uint64_t key) noexcept {
  return from_order_key<Arch>(static_cast<std::uint32_t>(key >> 32));
}

/// Comparators are templates on Arch so that std::sort / std::nth_element instantiated in
/// translation units compiled with different -m flags are different functions.
template <class Arch>
struct key_greater {
  bool operator()(std::uint64_t a, std::uint64_t b) const noexcept { return a > b; }
};

/// How much of an available buffer the filter uses for k: a small buffer makes the first
/// re-selection (and so the first useful threshold) come early, after ~2k entries instead of
/// after filling 4096; each re-selection then costs O(k) and buys at least max(k, 4 lanes) new
/// entries (O(V) in all). Measured at V = 128 256, k = 40 (avx512, one harness run): a
/// 4096-entry buffer 15 us, 2k + 8 lanes (208) 6.2 us, k + 4 lanes (104) 5.4 us (88..128 alike).
template <class Arch>
[[nodiscard]] constexpr std::size_t filter_capacity(std::size_t k, std::size_t available) noexcept {
#ifndef ITSCALE_CAPF
  const std::size_t want = k + (k > 4 * lanes<Arch> ? k : 4 * lanes<Arch>);
#else
  const std::size_t want = ITSCALE_CAPF;
#endif
  return want < available ? want : available;
}

/// The running state of a threshold filter: the best `k` of everything seen so far are among
/// `buf[0, n)`; an entry can only enter if its score is `> thr`.
template <class Arch>
struct topk_filter {
  std::uint64_t* buf;
  std::size_t cap;  // >= k + lanes: a push needs room for a whole batch
  std::size_t k;
  std::size_t n = 0;
  float thr = neg_inf;

  void reselect() noexcept {
    if (n < k) return;
    std::nth_element(buf, buf + (k - 1), buf + n, key_greater<Arch>{});
    n = k;
    thr = rank_value<Arch>(buf[k - 1]);
  }

  /// Precondition: n + lanes <= cap (kept by re-selecting after each push; cap >= k + lanes).
  void push(fbatch<Arch> v, fmask<Arch> m, std::int32_t base) noexcept {
    n += compress_keys<Arch>(v, m, base, buf + n);
    if (n + lanes<Arch> > cap) reselect();
  }

  /// Feeds `count` entries starting at `p`, scored `(x - sub) + add`, with flat indices from
  /// `base`. Entries scoring -inf or NaN never enter.
  void feed(const float* p, std::size_t count, std::int32_t base, float sub, float add) noexcept {
    // Two instantiations of the loop, so the plain top-k pays no shift per batch.
    if (sub == 0.0f && add == 0.0f)
      feed_impl<false>(p, count, base, sub, add);
    else
      feed_impl<true>(p, count, base, sub, add);
  }

  template <bool Shifted>
  void feed_impl(const float* p, std::size_t count, std::int32_t base, float sub, float add) noexcept {
    using B = fbatch<Arch>;
    constexpr std::size_t L = lanes<Arch>;
    const B sb(sub), ab(add);
    const auto score = [&](B x) {
      if constexpr (Shifted)
        return (x - sb) + ab;
      else
        return x;
    };
    std::size_t i = 0;
    B tb(thr);
    for (; i + 4 * L <= count; i += 4 * L) {
      const B v0 = score(B::load_unaligned(p + i)), v1 = score(B::load_unaligned(p + i + L));
      const B v2 = score(B::load_unaligned(p + i + 2 * L)), v3 = score(B::load_unaligned(p + i + 3 * L));
      // A NaN lane must not hide the other batches' entries: see block_may_pass (arch.hpp).
      if (!block_may_pass<Arch>(v0, v1, v2, v3, tb)) continue;
      const B vs[4] = {v0, v1, v2, v3};
      for (std::size_t j = 0; j < 4; ++j) {
        const auto m = vs[j] > tb;
        if (xsimd::any(m)) {
          push(vs[j], m, base + static_cast<std::int32_t>(i + j * L));
          tb = B(thr);
        }
      }
    }
    for (; i + L <= count; i += L) {
      const B v = score(B::load_unaligned(p + i));
      const auto m = v > tb;
      if (xsimd::any(m)) {
        push(v, m, base + static_cast<std::int32_t>(i));
        tb = B(thr);
      }
    }
    if (i < count) {
      const B v = score(load_tail<Arch>(p + i, count - i, neg_inf));
      const auto m = v > tb;
      if (xsimd::any(m)) push(v, m, base + static_cast<std::int32_t>(i));
    }
  }

  /// Leaves the best min(n, k) keys sorted best first in buf[0, result).
  std::size_t finish() noexcept {
    reselect();
    std::sort(buf, buf + n, key_greater<Arch>{});
    return n;
  }
};

template <class Arch>
struct float_greater {
  bool operator()(float a, float b) const noexcept { return a > b; }
};

/// A starting threshold for large k, from a strided sample of the row: a value that about 4/3 k
/// entries of the row are expected to exceed, so
/// the filter starts near its final threshold instead of climbing from -inf through many
/// re-selections. `-inf` (no head start) when the sample cannot resolve k (small k or short
/// rows). Exactness does not depend on it: callers rerun without it if fewer than k entries pass.
template <class Arch>
[[nodiscard]] float sampled_threshold(std::span<const float> row, std::size_t k) noexcept {
  constexpr std::size_t max_sample = 4096;
  const std::size_t n = row.size();
  const std::size_t stride = n / max_sample;
  if (stride < 8) return neg_inf;
  const std::size_t s = n / stride < max_sample ? n / stride : max_sample;
  const std::size_t r = (k * s * 4) / (3 * n);  // sample rank: 4/3 of the expected k * s / n
  if (r < 8 || r > s) return neg_inf;
  float sample[max_sample];
  for (std::size_t j = 0; j < s; ++j) sample[j] = row[j * stride];
  std::nth_element(sample, sample + (r - 1), sample + s, float_greater<Arch>{});
  return sample[r - 1];
}

/// Runs the filter over `row` starting from the sampled threshold; if fewer than k entries beat
/// it, runs again from -inf. Without a sample (small k), the last block of 4096 entries is
/// filtered first and its k-th best value t starts the pass over the row: sorted rows are the
/// filter's worst case in index order (ascending input beats the running threshold at every
/// entry; each re-selection buys only capacity - k entries: k = 40 at V = 128 256 took ~390 us),
/// and an ascending row's best entries are in its last block. The pass admits entries `> t` (a
/// tie ranks by index, and the row's lower indices come after the block); if fewer than k do,
/// the missing ones are the first entries equal to t in index order (an all-equal row finds them
/// at its start). Leaves the state ready for `finish`/`reselect`.
template <class Arch>
void filter_row(topk_filter<Arch>& f, std::span<const float> row) noexcept {
  constexpr std::size_t block = 4096;
  const std::size_t n = row.size();
  const float t0 = sampled_threshold<Arch>(row, f.k);
  if (t0 != neg_inf) {
    f.thr = t0;
    f.feed(row.data(), n, 0, 0.0f, 0.0f);
    if (f.n >= f.k) return;
    f.n = 0;
    f.thr = neg_inf;
  } else if (n > 2 * block) {
    const std::size_t tail = (n - 1) / block * block;  // the last (possibly short) block
    f.feed(row.data() + tail, n - tail, static_cast<std::int32_t>(tail), 0.0f, 0.0f);
    f.reselect();
    if (f.n >= f.k) {
      const float t = f.thr;
      f.n = 0;
      f.feed(row.data(), n, 0, 0.0f, 0.0f);
      for (std::size_t i = 0; f.n < f.k && (i = find_first_equal<Arch>(row, t, i)) != npos; ++i)
        f.buf[f.n++] = rank_key<Arch>(t, static_cast<std::uint32_t>(i));
      return;
    }
    f.n = 0;
    f.thr = neg_inf;
  }
  f.feed(row.data(), n, 0, 0.0f, 0.0f);
}

/// The k-th largest order key of `row` (1 <= k <= row.size()) by radix select.
template <class Arch>
[[nodiscard]] std::uint32_t kth_order_key(std::span<const float> row, std::size_t k) noexcept {
  std::uint32_t hist[2048];
  std::uint32_t prefix = 0, mask = 0;
  std::size_t rank = k;
  constexpr unsigned shifts[3] = {21, 10, 0};
  constexpr std::uint32_t widths[3] = {2048, 2048, 1024};
  for (int level = 0; level < 3; ++level) {
    const unsigned sh = shifts[level];
    const std::uint32_t w = widths[level];
    std::fill(hist, hist + w, 0u);
    for (float x : row) {
      const std::uint32_t key = order_key<Arch>(x);
      if ((key & mask) == prefix) ++hist[(key >> sh) & (w - 1)];
    }
    std::size_t cum = 0;
    std::uint32_t b = w - 1;
    for (;; --b) {
      if (cum + hist[b] >= rank || b == 0) break;
      cum += hist[b];
    }
    rank -= cum;
    prefix |= b << sh;
    mask |= (w - 1) << sh;
  }
  return prefix;
}

template <class Arch>
struct index_ranks_above {
  const float* row;
  bool operator()(token_id a, token_id b) const noexcept {
    const float va = row[static_cast<std::size_t>(a)], vb = row[static_cast<std::size_t>(b)];
    return va > vb || (va == vb && a < b);
  }
};

/// Top-k by radix select: any k, no buffer beyond the outputs.
template <class Arch>
void top_k_radix(std::span<const float> row, std::span<token_id> indices, std::span<float> values) noexcept {
  const std::size_t k = indices.size();
  const std::uint32_t kth = kth_order_key<Arch>(row, k);
  std::size_t c = 0;
  for (std::size_t i = 0; i < row.size(); ++i)
    if (order_key<Arch>(row[i]) > kth) indices[c++] = static_cast<token_id>(i);
  for (std::size_t i = 0; i < row.size() && c < k; ++i)
    if (order_key<Arch>(row[i]) == kth) indices[c++] = static_cast<token_id>(i);
  std::sort(indices.begin(), indices.end(), index_ranks_above<Arch>{row.data()});
  for (std::size_t j = 0; j < k; ++j) values[j] = row[static_cast<std::size_t>(indices[j])];
}

/// Top-k by the threshold filter into `buf` (size >= k + lanes; k + max(k, 4 lanes) or more keeps
/// it O(V) on adversarial input: see `filter_capacity`).
template <class Arch>
void top_k_filter(std::span<const float> row, std::span<token_id> indices, std::span<float> values,
                  std::span<std::uint64_t> buf) noexcept {
  const std::size_t k = indices.size();
  topk_filter<Arch> f{buf.data(), filter_capacity<Arch>(k, buf.size()), k};
  filter_row<Arch>(f, row);
  std::size_t got = f.finish();
  for (std::size_t j = 0; j < got; ++j) indices[j] = static_cast<token_id>(rank_index<Arch>(buf[j]));
  // Fewer than k entries are > -inf: the rest are the first -inf entries, in index order.
  for (std::size_t i = 0; got < k && i < row.size(); ++i)
    if (row[i] == neg_inf) indices[got++] = static_cast<token_id>(i);
  for (std::size_t j = 0; j < k; ++j) values[j] = row[static_cast<std::size_t>(indices[j])];
}

}  // namespace detail

/// Writes the `k = indices.size()` highest-ranked entries (larger value; equal values: lower
/// index) best first. Preconditions: `1 <= k <= row.size()`, `values.size() == k`, no NaN,
/// `row.size() < 2^31`. `scratch`: used for the threshold filter when it holds at least
/// `2 * k + 64` keys; otherwise the kernel uses a 32 KiB stack buffer for k <= 1024 and radix
/// select above.
template <class Arch>
void top_k(std::span<const float> row, std::span<token_id> indices, std::span<float> values,
           std::span<std::uint64_t> scratch = {}) noexcept {
  const std::size_t k = indices.size();
  if (scratch.size() >= 2 * k + 64) return detail::top_k_filter<Arch>(row, indices, values, scratch);
  if (k <= filter_max_k) {
    std::uint64_t buf[stack_buffer_keys];
    return detail::top_k_filter<Arch>(row, indices, values, buf);
  }
  detail::top_k_radix<Arch>(row, indices, values);
}

/// The k-th largest value (1 <= k <= row.size()); -0 and +0 are the same value (+0 is returned).
/// Precondition: no NaN.
template <class Arch>
[[nodiscard]] float kth_largest(std::span<const float> row, std::size_t k) noexcept {
  if (k <= filter_max_k) {
    std::uint64_t buf[stack_buffer_keys];
    detail::topk_filter<Arch> f{buf, detail::filter_capacity<Arch>(k, stack_buffer_keys), k};
    detail::filter_row<Arch>(f, row);
    f.reselect();
    if (f.n == k) return detail::rank_value<Arch>(buf[k - 1]);
    return detail::neg_inf;  // fewer than k entries > -inf
  }
  return detail::from_order_key<Arch>(detail::kth_order_key<Arch>(row, k));
}

namespace detail {

/// The shared body of `top_k_rows` and `beam_select`: `shift(r)` gives row r's (sub, add) once,
/// in row order, right before the row is scanned.
template <class Arch, class Shift>
std::size_t select_rows(std::span<const std::span<const float>> rows, Shift shift,
                        std::span<row_candidate> out) noexcept {
  const std::size_t m = out.size();
  if (m == 0) return 0;
  if (m <= filter_max_k) {
    std::uint64_t buf[stack_buffer_keys];
    topk_filter<Arch> f{buf, filter_capacity<Arch>(m, stack_buffer_keys), m};
    std::size_t base = 0;
    for (std::size_t r = 0; r < rows.size(); ++r) {
      const auto [sub, add] = shift(r);
      f.feed(rows[r].data(), rows[r].size(), static_cast<std::int32_t>(base), sub, add);
      base += rows[r].size();
    }
    const std::size_t got = f.finish();
    for (std::size_t j = 0; j < got; ++j) {
      std::size_t flat = rank_index<Arch>(buf[j]);
      std::uint32_t r = 0;
      while (flat >= rows[r].size()) flat -= rows[r++].size();
      // The key holds the score exactly (a -0 score reads back as +0, an equal value).
      out[j] = {rank_value<Arch>(buf[j]), r, static_cast<token_id>(flat)};
    }
    return got;
  }
  // Rare: a very wide selection. A min-heap on rank kept in `out`.
  const auto worse_first = [](const row_candidate& a, const row_candidate& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.row != b.row ? a.row < b.row : a.token < b.token;
  };
  std::size_t n = 0;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const auto [sub, add] = shift(r);
    for (std::size_t t = 0; t < rows[r].size(); ++t) {
      const float v = (rows[r][t] - sub) + add;
      if (!(v > neg_inf)) continue;
      const row_candidate c{v, static_cast<std::uint32_t>(r), static_cast<token_id>(t)};
      if (n == m) {
        if (!(v > out[0].score)) continue;
        std::pop_heap(out.begin(), out.end(), worse_first);
        out[m - 1] = c;
        std::push_heap(out.begin(), out.end(), worse_first);
      } else {
        out[n++] = c;
        std::push_heap(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n), worse_first);
      }
    }
  }
  std::sort_heap(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n), worse_first);
  return n;
}

template <class Arch>
struct shift_pair {
  float sub, add;
};

}  // namespace detail

/// The best `out.size()` candidates over rows r = 0..rows.size()-1, candidate (r, t) scoring
/// `(rows[r][t] - sub[r]) + add[r]` in float; best first, equal scores to the lower (row, token).
/// Candidates scoring -inf or NaN are never selected; returns how many were written (fewer than
/// `out.size()` only if fewer candidates are finite). Preconditions: `sub.size() == add.size() ==
/// rows.size()`, finite shifts; fewer than 2^31 entries in all. Never materialises the scores:
/// only threshold survivors enter a 32 KiB stack buffer (out.size() <= 1024; wider selections
/// keep a heap in `out`).
template <class Arch>
std::size_t top_k_rows(std::span<const std::span<const float>> rows, std::span<const float> sub,
                       std::span<const float> add, std::span<row_candidate> out) noexcept {
  return detail::select_rows<Arch>(
      rows, [&](std::size_t r) { return detail::shift_pair<Arch>{sub[r], add[r]}; }, out);
}

/// Beam search's selection: the best `out.size()` of `(rows[r][t] - logsumexp(rows[r])) +
/// offsets[r]` (log-softmax plus the beam's running score) without writing the log-probs: each
/// row is read twice for its logsumexp and once by the filter, while it is hot in cache. Rows
/// whose every entry is -inf contribute nothing. Ranking, result and preconditions as
/// `top_k_rows` (`offsets.size() == rows.size()`).
template <class Arch>
std::size_t beam_select(std::span<const std::span<const float>> rows, std::span<const float> offsets,
                        std::span<row_candidate> out) noexcept {
  return detail::select_rows<Arch>(
      rows,
      [&](std::size_t r) {
        const float lse = logsumexp<Arch>(rows[r]);
        // A fully masked row: -inf - -inf would be NaN, which the filter skips anyway.
        return detail::shift_pair<Arch>{lse, offsets[r]};
      },
      out);
}

}  // namespace simd
}  // namespace kernels
ITSCALE_END_NAMESPACE
