#pragma once
/// \file hash_lm.hpp
/// The deterministic "hash language model" of the conformance suite: next-token logits are a
/// pure function of (seed, whole prefix), cheap to compute and to fork (the state is one 64-bit
/// hash). Use it in your own tests: Hugging Face's outputs on it are in `shared/conformance`.
///
///     mix(x)   = splitmix64 finaliser of x + 0x9E3779B97F4A7C15
///     h        = mix(seed); for each token t: h = mix(h ^ (t + 1))
///     logit[v] = ((mix(h ^ 0x9E3779B97F4A7C15 * (v + 1)) >> 40) / 2^24) * 16 - 8
///
/// The logits are multiples of 2^-20 in [-8, 8): exact in float, so every platform agrees.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/backends/support/slot_pool.hpp"
#include "itscale/core/detail/validate_tokens.hpp"

ITSCALE_BEGIN_NAMESPACE

/// The conformance hash language model as a `ScoringLogitSource`. No limits (it does not model
/// `SourceWithCapacity`: `capacity_of` reports it unbounded).
class hash_lm {
 public:
  using handle = std::uint32_t;

  /// Precondition checked: `vocab >= 1`.
  hash_lm(std::size_t vocab, std::uint64_t seed) : vocab_(vocab), seed_(seed) {
    if (vocab == 0) throw invalid_input("itscale: hash_lm needs vocab >= 1");
  }

  static constexpr std::uint64_t mix(std::uint64_t x) noexcept {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
  }

  /// The state after `t` is appended to a prefix whose state is `h`.
  static constexpr std::uint64_t advance(std::uint64_t h, token_id t) noexcept {
    return mix(h ^ (static_cast<std::uint64_t>(t) + 1));
  }

  /// The logit of token `v` in state `h`.
  static float logit(std::uint64_t h, std::size_t v) noexcept {
    const std::uint64_t r = mix(h ^ (0x9E3779B97F4A7C15ull * (static_cast<std::uint64_t>(v) + 1)));
    return static_cast<float>(r >> 40) * 0x1.0p-20f - 8.0f;
  }

  /// The state of a whole prefix.
  [[nodiscard]] std::uint64_t state_of(std::span<const token_id> prefix) const noexcept {
    std::uint64_t h = mix(seed_);
    for (token_id t : prefix) h = advance(h, t);
    return h;
  }

  /// Writes the logits of state `h` into `row` (size `vocab_size()`).
  void fill(std::uint64_t h, std::span<float> row) const noexcept {
    for (std::size_t v = 0; v < row.size(); ++v) row[v] = logit(h, v);
  }

  [[nodiscard]] std::size_t vocab_size() const noexcept { return vocab_; }
  [[nodiscard]] std::uint64_t seed() const noexcept { return seed_; }

  handle prefill(std::span<const token_id> prompt) {
    if (prompt.empty()) throw invalid_input("itscale: prefill needs a non-empty prompt");
    detail::check_tokens(prompt, vocab_, "prompt");
    const std::uint64_t h = state_of(prompt);
    buffer_.resize(vocab_);
    fill(h, buffer_);
    rows_ = 1;
    return pool_.acquire(h);
  }

  void extend(std::span<const handle> parents, std::span<const token_id> tokens,
              std::span<handle> children) {
    detail::check_extend_shape(parents.size(), tokens.size(), children.size());
    detail::check_tokens(tokens, vocab_, "tokens");
    const std::size_t n = parents.size();
    for (handle p : parents) (void)pool_.at(p);  // throws before any change for a dead parent
    buffer_.resize(n * vocab_);
    pool_.reserve_more(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t h = advance(pool_.at(parents[i]), tokens[i]);
      fill(h, std::span<float>(buffer_.data() + i * vocab_, vocab_));
      children[i] = pool_.acquire(h);
    }
    rows_ = n;
  }

  /// Teacher forcing (`ScoringLogitSource`): one new sequence = `parent + tokens` (non-empty, ids in
  /// the vocabulary, else `invalid_input`); `logits()` shows the row after each prefix of `tokens`,
  /// bit-identical to single-token extends. All-or-nothing.
  handle extend_span(handle parent, std::span<const token_id> tokens) {
    if (tokens.empty()) throw invalid_input("itscale: extend_span needs at least one token");
    detail::check_tokens(tokens, vocab_, "tokens");
    std::uint64_t h = pool_.at(parent);  // throws before any change for a dead parent
    buffer_.resize(tokens.size() * vocab_);
    pool_.reserve_more(1);
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      h = advance(h, tokens[i]);
      fill(h, std::span<float>(buffer_.data() + i * vocab_, vocab_));
    }
    rows_ = tokens.size();
    return pool_.acquire(h);
  }

  [[nodiscard]] logits_view logits() noexcept { return {buffer_.data(), rows_, vocab_}; }

  void release(handle h) noexcept { pool_.release(h); }

  /// Number of live handles.
  [[nodiscard]] std::size_t live_handles() const noexcept { return pool_.live(); }

 private:
  std::size_t vocab_;
  std::uint64_t seed_;
  detail::slot_pool<std::uint64_t> pool_;
  std::vector<float> buffer_;
  std::size_t rows_ = 0;
};

static_assert(ScoringLogitSource<hash_lm>);

ITSCALE_END_NAMESPACE
