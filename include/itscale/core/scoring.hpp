#pragma once
/// \file scoring.hpp
/// Teacher forcing on any `LogitSource`: `extend_span` (one new sequence = a parent followed by a
/// span of tokens, with the next-token row after every prefix of the span) and `sequence_logprobs`
/// (the log-probability of each forced token), the building blocks of rerankers and verifiers.
///
/// Both use the source's own `extend_span` when it models `ScoringLogitSource` (one batched pass
/// in a transformer), and otherwise extend one token at a time, releasing each intermediate handle
/// as soon as its child exists (and on every exception), so at most two handles of the call are
/// live at once and none is left behind.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/detail/source_rows.hpp"
#include "itscale/core/detail/validate_tokens.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/live.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/reduce.hpp"

ITSCALE_BEGIN_NAMESPACE

/// What `extend_span` returns: the new sequence and a copy of its rows (so they outlive the
/// source's next call).
template <LogitSource S>
struct span_extension {
  /// The sequence `parent + tokens`. The caller owns it: release it exactly once.
  handle_t<S> handle{};
  /// `[tokens.size() x vocab]`, row-major; row `i` = the next-token logits after
  /// `parent + tokens[0..i]` (the last row is `handle`'s own next-token row).
  std::vector<float> rows;
  std::size_t vocab = 0;

  /// Number of rows (`tokens.size()`).
  [[nodiscard]] std::size_t size() const noexcept { return vocab == 0 ? 0 : rows.size() / vocab; }
  /// Row `i` (precondition: `i < size()`).
  [[nodiscard]] std::span<const float> row(std::size_t i) const noexcept {
    return {rows.data() + i * vocab, vocab};
  }
};

namespace detail {

/// Teacher-forces `tokens` (non-empty, already checked against the vocabulary) after `parent`:
/// calls `on_row(i, row)` (noexcept) with the next-token row after `parent + tokens[0..i]`, in
/// order, and returns the new sequence's handle (owned by the caller). Rows are checked at the API
/// boundary (`backend_error` for NaN / +inf or a view of the wrong shape). On an exception no new
/// handle is live.
template <LogitSource S, class OnRow>
handle_t<S> teacher_force(S& s, handle_t<S> parent, std::span<const token_id> tokens, OnRow&& on_row) {
  using handle = handle_t<S>;
  const std::size_t vocab = s.vocab_size(), n = tokens.size();
  owned_handle<S> owned;  // the intermediate (or final) handle while anything can still throw
  if constexpr (ScoringLogitSource<S>) {
    owned = owned_handle<S>(s, s.extend_span(parent, tokens));
    const logits_view v = s.logits();
    check_source_rows(v, n, vocab, 0);
    for (std::size_t i = 0; i < n; ++i) on_row(i, std::span<const float>(v.row(i)));
  } else {
    handle cur = parent;
    for (std::size_t i = 0; i < n; ++i) {
      handle child{};
      s.extend(std::span<const handle>(&cur, 1), tokens.subspan(i, 1), std::span<handle>(&child, 1));
      owned = owned_handle<S>(s, child);  // releases the previous intermediate (never `parent`)
      cur = child;
      const logits_view v = s.logits();
      check_source_rows(v, 1, vocab, i);
      on_row(i, std::span<const float>(v.row(0)));
    }
  }
  return owned.release();
}

/// log-softmax of `row` at `t`: `row[t] - logsumexp(row)` in double, `-inf` for a masked token.
inline float forced_logprob(std::span<const float> row, token_id t) noexcept {
  const float x = row[static_cast<std::size_t>(t)];
  if (x == masked_logit) return masked_logit;
  return static_cast<float>(static_cast<double>(x) - static_cast<double>(kernels::logsumexp(row)));
}

inline void check_span(std::span<const token_id> tokens, std::size_t vocab, const char* fn) {
  if (tokens.empty()) throw invalid_input(std::string("itscale: ") + fn + " needs at least one token");
  check_tokens(tokens, vocab, "tokens");
}

}  // namespace detail

/// Creates the sequence `parent + tokens` and returns it with the next-token row after every
/// prefix of `tokens` (see `span_extension`). Uses `s.extend_span` when `S` models
/// `ScoringLogitSource`, else `tokens.size()` single-token `extend` calls.
///
/// Preconditions, checked: `tokens` non-empty with ids in `[0, vocab)` (`invalid_input`, before
/// any call to the source); `parent` live (the source's own error). `backend_error` when the source
/// returns NaN or +inf logits or a view of the wrong shape. All-or-nothing: on any exception no
/// new handle is live and `parent` is unchanged. `s.logits()` afterwards is unspecified (the
/// rows are in the result).
template <LogitSource S>
[[nodiscard]] span_extension<S> extend_span(S& s, handle_t<S> parent, std::span<const token_id> tokens) {
  const std::size_t vocab = s.vocab_size();
  detail::check_span(tokens, vocab, "extend_span");
  span_extension<S> out;
  out.vocab = vocab;
  out.rows.resize(tokens.size() * vocab);  // before the source is called: nothing to undo if it throws
  out.handle = detail::teacher_force(s, parent, tokens, [&](std::size_t i, std::span<const float> row) noexcept {
    std::copy(row.begin(), row.end(), out.rows.begin() + static_cast<std::ptrdiff_t>(i * vocab));
  });
  return out;
}

/// The log-probability of each token of `tokens` forced after `parent`: element `i` is
/// `log_softmax(row)[tokens[i]]` of the next-token row after `parent + tokens[0..i)`, where the
/// row for `i = 0` is `parent_row` (the next-token logits after `parent`, e.g. from its `prefill`
/// or the `extend` that made it; pass it unprocessed for the model's own probabilities). Sum the
/// elements (in double) for the sequence's log-probability. A masked (`-inf`) forced token gives
/// `-inf`.
///
/// Calls the source on `tokens` minus the last one (whose row is not needed), through
/// `extend_span` as above, and releases what it created: no handle changes hands, `parent` stays
/// valid, and a one-token span makes no source call. So the source's context must hold
/// `parent + tokens.size() - 1` tokens.
///
/// Preconditions, checked (`invalid_input`): `tokens` non-empty with ids in `[0, vocab)`;
/// `parent_row` of `vocab` entries, none NaN or +inf. `backend_error` for NaN / +inf logits from the
/// source. Each element is within ~1e-6 of the float64 log-softmax of the rows (see
/// `kernels::logsumexp`).
template <LogitSource S>
[[nodiscard]] std::vector<float> sequence_logprobs(S& s, handle_t<S> parent, std::span<const float> parent_row,
                                                   std::span<const token_id> tokens) {
  const std::size_t vocab = s.vocab_size();
  detail::check_span(tokens, vocab, "sequence_logprobs");
  if (parent_row.size() != vocab)
    throw invalid_input("itscale: sequence_logprobs: parent_row has " + std::to_string(parent_row.size()) +
                        " entries, expected vocab = " + std::to_string(vocab));
  if (const std::size_t bad = kernels::find_invalid(parent_row); bad != kernels::npos)
    throw invalid_input("itscale: sequence_logprobs: parent_row[" + std::to_string(bad) + "] is " +
                        (std::isnan(parent_row[bad]) ? "NaN" : "+inf"));
  const std::size_t n = tokens.size();
  std::vector<float> out(n);
  out[0] = detail::forced_logprob(parent_row, tokens[0]);
  if (n > 1) {
    const handle_t<S> h = detail::teacher_force(
        s, parent, tokens.first(n - 1),
        [&](std::size_t i, std::span<const float> row) noexcept { out[i + 1] = detail::forced_logprob(row, tokens[i + 1]); });
    s.release(h);
  }
  return out;
}

ITSCALE_END_NAMESPACE
