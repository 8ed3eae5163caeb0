#pragma once
/// \file mcts_node.hpp
/// One node of a tree search over steps, as stored in the search's arena: links are indices into
/// the arena (its id is its index, assigned in creation order), never pointers, so the tree can
/// grow, be compacted on commit and be exported without fix-ups.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE

/// "No node": the parent of the root.
inline constexpr std::uint32_t no_node = 0xFFFFFFFFu;

/// A node: the step that leads to it, its place in the tree, its search statistics and the
/// proposer's state after it. Values are verifier scores mapped to [0, 1] (see `mcts_options`).
template <class State>
struct mcts_node {
  // --- place in the tree ---
  std::uint32_t parent = no_node;
  std::uint32_t key = 0;                ///< random-stream key (from the path; see selection.hpp `child_key`)
  std::uint32_t depth = 0;              ///< steps below the first root of the search (commits included)
  std::vector<std::uint32_t> children;  ///< admitted children, in admission order
  std::vector<std::uint32_t> pending;   ///< proposed but not yet admitted (progressive widening)

  // --- the step from the parent ---
  std::vector<token_id> step;  ///< its tokens (empty for the root)
  double logprob = 0;          ///< under the proposal distribution
  double model_logprob = 0;    ///< under the source's raw distribution
  std::size_t count = 0;       ///< samples that proposed it (all expansions of the parent)
  bool terminal = false;       ///< the sequence ends here (proposer said so, or the depth limit)
  bool cut = false;            ///< terminal because of `max_steps`, not because it ended
  stop_reason stop = stop_reason::max_new_tokens;

  // --- expansion state ---
  std::uint32_t drawn = 0;   ///< samples drawn from this node's streams so far
  bool proposed = false;     ///< the proposer was asked at least once
  bool exhausted = false;    ///< will never get another child (fully expanded, or no new step came)
  std::uint32_t misses = 0;  ///< expansions in a row that brought no new step

  // --- statistics ---
  double prior_raw = 0;      ///< prior from the proposer (softmax of log-probs / T, or counts)
  double prior = 0;          ///< prior used by selection (root: with Dirichlet noise)
  std::uint64_t visits = 0;  ///< completed simulations through this node (N)
  double value_sum = 0;      ///< sum of their values (W)
  double value_max = -std::numeric_limits<double>::infinity();
  std::uint32_t in_flight = 0;  ///< simulations of the current round through it (virtual loss)
  double value = std::numeric_limits<double>::quiet_NaN();  ///< its own evaluation (NaN if never evaluated)

  // --- the proposer's state after the step (may hold a live handle) ---
  State state{};

  /// Mean value W / N (0 if unvisited).
  [[nodiscard]] double mean() const noexcept { return visits > 0 ? value_sum / static_cast<double>(visits) : 0.0; }
};

ITSCALE_END_NAMESPACE
