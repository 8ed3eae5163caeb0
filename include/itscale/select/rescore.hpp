#pragma once
/// \file rescore.hpp
/// Rescoring with a second source: the log-probability of each candidate continuation of a
/// prompt under another `LogitSource` (a larger model, a reverse model, an ensemble), teacher
/// forced — the way a reranker scores beam search's n-best list or a set of samples.
///
/// The prompt is prefilled once (or a caller's `prefilled` is used) and every candidate forks
/// it. Two ways to force the tokens, chosen per source:
/// - a source with a member `extend_span(parent, tokens) -> handle` (the teacher-forcing
///   capability: one new sequence, the logits view then holds a row after every prefix of the
///   span) evaluates each candidate in one call, and the handle is released at once;
/// - any other source is driven position by position, all candidates in one batched `extend`
///   per position; candidates sharing a prefix (beam n-best lists mostly do) share its rows, so a
///   row is evaluated once per distinct prefix. At most (distinct prefixes at two consecutive
///   depths) + 1 handles are live.
///
/// A token's log-prob is `row[t] - logsumexp(row)` of the source's raw row (no processors), in
/// float; sums are in double. A masked (`-inf`) token gives `-inf`.

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/detail/handle_guard.hpp"
#include "itscale/core/detail/source_rows.hpp"
#include "itscale/core/detail/validate_tokens.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/live.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/metered_source.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/select/best_of_n.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Options of `rescore`.
struct rescore_options {
  /// Use the source's `extend_span` when it has one (one call per candidate); false: always the
  /// batched position-by-position path.
  bool use_extend_span = true;
  void validate() const {}
};

/// The log-probs of the candidates under the rescoring source.
struct rescore_result {
  std::vector<double> logprob;                     ///< per candidate: the sum of its token log-probs
  std::vector<std::vector<float>> token_logprobs;  ///< per candidate, per token
  compute_stats compute;                           ///< the rescoring source's work

  /// `logprob[i]` / its number of tokens (0 for an empty candidate).
  [[nodiscard]] double mean_logprob(std::size_t i) const noexcept {
    return token_logprobs[i].empty() ? 0.0 : logprob[i] / static_cast<double>(token_logprobs[i].size());
  }
  /// The candidates ranked by the (length-normalised, if `mean`) rescored log-prob.
  [[nodiscard]] ranking rank(bool mean = false) const {
    std::vector<double> s(logprob.size());
    for (std::size_t i = 0; i < s.size(); ++i) s[i] = mean ? mean_logprob(i) : logprob[i];
    ranking r;
    r.order = rank_scores(s);
    if (!r.order.empty()) r.best = r.order.front();
    r.scores = std::move(s);
    return r;
  }
};

namespace detail {

inline float token_logprob(std::span<const float> row, token_id t, float lse) noexcept {
  const float x = row[static_cast<std::size_t>(t)];
  return x == masked_logit ? masked_logit : x - lse;
}

/// Scores `cands` after the sequence `start` (its next-token row `start_row`) through `src`.
template <LogitSource S>
void force_candidates(metered_source<S>& src, handle_t<S> start, std::span<const float> start_row,
                      std::span<const std::span<const token_id>> cands, const rescore_options& opts,
                      rescore_result& out) {
  using handle = handle_t<S>;
  const std::size_t vocab = src.vocab_size();
  const float start_lse = kernels::logsumexp(start_row);
  out.token_logprobs.assign(cands.size(), {});
  for (std::size_t c = 0; c < cands.size(); ++c) {
    out.token_logprobs[c].resize(cands[c].size());
    if (!cands[c].empty()) out.token_logprobs[c][0] = token_logprob(start_row, cands[c][0], start_lse);
  }
  handle_guard<metered_source<S>> guard(src);
  if constexpr (ScoringLogitSource<S>) {
    if (opts.use_extend_span) {
      for (std::size_t c = 0; c < cands.size(); ++c) {
        const std::size_t n = cands[c].size();
        if (n < 2) continue;
        guard.reserve(1);
        const handle h = src.extend_span(start, cands[c].first(n - 1));
        guard.adopt(h);
        const logits_view v = src.logits();
        check_source_rows(v, n - 1, vocab, 1);
        for (std::size_t i = 0; i + 1 < n; ++i) {
          const auto row = std::span<const float>(v.row(i));
          out.token_logprobs[c][i + 1] = token_logprob(row, cands[c][i + 1], kernels::logsumexp(row));
        }
        guard.release(h);
      }
      return;
    }
  }
  // Position by position. `node[c]` is the handle holding prompt + cands[c][0..t]; candidates
  // with equal (node, next token) share one child.
  std::vector<handle> node(cands.size(), start);
  std::vector<std::size_t> active, order;
  for (std::size_t c = 0; c < cands.size(); ++c)
    if (cands[c].size() > 1) active.push_back(c);
  std::vector<handle> parents, children;
  std::vector<unsigned char> used;
  std::vector<token_id> tokens;
  std::vector<std::size_t> row_of(cands.size());
  std::vector<float> lse;
  for (std::size_t t = 0; !active.empty(); ++t) {
    // Candidates with equal tokens 0..t share a child: sorted by that prefix they are adjacent
    // (and, sharing tokens 0..t-1, they already share their node).
    order = active;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return std::lexicographical_compare(cands[a].begin(), cands[a].begin() + static_cast<std::ptrdiff_t>(t + 1),
                                          cands[b].begin(), cands[b].begin() + static_cast<std::ptrdiff_t>(t + 1));
    });
    parents.clear();
    tokens.clear();
    for (std::size_t k = 0; k < order.size(); ++k) {
      const std::size_t c = order[k];
      const bool same = k > 0 && node[order[k - 1]] == node[c] && cands[order[k - 1]][t] == cands[c][t];
      if (!same) {
        parents.push_back(node[c]);
        tokens.push_back(cands[c][t]);
      }
      row_of[c] = parents.size() - 1;
    }
    children.assign(parents.size(), handle{});
    guard.reserve(children.size());
    src.extend(parents, tokens, children);
    for (handle h : children) guard.adopt(h);
    const logits_view v = src.logits();
    check_source_rows(v, children.size(), vocab, t + 1);
    lse.resize(children.size());
    kernels::logsumexp(std::span<const float>(v.data, v.rows * vocab), vocab, lse);
    // The parents of this step are done with: the guard releases each once and ignores the
    // start, which it does not own. So are the children no candidate continues from.
    std::vector<std::size_t> next;
    used.assign(children.size(), 0);
    for (std::size_t c : active) {
      const std::size_t r = row_of[c];
      out.token_logprobs[c][t + 1] = token_logprob(v.row(r), cands[c][t + 1], lse[r]);
      guard.release(node[c]);
      node[c] = children[r];
      if (cands[c].size() > t + 2) {
        next.push_back(c);
        used[r] = 1;
      }
    }
    for (std::size_t r = 0; r < children.size(); ++r)
      if (!used[r]) guard.release(children[r]);
    active = std::move(next);
  }
}

template <LogitSource S>
rescore_result run_rescore(S& source, const prefilled<S>* start, std::span<const token_id> prompt,
                           std::span<const std::span<const token_id>> cands, const rescore_options& opts) {
  const stopwatch clock;
  opts.validate();
  const std::size_t vocab = source.vocab_size();
  if (cands.empty()) throw invalid_input("itscale: rescore needs at least one candidate");
  for (std::size_t c = 0; c < cands.size(); ++c)
    check_tokens(cands[c], vocab, ("candidate " + std::to_string(c) + " tokens").c_str());
  if (start != nullptr) {
    check_prefilled(start, 0, vocab);
    if (start->handle.source() != &source) throw invalid_input("itscale: rescore: the prefilled sequence belongs to another source");
  } else {
    if (prompt.empty()) throw invalid_input("itscale: rescore needs a non-empty prompt");
    check_tokens(prompt, vocab, "prompt");
  }
  rescore_result out;
  {
    metered_source<S> src(source, out.compute);
    if (start != nullptr) {
      force_candidates(src, start->handle.get(), start->logits, cands, opts, out);
    } else {
      handle_guard<metered_source<S>> guard(src);
      guard.reserve(1);
      const handle_t<S> h = src.prefill(prompt);
      guard.adopt(h);
      const logits_view v = src.logits();
      check_source_rows(v, 1, vocab, 0);
      const std::vector<float> row(v.data, v.data + vocab);
      force_candidates(src, h, row, cands, opts, out);
    }
  }
  out.logprob.resize(cands.size());
  for (std::size_t c = 0; c < cands.size(); ++c)
    out.logprob[c] = std::accumulate(out.token_logprobs[c].begin(), out.token_logprobs[c].end(), 0.0);
  out.compute.wall_seconds = clock.seconds();
  return out;
}

inline std::vector<std::span<const token_id>> token_spans(std::span<const generation> cands) {
  std::vector<std::span<const token_id>> s;
  s.reserve(cands.size());
  for (const auto& g : cands) s.emplace_back(g.tokens);
  return s;
}

}  // namespace detail

/// The log-prob of each candidate (its generated tokens, prompt excluded) after `prompt` under
/// `source` (see the file comment). Empty candidates score 0.
///
/// Throws `invalid_input` for no candidates, an empty prompt or token ids outside the
/// vocabulary (before touching the source), `backend_error` for unusable logits; the source's
/// exceptions propagate. Every handle created is released on every path.
template <LogitSource S>
[[nodiscard]] rescore_result rescore(S& source, std::span<const token_id> prompt, std::span<const generation> candidates,
                                     const rescore_options& opts = {}) {
  const auto spans = detail::token_spans(candidates);
  return detail::run_rescore<S>(source, nullptr, prompt, spans, opts);
}

/// From a caller's prefilled prompt (forked, never released): no prefill at all.
template <LogitSource S>
[[nodiscard]] rescore_result rescore(S& source, const prefilled<S>& start, std::span<const generation> candidates,
                                     const rescore_options& opts = {}) {
  const auto spans = detail::token_spans(candidates);
  return detail::run_rescore<S>(source, &start, {}, spans, opts);
}

/// Candidates given as token lists.
template <LogitSource S>
[[nodiscard]] rescore_result rescore(S& source, std::span<const token_id> prompt,
                                     std::span<const std::span<const token_id>> candidates, const rescore_options& opts = {}) {
  return detail::run_rescore<S>(source, nullptr, prompt, candidates, opts);
}

ITSCALE_END_NAMESPACE
