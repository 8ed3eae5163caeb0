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
/// Handles: all prompts' beams advance with one batched `extend` per step; a beam continued by
/// several tokens is a repeated parent (a fork); a prompt that is done leaves the batch; a beam
/// without surviving children is released before the extend, the parents right after it, so a
/// prompt holds at most 2K live handles (finished hypotheses hold none). Every handle is released
/// on every path.

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/processors/processor.hpp"
#include "itscale/search/beam_driver.hpp"
#include "itscale/search/beam_hypotheses.hpp"
#include "itscale/search/beam_options.hpp"
#include "itscale/search/group_beam_search.hpp"

namespace itscale {
inline namespace v0 {

/// Beam search for every prompt, applying `user` (a processor of either form) to each row after
/// the built-in processors. Returns one result per prompt, in order. Throws `invalid_option` /
/// `invalid_input` for bad options or prompts (before touching the source), `backend_error` for
/// unusable logits, `search_error` when the source masks a whole row or every continuation of a
/// prompt is masked; exceptions of the source and the processor propagate. Every handle created is
/// released on every path. Precondition: the source is not used by anything else meanwhile.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] std::vector<beam_search_result> beam_search(S& source, std::span<const std::span<const token_id>> prompts,
                                                          const beam_options& opts, const P& user) {
  const std::size_t vocab = source.vocab_size();
  opts.validate(vocab);
  detail::check_beam_prompts(prompts, vocab, "beam_search");
  auto found = detail::group_beam_search(source, prompts, opts, {1, opts.finished_capacity(), 0.0}, user);
  std::vector<beam_search_result> out;
  out.reserve(found.size());
  for (std::size_t p = 0; p < found.size(); ++p) {
    detail::finished_hypotheses& finished = found[p].groups.front();
    if (finished.size() == 0)
      throw search_error("itscale: every continuation of prompt " + std::to_string(p) + " was masked");
    out.push_back({finished.take_best(opts.num_return_sequences), found[p].steps, std::move(found[p].trace)});
  }
  return out;
}

/// `beam_search` with the built-in processors only.
template <LogitSource S>
[[nodiscard]] std::vector<beam_search_result> beam_search(S& source, std::span<const std::span<const token_id>> prompts,
                                                          const beam_options& opts) {
  return beam_search(source, prompts, opts, logits_processor_archetype{});
}

/// Several prompts searched together (each result equals searching that prompt alone).
template <LogitSource S>
[[nodiscard]] std::vector<beam_search_result> beam_search(S& source, const std::vector<std::vector<token_id>>& prompts,
                                                          const beam_options& opts) {
  std::vector<std::span<const token_id>> spans(prompts.begin(), prompts.end());
  return beam_search(source, std::span<const std::span<const token_id>>(spans), opts);
}

/// One prompt.
template <LogitSource S>
[[nodiscard]] beam_search_result beam_search(S& source, std::span<const token_id> prompt, const beam_options& opts) {
  auto r = beam_search(source, std::span<const std::span<const token_id>>(&prompt, 1), opts);
  return std::move(r.front());
}

}  // namespace v0
}  // namespace itscale
