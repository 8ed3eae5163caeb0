#pragma once
/// \file sampling_options.hpp
/// Everything that configures token-level decoding (greedy or sampling), with Hugging Face's
/// option names where HF has the option. Designated initialisers, one `validate()`:
///
///     itscale::sampling_options o{.stop = {.max_new_tokens = 64, .eos_token_id = {2}}, .do_sample = true,
///                                 .seed = 7, .temperature = 0.8f, .top_k = 40, .top_p = 0.95};
///
/// Differences from HF's GenerationConfig defaults: `top_k` defaults to 0 (off; HF: 50), and
/// `top_k > vocab` is an error instead of being clamped. As in HF, the warpers (temperature,
/// top_h, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff) only act when `do_sample`.

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/core/types.hpp"
#include "itscale/processors/token_rules.hpp"

ITSCALE_BEGIN_NAMESPACE

/// The type of `sampling_options::top_p`: a double, as HF's `top_p` is a Python float. It converts
/// from a double or an integer and to a double; from a float it does not compile. `0.95f` is
/// 0.949999988..., which moves HF's cut, `1 - top_p` rounded to float32, by three float steps
/// (top_p.hpp): write `.top_p = 0.95`.
class top_p_value {
 public:
  constexpr top_p_value(double p) noexcept : p_(p) {}  // implicit: `.top_p = 0.95` reads as a number
  template <class F>
    requires std::same_as<F, float>
  top_p_value(F) = delete;  // top_p is a double: write 0.95, not 0.95f (a float moves HF's cut)
  constexpr operator double() const noexcept { return p_; }

 private:
  double p_;
};

struct sampling_options {
  stopping stop = {};                                 ///< when a sequence ends (shared by every entry point)

  // --- mode -----------------------------------------------------------------------------------
  bool do_sample = false;                             ///< false: greedy (argmax, lowest id on ties)
  std::uint64_t seed = 0;                             ///< key of the counter-based RNG
  std::size_t num_return_sequences = 1;               ///< samples per prompt; 1 when greedy
  /// Per-token outputs. Off, they cost nothing: greedy with both off is one argmax per row.
  bool output_logprobs = true;                        ///< `generation::logprobs` and `logprob_sum`
  bool output_model_logprobs = false;                 ///< `generation::model_logprobs` (raw logits; a row copy when processors change values)

  // --- logits processors (always applied, in this order) ---------------------------------------
  std::vector<std::pair<token_id, float>> logit_bias = {};  ///< additive, OpenAI semantics
  float repetition_penalty = 1.0f;                    ///< > 0; 1 = off (HF semantics)
  float presence_penalty = 0.0f;                      ///< OpenAI semantics, generated tokens only
  float frequency_penalty = 0.0f;                     ///< OpenAI semantics, generated tokens only
  std::size_t no_repeat_ngram_size = 0;               ///< 0 = off
  std::vector<std::vector<token_id>> bad_words_ids = {};  ///< banned token sequences
  allowed_tokens_fn allowed_tokens = {};              ///< grammar hook (see token_rules.hpp)

  // --- warpers (only when do_sample, in this order) -------------------------------------------
  float temperature = 1.0f;                           ///< > 0
  float top_h = 0.0f;                                 ///< [0, 1]; 0 = off
  std::size_t top_k = 0;                              ///< 0 = off; <= vocab
  top_p_value top_p = 1.0;                            ///< (0, 1]; 1 = off; a double, never a float (top_p_value)
  float min_p = 0.0f;                                 ///< [0, 1]; 0 = off
  float typical_p = 1.0f;                             ///< (0, 1]; 1 = off
  float epsilon_cutoff = 0.0f;                        ///< [0, 1); 0 = off
  float eta_cutoff = 0.0f;                            ///< [0, 1); 0 = off
  std::size_t min_tokens_to_keep = 1;                 ///< >= 1, for top_k/top_p/min_p/typical/epsilon/eta

  /// Checks every rule that does not depend on the vocabulary; throws `invalid_option` naming the
  /// option and the rule.
  void validate() const {
    auto fail = [](const std::string& what) { throw invalid_option("itscale: sampling_options." + what); };
    auto finite = [](float x) { return std::isfinite(x); };
    stop.validate("sampling_options.stop");
    for (const auto& [t, b] : logit_bias) {
      if (t < 0) fail("logit_bias token id must be >= 0, got " + std::to_string(t));
      if (std::isnan(b) || (std::isinf(b) && b > 0))
        fail("logit_bias for token " + std::to_string(t) + " must not be NaN or +inf");
    }
    for (std::size_t i = 0; i < bad_words_ids.size(); ++i) {
      if (bad_words_ids[i].empty()) fail("bad_words_ids[" + std::to_string(i) + "] is empty");
      for (token_id t : bad_words_ids[i])
        if (t < 0) fail("bad_words_ids[" + std::to_string(i) + "] has a negative token id");
    }
    if (num_return_sequences == 0) fail("num_return_sequences must be >= 1, got 0");
    if (!do_sample && num_return_sequences != 1)
      fail("num_return_sequences must be 1 for greedy decoding (do_sample = false), got " +
           std::to_string(num_return_sequences));
    if (!(repetition_penalty > 0) || !finite(repetition_penalty))
      fail("repetition_penalty must be finite and > 0, got " + detail::num(repetition_penalty));
    if (!finite(presence_penalty)) fail("presence_penalty must be finite, got " + detail::num(presence_penalty));
    if (!finite(frequency_penalty)) fail("frequency_penalty must be finite, got " + detail::num(frequency_penalty));
    if (!do_sample) return;  // the warpers below only matter when sampling
    if (!(temperature > 0) || !finite(temperature))
      fail("temperature must be finite and > 0 when do_sample, got " + detail::num(temperature));
    if (!(top_h >= 0 && top_h <= 1)) fail("top_h must be in [0, 1], got " + detail::num(top_h));
    if (!(top_p > 0 && top_p <= 1)) fail("top_p must be in (0, 1], got " + detail::num(top_p));
    if (!(min_p >= 0 && min_p <= 1)) fail("min_p must be in [0, 1], got " + detail::num(min_p));
    if (!(typical_p > 0 && typical_p <= 1)) fail("typical_p must be in (0, 1], got " + detail::num(typical_p));
    if (!(epsilon_cutoff >= 0 && epsilon_cutoff < 1))
      fail("epsilon_cutoff must be in [0, 1), got " + detail::num(epsilon_cutoff));
    if (!(eta_cutoff >= 0 && eta_cutoff < 1)) fail("eta_cutoff must be in [0, 1), got " + detail::num(eta_cutoff));
    if (min_tokens_to_keep == 0) fail("min_tokens_to_keep must be >= 1, got 0");
  }

  /// `validate()` plus the rules that need the vocabulary size: every token id < vocab,
  /// top_k <= vocab.
  void validate(std::size_t vocab) const {
    validate();
    auto fail = [](const std::string& what) { throw invalid_option("itscale: sampling_options." + what); };
    auto in_vocab = [vocab](token_id t) { return static_cast<std::size_t>(t) < vocab; };
    const std::string v = " (vocab size " + std::to_string(vocab) + ")";
    stop.validate(vocab, "sampling_options.stop");
    for (const auto& [t, b] : logit_bias)
      if (t < 0 || !in_vocab(t)) fail("logit_bias token " + std::to_string(t) + " is outside the vocabulary" + v);
    for (const auto& s : bad_words_ids)
      for (token_id t : s)
        if (t < 0 || !in_vocab(t)) fail("bad_words_ids token " + std::to_string(t) + " is outside the vocabulary" + v);
    if (do_sample && top_k > vocab)
      fail("top_k (" + std::to_string(top_k) + ") must be <= the vocabulary size " + std::to_string(vocab));
  }
};

ITSCALE_END_NAMESPACE
