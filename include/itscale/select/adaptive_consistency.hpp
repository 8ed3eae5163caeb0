#pragma once
/// \file adaptive_consistency.hpp
/// Adaptive consistency (Aggarwal et al., EMNLP 2023) and early-stopping self-consistency
/// (Li et al., ICLR 2024): draw samples in rounds and stop a prompt as soon as its vote is
/// decided, by one of the criteria of stop_criteria.hpp, or at `max_samples`.
///
/// Each prompt is prefilled once; every round forks that prefill (`generate` on a
/// `live_request` with `first_sample` = the samples already drawn), so the k-th sample of a
/// prompt is the same whether it was drawn here or by fixed self-consistency with the same seed
/// and stream: adaptive and fixed runs are compared on identical samples. All prompts still
/// sampling advance together in one batched `extend` per step.
///
/// The final answer is the majority vote over every sample drawn, with the tie rule of
/// vote.hpp; `prompt_vote::samples_spent` is what each prompt cost.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/live.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/metered_source.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/decode/generate.hpp"
#include "itscale/decode/generation.hpp"
#include "itscale/processors/sampling_options.hpp"
#include "itscale/select/consistency_result.hpp"
#include "itscale/select/self_consistency.hpp"
#include "itscale/select/stop_criteria.hpp"
#include "itscale/select/vote.hpp"

ITSCALE_BEGIN_NAMESPACE

/// The stopping criterion (see stop_criteria.hpp for the exact definitions).
enum class stop_rule : std::uint8_t {
  beta,       ///< P(leader stays ahead) under a Beta posterior on the top two counts >= `confidence`
  dirichlet,  ///< P(leader is the mode) under a Dirichlet posterior on the top-k counts >= `confidence`
  entropy,    ///< normalised vote entropy <= `max_entropy`
  window,     ///< a window of `window` consecutive samples is unanimous (Li et al.'s ESC)
};

/// Options of `adaptive_consistency`. Designated initialisers; `validate()` states each rule.
struct adaptive_options {
  stop_rule rule = stop_rule::beta;
  double confidence = 0.95;       ///< beta, dirichlet: in (0, 1]  (Aggarwal et al.: 0.95)
  double max_entropy = 0.75;      ///< entropy: in [0, 1]          (the reference code's default)
  std::size_t window = 5;         ///< window: w >= 1
  std::size_t dirichlet_top_k = 5;  ///< dirichlet: answers entering the posterior (>= 2; the reference's 5)
  std::size_t max_samples = 40;   ///< per prompt (>= 1)  (Aggarwal et al.'s budget: 40)
  std::size_t min_samples = 1;    ///< no prompt stops before this many samples (1..max_samples)
  /// Samples drawn per prompt per round (>= 1). 1 checks after every sample, as the papers do;
  /// larger rounds batch more rows per step but may overshoot the stopping point by up to
  /// round_size - 1 samples (the window rule checks at window boundaries only, so round sizes
  /// dividing `window` never overshoot it).
  std::size_t round_size = 1;
  /// How each sample is drawn (`do_sample` must be true; `num_return_sequences` left at 1).
  sampling_options sampling = {.do_sample = true};
  /// Budget (over all rounds), cancellation and streaming (`keep_handles` must be false). On
  /// reaching the budget every prompt still sampling stops with `consistency_stop::budget`;
  /// samples cut mid-way cast no vote.
  run_options run = {};

  void validate() const {
    const auto fail = [](const std::string& what) { throw invalid_option("itscale: adaptive_options." + what); };
    if (!(confidence > 0 && confidence <= 1)) fail("confidence must be in (0, 1], got " + detail::num(confidence));
    if (!(max_entropy >= 0 && max_entropy <= 1)) fail("max_entropy must be in [0, 1], got " + detail::num(max_entropy));
    if (window == 0) fail("window must be >= 1, got 0");
    if (dirichlet_top_k < 2) fail("dirichlet_top_k must be >= 2, got " + std::to_string(dirichlet_top_k));
    if (max_samples == 0) fail("max_samples must be >= 1, got 0");
    if (min_samples == 0 || min_samples > max_samples)
      fail("min_samples must be in [1, max_samples = " + std::to_string(max_samples) + "], got " +
           std::to_string(min_samples));
    if (round_size == 0) fail("round_size must be >= 1, got 0");
    if (!sampling.do_sample) fail("sampling.do_sample must be true (greedy samples are identical)");
    if (sampling.num_return_sequences != 1)
      fail("sampling.num_return_sequences must be left at 1 (rounds set it), got " +
           std::to_string(sampling.num_return_sequences));
    if (run.keep_handles) fail("run.keep_handles must be false");
    sampling.validate();
    run.budget.validate();
  }
};

namespace detail {

/// The budget left for one round: each limit minus what the run has spent (precondition: no
/// limit reached yet, so every limit left is >= 1 and 0 still means unlimited).
inline compute_budget remaining_budget(const compute_budget& b, const compute_stats& used, double elapsed) {
  compute_budget r;
  r.stop = b.stop;
  const auto left = [](std::uint64_t limit, std::uint64_t spent) -> std::uint64_t {
    if (limit == 0) return 0;
    return spent >= limit ? 1 : limit - spent;
  };
  r.max_generated_tokens = left(b.max_generated_tokens, used.generated_tokens());
  r.max_total_tokens = left(b.max_total_tokens, used.total_tokens());
  r.max_source_calls = left(b.max_source_calls, used.source_calls());
  r.max_verifier_calls = left(b.max_verifier_calls, used.verifier_calls);
  r.max_seconds = b.max_seconds > 0 ? std::max(b.max_seconds - elapsed, 1e-9) : 0.0;
  return r;
}

/// Evaluates the criterion on a prompt's votes so far; returns (value, decided).
template <AnswerKey A>
std::pair<double, bool> evaluate_criterion(const prompt_vote<A>& p, const adaptive_options& o, std::size_t& windows_checked) {
  std::vector<std::size_t> counts;
  for (const auto& d : p.vote.distribution) counts.push_back(d.count);
  switch (o.rule) {
    case stop_rule::beta: {
      if (counts.empty()) return {0.0, false};
      const double v = beta_stop_probability(counts[0], counts.size() > 1 ? counts[1] : 0);
      return {v, v >= o.confidence};
    }
    case stop_rule::dirichlet: {
      if (counts.empty()) return {0.0, false};
      const double v = dirichlet_stop_probability(counts, o.dirichlet_top_k);
      return {v, v >= o.confidence};
    }
    case stop_rule::entropy: {
      const double v = normalised_vote_entropy(counts);
      return {v, p.vote.answered >= 2 && v <= o.max_entropy};
    }
    case stop_rule::window: {
      // Every window completed since the last check, in order; the first unanimous one decides.
      bool any = false;
      for (; (windows_checked + 1) * o.window <= p.answers.size(); ++windows_checked) {
        any = true;
        const std::size_t b = windows_checked * o.window;
        bool same = p.answers[b].has_value();
        for (std::size_t i = b + 1; same && i < b + o.window; ++i) same = p.answers[i] && *p.answers[i] == *p.answers[b];
        if (same) {
          ++windows_checked;
          return {1.0, true};
        }
      }
      return {any ? 0.0 : std::numeric_limits<double>::quiet_NaN(), false};
    }
  }
  return {0.0, false};
}

}  // namespace detail

/// Adaptive consistency over several requests (distinct `stream`s): rounds of `round_size`
/// samples per prompt still undecided, until its criterion is met (`consistency_stop::criterion`),
/// `max_samples` is reached, or the run's budget runs out. Returns per prompt the majority vote
/// over its samples, the samples, `samples_spent`, why it stopped and the criterion's last
/// value; and the compute of the whole run (prefills included).
///
/// Throws, before touching the source: `invalid_option` for bad options, `invalid_input` for bad
/// prompts or repeated streams. Then `backend_error` for unusable logits; exceptions of the source
/// and the extractor propagate. Every handle created (the prefills included) is released on
/// every path.
template <LogitSource S, AnswerExtractor E>
[[nodiscard]] consistency_result<answer_of<E>> adaptive_consistency(S& source, std::span<const request> requests,
                                                                    E&& extract, const adaptive_options& opts) {
  using A = answer_of<E>;
  const detail::stopwatch clock;
  opts.validate();
  const std::size_t vocab = source.vocab_size();
  opts.sampling.validate(vocab);
  detail::check_requests(requests, vocab, opts.max_samples, "adaptive_consistency");

  consistency_result<A> out;
  out.prompts.resize(requests.size());
  // One prefill per prompt, owned here (released when `starts` goes out of scope, on every path).
  std::vector<prefilled<S>> starts;
  starts.reserve(requests.size());
  {
    metered_source<S> metered(source, out.compute);
    for (const auto& r : requests) {
      auto p = prefill(metered, r.prompt);
      starts.push_back({owned_handle<S>(source, p.handle.release()), std::move(p.tokens), std::move(p.logits)});
    }
  }
  const std::uint64_t held = starts.size();
  out.compute.peak_live_handles = held;

  std::vector<std::size_t> active(requests.size());
  for (std::size_t r = 0; r < active.size(); ++r) active[r] = r;
  std::vector<std::size_t> windows(requests.size(), 0);
  sampling_options so = opts.sampling;
  std::size_t spent = 0;  // every active prompt has drawn the same number of samples
  while (!active.empty()) {
    if (const run_status st = opts.run.budget.check(out.compute, clock.seconds()); st != run_status::completed) {
      out.status = st;
      for (std::size_t r : active) out.prompts[r].stop = consistency_stop::budget;
      break;
    }
    const std::size_t n = std::min(opts.round_size, opts.max_samples - spent);
    std::vector<live_request<S>> round;
    round.reserve(active.size());
    for (std::size_t r : active)
      round.push_back({&starts[r], requests[r].stream,
                       static_cast<std::uint32_t>(requests[r].first_sample + spent)});
    so.num_return_sequences = n;
    run_options run = opts.run;
    run.budget = detail::remaining_budget(opts.run.budget, out.compute, clock.seconds());
    auto dec = generate(source, std::span<const live_request<S>>(round), so, run);
    const std::uint64_t peak = dec.compute.peak_live_handles + held;
    out.compute += dec.compute;
    out.compute.peak_live_handles = std::max(out.compute.peak_live_handles, peak);
    spent += n;
    for (auto& g : dec.sequences) {
      prompt_vote<A>& p = out.prompts[active[g.request]];
      const bool cut = g.stop == stop_reason::budget || g.stop == stop_reason::cancelled;
      p.answers.push_back(cut ? std::nullopt : extract(std::span<const token_id>(g.tokens)));
      p.samples.push_back(std::move(g));
    }
    std::vector<std::size_t> still;
    for (std::size_t r : active) {
      prompt_vote<A>& p = out.prompts[r];
      p.vote = tally_votes(std::span<const std::optional<A>>(p.answers));
      p.samples_spent = p.samples.size();
      if (dec.status != run_status::completed) {
        p.stop = consistency_stop::budget;
        continue;
      }
      if (spent >= opts.min_samples) {
        const auto [value, decided] = detail::evaluate_criterion(p, opts, windows[r]);
        p.criterion = value;
        if (decided) {
          p.stop = consistency_stop::criterion;
          continue;
        }
      }
      if (spent >= opts.max_samples) {
        p.stop = consistency_stop::max_samples;
        continue;
      }
      still.push_back(r);
    }
    if (dec.status != run_status::completed) out.status = dec.status;
    active = std::move(still);
  }
  starts.clear();
  out.compute.wall_seconds = clock.seconds();
  return out;
}

/// One prompt (stream 0).
template <LogitSource S, AnswerExtractor E>
[[nodiscard]] consistency_result<answer_of<E>> adaptive_consistency(S& source, std::span<const token_id> prompt,
                                                                    E&& extract, const adaptive_options& opts) {
  const request r{prompt};
  return adaptive_consistency(source, std::span<const request>(&r, 1), extract, opts);
}

ITSCALE_END_NAMESPACE
