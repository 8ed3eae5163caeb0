#pragma once
/// \file beam_search.hpp
/// Beam search over any `LogitSource`, with the semantics of Hugging Face transformers 5's
/// `_beam_search` (do_sample=False). Per prompt and step:
///
/// 1. each running beam's row goes through log-softmax, then the logits processors (repetition
///    penalty, no-repeat-n-gram, min-new-tokens, then the caller's processor) — on log-probs, as
///    in HF — and is added to the beam's running score (float, as HF);
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

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/decode/generate.hpp"
#include "itscale/decode/handle_guard.hpp"
#include "itscale/processors/processor.hpp"
#include "itscale/processors/sampling_chain.hpp"
#include "itscale/processors/sampling_options.hpp"
#include "itscale/search/beam_hypotheses.hpp"
#include "itscale/search/beam_options.hpp"
#include "itscale/search/beam_select.hpp"
#include "itscale/search/beam_stopping.hpp"
#include "itscale/sources/validate_tokens.hpp"

namespace itscale {
inline namespace v0 {

namespace detail {

/// The built-in processors of beam search, as a `sampling_chain` without warpers.
inline sampling_options beam_processor_options(const beam_options& o) {
  sampling_options s;
  s.max_new_tokens = o.max_new_tokens;
  s.min_new_tokens = o.min_new_tokens;
  s.eos_token_id = o.eos_token_id;
  s.repetition_penalty = o.repetition_penalty;
  s.no_repeat_ngram_size = o.no_repeat_ngram_size;
  s.do_sample = false;
  return s;
}

}  // namespace detail

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
  if (prompts.empty()) throw invalid_input("itscale: beam_search needs at least one prompt");
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    if (prompts[p].empty()) throw invalid_input("itscale: prompt " + std::to_string(p) + " is empty");
    detail::check_tokens(prompts[p], vocab, "prompt");
  }
  const sampling_chain chain(detail::beam_processor_options(opts));
  workspace ws;
  ws.reserve(vocab);

  using handle = handle_t<S>;
  using ustate = typename detail::user_state<P>::type;
  const std::size_t k = opts.num_beams;
  const std::size_t m = std::max<std::size_t>(2, 1 + opts.eos_token_id.size()) * k;

  struct beam {
    std::vector<token_id> tokens;  // prompt + generated
    std::vector<float> logprobs;   // one per generated token
    float score = 0;               // running sum of log-probs (float, as HF)
    handle h{};
    std::size_t row = 0;           // its row in the current logits view
    ustate state{};
  };
  struct prompt_search {
    std::size_t prompt_length = 0;
    std::vector<beam> running;
    detail::finished_hypotheses finished;
    bool done = false;
    beam_search_result out;
  };

  std::vector<prompt_search> ps;
  ps.reserve(prompts.size());
  detail::handle_guard<S> guard(source);

  // Step 0: one prefill per prompt; its row is copied because the next prefill replaces the view.
  std::vector<float> first_rows(prompts.size() * vocab);
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    guard.reserve(1);
    const handle h = source.prefill(prompts[p]);
    guard.adopt(h);
    const logits_view v = source.logits();
    detail::check_source_rows(v, 1, vocab, 0);
    std::copy(v.data, v.data + vocab, first_rows.begin() + static_cast<std::ptrdiff_t>(p * vocab));
    prompt_search s{prompts[p].size(), {}, detail::finished_hypotheses(opts.finished_capacity()), false, {}};
    ustate st{};
    if constexpr (StatefulLogitsProcessor<P>) st = user.start(prompts[p]);
    s.running.reserve(k);
    for (std::size_t b = 0; b < k; ++b)
      s.running.push_back(beam{std::vector<token_id>(prompts[p].begin(), prompts[p].end()), {},
                               b == 0 ? 0.0f : detail::beam_placeholder_score, h, p, st});
    ps.push_back(std::move(s));
  }

  logits_view view{first_rows.data(), prompts.size(), vocab};
  std::vector<char> processed;
  std::vector<std::span<const float>> rows;
  std::vector<float> base;
  std::vector<beam_candidate> cands;
  std::vector<handle> parents, children, old;  // old: this step's handles that are parents of the next
  std::vector<token_id> next;
  std::vector<std::pair<std::size_t, std::size_t>> child_of;  // (prompt, beam) of each extend row
  std::size_t active = prompts.size();

  for (std::size_t step = 0; active > 0; ++step) {
    processed.assign(view.rows, 0);
    parents.clear();
    next.clear();
    child_of.clear();
    old.clear();
    const std::size_t generated = step + 1;  // length of every candidate
    const bool last = generated >= opts.max_new_tokens;
    const float denom = detail::length_normaliser(generated, opts.length_penalty);

    for (std::size_t p = 0; p < ps.size(); ++p) {
      prompt_search& s = ps[p];
      if (s.done) continue;
      // Log-softmax then the processors, once per distinct row (the first step's placeholder
      // beams share the prompt's row).
      rows.clear();
      base.clear();
      for (beam& b : s.running) {
        const auto row = view.row(b.row);
        if (!processed[b.row]) {
          processed[b.row] = 1;
          if (!detail::log_softmax_like_torch(row))
            throw search_error("itscale: the source masked every token at step " + std::to_string(step) +
                               " of prompt " + std::to_string(p));
          const step_context ctx{b.tokens, s.prompt_length, &ws};
          chain.apply_processors(row, ctx);
          if constexpr (StatefulLogitsProcessor<P>)
            user.apply(row, ctx, b.state);
          else
            user.apply(row, ctx);
        }
        rows.push_back(row);
        base.push_back(b.score);
      }
      select_beam_candidates(rows, base, m, cands);

      beam_trace_step* trace = nullptr;
      if (opts.record_trace) {
        s.out.trace.push_back({step, s.running.size(), {}});
        trace = &s.out.trace.back();
        trace->candidates.reserve(cands.size());
      }
      std::vector<beam> next_running;
      next_running.reserve(k);
      for (std::size_t r = 0; r < cands.size(); ++r) {
        const beam_candidate& c = cands[r];
        const beam& parent = s.running[c.beam];
        const float lp = rows[c.beam][static_cast<std::size_t>(c.token)];
        const bool eos =
            std::find(opts.eos_token_id.begin(), opts.eos_token_id.end(), c.token) != opts.eos_token_id.end();
        const bool finishes = eos || last;
        bool kept_running = false, kept_finished = false;
        if (finishes) {
          // Only the first K ranks may finish: the rest exist so that K beams can keep running.
          const float score = c.score / denom;
          if (r < k && s.finished.accepts(score)) {
            beam_hypothesis hyp;
            hyp.tokens.assign(parent.tokens.begin() + static_cast<std::ptrdiff_t>(s.prompt_length), parent.tokens.end());
            hyp.tokens.push_back(c.token);
            hyp.logprobs = parent.logprobs;
            hyp.logprobs.push_back(lp);
            hyp.logprob_sum = c.score;
            hyp.score = score;
            hyp.stop = eos ? stop_reason::eos : stop_reason::max_new_tokens;
            s.finished.add(std::move(hyp));
            kept_finished = true;
          }
        } else if (next_running.size() < k) {
          beam nb{parent.tokens, parent.logprobs, c.score, parent.h, 0, parent.state};
          nb.tokens.push_back(c.token);
          nb.logprobs.push_back(lp);
          if constexpr (StatefulLogitsProcessor<P>) user.advance(nb.state, c.token);
          next_running.push_back(std::move(nb));
          kept_running = true;
        }
        if (trace) trace->candidates.push_back({c.beam, c.token, lp, c.score, finishes, kept_running, kept_finished});
      }

      const bool done = detail::beam_prompt_done(opts, generated,
                                                 next_running.empty() ? nullptr : &next_running.front().score,
                                                 s.finished);

      // A beam with no surviving child is dead: release it now. A parent must outlive the extend
      // that forks it, so survivors wait until the children exist.
      if (done) next_running.clear();
      for (std::size_t b = 0; b < s.running.size(); ++b) {
        const handle h = s.running[b].h;
        const auto same = [h](const beam& x) { return x.h == h; };
        if (std::find_if(s.running.begin(), s.running.begin() + static_cast<std::ptrdiff_t>(b), same) !=
            s.running.begin() + static_cast<std::ptrdiff_t>(b))
          continue;  // placeholder beams of the first step share the prompt's handle
        if (std::any_of(next_running.begin(), next_running.end(), same))
          old.push_back(h);
        else
          guard.release(h);
      }
      s.running = std::move(next_running);
      if (done) {
        s.done = true;
        s.running.clear();
        s.out.steps = generated;
        --active;
        continue;
      }
      for (std::size_t b = 0; b < s.running.size(); ++b) {
        parents.push_back(s.running[b].h);
        next.push_back(s.running[b].tokens.back());
        child_of.emplace_back(p, b);
      }
    }

    // The survivors' children replace this step's handles, which are released right after.
    if (!parents.empty()) {
      children.assign(parents.size(), handle{});
      guard.reserve(children.size());
      source.extend(parents, next, children);
      for (handle c : children) guard.adopt(c);
      view = source.logits();
      detail::check_source_rows(view, children.size(), vocab, step + 1);
      for (std::size_t i = 0; i < children.size(); ++i) {
        beam& b = ps[child_of[i].first].running[child_of[i].second];
        b.h = children[i];
        b.row = i;
      }
    }
    for (handle h : old) guard.release(h);
  }

  std::vector<beam_search_result> out;
  out.reserve(ps.size());
  for (std::size_t p = 0; p < ps.size(); ++p) {
    if (ps[p].finished.size() == 0)
      throw search_error("itscale: every continuation of prompt " + std::to_string(p) + " was masked");
    ps[p].out.hypotheses = ps[p].finished.take_best(opts.num_return_sequences);
    out.push_back(std::move(ps[p].out));
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
