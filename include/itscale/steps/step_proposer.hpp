#pragma once
/// \file step_proposer.hpp
/// The `StepProposer` concept: what step-level searches (step beam search, DVTS, REBASE,
/// best-first, MCTS) expand nodes with. A proposer turns a batch of nodes into candidate next
/// steps — each with its tokens, log-prob, how many samples produced it, whether it ends the
/// sequence, and the child's state — in as few batched source calls as it can.
///
/// A node's `state` is the proposer's: for a proposer over a `LogitSource` it is a `prefilled`
/// sequence (live handle + tokens + next-token row), so expanding a node forks its handle and
/// nothing alive is evaluated twice; for a remote proposer it can be the token sequence alone.
/// A search bounded by a handle budget gives a cold node's handle back with `drop` and, if that
/// node is expanded again, rebuilds it with `restore` (counted as a re-prefill).
///
/// Randomness: the samples of a node are drawn from streams keyed by the node's id (see
/// `request`), so a search's tree does not depend on how its nodes are batched.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE

/// One proposed next step of a node.
template <class State>
struct step_candidate {
  std::vector<token_id> tokens;  ///< the step's tokens (its delimiter or EOS included)
  double logprob = 0;            ///< sum of the tokens' log-probs under the proposal distribution
  double model_logprob = 0;      ///< the same under the source's raw distribution (priors use it)
  std::size_t count = 1;         ///< samples that produced this step (identical steps merged)
  bool terminal = false;         ///< the sequence ends with this step (EOS, or the length limit)
  stop_reason stop = stop_reason::max_new_tokens;
  State state{};                 ///< the child after the step (not live for a terminal step)
};

/// A batch request to a proposer: which node, under which id (its random streams), how many of
/// its samples were drawn before (so new samples continue its streams), and how many to draw now.
/// The ids of one batch must be distinct.
template <class State>
struct propose_item {
  State* node = nullptr;
  std::uint32_t id = 0;
  std::uint32_t drawn = 0;
  /// Samples (or, for a top-k proposer, candidates) for this item; 0 means the call's `n`. Lets
  /// one batch expand nodes by different amounts (step beam search's uneven refill, REBASE's
  /// allocation, MCTS's widening) without one call per amount.
  std::size_t samples = 0;
};

template <class P>
concept StepProposer =
    requires(P& p, const P& cp, std::span<const token_id> tokens, typename P::state& s,
             std::span<const propose_item<typename P::state>> batch, std::size_t n) {
      typename P::state;
      /// The root node of a search from `prompt` (`tokens`).
      { p.root(tokens) } -> std::same_as<typename P::state>;
      /// Up to `n` (or the item's `samples`) distinct candidates per item (that many samples,
      /// identical ones merged), in item order.
      { p.propose(batch, n) } -> std::same_as<std::vector<std::vector<step_candidate<typename P::state>>>>;
      /// The tokens a state holds (prompt and every step so far).
      { cp.tokens_of(std::as_const(s)) } -> std::convertible_to<std::span<const token_id>>;
      /// Whether the state holds a live handle; `drop` gives it back, `restore` rebuilds it.
      { cp.is_live(std::as_const(s)) } -> std::convertible_to<bool>;
      { p.drop(s) } noexcept;
      { p.restore(s) } -> std::same_as<void>;
      /// What the proposer spent (its source's and its own calls).
      { p.stats() } -> std::same_as<compute_stats&>;
    };

/// The smallest `StepProposer` (state = the token sequence; every node gets one terminal step
/// holding token 0). For compile-time checks of searches.
struct step_proposer_archetype {
  using state = std::vector<token_id>;
  state root(std::span<const token_id> prompt) { return {prompt.begin(), prompt.end()}; }
  std::vector<std::vector<step_candidate<state>>> propose(std::span<const propose_item<state>> batch, std::size_t) {
    std::vector<std::vector<step_candidate<state>>> out(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      step_candidate<state> c{.tokens = {0}, .terminal = true, .stop = stop_reason::eos, .state = *batch[i].node};
      c.state.push_back(0);
      out[i].push_back(std::move(c));
    }
    return out;
  }
  [[nodiscard]] std::span<const token_id> tokens_of(const state& s) const noexcept { return s; }
  [[nodiscard]] bool is_live(const state&) const noexcept { return true; }
  void drop(state&) noexcept {}
  void restore(state&) {}
  compute_stats& stats() noexcept { return stats_; }

 private:
  compute_stats stats_;
};
static_assert(StepProposer<step_proposer_archetype>);

ITSCALE_END_NAMESPACE
