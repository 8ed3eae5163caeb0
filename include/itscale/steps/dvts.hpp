#pragma once
/// \file dvts.hpp
/// Diverse verifier tree search (DVTS, search-and-learn's `dvts.py`): the N expansions of a round
/// are split into N/M independent subtrees; each subtree is a step beam search of width 1 that
/// expands its current node M times and keeps the best candidate by aggregated verifier score
/// (ties to the higher proposal log-prob, then the first proposed). A subtree ends when its best candidate finishes. All subtrees
/// advance together: one proposer batch and one verifier call per round.
///
/// The subtrees share the root's prefill; subtree i draws its first step from its own stream (ids
/// 1..N/M after the root's 0), so the subtrees start differently. Returns the subtrees' leaves, best
/// first (search-and-learn returns all M last candidates of each; here a subtree gives one).

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/types.hpp"
#include "itscale/steps/step_proposer.hpp"
#include "itscale/steps/step_search.hpp"
#include "itscale/steps/verifier.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Options of `dvts`. Designated initialisers, one `validate()`.
struct dvts_options {
  std::size_t num_candidates = 16;  ///< N: expansions per round over all subtrees; >= 1
  std::size_t expansions = 4;       ///< M: expansions per subtree and round; >= 1, divides N (N/M subtrees)
  std::size_t max_steps = 40;       ///< rounds at most; >= 1
  step_aggregation aggregation = step_aggregation::last;
  std::size_t num_return_sequences = 1;  ///< >= 1 and <= N/M (one leaf per subtree)
  /// A subtree finishing with at least this score ends the search after its round; +inf = never.
  double stop_at_score = std::numeric_limits<double>::infinity();

  /// Throws `invalid_option` naming the broken rule.
  void validate() const {
    const auto fail = [](const std::string& what) { throw invalid_option("itscale: dvts_options." + what); };
    if (num_candidates == 0) fail("num_candidates (N) must be >= 1, got 0");
    if (expansions == 0) fail("expansions (M) must be >= 1, got 0");
    if (num_candidates % expansions != 0)
      fail("expansions (M = " + std::to_string(expansions) + ") must divide num_candidates (N = " +
           std::to_string(num_candidates) + "): the search runs N/M subtrees");
    if (max_steps == 0) fail("max_steps must be >= 1, got 0");
    if (num_return_sequences == 0 || num_return_sequences > num_candidates / expansions)
      fail("num_return_sequences must be in [1, N/M = " + std::to_string(num_candidates / expansions) + "], got " +
           std::to_string(num_return_sequences));
    detail::check_stop_at_score(stop_at_score, "dvts_options");
  }
};

namespace detail {

/// The best of a subtree's candidates (`ranks_above`; the first on full ties).
template <class Node>
Node& best_of(std::vector<Node>& kids) {
  std::size_t b = 0;
  for (std::size_t i = 1; i < kids.size(); ++i)
    if (ranks_above(kids[i], kids[b])) b = i;
  return kids[b];
}

}  // namespace detail

/// DVTS from `prompt` (see the file comment). Errors and guarantees as `step_beam_search`.
template <StepProposer P, Verifier V>
[[nodiscard]] step_search_result dvts(P& proposer, V& verifier, std::span<const token_id> prompt,
                                      const dvts_options& opts, const step_run_options& run = {}) {
  opts.validate();
  detail::step_search_run<P, V> r(proposer, verifier, prompt, run, opts.aggregation, "dvts");
  using node = typename detail::step_search_run<P, V>::node;
  using state = typename P::state;
  const std::size_t trees = opts.num_candidates / opts.expansions;
  std::optional<node> root(r.root(prompt));
  const std::uint32_t first_id = r.reserve_ids(static_cast<std::uint32_t>(trees));
  std::vector<node> heads, done;  // unfinished subtrees' current nodes; finished subtrees' leaves
  run_status status = run_status::completed;
  for (std::size_t step = 0; step < opts.max_steps; ++step) {
    if ((status = r.check_budget()) != run_status::completed) break;
    std::vector<node*> parents;
    std::vector<propose_item<state>> items;
    for (std::size_t i = 0; i < (root ? trees : heads.size()); ++i) {
      node& p = root ? *root : heads[i];
      parents.push_back(&p);
      items.push_back({&p.state, root ? first_id + static_cast<std::uint32_t>(i) : p.id, 0, opts.expansions});
    }
    auto kids = r.expand(parents, items);
    std::vector<node> next;
    for (auto& k : kids) {
      node& best = detail::best_of(k);
      (best.terminal ? done : next).push_back(std::move(best));
    }
    heads = std::move(next);
    root.reset();
    if (heads.empty() || detail::reached(done, opts.stop_at_score)) break;
  }
  std::vector<const node*> fin, open;
  for (const auto& n : done) fin.push_back(&n);
  for (const auto& n : heads) open.push_back(&n);
  if (root) open.push_back(&*root);
  return r.finish(std::move(fin), std::move(open), opts.num_return_sequences, status);
}

ITSCALE_END_NAMESPACE
