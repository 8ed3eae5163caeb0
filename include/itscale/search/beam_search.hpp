#pragma once
/// \file beam_search.hpp
/// Beam search over any `LogitSource`, with the semantics of Hugging Face transformers 5's
/// `_beam_search` (do_sample=False). Per prompt and step:
///
/// 1. each running beam's row goes through log-softmax, then the logits processors (repetition
///    penalty, no-repeat-n-gram, min-new-tokens, then the caller's processor) — on log-probs, as
///    in HF — and is added to the beam's running score (float32 with HF's roundings; SIMD, and
///    without writing the log-probs when no processor changes values: see `beam_rows.hpp`);
/// 2. the top M = max(2, 1 + number of EOS ids) * K candidates over all K beams are selected
///    (`select_beam_candidates`);
/// 3. a candidate ending in an EOS id, or reaching `max_new_tokens`, finishes; it becomes a
///    hypothesis only if it ranks among the first K, scored sum / generated_length^length_penalty
///    (EOS counted), and it is kept if it is among the best K finished so far (round(K * patience)
///    with `patience`);
/// 4. the first K unfinished candidates become the next running beams;
/// 5. the prompt is done when its finished set is full and `early_stopping` is `when_full`, when
///    the best running beam (scored at its current length, or at `max_new_tokens` for `never` with
///    a positive length penalty) cannot beat the worst finished hypothesis of a full set, or at
///    `max_new_tokens`.
///
/// As in HF, at the first step beams 1..K-1 are copies of the prompt with score -1e9, so the first
/// step's candidates come from the prompt alone (if the vocabulary holds fewer than K non-EOS
/// tokens, such placeholder descendants keep running with scores near -1e9, as in HF). Ties between
/// exactly equal scores go to the lower (beam, token) index (HF leaves them to `torch.topk`).
/// Candidates scoring -inf (masked) are dropped rather than carried as HF does; they could only
/// matter when fewer than K real hypotheses exist, and then fewer are returned.
///
/// Starts: prompts (prefilled here, one call each) or a caller's live sequences (`prefilled`,
/// `live_request`): their stored row is the first step's, no source call is made for them, and
/// their handles are forked, never released — the same search as from their tokens as a prompt.
///
/// Run options (`run_options`): the `budget` is checked between steps (after a step's selection,
/// before the extend that would evaluate its beams). Once a limit is reached, or the budget's
/// `stop_token` is triggered, every prompt still running ends there: its finished hypotheses come
/// first (best first), then its running beams fill the remaining places up to
/// `num_return_sequences` (best running score first, scored at their length, with
/// `stop_reason::budget` / `cancelled`); the result's and the prompt's `status` say so. No
/// exception; every handle is released. `on_token` and `keep_handles` are not used by beam
/// search (its beams are not final until the search ends; no handle is handed back).
///
/// Compute: `result.compute` is counted by a `metered_source` around the caller's source
/// (prefills, extends, rows, time inside the source, peak live handles) with the wall time of the
/// whole call.
///
/// Handles: all prompts' beams advance with one batched `extend` per step; a beam continued by
/// several tokens is a repeated parent (a fork); a prompt that is done leaves the batch; a beam
/// without surviving children is released before the extend, the parents right after it, so a
/// prompt holds at most 2K live handles (finished hypotheses hold none). Every handle created is
/// released on every path.
///
/// Per-step cost does not depend on the generated length (see `group_beam_search.hpp`) unless a
/// processor reads the tokens.

#include <cstddef>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/live.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/decode/generation.hpp"
#include "itscale/processors/processor.hpp"
#include "itscale/search/beam_driver.hpp"
#include "itscale/search/beam_hypotheses.hpp"
#include "itscale/search/beam_options.hpp"
#include "itscale/search/group_beam_search.hpp"

ITSCALE_BEGIN_NAMESPACE

namespace detail {

/// Runs plain beam search from the starts `start(driver)` sets up and assembles the result.
template <LogitSource S, AnyLogitsProcessor P, class Start>
[[nodiscard]] beam_search_result run_beam_search(S& source, const beam_options& opts, const P& user,
                                                 const run_options& run, Start&& start) {
  return run_beam_family<beam_search_result>(source, run.budget, start, [&](beam_driver<S>& driver, const stopwatch& clock,
                                                                            beam_search_result& out) {
    auto found = group_beam_search(driver, opts, {1, opts.finished_capacity(), 0.0}, user, run.budget, clock);
    out.prompts.reserve(found.size());
    for (std::size_t p = 0; p < found.size(); ++p) {
      group_search_outcome& f = found[p];
      if (f.finished[0].empty() && f.unfinished[0].empty())
        throw search_error("itscale: every continuation of prompt " + std::to_string(p) + " was masked");
      beam_prompt_result pr;
      pr.first = out.sequences.size();
      pr.steps = f.steps;
      pr.status = f.status;
      pr.trace = std::move(f.trace);
      for (auto* from : {&f.finished[0], &f.unfinished[0]})
        for (generation& g : *from) {
          if (pr.count == opts.num_return_sequences) break;
          g.request = p;
          g.sample = pr.count++;
          out.sequences.push_back(std::move(g));
        }
      if (f.status != run_status::completed) out.status = f.status;
      out.prompts.push_back(std::move(pr));
    }
  });
}

}  // namespace detail

/// Beam search for every prompt, applying `user` (a processor of either form) to each row after
/// the built-in processors, under `run.budget`. Returns every prompt's hypotheses (best first,
/// `num_return_sequences` each — fewer only if masking left fewer), per-prompt facts, the compute
/// spent and the run's status. Throws `invalid_option` / `invalid_input` for bad options, budget or
/// prompts (before touching the source), `backend_error` for unusable logits, `search_error` when
/// the source masks a whole row or every continuation of a prompt is masked; exceptions of the
/// source and the processor propagate. Every handle created is released on every path.
/// Precondition: the source is not used by anything else meanwhile.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] beam_search_result beam_search(S& source, std::span<const std::span<const token_id>> prompts,
                                             const beam_options& opts, const P& user, const run_options& run = {}) {
  opts.validate(source.vocab_size());
  detail::check_beam_prompts(prompts, source.vocab_size(), "beam_search");
  return detail::run_beam_search(source, opts, user, run, [&](detail::beam_driver<S>& d) { d.prefill(prompts); });
}

/// Beam search from the caller's live sequences (each `prefilled` is forked, never released; its
/// stored row is the first step's). `stream` / `first_sample` of the requests are not used (beam
/// search draws no randomness). Otherwise as the prompt overload; the result equals searching
/// each start's tokens as a prompt, without their prefill.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] beam_search_result beam_search(S& source, std::type_identity_t<std::span<const live_request<S>>> starts,
                                             const beam_options& opts, const P& user, const run_options& run = {}) {
  opts.validate(source.vocab_size());
  detail::check_live_starts(source, starts, "beam_search");
  return detail::run_beam_search(source, opts, user, run, [&](detail::beam_driver<S>& d) { d.start_live(starts); });
}

/// Several prompts given as vectors (each result equals searching that prompt alone).
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] beam_search_result beam_search(S& source, const std::vector<std::vector<token_id>>& prompts,
                                             const beam_options& opts, const P& user, const run_options& run = {}) {
  const std::vector<std::span<const token_id>> spans(prompts.begin(), prompts.end());
  return beam_search(source, std::span<const std::span<const token_id>>(spans), opts, user, run);
}

/// One prompt.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] beam_search_result beam_search(S& source, std::span<const token_id> prompt, const beam_options& opts,
                                             const P& user, const run_options& run = {}) {
  return beam_search(source, std::span<const std::span<const token_id>>(&prompt, 1), opts, user, run);
}

/// One live sequence.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] beam_search_result beam_search(S& source, const prefilled<S>& start, const beam_options& opts,
                                             const P& user, const run_options& run = {}) {
  const live_request<S> r{&start};
  return beam_search(source, std::span<const live_request<S>>(&r, 1), opts, user, run);
}

/// The overloads above with the built-in processors only.
template <LogitSource S>
[[nodiscard]] beam_search_result beam_search(S& source, std::span<const std::span<const token_id>> prompts,
                                             const beam_options& opts, const run_options& run = {}) {
  return beam_search(source, prompts, opts, logits_processor_archetype{}, run);
}
template <LogitSource S>
[[nodiscard]] beam_search_result beam_search(S& source, std::type_identity_t<std::span<const live_request<S>>> starts,
                                             const beam_options& opts, const run_options& run = {}) {
  return beam_search(source, starts, opts, logits_processor_archetype{}, run);
}
template <LogitSource S>
[[nodiscard]] beam_search_result beam_search(S& source, const std::vector<std::vector<token_id>>& prompts,
                                             const beam_options& opts, const run_options& run = {}) {
  return beam_search(source, prompts, opts, logits_processor_archetype{}, run);
}
template <LogitSource S>
[[nodiscard]] beam_search_result beam_search(S& source, std::span<const token_id> prompt, const beam_options& opts,
                                             const run_options& run = {}) {
  return beam_search(source, prompt, opts, logits_processor_archetype{}, run);
}
template <LogitSource S>
[[nodiscard]] beam_search_result beam_search(S& source, const prefilled<S>& start, const beam_options& opts,
                                             const run_options& run = {}) {
  return beam_search(source, start, opts, logits_processor_archetype{}, run);
}

ITSCALE_END_NAMESPACE
