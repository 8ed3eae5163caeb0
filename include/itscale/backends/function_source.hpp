#pragma once
/// \file function_source.hpp
/// Adapts a stateless function `prefix -> next-token logits` into a `LogitSource`: the state of a
/// sequence is its prefix. One line to plug in a callback, a test model or a remote scorer:
///
///     auto src = itscale::from_function(vocab, [](std::span<const itscale::token_id> prefix,
///                                                 std::span<float> row) { ... fill row ... });
///
/// The function may instead return a contiguous range of floats (`std::vector<float>`, ...) of
/// exactly `vocab` entries. Each call recomputes from the whole prefix, so this adapter is for
/// integration and tests; real engines implement the concept directly with a KV cache.

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/backends/support/slot_pool.hpp"
#include "itscale/core/detail/validate_tokens.hpp"

ITSCALE_BEGIN_NAMESPACE

/// A `ScoringLogitSource` over a function of the prefix. See the file comment.
template <class F>
class function_source {
 public:
  using handle = std::uint32_t;

  /// Precondition checked: `vocab >= 1`.
  function_source(std::size_t vocab, F f) : vocab_(vocab), f_(std::move(f)) {
    if (vocab == 0) throw invalid_input("itscale: function_source needs vocab >= 1");
  }

  [[nodiscard]] std::size_t vocab_size() const noexcept { return vocab_; }

  handle prefill(std::span<const token_id> prompt) {
    if (prompt.empty()) throw invalid_input("itscale: prefill needs a non-empty prompt");
    detail::check_tokens(prompt, vocab_, "prompt");
    std::vector<token_id> prefix(prompt.begin(), prompt.end());
    buffer_.resize(vocab_);
    rows_ = 0;
    evaluate(prefix, std::span<float>(buffer_.data(), vocab_));
    const handle h = pool_.acquire(std::move(prefix));
    rows_ = 1;
    return h;
  }

  void extend(std::span<const handle> parents, std::span<const token_id> tokens,
              std::span<handle> children) {
    detail::check_extend_shape(parents.size(), tokens.size(), children.size());
    detail::check_tokens(tokens, vocab_, "tokens");
    const std::size_t n = parents.size();
    std::vector<std::vector<token_id>> prefixes(n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto& p = pool_.at(parents[i]);
      prefixes[i].reserve(p.size() + 1);
      prefixes[i].assign(p.begin(), p.end());
      prefixes[i].push_back(tokens[i]);
    }
    buffer_.resize(n * vocab_);
    rows_ = 0;
    for (std::size_t i = 0; i < n; ++i)
      evaluate(prefixes[i], std::span<float>(buffer_.data() + i * vocab_, vocab_));
    // Everything that can throw has run; acquiring after reserve cannot fail half-way.
    pool_.reserve_more(n);
    for (std::size_t i = 0; i < n; ++i) children[i] = pool_.acquire(std::move(prefixes[i]));
    rows_ = n;
  }

  /// Teacher forcing (`ScoringLogitSource`): one new sequence = `parent + tokens` (non-empty, ids in
  /// the vocabulary, else `invalid_input`); the function is called once per prefix
  /// `parent + tokens[0..i]`, and `logits()` shows those rows. All-or-nothing.
  handle extend_span(handle parent, std::span<const token_id> tokens) {
    if (tokens.empty()) throw invalid_input("itscale: extend_span needs at least one token");
    detail::check_tokens(tokens, vocab_, "tokens");
    const auto& p = pool_.at(parent);
    std::vector<token_id> prefix;
    prefix.reserve(p.size() + tokens.size());
    prefix.assign(p.begin(), p.end());
    const std::size_t n = tokens.size();
    buffer_.resize(n * vocab_);
    rows_ = 0;
    for (std::size_t i = 0; i < n; ++i) {
      prefix.push_back(tokens[i]);
      evaluate(prefix, std::span<float>(buffer_.data() + i * vocab_, vocab_));
    }
    pool_.reserve_more(1);
    const handle h = pool_.acquire(std::move(prefix));
    rows_ = n;
    return h;
  }

  [[nodiscard]] logits_view logits() noexcept { return {buffer_.data(), rows_, vocab_}; }

  void release(handle h) noexcept { pool_.release(h); }

  /// The prefix held by a live handle.
  [[nodiscard]] std::span<const token_id> prefix(handle h) const { return pool_.at(h); }

  /// Number of live handles.
  [[nodiscard]] std::size_t live_handles() const noexcept { return pool_.live(); }

 private:
  void evaluate(std::span<const token_id> prefix, std::span<float> row) {
    if constexpr (std::is_invocable_v<F&, std::span<const token_id>, std::span<float>>) {
      f_(prefix, row);
    } else {
      static_assert(std::is_invocable_v<F&, std::span<const token_id>>,
                    "function_source: F must be callable as f(prefix, row) or f(prefix) -> floats");
      const auto& out = f_(prefix);
      const std::span<const float> got(out);
      if (got.size() != vocab_)
        throw backend_error("itscale: function_source: the function returned " +
                            std::to_string(got.size()) + " logits, expected vocab = " +
                            std::to_string(vocab_));
      std::copy(got.begin(), got.end(), row.begin());
    }
  }

  std::size_t vocab_;
  F f_;
  detail::slot_pool<std::vector<token_id>> pool_;
  std::vector<float> buffer_;
  std::size_t rows_ = 0;
};

/// Builds a `function_source` (see the file comment).
template <class F>
[[nodiscard]] function_source<std::decay_t<F>> from_function(std::size_t vocab, F&& f) {
  return function_source<std::decay_t<F>>(vocab, std::forward<F>(f));
}

ITSCALE_END_NAMESPACE
