#pragma once
/// \file source_proposer.hpp
/// Internal: what the proposers over a `LogitSource` share — one `metered_source` counting every
/// call into the proposer's `compute_stats`, and the node state (`prefilled` over that metered
/// source): `root`, `tokens_of`, `is_live`, `drop`, `restore`, the step-end rules.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/live.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/metered_source.hpp"
#include "itscale/core/types.hpp"
#include "itscale/steps/step_proposer.hpp"

ITSCALE_BEGIN_NAMESPACE

/// A predicate on a whole token sequence (prompt and every step): true when it is finished.
using sequence_predicate = std::function<bool(std::span<const token_id>)>;

namespace detail {

/// The stats and the metered source live on the heap so that a proposer can be moved while
/// states hold handles of its metered source.
template <LogitSource S>
struct proposer_core {
  compute_stats stats;
  metered_source<S> meter;
  explicit proposer_core(S& source) : meter(source, stats) {}
};

/// Base of `sampling_proposer` and `top_k_proposer`. A state is a `prefilled` sequence of the
/// metered source: live handle, every token so far, next-token row. States must be destroyed
/// before the proposer that made them.
template <LogitSource S>
class source_proposer_base {
 public:
  using source_type = metered_source<S>;
  using state = prefilled<source_type>;
  using candidate = step_candidate<state>;

  explicit source_proposer_base(S& source) : core_(std::make_unique<proposer_core<S>>(source)) {}

  /// Prefills `prompt` (non-empty, ids in the vocabulary): the root of a search.
  [[nodiscard]] state root(std::span<const token_id> prompt) { return itscale::prefill(core_->meter, prompt); }

  /// Every token the state holds (prompt and steps).
  [[nodiscard]] std::span<const token_id> tokens_of(const state& s) const noexcept { return s.tokens; }
  [[nodiscard]] bool is_live(const state& s) const noexcept { return static_cast<bool>(s.handle); }

  /// Gives the state's handle back and frees its row; its tokens stay, so `restore` can rebuild it.
  void drop(state& s) noexcept {
    s.handle.reset();
    std::vector<float>().swap(s.logits);
  }

  /// Rebuilds a dropped state by prefilling its tokens (counted in `stats().reprefills`); no-op
  /// for a live state. Throws `invalid_input` for a state without tokens.
  void restore(state& s) {
    if (s.handle) return;
    if (s.tokens.empty()) throw invalid_input("itscale: proposer restore: the state holds no tokens");
    state fresh = itscale::prefill(core_->meter, s.tokens);
    core_->meter.note_reprefill();
    s.handle = std::move(fresh.handle);
    s.logits = std::move(fresh.logits);
  }

  /// What the proposer spent since it was made (every source call, through one metered source).
  [[nodiscard]] compute_stats& stats() noexcept { return core_->stats; }
  [[nodiscard]] const compute_stats& stats() const noexcept { return core_->stats; }
  /// The metered source the states' handles belong to.
  [[nodiscard]] source_type& source() noexcept { return core_->meter; }

 protected:
  /// Checks a batch: nodes present, distinct ids, a per-item count >= 1, every node below the
  /// sequence limit. Restores dropped nodes.
  void prepare(std::span<const propose_item<state>> batch, std::size_t n, std::size_t max_sequence_tokens,
               const char* who) {
    std::vector<std::uint32_t> ids;
    ids.reserve(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto& it = batch[i];
      const std::string at = std::string("itscale: ") + who + ": batch item " + std::to_string(i);
      if (it.node == nullptr) throw invalid_input(at + " has no node");
      if (it.node->tokens.empty()) throw invalid_input(at + ": the node holds no tokens");
      if ((it.samples == 0 ? n : it.samples) == 0) throw invalid_input(at + " asks for 0 candidates");
      if (max_sequence_tokens != 0 && it.node->tokens.size() >= max_sequence_tokens)
        throw invalid_input(at + ": the node already holds max_sequence_tokens = " +
                            std::to_string(max_sequence_tokens) + " tokens (it is terminal)");
      ids.push_back(it.id);
    }
    std::sort(ids.begin(), ids.end());
    if (const auto d = std::adjacent_find(ids.begin(), ids.end()); d != ids.end())
      throw invalid_input(std::string("itscale: ") + who + ": two batch items share id " + std::to_string(*d) +
                          " (an id keys a node's random streams)");
    for (const auto& it : batch) restore(*it.node);
  }

  /// True when a child holding `tokens` ends the sequence by length or by the caller's predicate.
  [[nodiscard]] static bool ends(std::span<const token_id> tokens, std::size_t max_sequence_tokens,
                                 const sequence_predicate& pred) {
    return (max_sequence_tokens != 0 && tokens.size() >= max_sequence_tokens) || (pred && pred(tokens));
  }

  std::unique_ptr<proposer_core<S>> core_;
};

}  // namespace detail
ITSCALE_END_NAMESPACE
