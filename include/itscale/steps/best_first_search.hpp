#pragma once
/// \file best_first_search.hpp
/// Best-first search over steps with a bounded frontier: every round takes the `batch` best
/// nodes of the frontier (by aggregated verifier score, then proposal log-prob, then age), expands each
/// `expansions` times in one proposer batch, scores the children with one verifier call and puts
/// them into the frontier; past `max_frontier` the lowest-scored nodes are discarded. A finished
/// node that reaches the top of the frontier is a result; the search ends with
/// `num_return_sequences` results, an empty frontier, `max_expansions` expanded nodes, or the budget.
///
/// The frontier holds live states between rounds, so this is the search that honours
/// `step_run_options::max_live_handles`: the least recently queued frontier nodes give their
/// handles back (`handle_budget`) and are re-prefilled if they are expanded. With a budget of at
/// least `batch · (1 + 2·expansions)` (what one round of the sampling proposer holds in flight:
/// the parents, each sample's handle and the next one made while it advances) the peak of live
/// handles stays within it. The result does not depend on the budget for a source whose prefill
/// and extend agree bit for bit.

#include <algorithm>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/types.hpp"
#include "itscale/steps/handle_budget.hpp"
#include "itscale/steps/step_proposer.hpp"
#include "itscale/steps/step_search.hpp"
#include "itscale/steps/verifier.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Options of `best_first_search`. Designated initialisers, one `validate()`.
struct best_first_options {
  std::size_t expansions = 4;        ///< samples per expanded node; >= 1
  std::size_t batch = 1;             ///< nodes expanded per round; >= 1
  std::size_t max_frontier = 64;     ///< nodes kept in the frontier; >= batch
  std::size_t max_expansions = 256;  ///< nodes expanded in all; >= 1
  std::size_t max_steps = 40;        ///< depth limit: nodes this deep are not expanded; >= 1
  step_aggregation aggregation = step_aggregation::last;
  std::size_t num_return_sequences = 1;  ///< results to find; >= 1

  /// Throws `invalid_option` naming the broken rule.
  void validate() const {
    const auto fail = [](const std::string& what) { throw invalid_option("itscale: best_first_options." + what); };
    if (expansions == 0) fail("expansions must be >= 1, got 0");
    if (batch == 0) fail("batch must be >= 1, got 0");
    if (max_frontier < batch)
      fail("max_frontier (" + std::to_string(max_frontier) + ") must be >= batch (" + std::to_string(batch) + ")");
    if (max_expansions == 0) fail("max_expansions must be >= 1, got 0");
    if (max_steps == 0) fail("max_steps must be >= 1, got 0");
    if (num_return_sequences == 0) fail("num_return_sequences must be >= 1, got 0");
  }

  /// Live handles one round may hold in flight (see the file comment).
  [[nodiscard]] std::size_t in_flight() const noexcept { return batch * (1 + 2 * expansions); }
};

namespace detail {

/// The frontier of a best-first search: nodes best first (`ranks_above`), ties to the lower
/// (older) id.
template <class P, class Node>
class best_first_frontier {
 public:
  best_first_frontier(handle_budget<P>& lru, std::size_t cap) : lru_(lru), cap_(cap) {}
  best_first_frontier(const best_first_frontier&) = delete;
  best_first_frontier& operator=(const best_first_frontier&) = delete;
  ~best_first_frontier() {
    for (auto& n : nodes_) lru_.forget(n->state);
  }

  /// Adds nodes, re-sorts, discards the worst past the cap.
  void add(std::vector<Node>& fresh) {
    for (auto& n : fresh) {
      nodes_.push_back(std::make_unique<Node>(std::move(n)));
      lru_.keep(nodes_.back()->state);
    }
    std::stable_sort(nodes_.begin(), nodes_.end(), [](const auto& a, const auto& b) {
      return ranks_above(*a, *b) || (!ranks_above(*b, *a) && a->id < b->id);
    });
    while (nodes_.size() > cap_) {
      lru_.forget(nodes_.back()->state);
      nodes_.pop_back();
    }
  }

  /// Takes the best node out.
  std::unique_ptr<Node> pop() {
    auto n = std::move(nodes_.front());
    nodes_.erase(nodes_.begin());
    lru_.forget(n->state);
    return n;
  }

  [[nodiscard]] bool empty() const noexcept { return nodes_.empty(); }
  [[nodiscard]] const std::vector<std::unique_ptr<Node>>& nodes() const noexcept { return nodes_; }

 private:
  handle_budget<P>& lru_;
  std::size_t cap_;
  std::vector<std::unique_ptr<Node>> nodes_;
};

}  // namespace detail

/// Best-first search from `prompt` (see the file comment). Errors and guarantees as
/// `step_beam_search`; also `invalid_option` when `run.max_live_handles` is set below
/// `opts.in_flight()`.
template <StepProposer P, Verifier V>
[[nodiscard]] step_search_result best_first_search(P& proposer, V& verifier, std::span<const token_id> prompt,
                                                   const best_first_options& opts, const step_run_options& run = {}) {
  opts.validate();
  if (run.max_live_handles != 0 && run.max_live_handles < opts.in_flight())
    throw invalid_option("itscale: step_run_options.max_live_handles (" + std::to_string(run.max_live_handles) +
                         ") must be 0 or >= batch * (1 + 2 * expansions) = " + std::to_string(opts.in_flight()) +
                         " for best_first_search: one round holds that many handles");
  detail::step_search_run<P, V> r(proposer, verifier, prompt, run, opts.aggregation, "best_first_search");
  using node = typename detail::step_search_run<P, V>::node;
  handle_budget<P> lru(proposer, run.max_live_handles);
  std::vector<std::unique_ptr<node>> finished, stuck;  // results; nodes at the depth limit
  detail::best_first_frontier<P, node> frontier(lru, opts.max_frontier);
  {
    std::vector<node> first;
    first.push_back(r.root(prompt));
    frontier.add(first);
  }
  std::size_t expanded = 0;
  run_status status = run_status::completed;
  while (finished.size() < opts.num_return_sequences && !frontier.empty() && expanded < opts.max_expansions) {
    if ((status = r.check_budget()) != run_status::completed) break;
    std::vector<std::unique_ptr<node>> popped;
    while (popped.size() < opts.batch && !frontier.empty() && finished.size() < opts.num_return_sequences &&
           expanded + popped.size() < opts.max_expansions) {
      auto n = frontier.pop();
      if (n->terminal) {
        finished.push_back(std::move(n));
      } else if (n->depth >= opts.max_steps) {
        proposer.drop(n->state);
        stuck.push_back(std::move(n));
      } else {
        popped.push_back(std::move(n));
      }
    }
    if (popped.empty()) continue;
    lru.trim(opts.in_flight());
    std::vector<node*> parents;
    for (auto& n : popped) {
      lru.use(n->state);
      parents.push_back(n.get());
    }
    const std::vector<std::size_t> samples(parents.size(), opts.expansions);
    auto kids = r.expand(parents, samples);
    expanded += popped.size();
    popped.clear();  // the parents' handles go before the children join the frontier
    std::vector<node> all;
    for (auto& k : kids)
      for (auto& n : k) all.push_back(std::move(n));
    frontier.add(all);
    lru.trim(0);
  }
  std::vector<const node*> done, open;
  for (const auto& n : finished) done.push_back(n.get());
  for (const auto& n : frontier.nodes()) open.push_back(n.get());
  for (const auto& n : stuck) open.push_back(n.get());
  return r.finish(std::move(done), std::move(open), opts.num_return_sequences, status);
}

ITSCALE_END_NAMESPACE
