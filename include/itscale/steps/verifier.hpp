#pragma once
/// \file verifier.hpp
/// The `Verifier` concept: scores a batch of (prompt, sequence) pairs. It is where external tools
/// plug in — a calculator, unit tests, a regex, another model, a reward model on another server.
/// A process verifier scores partial sequences (a prefix of steps), an outcome verifier complete
/// ones; `verify_item::complete` says which the search is asking for.
///
/// Every algorithm calls a verifier through `verify(v, batch, stats)`, which meters the call into
/// the run's `compute_stats` (calls, sequences, time) and rejects unusable answers: a wrong number
/// of scores, NaN, or a score outside the verifier's declared range is a `backend_error` naming the
/// verifier. Exceptions the verifier throws pass through unchanged.

#include <cmath>
#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE

/// One pair to score.
struct verify_item {
  std::span<const token_id> prompt;
  std::span<const token_id> sequence;  ///< generated tokens after the prompt (the steps so far)
  bool complete = false;               ///< the sequence is finished (outcome) rather than a prefix (process)
};

/// The closed interval a verifier's scores lie in.
struct score_range {
  double lo = 0;
  double hi = 1;
};

/// A batch scorer. `verify(batch)` returns one finite score in `range()` per item, in order;
/// `name()` identifies it in error messages.
template <class V>
concept Verifier = requires(V& v, const V& cv, std::span<const verify_item> batch) {
  { v.verify(batch) } -> std::convertible_to<std::vector<double>>;
  { cv.range() } -> std::convertible_to<score_range>;
  { cv.name() } -> std::convertible_to<std::string_view>;
};

/// The smallest `Verifier` (every score 0). For compile-time checks of algorithms.
struct verifier_archetype {
  std::vector<double> verify(std::span<const verify_item> batch) const { return std::vector<double>(batch.size(), 0.0); }
  [[nodiscard]] score_range range() const noexcept { return {}; }
  [[nodiscard]] std::string_view name() const noexcept { return "verifier_archetype"; }
};
static_assert(Verifier<verifier_archetype>);

/// A `Verifier` from a function `f(prompt, sequence, complete) -> double`, scoring items one by one.
template <class F>
class function_verifier {
 public:
  function_verifier(std::string name, score_range range, F f) : name_(std::move(name)), range_(range), f_(std::move(f)) {
    if (!(range.lo <= range.hi) || !std::isfinite(range.lo) || !std::isfinite(range.hi))
      throw invalid_option("itscale: verifier '" + name_ + "': score range must be finite with lo <= hi");
  }
  std::vector<double> verify(std::span<const verify_item> batch) {
    std::vector<double> out;
    out.reserve(batch.size());
    for (const auto& it : batch) out.push_back(static_cast<double>(f_(it.prompt, it.sequence, it.complete)));
    return out;
  }
  [[nodiscard]] score_range range() const noexcept { return range_; }
  [[nodiscard]] std::string_view name() const noexcept { return name_; }

 private:
  std::string name_;
  score_range range_;
  F f_;
};

/// Builds a `function_verifier`.
template <class F>
[[nodiscard]] function_verifier<std::decay_t<F>> make_verifier(std::string name, score_range range, F&& f) {
  return function_verifier<std::decay_t<F>>(std::move(name), range, std::forward<F>(f));
}

/// Calls `v` on `batch` (non-empty), meters it into `stats` and checks the answer (see the file
/// comment). Returns the scores.
template <Verifier V>
std::vector<double> verify(V& v, std::span<const verify_item> batch, compute_stats& stats) {
  if (batch.empty()) return {};
  std::vector<double> scores;
  {
    const detail::scoped_seconds timing(stats.verifier_seconds);
    scores = v.verify(batch);
    ++stats.verifier_calls;
    stats.verified_sequences += batch.size();
  }
  const std::string who = "itscale: verifier '" + std::string(std::as_const(v).name()) + "'";
  if (scores.size() != batch.size())
    throw backend_error(who + " returned " + std::to_string(scores.size()) + " scores for a batch of " +
                        std::to_string(batch.size()));
  const score_range r = std::as_const(v).range();
  for (std::size_t i = 0; i < scores.size(); ++i) {
    if (std::isnan(scores[i])) throw backend_error(who + " returned NaN for item " + std::to_string(i));
    if (!(scores[i] >= r.lo && scores[i] <= r.hi))
      throw backend_error(who + " returned " + detail::num(scores[i]) + " for item " + std::to_string(i) +
                          ", outside its declared range [" + detail::num(r.lo) + ", " + detail::num(r.hi) + "]");
  }
  return scores;
}

/// How a process verifier's per-step scores become one score (search-and-learn's choices).
enum class step_aggregation : std::uint8_t { last, min, product, mean };

/// Aggregates per-step scores; 0 for none.
[[nodiscard]] inline double aggregate(std::span<const double> step_scores, step_aggregation how) noexcept {
  if (step_scores.empty()) return 0;
  double acc = how == step_aggregation::product ? 1.0 : how == step_aggregation::min ? step_scores[0] : 0.0;
  for (double s : step_scores) {
    switch (how) {
      case step_aggregation::last: acc = s; break;
      case step_aggregation::min: acc = s < acc ? s : acc; break;
      case step_aggregation::product: acc *= s; break;
      case step_aggregation::mean: acc += s; break;
    }
  }
  return how == step_aggregation::mean ? acc / static_cast<double>(step_scores.size()) : acc;
}

ITSCALE_END_NAMESPACE
