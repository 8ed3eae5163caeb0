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
#include "itscale/kernels/beam_select.hpp"
#include "itscale/kernels/reduce.hpp"

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
/// `out` lacks capacity `m` (or m > 1024). O(beams * vocab) at about the speed of a max pass: the
/// SIMD threshold filter `kernels::top_k_rows` never writes the beams * vocab scores.
inline void select_beam_candidates(std::span<const std::span<const float>> rows, std::span<const float> base,
                                   std::size_t m, std::vector<beam_candidate>& out) {
  assert(rows.size() == base.size());
  out.clear();
  if (m == 0) return;
  out.reserve(m);
  // (x - 0) + base == base + x bit for bit (x - 0 is x, also for -0): the same scores as before.
  constexpr std::size_t on_stack = 1024;
  std::vector<float> zeros_heap;
  float zeros_stack[64] = {};
  std::span<const float> zeros(zeros_stack, rows.size() <= 64 ? rows.size() : 0);
  if (rows.size() > 64) {
    zeros_heap.assign(rows.size(), 0.0f);
    zeros = zeros_heap;
  }
  kernels::row_candidate stack_buf[on_stack];
  std::vector<kernels::row_candidate> heap_buf;
  std::span<kernels::row_candidate> buf(stack_buf, m <= on_stack ? m : 0);
  if (m > on_stack) {
    heap_buf.resize(m);
    buf = heap_buf;
  }
  const std::size_t got = kernels::top_k_rows(rows, zeros, base, buf);
  for (std::size_t j = 0; j < got; ++j) out.push_back({buf[j].score, buf[j].row, buf[j].token});
}

namespace detail {

/// In-place log-softmax computed as (x - max) - log(sum exp(x - max)), the association PyTorch's
/// CPU kernel uses, so that equal and nearly equal log-probs round as they do in HF. Returns false
/// (row untouched) when every entry is `-inf`.
inline bool log_softmax_like_torch(std::span<float> row) noexcept {
  const float m = kernels::max(row);  // SIMD, exact
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
