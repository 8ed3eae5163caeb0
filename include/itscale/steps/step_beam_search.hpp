#pragma once
/// \file step_beam_search.hpp
/// Step-level beam search with a process verifier, with the semantics of Hugging Face's
/// search-and-learn (`beam_search.py`):
///
/// - every round proposes N candidate steps: the survivors of the last round are repeated, in
///   order, until they fill N expansions (N/M survivors: M each; fewer survivors: more each);
/// - every candidate is scored by the verifier (one call per round); its score is its step scores
///   aggregated (last / min / product / mean);
/// - finished candidates (EOS, the sequence limit, the caller's predicate) leave the beam;
/// - duplicate sequences compete once (`filter_duplicates`; the proposer already merges identical
///   steps of one node, keeping their sample count);
/// - the best N/M by score survive (ties to the higher proposal log-prob, then the earlier
///   candidate), until no candidate is left, `max_steps` rounds have run, or a finished candidate
///   reaches `stop_at_score` (off by default).
///
/// Differences, chosen for determinism and a little more sense: the extra expansions of an uneven
/// refill go to the best survivors (search-and-learn: the earliest generated), and with
/// `filter_duplicates = false` a merged step with count c takes up to c places in the beam
/// (search-and-learn keeps the c copies). The last round does not switch to "generate to EOS":
/// `max_steps` is a plain depth limit. Returns the best finished sequences.
///
///     itscale::sampling_proposer prop(model, {.sampling = {.do_sample = true, .seed = 1, .temperature = 0.7f},
///                                             .delimiters = {{semicolon}}, .eos_token_id = {eos}});
///     auto best = itscale::step_beam_search(prop, verifier, prompt, {.num_candidates = 16, .expansions = 4});

#include <algorithm>
#include <cstddef>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/types.hpp"
#include "itscale/steps/step_proposer.hpp"
#include "itscale/steps/step_search.hpp"
#include "itscale/steps/verifier.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Options of `step_beam_search`. Designated initialisers, one `validate()`.
struct step_beam_options {
  std::size_t num_candidates = 16;  ///< N: candidate steps per round (search-and-learn's `n`); >= 1
  std::size_t expansions = 4;       ///< M: expansions per survivor (its `beam_width`); >= 1, divides N
  std::size_t max_steps = 40;       ///< rounds at most (its `num_iterations`); >= 1
  step_aggregation aggregation = step_aggregation::last;
  bool filter_duplicates = true;       ///< equal sequences compete once
  std::size_t num_return_sequences = 1;  ///< >= 1
  /// A finished candidate scoring at least this ends the search after its round (e.g. 1 with an
  /// exact verifier: a checked answer needs no more search); +inf = never. Not NaN.
  double stop_at_score = std::numeric_limits<double>::infinity();

  /// Throws `invalid_option` naming the broken rule.
  void validate() const {
    const auto fail = [](const std::string& what) { throw invalid_option("itscale: step_beam_options." + what); };
    if (num_candidates == 0) fail("num_candidates (N) must be >= 1, got 0");
    if (expansions == 0) fail("expansions (M) must be >= 1, got 0");
    if (num_candidates % expansions != 0)
      fail("expansions (M = " + std::to_string(expansions) + ") must divide num_candidates (N = " +
           std::to_string(num_candidates) + "): N/M candidates survive each round");
    if (max_steps == 0) fail("max_steps must be >= 1, got 0");
    if (num_return_sequences == 0) fail("num_return_sequences must be >= 1, got 0");
    detail::check_stop_at_score(stop_at_score, "step_beam_options");
  }
};

namespace detail {

/// Merges nodes holding equal token sequences into the first (counts added).
template <class P, class Node>
void merge_duplicates(const P& p, std::vector<Node>& pool) {
  std::vector<Node> kept;
  kept.reserve(pool.size());
  for (auto& n : pool) {
    const auto t = p.tokens_of(n.state);
    const auto same = std::find_if(kept.begin(), kept.end(), [&](const Node& k) {
      const auto u = p.tokens_of(k.state);
      return std::equal(t.begin(), t.end(), u.begin(), u.end());
    });
    if (same == kept.end())
      kept.push_back(std::move(n));
    else
      same->count += n.count;
  }
  pool = std::move(kept);
}

/// search-and-learn's selection and refill: the best `keep` places (a node takes one, or up to its
/// count without duplicate filtering), then `n` expansions dealt round-robin over the places.
template <class Node>
void select_and_refill(std::vector<Node>& pool, std::size_t keep, std::size_t n, bool one_place_each,
                       std::vector<Node>& beam, std::vector<std::size_t>& samples) {
  std::vector<std::size_t> order(pool.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ranks_above(pool[a], pool[b]); });
  std::vector<std::pair<std::size_t, std::size_t>> places;  // (pool index, places taken)
  std::size_t taken = 0;
  for (std::size_t i : order) {
    if (taken == keep) break;
    const std::size_t m = std::min(one_place_each ? std::size_t{1} : pool[i].count, keep - taken);
    places.emplace_back(i, m);
    taken += m;
  }
  beam.clear();
  samples.clear();
  std::size_t slot = 0;
  for (const auto& [i, m] : places) {
    std::size_t e = 0;
    for (std::size_t j = 0; j < m; ++j, ++slot) e += n / taken + (slot < n % taken ? 1 : 0);
    beam.push_back(std::move(pool[i]));
    samples.push_back(e);
  }
}

}  // namespace detail

/// Step beam search from `prompt` (see the file comment). The proposer's randomness (its seed)
/// makes the search deterministic. Throws `invalid_option` for bad options, `invalid_input` for an
/// empty prompt, `search_error` when the proposer returns no step (or an empty one) for a node,
/// `backend_error` for a verifier's NaN, out-of-range score or wrong batch size; exceptions of the
/// proposer and the verifier pass through. Every handle the search made is released on every path.
template <StepProposer P, Verifier V>
[[nodiscard]] step_search_result step_beam_search(P& proposer, V& verifier, std::span<const token_id> prompt,
                                                  const step_beam_options& opts, const step_run_options& run = {}) {
  opts.validate();
  detail::step_search_run<P, V> r(proposer, verifier, prompt, run, opts.aggregation, "step_beam_search");
  using node = typename detail::step_search_run<P, V>::node;
  std::vector<node> beam, finished;
  std::vector<std::size_t> samples{opts.num_candidates};
  beam.push_back(r.root(prompt));
  run_status status = run_status::completed;
  for (std::size_t step = 0; step < opts.max_steps && !beam.empty(); ++step) {
    if ((status = r.check_budget()) != run_status::completed) break;
    std::vector<node> pool = detail::expand_flat(r, beam, samples);
    beam.clear();
    std::vector<node> open;
    const bool done = detail::reached(pool, opts.stop_at_score);
    for (auto& n : pool) (n.terminal ? finished : open).push_back(std::move(n));
    if (done) break;
    if (opts.filter_duplicates) detail::merge_duplicates(std::as_const(proposer), open);
    detail::select_and_refill(open, opts.num_candidates / opts.expansions, opts.num_candidates, opts.filter_duplicates,
                              beam, samples);
  }
  std::vector<const node*> done, open;
  for (const auto& n : finished) done.push_back(&n);
  for (const auto& n : beam) open.push_back(&n);
  return r.finish(std::move(done), std::move(open), opts.num_return_sequences, status);
}

ITSCALE_END_NAMESPACE
