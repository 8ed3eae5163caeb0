#pragma once
/// \file beam_stopping.hpp
/// Internal: when one prompt's beam search is over, by HF transformers 5's rules
/// (`_check_early_stop_heuristic` and `_beam_search_has_unfinished_sequences`), apart from the
/// driver so that beam-search variants share it.

#include <cstddef>

#include "itscale/core/abi.hpp"
#include "itscale/search/beam_hypotheses.hpp"
#include "itscale/search/beam_options.hpp"
#include "itscale/search/beam_select.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

/// The score HF gives the not-yet-real copies of the prompt at the first step, and the "worst
/// finished score" of a finished set that is not full yet.
inline constexpr float beam_placeholder_score = -1.0e9f;

/// True when a prompt is done after a step whose candidates have `generated` tokens:
/// `max_new_tokens` reached; no beam left to run; `when_full` and the finished set full; or the
/// best running score (`best_running`, the first running beam's) divided by L^length_penalty
/// cannot beat the worst finished hypothesis of a full set, where L is `max_new_tokens` for
/// `never` with a positive length penalty (an exact bound, as log-probs are <= 0) and the current
/// length otherwise (HF's heuristic). Precondition: `best_running` is null only if no beam runs.
[[nodiscard]] inline bool beam_prompt_done(const beam_options& o, std::size_t generated, const float* best_running,
                                           const finished_hypotheses& finished) noexcept {
  if (generated >= o.stop.max_new_tokens || best_running == nullptr) return true;
  if (o.early_stopping == early_stopping_mode::when_full && finished.full()) return true;
  const bool to_the_end = o.early_stopping == early_stopping_mode::never && o.length_penalty > 0;
  const float best = *best_running / length_normaliser(to_the_end ? o.stop.max_new_tokens : generated, o.length_penalty);
  const float worst = finished.full() ? finished.worst().score : beam_placeholder_score;
  return !(best > worst);
}

}  // namespace detail
ITSCALE_END_NAMESPACE
