#pragma once
/// \file diverse_beam_search.hpp
/// Diverse beam search (Vijayakumar et al., AAAI 2018) with the semantics of Hugging Face's group
/// beam search (`num_beam_groups`, `diversity_penalty`; the Hub add-on of transformers 5, formerly
/// `_group_beam_search`):
///
/// - the K beams of a prompt form `num_beam_groups` groups of G = K / num_beam_groups beams; each
///   group is a beam search of width G with its own finished set (G hypotheses, round(G * patience)
///   with `patience`) and its own stopping decision, by the rules of `beam_search` (HF 5);
/// - one batched `extend` per step serves every group; within the step the groups advance in turn,
///   and group g's processed log-prob of token t is lowered by `diversity_penalty * c(t)`, where
///   c(t) counts the beams of groups 0..g-1 that continue with t at this step (HF's
///   `HammingDiversityLogitsProcessor`, computed as float(penalty) * count and subtracted in
///   float, as torch does); the penalty is applied after the built-in and the user's processors
///   (the add-on appends it last) and is part of the hypotheses' log-probs and scores, as in HF;
/// - at the first step every group starts from the prompt (its first beam scores 0, the others
///   are HF's -1e9 placeholders);
/// - the result is the union of the groups' finished hypotheses, best first (equal scores: the
///   lower group first), `num_return_sequences` of them.
///
/// Deliberate differences from HF's group beam search, which runs the legacy `BeamSearchScorer`:
/// each group finishes and stops by the rules of HF 5's `_beam_search` (as `beam_search` does:
/// at `max_new_tokens` only the first G ranks finish; the heuristic stop compares the best running
/// beam), so that one group is exactly `beam_search`; and a group that is done contributes no
/// tokens to the penalty (HF counts its pad tokens).

#include <algorithm>
#include <cmath>
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
#include "itscale/search/beam_hypotheses.hpp"
#include "itscale/search/beam_options.hpp"
#include "itscale/search/beam_search.hpp"
#include "itscale/search/beam_select.hpp"
#include "itscale/search/beam_stopping.hpp"
#include "itscale/sources/validate_tokens.hpp"

namespace itscale {
inline namespace v0 {

/// Options of diverse (group) beam search: the beam-search options plus HF's two group options.
///
///     itscale::diverse_beam_options o{.beam = {.num_beams = 8, .num_return_sequences = 4,
///                                              .max_new_tokens = 32, .eos_token_id = {2}},
///                                     .num_beam_groups = 4, .diversity_penalty = 1.0};
struct diverse_beam_options {
  beam_options beam{};
  /// >= 1 and divides `beam.num_beams`. 1 is plain `beam_search` (the penalty has no earlier
  /// group to act on).
  std::size_t num_beam_groups = 1;
  /// Finite and >= 0. 0 with several groups is allowed (HF refuses it): every group then runs the
  /// same search and returns the same hypotheses — a baseline for penalty sweeps, not an error.
  double diversity_penalty = 0.0;

  /// Beams per group (G).
  [[nodiscard]] std::size_t group_size() const noexcept {
    return num_beam_groups == 0 ? 0 : beam.num_beams / num_beam_groups;
  }

  /// Finished hypotheses each group keeps: round(G * patience), at least 1.
  [[nodiscard]] std::size_t group_finished_capacity() const noexcept {
    const double f = std::round(static_cast<double>(group_size()) * beam.patience);
    return f < 1 ? 1 : static_cast<std::size_t>(f);
  }

  /// `beam.validate()` plus the group rules; throws `invalid_option` naming the option and rule.
  void validate() const {
    beam.validate();
    auto fail = [](const std::string& what) { throw invalid_option("itscale: diverse_beam_options." + what); };
    if (num_beam_groups == 0) fail("num_beam_groups must be >= 1, got 0");
    if (beam.num_beams % num_beam_groups != 0)
      fail("num_beam_groups (" + std::to_string(num_beam_groups) + ") must divide num_beams (" +
           std::to_string(beam.num_beams) + ")");
    if (!std::isfinite(diversity_penalty) || diversity_penalty < 0)
      fail("diversity_penalty must be finite and >= 0, got " + detail::num(diversity_penalty));
    if (beam.num_return_sequences > num_beam_groups * group_finished_capacity())
      fail("beam.num_return_sequences (" + std::to_string(beam.num_return_sequences) +
           ") must be <= num_beam_groups * round(group size * patience) (" +
           std::to_string(num_beam_groups * group_finished_capacity()) + ")");
  }

  /// `validate()` plus: every EOS id is inside the vocabulary.
  void validate(std::size_t vocab) const {
    validate();
    beam.validate(vocab);
  }
};

/// The result of diverse beam search for one prompt.
struct diverse_beam_search_result {
  std::vector<beam_hypothesis> hypotheses;  ///< best first over all groups
  std::vector<std::size_t> group;           ///< group of each hypothesis
  std::size_t steps = 0;                    ///< tokens generated before every group was done
  std::vector<beam_trace_step> trace;       ///< with `record_trace`: one entry per (step, group), groups in turn
  std::vector<std::size_t> trace_group;     ///< group of each trace entry
};

namespace detail {

/// One token's Hamming penalty at this step: float(penalty) * count, as torch computes it.
struct token_penalty {
  token_id token = 0;
  float amount = 0;
  std::size_t count = 0;
};

/// `select_beam_candidates` with `penalties[i].amount` subtracted from token `penalties[i].token`
/// of every row before the beam's score is added: score = base + (row[t] - amount). Exact and
/// cheap: a candidate with an unpenalised token is unchanged, and the best m of those lie among
/// the best m + |penalties| * rows of all unpenalised scores; the few penalised candidates are
/// scored directly. `tmp` is scratch.
inline void select_penalised_candidates(std::span<const std::span<const float>> rows, std::span<const float> base,
                                        std::size_t m, std::span<const token_penalty> penalties,
                                        std::vector<beam_candidate>& out, std::vector<beam_candidate>& tmp) {
  if (penalties.empty()) {
    select_beam_candidates(rows, base, m, out);
    return;
  }
  const auto penalised = [&](token_id t) {
    return std::any_of(penalties.begin(), penalties.end(), [t](const token_penalty& p) { return p.token == t; });
  };
  select_beam_candidates(rows, base, m + penalties.size() * rows.size(), tmp);
  out.clear();
  for (const beam_candidate& c : tmp)
    if (!penalised(c.token)) out.push_back(c);
  for (std::size_t b = 0; b < rows.size(); ++b)
    for (const token_penalty& p : penalties) {
      const float v = base[b] + (rows[b][static_cast<std::size_t>(p.token)] - p.amount);
      if (v > masked_logit) out.push_back({v, static_cast<std::uint32_t>(b), p.token});  // drops -inf and NaN
    }
  std::sort(out.begin(), out.end(), candidate_ranks_above);
  if (out.size() > m) out.resize(m);
}

}  // namespace detail

/// Diverse beam search for every prompt, applying `user` (a processor of either form) to each row
/// after the built-in processors and before the diversity penalty. Returns one result per prompt,
/// in order. Errors, handle rules and forking as `beam_search` (at most 2K live handles per
/// prompt; every handle released on every path).
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] std::vector<diverse_beam_search_result> diverse_beam_search(
    S& source, std::span<const std::span<const token_id>> prompts, const diverse_beam_options& opts, const P& user) {
  const std::size_t vocab = source.vocab_size();
  opts.validate(vocab);
  const beam_options& bo = opts.beam;
  if (prompts.empty()) throw invalid_input("itscale: diverse_beam_search needs at least one prompt");
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    if (prompts[p].empty()) throw invalid_input("itscale: prompt " + std::to_string(p) + " is empty");
    detail::check_tokens(prompts[p], vocab, "prompt");
  }
  const sampling_chain chain(detail::beam_processor_options(bo));
  workspace ws;
  ws.reserve(vocab);

  using handle = handle_t<S>;
  using ustate = typename detail::user_state<P>::type;
  const std::size_t ng = opts.num_beam_groups;
  const std::size_t gs = opts.group_size();
  const std::size_t m = std::max<std::size_t>(2, 1 + bo.eos_token_id.size()) * gs;
  const auto penalty_f = static_cast<float>(opts.diversity_penalty);

  struct beam {
    std::vector<token_id> tokens;  // prompt + generated
    std::vector<float> logprobs;   // one per generated token (penalty included)
    float score = 0;
    handle h{};
    std::size_t row = 0;
    ustate state{};
  };
  struct group_search {
    std::vector<beam> running;
    detail::finished_hypotheses finished;
    bool done = false;
  };
  struct prompt_search {
    std::size_t prompt_length = 0;
    std::vector<group_search> groups;
    std::size_t active_groups = 0;
    diverse_beam_search_result out;
  };

  std::vector<prompt_search> ps;
  ps.reserve(prompts.size());
  detail::handle_guard<S> guard(source);

  std::vector<float> first_rows(prompts.size() * vocab);
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    guard.reserve(1);
    const handle h = source.prefill(prompts[p]);
    guard.adopt(h);
    const logits_view v = source.logits();
    detail::check_source_rows(v, 1, vocab, 0);
    std::copy(v.data, v.data + vocab, first_rows.begin() + static_cast<std::ptrdiff_t>(p * vocab));
    prompt_search s;
    s.prompt_length = prompts[p].size();
    s.active_groups = ng;
    ustate st{};
    if constexpr (StatefulLogitsProcessor<P>) st = user.start(prompts[p]);
    for (std::size_t g = 0; g < ng; ++g) {
      group_search gr{{}, detail::finished_hypotheses(opts.group_finished_capacity()), false};
      gr.running.reserve(gs);
      for (std::size_t b = 0; b < gs; ++b)
        gr.running.push_back(beam{std::vector<token_id>(prompts[p].begin(), prompts[p].end()), {},
                                  b == 0 ? 0.0f : detail::beam_placeholder_score, h, p, st});
      s.groups.push_back(std::move(gr));
    }
    ps.push_back(std::move(s));
  }

  logits_view view{first_rows.data(), prompts.size(), vocab};
  std::vector<char> processed;
  std::vector<std::span<const float>> rows;
  std::vector<float> base;
  std::vector<beam_candidate> cands, tmp;
  std::vector<detail::token_penalty> penalties;
  std::vector<handle> parents, children, old, stepped, kept;
  std::vector<token_id> next;
  struct child_slot {
    std::size_t prompt, group, beam;
  };
  std::vector<child_slot> child_of;
  std::size_t active = prompts.size();

  for (std::size_t step = 0; active > 0; ++step) {
    processed.assign(view.rows, 0);
    parents.clear();
    next.clear();
    child_of.clear();
    old.clear();
    const std::size_t generated = step + 1;
    const bool last = generated >= bo.max_new_tokens;
    const float denom = detail::length_normaliser(generated, bo.length_penalty);

    for (std::size_t p = 0; p < ps.size(); ++p) {
      prompt_search& s = ps[p];
      if (s.active_groups == 0) continue;
      penalties.clear();
      stepped.clear();  // this step's handles of the prompt
      kept.clear();     // those that are parents of a next running beam
      for (std::size_t g = 0; g < ng; ++g) {
        group_search& gr = s.groups[g];
        if (gr.done) continue;
        rows.clear();
        base.clear();
        for (beam& b : gr.running) {
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
          stepped.push_back(b.h);
        }
        detail::select_penalised_candidates(rows, base, m, penalties, cands, tmp);
        const auto penalty_of = [&](token_id t) {
          for (const auto& x : penalties)
            if (x.token == t) return x.amount;
          return 0.0f;
        };

        beam_trace_step* trace = nullptr;
        if (bo.record_trace) {
          s.out.trace.push_back({step, gr.running.size(), {}});
          s.out.trace_group.push_back(g);
          trace = &s.out.trace.back();
          trace->candidates.reserve(cands.size());
        }
        std::vector<beam> next_running;
        next_running.reserve(gs);
        for (std::size_t r = 0; r < cands.size(); ++r) {
          const beam_candidate& c = cands[r];
          const beam& parent = gr.running[c.beam];
          const float raw = rows[c.beam][static_cast<std::size_t>(c.token)];
          const float pen = penalty_of(c.token);
          const float lp = pen == 0.0f ? raw : raw - pen;
          const bool eos =
              std::find(bo.eos_token_id.begin(), bo.eos_token_id.end(), c.token) != bo.eos_token_id.end();
          const bool finishes = eos || last;
          bool kept_running = false, kept_finished = false;
          if (finishes) {
            const float score = c.score / denom;
            if (r < gs && gr.finished.accepts(score)) {
              beam_hypothesis hyp;
              hyp.tokens.assign(parent.tokens.begin() + static_cast<std::ptrdiff_t>(s.prompt_length),
                                parent.tokens.end());
              hyp.tokens.push_back(c.token);
              hyp.logprobs = parent.logprobs;
              hyp.logprobs.push_back(lp);
              hyp.logprob_sum = c.score;
              hyp.score = score;
              hyp.stop = eos ? stop_reason::eos : stop_reason::max_new_tokens;
              gr.finished.add(std::move(hyp));
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
        if (opts.diversity_penalty > 0)
          for (const beam& b : next_running) {
            const token_id t = b.tokens.back();
            auto it = std::find_if(penalties.begin(), penalties.end(),
                                   [t](const detail::token_penalty& x) { return x.token == t; });
            if (it == penalties.end()) {
              penalties.push_back({t, 0.0f, 0});
              it = penalties.end() - 1;
            }
            it->amount = penalty_f * static_cast<float>(++it->count);  // as torch: float(penalty) * count
          }

        const bool done = detail::beam_prompt_done(bo, generated,
                                                   next_running.empty() ? nullptr : &next_running.front().score,
                                                   gr.finished);
        if (done) next_running.clear();
        for (const beam& b : next_running) kept.push_back(b.h);
        gr.running = std::move(next_running);
        if (done) {
          gr.done = true;
          --s.active_groups;
        }
      }

      // Release this step's handles that no next beam descends from; parents wait for the extend.
      // (At the first step every group's beams share the prompt's handle.)
      for (std::size_t i = 0; i < stepped.size(); ++i) {
        const handle h = stepped[i];
        if (std::find(stepped.begin(), stepped.begin() + static_cast<std::ptrdiff_t>(i), h) !=
            stepped.begin() + static_cast<std::ptrdiff_t>(i))
          continue;  // a handle shared by several beams (the first step's placeholders)
        if (std::find(kept.begin(), kept.end(), h) != kept.end())
          old.push_back(h);
        else
          guard.release(h);
      }
      if (s.active_groups == 0) {
        s.out.steps = generated;
        --active;
        continue;
      }
      for (std::size_t g = 0; g < ng; ++g)
        for (std::size_t b = 0; b < s.groups[g].running.size(); ++b) {
          parents.push_back(s.groups[g].running[b].h);
          next.push_back(s.groups[g].running[b].tokens.back());
          child_of.push_back({p, g, b});
        }
    }

    if (!parents.empty()) {
      children.assign(parents.size(), handle{});
      guard.reserve(children.size());
      source.extend(parents, next, children);
      for (handle c : children) guard.adopt(c);
      view = source.logits();
      detail::check_source_rows(view, children.size(), vocab, step + 1);
      for (std::size_t i = 0; i < children.size(); ++i) {
        beam& b = ps[child_of[i].prompt].groups[child_of[i].group].running[child_of[i].beam];
        b.h = children[i];
        b.row = i;
      }
    }
    for (handle h : old) guard.release(h);
  }

  std::vector<diverse_beam_search_result> out;
  out.reserve(ps.size());
  for (std::size_t p = 0; p < ps.size(); ++p) {
    std::vector<std::pair<beam_hypothesis, std::size_t>> all;
    for (std::size_t g = 0; g < ng; ++g)
      for (beam_hypothesis& h : ps[p].groups[g].finished.take_best(opts.group_finished_capacity()))
        all.emplace_back(std::move(h), g);
    if (all.empty()) throw search_error("itscale: every continuation of prompt " + std::to_string(p) + " was masked");
    // Each group's list is best first and groups come in order: a stable sort keeps lower groups
    // ahead among equal scores.
    std::stable_sort(all.begin(), all.end(),
                     [](const auto& a, const auto& b) { return a.first.score > b.first.score; });
    if (all.size() > bo.num_return_sequences) all.resize(bo.num_return_sequences);
    diverse_beam_search_result& r = ps[p].out;
    for (auto& [h, g] : all) {
      r.hypotheses.push_back(std::move(h));
      r.group.push_back(g);
    }
    out.push_back(std::move(r));
  }
  return out;
}

/// `diverse_beam_search` with the built-in processors only.
template <LogitSource S>
[[nodiscard]] std::vector<diverse_beam_search_result> diverse_beam_search(
    S& source, std::span<const std::span<const token_id>> prompts, const diverse_beam_options& opts) {
  return diverse_beam_search(source, prompts, opts, logits_processor_archetype{});
}

/// Several prompts searched together (each result equals searching that prompt alone).
template <LogitSource S>
[[nodiscard]] std::vector<diverse_beam_search_result> diverse_beam_search(
    S& source, const std::vector<std::vector<token_id>>& prompts, const diverse_beam_options& opts) {
  std::vector<std::span<const token_id>> spans(prompts.begin(), prompts.end());
  return diverse_beam_search(source, std::span<const std::span<const token_id>>(spans), opts);
}

/// One prompt.
template <LogitSource S>
[[nodiscard]] diverse_beam_search_result diverse_beam_search(S& source, std::span<const token_id> prompt,
                                                             const diverse_beam_options& opts) {
  auto r = diverse_beam_search(source, std::span<const std::span<const token_id>>(&prompt, 1), opts);
  return std::move(r.front());
}

}  // namespace v0
}  // namespace itscale
