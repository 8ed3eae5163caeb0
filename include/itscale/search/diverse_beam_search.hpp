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

/// Options of diverse (group) beam search: the beam-search options plus HF's two group options.
///
///     itscale::diverse_beam_options o{.beam = {.num_beams = 8, .num_return_sequences = 4,
///                                              .stop = {.max_new_tokens = 32, .eos_token_id = {2}}},
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
    // As beam_options::finished_capacity: past the cap (rejected by validate) never an out-of-range cast.
    if (!(f <= static_cast<double>(max_finished_hypotheses))) return max_finished_hypotheses + 1;
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

/// What `diverse_beam_search` returns: as `beam_search_result` (hypotheses of every prompt, best
/// first over all its groups; per-prompt facts; compute; status), with the group of each
/// hypothesis. The trace's entries name their group (`beam_trace_step::group`).
struct diverse_beam_search_result : beam_search_result {
  std::vector<std::size_t> group;  ///< group of each entry of `sequences`

  /// The groups of prompt `p`'s hypotheses, in the order of `hypotheses(p)`.
  [[nodiscard]] std::span<const std::size_t> groups(std::size_t p) const noexcept {
    return std::span<const std::size_t>(group).subspan(prompts[p].first, prompts[p].count);
  }
};

namespace detail {

/// Runs diverse beam search from the starts `start(driver)` sets up and assembles the result:
/// the union of the groups' finished hypotheses, best first (a stable sort keeps lower groups
/// ahead among equal scores), then — for a prompt cut by a limit — the union of its groups'
/// running beams, best first, up to `num_return_sequences`.
template <LogitSource S, AnyLogitsProcessor P, class Start>
[[nodiscard]] diverse_beam_search_result run_diverse_beam_search(S& source, const diverse_beam_options& opts,
                                                                 const P& user, const run_options& run, Start&& start) {
  return run_beam_family<diverse_beam_search_result>(
      source, run.budget, start, [&](beam_driver<S>& driver, const stopwatch& clock, diverse_beam_search_result& out) {
        const std::size_t ng = opts.num_beam_groups;
        auto found = group_beam_search(
            driver, opts.beam, {ng, opts.group_finished_capacity(), opts.diversity_penalty}, user, run.budget, clock);
        out.prompts.reserve(found.size());
        for (std::size_t p = 0; p < found.size(); ++p) {
          group_search_outcome& f = found[p];
          beam_prompt_result pr;
          pr.first = out.sequences.size();
          pr.steps = f.steps;
          pr.status = f.status;
          pr.trace = std::move(f.trace);
          for (auto* part : {&f.finished, &f.unfinished}) {
            std::vector<std::pair<generation*, std::size_t>> all;
            for (std::size_t g = 0; g < ng; ++g)
              for (generation& h : (*part)[g]) all.emplace_back(&h, g);
            std::stable_sort(all.begin(), all.end(),
                             [](const auto& a, const auto& b) { return a.first->score > b.first->score; });
            for (auto& [h, g] : all) {
              if (pr.count == opts.beam.num_return_sequences) break;
              h->request = p;
              h->sample = pr.count++;
              out.sequences.push_back(std::move(*h));
              out.group.push_back(g);
            }
          }
          if (pr.count == 0)
            throw search_error("itscale: every continuation of prompt " + std::to_string(p) + " was masked");
          if (f.status != run_status::completed) out.status = f.status;
          out.prompts.push_back(std::move(pr));
        }
      });
}

}  // namespace detail

/// Diverse beam search for every prompt, applying `user` (a processor of either form) to each row
/// after the built-in processors and before the diversity penalty, under `run.budget` (as
/// `beam_search`: checked between steps; a cut prompt returns its finished hypotheses, then its
/// running beams). Errors, handle rules, forking and compute as `beam_search` (at most 2K live
/// handles per prompt; every handle released on every path).
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] diverse_beam_search_result diverse_beam_search(S& source,
                                                             std::span<const std::span<const token_id>> prompts,
                                                             const diverse_beam_options& opts, const P& user,
                                                             const run_options& run = {}) {
  opts.validate(source.vocab_size());
  detail::check_beam_prompts(prompts, source.vocab_size(), "diverse_beam_search");
  return detail::run_diverse_beam_search(source, opts, user, run,
                                         [&](detail::beam_driver<S>& d) { d.prefill(prompts); });
}

/// From the caller's live sequences (forked, never released; `stream` / `first_sample` unused).
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] diverse_beam_search_result diverse_beam_search(
    S& source, std::type_identity_t<std::span<const live_request<S>>> starts, const diverse_beam_options& opts,
    const P& user, const run_options& run = {}) {
  opts.validate(source.vocab_size());
  detail::check_live_starts(source, starts, "diverse_beam_search");
  return detail::run_diverse_beam_search(source, opts, user, run,
                                         [&](detail::beam_driver<S>& d) { d.start_live(starts); });
}

/// Several prompts given as vectors (each result equals searching that prompt alone).
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] diverse_beam_search_result diverse_beam_search(S& source,
                                                             const std::vector<std::vector<token_id>>& prompts,
                                                             const diverse_beam_options& opts, const P& user,
                                                             const run_options& run = {}) {
  const std::vector<std::span<const token_id>> spans(prompts.begin(), prompts.end());
  return diverse_beam_search(source, std::span<const std::span<const token_id>>(spans), opts, user, run);
}

/// One prompt.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] diverse_beam_search_result diverse_beam_search(S& source, std::span<const token_id> prompt,
                                                             const diverse_beam_options& opts, const P& user,
                                                             const run_options& run = {}) {
  return diverse_beam_search(source, std::span<const std::span<const token_id>>(&prompt, 1), opts, user, run);
}

/// One live sequence.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] diverse_beam_search_result diverse_beam_search(S& source, const prefilled<S>& start,
                                                             const diverse_beam_options& opts, const P& user,
                                                             const run_options& run = {}) {
  const live_request<S> r{&start};
  return diverse_beam_search(source, std::span<const live_request<S>>(&r, 1), opts, user, run);
}

/// The overloads above with the built-in processors only.
template <LogitSource S>
[[nodiscard]] diverse_beam_search_result diverse_beam_search(S& source,
                                                             std::span<const std::span<const token_id>> prompts,
                                                             const diverse_beam_options& opts,
                                                             const run_options& run = {}) {
  return diverse_beam_search(source, prompts, opts, logits_processor_archetype{}, run);
}
template <LogitSource S>
[[nodiscard]] diverse_beam_search_result diverse_beam_search(
    S& source, std::type_identity_t<std::span<const live_request<S>>> starts, const diverse_beam_options& opts,
    const run_options& run = {}) {
  return diverse_beam_search(source, starts, opts, logits_processor_archetype{}, run);
}
template <LogitSource S>
[[nodiscard]] diverse_beam_search_result diverse_beam_search(S& source,
                                                             const std::vector<std::vector<token_id>>& prompts,
                                                             const diverse_beam_options& opts,
                                                             const run_options& run = {}) {
  return diverse_beam_search(source, prompts, opts, logits_processor_archetype{}, run);
}
template <LogitSource S>
[[nodiscard]] diverse_beam_search_result diverse_beam_search(S& source, std::span<const token_id> prompt,
                                                             const diverse_beam_options& opts,
                                                             const run_options& run = {}) {
  return diverse_beam_search(source, prompt, opts, logits_processor_archetype{}, run);
}
template <LogitSource S>
[[nodiscard]] diverse_beam_search_result diverse_beam_search(S& source, const prefilled<S>& start,
                                                             const diverse_beam_options& opts,
                                                             const run_options& run = {}) {
  return diverse_beam_search(source, start, opts, logits_processor_archetype{}, run);
}

ITSCALE_END_NAMESPACE
