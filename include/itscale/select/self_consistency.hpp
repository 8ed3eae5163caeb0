#pragma once
/// \file self_consistency.hpp
/// Self-consistency (Wang et al., ICLR 2023): draw N samples per prompt, extract each one's
/// answer with a caller's extractor, and vote — by majority, or weighted by a verifier's score or
/// by the sample's length-normalised probability.
///
///     auto extract = [](std::span<const itscale::token_id> t) -> std::optional<std::string> {...};
///     auto r = itscale::self_consistency(model, prompt, extract, {.samples = 16,
///              .sampling = {.stop = {.max_new_tokens = 64, .eos_token_id = {2}}, .do_sample = true,
///                           .temperature = 0.7f}});
///     r[0].vote.answer, r[0].vote.confidence, r.compute.generated_tokens()
///
/// Sampling goes through `generate`: every prompt is prefilled once and its N samples fork it, all
/// prompts advance together in one batched `extend` per step, and sample j of a request draws
/// from the stream (seed, request.stream, first_sample + j) — so the samples are those of
/// `generate` with the same options, and adaptive consistency (adaptive_consistency.hpp) draws
/// the same samples in the same order.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/decode/generate.hpp"
#include "itscale/decode/generation.hpp"
#include "itscale/processors/sampling_options.hpp"
#include "itscale/select/consistency_result.hpp"
#include "itscale/select/vote.hpp"
#include "itscale/steps/verifier.hpp"

ITSCALE_BEGIN_NAMESPACE

/// What a sample's vote weighs.
enum class vote_weight : std::uint8_t {
  count,               ///< 1: majority vote
  verifier,            ///< the verifier's score of the complete sample (its range must be >= 0)
  mean_logprob,        ///< exp(mean token log-prob) under the processed (sampling) distribution: Wang et al.'s "normalized weighted sum"
  mean_model_logprob,  ///< exp(mean token log-prob) under the source's raw logits
};

/// Options of `self_consistency`. Designated initialisers; `validate()` states each rule.
struct self_consistency_options {
  std::size_t samples = 16;  ///< N, samples per prompt (>= 1)
  /// How each sample is drawn. `do_sample` must be true when N > 1; `num_return_sequences` is
  /// set from `samples` (leave it at 1); the log-prob outputs a weighting needs are turned on.
  sampling_options sampling = {.do_sample = true};
  vote_weight weight = vote_weight::count;
  /// Budget, cancellation and streaming of the sampling (`keep_handles` must be false). Samples
  /// cut by the budget cast no vote.
  run_options run = {};

  void validate() const {
    const auto fail = [](const std::string& what) { throw invalid_option("itscale: self_consistency_options." + what); };
    if (samples == 0) fail("samples must be >= 1, got 0");
    if (sampling.num_return_sequences != 1 && sampling.num_return_sequences != samples)
      fail("sampling.num_return_sequences must be left at 1 (it is set from samples = " + std::to_string(samples) +
           "), got " + std::to_string(sampling.num_return_sequences));
    if (samples > 1 && !sampling.do_sample) fail("sampling.do_sample must be true for samples > 1 (greedy samples are identical)");
    if (run.keep_handles) fail("run.keep_handles must be false (self-consistency hands back no live sequences)");
    sampling.validate();
    run.budget.validate();
  }
};

namespace detail {

/// The vote weight of one complete sample, for the log-prob weightings.
inline double logprob_weight(const generation& g, vote_weight w, std::size_t i) {
  const auto& lps = w == vote_weight::mean_model_logprob ? g.model_logprobs : g.logprobs;
  if (g.tokens.empty() || lps.size() != g.tokens.size())
    throw invalid_input("itscale: sample " + std::to_string(i) + " has " + std::to_string(lps.size()) +
                        " log-probs for " + std::to_string(g.tokens.size()) + " tokens");
  double sum = 0;
  for (float lp : lps) sum += lp;
  return std::exp(sum / static_cast<double>(lps.size()));
}

/// Checks that a verifier used for vote weights scores in a range of non-negative numbers.
template <Verifier V>
void check_weight_range(const V& v, const char* who) {
  const score_range r = v.range();
  if (r.lo < 0)
    throw invalid_option(std::string("itscale: ") + who + ": verifier '" + std::string(v.name()) +
                         "' scores in [" + num(r.lo) + ", " + num(r.hi) +
                         "]; summing scores as votes needs a range with lo >= 0");
}

/// Extracts the answer of every sample of `p` that was not cut, computes its weight (verifier
/// scores given in `scores`, one per uncut sample in order), and tallies the vote.
template <AnswerKey A, class Extract>
void count_votes(prompt_vote<A>& p, Extract& extract, vote_weight weight, std::span<const double> scores) {
  p.answers.assign(p.samples.size(), std::nullopt);
  if (weight != vote_weight::count) p.weights.assign(p.samples.size(), 0.0);
  std::size_t k = 0;
  for (std::size_t i = 0; i < p.samples.size(); ++i) {
    const generation& g = p.samples[i];
    if (g.stop == stop_reason::budget || g.stop == stop_reason::cancelled) continue;
    p.answers[i] = extract(std::span<const token_id>(g.tokens));
    if (weight == vote_weight::verifier)
      p.weights[i] = scores[k++];
    else if (weight != vote_weight::count)
      p.weights[i] = logprob_weight(g, weight, i);
  }
  p.vote = tally_votes(std::span<const std::optional<A>>(p.answers), p.weights);
  p.samples_spent = p.samples.size();
}

template <LogitSource S, AnswerExtractor E, class V>
consistency_result<answer_of<E>> run_self_consistency(S& source, std::span<const request> requests, E& extract,
                                                       V* verifier, const self_consistency_options& opts) {
  using A = answer_of<E>;
  const stopwatch clock;
  opts.validate();
  if (opts.weight == vote_weight::verifier && verifier == nullptr)
    throw invalid_option("itscale: self_consistency_options.weight = verifier needs the overload taking a verifier");
  if (opts.weight != vote_weight::verifier && verifier != nullptr)
    throw invalid_option("itscale: self_consistency was given a verifier but self_consistency_options.weight is not verifier");
  if constexpr (!std::is_same_v<V, verifier_archetype>)
    if (verifier != nullptr) check_weight_range(*verifier, "self_consistency");
  sampling_options so = opts.sampling;
  so.num_return_sequences = opts.samples;
  if (opts.weight == vote_weight::mean_logprob) so.output_logprobs = true;
  if (opts.weight == vote_weight::mean_model_logprob) so.output_model_logprobs = true;

  // Every handle lives inside generate: once it returns, nothing of the source is held, so an
  // extractor or verifier that throws leaves nothing behind.
  auto dec = generate(source, requests, so, opts.run);
  consistency_result<A> out;
  out.compute = dec.compute;
  out.status = dec.status;
  out.prompts.resize(requests.size());
  for (auto& g : dec.sequences) out.prompts[g.request].samples.push_back(std::move(g));

  std::vector<double> scores;
  if constexpr (!std::is_same_v<V, verifier_archetype>) {
    if (verifier != nullptr) {
      std::vector<verify_item> batch;
      for (std::size_t r = 0; r < requests.size(); ++r)
        for (const auto& g : out.prompts[r].samples)
          if (g.stop != stop_reason::budget && g.stop != stop_reason::cancelled)
            batch.push_back({requests[r].prompt, g.tokens, true});
      scores = verify(*verifier, batch, out.compute);
    }
  }
  std::size_t at = 0;
  for (auto& p : out.prompts) {
    std::size_t uncut = 0;
    for (const auto& g : p.samples) uncut += g.stop != stop_reason::budget && g.stop != stop_reason::cancelled;
    const auto mine = opts.weight == vote_weight::verifier ? std::span<const double>(scores).subspan(at, uncut)
                                                            : std::span<const double>();
    at += opts.weight == vote_weight::verifier ? uncut : 0;
    count_votes(p, extract, opts.weight, mine);
    p.stop = out.status == run_status::completed ? consistency_stop::fixed : consistency_stop::budget;
  }
  out.compute.wall_seconds = clock.seconds();
  return out;
}

}  // namespace detail

/// Self-consistency over several requests (distinct `stream`s; see `request`): N samples each,
/// voted by `opts.weight` (not `verifier`). Returns one vote per request, the compute spent
/// (sampling only) and the run status.
///
/// Throws, before touching the source: `invalid_option` for bad options (N = 0, ...),
/// `invalid_input` for bad requests. Then: `backend_error` for unusable logits, `invalid_input`
/// for a log-prob weighting of a sample without log-probs; exceptions of the source and of the
/// extractor propagate. No handle of the source is left live on any path.
template <LogitSource S, AnswerExtractor E>
[[nodiscard]] consistency_result<answer_of<E>> self_consistency(S& source, std::span<const request> requests, E&& extract,
                                                                const self_consistency_options& opts) {
  return detail::run_self_consistency(source, requests, extract, static_cast<verifier_archetype*>(nullptr), opts);
}

/// As above, weighted by `verifier` (`opts.weight` must be `vote_weight::verifier`; the
/// verifier's declared range must be >= 0). The complete samples of every prompt are scored in
/// one batched call through `verify` (metered into `compute`; NaN, out-of-range or a wrong count
/// is a `backend_error`); a verifier that throws propagates, nothing is left live.
template <LogitSource S, AnswerExtractor E, Verifier V>
[[nodiscard]] consistency_result<answer_of<E>> self_consistency(S& source, std::span<const request> requests, E&& extract,
                                                                V& verifier, const self_consistency_options& opts) {
  return detail::run_self_consistency(source, requests, extract, &verifier, opts);
}

/// One prompt (stream 0).
template <LogitSource S, AnswerExtractor E>
[[nodiscard]] consistency_result<answer_of<E>> self_consistency(S& source, std::span<const token_id> prompt, E&& extract,
                                                                const self_consistency_options& opts) {
  const request r{prompt};
  return self_consistency(source, std::span<const request>(&r, 1), extract, opts);
}

/// One prompt (stream 0), weighted by `verifier`.
template <LogitSource S, AnswerExtractor E, Verifier V>
[[nodiscard]] consistency_result<answer_of<E>> self_consistency(S& source, std::span<const token_id> prompt, E&& extract,
                                                                V& verifier, const self_consistency_options& opts) {
  const request r{prompt};
  return self_consistency(source, std::span<const request>(&r, 1), extract, verifier, opts);
}

ITSCALE_END_NAMESPACE
