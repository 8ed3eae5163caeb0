#pragma once
/// \file rebase.hpp
/// REBASE, reward-balanced search (Wu et al. 2024, "Inference Scaling Laws"): a tree searched
/// depth by depth with a width budget N. The root is expanded N times; at every depth the
/// finished candidates are set aside and use up their share of the budget (W = N - finished, a
/// merged step counting its samples), and the W expansions of the next depth are allocated to the
/// open candidates in proportion to softmax(score / T) — weighted by their sample count, which is
/// what keeping merged duplicates as separate nodes would give. A node allocated nothing is pruned.
/// The search ends when W reaches 0, no open candidate is left, or after `max_steps` depths.
///
/// The real-valued shares W·p_i are rounded by largest remainder (ties to the earlier node), so
/// exactly W expansions are made per depth. Returns the best finished sequences by score.

#include <algorithm>
#include <cmath>
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

/// Options of `rebase`. Designated initialisers, one `validate()`.
struct rebase_options {
  std::size_t width = 16;     ///< N: the root's expansions and the budget of finished sequences; >= 1
  double temperature = 0.1;   ///< T: expansions in proportion to softmax(score / T); finite, > 0
  std::size_t max_steps = 40; ///< depths at most; >= 1
  step_aggregation aggregation = step_aggregation::last;
  std::size_t num_return_sequences = 1;  ///< >= 1
  /// A finished candidate scoring at least this ends the search after its depth; +inf = never.
  double stop_at_score = std::numeric_limits<double>::infinity();

  /// Throws `invalid_option` naming the broken rule.
  void validate() const {
    const auto fail = [](const std::string& what) { throw invalid_option("itscale: rebase_options." + what); };
    if (width == 0) fail("width (N) must be >= 1, got 0");
    if (!(temperature > 0) || !std::isfinite(temperature))
      fail("temperature must be finite and > 0, got " + detail::num(temperature));
    if (max_steps == 0) fail("max_steps must be >= 1, got 0");
    if (num_return_sequences == 0) fail("num_return_sequences must be >= 1, got 0");
    detail::check_stop_at_score(stop_at_score, "rebase_options");
  }
};

namespace detail {

/// Splits `total` into integer parts proportional to weights[i] = counts[i] · exp((scores[i] -
/// max) / T), by largest remainder (ties to the lower index). Sum of the parts: exactly `total`.
inline std::vector<std::size_t> apportion(std::span<const double> scores, std::span<const std::size_t> counts,
                                          std::size_t total, double temperature) {
  const std::size_t n = scores.size();
  const double top = *std::max_element(scores.begin(), scores.end());
  std::vector<double> w(n);
  for (std::size_t i = 0; i < n; ++i) w[i] = static_cast<double>(counts[i]) * std::exp((scores[i] - top) / temperature);
  const double sum = std::accumulate(w.begin(), w.end(), 0.0);
  std::vector<std::size_t> part(n);
  std::vector<double> frac(n);
  std::size_t given = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double q = static_cast<double>(total) * w[i] / sum;
    part[i] = std::min(total - given, static_cast<std::size_t>(std::floor(q)));
    frac[i] = q - std::floor(q);
    given += part[i];
  }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return frac[a] > frac[b]; });
  for (std::size_t k = 0; given < total; k = (k + 1) % n, ++given) ++part[order[k]];
  return part;
}

}  // namespace detail

/// REBASE from `prompt` (see the file comment). Errors and guarantees as `step_beam_search`.
template <StepProposer P, Verifier V>
[[nodiscard]] step_search_result rebase(P& proposer, V& verifier, std::span<const token_id> prompt,
                                        const rebase_options& opts, const step_run_options& run = {}) {
  opts.validate();
  detail::step_search_run<P, V> r(proposer, verifier, prompt, run, opts.aggregation, "rebase");
  using node = typename detail::step_search_run<P, V>::node;
  std::vector<node> frontier, finished;
  std::vector<std::size_t> alloc{opts.width};
  frontier.push_back(r.root(prompt));
  std::size_t used = 0;  // samples that finished
  run_status status = run_status::completed;
  for (std::size_t step = 0; step < opts.max_steps && !frontier.empty(); ++step) {
    if ((status = r.check_budget()) != run_status::completed) break;
    std::vector<node> kids = detail::expand_flat(r, frontier, alloc);
    frontier.clear();
    const bool done = detail::reached(kids, opts.stop_at_score);
    for (auto& n : kids) {
      if (n.terminal) used += n.count;
      (n.terminal ? finished : frontier).push_back(std::move(n));
    }
    const std::size_t left = opts.width > used ? opts.width - used : 0;
    if (done || left == 0 || frontier.empty()) break;
    std::vector<double> scores;
    std::vector<std::size_t> counts;
    for (const auto& n : frontier) {
      scores.push_back(n.score);
      counts.push_back(n.count);
    }
    const auto parts = detail::apportion(scores, counts, left, opts.temperature);
    std::vector<node> kept;
    alloc.clear();
    for (std::size_t i = 0; i < frontier.size(); ++i)
      if (parts[i] > 0) {
        kept.push_back(std::move(frontier[i]));
        alloc.push_back(parts[i]);
      }
    frontier = std::move(kept);
  }
  std::vector<const node*> done, open;
  for (const auto& n : finished) done.push_back(&n);
  for (const auto& n : frontier) open.push_back(&n);
  return r.finish(std::move(done), std::move(open), opts.num_return_sequences, status);
}

ITSCALE_END_NAMESPACE
