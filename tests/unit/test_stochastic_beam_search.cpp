// Stochastic beam search, tested statistically against exact probabilities on small models whose
// complete sequences can all be enumerated (hash_lm with V = 3..4, three new tokens):
// - K = 1 is an ancestral sample: chi-square of the sampled sequences against p(y);
// - K > 1 samples without replacement: chi-square of the sampled *sets* against the exact
//   Plackett-Luce set probabilities, and per-sequence inclusion z-scores against the exact
//   inclusion probabilities; the same statistics reject a with-replacement sampler (power check);
// - no duplicates; the priority-sampling estimator of known expectations is unbiased.
// Fixed seed sets make every run identical; thresholds are at significance 1e-3 (chi-square,
// Wilson-Hilferty quantile) and |z| < 4 per sequence (Bonferroni: <= 2.5e-3 over <= 40 sequences).
// Set ITSCALE_TEST_VERBOSE=1 to print the statistics.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <numeric>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <itscale/search.hpp>

#include "instrumented_source.hpp"

using itscale::token_id;
using tokens = std::vector<token_id>;

namespace {

bool verbose() { return std::getenv("ITSCALE_TEST_VERBOSE") != nullptr; }

// Every complete sequence with its exact probability under softmax(logits / T) (double), EOS
// completing a sequence and masked before min_new_tokens.
struct exact_model {
  const itscale::hash_lm& lm;
  const itscale::stochastic_beam_options& o;
  tokens prompt;

  void enumerate(tokens& gen, double logp, std::map<tokens, double>& out) const {
    tokens prefix = prompt;
    prefix.insert(prefix.end(), gen.begin(), gen.end());
    std::vector<float> row(lm.vocab_size());
    lm.fill(lm.state_of(prefix), row);
    std::vector<double> x(row.size());
    for (std::size_t t = 0; t < row.size(); ++t) x[t] = double{row[t]} / o.temperature;
    const bool eos_masked = gen.size() < o.stop.min_new_tokens;
    auto is_eos = [&](std::size_t t) {
      return std::find(o.stop.eos_token_id.begin(), o.stop.eos_token_id.end(),
                       static_cast<token_id>(t)) != o.stop.eos_token_id.end();
    };
    double m = -INFINITY;
    for (std::size_t t = 0; t < x.size(); ++t)
      if (!(eos_masked && is_eos(t))) m = std::max(m, x[t]);
    double s = 0;
    for (std::size_t t = 0; t < x.size(); ++t)
      if (!(eos_masked && is_eos(t))) s += std::exp(x[t] - m);
    for (std::size_t t = 0; t < x.size(); ++t) {
      if (eos_masked && is_eos(t)) continue;
      const double lp = x[t] - m - std::log(s);
      gen.push_back(static_cast<token_id>(t));
      if (is_eos(t) || gen.size() == o.stop.max_new_tokens)
        out[gen] = logp + lp;
      else
        enumerate(gen, logp + lp, out);
      gen.pop_back();
    }
  }

  std::map<tokens, double> all() const {  // sequence -> log p
    std::map<tokens, double> out;
    tokens gen;
    enumerate(gen, 0.0, out);
    return out;
  }
};

// Upper quantile of chi-square(df) at z standard deviations (Wilson-Hilferty).
double chi2_quantile(double df, double z) {
  const double a = 2.0 / (9.0 * df);
  return df * std::pow(1.0 - a + z * std::sqrt(a), 3.0);
}
constexpr double z_1e3 = 3.0902;  // one-sided 1e-3 normal quantile

// Pearson chi-square of observed counts against expected ones, pooling categories with expected
// count < 5 into one; returns {statistic, degrees of freedom}.
std::pair<double, double> pooled_chi2(const std::vector<double>& observed, const std::vector<double>& expected) {
  double stat = 0, pool_o = 0, pool_e = 0;
  std::size_t bins = 0;
  for (std::size_t i = 0; i < observed.size(); ++i) {
    if (expected[i] < 5) {
      pool_o += observed[i];
      pool_e += expected[i];
      continue;
    }
    stat += (observed[i] - expected[i]) * (observed[i] - expected[i]) / expected[i];
    ++bins;
  }
  if (pool_e >= 1) {
    stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
    ++bins;
  } else {
    stat += pool_o;  // observations where almost none are expected still count against
  }
  return {stat, static_cast<double>(bins) - 1};
}

// Exact probabilities of the unordered sets of k distinct sequences drawn without replacement
// (successive draws proportional to p among the remaining), and each sequence's inclusion
// probability, by enumerating every ordered draw.
struct wor_exact {
  std::map<std::vector<std::size_t>, double> sets;
  std::vector<double> inclusion;
};

void wor_recurse(const std::vector<double>& p, std::size_t k, std::vector<std::size_t>& chosen, double prob,
                 double removed, wor_exact& out) {
  if (chosen.size() == k) {
    std::vector<std::size_t> s = chosen;
    std::sort(s.begin(), s.end());
    out.sets[s] += prob;
    for (std::size_t i : chosen) out.inclusion[i] += prob;
    return;
  }
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (std::find(chosen.begin(), chosen.end(), i) != chosen.end()) continue;
    chosen.push_back(i);
    wor_recurse(p, k, chosen, prob * p[i] / (1.0 - removed), removed + p[i], out);
    chosen.pop_back();
  }
}

wor_exact without_replacement(const std::vector<double>& p, std::size_t k) {
  wor_exact out;
  out.inclusion.assign(p.size(), 0.0);
  std::vector<std::size_t> chosen;
  wor_recurse(p, k, chosen, 1.0, 0.0, out);
  return out;
}

struct setup {
  std::size_t vocab;
  std::uint64_t model_seed;
  std::vector<token_id> eos;
  double temperature;
};

}  // namespace

// Compile-time checks, nothing to run: stochastic_beam_search uses nothing beyond LogitSource. The
// concept checks that every overload resolves with the archetype; it sees only declarations (the
// return types are not deduced), so the explicit instantiation compiles the body with it.
namespace {
template <class S>
concept stochastic_beam_search_accepts =
    requires(S& s, std::span<const token_id> prompt, const std::vector<tokens>& prompts,
             std::span<const std::span<const token_id>> spans, const itscale::prefilled<S>& start,
             const itscale::stochastic_beam_options& o, std::span<const std::uint64_t> streams, std::uint64_t stream) {
      { itscale::stochastic_beam_search(s, prompt, o, stream) } -> std::same_as<itscale::stochastic_beam_result>;
      { itscale::stochastic_beam_search(s, prompts, o) } -> std::same_as<itscale::stochastic_beam_result>;
      { itscale::stochastic_beam_search(s, spans, o) } -> std::same_as<itscale::stochastic_beam_result>;
      { itscale::stochastic_beam_search(s, spans, o, streams) } -> std::same_as<itscale::stochastic_beam_result>;
      { itscale::stochastic_beam_search(s, start, o, stream) } -> std::same_as<itscale::stochastic_beam_result>;
    };
}  // namespace
static_assert(stochastic_beam_search_accepts<itscale::logit_source_archetype>);
template itscale::stochastic_beam_result itscale::stochastic_beam_search(
    itscale::logit_source_archetype&, std::span<const std::span<const token_id>>, const itscale::stochastic_beam_options&,
    const itscale::stateful_logits_processor_archetype&, std::span<const std::uint64_t>, const itscale::run_options&);

TEST_CASE("stochastic beam search, K = 1: the samples follow ancestral-sampling frequencies (chi-square)") {
  for (const setup& su : {setup{3, 11, {}, 1.0}, setup{4, 5, {}, 1.0}, setup{4, 8, {0}, 1.0}, setup{3, 11, {}, 0.5},
                          setup{4, 5, {}, 2.0}}) {
    CAPTURE(su.vocab);
    CAPTURE(su.model_seed);
    CAPTURE(su.temperature);
    const itscale::stochastic_beam_options o{.num_samples = 1, .temperature = su.temperature,
                                             .stop = {.max_new_tokens = 3, .eos_token_id = su.eos}, .seed = 0};
    const itscale::hash_lm lm(su.vocab, su.model_seed);
    const tokens prompt{1};
    const auto all = exact_model{lm, o, prompt}.all();
    std::map<tokens, std::size_t> index;
    std::vector<double> p;
    for (const auto& [y, lp] : all) {
      index[y] = p.size();
      p.push_back(std::exp(lp));
    }
    CHECK(std::accumulate(p.begin(), p.end(), 0.0) == doctest::Approx(1.0).epsilon(1e-12));
    const std::size_t runs = 20000;
    std::vector<double> count(p.size(), 0.0);
    itscale::hash_lm src(su.vocab, su.model_seed);
    for (std::uint64_t seed = 1; seed <= runs; ++seed) {
      auto oo = o;
      oo.seed = seed;
      const auto r = itscale::stochastic_beam_search(src, std::span<const token_id>(prompt), oo, 7);
      REQUIRE(r.samples(0).size() == 1);
      REQUIRE(index.count(r.samples(0)[0].tokens) == 1);
      count[index.at(r.samples(0)[0].tokens)] += 1;
      CHECK(r.samples(0)[0].logprob_sum == doctest::Approx(all.at(r.samples(0)[0].tokens)).epsilon(1e-5));
    }
    std::vector<double> expected(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) expected[i] = p[i] * runs;
    const auto [chi2, df] = pooled_chi2(count, expected);
    const double crit = chi2_quantile(df, z_1e3);
    if (verbose())
      std::printf("SBS K=1 V=%zu seed=%llu T=%.1f eos=%zu: %zu sequences, chi2 = %.2f, df = %.0f, crit(1e-3) = %.2f\n",
                  su.vocab, static_cast<unsigned long long>(su.model_seed), su.temperature, su.eos.size(), p.size(),
                  chi2, df, crit);
    CHECK(df >= 3);
    CHECK(chi2 < crit);
    CHECK(src.live_handles() == 0);
  }
}

TEST_CASE("stochastic beam search, K > 1: sets and inclusions match exact without-replacement probabilities; "
          "a with-replacement sampler fails the same tests") {
  for (const setup& su : {setup{3, 11, {}, 1.0}, setup{4, 8, {0}, 1.0}, setup{3, 2, {}, 0.7}}) {
    for (const std::size_t k : {2u, 3u}) {
      CAPTURE(su.vocab);
      CAPTURE(su.model_seed);
      CAPTURE(k);
      const itscale::stochastic_beam_options o{.num_samples = k, .temperature = su.temperature,
                                               .stop = {.max_new_tokens = 3, .eos_token_id = su.eos}};
      const itscale::hash_lm lm(su.vocab, su.model_seed);
      const tokens prompt{2};
      const auto all = exact_model{lm, o, prompt}.all();
      std::map<tokens, std::size_t> index;
      std::vector<double> p;
      for (const auto& [y, lp] : all) {
        index[y] = p.size();
        p.push_back(std::exp(lp));
      }
      const wor_exact ex = without_replacement(p, k);
      std::map<std::vector<std::size_t>, std::size_t> set_index;
      for (const auto& [s, pr] : ex.sets) set_index.emplace(s, set_index.size());

      const std::size_t runs = 20000;
      std::vector<double> set_count(ex.sets.size(), 0.0), incl(p.size(), 0.0);
      // With-replacement alternative: k independent ancestral samples (K = 1 searches on other streams).
      std::vector<double> wr_set_count(ex.sets.size(), 0.0), wr_incl(p.size(), 0.0);
      double wr_outside = 0;  // draws with a repeated sequence: no k-set at all
      itscale::hash_lm src(su.vocab, su.model_seed);
      for (std::uint64_t seed = 1; seed <= runs; ++seed) {
        auto oo = o;
        oo.seed = seed;
        const auto r = itscale::stochastic_beam_search(src, std::span<const token_id>(prompt), oo, 99);
        REQUIRE(r.samples(0).size() == k);
        std::vector<std::size_t> s;
        for (const auto& x : r.samples(0)) s.push_back(index.at(x.tokens));
        std::sort(s.begin(), s.end());
        CHECK(std::adjacent_find(s.begin(), s.end()) == s.end());  // no duplicates
        for (std::size_t i = 1; i < r.samples(0).size(); ++i) CHECK(r.samples(0)[i - 1].score >= r.samples(0)[i].score);
        CHECK(r.prompts[0].threshold <= r.samples(0).back().score);
        set_count[set_index.at(s)] += 1;
        for (std::size_t i : s) incl[i] += 1;

        auto o1 = oo;
        o1.num_samples = 1;
        std::vector<std::size_t> w;
        for (std::uint64_t j = 0; j < k; ++j)
          w.push_back(index.at(itscale::stochastic_beam_search(src, std::span<const token_id>(prompt), o1, 1000 + j)
                                   .samples(0)[0].tokens));
        std::sort(w.begin(), w.end());
        w.erase(std::unique(w.begin(), w.end()), w.end());
        for (std::size_t i : w) wr_incl[i] += 1;
        if (w.size() == k)
          wr_set_count[set_index.at(w)] += 1;
        else
          wr_outside += 1;
      }
      std::vector<double> expected;
      for (const auto& [s, pr] : ex.sets) expected.push_back(pr * runs);
      const auto [chi2, df] = pooled_chi2(set_count, expected);
      auto wr_obs = wr_set_count;
      auto wr_exp = expected;
      wr_obs.push_back(wr_outside);  // an extra category of probability 0 under the null
      wr_exp.push_back(0.0);
      const auto [wr_chi2, wr_df] = pooled_chi2(wr_obs, wr_exp);
      const double crit = chi2_quantile(df, z_1e3);

      // |z| > 4 has two-sided probability 6.3e-5: at most 2.5e-3 family-wise over <= 40 sequences.
      constexpr double z_crit = 4.0;
      double max_z = 0, wr_max_z = 0;
      for (std::size_t i = 0; i < p.size(); ++i) {
        const double pi = ex.inclusion[i];
        const double sd = std::sqrt(runs * pi * (1 - pi));
        if (sd < 1) continue;  // too rare to test one by one (the set chi-square covers them pooled)
        max_z = std::max(max_z, std::abs(incl[i] - runs * pi) / sd);
        wr_max_z = std::max(wr_max_z, std::abs(wr_incl[i] - runs * pi) / sd);
      }
      if (verbose())
        std::printf("SBS K=%zu V=%zu seed=%llu T=%.1f eos=%zu: %zu seqs, %zu sets; sets chi2 = %.2f df = %.0f "
                    "crit = %.2f; max|z| incl = %.2f (crit %.1f); with-replacement: chi2 = %.1f (df %.0f), max|z| = %.1f\n",
                    k, su.vocab, static_cast<unsigned long long>(su.model_seed), su.temperature, su.eos.size(),
                    p.size(), ex.sets.size(), chi2, df, crit, max_z, z_crit, wr_chi2, wr_df, wr_max_z);
      CHECK(df >= 3);
      CHECK(chi2 < crit);
      CHECK(max_z < z_crit);
      // Power: the same tests reject sampling with replacement.
      CHECK(wr_chi2 > chi2_quantile(wr_df, z_1e3));
      CHECK(wr_max_z > z_crit);
      CHECK(src.live_handles() == 0);
    }
  }
}

TEST_CASE("stochastic beam search: the priority-sampling estimator is unbiased for known expectations") {
  const itscale::hash_lm lm(4, 5);
  const tokens prompt{3};
  for (const std::size_t k : {1u, 2u, 4u, 8u}) {
    CAPTURE(k);
    const itscale::stochastic_beam_options o{.num_samples = k, .stop = {.max_new_tokens = 3, .eos_token_id = {1}}};
    const auto all = exact_model{lm, o, prompt}.all();
    // f1 = [first token is 0], f2 = number of 2s, f3 = 1 (the weights' expected sum).
    auto f1 = [](const tokens& y) { return y.front() == 0 ? 1.0 : 0.0; };
    auto f2 = [](const tokens& y) { return static_cast<double>(std::count(y.begin(), y.end(), 2)); };
    double e1 = 0, e2 = 0;
    for (const auto& [y, lp] : all) {
      e1 += std::exp(lp) * f1(y);
      e2 += std::exp(lp) * f2(y);
    }
    const std::size_t runs = 8000;
    double s1 = 0, q1 = 0, s2 = 0, q2 = 0, s3 = 0, q3 = 0;
    itscale::hash_lm src(4, 5);
    for (std::uint64_t seed = 1; seed <= runs; ++seed) {
      auto oo = o;
      oo.seed = seed;
      const auto r = itscale::stochastic_beam_search(src, std::span<const token_id>(prompt), oo, 3);
      double a = 0, b = 0, c = 0;
      REQUIRE(r.weights.size() == r.size());
      REQUIRE(r.inclusion_probabilities.size() == r.size());
      for (std::size_t i = 0; i < r.size(); ++i) {
        const auto& x = r[i];
        const double w = r.weights[i], q = r.inclusion_probabilities[i];
        CHECK(w == doctest::Approx(std::exp(all.at(x.tokens)) / q).epsilon(1e-5));
        CHECK(q > 0);
        CHECK(q <= 1);
        a += w * f1(x.tokens);
        b += w * f2(x.tokens);
        c += w;
      }
      s1 += a, q1 += a * a, s2 += b, q2 += b * b, s3 += c, q3 += c * c;
    }
    const double n = static_cast<double>(runs);
    auto z_of = [n](double s, double q, double truth) {
      const double mean = s / n, var = (q / n - mean * mean) * n / (n - 1);
      return var <= 0 ? (std::abs(mean - truth) < 1e-12 ? 0.0 : INFINITY) : (mean - truth) / std::sqrt(var / n);
    };
    const double z1 = z_of(s1, q1, e1), z2 = z_of(s2, q2, e2), z3 = z_of(s3, q3, 1.0);
    if (verbose())
      std::printf("SBS estimator K=%zu (%zu seqs): E[f1] = %.5f est %.5f (z %.2f); E[f2] = %.5f est %.5f (z %.2f); "
                  "E[sum w] = 1 est %.5f (z %.2f)\n",
                  k, all.size(), e1, s1 / n, z1, e2, s2 / n, z2, s3 / n, z3);
    CHECK(std::abs(z1) < 4.0);
    CHECK(std::abs(z2) < 4.0);
    CHECK(std::abs(z3) < 4.0);
  }
}

TEST_CASE("stochastic beam search: with K >= every sequence, all of them come back with weight p(y) (exact sum)") {
  const itscale::hash_lm lm(3, 4);
  const tokens prompt{1};
  const itscale::stochastic_beam_options o{.num_samples = 40, .stop = {.max_new_tokens = 3, .eos_token_id = {0}},
                                           .seed = 5};
  const auto all = exact_model{lm, o, prompt}.all();
  itscale::hash_lm src(3, 4);
  const auto r = itscale::stochastic_beam_search(src, std::span<const token_id>(prompt), o, 1);
  REQUIRE(r.samples(0).size() == all.size());
  CHECK(r.prompts[0].threshold == -INFINITY);
  for (std::size_t i = 0; i < r.size(); ++i) {
    const auto& x = r[i];
    CHECK(r.inclusion_probabilities[i] == 1.0);
    CHECK(r.weights[i] == doctest::Approx(std::exp(all.at(x.tokens))).epsilon(1e-5));
    CHECK(x.stop == (x.tokens.back() == 0 ? itscale::stop_reason::eos : itscale::stop_reason::max_new_tokens));
  }
  CHECK(src.live_handles() == 0);
}

TEST_CASE("stochastic beam search is batch-invariant: a prompt's samples do not depend on its batch") {
  const std::vector<tokens> prompts{{1, 2}, {3}, {4, 5, 6}, {1, 2}};
  const itscale::stochastic_beam_options o{.num_samples = 5, .temperature = 0.8,
                                           .stop = {.max_new_tokens = 8, .eos_token_id = {0}}, .seed = 42};
  itscale::hash_lm lm(50, 3);
  const auto together = itscale::stochastic_beam_search(lm, prompts, o);
  REQUIRE(together.prompts.size() == prompts.size());
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    const std::vector<tokens> alone_batch{prompts[p]};
    const auto alone = itscale::stochastic_beam_search(lm, alone_batch, o);
    REQUIRE(alone.samples(0).size() == together.samples(p).size());
    for (std::size_t j = 0; j < alone.samples(0).size(); ++j) {
      CHECK(alone.samples(0)[j].tokens == together.samples(p)[j].tokens);
      CHECK(alone.samples(0)[j].score == together.samples(p)[j].score);
    }
    CHECK(alone.prompts[0].threshold == together.prompts[p].threshold);
  }
  // Equal prompts with the default stream ids draw the same samples; distinct ids differ.
  for (std::size_t j = 0; j < together.samples(0).size(); ++j)
    CHECK(together.samples(0)[j].tokens == together.samples(3)[j].tokens);
  const std::vector<std::uint64_t> ids{1, 2, 3, 4};
  const auto distinct = itscale::stochastic_beam_search(lm, prompts, o, ids);
  bool any_differs = false;
  for (std::size_t j = 0; j < distinct.samples(0).size(); ++j)
    any_differs |= distinct.samples(0)[j].tokens != distinct.samples(3)[j].tokens;
  CHECK(any_differs);
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("stochastic beam search: handle hygiene under backend failures; forks; bad options") {
  const std::vector<tokens> prompts{{1, 2}, {3}};
  const itscale::stochastic_beam_options o{.num_samples = 4, .stop = {.max_new_tokens = 9, .eos_token_id = {0}},
                                           .seed = 3};
  test_support::instrumented_source<itscale::hash_lm> probe(itscale::hash_lm(25, 3));
  (void)itscale::stochastic_beam_search(probe, prompts, o);
  CHECK(probe.live == 0);
  CHECK(probe.peak_live <= static_cast<std::ptrdiff_t>(prompts.size() * 2 * 5));
  const std::size_t calls = probe.prefills + probe.extends;
  REQUIRE(calls > 3);
  for (std::size_t fail_at = 0; fail_at < calls; ++fail_at) {
    CAPTURE(fail_at);
    test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(25, 3));
    src.throw_on_call = fail_at;
    CHECK_THROWS_WITH((void)itscale::stochastic_beam_search(src, prompts, o), "instrumented_source: injected backend failure");
    CHECK(src.live == 0);
  }
  for (std::size_t call = 0; call < 4; ++call) {
    test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(25, 3));
    src.corrupt_on_call = call;
    src.corrupt_value = NAN;
    CHECK_THROWS_AS((void)itscale::stochastic_beam_search(src, prompts, o), itscale::backend_error);
    CHECK(src.live == 0);
  }

  test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(10, 1));
  auto bad = [&](const itscale::stochastic_beam_options& b, const std::string& name) {
    CAPTURE(name);
    std::string msg;
    try {
      (void)itscale::stochastic_beam_search(src, prompts, b);
    } catch (const itscale::invalid_option& e) {
      msg = e.what();
    }
    CHECK(msg.find(name) != std::string::npos);
  };
  bad({.num_samples = 0}, "num_samples");
  bad({.temperature = 0.0}, "temperature");
  bad({.temperature = -1.0}, "temperature");
  bad({.temperature = NAN}, "temperature");
  bad({.stop = {.max_new_tokens = 0}}, "max_new_tokens");
  bad({.stop = {.max_new_tokens = 2, .min_new_tokens = 3, .eos_token_id = {0}}}, "min_new_tokens");
  bad({.stop = {.min_new_tokens = 1}}, "min_new_tokens");
  bad({.stop = {.eos_token_id = {10}}}, "eos_token_id");
  bad({.stop = {.eos_token_id = {-2}}}, "eos_token_id");
  const std::vector<std::uint64_t> one_id{1};
  CHECK_THROWS_AS((void)itscale::stochastic_beam_search(src, prompts, o, one_id), itscale::invalid_input);
  CHECK(src.calls == 0);
}

TEST_CASE("stochastic beam search: truncated Gumbel: the maximum child gets the parent's key; keys are conditioned on that maximum") {
  using itscale::detail::truncated_gumbel;
  CHECK(truncated_gumbel(1.5, 3.0, 3.0) == 1.5);
  CHECK(truncated_gumbel(1.5, 3.0, 2.0) < 1.5);
  // Against the direct formula -log(exp(-t) - exp(-z) + exp(-g)) where it is well conditioned.
  for (const double t : {-3.0, 0.0, 2.0})
    for (const double z : {-1.0, 0.5, 4.0})
      for (const double d : {0.1, 1.0, 5.0}) {
        const double g = z - d;
        CHECK(truncated_gumbel(t, z, g) == doctest::Approx(-std::log(std::exp(-t) - std::exp(-z) + std::exp(-g))).epsilon(1e-12));
      }
  // Deep in the tree keys stay finite where the direct formula would not.
  CHECK(std::isfinite(truncated_gumbel(-800.0, 10.0, 9.0)));
}
