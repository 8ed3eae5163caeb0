#pragma once
/// \file beam_select.hpp
/// The candidate-selection step of beam search, apart from the driver so that variants (diverse
/// groups, Gumbel-perturbed scores) can reuse or replace it: the top `m` continuations over all
/// running beams of one prompt, by running score + processed log-prob.

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "itscale/core/types.hpp"

namespace itscale {
inline namespace v0 {

/// A continuation of a running beam.
struct beam_candidate {
  float score = 0;          ///< the beam's running score + the token's log-prob (float addition)
  std::uint32_t beam = 0;   ///< index of the beam among the running beams
  token_id token = 0;
};

/// Order of candidates: higher score first; among equal scores the lower (beam, token) pair, i.e.
/// the lower index in the flattened [beams x vocab] array that HF ranks with `torch.topk`.
[[nodiscard]] inline bool candidate_ranks_above(const beam_candidate& a, const beam_candidate& b) noexcept {
  if (a.score != b.score) return a.score > b.score;
  return a.beam != b.beam ? a.beam < b.beam : a.token < b.token;
}

/// Writes to `out` the `m` best candidates over beams `b = 0..rows.size()-1`, where beam `b`'s
/// continuation by token `t` scores `base[b] + rows[b][t]` in float, best first (see
/// `candidate_ranks_above`). Candidates scoring `-inf` (masked tokens) or NaN are never selected, so
/// `out` may hold fewer than `m`. Precondition: `rows.size() == base.size()`. Allocates only if
/// `out` lacks capacity `m`. O(beams * vocab + m log m).
inline void select_beam_candidates(std::span<const std::span<const float>> rows, std::span<const float> base,
                                   std::size_t m, std::vector<beam_candidate>& out) {
  assert(rows.size() == base.size());
  out.clear();
  if (m == 0) return;
  out.reserve(m);
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  // A min-heap on rank keeps the worst of the current best m at the front; rows are scanned in
  // flat-index order, so a later equal score never outranks the front and `>` suffices.
  const auto worse_first = [](const beam_candidate& a, const beam_candidate& b) { return candidate_ranks_above(a, b); };
  for (std::size_t b = 0; b < rows.size(); ++b) {
    const auto row = rows[b];
    const float s = base[b];
    const auto beam = static_cast<std::uint32_t>(b);
    for (std::size_t t = 0; t < row.size(); ++t) {
      const float v = s + row[t];
      if (out.size() == m) {
        if (!(v > out.front().score)) continue;
        std::pop_heap(out.begin(), out.end(), worse_first);
        out.back() = {v, beam, static_cast<token_id>(t)};
        std::push_heap(out.begin(), out.end(), worse_first);
      } else if (v > neg_inf) {  // also keeps a NaN out of the heap
        out.push_back({v, beam, static_cast<token_id>(t)});
        std::push_heap(out.begin(), out.end(), worse_first);
      }
    }
  }
  std::sort_heap(out.begin(), out.end(), worse_first);
}

namespace detail {

/// In-place log-softmax computed as (x - max) - log(sum exp(x - max)), the association PyTorch's
/// CPU kernel uses, so that equal and nearly equal log-probs round as they do in HF. Returns false
/// (row untouched) when every entry is `-inf`.
inline bool log_softmax_like_torch(std::span<float> row) noexcept {
  float m = -std::numeric_limits<float>::infinity();
  for (float x : row) m = x > m ? x : m;
  if (m == -std::numeric_limits<float>::infinity()) return false;
  // Float exponentials as PyTorch's kernel takes them (and twice as fast as double ones); the sum
  // is kept in double because a row can hold 10^5+ terms.
  double s = 0;
  for (float x : row) s += static_cast<double>(std::exp(x - m));
  const auto lse = static_cast<float>(std::log(s));
  for (float& x : row) x = (x - m) - lse;
  return true;
}

/// generated_length^length_penalty, as HF computes it (a double power, then used as a float).
[[nodiscard]] inline float length_normaliser(std::size_t generated_length, double length_penalty) noexcept {
  return static_cast<float>(std::pow(static_cast<double>(generated_length), length_penalty));
}

}  // namespace detail
}  // namespace v0
}  // namespace itscale
