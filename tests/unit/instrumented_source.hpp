#pragma once
// A LogitSource wrapper for tests: counts calls and live handles, records each extend's parents,
// and can be told to throw on a chosen call or to corrupt a logit — to prove that algorithms fork
// through the concept, release every handle, and reject bad backend output.

#include <cstddef>
#include <limits>
#include <span>
#include <stdexcept>
#include <vector>

#include <itscale/search.hpp>

namespace test_support {

template <itscale::LogitSource S>
class instrumented_source {
 public:
  using handle = itscale::handle_t<S>;

  explicit instrumented_source(S inner) : inner_(std::move(inner)) {}

  [[nodiscard]] std::size_t vocab_size() const { return inner_.vocab_size(); }

  handle prefill(std::span<const itscale::token_id> prompt) {
    maybe_throw();
    const handle h = inner_.prefill(prompt);
    ++prefills;
    prefill_tokens += prompt.size();
    on_new(1);
    corrupt_if_asked();
    return h;
  }

  void extend(std::span<const handle> parents, std::span<const itscale::token_id> tokens, std::span<handle> children) {
    maybe_throw();
    inner_.extend(parents, tokens, children);
    ++extends;
    extend_rows += parents.size();
    extend_parents.emplace_back(parents.begin(), parents.end());
    on_new(children.size());
    corrupt_if_asked();
  }

  [[nodiscard]] itscale::logits_view logits() { return inner_.logits(); }

  void release(handle h) noexcept {
    inner_.release(h);
    --live;
  }

  // Knobs and counters.
  std::size_t throw_on_call = std::numeric_limits<std::size_t>::max();  ///< 0-based prefill+extend count
  float corrupt_value = 0;              ///< written to token `corrupt_token` of row 0 on call `corrupt_on_call`
  std::size_t corrupt_on_call = std::numeric_limits<std::size_t>::max();
  std::size_t corrupt_token = 0;
  std::size_t prefills = 0, extends = 0, calls = 0;
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

}  // namespace test_support
