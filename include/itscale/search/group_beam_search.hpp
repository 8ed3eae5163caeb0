#pragma once
/// \file group_beam_search.hpp
/// Internal: the search that `beam_search` and `diverse_beam_search` both run — the beams of a
/// prompt in `groups` groups that advance in turn within a step, each a beam search of its own
/// width with its own finished set and stopping decision, later groups penalised for the tokens
/// earlier ones chose (Hamming diversity). Plain beam search is the one-group case. See those two
/// files for the semantics and the differences from HF.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/detail/source_rows.hpp"
#include "itscale/processors/chain.hpp"
#include "itscale/processors/processor.hpp"
#include "itscale/processors/processor.hpp"
#include "itscale/search/beam_driver.hpp"
#include "itscale/search/beam_hypotheses.hpp"
#include "itscale/search/beam_options.hpp"
#include "itscale/search/beam_rows.hpp"
#include "itscale/search/beam_select.hpp"
#include "itscale/search/beam_stopping.hpp"

namespace itscale {
inline namespace v0 {
namespace detail {

/// The outcome of a grouped search for one prompt.
struct group_search_outcome {
  std::vector<finished_hypotheses> groups;  ///< each group's finished set
  std::size_t steps = 0;                    ///< tokens generated before every group was done
  std::vector<beam_trace_step> trace;       ///< with `record_trace`: per (step, group), groups in turn
  std::vector<std::size_t> trace_group;     ///< group of each trace entry
};

/// The shape of a grouped search: `groups` groups of `bo.num_beams / groups` beams, each keeping
/// `group_capacity` finished hypotheses, and the Hamming `diversity_penalty` (>= 0).
struct group_search_shape {
  std::size_t groups = 1;
  std::size_t group_capacity = 1;
  double diversity_penalty = 0.0;
};

/// Runs the grouped search on every prompt (options, prompts already validated). Errors, handle
/// rules and forking as documented by `beam_search`.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] std::vector<group_search_outcome> group_beam_search(S& source,
                                                                   std::span<const std::span<const token_id>> prompts,
                                                                   const beam_options& bo, const group_search_shape& shape,
                                                                   const P& user) {
  const std::size_t vocab = source.vocab_size();
  using handle = handle_t<S>;
  using ustate = typename state_of<P>::type;
  const std::size_t ng = shape.groups;
  const std::size_t gs = bo.num_beams / ng;
  const std::size_t m = std::max<std::size_t>(2, 1 + bo.stop.eos_token_id.size()) * gs;
  const auto penalty_f = static_cast<float>(shape.diversity_penalty);

  struct beam {
    std::vector<token_id> tokens;  // prompt + generated
    std::vector<float> logprobs;   // one per generated token (diversity penalty included)
    float score = 0;               // running sum of log-probs (float, as HF)
    handle h{};
    std::size_t row = 0;           // its row in the current logits view
    ustate state{};
  };
  struct group {
    std::vector<beam> running;
    bool done = false;
  };
  struct prompt_search {
    std::size_t prompt_length = 0;
    std::vector<group> groups;
    std::size_t active_groups = 0;
    group_search_outcome out;
  };

  beam_rows<P> prep(bo, user, vocab);
  beam_driver<S> driver(source, vocab);
  std::vector<prompt_search> ps(prompts.size());
  driver.prefill(prompts, [&](std::size_t p, handle h) {
    prompt_search& s = ps[p];
    s.prompt_length = prompts[p].size();
    s.active_groups = ng;
    ustate st{};
    if constexpr (StatefulLogitsProcessor<P>) st = user.start(prompts[p]);
    s.groups.resize(ng);
    for (std::size_t g = 0; g < ng; ++g) {
      s.out.groups.emplace_back(shape.group_capacity);
      // As in HF: the first step's beams are the prompt, all but the first a -1e9 placeholder.
      for (std::size_t b = 0; b < gs; ++b)
        s.groups[g].running.push_back(beam{std::vector<token_id>(prompts[p].begin(), prompts[p].end()), {},
                                           b == 0 ? 0.0f : beam_placeholder_score, h, p, st});
    }
  });

  std::vector<std::span<const float>> rows;
  std::vector<float> sub, base;
  std::vector<beam_candidate> cands, tmp;
  std::vector<token_penalty> penalties;
  std::vector<handle> stepped, kept;
  std::vector<beam> next_running;
  struct child_slot {
    std::size_t prompt, group, beam;
  };
  std::vector<child_slot> child_of;
  std::size_t active = prompts.size();

  for (std::size_t step = 0; active > 0; ++step) {
    const logits_view view = driver.view();
    prep.begin_step(view.rows);
    child_of.clear();
    const std::size_t generated = step + 1;  // length of every candidate
    const bool last = generated >= bo.stop.max_new_tokens;
    const float denom = length_normaliser(generated, bo.length_penalty);

    for (std::size_t p = 0; p < ps.size(); ++p) {
      prompt_search& s = ps[p];
      if (s.active_groups == 0) continue;
      penalties.clear();
      stepped.clear();  // this step's handles of the prompt
      kept.clear();     // those that are parents of a next running beam
      for (std::size_t g = 0; g < ng; ++g) {
        group& gr = s.groups[g];
        if (gr.done) continue;
        finished_hypotheses& finished = s.out.groups[g];
        rows.clear();
        sub.clear();
        base.clear();
        for (const beam& b : gr.running) {
          const auto row = view.row(b.row);
          sub.push_back(prep.prepare(row, b.row, b.tokens, s.prompt_length, b.state, step, p));
          rows.push_back(row);
          base.push_back(b.score);
          stepped.push_back(b.h);
        }
        select_penalised_candidates(rows, sub, base, m, penalties, cands, tmp);

        beam_trace_step* trace = nullptr;
        if (bo.record_trace) {
          s.out.trace.push_back({step, gr.running.size(), {}});
          s.out.trace_group.push_back(g);
          trace = &s.out.trace.back();
          trace->candidates.reserve(cands.size());
        }
        next_running.clear();
        next_running.reserve(gs);
        for (std::size_t r = 0; r < cands.size(); ++r) {
          const beam_candidate& c = cands[r];
          const beam& parent = gr.running[c.beam];
          // Only the winners' log-probs are computed, with the roundings of their scores.
          const float raw = rows[c.beam][static_cast<std::size_t>(c.token)] - sub[c.beam];
          const float pen = penalty_of(penalties, c.token);
          const float lp = pen == 0.0f ? raw : raw - pen;
          const bool eos =
              std::find(bo.stop.eos_token_id.begin(), bo.stop.eos_token_id.end(), c.token) != bo.stop.eos_token_id.end();
          const bool finishes = eos || last;
          bool kept_running = false, kept_finished = false;
          if (finishes) {
            // Only the first G ranks may finish: the rest exist so that G beams can keep running.
            const float score = c.score / denom;
            if (r < gs && finished.accepts(score)) {
              beam_hypothesis hyp;
              hyp.tokens.assign(parent.tokens.begin() + static_cast<std::ptrdiff_t>(s.prompt_length),
                                parent.tokens.end());
              hyp.tokens.push_back(c.token);
              hyp.logprobs = parent.logprobs;
              hyp.logprobs.push_back(lp);
              hyp.logprob_sum = c.score;
              hyp.score = score;
              hyp.stop = eos ? stop_reason::eos : stop_reason::max_new_tokens;
              finished.add(std::move(hyp));
              kept_finished = true;
            }
          } else if (next_running.size() < gs) {
            beam nb{parent.tokens, parent.logprobs, c.score, parent.h, 0, parent.state};
            nb.tokens.push_back(c.token);
            nb.logprobs.push_back(lp);
            if constexpr (StatefulLogitsProcessor<P>) user.advance(nb.state, c.token);
            next_running.push_back(std::move(nb));
            kept_running = true;
          }
          if (trace)
            trace->candidates.push_back({c.beam, c.token, lp, c.score, finishes, kept_running, kept_finished});
        }

        // Later groups of this step are penalised for the tokens this group continues with.
        if (shape.diversity_penalty > 0 && g + 1 < ng)
          for (const beam& b : next_running) {
            const token_id t = b.tokens.back();
            auto it = std::find_if(penalties.begin(), penalties.end(),
                                   [t](const token_penalty& x) { return x.token == t; });
            if (it == penalties.end()) {
              penalties.push_back({t, 0.0f, 0});
              it = penalties.end() - 1;
            }
            it->amount = penalty_f * static_cast<float>(++it->count);  // as torch: float(penalty) * count
          }

        const bool done =
            beam_prompt_done(bo, generated, next_running.empty() ? nullptr : &next_running.front().score, finished);
        if (done) next_running.clear();
        for (const beam& b : next_running) kept.push_back(b.h);
        std::swap(gr.running, next_running);
        if (done) {
          gr.done = true;
          --s.active_groups;
        }
      }

      driver.retire(stepped, kept);
      if (s.active_groups == 0) {
        s.out.steps = generated;
        --active;
        continue;
      }
      for (std::size_t g = 0; g < ng; ++g)
        for (std::size_t b = 0; b < s.groups[g].running.size(); ++b) {
          const beam& x = s.groups[g].running[b];
          driver.fork(x.h, x.tokens.back());
          child_of.push_back({p, g, b});
        }
    }

    driver.extend(step, [&](std::size_t i, handle h) {
      beam& b = ps[child_of[i].prompt].groups[child_of[i].group].running[child_of[i].beam];
      b.h = h;
      b.row = i;
    });
  }

  std::vector<group_search_outcome> out;
  out.reserve(ps.size());
  for (prompt_search& s : ps) out.push_back(std::move(s.out));
  return out;
}

}  // namespace detail
}  // namespace v0
}  // namespace itscale
