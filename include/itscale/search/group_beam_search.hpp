#pragma once
/// \file group_beam_search.hpp
/// Internal: the search that `beam_search` and `diverse_beam_search` both run — the beams of a
/// prompt in `groups` groups that advance in turn within a step, each a beam search of its own
/// width with its own finished set and stopping decision, later groups penalised for the tokens
/// earlier ones chose (Hamming diversity). Plain beam search is the one-group case. See those two
/// files for the semantics and the differences from HF.
///
/// Per-step cost does not grow with the sequences' length: a beam is a node of a `token_tree`
/// (a child is one append, not a copy of its parent's tokens), and a finished hypothesis is a
/// node too, read back only when the search returns it. Only when a processor reads the tokens
/// (repetition penalty, no-repeat-n-gram, a caller's processor) does each beam keep its prompt and
/// generated tokens contiguous: a parent's last child takes them over (moved, one push_back), its
/// other children copy them — O(length) work the processors themselves already do per row.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/processors/chain.hpp"
#include "itscale/processors/processor.hpp"
#include "itscale/search/beam_driver.hpp"
#include "itscale/search/beam_hypotheses.hpp"
#include "itscale/search/beam_options.hpp"
#include "itscale/search/beam_rows.hpp"
#include "itscale/search/beam_select.hpp"
#include "itscale/search/beam_stopping.hpp"
#include "itscale/search/token_tree.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

/// The outcome of a grouped search for one prompt, with its hypotheses read back as
/// `generation`s (`request` and `sample` left for the caller to set).
struct group_search_outcome {
  std::vector<std::vector<generation>> finished;    ///< per group, best first
  std::vector<std::vector<generation>> unfinished;  ///< per group; only if a limit cut it: its running beams, best first
  std::size_t steps = 0;                            ///< tokens generated before every group was done (or the cut)
  run_status status = run_status::completed;
  std::vector<beam_trace_step> trace;               ///< with `record_trace`: per (step, group), groups in turn
};

/// The shape of a grouped search: `groups` groups of `bo.num_beams / groups` beams, each keeping
/// `group_capacity` finished hypotheses, and the Hamming `diversity_penalty` (>= 0).
struct group_search_shape {
  std::size_t groups = 1;
  std::size_t group_capacity = 1;
  double diversity_penalty = 0.0;
};

/// Runs the grouped search from the driver's starts (options and starts already validated),
/// checking `budget` between steps: once a limit is reached, the prompts still running stop
/// before the next extend with `status` set, and their running beams are kept as unfinished
/// hypotheses. Errors, handle rules and forking as documented by `beam_search`.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] std::vector<group_search_outcome> group_beam_search(beam_driver<S>& driver, const beam_options& bo,
                                                                   const group_search_shape& shape, const P& user,
                                                                   const compute_budget& budget,
                                                                   const stopwatch& clock) {
  const std::size_t vocab = driver.vocab();
  const std::size_t np = driver.starts();
  using handle = handle_t<S>;
  using ustate = typename state_of<P>::type;
  const std::size_t ng = shape.groups;
  const std::size_t gs = bo.num_beams / ng;
  const std::size_t m = std::max<std::size_t>(2, 1 + bo.stop.eos_token_id.size()) * gs;
  const auto penalty_f = static_cast<float>(shape.diversity_penalty);

  struct beam {
    std::size_t node = token_tree::root;  // its last token (root: none generated yet)
    token_id last = 0;                    // that token
    float score = 0;                      // running sum of log-probs (float, as HF)
    handle h{};
    std::size_t row = 0;                  // its row in the current logits view
    ustate state{};
    std::vector<token_id> context;        // prompt + generated, only when a processor reads tokens
  };
  struct next_beam {  // a next running beam before it takes over its parent's state
    std::size_t parent;
    std::size_t node;
    token_id token;
    float score;
  };
  struct group {
    std::vector<beam> running;
    bool done = false;
  };
  struct prompt_search {
    std::size_t prompt_length = 0;
    std::vector<group> groups;
    std::vector<finished_hypotheses> finished;
    std::size_t active_groups = 0;
    std::size_t steps = 0;
    run_status status = run_status::completed;
    std::vector<beam_trace_step> trace;
  };

  beam_rows<P> prep(bo, user, vocab);
  const bool reads = prep.reads_tokens();
  // Without a token-reading processor a row's processors need only the generated count (the
  // min-new-tokens rule): they get a placeholder of that length, never read.
  std::vector<token_id> blank;
  token_tree tree;
  std::vector<prompt_search> ps(np);
  for (std::size_t p = 0; p < np; ++p) {
    prompt_search& s = ps[p];
    const auto prompt = driver.start_tokens(p);
    s.prompt_length = prompt.size();
    s.active_groups = ng;
    ustate st{};
    if constexpr (StatefulLogitsProcessor<P>) st = user.start(prompt);
    s.groups.resize(ng);
    for (std::size_t g = 0; g < ng; ++g) {
      s.finished.emplace_back(shape.group_capacity);
      // As in HF: the first step's beams are the prompt, all but the first a -1e9 placeholder.
      for (std::size_t b = 0; b < gs; ++b) {
        beam x{token_tree::root, 0, b == 0 ? 0.0f : beam_placeholder_score, driver.start_handle(p), p, st, {}};
        if (reads) x.context.assign(prompt.begin(), prompt.end());
        s.groups[g].running.push_back(std::move(x));
      }
    }
  }

  std::vector<std::span<const float>> rows;
  std::vector<float> sub, base;
  std::vector<beam_candidate> cands, tmp;
  std::vector<token_penalty> penalties;
  std::vector<handle> stepped, kept;
  std::vector<next_beam> next;
  std::vector<beam> next_running;
  std::vector<std::size_t> children_left;
  struct child_slot {
    std::size_t prompt, group, beam;
  };
  std::vector<child_slot> child_of;
  std::size_t active = np;

  for (std::size_t step = 0; active > 0; ++step) {
    const logits_view view = driver.view();
    prep.begin_step(view.rows);
    child_of.clear();
    const std::size_t generated = step + 1;  // length of every candidate
    const bool last = generated >= bo.stop.max_new_tokens;
    const float denom = length_normaliser(generated, bo.length_penalty);
    if (!reads) blank.resize(step);

    for (std::size_t p = 0; p < ps.size(); ++p) {
      prompt_search& s = ps[p];
      if (s.active_groups == 0) continue;
      penalties.clear();
      stepped.clear();  // this step's handles of the prompt
      kept.clear();     // those that are parents of a next running beam
      for (std::size_t g = 0; g < ng; ++g) {
        group& gr = s.groups[g];
        if (gr.done) continue;
        finished_hypotheses& finished = s.finished[g];
        rows.clear();
        sub.clear();
        base.clear();
        for (const beam& b : gr.running) {
          const auto row = view.row(b.row);
          const auto tokens = reads ? std::span<const token_id>(b.context) : std::span<const token_id>(blank);
          sub.push_back(prep.prepare(row, b.row, tokens, reads ? s.prompt_length : 0, b.state, step, p));
          rows.push_back(row);
          base.push_back(b.score);
          stepped.push_back(b.h);
        }
        select_penalised_candidates(rows, sub, base, m, penalties, cands, tmp);

        beam_trace_step* trace = nullptr;
        if (bo.record_trace) {
          s.trace.push_back({step, g, gr.running.size(), {}});
          trace = &s.trace.back();
          trace->candidates.reserve(cands.size());
        }
        next.clear();
        for (std::size_t r = 0; r < cands.size(); ++r) {
          const beam_candidate& c = cands[r];
          const beam& parent = gr.running[c.beam];
          // Only the winners' log-probs are computed, with the roundings of their scores.
          const float raw = rows[c.beam][static_cast<std::size_t>(c.token)] - sub[c.beam];
          const float pen = penalty_of(penalties, c.token);
          const float lp = pen == 0.0f ? raw : raw - pen;
          const bool eos = bo.stop.is_eos(c.token);
          const bool finishes = eos || last;
          bool kept_running = false, kept_finished = false;
          if (finishes) {
            // Only the first G ranks may finish: the rest exist so that G beams can keep running.
            const float score = c.score / denom;
            if (r < gs && finished.accepts(score)) {
              finished.add({score, c.score, tree.add(parent.node, c.token, lp),
                            eos ? stop_reason::eos : stop_reason::max_new_tokens});
              kept_finished = true;
            }
          } else if (next.size() < gs) {
            next.push_back({c.beam, tree.add(parent.node, c.token, lp), c.token, c.score});
            kept_running = true;
          }
          if (trace)
            trace->candidates.push_back({c.beam, c.token, lp, c.score, finishes, kept_running, kept_finished});
        }

        // Later groups of this step are penalised for the tokens this group continues with.
        if (shape.diversity_penalty > 0 && g + 1 < ng)
          for (const next_beam& b : next) {
            auto it = std::find_if(penalties.begin(), penalties.end(),
                                   [t = b.token](const token_penalty& x) { return x.token == t; });
            if (it == penalties.end()) {
              penalties.push_back({b.token, 0.0f, 0});
              it = penalties.end() - 1;
            }
            it->amount = penalty_f * static_cast<float>(++it->count);  // as torch: float(penalty) * count
          }

        const bool done = beam_prompt_done(bo, generated, next.empty() ? nullptr : &next.front().score, finished);
        if (done) next.clear();
        // The next beams take over their parents' processor state and context: a parent's last
        // child moves them, its other children copy them.
        children_left.assign(gr.running.size(), 0);
        for (const next_beam& n : next) ++children_left[n.parent];
        next_running.clear();
        for (const next_beam& n : next) {
          beam& parent = gr.running[n.parent];
          const bool take = --children_left[n.parent] == 0;
          beam nb{n.node, n.token, n.score, parent.h, 0, take ? std::move(parent.state) : parent.state, {}};
          if (reads) {
            if (take) {
              nb.context = std::move(parent.context);
            } else {  // with the parent's capacity, so that the push_back rarely reallocates
              nb.context.reserve(parent.context.capacity());
              nb.context.assign(parent.context.begin(), parent.context.end());
            }
            nb.context.push_back(n.token);
          }
          if constexpr (StatefulLogitsProcessor<P>) user.advance(nb.state, n.token);
          kept.push_back(nb.h);
          next_running.push_back(std::move(nb));
        }
        std::swap(gr.running, next_running);
        if (done) {
          gr.done = true;
          --s.active_groups;
        }
      }

      driver.retire(stepped, kept);
      if (s.active_groups == 0) {
        s.steps = generated;
        --active;
        continue;
      }
      for (std::size_t g = 0; g < ng; ++g)
        for (std::size_t b = 0; b < s.groups[g].running.size(); ++b) {
          const beam& x = s.groups[g].running[b];
          driver.fork(x.h, x.last);
          child_of.push_back({p, g, b});
        }
    }

    // Between steps: a reached limit stops every prompt still running before the next extend.
    if (driver.queued()) {
      const run_status limit = budget.check(driver.stats(), clock.seconds());
      if (limit != run_status::completed) {
        for (prompt_search& s : ps)
          if (s.active_groups > 0) {
            s.status = limit;
            s.steps = generated;
          }
        break;
      }
    }

    driver.extend(step, [&](std::size_t i, handle h) {
      beam& b = ps[child_of[i].prompt].groups[child_of[i].group].running[child_of[i].beam];
      b.h = h;
      b.row = i;
    });
  }

  std::vector<group_search_outcome> out(np);
  for (std::size_t p = 0; p < np; ++p) {
    prompt_search& s = ps[p];
    group_search_outcome& o = out[p];
    o.steps = s.steps;
    o.status = s.status;
    o.trace = std::move(s.trace);
    o.finished.resize(ng);
    o.unfinished.resize(ng);
    for (std::size_t g = 0; g < ng; ++g) {
      for (const finished_entry& e : s.finished[g].items()) {
        generation x;
        tree.read(e.node, x.tokens, &x.logprobs);
        x.logprob_sum = double{e.logprob_sum};
        x.score = double{e.score};
        x.stop = e.stop;
        o.finished[g].push_back(std::move(x));
      }
      if (s.status == run_status::completed || s.groups[g].done) continue;
      for (const beam& b : s.groups[g].running) {
        generation x;
        tree.read(b.node, x.tokens, &x.logprobs);
        x.logprob_sum = double{b.score};
        x.score = double{b.score / length_normaliser(x.tokens.size(), bo.length_penalty)};
        x.stop = cut_reason(s.status);
        o.unfinished[g].push_back(std::move(x));
      }
    }
  }
  return out;
}

}  // namespace detail
ITSCALE_END_NAMESPACE
