#pragma once
/// \file best_of_n.hpp
/// Reranking a list of candidates (samples, or beam search's n-best as `generation`s): best-of-N
/// by a score — an outcome verifier, the sequence log-prob, or the length-normalised log-prob —
/// and weighted best-of-N (search-and-learn, 2024): sum the verifier's scores per distinct answer
/// and return the answer with the largest sum.
///
/// Ranking rule everywhere: higher score first; equal scores (exactly, as doubles) keep candidate
/// order, so the lowest index wins a tie.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/select/vote.hpp"
#include "itscale/steps/verifier.hpp"

ITSCALE_BEGIN_NAMESPACE

/// A sequence-level score read from the candidates themselves.
enum class sequence_score : std::uint8_t {
  logprob,             ///< sum of the processed log-probs (`generation::logprobs`)
  mean_logprob,        ///< that sum / number of tokens
  model_logprob,       ///< sum of the raw-logit log-probs (`generation::model_logprobs`)
  mean_model_logprob,  ///< that sum / number of tokens
};

/// Candidates ranked by a score.
struct ranking {
  std::vector<double> scores;       ///< per candidate, in candidate order
  std::vector<std::size_t> order;   ///< candidate indices, best first (ties: lower index first)
  std::size_t best = 0;             ///< `order.front()`
  compute_stats compute;            ///< verifier work (and wall time) of the ranking
};

/// The candidate order of `scores`: descending, ties to the lower index. Throws `invalid_input`
/// for NaN.
[[nodiscard]] inline std::vector<std::size_t> rank_scores(std::span<const double> scores) {
  for (std::size_t i = 0; i < scores.size(); ++i)
    if (std::isnan(scores[i])) throw invalid_input("itscale: score of candidate " + std::to_string(i) + " is NaN");
  std::vector<std::size_t> order(scores.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
  return order;
}

namespace detail {

inline void check_candidates(std::size_t n, const char* who) {
  if (n == 0) throw invalid_input(std::string("itscale: ") + who + " needs at least one candidate");
}

inline ranking make_ranking(std::vector<double> scores) {
  ranking r;
  r.order = rank_scores(scores);
  r.best = r.order.front();
  r.scores = std::move(scores);
  return r;
}

}  // namespace detail

/// The score of candidate `g` (index `i`, for messages). Throws `invalid_input` when the
/// candidate lacks the log-probs the score needs (decoded without `output_logprobs` /
/// `output_model_logprobs`) or is empty under a mean.
[[nodiscard]] inline double score_of(const generation& g, sequence_score by, std::size_t i = 0) {
  const bool model = by == sequence_score::model_logprob || by == sequence_score::mean_model_logprob;
  const auto& lps = model ? g.model_logprobs : g.logprobs;
  if (lps.size() != g.tokens.size())
    throw invalid_input("itscale: candidate " + std::to_string(i) + " has " + std::to_string(lps.size()) + " " +
                        (model ? "model_logprobs" : "logprobs") + " for " + std::to_string(g.tokens.size()) +
                        " tokens (decode with output_" + (model ? "model_" : "") + "logprobs)");
  double sum = 0;
  for (float lp : lps) sum += lp;
  if (by == sequence_score::logprob || by == sequence_score::model_logprob) return sum;
  if (g.tokens.empty()) throw invalid_input("itscale: candidate " + std::to_string(i) + " is empty: no mean log-prob");
  return sum / static_cast<double>(g.tokens.size());
}

/// Best-of-N by a score the candidates carry (see `sequence_score`). Throws `invalid_input` for
/// no candidates or a candidate without the needed log-probs.
[[nodiscard]] inline ranking best_of_n(std::span<const generation> candidates, sequence_score by) {
  const detail::stopwatch clock;
  detail::check_candidates(candidates.size(), "best_of_n");
  std::vector<double> s(candidates.size());
  for (std::size_t i = 0; i < candidates.size(); ++i) s[i] = score_of(candidates[i], by, i);
  ranking r = detail::make_ranking(std::move(s));
  r.compute.wall_seconds = clock.seconds();
  return r;
}

/// Scores every candidate as a complete answer to `prompt` with `verifier`, in one batched call
/// through `verify` (metered; NaN, out-of-range or a wrong count is a `backend_error`).
template <Verifier V>
[[nodiscard]] std::vector<double> verifier_scores(V& verifier, std::span<const token_id> prompt,
                                                  std::span<const generation> candidates, compute_stats& stats) {
  std::vector<verify_item> batch;
  batch.reserve(candidates.size());
  for (const auto& g : candidates) batch.push_back({prompt, g.tokens, true});
  return verify(verifier, batch, stats);
}

/// Best-of-N by an outcome verifier. Throws `invalid_input` for no candidates; the verifier's
/// exceptions propagate.
template <Verifier V>
[[nodiscard]] ranking best_of_n(V& verifier, std::span<const token_id> prompt, std::span<const generation> candidates) {
  const detail::stopwatch clock;
  detail::check_candidates(candidates.size(), "best_of_n");
  compute_stats stats;
  ranking r = detail::make_ranking(verifier_scores(verifier, prompt, candidates, stats));
  r.compute = stats;
  r.compute.wall_seconds = clock.seconds();
  return r;
}

/// What weighted best-of-N returns.
template <AnswerKey A>
struct weighted_ranking {
  vote_tally<A> vote;                     ///< verifier scores summed per distinct answer (tie rule of vote.hpp)
  std::vector<std::optional<A>> answers;  ///< per candidate
  std::vector<double> scores;             ///< the verifier's score per candidate
  /// The highest-scored candidate with the winning answer (lowest index on ties); with no
  /// answer anywhere, the highest-scored candidate.
  std::size_t best = 0;
  compute_stats compute;
};

/// Weighted best-of-N: every candidate's answer (by `extract`) receives its verifier score as a
/// vote; the answer with the largest sum wins. The verifier's declared range must be >= 0
/// (`invalid_option` otherwise). Throws `invalid_input` for no candidates; exceptions of the
/// verifier and the extractor propagate.
template <Verifier V, AnswerExtractor E>
[[nodiscard]] weighted_ranking<answer_of<E>> weighted_best_of_n(V& verifier, std::span<const token_id> prompt,
                                                                std::span<const generation> candidates, E&& extract) {
  using A = answer_of<E>;
  const detail::stopwatch clock;
  detail::check_candidates(candidates.size(), "weighted_best_of_n");
  if (const score_range rg = std::as_const(verifier).range(); rg.lo < 0)
    throw invalid_option("itscale: weighted_best_of_n: verifier '" + std::string(std::as_const(verifier).name()) +
                         "' scores in [" + detail::num(rg.lo) + ", " + detail::num(rg.hi) +
                         "]; summing scores as votes needs a range with lo >= 0");
  weighted_ranking<A> r;
  r.answers.reserve(candidates.size());
  for (const auto& g : candidates) r.answers.push_back(extract(std::span<const token_id>(g.tokens)));
  r.scores = verifier_scores(verifier, prompt, candidates, r.compute);
  r.vote = tally_votes(std::span<const std::optional<A>>(r.answers), r.scores);
  const auto order = rank_scores(r.scores);
  r.best = order.front();
  if (r.vote.answer)
    for (std::size_t i : order)
      if (r.answers[i] && *r.answers[i] == *r.vote.answer) {
        r.best = i;
        break;
      }
  r.compute.wall_seconds = clock.seconds();
  return r;
}

ITSCALE_END_NAMESPACE
