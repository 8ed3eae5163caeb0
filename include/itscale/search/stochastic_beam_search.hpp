#pragma once
/// \file stochastic_beam_search.hpp
/// Stochastic beam search (Kool, van Hoof, Welling, "Stochastic Beams and Where to Find Them",
/// ICML 2019): K sequences sampled without replacement from the model, exactly as Gumbel-top-k
/// over all complete sequences would, by a beam search over perturbed log-probs.
///
/// Every node y of the sequence tree gets a key G(y) ~ Gumbel(log p(y)); the root's is drawn
/// from Gumbel(0), and the keys of a node's children are Gumbel(log p(child)) variables
/// conditioned on their maximum being the parent's key (the truncated Gumbel, computed with the
/// numerically stable form of the paper's appendix). Each step keeps the K + 1 best keys among
/// the children of the running nodes and the sequences already finished; a finished sequence's
/// key is final, so the K + 1 best complete sequences are found exactly. The first K are the
/// samples; the (K+1)-th key is the threshold kappa of the estimator (section 4.2 of the paper):
///
///     E[f(y)] ~= sum over samples of weight(y) * f(y),   weight(y) = p(y) / q(y),
///     q(y) = P(G(y) > kappa) = 1 - exp(-exp(log p(y) - kappa))
///
/// unbiased (priority sampling); with fewer than K + 1 complete sequences kappa = -inf, q = 1 and
/// the sum is exact. p is the distribution sampled: softmax(logits / temperature), with EOS
/// masked before `min_new_tokens`.
///
/// Randomness: the noise of token t below node y is counter_rng(seed, stream(y)).uniform(step, t),
/// where stream(y) hashes the prompt's stream id and y's generated tokens, and step = number of
/// generated tokens of y; the root key uses step 2^32 - 1. Results therefore depend only on the
/// seed, the stream id and the model — not on batch composition or the order of beams. Keys are
/// computed in double from the float log-probs (the truncation subtracts nearly equal numbers),
/// by a scalar loop: one Philox call and two logs per token of each running row.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/rng.hpp"
#include "itscale/core/detail/source_rows.hpp"
#include "itscale/processors/chain.hpp"
#include "itscale/processors/processor.hpp"
#include "itscale/decode/generation.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/softmax.hpp"
#include "itscale/search/beam_driver.hpp"
#include "itscale/search/beam_options.hpp"

namespace itscale {
inline namespace v0 {

struct stochastic_beam_options {
  std::size_t num_samples = 4;              ///< K >= 1 distinct sequences per prompt
  double temperature = 1.0;                 ///< finite, > 0: p = softmax(logits / temperature)
  stopping stop = {};                       ///< length and EOS rules; stop_sequences are not supported (yet)
  std::uint64_t seed = 0;

  void validate() const {
    auto fail = [](const std::string& what) { throw invalid_option("itscale: stochastic_beam_options." + what); };
    if (num_samples == 0) fail("num_samples must be >= 1, got 0");
    if (num_samples >= std::numeric_limits<std::uint32_t>::max()) fail("num_samples is too large");
    if (!std::isfinite(temperature) || !(temperature > 0))
      fail("temperature must be finite and > 0, got " + detail::num(temperature));
    stop.validate("stochastic_beam_options.stop");
    if (stop.max_new_tokens >= std::numeric_limits<std::uint32_t>::max()) fail("stop.max_new_tokens is too large");
    if (!stop.stop_sequences.empty()) fail("stop.stop_sequences is not supported by stochastic beam search (use eos_token_id)");
  }

  void validate(std::size_t vocab) const {
    validate();
    stop.validate(vocab, "stochastic_beam_options.stop");
  }
};

/// One sampled sequence.
struct stochastic_sample {
  std::vector<token_id> tokens;   ///< generated tokens (the EOS, if any, included)
  std::vector<float> logprobs;    ///< each token's log-prob under p
  double logprob = 0;             ///< log p(y): their sum (in double)
  double key = 0;                 ///< G(y), its Gumbel(log p(y)) key; samples are ranked by it
  double inclusion_probability = 1;  ///< q(y) = 1 - exp(-exp(logprob - threshold)); 1 if threshold = -inf
  double weight = 0;              ///< p(y) / q(y): the estimator weight
  stop_reason stop = stop_reason::max_new_tokens;
};

struct stochastic_beam_result {
  std::vector<stochastic_sample> samples;  ///< by key, best first; num_samples (fewer only if fewer sequences exist)
  double threshold = -std::numeric_limits<double>::infinity();  ///< kappa: the (K+1)-th largest key
  std::size_t steps = 0;                   ///< tokens generated before the search of this prompt ended
};

namespace detail {

inline constexpr std::uint32_t root_key_step = 0xFFFFFFFFu;

[[nodiscard]] constexpr std::uint64_t stream_mix(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// The stream of a child node: its parent's stream and the token.
[[nodiscard]] constexpr std::uint64_t child_stream(std::uint64_t parent, token_id t) noexcept {
  return stream_mix(parent ^ stream_mix(static_cast<std::uint64_t>(static_cast<std::uint32_t>(t)) + 1));
}

/// The default stream id of a prompt: a hash of its tokens.
[[nodiscard]] inline std::uint64_t prompt_stream(std::span<const token_id> prompt) noexcept {
  std::uint64_t s = stream_mix(prompt.size());
  for (token_id t : prompt) s = child_stream(s, t);
  return s;
}

/// Gumbel(0) noise from a uniform in [0, 1) (u = 0 gives -inf).
[[nodiscard]] inline double gumbel_from_uniform(double u) noexcept { return -std::log(-std::log(u)); }

/// log(1 - exp(a)) for a <= 0, accurate on both sides of -ln 2 (Maechler 2012).
[[nodiscard]] inline double log1mexp(double a) noexcept {
  return a > -0.6931471805599453 ? std::log(-std::expm1(a)) : std::log1p(-std::exp(a));
}

/// The key of a child: a Gumbel variable `g` (location log p(child)) conditioned on the maximum
/// `z` of its siblings' being `t` (the parent's key). Equals -log(exp(-t) - exp(-z) + exp(-g)),
/// computed as in Kool et al. 2019, appendix B: v = t - g + log1mexp(g - z),
/// key = t - max(v, 0) - log1p(exp(-|v|)). Precondition: g <= z.
[[nodiscard]] inline double truncated_gumbel(double t, double z, double g) noexcept {
  if (g == -std::numeric_limits<double>::infinity()) return g;
  const double v = t - g + log1mexp(g - z);
  return t - std::max(v, 0.0) - std::log1p(std::exp(-std::abs(v)));
}

/// Inclusion probability q = 1 - exp(-exp(logp - kappa)).
[[nodiscard]] inline double inclusion_probability(double logp, double kappa) noexcept {
  if (kappa == -std::numeric_limits<double>::infinity()) return 1.0;
  return -std::expm1(-std::exp(logp - kappa));
}

}  // namespace detail

/// Stochastic beam search for every prompt: `num_samples` distinct sequences per prompt, sampled
/// without replacement from softmax(logits / temperature), with their keys and estimator weights.
/// `streams` (empty, or one per prompt) are the prompts' stream ids; by default a hash of the
/// prompt's tokens, so equal prompts draw the same samples — pass distinct ids for independent
/// draws. Throws `invalid_option` / `invalid_input` before touching the source, `backend_error`
/// for unusable logits, `search_error` if the source masks a whole row; the source's exceptions
/// propagate. Every handle is released on every path; at most 2(K+1) live handles per prompt.
template <LogitSource S>
[[nodiscard]] std::vector<stochastic_beam_result> stochastic_beam_search(
    S& source, std::span<const std::span<const token_id>> prompts, const stochastic_beam_options& opts,
    std::span<const std::uint64_t> streams = {}) {
  const std::size_t vocab = source.vocab_size();
  opts.validate(vocab);
  if (!prompts.empty() && !streams.empty() && streams.size() != prompts.size())
    throw invalid_input("itscale: stochastic_beam_search got " + std::to_string(streams.size()) +
                        " stream ids for " + std::to_string(prompts.size()) + " prompts");
  detail::check_beam_prompts(prompts, vocab, "stochastic_beam_search");

  using handle = handle_t<S>;
  constexpr double neg_inf = -std::numeric_limits<double>::infinity();
  const std::size_t k1 = opts.num_samples + 1;  // one more than returned: its key is kappa
  const auto inv_t = static_cast<float>(1.0 / opts.temperature);
  const bool unit_t = opts.temperature == 1.0;

  struct node {
    std::vector<token_id> tokens;  // generated only
    std::vector<float> logprobs;
    double logp = 0;
    double key = 0;
    std::uint64_t stream = 0;
    bool finished = false;
    stop_reason stop = stop_reason::max_new_tokens;
    handle h{};
    std::size_t row = 0;
  };
  struct candidate {
    double key;
    std::size_t item;  // index into the prompt's items
    token_id token;    // -1: the finished item itself
    double g;          // unused for finished
  };
  struct prompt_search {
    std::vector<node> items;
    bool done = false;
    stochastic_beam_result out;
  };

  std::vector<prompt_search> ps(prompts.size());
  detail::beam_driver<S> driver(source, vocab);
  driver.prefill(prompts, [&](std::size_t p, handle h) {
    node root;
    root.stream = streams.empty() ? detail::prompt_stream(prompts[p]) : streams[p];
    root.key = detail::gumbel_from_uniform(counter_rng(opts.seed, root.stream).uniform(detail::root_key_step, 0));
    root.h = h;
    root.row = p;
    ps[p].items.push_back(std::move(root));
  });

  std::vector<candidate> cands, row_best;
  std::vector<handle> stepped, kept;
  std::vector<std::pair<std::size_t, std::size_t>> child_of;
  std::size_t active = prompts.size();
  const auto better = [](const candidate& a, const candidate& b) {
    if (a.key != b.key) return a.key > b.key;
    return a.item != b.item ? a.item < b.item : a.token < b.token;
  };

  for (std::size_t step = 0; active > 0; ++step) {
    const logits_view view = driver.view();
    child_of.clear();
    const std::size_t generated = step + 1;
    const bool last = generated >= opts.stop.max_new_tokens;
    const bool eos_masked = step < opts.stop.min_new_tokens;

    for (std::size_t p = 0; p < ps.size(); ++p) {
      prompt_search& s = ps[p];
      if (s.done) continue;
      cands.clear();
      for (std::size_t i = 0; i < s.items.size(); ++i) {
        node& it = s.items[i];
        if (it.finished) {
          cands.push_back({it.key, i, -1, 0});
          continue;
        }
        const auto row = view.row(it.row);
        if (eos_masked)
          for (token_id e : opts.stop.eos_token_id) row[static_cast<std::size_t>(e)] = masked_logit;
        if (!unit_t)
          for (float& x : row) x *= inv_t;
        if (kernels::max(row) == masked_logit)
          throw search_error("itscale: every token is masked at step " + std::to_string(step) + " of prompt " +
                             std::to_string(p));
        kernels::log_softmax(row);
        // The k1 best perturbed children of this node (only they can be among the k1 best overall),
        // and the maximum over all of them, which the truncation needs.
        const counter_rng rng(opts.seed, it.stream);
        row_best.clear();
        double z = neg_inf;
        for (std::size_t t = 0; t < vocab; ++t) {
          if (row[t] == masked_logit) continue;
          const double g = it.logp + double{row[t]} +
                           detail::gumbel_from_uniform(rng.uniform(static_cast<std::uint32_t>(step),
                                                                   static_cast<std::uint32_t>(t)));
          z = std::max(z, g);
          if (row_best.size() == k1 && !(g > row_best.back().g)) continue;
          const candidate c{0, i, static_cast<token_id>(t), g};
          auto at = std::upper_bound(row_best.begin(), row_best.end(), g,
                                     [](double x, const candidate& y) { return x > y.g; });
          row_best.insert(at, c);
          if (row_best.size() > k1) row_best.pop_back();
        }
        for (candidate c : row_best) {
          c.key = detail::truncated_gumbel(it.key, z, c.g);
          if (c.key > neg_inf) cands.push_back(c);
        }
      }
      std::sort(cands.begin(), cands.end(), better);
      if (cands.size() > k1) cands.resize(k1);

      std::vector<node> next_items;
      next_items.reserve(cands.size());
      for (const candidate& c : cands) {
        const node& parent = s.items[c.item];
        if (c.token < 0) {
          next_items.push_back(parent);
          continue;
        }
        const float lp = view.row(parent.row)[static_cast<std::size_t>(c.token)];
        node n;
        n.tokens = parent.tokens;
        n.tokens.push_back(c.token);
        n.logprobs = parent.logprobs;
        n.logprobs.push_back(lp);
        n.logp = parent.logp + double{lp};
        n.key = c.key;
        n.stream = detail::child_stream(parent.stream, c.token);
        const bool eos =
            std::find(opts.stop.eos_token_id.begin(), opts.stop.eos_token_id.end(), c.token) != opts.stop.eos_token_id.end();
        n.finished = eos || last;
        n.stop = eos ? stop_reason::eos : stop_reason::max_new_tokens;
        n.h = parent.h;  // the parent's handle until the extend gives the child its own
        next_items.push_back(std::move(n));
      }

      // Finished nodes hold no handle (theirs is a stale copy of the parent's).
      stepped.clear();
      kept.clear();
      for (const node& it : s.items)
        if (!it.finished) stepped.push_back(it.h);
      for (const node& it : next_items)
        if (!it.finished) kept.push_back(it.h);
      driver.retire(stepped, kept);
      s.items = std::move(next_items);
      const bool any_running = std::any_of(s.items.begin(), s.items.end(), [](const node& x) { return !x.finished; });
      if (!any_running) {
        s.done = true;
        s.out.steps = generated;
        --active;
        continue;
      }
      for (std::size_t i = 0; i < s.items.size(); ++i) {
        if (s.items[i].finished) continue;
        driver.fork(s.items[i].h, s.items[i].tokens.back());
        child_of.emplace_back(p, i);
      }
    }

    driver.extend(step, [&](std::size_t i, handle h) {
      node& n = ps[child_of[i].first].items[child_of[i].second];
      n.h = h;
      n.row = i;
    });
  }

  std::vector<stochastic_beam_result> out;
  out.reserve(ps.size());
  for (prompt_search& s : ps) {
    stochastic_beam_result& r = s.out;
    if (s.items.size() > opts.num_samples) r.threshold = s.items[opts.num_samples].key;
    const std::size_t n = std::min(opts.num_samples, s.items.size());
    for (std::size_t i = 0; i < n; ++i) {
      node& it = s.items[i];
      stochastic_sample x;
      x.tokens = std::move(it.tokens);
      x.logprobs = std::move(it.logprobs);
      x.logprob = it.logp;
      x.key = it.key;
      x.inclusion_probability = detail::inclusion_probability(it.logp, r.threshold);
      x.weight = std::exp(it.logp) / x.inclusion_probability;
      x.stop = it.stop;
      r.samples.push_back(std::move(x));
    }
    out.push_back(std::move(r));
  }
  return out;
}

/// Several prompts given as vectors.
template <LogitSource S>
[[nodiscard]] std::vector<stochastic_beam_result> stochastic_beam_search(
    S& source, const std::vector<std::vector<token_id>>& prompts, const stochastic_beam_options& opts,
    std::span<const std::uint64_t> streams = {}) {
  std::vector<std::span<const token_id>> spans(prompts.begin(), prompts.end());
  return stochastic_beam_search(source, std::span<const std::span<const token_id>>(spans), opts, streams);
}

/// One prompt, with stream id `stream`.
template <LogitSource S>
[[nodiscard]] stochastic_beam_result stochastic_beam_search(S& source, std::span<const token_id> prompt,
                                                            const stochastic_beam_options& opts,
                                                            std::uint64_t stream) {
  auto r = stochastic_beam_search(source, std::span<const std::span<const token_id>>(&prompt, 1), opts,
                                  std::span<const std::uint64_t>(&stream, 1));
  return std::move(r.front());
}

}  // namespace v0
}  // namespace itscale
