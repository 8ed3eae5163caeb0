#pragma once
/// \file beam_driver.hpp
/// Internal: the handle side of every beam search (plain, diverse, stochastic) — one prefill per
/// prompt, one batched `extend` per step with repeated parents for forks, dead beams released at
/// once and parents right after the extend that forks them — so that the searches hold only
/// their selection logic and handle hygiene lives in one place.

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/types.hpp"
#include "itscale/core/detail/source_rows.hpp"
#include "itscale/core/detail/handle_guard.hpp"
#include "itscale/core/detail/validate_tokens.hpp"

namespace itscale {
inline namespace v0 {
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

/// Owns every handle of one search (released on every path, exceptions included). A step is:
/// `retire` once per prompt (which of its handles die now, which wait as parents), `fork` once per
/// child, then `extend`.
template <LogitSource S>
class beam_driver {
 public:
  using handle = handle_t<S>;

  beam_driver(S& source, std::size_t vocab) : source_(source), guard_(source), vocab_(vocab) {}

  /// One prefill per prompt, calling `on_prompt(p, handle)`; then `view()` holds prompt p's row as
  /// row p. The rows are copied because the next prefill replaces the source's view.
  template <class F>
  void prefill(std::span<const std::span<const token_id>> prompts, F&& on_prompt) {
    first_rows_.resize(prompts.size() * vocab_);
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      guard_.reserve(1);
      const handle h = source_.prefill(prompts[p]);
      guard_.adopt(h);
      const logits_view v = source_.logits();
      check_source_rows(v, 1, vocab_, 0);
      std::copy(v.data, v.data + vocab_, first_rows_.begin() + static_cast<std::ptrdiff_t>(p * vocab_));
      on_prompt(p, h);
    }
    view_ = logits_view{first_rows_.data(), prompts.size(), vocab_};
  }

  /// The rows of the handles created last (the prompts' after `prefill`, the children's after
  /// `extend`, in fork order). Writable: the searches normalise them in place.
  [[nodiscard]] const logits_view& view() const noexcept { return view_; }

  /// One prompt's step is over: of the handles its beams stepped from (`stepped`, possibly
  /// repeated — the first step's beams share the prompt's handle), those that no next beam
  /// descends from (not in `kept`) are released now; the others must outlive the extend that forks
  /// them and are released by it.
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

  /// Creates the queued children in one batched extend (none: no call), reports each as
  /// `on_child(row, handle)` in fork order, then releases the retired parents. `step` is the step
  /// that queued them (error messages count the prefill as step 0).
  template <class F>
  void extend(std::size_t step, F&& on_child) {
    if (!parents_.empty()) {
      children_.assign(parents_.size(), handle{});
      guard_.reserve(children_.size());
      source_.extend(parents_, next_, children_);
      for (handle c : children_) guard_.adopt(c);
      view_ = source_.logits();
      check_source_rows(view_, children_.size(), vocab_, step + 1);
      for (std::size_t i = 0; i < children_.size(); ++i) on_child(i, children_[i]);
    }
    for (handle h : old_) guard_.release(h);
    parents_.clear();
    next_.clear();
    old_.clear();
  }

 private:
  S& source_;
  handle_guard<S> guard_;
  std::size_t vocab_;
  std::vector<float> first_rows_;
  logits_view view_{};
  std::vector<handle> parents_, children_, old_;
  std::vector<token_id> next_;
};

}  // namespace detail
}  // namespace v0
}  // namespace itscale
