#pragma once
/// \file handle_budget.hpp
/// `handle_budget`: bounds the live handles a search holds (engines have a fixed number of
/// sequence slots, e.g. llama.cpp's `n_seq_max`). A search tells it which states it keeps for a
/// later expansion (cold: `keep`) and which it is about to expand (hot: `use`). Past the budget,
/// the least recently used cold states give their handles back (`StepProposer::drop`); `use`
/// rebuilds a dropped one (`restore`, counted in the proposer's `compute_stats::reprefills`).
///
/// A search's result does not change with the budget when the source's prefill and extend agree
/// bit for bit (a restored state's row is the prefill's): only compute and peak handles do.
///
///     itscale::handle_budget lru(proposer, 64);
///     lru.keep(child.state);              // into the frontier
///     lru.trim(in_flight);                // before a round that makes `in_flight` handles
///     lru.use(node.state);                // popped for expansion: live again
///
/// Not thread-safe; states are tracked by address, which must stay stable while tracked.

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <list>
#include <unordered_map>
#include <utility>

#include "itscale/core/abi.hpp"
#include "itscale/steps/step_proposer.hpp"

ITSCALE_BEGIN_NAMESPACE

/// See the file comment.
template <StepProposer P>
class handle_budget {
 public:
  using state = typename P::state;

  /// `max_live_handles` bounds cold live handles plus the `in_flight` count given to `trim`;
  /// 0 = unbounded (never drops). `proposer` must outlive the budget.
  handle_budget(P& proposer, std::size_t max_live_handles) noexcept : p_(proposer), max_(max_live_handles) {}
  handle_budget(const handle_budget&) = delete;
  handle_budget& operator=(const handle_budget&) = delete;

  /// `s` is kept for a later expansion: tracked as cold and most recently used (moved to the back
  /// if tracked already). A state that is not live needs no tracking. Does not drop anything:
  /// call `trim`.
  void keep(state& s) {
    if (const auto it = where_.find(&s); it != where_.end()) {
      lru_.splice(lru_.end(), lru_, it->second);
      return;
    }
    if (!std::as_const(p_).is_live(s)) return;
    lru_.push_back(&s);
    try {
      where_.emplace(&s, std::prev(lru_.end()));
    } catch (...) {
      lru_.pop_back();
      throw;
    }
  }

  /// `s` is about to be expanded: no longer cold, and live (restored if it was dropped).
  void use(state& s) {
    forget(s);
    if (!std::as_const(p_).is_live(s)) p_.restore(s);
  }

  /// Stops tracking `s` (destroyed or no longer needed); no-op if it is not tracked.
  void forget(const state& s) noexcept {
    const auto it = where_.find(&s);
    if (it == where_.end()) return;
    lru_.erase(it->second);
    where_.erase(it);
  }

  /// Drops the least recently used cold states until cold live handles + `in_flight` <= the
  /// budget (or no cold state is left). No-op when unbounded.
  void trim(std::size_t in_flight = 0) noexcept {
    if (max_ == 0) return;
    while (!lru_.empty() && lru_.size() + in_flight > max_) {
      state* s = lru_.front();
      lru_.pop_front();
      where_.erase(s);
      p_.drop(*s);
      ++drops_;
    }
  }

  /// Cold states holding a live handle.
  [[nodiscard]] std::size_t cold_live() const noexcept { return lru_.size(); }
  [[nodiscard]] std::size_t max_live_handles() const noexcept { return max_; }
  /// Handles given back so far.
  [[nodiscard]] std::uint64_t drops() const noexcept { return drops_; }

 private:
  P& p_;
  std::size_t max_;
  std::list<state*> lru_;  // front: least recently used
  std::unordered_map<const state*, typename std::list<state*>::iterator> where_;
  std::uint64_t drops_ = 0;
};

ITSCALE_END_NAMESPACE
