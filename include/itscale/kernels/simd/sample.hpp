#pragma once
/// \file simd/sample.hpp
/// SIMD inverse-CDF sampling (`itscale::kernels::simd::sample_inverse_cdf<Arch>`): one uniform
/// picks a token of softmax(row) without writing the probabilities. Semantics: see the public
/// `kernels/sample.hpp`.

#include <cstddef>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/kernels/simd/exp.hpp"
#include "itscale/kernels/simd/reduce.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {
namespace simd {

/// The token t with cdf(t-1) <= u * total < cdf(t) over p ∝ exp(row - max), skipping masked
/// entries; `u` in [0, 1); `npos` only if every entry is masked (or the row is empty).
///
/// Pass 1: max and the blocks holding unmasked entries. Pass 2: exp sums of those blocks (at most
/// 1024 blocks, sums kept on the stack). Then the block holding the target is found from the
/// block sums and only that block's exps are recomputed one by one: ~2 reads of the row and one
/// exp per unmasked block's entry, instead of two exp passes.
/// Precondition: no NaN or +inf.
template <class Arch>
[[nodiscard]] std::size_t sample_inverse_cdf(std::span<const float> row, double u) noexcept {
  using B = detail::fbatch<Arch>;
  constexpr std::size_t L = detail::lanes<Arch>;
  constexpr std::size_t max_blocks = 1024;
  const std::size_t n = row.size();
  std::size_t block = 16 * L;
  while (block * max_blocks < n) block *= 2;
  const std::size_t nb = (n + block - 1) / block;
  // Pass 1: the max, and which blocks hold an unmasked entry. After a top-k or top-p only a few
  // blocks do, and pass 2 skips the others (their exp sum is exactly 0, so the draw is the same).
  bool live[max_blocks];
  const B ninf(detail::neg_inf);
  B all_max(detail::neg_inf);
  for (std::size_t b = 0; b < nb; ++b) {
    const std::size_t lo = b * block, hi = lo + block <= n ? lo + block : n;
    // Four accumulators: one would chain every max on the previous one's latency.
    B a0(detail::neg_inf), a1(detail::neg_inf), a2(detail::neg_inf), a3(detail::neg_inf);
    std::size_t i = lo;
    for (; i + 4 * L <= hi; i += 4 * L) {
      a0 = xsimd::max(a0, B::load_unaligned(row.data() + i));
      a1 = xsimd::max(a1, B::load_unaligned(row.data() + i + L));
      a2 = xsimd::max(a2, B::load_unaligned(row.data() + i + 2 * L));
      a3 = xsimd::max(a3, B::load_unaligned(row.data() + i + 3 * L));
    }
    for (; i + L <= hi; i += L) a0 = xsimd::max(a0, B::load_unaligned(row.data() + i));
    if (i < hi) a0 = xsimd::max(a0, detail::load_tail<Arch>(row.data() + i, hi - i, detail::neg_inf));
    const B acc = xsimd::max(xsimd::max(a0, a1), xsimd::max(a2, a3));
    live[b] = xsimd::any(acc > ninf);
    all_max = xsimd::max(all_max, acc);
  }
  const float m = detail::reduce_max<Arch>(all_max);
  if (m == detail::neg_inf) return npos;
  double sums[max_blocks];
  double total = 0;
  for (std::size_t b = 0; b < nb; ++b) {
    const std::size_t lo = b * block, len = lo + block <= n ? block : n - lo;
    sums[b] = live[b] ? detail::exp_sum<Arch>(row.subspan(lo, len), m, nullptr) : 0.0;
    total += sums[b];
  }
  const double target = u * total;
  double acc = 0;
  std::size_t b = 0;
  while (b + 1 < nb && acc + sums[b] <= target) acc += sums[b++];
  // Entry by entry from block b; rounding may carry the crossing past the block's end.
  const B mb(m);
  alignas(64) float e[L];
  std::size_t last = npos;
  for (std::size_t i = b * block; i < n; i += L) {
    const std::size_t len = i + L <= n ? L : n - i;
    const B x = len == L ? B::load_unaligned(row.data() + i) : detail::load_tail<Arch>(row.data() + i, len, detail::neg_inf);
    detail::exp_nonpositive<Arch>(x - mb).store_aligned(e);  // the exp of exp_sum: same block sums
    for (std::size_t l = 0; l < len; ++l) {
      if (row[i + l] == detail::neg_inf) continue;
      acc += static_cast<double>(e[l]);
      last = i + l;
      if (acc > target) return last;
    }
  }
  if (last != npos) return last;
  // Rounding left target >= acc within the tail blocks: the last unmasked token closes the interval.
  for (std::size_t i = n; i-- > 0;)
    if (row[i] != detail::neg_inf) return i;
  return npos;
}

}  // namespace simd
}  // namespace kernels
ITSCALE_END_NAMESPACE
