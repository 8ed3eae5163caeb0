#pragma once
/// \file reference/top_k.hpp
/// The scalar reference (`itscale::kernels::reference`): the simple, obviously correct version
/// every SIMD kernel is tested against (house rule 4). Not the hot path.
/// The k largest entries of a row, sorted descending; ties go to the lower index. This is the
/// library's one tie rule for ranking tokens: among exactly equal logits, the lower token id ranks
/// higher.

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/kernel_types.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace kernels {
namespace reference {

/// True when token `a` ranks above token `b` (larger value, or equal value and lower index).
[[nodiscard]] inline bool ranks_above(std::span<const float> row, token_id a, token_id b) noexcept {
  const float va = row[static_cast<std::size_t>(a)], vb = row[static_cast<std::size_t>(b)];
  return va > vb || (va == vb && a < b);
}

/// Writes the indices and values of the `k = indices.size()` highest-ranked entries of `row`,
/// best first. Preconditions: `1 <= k <= row.size()`, `values.size() == k`, no NaN.
/// O(V log k) with a bounded heap kept in `indices`; no allocation.
inline void top_k(std::span<const float> row, std::span<token_id> indices,
                  std::span<float> values) noexcept {
  const std::size_t k = indices.size();
  assert(k >= 1 && k <= row.size() && values.size() == k);
  // Min-heap on rank: the worst of the current best k sits at the front.
  const auto worse_first = [row](token_id a, token_id b) { return ranks_above(row, a, b); };
  for (std::size_t i = 0; i < k; ++i) indices[i] = static_cast<token_id>(i);
  std::make_heap(indices.begin(), indices.end(), worse_first);
  for (std::size_t i = k; i < row.size(); ++i) {
    const auto t = static_cast<token_id>(i);
    if (ranks_above(row, t, indices.front())) {
      std::pop_heap(indices.begin(), indices.end(), worse_first);
      indices.back() = t;
      std::push_heap(indices.begin(), indices.end(), worse_first);
    }
  }
  std::sort_heap(indices.begin(), indices.end(), worse_first);
  for (std::size_t i = 0; i < k; ++i) values[i] = row[static_cast<std::size_t>(indices[i])];
}

/// The k-th largest value of `row` (k >= 1, k <= row.size()), using `scratch` (size >= row.size())
/// as working memory.
[[nodiscard]] inline float kth_largest(std::span<const float> row, std::size_t k,
                                       std::span<float> scratch) noexcept {
  assert(k >= 1 && k <= row.size() && scratch.size() >= row.size());
  std::copy(row.begin(), row.end(), scratch.begin());
  const auto nth = scratch.begin() + static_cast<std::ptrdiff_t>(k - 1);
  std::nth_element(scratch.begin(), nth, scratch.begin() + static_cast<std::ptrdiff_t>(row.size()),
                   [](float a, float b) { return a > b; });
  return *nth;
}

/// The best `out.size()` candidates over rows r with scores `(rows[r][t] - sub[r]) + add[r]` in
/// float (what `kernels::top_k_rows` computes; `beam_select` is this with sub = the rows'
/// logsumexps), best first, equal scores by the lower flattened index r * V + t; `-inf` scores are
/// never selected. Returns how many were written. Insertion into `out`: O(K V m) at worst.
inline std::size_t top_k_rows(std::span<const std::span<const float>> rows, std::span<const float> sub,
                              std::span<const float> add, std::span<row_candidate> out) noexcept {
  const std::size_t m = out.size();
  std::size_t got = 0;
  for (std::size_t r = 0; r < rows.size(); ++r)
    for (std::size_t t = 0; t < rows[r].size(); ++t) {
      const float v = (rows[r][t] - sub[r]) + add[r];
      if (!(v > -std::numeric_limits<float>::infinity()) || m == 0) continue;
      if (got == m && !(v > out[m - 1].score)) continue;  // an equal score came first: it ranks higher
      std::size_t j = got < m ? got++ : m - 1;
      for (; j > 0 && out[j - 1].score < v; --j) out[j] = out[j - 1];
      out[j] = {v, static_cast<std::uint32_t>(r), static_cast<token_id>(t)};
    }
  return got;
}

}  // namespace reference
}  // namespace kernels
ITSCALE_END_NAMESPACE
