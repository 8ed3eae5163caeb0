#pragma once
/// \file logit_source.hpp
/// The `LogitSource` concept: what a backend must offer for every algorithm in the library.
///
/// The model is llama.cpp's `seq_id` with `llama_memory_seq_cp`, or a paged KV cache with
/// copy-on-write blocks: sequences are cheap handles, and extending a handle does not consume it,
/// so passing the same parent several times to one `extend` forks it.
///
/// Lifetime and validity rules (every source must follow them; the test-suite checks the shipped
/// ones):
/// - `prefill(prompt)` creates a new sequence holding `prompt` (non-empty, ids `< vocab_size()`)
///   and returns its handle; `logits()` then shows one row: the next-token logits after `prompt`.
/// - `extend(parents, tokens, children)` creates `parents.size()` new sequences, child `i` =
///   sequence `parents[i]` followed by `tokens[i]`, and writes their handles to `children`
///   (all three spans have the same length n >= 1). Parents stay valid. `logits()` then shows
///   n rows; row `i` belongs to `children[i]`.
/// - Either call is all-or-nothing: if it throws, no new handle exists and the old ones are
///   unchanged. Sources reject token ids outside the vocabulary with `invalid_input`.
/// - `logits()` is a writable view that stays valid until the next `prefill` or `extend`; the
///   caller may overwrite the rows (processors work in place). `release` does not invalidate it.
/// - A handle stays valid until `release(h)`, which is `noexcept` and called exactly once per
///   handle. Releasing lets the source reuse memory (KV blocks); handles may be reused afterwards.
/// - A source is not thread-safe: one search drives it at a time.
///
/// Optional capabilities are refinements, detected with `if constexpr` (an algorithm works with
/// any `LogitSource` and uses a capability when the source has it):
/// - `ScoringLogitSource`: `extend_span(parent, tokens)`, teacher forcing a whole span in one call
///   (the free function `itscale::extend_span` in scoring.hpp falls back to `extend`).
/// - `SourceWithCapacity`: `capacity()`, the source's limits (`capacity_of` below answers
///   "unbounded" for a source that does not say).

#include <concepts>
#include <cstddef>
#include <span>
#include <type_traits>

#include "itscale/core/abi.hpp"
#include "itscale/core/types.hpp"

// Untagged (core/abi.hpp): a backend built in its own translation unit plugs into searches
// built with any flags.
ITSCALE_BEGIN_UNTAGGED_NAMESPACE

/// A backend that produces next-token logits for forkable sequences. See the file comment for
/// the lifetime rules.
template <class S>
concept LogitSource =
    std::regular<typename S::handle> && std::is_trivially_copyable_v<typename S::handle> &&
    requires(S& s, const S& cs, typename S::handle h, std::span<const token_id> tokens,
             std::span<const typename S::handle> parents, std::span<typename S::handle> children) {
      { cs.vocab_size() } -> std::convertible_to<std::size_t>;
      { s.prefill(tokens) } -> std::same_as<typename S::handle>;
      { s.extend(parents, tokens, children) } -> std::same_as<void>;
      { s.logits() } -> std::same_as<logits_view>;
      { s.release(h) } noexcept;
    };

/// The handle type of a source.
template <LogitSource S>
using handle_t = typename S::handle;

/// A source that scores a whole continuation in one call (teacher forcing), for rerankers,
/// verifiers and speculative checks:
///
///     handle extend_span(handle parent, std::span<const token_id> tokens);
///
/// creates ONE new sequence = `parent` followed by all of `tokens` (non-empty, ids
/// `< vocab_size()`, else `invalid_input`) and returns its handle; `logits()` then shows
/// `tokens.size()` rows, row `i` = the next-token logits after `parent + tokens[0..i]` (so the last
/// row is the new handle's own next-token row). The rules of `extend` hold: all-or-nothing (on an
/// exception no new handle exists and the old ones are unchanged), `parent` stays valid, the view
/// lasts until the next `prefill`, `extend` or `extend_span`. The rows equal those of
/// `tokens.size()` single-token extends up to the source's batch rounding (the concept suite,
/// itscale/testing/source_suite.hpp, checks it with the source's tolerance).
///
/// A transformer evaluates the span as one causal batch (a prefill that continues a fork of the
/// parent), which is what makes scoring n tokens cheaper than n extends.
template <class S>
concept ScoringLogitSource =
    LogitSource<S> && requires(S& s, typename S::handle h, std::span<const token_id> tokens) {
      { s.extend_span(h, tokens) } -> std::same_as<typename S::handle>;
    };

/// The limits of a source. 0 means unbounded (or unknown) for either field.
struct source_capacity {
  /// Sequences (handles) that can be live at once: the engine's sequence slots, as llama.cpp's
  /// `n_seq_max` (a context created with `n_seq_max = 4` serves `seq_id` 0..3). A search keeps
  /// its live handles at or under it (cold nodes give theirs back and are re-prefilled).
  std::size_t max_live_sequences = 0;
  /// Tokens one sequence may hold, prompt included: llama2.c's `seq_len` (the RoPE table's length
  /// and the KV cache's depth), llama.cpp's per-sequence context (`n_ctx / n_seq_max` with a
  /// unified cache off). A `prefill`, `extend` or `extend_span` that would make a longer sequence
  /// throws `invalid_input` (and creates nothing).
  std::size_t max_context = 0;

  friend bool operator==(const source_capacity&, const source_capacity&) = default;
};

/// A source that states its limits:
///
///     source_capacity capacity() const noexcept;
///
/// The values do not change over the source's lifetime. A source that declares a limit must honour
/// it: `max_live_sequences` handles can be live at once, and sequences of `max_context` tokens can
/// be made while longer ones are rejected with `invalid_input`.
template <class S>
concept SourceWithCapacity = LogitSource<S> && requires(const S& cs) {
  { cs.capacity() } noexcept -> std::same_as<source_capacity>;
};

/// The limits of `s`: its `capacity()` when it models `SourceWithCapacity`, else unbounded
/// (`{0, 0}`).
template <LogitSource S>
[[nodiscard]] constexpr source_capacity capacity_of(const S& s) noexcept {
  if constexpr (SourceWithCapacity<S>) return s.capacity();
  else return source_capacity{};
}

ITSCALE_END_UNTAGGED_NAMESPACE
