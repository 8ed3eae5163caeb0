#pragma once
/// \file consistency_result.hpp
/// What self-consistency and adaptive consistency return: per prompt, the vote and the samples
/// behind it; for the run, the compute spent and how it ended.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/select/vote.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Why a prompt stopped drawing samples.
enum class consistency_stop : std::uint8_t {
  fixed,        ///< self-consistency: all N samples drawn
  criterion,    ///< adaptive: the stopping criterion reached its threshold
  max_samples,  ///< adaptive: `max_samples` drawn without the criterion being met
  budget,       ///< the run's budget ran out or it was cancelled (see `consistency_result::status`)
};

/// Names a stop for messages and tables.
[[nodiscard]] constexpr const char* to_string(consistency_stop s) noexcept {
  switch (s) {
    case consistency_stop::fixed: return "fixed";
    case consistency_stop::criterion: return "criterion";
    case consistency_stop::max_samples: return "max_samples";
    case consistency_stop::budget: return "budget";
  }
  return "?";
}

/// The vote of one prompt.
template <AnswerKey A>
struct prompt_vote {
  /// The vote: answer, distribution (the sample indices are positions in `samples`), confidence.
  vote_tally<A> vote;
  std::vector<generation> samples;           ///< every sample drawn, in sample order
  std::vector<std::optional<A>> answers;     ///< `answers[i]` = the extractor on `samples[i]` (none if cut by the budget)
  std::vector<double> weights;               ///< each sample's vote weight (empty for a majority vote)
  std::size_t samples_spent = 0;             ///< `samples.size()`: what this prompt cost in samples
  consistency_stop stop = consistency_stop::fixed;
  /// The criterion's value when the prompt stopped (Beta / Dirichlet probability, normalised
  /// entropy, or 1 / 0 for a unanimous / split last window); NaN for fixed self-consistency.
  double criterion = std::numeric_limits<double>::quiet_NaN();
};

/// The result of a self-consistency run: one `prompt_vote` per request, in request order.
template <AnswerKey A>
struct consistency_result {
  std::vector<prompt_vote<A>> prompts;
  compute_stats compute;                      ///< sampling and verifier work of the whole run
  run_status status = run_status::completed;

  [[nodiscard]] std::size_t size() const noexcept { return prompts.size(); }
  [[nodiscard]] const prompt_vote<A>& operator[](std::size_t i) const noexcept { return prompts[i]; }
  [[nodiscard]] prompt_vote<A>& operator[](std::size_t i) noexcept { return prompts[i]; }
  [[nodiscard]] auto begin() const noexcept { return prompts.begin(); }
  [[nodiscard]] auto end() const noexcept { return prompts.end(); }
  /// Samples drawn over every prompt.
  [[nodiscard]] std::size_t samples_spent() const noexcept {
    std::size_t n = 0;
    for (const auto& p : prompts) n += p.samples_spent;
    return n;
  }
};

ITSCALE_END_NAMESPACE
