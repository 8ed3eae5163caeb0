#pragma once
/// \file proposer_consistency.hpp
/// Self-consistency through a `StepProposer` rather than a `LogitSource`: N complete samples are
/// drawn step by step, and samples that share a prefix share its requests. This is the way to
/// run self-consistency on a remote model (`remote_proposer`: one request per distinct prefix per
/// step, all of a step's requests in flight together) or on any proposer.
///
/// The frontier holds distinct prefixes and how many of the N samples share each; a round asks
/// the proposer for that many samples of every frontier node in one batch. A prefix's samples come
/// from the node's own streams (its id), so the result does not depend on how many prefixes are
/// batched. Samples reaching a terminal step are done; after `max_steps` rounds the rest are cut
/// (stop `max_new_tokens`, they still vote).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/select/consistency_result.hpp"
#include "itscale/select/vote.hpp"
#include "itscale/steps/step_proposer.hpp"
#include "itscale/steps/step_search.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Options of self-consistency through a proposer.
struct proposer_consistency_options {
  std::size_t samples = 16;    ///< N (>= 1)
  std::size_t max_steps = 64;  ///< rounds of steps before the remaining samples are cut (>= 1)

  void validate() const {
    if (samples == 0) throw invalid_option("itscale: proposer_consistency_options.samples must be >= 1, got 0");
    if (max_steps == 0) throw invalid_option("itscale: proposer_consistency_options.max_steps must be >= 1, got 0");
  }
};

namespace detail {

template <class State>
struct shared_prefix {
  State state;
  std::size_t count = 0;  // samples sharing this prefix
  std::uint32_t id = 0;   // the node's random streams
  double logprob = 0;
};

/// N complete samples of `prompt` through `p` (see the file comment), in frontier order.
template <StepProposer P>
std::vector<generation> proposer_samples(P& p, std::span<const token_id> prompt, const proposer_consistency_options& opts) {
  using S = typename P::state;
  std::vector<shared_prefix<S>> frontier;
  frontier.push_back({p.root(prompt), opts.samples, 0, 0.0});
  std::uint32_t next_id = 1;
  std::vector<generation> out;
  const auto emit = [&](const S& s, std::size_t count, double logprob, stop_reason why) {
    const auto all = std::as_const(p).tokens_of(s);
    for (std::size_t k = 0; k < count; ++k) {
      generation g;
      g.sample = out.size();
      g.tokens.assign(all.begin() + static_cast<std::ptrdiff_t>(prompt.size()), all.end());
      g.logprob_sum = g.score = logprob;
      g.stop = why;
      out.push_back(std::move(g));
    }
  };
  for (std::size_t step = 0; step < opts.max_steps && !frontier.empty(); ++step) {
    std::vector<propose_item<S>> batch;
    for (auto& f : frontier) batch.push_back({&f.state, f.id, 0, f.count});
    auto cands = p.propose(std::span<const propose_item<S>>(batch), 0);
    std::vector<shared_prefix<S>> next;
    for (std::size_t i = 0; i < frontier.size(); ++i)
      for (auto& c : cands[i]) {
        const double lp = frontier[i].logprob + c.logprob;
        if (c.terminal) emit(c.state, c.count, lp, c.stop);
        else next.push_back({std::move(c.state), c.count, next_id++, lp});
      }
    frontier = std::move(next);
  }
  for (const auto& f : frontier) emit(f.state, f.count, f.logprob, stop_reason::max_new_tokens);
  return out;
}

}  // namespace detail

/// Self-consistency through a proposer (see the file comment): N samples of `prompt`, a majority
/// vote over `extract`'s answers. `compute` is what the proposer spent during the call.
/// Throws `invalid_option` for bad options; the proposer's and the extractor's exceptions pass
/// through.
template <StepProposer P, AnswerExtractor E>
[[nodiscard]] consistency_result<answer_of<E>> self_consistency(P& proposer, std::span<const token_id> prompt, E&& extract,
                                                                const proposer_consistency_options& opts) {
  const detail::stopwatch clock;
  opts.validate();
  const compute_stats before = proposer.stats();
  consistency_result<answer_of<E>> out;
  auto& pv = out.prompts.emplace_back();
  pv.samples = detail::proposer_samples(proposer, prompt, opts);
  pv.answers.reserve(pv.samples.size());
  for (const auto& g : pv.samples) pv.answers.push_back(extract(std::span<const token_id>(g.tokens)));
  pv.vote = tally_votes(std::span<const std::optional<answer_of<E>>>(pv.answers));
  pv.samples_spent = pv.samples.size();
  out.compute = detail::stats_since(proposer.stats(), before);
  out.compute.wall_seconds = clock.seconds();
  return out;
}

ITSCALE_END_NAMESPACE
