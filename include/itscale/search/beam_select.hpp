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

#include "itscale/core/abi.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/beam_select.hpp"

ITSCALE_BEGIN_NAMESPACE

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
/// continuation by token `t` scores `base[b] + (rows[b][t] - sub[b])` in float, best first (see
/// `candidate_ranks_above`). Candidates scoring `-inf` (masked tokens) or NaN are never selected, so
/// `out` may hold fewer than `m`. Preconditions: `rows`, `sub` and `base` have one entry per beam;
/// finite `sub` and `base`. Allocates only if `out` lacks capacity `m` (or m > 1024).
/// O(beams * vocab) at about the speed of a max pass: the SIMD threshold filter
/// `kernels::top_k_rows` never writes the beams * vocab scores.
inline void select_beam_candidates(std::span<const std::span<const float>> rows, std::span<const float> sub,
                                   std::span<const float> base, std::size_t m, std::vector<beam_candidate>& out) {
  assert(rows.size() == base.size() && rows.size() == sub.size());
  out.clear();
  if (m == 0) return;
  out.reserve(m);
  constexpr std::size_t on_stack = 1024;
  kernels::row_candidate stack_buf[on_stack];
  std::vector<kernels::row_candidate> heap_buf;
  std::span<kernels::row_candidate> buf(stack_buf, m <= on_stack ? m : 0);
  if (m > on_stack) {
    heap_buf.resize(m);
    buf = heap_buf;
  }
  const std::size_t got = kernels::top_k_rows(rows, sub, base, buf);
  for (std::size_t j = 0; j < got; ++j) out.push_back({buf[j].score, buf[j].row, buf[j].token});
}

/// As above with nothing subtracted: scores `base[b] + rows[b][t]` (x - 0 is x bit for bit, also
/// for -0, so these are the scores of a plain float addition).
inline void select_beam_candidates(std::span<const std::span<const float>> rows, std::span<const float> base,
                                   std::size_t m, std::vector<beam_candidate>& out) {
  assert(rows.size() == base.size());
  std::vector<float> zeros_heap;
  float zeros_stack[64] = {};
  std::span<const float> zeros(zeros_stack, rows.size() <= 64 ? rows.size() : 0);
  if (rows.size() > 64) {
    zeros_heap.assign(rows.size(), 0.0f);
    zeros = zeros_heap;
  }
  select_beam_candidates(rows, zeros, base, m, out);
}

namespace detail {

/// One token's Hamming penalty at a step of diverse beam search: float(penalty) * count, as
/// torch computes it.
struct token_penalty {
  token_id token = 0;
  float amount = 0;
  std::size_t count = 0;
};

/// The amount by which `t` is penalised (0 if it is not).
[[nodiscard]] inline float penalty_of(std::span<const token_penalty> penalties, token_id t) noexcept {
  for (const token_penalty& p : penalties)
    if (p.token == t) return p.amount;
  return 0.0f;
}

/// `select_beam_candidates` with `penalties[i].amount` subtracted from the log-prob of token
/// `penalties[i].token` of every row before the beam's score is added: score = base + ((row[t] -
/// sub) - amount). Exact and cheap: a candidate with an unpenalised token is unchanged, and the
/// best m of those lie among the best m + |penalties| * rows of all unpenalised scores; the few
/// penalised candidates are scored directly. `tmp` is scratch.
inline void select_penalised_candidates(std::span<const std::span<const float>> rows, std::span<const float> sub,
                                        std::span<const float> base, std::size_t m,
                                        std::span<const token_penalty> penalties, std::vector<beam_candidate>& out,
                                        std::vector<beam_candidate>& tmp) {
  if (penalties.empty()) {
    select_beam_candidates(rows, sub, base, m, out);
    return;
  }
  const auto penalised = [&](token_id t) {
    return std::any_of(penalties.begin(), penalties.end(), [t](const token_penalty& p) { return p.token == t; });
  };
  select_beam_candidates(rows, sub, base, m + penalties.size() * rows.size(), tmp);
  out.clear();
  for (const beam_candidate& c : tmp)
    if (!penalised(c.token)) out.push_back(c);
  for (std::size_t b = 0; b < rows.size(); ++b)
    for (const token_penalty& p : penalties) {
      const float v = base[b] + ((rows[b][static_cast<std::size_t>(p.token)] - sub[b]) - p.amount);
      if (v > masked_logit) out.push_back({v, static_cast<std::uint32_t>(b), p.token});  // drops -inf and NaN
    }
  std::sort(out.begin(), out.end(), candidate_ranks_above);
  if (out.size() > m) out.resize(m);
}

/// generated_length^length_penalty, as HF computes it (a double power, then used as a float).
[[nodiscard]] inline float length_normaliser(std::size_t generated_length, double length_penalty) noexcept {
  return static_cast<float>(std::pow(static_cast<double>(generated_length), length_penalty));
}

}  // namespace detail
ITSCALE_END_NAMESPACE
