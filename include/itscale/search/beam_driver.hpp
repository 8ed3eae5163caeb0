#pragma once
/// \file beam_driver.hpp
/// Internal: the handle side of every beam search (plain, diverse, stochastic) — the starts (one
/// prefill per prompt, or a caller's live sequences, forked and never released), one batched
/// `extend` per step with repeated parents for forks, dead beams released at once and parents
/// right after the extend that forks them — and the compute accounting: the driver runs the
/// search on a `metered_source` around the caller's source, the one place a beam search's
/// compute is counted. The searches hold only their selection logic.

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>
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
#include "itscale/core/types.hpp"
#include "itscale/kernels/reduce.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

/// Throws `invalid_input` for no prompts, an empty prompt or a token outside the vocabulary;
/// `search` names the function in the message.
inline void check_beam_prompts(std::span<const std::span<const token_id>> prompts, std::size_t vocab,
                               const char* search) {
  if (prompts.empty()) throw invalid_input(std::string("itscale: ") + search + " needs at least one prompt");
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    if (prompts[p].empty()) throw invalid_input("itscale: prompt " + std::to_string(p) + " is empty");
    check_tokens(prompts[p], vocab, "prompt");
  }
}

/// Throws `invalid_input` for no starts, or a start that is not a usable live sequence of
/// `source` (no handle, another source's, no tokens, a row of the wrong size or with NaN / +inf).
template <LogitSource S>
void check_live_starts(S& source, std::span<const live_request<S>> starts, const char* search) {
  if (starts.empty()) throw invalid_input(std::string("itscale: ") + search + " needs at least one start");
  const std::size_t vocab = source.vocab_size();
  for (std::size_t i = 0; i < starts.size(); ++i) {
    check_prefilled(starts[i].start, i, vocab);
    if (starts[i].start->handle.source() != &source)
      throw invalid_input("itscale: live request " + std::to_string(i) + " belongs to another source");
    if (kernels::find_invalid(std::span<const float>(starts[i].start->logits)) != kernels::npos)
      throw invalid_input("itscale: live request " + std::to_string(i) + " has a NaN or +inf logit");
  }
}

/// The stop reason of a sequence cut by a limit.
[[nodiscard]] constexpr stop_reason cut_reason(run_status s) noexcept {
  return s == run_status::cancelled ? stop_reason::cancelled : stop_reason::budget;
}

/// Owns every handle a search creates (released on every path, exceptions included) and counts
/// the search's source work into `stats`. A step is: `retire` once per prompt (which of its
/// handles die now, which wait as parents), `fork` once per child, then `extend`.
template <LogitSource S>
class beam_driver {
 public:
  using handle = handle_t<S>;

  beam_driver(S& source, compute_stats& stats) : src_(source, stats), guard_(src_), vocab_(source.vocab_size()) {}

  /// One prefill per prompt (the starts' handles are the driver's); then `view()` holds prompt
  /// p's row as row p. The rows are copied because the next prefill replaces the source's view.
  void prefill(std::span<const std::span<const token_id>> prompts) {
    first_rows_.resize(prompts.size() * vocab_);
    starts_.clear();
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      guard_.reserve(1);
      const handle h = src_.prefill(prompts[p]);
      guard_.adopt(h);
      const logits_view v = src_.logits();
      check_source_rows(v, 1, vocab_, 0);
      std::copy(v.data, v.data + vocab_, first_rows_.begin() + static_cast<std::ptrdiff_t>(p * vocab_));
      starts_.push_back({prompts[p], h});
    }
    view_ = logits_view{first_rows_.data(), prompts.size(), vocab_};
  }

  /// Starts from the caller's live sequences, calling the source not at all: their handles are
  /// forked by the first extend and never released (the guard does not own them); their rows are
  /// copied, as the searches normalise rows in place. Precondition: `check_live_starts`.
  void start_live(std::span<const live_request<S>> starts) {
    first_rows_.resize(starts.size() * vocab_);
    starts_.clear();
    for (std::size_t p = 0; p < starts.size(); ++p) {
      const prefilled<S>& s = *starts[p].start;
      std::copy(s.logits.begin(), s.logits.end(), first_rows_.begin() + static_cast<std::ptrdiff_t>(p * vocab_));
      starts_.push_back({s.tokens, s.handle.get()});
    }
    view_ = logits_view{first_rows_.data(), starts.size(), vocab_};
  }

  [[nodiscard]] std::size_t starts() const noexcept { return starts_.size(); }
  /// The tokens start p holds (its prompt).
  [[nodiscard]] std::span<const token_id> start_tokens(std::size_t p) const noexcept { return starts_[p].tokens; }
  [[nodiscard]] handle start_handle(std::size_t p) const noexcept { return starts_[p].h; }
  [[nodiscard]] std::size_t vocab() const noexcept { return vocab_; }

  /// The rows of the handles created last (the starts' after `prefill` / `start_live`, the
  /// children's after `extend`, in fork order). Writable: the searches normalise them in place.
  [[nodiscard]] const logits_view& view() const noexcept { return view_; }

  /// What the search has spent so far.
  [[nodiscard]] const compute_stats& stats() noexcept { return src_.stats(); }

  /// One prompt's step is over: of the handles its beams stepped from (`stepped`, possibly
  /// repeated — the first step's beams share the start's handle), those that no next beam
  /// descends from (not in `kept`) are released now; the others must outlive the extend that forks
  /// them and are released by it. A caller's handle is never released (the guard ignores it).
  void retire(std::span<const handle> stepped, std::span<const handle> kept) {
    for (std::size_t i = 0; i < stepped.size(); ++i) {
      const handle h = stepped[i];
      const auto before = stepped.begin() + static_cast<std::ptrdiff_t>(i);
      if (std::find(stepped.begin(), before, h) != before) continue;
      if (std::find(kept.begin(), kept.end(), h) != kept.end())
        old_.push_back(h);
      else
        guard_.release(h);
    }
  }

  /// Queues the child `parent + token` for this step's `extend`; returns its row in the next view.
  std::size_t fork(handle parent, token_id token) {
    parents_.push_back(parent);
    next_.push_back(token);
    return parents_.size() - 1;
  }

  /// True if children are queued for the next `extend`.
  [[nodiscard]] bool queued() const noexcept { return !parents_.empty(); }

  /// Creates the queued children in one batched extend (none: no call), reports each as
  /// `on_child(row, handle)` in fork order, then releases the retired parents. `step` is the step
  /// that queued them (error messages count the prefill as step 0).
  template <class F>
  void extend(std::size_t step, F&& on_child) {
    if (!parents_.empty()) {
      children_.assign(parents_.size(), handle{});
      guard_.reserve(children_.size());
      src_.extend(parents_, next_, children_);
      for (handle c : children_) guard_.adopt(c);
      view_ = src_.logits();
      check_source_rows(view_, children_.size(), vocab_, step + 1);
      for (std::size_t i = 0; i < children_.size(); ++i) on_child(i, children_[i]);
    }
    for (handle h : old_) guard_.release(h);
    parents_.clear();
    next_.clear();
    old_.clear();
  }

 private:
  struct start {
    std::span<const token_id> tokens;
    handle h;
  };

  metered_source<S> src_;
  handle_guard<metered_source<S>> guard_;
  std::size_t vocab_;
  std::vector<start> starts_;
  std::vector<float> first_rows_;
  logits_view view_{};
  std::vector<handle> parents_, children_, old_;
  std::vector<token_id> next_;
};

/// Validates the budget, meters and runs one search of the beam family: `start(driver)` sets
/// up the starts (prefill or live), `search(driver, clock)` runs it and fills `out` (whose
/// `compute` the driver counts into); the wall time covers everything up to the return, handle
/// releases included. Every handle the driver created is released before this returns.
template <class Result, LogitSource S, class Start, class Search>
[[nodiscard]] Result run_beam_family(S& source, const compute_budget& budget, Start&& start, Search&& search) {
  const stopwatch clock;
  budget.validate();
  Result out;
  {
    beam_driver<S> driver(source, out.compute);
    start(driver);
    search(driver, clock, out);
  }
  out.compute.wall_seconds = clock.seconds();
  return out;
}

}  // namespace detail
ITSCALE_END_NAMESPACE
