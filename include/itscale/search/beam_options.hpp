#pragma once
/// \file beam_options.hpp
/// What configures beam search, with Hugging Face's option names. Designated initialisers, one
/// `validate()`:
///
///     itscale::beam_options o{.num_beams = 8, .length_penalty = 1.0,
///                             .early_stopping = itscale::early_stopping_mode::when_full,
///                             .num_return_sequences = 4, .stop = {.max_new_tokens = 64, .eos_token_id = {2}}};

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE

/// When a prompt's search ends before `max_new_tokens` (HF's `early_stopping`).
enum class early_stopping_mode : std::uint8_t {
  /// HF `early_stopping=False` (HF's default): stop once the best running beam, scored at its
  /// current length, cannot beat the worst of `num_beams` finished hypotheses.
  heuristic,
  /// HF `early_stopping=True`: stop as soon as `num_beams` hypotheses are finished.
  when_full,
  /// HF `early_stopping="never"`: as `heuristic`, but with a positive `length_penalty` the best
  /// running beam is scored at `max_new_tokens` (the canonical, exact stopping rule).
  never,
};

/// The most finished hypotheses a prompt may keep (round(num_beams * patience)): each is a stored
/// sequence, and an unbounded count let a huge `patience` overflow the conversion to size_t or ask
/// for an absurd allocation.
inline constexpr std::size_t max_finished_hypotheses = std::size_t{1} << 20;

/// Bound on |length_penalty| * ln(max_new_tokens): the length normaliser L^length_penalty stays
/// within e^80 ~ 5.5e34 (and above its inverse), finite in float, so scores never become ±inf, 0/0
/// or NaN through it.
inline constexpr double max_length_penalty_exponent = 80.0;

struct beam_options {
  /// K >= 1 running beams per prompt. K = 1 is beam search with one beam (an EOS candidate
  /// finishes while the best non-EOS one runs on), not greedy decoding as HF switches to.
  std::size_t num_beams = 4;
  double length_penalty = 1.0;               ///< score = logprob_sum / generated_length^length_penalty (EOS counted)
  early_stopping_mode early_stopping = early_stopping_mode::heuristic;
  std::size_t num_return_sequences = 1;      ///< hypotheses returned per prompt; in [1, num_beams]
  stopping stop = {};                        ///< length and EOS rules; stop_sequences are not supported (yet) by beam search
  std::size_t no_repeat_ngram_size = 0;      ///< 0 = off
  float repetition_penalty = 1.0f;           ///< > 0; 1 = off; applied to log-probs, as HF does in beam search
  /// Kasai et al. 2022: keep round(num_beams * patience) finished hypotheses instead of num_beams,
  /// so the stopping rules above wait for that many. 1 = HF's behaviour; > 1 searches longer and
  /// never returns a worse best hypothesis.
  double patience = 1.0;
  bool record_trace = false;                 ///< keep every step's candidates in the result (research use)

  /// How many finished hypotheses a prompt keeps: round(num_beams * patience), at least 1.
  /// Beyond `max_finished_hypotheses` (which `validate()` rejects) it reads
  /// `max_finished_hypotheses + 1`, never an out-of-range conversion.
  [[nodiscard]] std::size_t finished_capacity() const noexcept {
    const double f = std::round(static_cast<double>(num_beams) * patience);
    if (!(f <= static_cast<double>(max_finished_hypotheses))) return max_finished_hypotheses + 1;  // also NaN
    return f < 1 ? 1 : static_cast<std::size_t>(f);
  }

  /// Checks every rule that does not depend on the vocabulary; throws `invalid_option` naming the
  /// option and the rule.
  void validate() const {
    auto fail = [](const std::string& what) { throw invalid_option("itscale: beam_options." + what); };
    if (num_beams == 0) fail("num_beams must be >= 1, got 0");
    if (!std::isfinite(length_penalty)) fail("length_penalty must be finite, got " + detail::num(length_penalty));
    if (early_stopping != early_stopping_mode::heuristic && early_stopping != early_stopping_mode::when_full &&
        early_stopping != early_stopping_mode::never)
      fail("early_stopping is not one of heuristic, when_full, never");
    if (num_return_sequences == 0) fail("num_return_sequences must be >= 1, got 0");
    if (num_return_sequences > num_beams)
      fail("num_return_sequences (" + std::to_string(num_return_sequences) + ") must be <= num_beams (" +
           std::to_string(num_beams) + ")");
    stop.validate("beam_options.stop");
    if (!stop.stop_sequences.empty()) fail("stop.stop_sequences is not supported by beam search (use eos_token_id)");
    if (!(repetition_penalty > 0) || !std::isfinite(repetition_penalty))
      fail("repetition_penalty must be finite and > 0, got " + detail::num(repetition_penalty));
    if (!(patience > 0) || !std::isfinite(patience))
      fail("patience must be finite and > 0, got " + detail::num(patience));
    if (finished_capacity() > max_finished_hypotheses)
      fail("round(num_beams * patience) must be <= " + std::to_string(max_finished_hypotheses) +
           " finished hypotheses, got num_beams " + std::to_string(num_beams) + " * patience " + detail::num(patience));
    // ln of max_new_tokens >= 1 (stop.validate); lengths run from 1 to it.
    if (std::fabs(length_penalty) * std::log(static_cast<double>(stop.max_new_tokens)) > max_length_penalty_exponent)
      fail("|length_penalty| * ln(max_new_tokens) must be <= " + detail::num(max_length_penalty_exponent) +
           " (max_new_tokens^length_penalty must stay finite in float), got length_penalty " +
           detail::num(length_penalty) + " with max_new_tokens " + std::to_string(stop.max_new_tokens));
    if (num_return_sequences > finished_capacity())
      fail("num_return_sequences (" + std::to_string(num_return_sequences) +
           ") must be <= round(num_beams * patience) (" + std::to_string(finished_capacity()) + ")");
  }

  /// `validate()` plus: every EOS id is inside the vocabulary.
  void validate(std::size_t vocab) const {
    validate();
    stop.validate(vocab, "beam_options.stop");
  }
};

ITSCALE_END_NAMESPACE
