#pragma once
/// \file compute.hpp
/// Compute accounting shared by every decoder and search: what a run spent (`compute_stats`),
/// what it may spend (`compute_budget`), and how it ended (`run_status`).
///
/// Every figure is measured, never estimated: source work is counted by `metered_source`
/// (core/metered_source.hpp), which every algorithm wraps around the caller's source, and verifier
/// work by `verifier_meter`. Methods are compared at matched measured budgets.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stop_token>
#include <string>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"

ITSCALE_BEGIN_NAMESPACE

/// What a run spent. Counts are exact; times are wall-clock seconds (`std::chrono::steady_clock`).
struct compute_stats {
  std::uint64_t prefill_calls = 0;       ///< `prefill` calls (re-prefills included)
  std::uint64_t prefill_tokens = 0;      ///< prompt tokens evaluated by those calls
  std::uint64_t extend_calls = 0;        ///< batched `extend` calls
  std::uint64_t extend_rows = 0;         ///< rows of those calls: one new token each
  std::uint64_t span_calls = 0;          ///< `extend_span` calls (teacher forcing, re-prefill from an ancestor)
  std::uint64_t span_tokens = 0;         ///< tokens evaluated by those calls
  std::uint64_t reprefills = 0;          ///< prefills that rebuilt a sequence whose handle had been given back
  std::uint64_t peak_live_handles = 0;   ///< most handles alive at once, created by this run
  std::uint64_t verifier_calls = 0;      ///< batched verifier calls
  std::uint64_t verified_sequences = 0;  ///< sequences those calls scored
  double source_seconds = 0;             ///< time inside the source's calls
  double verifier_seconds = 0;           ///< time inside the verifier's calls
  double wall_seconds = 0;               ///< the whole run, from entry to return

  /// Tokens the model evaluated after a prompt: `extend_rows + span_tokens`. This is the
  /// "generated tokens" of every comparison (one forward row per token).
  [[nodiscard]] std::uint64_t generated_tokens() const noexcept { return extend_rows + span_tokens; }
  /// Every token the model evaluated: prompts and generated tokens.
  [[nodiscard]] std::uint64_t total_tokens() const noexcept { return prefill_tokens + generated_tokens(); }
  /// Every call into the source.
  [[nodiscard]] std::uint64_t source_calls() const noexcept { return prefill_calls + extend_calls + span_calls; }

  /// Adds another run's spending (the peak is the larger of the two peaks).
  compute_stats& operator+=(const compute_stats& o) noexcept {
    prefill_calls += o.prefill_calls;
    prefill_tokens += o.prefill_tokens;
    extend_calls += o.extend_calls;
    extend_rows += o.extend_rows;
    span_calls += o.span_calls;
    span_tokens += o.span_tokens;
    reprefills += o.reprefills;
    if (o.peak_live_handles > peak_live_handles) peak_live_handles = o.peak_live_handles;
    verifier_calls += o.verifier_calls;
    verified_sequences += o.verified_sequences;
    source_seconds += o.source_seconds;
    verifier_seconds += o.verifier_seconds;
    wall_seconds += o.wall_seconds;
    return *this;
  }
};

/// How a run ended.
enum class run_status : std::uint8_t {
  completed,         ///< every sequence or search reached its own end
  budget_exhausted,  ///< a `compute_budget` limit was reached; the result holds what was found so far
  cancelled,         ///< the `stop_token` was triggered; the result holds what was found so far
};

/// Names a status for messages and tables.
[[nodiscard]] constexpr const char* to_string(run_status s) noexcept {
  switch (s) {
    case run_status::completed: return "completed";
    case run_status::budget_exhausted: return "budget_exhausted";
    case run_status::cancelled: return "cancelled";
  }
  return "?";
}

/// What a run may spend, checked between steps (a step in flight always completes, so a run can
/// overshoot a limit by one step's work). Reaching a limit is not an error: the run returns what
/// it has with `run_status::budget_exhausted`. 0 means unlimited.
struct compute_budget {
  std::uint64_t max_generated_tokens = 0;  ///< `compute_stats::generated_tokens()`
  std::uint64_t max_total_tokens = 0;      ///< prompts included
  std::uint64_t max_source_calls = 0;
  std::uint64_t max_verifier_calls = 0;
  double max_seconds = 0;                  ///< wall time; finite and >= 0
  std::stop_token stop = {};               ///< cancellation: `run_status::cancelled` once requested

  void validate() const {
    if (!(max_seconds >= 0) || max_seconds == std::numeric_limits<double>::infinity())
      throw invalid_option("itscale: compute_budget.max_seconds must be finite and >= 0, got " +
                           detail::num(max_seconds));
  }

  /// `completed` while every limit still holds, else the reason to stop.
  [[nodiscard]] run_status check(const compute_stats& s, double elapsed_seconds) const noexcept {
    if (stop.stop_requested()) return run_status::cancelled;
    const auto over = [](std::uint64_t limit, std::uint64_t used) { return limit != 0 && used >= limit; };
    if (over(max_generated_tokens, s.generated_tokens()) || over(max_total_tokens, s.total_tokens()) ||
        over(max_source_calls, s.source_calls()) || over(max_verifier_calls, s.verifier_calls) ||
        (max_seconds > 0 && elapsed_seconds >= max_seconds))
      return run_status::budget_exhausted;
    return run_status::completed;
  }
};

namespace detail {

/// What was spent between two snapshots of one meter: `after - before` for the counters and
/// times; the peak is `after`'s.
[[nodiscard]] inline compute_stats stats_since(const compute_stats& after, const compute_stats& before) noexcept {
  compute_stats d;
  d.prefill_calls = after.prefill_calls - before.prefill_calls;
  d.prefill_tokens = after.prefill_tokens - before.prefill_tokens;
  d.extend_calls = after.extend_calls - before.extend_calls;
  d.extend_rows = after.extend_rows - before.extend_rows;
  d.span_calls = after.span_calls - before.span_calls;
  d.span_tokens = after.span_tokens - before.span_tokens;
  d.reprefills = after.reprefills - before.reprefills;
  d.peak_live_handles = after.peak_live_handles;
  d.verifier_calls = after.verifier_calls - before.verifier_calls;
  d.verified_sequences = after.verified_sequences - before.verified_sequences;
  d.source_seconds = after.source_seconds - before.source_seconds;
  d.verifier_seconds = after.verifier_seconds - before.verifier_seconds;
  d.wall_seconds = after.wall_seconds - before.wall_seconds;
  return d;
}

/// Seconds since construction (steady clock).
class stopwatch {
 public:
  stopwatch() noexcept : t0_(std::chrono::steady_clock::now()) {}
  [[nodiscard]] double seconds() const noexcept {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

/// Adds the seconds from its construction to its destruction to `total`, on every path (a call
/// that throws still took its time).
class scoped_seconds {
 public:
  explicit scoped_seconds(double& total) noexcept : total_(total) {}
  scoped_seconds(const scoped_seconds&) = delete;
  scoped_seconds& operator=(const scoped_seconds&) = delete;
  ~scoped_seconds() { total_ += w_.seconds(); }

 private:
  double& total_;
  stopwatch w_;
};

}  // namespace detail

ITSCALE_END_NAMESPACE
