#pragma once
/// \file live_set.hpp
/// The unmasked tokens of a row, handed from one filter to the next. After a top-k of 40 over a
/// vocabulary of 128 256, every later filter (top-p, min-p, typical, epsilon, eta) needs only the
/// 40 survivors: their probabilities are exactly those of the whole row (masked entries add
/// exact zeros to torch's lane sums, see probabilities.hpp), so touching only them changes no
/// result and turns O(V log V) sorts and V exps into O(S log S) and S.

#include <algorithm>
#include <cstddef>
#include <functional>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/filters.hpp"
#include "itscale/processors/processor.hpp"

ITSCALE_BEGIN_NAMESPACE

/// The tokens of a row that are `> -inf`, in increasing id order, when `known`; a filter given
/// an unknown set lists the row itself (one SIMD pass, `collect_unmasked`).
struct live_set {
  std::span<token_id> ids;
  bool known = false;
};

namespace detail {

/// `live` if known, else the unmasked tokens of `row` listed into `ws.live`.
[[nodiscard]] inline std::span<token_id> list_live(std::span<const float> row, live_set live, workspace& ws) noexcept {
  if (live.known) return live.ids;
  return std::span(ws.live).first(kernels::collect_unmasked(row, ws.live));
}

/// Drops the tokens that `row` now masks from `ids`, keeping the order; the rest as a known set.
[[nodiscard]] inline live_set prune_live(std::span<const float> row, std::span<token_id> ids) noexcept {
  std::size_t n = 0;
  for (token_id t : ids)
    if (row[static_cast<std::size_t>(t)] != masked_logit) ids[n++] = t;
  return {ids.first(n), true};
}

/// The k-th best of the unmasked tokens in the library's ranking (larger logit first, equal
/// logits lower id first), so that "among the k best" is one comparison per token.
struct rank_cut {
  float value = masked_logit;
  token_id id = 0;
  [[nodiscard]] bool keeps(float v, token_id t) const noexcept { return v > value || (v == value && t <= id); }
};

/// The rank_cut of the `k`-th best of `live` (1 <= k <= live.size()); `ws.ids` is scratch.
[[nodiscard]] inline rank_cut rank_cut_at(std::span<const float> row, std::span<const token_id> live, std::size_t k,
                                          workspace& ws) noexcept {
  auto ids = std::span(ws.ids).first(live.size());
  std::copy(live.begin(), live.end(), ids.begin());
  const auto better = [row](token_id a, token_id b) {
    const float va = row[static_cast<std::size_t>(a)], vb = row[static_cast<std::size_t>(b)];
    return va > vb || (va == vb && a < b);
  };
  std::nth_element(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k - 1), ids.end(), better);
  const token_id t = ids[k - 1];
  return {row[static_cast<std::size_t>(t)], t};
}

/// The k-th largest value among `live` (counting repeats), or -inf when k > live.size() (the
/// masked entries fill the ranking below); `ws.values2` is scratch.
[[nodiscard]] inline float kth_largest_at(std::span<const float> row, std::span<const token_id> live, std::size_t k,
                                          workspace& ws) noexcept {
  if (k > live.size()) return masked_logit;
  auto v = std::span(ws.values2).first(live.size());
  for (std::size_t j = 0; j < live.size(); ++j) v[j] = row[static_cast<std::size_t>(live[j])];
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k - 1), v.end(), std::greater<float>());
  return v[k - 1];
}

}  // namespace detail
ITSCALE_END_NAMESPACE
