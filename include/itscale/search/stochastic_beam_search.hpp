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
///
/// A caller's processor (either form) runs on each row's logits after the min-new-tokens mask
/// and before the temperature (HF's order: processors, then warpers); p is then the distribution
/// of the processed row, and the weights estimate expectations under it.
///
/// Starts, budget and compute as `beam_search`: prompts or a caller's live sequences (forked,
/// never released; their stored row is the first step's); `run.budget` is checked between steps
/// and a cut returns the finished samples first (by key), then running sequences (by key, with
/// `stop_reason::budget` / `cancelled`) — their keys are not final, and the threshold and weights
/// of a cut prompt do not estimate anything; `on_token` and `keep_handles` are not used.
/// `result.compute` is counted by a `metered_source` around the caller's source.
///
/// Per-step cost does not depend on the generated length: sequences are nodes of a `token_tree`,
/// read back once for the samples returned; only a caller's processor makes each running sequence
/// keep its prompt and generated tokens contiguous (its last child takes them over, others copy).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
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
#include "itscale/core/rng.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/decode/generation.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/softmax.hpp"
#include "itscale/processors/chain.hpp"
#include "itscale/processors/processor.hpp"
#include "itscale/search/beam_driver.hpp"
#include "itscale/search/beam_hypotheses.hpp"
#include "itscale/search/beam_rows.hpp"
#include "itscale/search/token_tree.hpp"

ITSCALE_BEGIN_NAMESPACE

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

/// One prompt's part of a stochastic beam search result.
struct stochastic_prompt_result {
  std::size_t first = 0;  ///< index of its first sample in `sequences`
  std::size_t count = 0;  ///< how many samples it has there
  std::size_t steps = 0;  ///< tokens generated before its search ended
  run_status status = run_status::completed;  ///< as `beam_prompt_result::status`
  double threshold = -std::numeric_limits<double>::infinity();  ///< kappa: the (K+1)-th largest key
};

/// What `stochastic_beam_search` returns. Each sample is a `generation`: `tokens` (the EOS, if
/// any, included), `logprobs` (each token's log-prob under p), `logprob_sum` (log p(y), summed in
/// double), `score` (its key G(y), a Gumbel(log p(y)) variable; samples are ranked by it), `stop`.
/// The estimator's quantities are parallel to `sequences`.
struct stochastic_beam_result : search_result {
  std::vector<double> inclusion_probabilities;  ///< q(y) = 1 - exp(-exp(logprob_sum - threshold)); 1 if threshold = -inf
  std::vector<double> weights;                  ///< p(y) / q(y): the estimator weight
  std::vector<stochastic_prompt_result> prompts;  ///< one per prompt, in order

  /// Prompt `p`'s samples, by key, best first (precondition: p < prompts.size()).
  [[nodiscard]] std::span<const generation> samples(std::size_t p) const noexcept {
    return std::span<const generation>(sequences).subspan(prompts[p].first, prompts[p].count);
  }
  /// Prompt `p`'s weights, in the order of `samples(p)`.
  [[nodiscard]] std::span<const double> weights_of(std::size_t p) const noexcept {
    return std::span<const double>(weights).subspan(prompts[p].first, prompts[p].count);
  }
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

namespace detail {

/// Runs stochastic beam search from the driver's starts (options, starts and `streams` already
/// validated; `streams` empty or one per start) and assembles the result into `out`.
template <LogitSource S, AnyLogitsProcessor P>
void stochastic_search(beam_driver<S>& driver, const stochastic_beam_options& opts, const P& user,
                       std::span<const std::uint64_t> streams, const compute_budget& budget, const stopwatch& clock,
                       stochastic_beam_result& out) {
  using handle = handle_t<S>;
  using ustate = typename state_of<P>::type;
  constexpr double neg_inf = -std::numeric_limits<double>::infinity();
  const std::size_t vocab = driver.vocab();
  const std::size_t np = driver.starts();
  const std::size_t k1 = opts.num_samples + 1;  // one more than returned: its key is kappa
  const auto inv_t = static_cast<float>(1.0 / opts.temperature);
  const bool unit_t = opts.temperature == 1.0;
  constexpr bool reads = !processor_is_identity<P>;  // only a caller's processor reads tokens here

  struct node {
    std::size_t tree_node = token_tree::root;  // its last token (root: none generated yet)
    token_id last = 0;
    double logp = 0;
    double key = 0;
    std::uint64_t stream = 0;
    bool finished = false;
    stop_reason stop = stop_reason::max_new_tokens;
    handle h{};
    std::size_t row = 0;
    ustate state{};
    std::vector<token_id> context;  // prompt + generated, only with a caller's processor (running nodes)
  };
  struct candidate {
    double key;
    std::size_t item;  // index into the prompt's items
    token_id token;    // -1: the finished item itself
    double g;          // unused for finished
  };
  struct prompt_search {
    std::vector<node> items;
    std::size_t prompt_length = 0;
    bool done = false;
    std::size_t steps = 0;
    run_status status = run_status::completed;
  };

  token_tree tree;
  workspace ws;
  if constexpr (reads) ws.reserve(vocab);
  std::vector<prompt_search> ps(np);
  for (std::size_t p = 0; p < np; ++p) {
    const auto prompt = driver.start_tokens(p);
    node root;
    root.stream = streams.empty() ? prompt_stream(prompt) : streams[p];
    root.key = gumbel_from_uniform(counter_rng(opts.seed, root.stream).uniform(root_key_step, 0));
    root.h = driver.start_handle(p);
    root.row = p;
    if constexpr (StatefulLogitsProcessor<P>) root.state = user.start(prompt);
    if constexpr (reads) root.context.assign(prompt.begin(), prompt.end());
    ps[p].prompt_length = prompt.size();
    ps[p].items.push_back(std::move(root));
  }

  std::vector<candidate> cands, row_best;
  std::vector<handle> stepped, kept;
  std::vector<node> next_items;
  std::vector<std::size_t> children_left;
  std::vector<std::pair<std::size_t, std::size_t>> child_of;
  std::size_t active = np;
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
        if constexpr (reads) {
          const step_context ctx{it.context, s.prompt_length, &ws};
          if constexpr (StatefulLogitsProcessor<P>)
            user.apply(row, ctx, std::as_const(it.state));
          else
            user.apply(row, ctx);
        }
        if (!unit_t)
          for (float& x : row) x *= inv_t;
        const float top = kernels::max(row);
        if (top == masked_logit)
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
                           gumbel_from_uniform(rng.uniform(static_cast<std::uint32_t>(step),
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
          c.key = truncated_gumbel(it.key, z, c.g);
          if (c.key > neg_inf) cands.push_back(c);
        }
      }
      std::sort(cands.begin(), cands.end(), better);
      if (cands.size() > k1) cands.resize(k1);

      // Children take over their parent's processor state and context: the last child moves
      // them, the others copy them (finished children need neither).
      children_left.assign(s.items.size(), 0);
      for (const candidate& c : cands)
        if (c.token >= 0) ++children_left[c.item];
      next_items.clear();
      for (const candidate& c : cands) {
        node& parent = s.items[c.item];
        if (c.token < 0) {
          next_items.push_back(std::move(parent));
          continue;
        }
        const float lp = view.row(parent.row)[static_cast<std::size_t>(c.token)];
        const bool take = --children_left[c.item] == 0;
        const bool eos = opts.stop.is_eos(c.token);
        node n;
        n.tree_node = tree.add(parent.tree_node, c.token, lp);
        n.last = c.token;
        n.logp = parent.logp + double{lp};
        n.key = c.key;
        n.stream = child_stream(parent.stream, c.token);
        n.finished = eos || last;
        n.stop = eos ? stop_reason::eos : stop_reason::max_new_tokens;
        n.h = parent.h;  // the parent's handle until the extend gives the child its own
        n.row = parent.row;
        if (!n.finished) {
          n.state = take ? std::move(parent.state) : parent.state;
          if constexpr (StatefulLogitsProcessor<P>) user.advance(n.state, c.token);
          if constexpr (reads) {
            if (take) {
              n.context = std::move(parent.context);
            } else {  // with the parent's capacity, so that the push_back rarely reallocates
              n.context.reserve(parent.context.capacity());
              n.context.assign(parent.context.begin(), parent.context.end());
            }
            n.context.push_back(c.token);
          }
        }
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
      std::swap(s.items, next_items);
      const bool any_running = std::any_of(s.items.begin(), s.items.end(), [](const node& x) { return !x.finished; });
      if (!any_running) {
        s.done = true;
        s.steps = generated;
        --active;
        continue;
      }
      for (std::size_t i = 0; i < s.items.size(); ++i) {
        if (s.items[i].finished) continue;
        driver.fork(s.items[i].h, s.items[i].last);
        child_of.emplace_back(p, i);
      }
    }

    // Between steps: a reached limit stops every prompt still running before the next extend.
    if (driver.queued()) {
      const run_status limit = budget.check(driver.stats(), clock.seconds());
      if (limit != run_status::completed) {
        for (prompt_search& s : ps)
          if (!s.done) {
            s.status = limit;
            s.steps = generated;
          }
        break;
      }
    }

    driver.extend(step, [&](std::size_t i, handle h) {
      node& n = ps[child_of[i].first].items[child_of[i].second];
      n.h = h;
      n.row = i;
    });
  }

  out.prompts.reserve(np);
  for (std::size_t p = 0; p < np; ++p) {
    prompt_search& s = ps[p];
    stochastic_prompt_result r;
    r.first = out.sequences.size();
    r.steps = s.steps;
    r.status = s.status;
    if (s.items.size() > opts.num_samples) r.threshold = s.items[opts.num_samples].key;
    // The items are by key; a cut prompt lists its finished ones first.
    std::stable_partition(s.items.begin(), s.items.end(), [](const node& x) { return x.finished; });
    const std::size_t n = std::min(opts.num_samples, s.items.size());
    for (std::size_t i = 0; i < n; ++i) {
      const node& it = s.items[i];
      generation x;
      x.request = p;
      x.sample = i;
      tree.read(it.tree_node, x.tokens, &x.logprobs);
      x.logprob_sum = it.logp;
      x.score = it.key;
      x.stop = it.finished ? it.stop : cut_reason(s.status);
      const double q = inclusion_probability(it.logp, r.threshold);
      out.inclusion_probabilities.push_back(q);
      out.weights.push_back(std::exp(it.logp) / q);
      out.sequences.push_back(std::move(x));
    }
    r.count = n;
    if (s.status != run_status::completed) out.status = s.status;
    out.prompts.push_back(r);
  }
}

/// Checks the stream ids given for `n` starts (none, or one each).
inline void check_stream_count(std::span<const std::uint64_t> streams, std::size_t n) {
  if (!streams.empty() && streams.size() != n)
    throw invalid_input("itscale: stochastic_beam_search got " + std::to_string(streams.size()) +
                        " stream ids for " + std::to_string(n) + " prompts");
}

}  // namespace detail

/// Stochastic beam search for every prompt: `num_samples` distinct sequences per prompt, sampled
/// without replacement from softmax(processed logits / temperature), with their keys and
/// estimator weights, applying `user` (a processor of either form; see the file comment) under
/// `run.budget`. `streams` (empty, or one per prompt) are the prompts' stream ids; by default a
/// hash of the prompt's tokens, so equal prompts draw the same samples — pass distinct ids for
/// independent draws. Throws `invalid_option` / `invalid_input` before touching the source,
/// `backend_error` for unusable logits, `search_error` if a whole row is masked; the source's and
/// the processor's exceptions propagate. Every handle is released on every path; at most 2(K+1)
/// live handles per prompt.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] stochastic_beam_result stochastic_beam_search(S& source,
                                                            std::span<const std::span<const token_id>> prompts,
                                                            const stochastic_beam_options& opts, const P& user,
                                                            std::span<const std::uint64_t> streams = {},
                                                            const run_options& run = {}) {
  opts.validate(source.vocab_size());
  if (!prompts.empty()) detail::check_stream_count(streams, prompts.size());
  detail::check_beam_prompts(prompts, source.vocab_size(), "stochastic_beam_search");
  return detail::run_beam_family<stochastic_beam_result>(
      source, run.budget, [&](detail::beam_driver<S>& d) { d.prefill(prompts); },
      [&](detail::beam_driver<S>& d, const detail::stopwatch& clock, stochastic_beam_result& out) {
        detail::stochastic_search(d, opts, user, streams, run.budget, clock, out);
      });
}

/// From the caller's live sequences (forked, never released; the stored row is the first step's).
/// A start's default stream id is the hash of its tokens, as for a prompt, so the samples equal
/// those from its tokens as a prompt; `live_request::stream` / `first_sample` are not used (pass
/// `streams`).
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] stochastic_beam_result stochastic_beam_search(
    S& source, std::type_identity_t<std::span<const live_request<S>>> starts, const stochastic_beam_options& opts,
    const P& user, std::span<const std::uint64_t> streams = {}, const run_options& run = {}) {
  opts.validate(source.vocab_size());
  if (!starts.empty()) detail::check_stream_count(streams, starts.size());
  detail::check_live_starts(source, starts, "stochastic_beam_search");
  return detail::run_beam_family<stochastic_beam_result>(
      source, run.budget, [&](detail::beam_driver<S>& d) { d.start_live(starts); },
      [&](detail::beam_driver<S>& d, const detail::stopwatch& clock, stochastic_beam_result& out) {
        detail::stochastic_search(d, opts, user, streams, run.budget, clock, out);
      });
}

/// Several prompts given as vectors.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] stochastic_beam_result stochastic_beam_search(S& source,
                                                            const std::vector<std::vector<token_id>>& prompts,
                                                            const stochastic_beam_options& opts, const P& user,
                                                            std::span<const std::uint64_t> streams = {},
                                                            const run_options& run = {}) {
  const std::vector<std::span<const token_id>> spans(prompts.begin(), prompts.end());
  return stochastic_beam_search(source, std::span<const std::span<const token_id>>(spans), opts, user, streams, run);
}

/// One prompt, with stream id `stream`.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] stochastic_beam_result stochastic_beam_search(S& source, std::span<const token_id> prompt,
                                                            const stochastic_beam_options& opts, const P& user,
                                                            std::uint64_t stream, const run_options& run = {}) {
  return stochastic_beam_search(source, std::span<const std::span<const token_id>>(&prompt, 1), opts, user,
                                std::span<const std::uint64_t>(&stream, 1), run);
}

/// One live sequence, with stream id `stream`.
template <LogitSource S, AnyLogitsProcessor P>
[[nodiscard]] stochastic_beam_result stochastic_beam_search(S& source, const prefilled<S>& start,
                                                            const stochastic_beam_options& opts, const P& user,
                                                            std::uint64_t stream, const run_options& run = {}) {
  const live_request<S> r{&start};
  return stochastic_beam_search(source, std::span<const live_request<S>>(&r, 1), opts, user,
                                std::span<const std::uint64_t>(&stream, 1), run);
}

/// The overloads above with no processor of the caller's.
template <LogitSource S>
[[nodiscard]] stochastic_beam_result stochastic_beam_search(S& source,
                                                            std::span<const std::span<const token_id>> prompts,
                                                            const stochastic_beam_options& opts,
                                                            std::span<const std::uint64_t> streams = {},
                                                            const run_options& run = {}) {
  return stochastic_beam_search(source, prompts, opts, logits_processor_archetype{}, streams, run);
}
template <LogitSource S>
[[nodiscard]] stochastic_beam_result stochastic_beam_search(
    S& source, std::type_identity_t<std::span<const live_request<S>>> starts, const stochastic_beam_options& opts,
    std::span<const std::uint64_t> streams = {}, const run_options& run = {}) {
  return stochastic_beam_search(source, starts, opts, logits_processor_archetype{}, streams, run);
}
template <LogitSource S>
[[nodiscard]] stochastic_beam_result stochastic_beam_search(S& source,
                                                            const std::vector<std::vector<token_id>>& prompts,
                                                            const stochastic_beam_options& opts,
                                                            std::span<const std::uint64_t> streams = {},
                                                            const run_options& run = {}) {
  return stochastic_beam_search(source, prompts, opts, logits_processor_archetype{}, streams, run);
}
template <LogitSource S>
[[nodiscard]] stochastic_beam_result stochastic_beam_search(S& source, std::span<const token_id> prompt,
                                                            const stochastic_beam_options& opts, std::uint64_t stream,
                                                            const run_options& run = {}) {
  return stochastic_beam_search(source, prompt, opts, logits_processor_archetype{}, stream, run);
}
template <LogitSource S>
[[nodiscard]] stochastic_beam_result stochastic_beam_search(S& source, const prefilled<S>& start,
                                                            const stochastic_beam_options& opts, std::uint64_t stream,
                                                            const run_options& run = {}) {
  return stochastic_beam_search(source, start, opts, logits_processor_archetype{}, stream, run);
}

ITSCALE_END_NAMESPACE
