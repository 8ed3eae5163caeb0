#pragma once
/// \file step_search.hpp
/// What the step-level searches share: how a run is driven (`step_run_options`), what it returns
/// (`step_search_result`: the best sequences as `generation`s, the compute spent, how it ended),
/// and, internally, one round of work (`detail::step_search_run`): expand nodes through the
/// proposer, turn candidates into scored child nodes with one verifier call, check the budget,
/// and rank what was found.
///
/// Compute is reported in the units every method shares (`compute_stats`): the proposer's source
/// work during the search (its metered source) plus the verifier's calls. Budgets and cancellation
/// are checked between rounds; a round in flight completes.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/core/types.hpp"
#include "itscale/steps/step_proposer.hpp"
#include "itscale/steps/verifier.hpp"

ITSCALE_BEGIN_NAMESPACE

/// How a step-level search is driven.
struct step_run_options {
  compute_budget budget = {};  ///< checked between rounds; see `compute_budget`
  /// Live handles the search may hold (0 = unbounded). Honoured by searches that keep nodes for a
  /// later expansion (`best_first_search`): past it, cold nodes give their handles back and are
  /// re-prefilled if expanded (see `handle_budget`). The beam-like searches (step beam search,
  /// DVTS, REBASE) hold only their current frontier and its candidates and ignore it.
  std::size_t max_live_handles = 0;

  void validate() const { budget.validate(); }
};

/// What a step-level search returns. Iterates like its sequences.
struct step_search_result {
  /// Best first (by `score`, then proposal log-prob, then the one found first): finished sequences, then, if fewer than
  /// asked for, the best unfinished ones (stop reason `budget`, `cancelled` or `max_new_tokens` for
  /// the search's depth limit). `tokens` excludes the prompt, `score` is the aggregated verifier
  /// score, `logprob_sum` the proposal log-prob of the steps; per-token log-probs are not kept.
  std::vector<generation> sequences;
  compute_stats compute;  ///< the proposer's source work and the verifier's calls during the search
  run_status status = run_status::completed;
  std::size_t rounds = 0;      ///< proposer batches
  std::size_t expanded = 0;    ///< nodes expanded
  std::size_t candidates = 0;  ///< distinct candidate steps proposed (each verified once)

  [[nodiscard]] std::size_t size() const noexcept { return sequences.size(); }
  [[nodiscard]] bool empty() const noexcept { return sequences.empty(); }
  [[nodiscard]] const generation& operator[](std::size_t i) const noexcept { return sequences[i]; }
  [[nodiscard]] const generation& front() const noexcept { return sequences.front(); }
  [[nodiscard]] auto begin() const noexcept { return sequences.begin(); }
  [[nodiscard]] auto end() const noexcept { return sequences.end(); }
};

namespace detail {

/// A node of a step-level search.
template <class State>
struct step_node {
  State state;                      ///< the proposer's state (prompt and every step)
  std::uint32_t id = 0;             ///< keys the node's random streams
  std::vector<double> step_scores;  ///< the verifier's score after each step
  double score = 0;                 ///< `step_scores` aggregated
  double logprob = 0;               ///< proposal log-prob of every step
  std::size_t count = 1;            ///< samples that produced its last step
  std::size_t depth = 0;            ///< steps after the prompt
  bool terminal = false;
  stop_reason stop = stop_reason::max_new_tokens;
};

/// The ranking every step search uses: the higher aggregated score, then the higher proposal
/// log-prob (a binary verifier ties often: the likelier sequence wins); full ties keep their order.
template <class Node>
[[nodiscard]] bool ranks_above(const Node& a, const Node& b) noexcept {
  return a.score > b.score || (a.score == b.score && a.logprob > b.logprob);
}

/// True when a finished node among `nodes` scores at least `target` (a search's `stop_at_score`).
template <class Node>
[[nodiscard]] bool reached(const std::vector<Node>& nodes, double target) noexcept {
  return std::any_of(nodes.begin(), nodes.end(), [&](const Node& n) { return n.terminal && n.score >= target; });
}

/// Throws `invalid_option` for a NaN `stop_at_score`.
inline void check_stop_at_score(double v, const char* owner) {
  if (v != v) throw invalid_option(std::string("itscale: ") + owner + ".stop_at_score must not be NaN");
}

/// The state of one search run: proposer, verifier, prompt, clock, spending, node ids.
template <StepProposer P, Verifier V>
class step_search_run {
 public:
  using state = typename P::state;
  using node = step_node<state>;

  step_search_run(P& proposer, V& verifier, std::span<const token_id> prompt, const step_run_options& run,
                  step_aggregation how, const char* who)
      : p_(proposer), v_(verifier), run_(run), how_(how), who_(who), before_(proposer.stats()) {
    if (prompt.empty()) throw invalid_input(std::string("itscale: ") + who + " needs a non-empty prompt");
    run.validate();
    // The peak is measured over this run: reset here, the proposer's lifetime peak put back at the end.
    p_.stats().peak_live_handles = 0;
  }
  step_search_run(const step_search_run&) = delete;
  step_search_run& operator=(const step_search_run&) = delete;
  ~step_search_run() {
    auto& peak = p_.stats().peak_live_handles;
    peak = std::max(peak, before_.peak_live_handles);
  }

  /// The root node (prefilled by the proposer); remembers the prompt length.
  [[nodiscard]] node root(std::span<const token_id> prompt) {
    node r;
    r.state = p_.root(prompt);
    r.id = next_id_++;
    prompt_len_ = std::as_const(p_).tokens_of(r.state).size();
    return r;
  }

  /// Reserves `n` consecutive ids (e.g. one per DVTS subtree) and returns the first.
  std::uint32_t reserve_ids(std::uint32_t n) noexcept {
    const std::uint32_t first = next_id_;
    next_id_ += n;
    return first;
  }

  /// Expands `parents[i]` with `samples[i]` samples (each >= 1), all in one proposer batch, and
  /// returns each parent's children, scored by one verifier call, in candidate order.
  std::vector<std::vector<node>> expand(std::span<node* const> parents, std::span<const std::size_t> samples) {
    std::vector<propose_item<state>> items;
    items.reserve(parents.size());
    for (std::size_t i = 0; i < parents.size(); ++i) items.push_back({&parents[i]->state, parents[i]->id, 0, samples[i]});
    return expand(parents, items);
  }

  /// As above with the items given (their ids need not be the parents' own: DVTS shares its root).
  std::vector<std::vector<node>> expand(std::span<node* const> parents, std::span<const propose_item<state>> items) {
    auto cands = p_.propose(items, 1);
    check(cands, items);
    ++rounds_;
    expanded_ += parents.size();
    std::vector<std::vector<node>> kids(parents.size());
    std::vector<node*> fresh;
    for (std::size_t i = 0; i < parents.size(); ++i) {
      kids[i].reserve(cands[i].size());
      for (auto& c : cands[i]) kids[i].push_back(child_of(*parents[i], c));
    }
    for (auto& k : kids)
      for (auto& n : k) fresh.push_back(&n);
    candidates_ += fresh.size();
    score(fresh);
    return kids;
  }

  /// `completed` while the budget holds, else why to stop.
  [[nodiscard]] run_status check_budget() const { return run_.budget.check(spent(), clock_.seconds()); }

  /// What the run spent so far.
  [[nodiscard]] compute_stats spent() const {
    compute_stats s = stats_since(p_.stats(), before_);
    s.verifier_calls = verifier_.verifier_calls;
    s.verified_sequences = verifier_.verified_sequences;
    s.verifier_seconds = verifier_.verifier_seconds;
    s.wall_seconds = clock_.seconds();
    return s;
  }

  /// The result: `finished` ranked, then `unfinished` ranked (stop reason set from `status`), the
  /// first `k` of them.
  step_search_result finish(std::vector<const node*> finished, std::vector<const node*> unfinished, std::size_t k,
                            run_status status) const {
    step_search_result out;
    rank(finished);
    rank(unfinished);
    const stop_reason cut = status == run_status::budget_exhausted ? stop_reason::budget
                            : status == run_status::cancelled      ? stop_reason::cancelled
                                                                    : stop_reason::max_new_tokens;
    for (const node* n : finished)
      if (out.sequences.size() < k) out.sequences.push_back(to_generation(*n, out.sequences.size(), n->stop));
    for (const node* n : unfinished)
      if (out.sequences.size() < k) out.sequences.push_back(to_generation(*n, out.sequences.size(), cut));
    out.status = status;
    out.rounds = rounds_;
    out.expanded = expanded_;
    out.candidates = candidates_;
    out.compute = spent();
    return out;
  }

  /// Sorts best first (`ranks_above`; full ties keep their order: the one found first wins).
  static void rank(std::vector<const node*>& v) {
    std::stable_sort(v.begin(), v.end(), [](const node* a, const node* b) { return ranks_above(*a, *b); });
  }

  [[nodiscard]] P& proposer() noexcept { return p_; }
  [[nodiscard]] const char* who() const noexcept { return who_; }

 private:
  // A proposer must answer every item with at least one non-empty step.
  void check(const std::vector<std::vector<step_candidate<state>>>& cands,
             std::span<const propose_item<state>> items) const {
    const std::string at = std::string("itscale: ") + who_ + ": ";
    if (cands.size() != items.size())
      throw search_error(at + "the proposer returned " + std::to_string(cands.size()) + " candidate lists for a batch of " +
                         std::to_string(items.size()));
    for (std::size_t i = 0; i < cands.size(); ++i) {
      if (cands[i].empty())
        throw search_error(at + "the proposer returned no step for node " + std::to_string(items[i].id) +
                           ", which is not terminal: a proposer must propose at least one step for every node it expands");
      for (const auto& c : cands[i])
        if (c.tokens.empty() || c.count == 0)
          throw search_error(at + "the proposer returned an empty step (or a count of 0) for node " +
                             std::to_string(items[i].id));
    }
  }

  node child_of(const node& parent, step_candidate<state>& c) {
    node k;
    k.state = std::move(c.state);
    k.id = next_id_++;
    k.step_scores = parent.step_scores;
    k.logprob = parent.logprob + c.logprob;
    k.count = c.count;
    k.depth = parent.depth + 1;
    k.terminal = c.terminal;
    k.stop = c.stop;
    return k;
  }

  // One verifier call for every new node: process scores for partial sequences, outcome scores
  // (complete = true) for terminal ones.
  void score(std::span<node* const> nodes) {
    if (nodes.empty()) return;
    std::vector<verify_item> items;
    items.reserve(nodes.size());
    for (node* n : nodes) {
      const std::span<const token_id> all = std::as_const(p_).tokens_of(n->state);
      items.push_back({all.first(prompt_len_), all.subspan(prompt_len_), n->terminal});
    }
    const std::vector<double> s = verify(v_, std::span<const verify_item>(items), verifier_);
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      nodes[i]->step_scores.push_back(s[i]);
      nodes[i]->score = aggregate(nodes[i]->step_scores, how_);
    }
  }

  generation to_generation(const node& n, std::size_t rank, stop_reason stop) const {
    generation g;
    g.sample = rank;
    const std::span<const token_id> all = std::as_const(p_).tokens_of(n.state);
    g.tokens.assign(all.begin() + static_cast<std::ptrdiff_t>(prompt_len_), all.end());
    g.logprob_sum = n.logprob;
    g.score = n.score;
    g.stop = stop;
    return g;
  }

  P& p_;
  V& v_;
  const step_run_options& run_;
  step_aggregation how_;
  const char* who_;
  compute_stats before_;
  compute_stats verifier_;
  stopwatch clock_;
  std::size_t prompt_len_ = 0;
  std::uint32_t next_id_ = 0;
  std::size_t rounds_ = 0, expanded_ = 0, candidates_ = 0;
};

/// Children of every parent, in parent then candidate order.
template <class Run, class Node>
std::vector<Node> expand_flat(Run& r, std::vector<Node>& parents, std::span<const std::size_t> samples) {
  std::vector<Node*> ptrs;
  for (auto& p : parents) ptrs.push_back(&p);
  auto kids = r.expand(ptrs, samples);
  std::vector<Node> flat;
  for (auto& k : kids)
    for (auto& n : k) flat.push_back(std::move(n));
  return flat;
}

}  // namespace detail
ITSCALE_END_NAMESPACE
