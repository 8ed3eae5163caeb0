#pragma once
/// \file mbr.hpp
/// Minimum Bayes risk decoding: among N candidates (samples, or any list), pick the one with the
/// highest expected utility against the candidates themselves as pseudo-references (the
/// sampling-based MBR of Eikema & Aziz, and of mbrs): EU(h) = mean over references r of u(h, r).
///
/// Full mode computes each unordered pair once (`MbrUtility::pair` returns both directions),
/// N (N + 1) / 2 calls with the diagonal, accumulating the expected utilities on the fly (no
/// N x N storage unless asked). Ties go to the lowest index.
///
/// Confidence-based pruning (Cheng & Vlachos, EMNLP 2023), optional — what is implemented:
/// 1. The pseudo-references are the N candidates in a seeded random order π (a prefix of π is a
///    uniform subsample, also when the candidates are not i.i.d., e.g. a beam's n-best).
/// 2. For each r_t of the schedule (default 8, 16, 32, ... doubling, then N), every surviving
///    hypothesis h gets u(h, π_k) for k < r_t (pairs computed once and reused, both directions),
///    and its estimate ÊU_t(h) = mean over those r_t references. h* = the argmax (lowest index on
///    ties).
/// 3. Unless r_t = N: B bootstrap resamples of the r_t references (drawn with replacement from
///    counter-based streams (seed, t), shared by all hypotheses) give, for each surviving h ≠ h*,
///    its win rate = the fraction of resamples in which h's mean utility is >= h*'s. h is pruned
///    when win rate < 1 - alpha.
/// 4. Stop when one hypothesis survives or after r_t = N; the answer is the survivor with the
///    highest estimate on the most references it was evaluated against.
/// The self pair u(h, h) counts whenever h is among the sampled references (pruning requires
/// `include_self`). A utility returning NaN or ±inf is a `backend_error`.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/rng.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/select/best_of_n.hpp"
#include "itscale/select/mbr_utility.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Confidence-based pruning of the hypothesis set (see the file comment).
struct mbr_pruning {
  bool enabled = false;
  /// Reference counts r_1 < r_2 < ... (each >= 2; values >= N end the schedule at N). Empty:
  /// 8, 16, 32, ... then N.
  std::vector<std::size_t> schedule = {};
  double alpha = 0.99;                 ///< in (0, 1): prune h when P(h beats the best) < 1 - alpha
  std::size_t bootstrap_samples = 500; ///< B >= 1
  std::uint64_t seed = 0;              ///< key of the reference order and of the resamples
};

/// Options of `mbr`.
struct mbr_options {
  bool include_self = true;   ///< a candidate is one of its own pseudo-references (u(h, h) counts)
  bool keep_matrix = false;   ///< return the N x N utility matrix (NaN where pruning skipped a pair)
  mbr_pruning pruning = {};

  void validate() const {
    const auto fail = [](const std::string& what) { throw invalid_option("itscale: mbr_options." + what); };
    if (!pruning.enabled) return;
    if (!include_self) fail("pruning.enabled needs include_self = true");
    if (!(pruning.alpha > 0 && pruning.alpha < 1)) fail("pruning.alpha must be in (0, 1), got " + detail::num(pruning.alpha));
    if (pruning.bootstrap_samples == 0) fail("pruning.bootstrap_samples must be >= 1, got 0");
    for (std::size_t k = 0; k < pruning.schedule.size(); ++k) {
      if (pruning.schedule[k] < 2) fail("pruning.schedule values must be >= 2, got " + std::to_string(pruning.schedule[k]));
      if (k > 0 && pruning.schedule[k] <= pruning.schedule[k - 1]) fail("pruning.schedule must be strictly increasing");
    }
  }
};

/// What `mbr` returns.
struct mbr_result {
  std::size_t best = 0;
  /// Per candidate: its expected utility (pruned candidates: the estimate when they were pruned).
  std::vector<double> expected_utility;
  /// References behind each `expected_utility` (N, or N - 1 without `include_self`; fewer when pruned).
  std::vector<std::size_t> references;
  std::vector<std::size_t> order;       ///< best first: survivors by expected utility, then pruned ones by estimate
  std::vector<double> matrix;           ///< `keep_matrix`: row-major N x N, matrix[i * N + j] = u(hyp i, ref j)
  std::uint64_t pairs = 0;              ///< `MbrUtility::pair` calls
  std::vector<std::size_t> pruned_at;   ///< pruning: schedule step at which a candidate was pruned; npos if it survived
  std::size_t survivors = 0;            ///< candidates never pruned
  double seconds = 0;                   ///< wall time of the call (prepare included)
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
};

namespace detail {

template <class U>
void check_utility(const U& u, utility_pair p, std::size_t i, std::size_t j) {
  if (!std::isfinite(p.forward) || !std::isfinite(p.backward))
    throw backend_error("itscale: MBR utility '" + std::string(u.name()) + "' returned " +
                        num(std::isfinite(p.forward) ? p.backward : p.forward) + " for the pair (" + std::to_string(i) +
                        ", " + std::to_string(j) + ")");
}

template <MbrUtility U>
void mbr_full(std::size_t n, U& u, const mbr_options& opts, mbr_result& out) {
  std::vector<double> sum(n, 0.0);
  if (opts.keep_matrix) out.matrix.assign(n * n, std::numeric_limits<double>::quiet_NaN());
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = opts.include_self ? i : i + 1; j < n; ++j) {
      const utility_pair p = u.pair(i, j);
      ++out.pairs;
      check_utility(u, p, i, j);
      sum[i] += p.forward;
      if (j != i) sum[j] += p.backward;
      if (opts.keep_matrix) {
        out.matrix[i * n + j] = p.forward;
        out.matrix[j * n + i] = p.backward;
      }
    }
  const std::size_t refs = opts.include_self ? n : n - 1;
  out.references.assign(n, refs);
  out.expected_utility.resize(n);
  for (std::size_t i = 0; i < n; ++i) out.expected_utility[i] = refs == 0 ? 0.0 : sum[i] / static_cast<double>(refs);
  out.pruned_at.assign(n, mbr_result::npos);
  out.survivors = n;
}

template <MbrUtility U>
void mbr_pruned(std::size_t n, U& u, const mbr_options& opts, mbr_result& out) {
  const mbr_pruning& pr = opts.pruning;
  constexpr double unknown = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> m(n * n, unknown);  // m[h * n + r] = u(hyp h, ref r)
  const auto get = [&](std::size_t h, std::size_t r) {
    double& x = m[h * n + r];
    if (std::isnan(x)) {
      const std::size_t a = std::min(h, r), b = std::max(h, r);
      const utility_pair p = u.pair(a, b);
      ++out.pairs;
      check_utility(u, p, a, b);
      m[a * n + b] = p.forward;
      m[b * n + a] = p.backward;
    }
    return x;
  };
  // The reference order: a seeded Fisher-Yates shuffle.
  std::vector<std::size_t> perm(n);
  std::iota(perm.begin(), perm.end(), std::size_t{0});
  const counter_rng shuffle(pr.seed, 0xFFFFFFFFull << 32);
  for (std::size_t k = n; k > 1; --k) {
    const auto pick = static_cast<std::size_t>(shuffle.uniform(0, static_cast<std::uint32_t>(k)) * static_cast<double>(k));
    std::swap(perm[k - 1], perm[std::min(pick, k - 1)]);
  }
  std::vector<std::size_t> schedule;
  if (pr.schedule.empty())
    for (std::size_t r = 8; r < n; r *= 2) schedule.push_back(r);
  else
    for (std::size_t r : pr.schedule)
      if (r < n) schedule.push_back(r);
  schedule.push_back(n);

  std::vector<std::size_t> alive(n);
  std::iota(alive.begin(), alive.end(), std::size_t{0});
  out.pruned_at.assign(n, mbr_result::npos);
  out.expected_utility.assign(n, 0.0);
  out.references.assign(n, 0);
  std::vector<double> counts, diff;
  for (std::size_t t = 0; t < schedule.size(); ++t) {
    const std::size_t r = schedule[t];
    for (std::size_t h : alive) {
      double s = 0;
      for (std::size_t k = 0; k < r; ++k) s += get(h, perm[k]);
      out.expected_utility[h] = s / static_cast<double>(r);
      out.references[h] = r;
    }
    std::size_t best = alive.front();
    for (std::size_t h : alive)
      if (out.expected_utility[h] > out.expected_utility[best]) best = h;
    if (r == n || alive.size() == 1) break;
    // Bootstrap: counts[b * r + k] = how often reference k is drawn in resample b.
    const std::size_t nb = pr.bootstrap_samples;
    counts.assign(nb * r, 0.0);
    const counter_rng draws(pr.seed, t);
    for (std::size_t b = 0; b < nb; ++b)
      for (std::size_t k = 0; k < r; ++k) {
        const auto pick = static_cast<std::size_t>(draws.uniform(static_cast<std::uint32_t>(b), static_cast<std::uint32_t>(k)) *
                                                   static_cast<double>(r));
        counts[b * r + std::min(pick, r - 1)] += 1;
      }
    std::vector<std::size_t> keep;
    diff.resize(r);
    for (std::size_t h : alive) {
      if (h == best) {
        keep.push_back(h);
        continue;
      }
      for (std::size_t k = 0; k < r; ++k) diff[k] = m[h * n + perm[k]] - m[best * n + perm[k]];
      std::size_t wins = 0;
      for (std::size_t b = 0; b < nb; ++b) {
        const double* c = counts.data() + b * r;
        double s = 0;
        for (std::size_t k = 0; k < r; ++k) s += c[k] * diff[k];
        wins += s >= 0;
      }
      if (static_cast<double>(wins) / static_cast<double>(nb) < 1 - pr.alpha)
        out.pruned_at[h] = t;
      else
        keep.push_back(h);
    }
    alive = std::move(keep);
  }
  out.survivors = alive.size();
  if (opts.keep_matrix) out.matrix = std::move(m);
}

}  // namespace detail

/// MBR over candidates given as token lists (see the file comment). `utility.prepare` is called
/// once on `candidates` (its exceptions propagate). Throws `invalid_input` for no candidates,
/// `invalid_option` for bad options, `backend_error` for a non-finite utility.
template <MbrUtility U>
[[nodiscard]] mbr_result mbr(std::span<const std::span<const token_id>> candidates, U& utility, const mbr_options& opts = {}) {
  const detail::stopwatch clock;
  opts.validate();
  if (candidates.empty()) throw invalid_input("itscale: mbr needs at least one candidate");
  mbr_result out;
  utility.prepare(candidates);
  const std::size_t n = candidates.size();
  if (opts.pruning.enabled)
    detail::mbr_pruned(n, utility, opts, out);
  else
    detail::mbr_full(n, utility, opts, out);
  // Survivors by expected utility first (ties: lower index), then the pruned ones.
  out.order.resize(n);
  std::iota(out.order.begin(), out.order.end(), std::size_t{0});
  std::stable_sort(out.order.begin(), out.order.end(), [&](std::size_t a, std::size_t b) {
    const bool sa = out.pruned_at[a] == mbr_result::npos, sb = out.pruned_at[b] == mbr_result::npos;
    if (sa != sb) return sa;
    return out.expected_utility[a] > out.expected_utility[b];
  });
  out.best = out.order.front();
  out.seconds = clock.seconds();
  return out;
}

/// MBR over generated sequences (their `tokens`).
template <MbrUtility U>
[[nodiscard]] mbr_result mbr(std::span<const generation> candidates, U& utility, const mbr_options& opts = {}) {
  std::vector<std::span<const token_id>> spans;
  spans.reserve(candidates.size());
  for (const auto& g : candidates) spans.emplace_back(g.tokens);
  return mbr(std::span<const std::span<const token_id>>(spans), utility, opts);
}

ITSCALE_END_NAMESPACE
