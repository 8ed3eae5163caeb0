#pragma once
/// \file metered_source.hpp
/// The one metering mechanism: a `LogitSource` that forwards every call to another source and
/// counts it into a `compute_stats` (calls, tokens, live handles, time inside the source).
/// Every decoder and search runs on a `metered_source` around the caller's source, so their
/// compute figures come from the same place and cannot disagree on what a token costs.
///
/// Optional capabilities of the wrapped source (`extend_span`, `capacity`, `live_handles`) are
/// forwarded when it has them, so wrapping never hides a capability from an algorithm.

#include <cstddef>
#include <span>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/logit_source.hpp"

ITSCALE_BEGIN_NAMESPACE

template <LogitSource S>
class metered_source {
 public:
  using handle = handle_t<S>;
  using inner_type = S;

  /// Counts into `stats` (not owned; it must outlive the wrapper).
  metered_source(S& inner, compute_stats& stats) noexcept : inner_(inner), stats_(stats) {}

  [[nodiscard]] std::size_t vocab_size() const { return inner_.vocab_size(); }

  handle prefill(std::span<const token_id> prompt) {
    const detail::scoped_seconds t(stats_.source_seconds);
    const handle h = inner_.prefill(prompt);
    ++stats_.prefill_calls;
    stats_.prefill_tokens += prompt.size();
    created(1);
    return h;
  }

  void extend(std::span<const handle> parents, std::span<const token_id> tokens, std::span<handle> children) {
    const detail::scoped_seconds t(stats_.source_seconds);
    inner_.extend(parents, tokens, children);
    ++stats_.extend_calls;
    stats_.extend_rows += parents.size();
    created(parents.size());
  }

  handle extend_span(handle parent, std::span<const token_id> tokens)
    requires requires(S& s) { { s.extend_span(parent, tokens) } -> std::same_as<handle>; }
  {
    const detail::scoped_seconds t(stats_.source_seconds);
    const handle h = inner_.extend_span(parent, tokens);
    ++stats_.span_calls;
    stats_.span_tokens += tokens.size();
    created(1);
    return h;
  }

  [[nodiscard]] logits_view logits() { return inner_.logits(); }

  // Timed too: giving a sequence back is the backend's work (llama.cpp removes its KV cells here),
  // not the algorithm's.
  void release(handle h) noexcept {
    const detail::scoped_seconds t(stats_.source_seconds);
    inner_.release(h);
    if (live_ > 0) --live_;
  }

  [[nodiscard]] auto capacity() const noexcept
    requires requires(const S& s) { s.capacity(); }
  {
    return inner_.capacity();
  }

  [[nodiscard]] std::size_t live_handles() const noexcept
    requires requires(const S& s) { { s.live_handles() } -> std::convertible_to<std::size_t>; }
  {
    return inner_.live_handles();
  }

  /// Records that a sequence was rebuilt from its tokens after its handle was given back (the
  /// prefill itself is counted as usual).
  void note_reprefill() noexcept { ++stats_.reprefills; }

  [[nodiscard]] S& inner() noexcept { return inner_; }
  [[nodiscard]] compute_stats& stats() noexcept { return stats_; }

 private:
  void created(std::size_t n) noexcept {
    live_ += n;
    if (live_ > stats_.peak_live_handles) stats_.peak_live_handles = live_;
  }

  S& inner_;
  compute_stats& stats_;
  std::uint64_t live_ = 0;  // handles created through this wrapper and not yet released
};

ITSCALE_END_NAMESPACE
