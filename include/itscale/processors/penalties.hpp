#pragma once
/// \file penalties.hpp
/// Penalties on tokens already seen.
/// - `repetition_penalty` (HF `RepetitionPenaltyLogitsProcessor`, Keskar et al. 2019): every token
///   present anywhere in the sequence (prompt included) has its logit divided by the penalty if
///   positive, multiplied if negative — once, however often it occurs.
/// - `presence_frequency_penalty` (OpenAI semantics): over the generated tokens only,
///   logit -= frequency_penalty * count + presence_penalty * (count > 0).

#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/processors/processor.hpp"

ITSCALE_BEGIN_NAMESPACE

class repetition_penalty {
 public:
  /// Throws `invalid_option` unless the penalty is finite and > 0 (1 = no penalty).
  explicit repetition_penalty(float penalty) : penalty_(penalty) {
    if (!(penalty > 0) || !std::isfinite(penalty))
      throw invalid_option("itscale: repetition_penalty must be finite and > 0, got " + detail::num(penalty));
  }

  void apply(std::span<float> row, const step_context& ctx) const noexcept {
    // Each distinct token is penalised once: a per-token "done" bit, cleared for the tokens of
    // the sequence first, so the cost is O(length) with no vocabulary-wide pass.
    auto done = std::span(ctx.ws->bits);
    for (token_id t : ctx.tokens) detail::clear_bit(done, t);
    for (token_id t : ctx.tokens) {
      if (detail::test_and_set_bit(done, t)) continue;
      float& s = row[static_cast<std::size_t>(t)];
      s = s < 0 ? s * penalty_ : s / penalty_;
    }
  }

 private:
  float penalty_;
};

class presence_frequency_penalty {
 public:
  /// Throws `invalid_option` unless both penalties are finite (OpenAI allows [-2, 2]; any finite
  /// value is accepted here).
  presence_frequency_penalty(float presence, float frequency) : presence_(presence), frequency_(frequency) {
    if (!std::isfinite(presence))
      throw invalid_option("itscale: presence_penalty must be finite, got " + detail::num(presence));
    if (!std::isfinite(frequency))
      throw invalid_option("itscale: frequency_penalty must be finite, got " + detail::num(frequency));
  }

  void apply(std::span<float> row, const step_context& ctx) const noexcept {
    const auto generated = ctx.tokens.subspan(ctx.prompt_length);
    auto seen = std::span(ctx.ws->bits);
    for (token_id t : generated) detail::clear_bit(seen, t);
    for (token_id t : generated) {
      float& s = row[static_cast<std::size_t>(t)];
      if (!detail::test_and_set_bit(seen, t)) s -= presence_;
      s -= frequency_;
    }
  }

 private:
  float presence_;
  float frequency_;
};

ITSCALE_END_NAMESPACE
