#pragma once
/// \file sampling_chain.hpp
/// The processor chain built at run time from `sampling_options`, in Hugging Face's order:
/// logits processors (logit_bias, repetition_penalty, presence/frequency, no_repeat_ngram,
/// bad_words_ids, min_new_tokens, allowed_tokens), then — only when `do_sample` — the warpers
/// (temperature, top_h, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff).
/// Processors whose option is at its "off" value are not built, so they cost nothing.

#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <span>
#include <string>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/kernels/dispatch.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/processors/epsilon_eta.hpp"
#include "itscale/processors/live_set.hpp"
#include "itscale/processors/min_p.hpp"
#include "itscale/processors/no_repeat_ngram.hpp"
#include "itscale/processors/penalties.hpp"
#include "itscale/processors/processor.hpp"
#include "itscale/processors/sampling_options.hpp"
#include "itscale/processors/temperature.hpp"
#include "itscale/processors/token_rules.hpp"
#include "itscale/processors/top_h.hpp"
#include "itscale/processors/top_k.hpp"
#include "itscale/processors/top_p.hpp"
#include "itscale/processors/typical.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Models `LogitsProcessor`. Custom processors run between the two stages (as HF runs a user's
/// `logits_processor` list before its warpers): see `apply_processors` / `apply_warpers`.
class sampling_chain {
 public:
  /// Validates `o` (vocabulary-independent rules) and builds the active processors.
  explicit sampling_chain(const sampling_options& o) {
    o.validate();
    if (!o.logit_bias.empty()) bias_.emplace(o.logit_bias);
    if (o.repetition_penalty != 1.0f) repetition_.emplace(o.repetition_penalty);
    if (o.presence_penalty != 0.0f || o.frequency_penalty != 0.0f)
      presence_frequency_.emplace(o.presence_penalty, o.frequency_penalty);
    if (o.no_repeat_ngram_size > 0) ngram_.emplace(o.no_repeat_ngram_size);
    if (!o.bad_words_ids.empty()) bad_words_.emplace(o.bad_words_ids);
    if (o.stop.min_new_tokens > 0) min_new_.emplace(o.stop.min_new_tokens, o.stop.eos_token_id);
    if (o.allowed_tokens) allowed_.emplace(o.allowed_tokens);
    if (!o.do_sample) return;
    const std::size_t keep = o.min_tokens_to_keep;
    if (o.temperature != 1.0f) temperature_.emplace(o.temperature);
    if (o.top_h > 0.0f) top_h_.emplace(o.top_h);
    if (o.top_k > 0) top_k_.emplace(o.top_k, keep);
    if (o.top_p < 1.0) top_p_.emplace(o.top_p, keep);
    if (o.min_p > 0.0f) min_p_.emplace(o.min_p, keep);
    if (o.typical_p < 1.0f) typical_.emplace(o.typical_p, keep);
    if (o.epsilon_cutoff > 0.0f) epsilon_.emplace(o.epsilon_cutoff, keep);
    if (o.eta_cutoff > 0.0f) eta_.emplace(o.eta_cutoff, keep);
  }

  /// True when a logits processor reads the tokens of the sequence (penalties, n-grams, banned
  /// sequences, the allowed-token hook); otherwise the decoders need not keep them contiguous.
  [[nodiscard]] bool reads_tokens() const noexcept {
    return repetition_ || presence_frequency_ || ngram_ || bad_words_ || allowed_;
  }

  /// True when any processor or warper can change a row's values (false: greedy and plain
  /// sampling at temperature 1, where the processed log-probs are the model's).
  [[nodiscard]] bool changes_values() const noexcept {
    return bias_ || repetition_ || presence_frequency_ || ngram_ || bad_words_ || min_new_ || allowed_ ||
           temperature_ || top_h_ || top_k_ || top_p_ || min_p_ || typical_ || epsilon_ || eta_;
  }

  /// True when a logits processor (not a warper) can change a row's values: a processed row must
  /// then be checked for NaN and +inf before anything ranks it (`check_processed_row`).
  [[nodiscard]] bool processors_change_values() const noexcept {
    return bias_ || repetition_ || presence_frequency_ || ngram_ || bad_words_ || min_new_ || allowed_;
  }

  /// True when a warper scales values rather than only masking them (temperature: logits / t can
  /// overflow to +inf for a tiny t), so the warped row must be checked too.
  [[nodiscard]] bool warpers_scale_values() const noexcept { return temperature_.has_value(); }

  /// The logits processors (HF's `LogitsProcessor`s).
  void apply_processors(std::span<float> row, const step_context& ctx) const {
    run(bias_, row, ctx);
    run(repetition_, row, ctx);
    run(presence_frequency_, row, ctx);
    run(ngram_, row, ctx);
    run(bad_words_, row, ctx);
    run(min_new_, row, ctx);
    run(allowed_, row, ctx);
  }

  /// The warpers (HF's sampling-only `LogitsWarper`s); empty unless `do_sample`. Each hands the
  /// next the list of tokens it left unmasked (`live_set`), so after a top-k the later filters
  /// touch only the survivors — with the same results as on the whole row. Returns that list
  /// (unknown when no warper ran), for drawing and normalising over it (kernels/sparse.hpp).
  live_set apply_warpers(std::span<float> row, const step_context& ctx) const noexcept {
    live_set live;
    if (temperature_ && top_k_ && !top_h_) {
      live = top_k_->apply_after(*temperature_, row, ctx);  // divides only the survivors
    } else {
      live = run(temperature_, row, ctx, live);
      live = run(top_h_, row, ctx, live);
      live = run(top_k_, row, ctx, live);
    }
    live = run(top_p_, row, ctx, live);
    live = run(min_p_, row, ctx, live);
    live = run(typical_, row, ctx, live);
    live = run(epsilon_, row, ctx, live);
    return run(eta_, row, ctx, live);
  }

  void apply(std::span<float> row, const step_context& ctx) const {
    apply_processors(row, ctx);
    apply_warpers(row, ctx);
  }

  /// The arch of the SIMD kernels this chain's filters run (e.g. "avx512bw", "fma3+avx2", "sse2"):
  /// `kernels::active_arch()` as this chain's code sees it. Cheap (no kernel call); a way to check
  /// which kernels a caller built with given `-march` flags actually reaches.
  [[nodiscard]] static const char* kernel_arch() noexcept { return kernels::active_arch(); }

 private:
  template <class P>
  static void run(const std::optional<P>& p, std::span<float> row, const step_context& ctx) {
    if (p) p->apply(row, ctx);
  }
  template <class P>
  static live_set run(const std::optional<P>& p, std::span<float> row, const step_context& ctx, live_set live) noexcept {
    return p ? p->apply(row, ctx, live) : live;
  }

  std::optional<logit_bias> bias_;
  std::optional<repetition_penalty> repetition_;
  std::optional<presence_frequency_penalty> presence_frequency_;
  std::optional<no_repeat_ngram> ngram_;
  std::optional<bad_words> bad_words_;
  std::optional<min_new_tokens_rule> min_new_;
  std::optional<allowed_tokens> allowed_;
  std::optional<temperature> temperature_;
  std::optional<top_h_filter> top_h_;
  std::optional<top_k_filter> top_k_;
  std::optional<top_p_filter> top_p_;
  std::optional<min_p_filter> min_p_;
  std::optional<typical_filter> typical_;
  std::optional<epsilon_filter> epsilon_;
  std::optional<eta_filter> eta_;
};

static_assert(LogitsProcessor<sampling_chain>);

namespace detail {

/// Throws `search_error` if a processed row (or, when `live.known`, its listed tokens) holds NaN
/// or +inf. The source's rows are checked at the API boundary (`backend_error`), but a processor
/// can still make one: a caller's processor writing NaN, a repetition penalty or temperature that
/// overflows a large logit to +inf. Argmax and sampling assume neither, and would return an
/// arbitrary token instead of an error. `where` names the step for the message.
inline void check_processed_row(std::span<const float> row, live_set live, const char* stage, const std::string& where) {
  std::size_t bad = kernels::npos;
  if (live.known) {
    for (token_id t : live.ids) {
      const float x = row[static_cast<std::size_t>(t)];
      if (!(x < std::numeric_limits<float>::infinity())) {  // NaN or +inf
        bad = static_cast<std::size_t>(t);
        break;
      }
    }
  } else {
    bad = kernels::find_invalid(row);
  }
  if (bad != kernels::npos)
    throw search_error("itscale: " + std::string(stage) + " made logit " + std::to_string(bad) + " " +
                       (std::isnan(row[bad]) ? "NaN" : "+inf") + " " + where +
                       " (a processed row must hold no NaN or +inf)");
}

}  // namespace detail

ITSCALE_END_NAMESPACE
