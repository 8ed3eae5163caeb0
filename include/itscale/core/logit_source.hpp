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

ITSCALE_END_UNTAGGED_NAMESPACE
