#pragma once
/// \file processor.hpp
/// What a logits processor is. A processor rewrites one row of next-token logits in place, given
/// the sequence so far; masking a token means setting it to `masked_logit` (-inf).
///
/// Two forms:
/// - stateless: `p.apply(row, ctx)`; everything it needs is in `ctx.tokens` (the whole sequence,
///   prompt then generated tokens). All built-in processors are of this form: the history is
///   their state, and it forks with the sequence for free.
/// - stateful (`StatefulLogitsProcessor`): also `state_type`, `p.start(prompt) -> state_type`,
///   `p.advance(state, token)` after each chosen token, and `p.apply(row, ctx, state)`. The
///   decoders keep one state per sequence and copy it when the sequence forks (several samples
///   from one prompt, a beam extended by several tokens) — a grammar matcher is the typical user.
///
/// Tie rule shared by every ranking processor: among exactly equal logits, the lower token id
/// ranks higher (it is kept first and masked last).

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Scratch memory for processors, sized once per vocabulary so that applying a chain does not
/// allocate in steady state.
struct workspace {
  std::vector<float> values;       ///< one row of floats
  std::vector<float> values2;      ///< a second row of floats
  std::vector<token_id> ids;       ///< one row of token ids
  std::vector<std::uint32_t> bits; ///< one bit per token (allowed-token masks)
  std::vector<token_id> live;      ///< the unmasked tokens of the row, between filters (live_set)

  /// Makes every buffer large enough for rows of `vocab` entries.
  void reserve(std::size_t vocab) {
    if (values.size() < vocab) values.resize(vocab);
    if (values2.size() < vocab) values2.resize(vocab);
    if (ids.size() < vocab) ids.resize(vocab);
    if (bits.size() < (vocab + 31) / 32) bits.resize((vocab + 31) / 32);
    if (live.size() < vocab) live.resize(vocab);
  }
};

namespace detail {
inline void clear_bit(std::span<std::uint32_t> bits, token_id t) noexcept {
  const auto i = static_cast<std::size_t>(t);
  bits[i / 32] &= ~(std::uint32_t{1} << (i % 32));
}
/// Sets bit t and returns its previous value.
inline bool test_and_set_bit(std::span<std::uint32_t> bits, token_id t) noexcept {
  const auto i = static_cast<std::size_t>(t);
  const std::uint32_t m = std::uint32_t{1} << (i % 32);
  const bool was = (bits[i / 32] & m) != 0;
  bits[i / 32] |= m;
  return was;
}
[[nodiscard]] inline bool test_bit(std::span<const std::uint32_t> bits, std::size_t i) noexcept {
  return (bits[i / 32] >> (i % 32)) & 1u;
}
}  // namespace detail

/// What a processor may look at besides the row.
struct step_context {
  std::span<const token_id> tokens;  ///< prompt followed by the tokens generated so far
  std::size_t prompt_length = 0;     ///< how many of `tokens` are the prompt
  workspace* ws = nullptr;           ///< scratch, reserved for the row's vocabulary

  /// Number of tokens generated so far.
  [[nodiscard]] std::size_t generated() const noexcept { return tokens.size() - prompt_length; }
};

/// A stateless logits processor (see the file comment).
template <class P>
concept LogitsProcessor = requires(const P& p, std::span<float> row, const step_context& ctx) {
  p.apply(row, ctx);
};

/// A logits processor with per-sequence state (see the file comment).
template <class P>
concept StatefulLogitsProcessor =
    std::copyable<typename P::state_type> &&
    requires(const P& p, std::span<float> row, const step_context& ctx,
             typename P::state_type& st, std::span<const token_id> prompt, token_id t) {
      { p.start(prompt) } -> std::same_as<typename P::state_type>;
      p.advance(st, t);
      p.apply(row, ctx, std::as_const(st));
    };

/// Either form.
template <class P>
concept AnyLogitsProcessor = LogitsProcessor<P> || StatefulLogitsProcessor<P>;

/// The smallest stateless processor (it changes nothing).
struct logits_processor_archetype {
  void apply(std::span<float>, const step_context&) const noexcept {}
};
static_assert(LogitsProcessor<logits_processor_archetype>);

/// The smallest stateful processor (its state is empty; it changes nothing).
struct stateful_logits_processor_archetype {
  struct state_type {};
  [[nodiscard]] state_type start(std::span<const token_id>) const noexcept { return {}; }
  void advance(state_type&, token_id) const noexcept {}
  void apply(std::span<float>, const step_context&, const state_type&) const noexcept {}
};
static_assert(StatefulLogitsProcessor<stateful_logits_processor_archetype>);

ITSCALE_END_NAMESPACE
