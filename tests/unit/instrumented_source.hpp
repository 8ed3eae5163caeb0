#pragma once
// A LogitSource wrapper for tests: counts calls and live handles, records each extend's parents,
// and can be told to throw on a chosen call or to corrupt a logit — to prove that algorithms fork
// through the concept, release every handle, and reject bad backend output.
//
// Two fault knobs: `throw_on_call` counts prefill/extend(/extend_span) only (the older tests'
// indices); `throw_on_op` counts every source call an algorithm makes — prefill, extend,
// extend_span and logits() — so the exception-safety sweep can also fail a `logits()` read that
// follows a successful extend (its new children are then owned by nobody but the algorithm).
// With `Scoring = true` the wrapper forwards `extend_span` (a ScoringLogitSource), so rerankers
// take their teacher-forcing path; off by default so the older tests keep their call counts.

#include <cstddef>
#include <limits>
#include <span>
#include <stdexcept>
#include <vector>

#include <itscale/search.hpp>

namespace test_support {

template <itscale::LogitSource S, bool Scoring = false>
class instrumented_source {
 public:
  using handle = itscale::handle_t<S>;

  explicit instrumented_source(S inner) : inner_(std::move(inner)) {}

  [[nodiscard]] std::size_t vocab_size() const { return inner_.vocab_size(); }

  handle prefill(std::span<const itscale::token_id> prompt) {
    count_op();
    maybe_throw();
    const handle h = inner_.prefill(prompt);
    ++prefills;
    prefill_tokens += prompt.size();
    on_new(1);
    corrupt_if_asked();
    return h;
  }

  void extend(std::span<const handle> parents, std::span<const itscale::token_id> tokens, std::span<handle> children) {
    count_op();
    maybe_throw();
    inner_.extend(parents, tokens, children);
    ++extends;
    extend_rows += parents.size();
    extend_parents.emplace_back(parents.begin(), parents.end());
    on_new(children.size());
    corrupt_if_asked();
  }

  handle extend_span(handle parent, std::span<const itscale::token_id> tokens)
    requires(Scoring && itscale::ScoringLogitSource<S>)
  {
    count_op();
    maybe_throw();
    const handle h = inner_.extend_span(parent, tokens);
    ++spans;
    on_new(1);
    corrupt_if_asked();
    return h;
  }

  [[nodiscard]] itscale::logits_view logits() {
    count_op();
    return inner_.logits();
  }

  void release(handle h) noexcept {
    inner_.release(h);
    --live;
  }

  // Knobs and counters.
  std::size_t throw_on_call = std::numeric_limits<std::size_t>::max();  ///< 0-based prefill+extend count
  float corrupt_value = 0;              ///< written to token `corrupt_token` of row 0 on call `corrupt_on_call`
  std::size_t corrupt_on_call = std::numeric_limits<std::size_t>::max();
  std::size_t corrupt_token = 0;
  std::size_t throw_on_op = std::numeric_limits<std::size_t>::max();  ///< 0-based count of every call
  std::size_t prefills = 0, extends = 0, spans = 0, calls = 0, ops = 0;
  std::size_t prefill_tokens = 0, extend_rows = 0;
  std::ptrdiff_t live = 0, peak_live = 0;
  std::vector<std::vector<handle>> extend_parents;

 private:
  void maybe_throw() {
    if (calls == throw_on_call) {
      ++calls;
      throw std::runtime_error("instrumented_source: injected backend failure");
    }
  }
  void count_op() {
    if (ops++ == throw_on_op) throw std::runtime_error("instrumented_source: injected backend failure");
  }
  void on_new(std::size_t n) {
    live += static_cast<std::ptrdiff_t>(n);
    peak_live = live > peak_live ? live : peak_live;
  }
  void corrupt_if_asked() {
    if (calls++ == corrupt_on_call) inner_.logits().row(0)[corrupt_token] = corrupt_value;
  }

  S inner_;
};

static_assert(itscale::LogitSource<instrumented_source<itscale::hash_lm>>);
static_assert(!itscale::ScoringLogitSource<instrumented_source<itscale::hash_lm>>);
static_assert(itscale::ScoringLogitSource<instrumented_source<itscale::hash_lm, true>>);

}  // namespace test_support
