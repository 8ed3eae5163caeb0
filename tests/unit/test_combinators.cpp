// The combinator sources (ensemble_source, contrastive_source, cfg_source): each through the
// concept test-suite; rows against independent float64 formulas on the hash LM; the identities
// (an ensemble of a source with itself is the source, CFG at gamma 1 is the conditional source,
// contrastive decoding at alpha 0 is the expert under the plausibility mask = min-p); greedy,
// sampling and beam search on them; one member call per combinator call; no handle leaked when a
// member throws or returns NaN at any call; bad input.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "instrumented_source.hpp"

#include <itscale/backends/cfg_source.hpp>
#include <itscale/backends/contrastive_source.hpp>
#include <itscale/backends/ensemble_source.hpp>
#include <itscale/search.hpp>

#include <itscale/testing/source_suite.hpp>

using itscale::token_id;
using tokens = std::vector<token_id>;
using itscale::hash_lm;

namespace {

constexpr std::size_t V = 48;
const float inf = std::numeric_limits<float>::infinity();

// ---- compile-time: every combinator models the concept, whatever its members are ---------------

static_assert(itscale::LogitSource<itscale::ensemble_source<hash_lm>>);
static_assert(itscale::LogitSource<itscale::ensemble_source<hash_lm&, hash_lm, hash_lm&>>);
static_assert(itscale::LogitSource<itscale::ensemble_source<itscale::logit_source_archetype>>);
static_assert(itscale::LogitSource<itscale::contrastive_source<hash_lm&, hash_lm>>);
static_assert(itscale::LogitSource<itscale::contrastive_source<itscale::logit_source_archetype, hash_lm>>);
static_assert(itscale::LogitSource<itscale::cfg_source<hash_lm>>);
static_assert(itscale::LogitSource<itscale::cfg_source<itscale::logit_source_archetype&>>);
// Combinators nest: an ensemble of a contrastive source and a guided one.
static_assert(itscale::LogitSource<
              itscale::ensemble_source<itscale::contrastive_source<hash_lm, hash_lm>, itscale::cfg_source<hash_lm>>>);
// Members are sources, borrowed (lvalue reference) or owned; a const member cannot be driven.
static_assert(itscale::CombinatorMember<hash_lm&>);
static_assert(itscale::CombinatorMember<hash_lm>);
static_assert(!itscale::CombinatorMember<const hash_lm&>);
static_assert(!itscale::CombinatorMember<int>);
// The live-handle count (of the combinator's own handles) for the tests and the concept suite.
template <class S>
concept counts_live = requires(const S& s) { s.live_handles(); };
static_assert(counts_live<itscale::ensemble_source<hash_lm>> && counts_live<itscale::cfg_source<hash_lm&>>);

// ---- independent float64 references ------------------------------------------------------------

using drow = std::vector<double>;

drow hash_row(std::uint64_t seed, const tokens& prefix, std::size_t vocab = V) {
  hash_lm lm(vocab, seed);
  std::vector<float> r(vocab);
  lm.fill(lm.state_of(prefix), r);
  return {r.begin(), r.end()};
}

drow log_softmax(const drow& x) {
  double m = -INFINITY;
  for (double v : x) m = std::max(m, v);
  drow out(x.size());
  if (m == -INFINITY) {
    std::fill(out.begin(), out.end(), -INFINITY);
    return out;
  }
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = x[i] - m - std::log(s);
  return out;
}

drow ref_poe(const std::vector<drow>& rows, const std::vector<double>& w) {
  double sum = 0;
  for (double x : w) sum += x;
  drow acc(rows[0].size(), 0.0);
  for (std::size_t k = 0; k < rows.size(); ++k) {
    if (w[k] == 0) continue;
    const drow lp = log_softmax(rows[k]);
    for (std::size_t t = 0; t < acc.size(); ++t) acc[t] += w[k] / sum * lp[t];
  }
  return log_softmax(acc);
}

drow ref_mixture(const std::vector<drow>& rows, const std::vector<double>& w) {
  double sum = 0;
  for (double x : w) sum += x;
  drow out(rows[0].size(), -INFINITY);
  std::vector<drow> lps;
  for (const drow& r : rows) lps.push_back(log_softmax(r));
  for (std::size_t t = 0; t < out.size(); ++t) {
    double m = -INFINITY;
    for (std::size_t k = 0; k < rows.size(); ++k)
      if (w[k] > 0) m = std::max(m, std::log(w[k] / sum) + lps[k][t]);
    if (m == -INFINITY) continue;
    double s = 0;
    for (std::size_t k = 0; k < rows.size(); ++k)
      if (w[k] > 0) s += std::exp(std::log(w[k] / sum) + lps[k][t] - m);
    out[t] = m + std::log(s);
  }
  return out;
}

const double floor_lp = std::log(static_cast<double>(std::numeric_limits<float>::denorm_min()));

drow ref_contrastive(const drow& expert, const drow& amateur, double alpha, double beta) {
  const drow e = log_softmax(expert), a = log_softmax(amateur);
  const double top = *std::max_element(e.begin(), e.end());
  drow out(e.size(), -INFINITY);
  for (std::size_t t = 0; t < e.size(); ++t)
    if (e[t] != -INFINITY && std::exp(e[t]) >= beta * std::exp(top)) out[t] = e[t] - alpha * std::max(a[t], floor_lp);
  return out;
}

drow ref_cfg(const drow& cond, const drow& uncond, double gamma) {
  const drow c = log_softmax(cond), u = log_softmax(uncond);
  drow out(c.size());
  for (std::size_t t = 0; t < c.size(); ++t) {
    const double uu = gamma > 1 ? std::max(u[t], floor_lp) : u[t];
    out[t] = gamma == 1 ? c[t] : gamma == 0 ? u[t] : gamma * c[t] + (1 - gamma) * uu;
  }
  return out;
}

// Largest |a - b| over entries, with equal infinities counting 0 and a mismatched infinity inf.
double max_diff(std::span<const float> a, const drow& b) {
  REQUIRE(a.size() == b.size());
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (double{a[i]} != b[i]) return INFINITY;
      continue;
    }
    d = std::max(d, std::fabs(double{a[i]} - b[i]));
  }
  return d;
}

std::vector<float> copy_row(std::span<const float> r) { return {r.begin(), r.end()}; }

tokens plus(tokens p, token_id t) {
  p.push_back(t);
  return p;
}

// Drives a source through prefill and three rounds of forking extends; calls
// `check(prefix, row)` on every row it sees; releases everything.
template <class S, class Check>
void walk(S& s, const tokens& prompt, Check&& check) {
  using H = itscale::handle_t<S>;
  struct node {
    H h;
    tokens prefix;
  };
  std::vector<node> frontier = {{s.prefill(prompt), prompt}};
  check(prompt, copy_row(s.logits().row(0)));
  for (std::size_t step = 0; step < 3; ++step) {
    std::vector<H> parents, kids;
    tokens toks;
    std::vector<tokens> prefixes;
    for (std::size_t i = 0; i < frontier.size(); ++i)
      for (std::size_t j = 0; j < 2; ++j) {
        parents.push_back(frontier[i].h);
        toks.push_back(static_cast<token_id>((step * 11 + i * 5 + j * 3 + 1) % s.vocab_size()));
        prefixes.push_back(plus(frontier[i].prefix, toks.back()));
      }
    kids.resize(parents.size());
    s.extend(parents, toks, kids);
    for (std::size_t i = 0; i < kids.size(); ++i) check(prefixes[i], copy_row(s.logits().row(i)));
    for (const node& n : frontier) s.release(n.h);
    frontier.clear();
    for (std::size_t i = 0; i < kids.size(); ++i) {
      if (i % 3 != 1 && frontier.size() < 3) frontier.push_back({kids[i], prefixes[i]});
      else s.release(kids[i]);
    }
  }
  for (const node& n : frontier) s.release(n.h);
}

std::string what_of(auto&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

const tokens prompt_a = {1, 2, 3};
const tokens prompt_b = {4, 9};

}  // namespace

// ---- the concept test-suite --------------------------------------------------------------------

TEST_CASE("combinators: ensemble_source passes the LogitSource concept suite") {
  SUBCASE("product of experts, owned members") {
    itscale::testing::check_logit_source([] { return itscale::make_ensemble(hash_lm(V, 1), hash_lm(V, 2)); });
  }
  SUBCASE("mixture, three members, unequal and zero weights") {
    itscale::testing::check_logit_source([] {
      return itscale::make_ensemble({.mode = itscale::ensemble_mode::mixture, .weights = {3, 0, 1}}, hash_lm(V, 1),
                                    hash_lm(V, 2), hash_lm(V, 3));
    });
  }
  SUBCASE("a hash LM and a function source") {
    itscale::testing::check_logit_source([] {
      return itscale::make_ensemble(hash_lm(V, 5), itscale::from_function(V, [](std::span<const token_id> p) {
                                      std::vector<float> r(V);
                                      for (std::size_t t = 0; t < V; ++t)
                                        r[t] = static_cast<float>((t * 7 + p.size() * 3 + static_cast<std::size_t>(p.back())) % 13) * 0.25f;
                                      return r;
                                    }));
    });
  }
}

TEST_CASE("combinators: contrastive_source passes the LogitSource concept suite") {
  itscale::testing::check_logit_source([] { return itscale::make_contrastive(hash_lm(V, 1), hash_lm(V, 2)); });
  itscale::testing::check_logit_source(
      [] { return itscale::make_contrastive(hash_lm(V, 3), hash_lm(V, 4), {.alpha = 0.5, .beta = 0.0}); });
}

namespace {

// A guided sequence is two sequences: its rows depend on where its prompt ended, not only on its
// tokens (prefilling prompt + generated tokens as one prompt restarts the unconditional sequence).
// The suite's reference is "a fresh prefill of the whole prefix"; through this adapter a prefill
// longer than the suite's prompt (3 tokens) is that prompt's prefill followed by one extend per
// token, so the reference is built with the same split as the sequence under test (whose own
// prefills are never longer than 3 tokens and so pass straight through).
template <class S>
class split_after_prompt {
 public:
  using handle = typename S::handle;
  explicit split_after_prompt(S s) : s_(std::move(s)) {}
  [[nodiscard]] std::size_t vocab_size() const { return s_.vocab_size(); }
  handle prefill(std::span<const token_id> p) {
    if (p.size() <= 3) return s_.prefill(p);
    handle h = s_.prefill(p.first(3));
    for (std::size_t i = 3; i < p.size(); ++i) {
      handle next{};
      try {
        s_.extend(std::span(&h, 1), p.subspan(i, 1), std::span(&next, 1));
      } catch (...) {
        s_.release(h);
        throw;
      }
      s_.release(h);
      h = next;
    }
    return h;
  }
  void extend(std::span<const handle> parents, std::span<const token_id> t, std::span<handle> kids) {
    s_.extend(parents, t, kids);
  }
  handle extend_span(handle parent, std::span<const token_id> t)
    requires itscale::ScoringLogitSource<S>
  {
    return s_.extend_span(parent, t);
  }
  [[nodiscard]] itscale::source_capacity capacity() const noexcept
    requires itscale::SourceWithCapacity<S>
  {
    return s_.capacity();
  }
  [[nodiscard]] itscale::logits_view logits() { return s_.logits(); }
  void release(handle h) noexcept { s_.release(h); }
  [[nodiscard]] std::size_t live_handles() const noexcept { return s_.live_handles(); }

 private:
  S s_;
};

}  // namespace

TEST_CASE("combinators: cfg_source passes the LogitSource concept suite") {
  const auto suite = [](double gamma, tokens uncond) {
    itscale::testing::check_logit_source([&] {
      return split_after_prompt(itscale::make_cfg(hash_lm(V, 1), {.gamma = gamma, .unconditional_prompt = uncond}));
    });
  };
  suite(1.5, {0});
  suite(0.5, {7, 8, 9});
  suite(0.0, {7});
}

TEST_CASE("combinators: nested combinators pass the LogitSource concept suite") {
  itscale::testing::check_logit_source([] {
    return split_after_prompt(
        itscale::make_ensemble(itscale::make_contrastive(hash_lm(V, 1), hash_lm(V, 2), {.alpha = 0.3}),
                               itscale::make_cfg(hash_lm(V, 3), {.gamma = 2.0, .unconditional_prompt = {0}})));
  });
}

// ---- rows against float64 formulas ---------------------------------------------------------------

TEST_CASE("combinators: ensemble rows equal the float64 product of experts and mixture") {
  for (const auto& w : std::vector<std::vector<double>>{{1, 1}, {2, 1}, {0.1, 5}, {1, 0}}) {
    CAPTURE(w[0]);
    CAPTURE(w[1]);
    auto poe = itscale::make_ensemble({.weights = w}, hash_lm(V, 11), hash_lm(V, 12));
    walk(poe, prompt_a, [&](const tokens& p, const std::vector<float>& r) {
      CHECK(max_diff(r, ref_poe({hash_row(11, p), hash_row(12, p)}, w)) < 2e-5);
    });
    auto mix = itscale::make_ensemble({.mode = itscale::ensemble_mode::mixture, .weights = w}, hash_lm(V, 11),
                                      hash_lm(V, 12));
    walk(mix, prompt_a, [&](const tokens& p, const std::vector<float>& r) {
      CHECK(max_diff(r, ref_mixture({hash_row(11, p), hash_row(12, p)}, w)) < 2e-5);
    });
  }
}

TEST_CASE("combinators: masked tokens and far tails in the ensemble modes") {
  // Member 0 masks token 0 and puts token 2 ~400 nats down; member 1 masks token 1 and token 2.
  auto m0 = itscale::from_function(4, [](std::span<const token_id>) {
    return std::vector<float>{-inf, 1.0f, -400.0f, 0.5f};
  });
  auto m1 = itscale::from_function(4, [](std::span<const token_id>) {
    return std::vector<float>{2.0f, -inf, -inf, 0.0f};
  });
  const tokens p = {3};
  SUBCASE("product of experts: a token any member masks is masked") {
    auto s = itscale::make_ensemble(m0, m1);
    const auto h = s.prefill(p);
    const auto r = s.logits().row(0);
    CHECK(r[0] == -inf);
    CHECK(r[1] == -inf);
    CHECK(r[2] == -inf);
    CHECK(r[3] == doctest::Approx(0.0).epsilon(1e-6));  // the only token left has probability 1
    s.release(h);
  }
  SUBCASE("mixture: masked only where every member masks; the ~-400 tail stays finite and exact") {
    auto s = itscale::make_ensemble({.mode = itscale::ensemble_mode::mixture}, m0, m1);
    const auto h = s.prefill(p);
    const drow ref = ref_mixture({{-INFINITY, 1, -400, 0.5}, {2, -INFINITY, -INFINITY, 0}}, {1, 1});
    const auto r = s.logits().row(0);
    CHECK(std::isfinite(r[2]));  // the float softmax underflows there; the log-sum-exp path does not
    CHECK(max_diff(r, ref) < 1e-4);  // float spacing at 400 is 3e-5
    s.release(h);
  }
  SUBCASE("a member whose whole row is masked") {
    auto dead = itscale::from_function(4, [](std::span<const token_id>) { return std::vector<float>(4, -inf); });
    auto poe = itscale::make_ensemble(m1, dead);
    const auto h = poe.prefill(p);
    for (float x : poe.logits().row(0)) CHECK(x == -inf);
    poe.release(h);
    auto mix = itscale::make_ensemble({.mode = itscale::ensemble_mode::mixture}, m1, dead);
    const auto g = mix.prefill(p);
    // The dead member has no mass to give: the row is half of m1's distribution.
    drow half = log_softmax({2, -INFINITY, -INFINITY, 0});
    for (double& x : half) x += std::log(0.5);
    CHECK(max_diff(mix.logits().row(0), half) < 1e-6);
    mix.release(g);
  }
}

TEST_CASE("combinators: contrastive rows equal the float64 formula under the plausibility mask") {
  for (const double alpha : {0.0, 0.5, 1.0, 3.0})
    for (const double beta : {0.0, 0.05, 0.1, 0.5, 1.0}) {
      CAPTURE(alpha);
      CAPTURE(beta);
      auto s = itscale::make_contrastive(hash_lm(V, 21), hash_lm(V, 22), {.alpha = alpha, .beta = beta});
      walk(s, prompt_b, [&](const tokens& p, const std::vector<float>& r) {
        CHECK(max_diff(r, ref_contrastive(hash_row(21, p), hash_row(22, p), alpha, beta)) < 2e-5);
        if (beta == 1.0) CHECK(itscale::kernels::count_unmasked(r) == 1);  // only the expert's top token
      });
    }
}

TEST_CASE("combinators: contrastive decoding where the amateur masks a plausible token stays finite") {
  auto expert = itscale::from_function(3, [](std::span<const token_id>) { return std::vector<float>{0, 0, -1}; });
  auto amateur =
      itscale::from_function(3, [](std::span<const token_id>) { return std::vector<float>{0, -inf, 0}; });
  auto s = itscale::make_contrastive(expert, amateur, {.alpha = 2.0, .beta = 0.1});
  const auto h = s.prefill(tokens{0});
  const auto r = s.logits().row(0);
  CHECK(itscale::kernels::find_invalid(r) == itscale::kernels::npos);
  CHECK(max_diff(r, ref_contrastive({0, 0, -1}, {0, -INFINITY, 0}, 2.0, 0.1)) < 1e-5);
  CHECK(itscale::kernels::argmax(r) == 1);  // the token the amateur rules out wins
  s.release(h);
}

TEST_CASE("combinators: cfg rows equal the float64 formula") {
  for (const double gamma : {0.0, 0.5, 1.0, 1.5, 3.0}) {
    CAPTURE(gamma);
    const tokens uncond = {5};
    auto s = itscale::make_cfg(hash_lm(V, 31), {.gamma = gamma, .unconditional_prompt = uncond});
    walk(s, prompt_a, [&](const tokens& p, const std::vector<float>& r) {
      // The unconditional sequence is the unconditional prompt + the tokens generated after the prompt.
      tokens u = uncond;
      u.insert(u.end(), p.begin() + static_cast<std::ptrdiff_t>(prompt_a.size()), p.end());
      CHECK(max_diff(r, ref_cfg(hash_row(31, p), hash_row(31, u), gamma)) < 2e-5);
    });
  }
}

TEST_CASE("combinators: cfg with a per-handle unconditional (negative) prompt") {
  auto s = itscale::make_cfg(hash_lm(V, 41), {.gamma = 2.0, .unconditional_prompt = {0}});
  const tokens negative = {9, 9, 2};
  const auto h = s.prefill(prompt_a, negative);
  CHECK(max_diff(s.logits().row(0), ref_cfg(hash_row(41, prompt_a), hash_row(41, negative), 2.0)) < 2e-5);
  token_id t = 6;
  itscale::cfg_source<hash_lm>::handle c{};
  s.extend(std::span(&h, 1), std::span(&t, 1), std::span(&c, 1));
  CHECK(max_diff(s.logits().row(0), ref_cfg(hash_row(41, plus(prompt_a, 6)), hash_row(41, plus(negative, 6)), 2.0)) <
        2e-5);
  s.release(h);
  s.release(c);
  CHECK(s.model().live_handles() == 0);
}

// ---- identities -----------------------------------------------------------------------------------

TEST_CASE("combinators: an ensemble of a source with itself equals the source") {
  hash_lm lm(V, 7);
  auto same_object = itscale::make_ensemble(lm, lm);                       // one object borrowed twice
  auto two_copies = itscale::make_ensemble(hash_lm(V, 7), hash_lm(V, 7));  // two equal owned sources
  auto mixture = itscale::make_ensemble({.mode = itscale::ensemble_mode::mixture}, lm, hash_lm(V, 7));

  SUBCASE("rows: the source's log-softmax (exactly for the product of experts)") {
    const auto expect = [&](const tokens& p) {
      std::vector<float> r(V), lp(V);
      lm.fill(lm.state_of(p), r);
      itscale::kernels::log_softmax(r, lp);
      return lp;
    };
    walk(same_object, prompt_a, [&](const tokens& p, const std::vector<float>& r) { CHECK(r == expect(p)); });
    walk(two_copies, prompt_a, [&](const tokens& p, const std::vector<float>& r) { CHECK(r == expect(p)); });
    walk(mixture, prompt_a, [&](const tokens& p, const std::vector<float>& r) {
      const auto e = expect(p);
      CHECK(max_diff(r, drow(e.begin(), e.end())) < 2e-6);
    });
    CHECK(lm.live_handles() == 0);
  }

  SUBCASE("greedy and sampling outputs are the source's") {
    const std::vector<tokens> prompts = {prompt_a, prompt_b, {17}};
    const itscale::sampling_options greedy{.stop = {.max_new_tokens = 12}};
    const itscale::sampling_options sampled{
        .stop = {.max_new_tokens = 12}, .do_sample = true, .seed = 99, .num_return_sequences = 4};
    const itscale::sampling_options warped{.stop = {.max_new_tokens = 12},
                                           .do_sample = true,
                                           .seed = 5,
                                           .num_return_sequences = 3,
                                           .temperature = 0.7f,
                                           .top_k = 10,
                                           .top_p = 0.9};
    for (const auto* o : {&greedy, &sampled, &warped}) {
      const auto ref = itscale::generate(lm, prompts, *o);
      const auto a = itscale::generate(same_object, prompts, *o);
      const auto b = itscale::generate(two_copies, prompts, *o);
      const auto c = itscale::generate(mixture, prompts, *o);
      REQUIRE(ref.size() == prompts.size() * o->num_return_sequences);
      for (std::size_t i = 0; i < ref.size(); ++i) {
        CAPTURE(i);
        CHECK(a[i].tokens == ref[i].tokens);
        CHECK(b[i].tokens == ref[i].tokens);
        CHECK(c[i].tokens == ref[i].tokens);
        CHECK(a[i].logprob_sum == doctest::Approx(ref[i].logprob_sum).epsilon(1e-5));
      }
    }
    CHECK(lm.live_handles() == 0);
  }
}

TEST_CASE("combinators: cfg with gamma 1 equals the conditional source, gamma 0 the unconditional one") {
  hash_lm lm(V, 8);
  const tokens uncond = {2, 2};
  auto g1 = itscale::make_cfg(lm, {.gamma = 1.0, .unconditional_prompt = uncond});
  auto g0 = itscale::make_cfg(lm, {.gamma = 0.0, .unconditional_prompt = uncond});
  walk(g1, prompt_a, [&](const tokens& p, const std::vector<float>& r) {
    std::vector<float> x(V), lp(V);
    lm.fill(lm.state_of(p), x);
    itscale::kernels::log_softmax(x, lp);
    CHECK(r == lp);
  });
  const std::vector<tokens> prompts = {prompt_a, prompt_b};
  for (const bool sample : {false, true}) {
    const itscale::sampling_options o{
        .stop = {.max_new_tokens = 10}, .do_sample = sample, .seed = 3, .num_return_sequences = sample ? 3u : 1u};
    const auto ref = itscale::generate(lm, prompts, o);
    const auto got = itscale::generate(g1, prompts, o);
    REQUIRE(got.size() == ref.size());
    for (std::size_t i = 0; i < ref.size(); ++i) CHECK(got[i].tokens == ref[i].tokens);
    // gamma 0: the continuation of the unconditional prompt, whatever the prompt.
    const auto u = itscale::generate(lm, std::vector<tokens>{uncond, uncond}, o);
    const auto got0 = itscale::generate(g0, prompts, o);
    REQUIRE(got0.size() == u.size());
    for (std::size_t i = 0; i < u.size(); ++i) CHECK(got0[i].tokens == u[i].tokens);
  }
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("combinators: contrastive decoding with alpha 0 is the expert under the plausibility mask (min-p)") {
  hash_lm expert(V, 9);
  for (const double beta : {0.0, 0.1, 0.3}) {
    CAPTURE(beta);
    auto cd = itscale::make_contrastive(expert, hash_lm(V, 10), {.alpha = 0.0, .beta = beta});
    walk(cd, prompt_b, [&](const tokens& p, const std::vector<float>& r) {
      std::vector<float> x(V), lp(V);
      expert.fill(expert.state_of(p), x);
      itscale::kernels::log_softmax(x, lp);
      const float threshold = itscale::kernels::min_p_threshold(lp, static_cast<float>(beta));
      for (std::size_t t = 0; t < V; ++t) CHECK(r[t] == (lp[t] >= threshold ? lp[t] : -inf));
    });
    // The mask is min-p with p = beta: decoding equals the expert's with min_p = beta.
    const std::vector<tokens> prompts = {prompt_a, prompt_b};
    for (const bool sample : {false, true}) {
      const itscale::sampling_options o{.stop = {.max_new_tokens = 10},
                                        .do_sample = sample,
                                        .seed = 4,
                                        .num_return_sequences = sample ? 4u : 1u,
                                        .min_p = static_cast<float>(beta)};
      const auto ref = itscale::generate(expert, prompts, o);
      const auto got = itscale::generate(cd, prompts, o);
      REQUIRE(got.size() == ref.size());
      for (std::size_t i = 0; i < ref.size(); ++i) CHECK(got[i].tokens == ref[i].tokens);
    }
  }
  CHECK(expert.live_handles() == 0);
}

// ---- every algorithm runs on a combinator ------------------------------------------------------------

namespace {

struct hyp {
  tokens toks;
  double score;
};

template <class S>
std::vector<std::vector<hyp>> beams(S& s, const std::vector<tokens>& prompts, const itscale::beam_options& o) {
  const auto res = itscale::beam_search(s, prompts, o);
  std::vector<std::vector<hyp>> out;
  for (std::size_t p = 0; p < res.prompts.size(); ++p) {
    out.emplace_back();
    for (const auto& h : res.hypotheses(p)) out.back().push_back({h.tokens, h.score});
  }
  return out;
}

}  // namespace

TEST_CASE("combinators: beam search over an ensemble of the hash LM with itself equals beam search over the hash LM") {
  hash_lm lm(V, 12);
  auto twice = itscale::make_ensemble(lm, lm);
  const std::vector<tokens> prompts = {prompt_a, prompt_b};
  for (const std::size_t k : {1u, 3u, 5u}) {
    CAPTURE(k);
    const itscale::beam_options o{
        .num_beams = k, .num_return_sequences = k, .stop = {.max_new_tokens = 8, .eos_token_id = {0}}};
    const auto ref = beams(lm, prompts, o);
    const auto got = beams(twice, prompts, o);
    REQUIRE(got.size() == ref.size());
    for (std::size_t p = 0; p < ref.size(); ++p) {
      REQUIRE(got[p].size() == ref[p].size());
      for (std::size_t i = 0; i < ref[p].size(); ++i) {
        CHECK(got[p][i].toks == ref[p][i].toks);
        CHECK(got[p][i].score == doctest::Approx(ref[p][i].score).epsilon(1e-5));
      }
    }
  }
  CHECK(lm.live_handles() == 0);
  CHECK(twice.live_handles() == 0);
}

TEST_CASE("combinators: greedy, sampling, beam, diverse and stochastic beam search run on each combinator") {
  hash_lm a(V, 13), b(V, 14);
  auto ens = itscale::make_ensemble({.mode = itscale::ensemble_mode::mixture, .weights = {2, 1}}, a, b);
  auto cd = itscale::make_contrastive(a, b, {.alpha = 0.5, .beta = 0.1});
  auto cfg = itscale::make_cfg(a, {.gamma = 1.5, .unconditional_prompt = {0}});
  const std::vector<tokens> prompts = {prompt_a, prompt_b};
  const auto run_all = [&](auto& s) {
    const auto g = itscale::generate(s, prompts, {.stop = {.max_new_tokens = 6}});
    CHECK(g.size() == 2);
    CHECK(g.compute.extend_calls == 5);  // one batched extend per step
    const auto smp = itscale::generate(s, prompts, {.stop = {.max_new_tokens = 6}, .do_sample = true, .num_return_sequences = 3});
    CHECK(smp.size() == 6);
    const auto bs = beams(s, prompts, {.num_beams = 3, .num_return_sequences = 2, .stop = {.max_new_tokens = 6}});
    CHECK(bs.size() == 2);
    for (const auto& p : bs) CHECK(p.size() == 2);
    std::vector<std::span<const token_id>> spans(prompts.begin(), prompts.end());
    const auto d = itscale::diverse_beam_search(
        s, std::span<const std::span<const token_id>>(spans),
        {.beam = {.num_beams = 4, .num_return_sequences = 2, .stop = {.max_new_tokens = 5}}, .num_beam_groups = 2,
         .diversity_penalty = 0.5});
    CHECK(d.prompts.size() == 2);
    CHECK(d.size() == 4);
    const auto st = itscale::stochastic_beam_search(s, std::span<const std::span<const token_id>>(spans),
                                                    {.num_samples = 3, .stop = {.max_new_tokens = 5}, .seed = 1});
    CHECK(st.prompts.size() == 2);
    CHECK(st.size() == 6);
    CHECK(s.live_handles() == 0);
  };
  SUBCASE("ensemble") { run_all(ens); }
  SUBCASE("contrastive") { run_all(cd); }
  SUBCASE("cfg") { run_all(cfg); }
  CHECK(a.live_handles() == 0);
  CHECK(b.live_handles() == 0);
}

// ---- member calls in step --------------------------------------------------------------------------

namespace {
using counted = test_support::instrumented_source<hash_lm>;
}

TEST_CASE("combinators: one call on a combinator is exactly one call of the same kind per member") {
  const std::vector<tokens> prompts = {prompt_a, prompt_b, {5, 6, 7}};
  const itscale::sampling_options o{.stop = {.max_new_tokens = 7}, .do_sample = true, .num_return_sequences = 2};

  SUBCASE("ensemble and contrastive: one prefill and one batched extend of the same rows per member") {
    auto ens = itscale::make_ensemble(counted(hash_lm(V, 1)), counted(hash_lm(V, 2)), counted(hash_lm(V, 3)));
    const auto r = itscale::generate(ens, prompts, o);
    const auto check_member = [&](const counted& m) {
      CHECK(m.prefills == r.compute.prefill_calls);
      CHECK(m.prefill_tokens == r.compute.prefill_tokens);
      CHECK(m.extends == r.compute.extend_calls);
      CHECK(m.extend_rows == r.compute.extend_rows);
      CHECK(m.live == 0);
    };
    check_member(ens.member<0>());
    check_member(ens.member<1>());
    check_member(ens.member<2>());
    // Member k's parents of each extend are its own handles of the combinator's parents: the
    // fork structure (which parents repeat) is the same in every member.
    const auto& p0 = ens.member<0>().extend_parents;
    const auto& p1 = ens.member<1>().extend_parents;
    REQUIRE(p0.size() == p1.size());
    for (std::size_t c = 0; c < p0.size(); ++c) {
      REQUIRE(p0[c].size() == p1[c].size());
      for (std::size_t i = 0; i < p0[c].size(); ++i)
        for (std::size_t j = 0; j < p0[c].size(); ++j) CHECK((p0[c][i] == p0[c][j]) == (p1[c][i] == p1[c][j]));
    }

    auto cd = itscale::make_contrastive(counted(hash_lm(V, 1)), counted(hash_lm(V, 2)));
    const auto r2 = itscale::generate(cd, prompts, o);
    CHECK(cd.expert().extends == r2.compute.extend_calls);
    CHECK(cd.amateur().extends == r2.compute.extend_calls);
    CHECK(cd.amateur().extend_rows == r2.compute.extend_rows);
    CHECK(cd.amateur().live == 0);
  }

  SUBCASE("cfg: one batched extend of twice the rows; the unconditional prompt prefilled once for the batch") {
    auto cfg = itscale::make_cfg(counted(hash_lm(V, 1)), {.gamma = 2.0, .unconditional_prompt = {0}});
    const auto r = itscale::generate(cfg, prompts, o);
    CHECK(cfg.model().extends == r.compute.extend_calls);
    CHECK(cfg.model().extend_rows == 2 * r.compute.extend_rows);
    CHECK(cfg.model().prefills == r.compute.prefill_calls + 1);  // the shared unconditional prompt
    CHECK(cfg.model().live == 0);
    // A second run prefills the unconditional prompt again (it is released with its last user).
    const auto r2 = itscale::generate(cfg, prompts, o);
    CHECK(cfg.model().prefills == r.compute.prefill_calls + r2.compute.prefill_calls + 2);
    CHECK(cfg.model().live == 0);
  }
}

// ---- no leak, whatever call fails ----------------------------------------------------------------

namespace {

// Runs greedy and sampled decoding plus a beam search on `make(k)` for every k until a run
// completes without the fault firing; after each, the combinator and its members hold no handle.
template <class Make, class Members>
void no_leak_for_every_call(Make make, Members live_members, bool nan) {
  const std::vector<tokens> prompts = {prompt_a, prompt_b};
  std::size_t failures = 0;
  for (std::size_t k = 0;; ++k) {
    CAPTURE(k);
    auto s = make(k);
    bool threw = false;
    try {
      (void)itscale::generate(s, prompts, {.stop = {.max_new_tokens = 4}, .do_sample = true, .num_return_sequences = 2});
      (void)beams(s, prompts, {.num_beams = 2, .stop = {.max_new_tokens = 3}});
    } catch (const itscale::backend_error& e) {
      threw = true;
      CHECK(nan);
      CHECK(std::string(e.what()).find("NaN") != std::string::npos);
    } catch (const std::runtime_error& e) {
      threw = true;
      CHECK(!nan);
      CHECK(std::string(e.what()).find("injected") != std::string::npos);
    }
    CHECK(s.live_handles() == 0);
    CHECK(live_members(s) == 0);
    if (!threw) break;
    ++failures;
    REQUIRE(k < 200);
  }
  CHECK(failures > 5);  // the fault was met at prefills and extends alike
}

auto faulty(std::uint64_t seed, std::size_t k, bool nan) {
  counted c(hash_lm(V, seed));
  if (nan) {
    c.corrupt_on_call = k;
    c.corrupt_value = std::numeric_limits<float>::quiet_NaN();
    c.corrupt_token = 3;
  } else {
    c.throw_on_call = k;
  }
  return c;
}

}  // namespace

TEST_CASE("combinators: a member that throws or returns NaN at call k leaks no handle, for every k") {
  for (const bool nan : {false, true}) {
    CAPTURE(nan);
    // The fault in the last member: the earlier members' new handles must be released.
    no_leak_for_every_call(
        [&](std::size_t k) {
          return itscale::make_ensemble(counted(hash_lm(V, 1)), counted(hash_lm(V, 2)), faulty(3, k, nan));
        },
        [](auto& s) { return s.template member<0>().live + s.template member<1>().live + s.template member<2>().live; },
        nan);
    // The fault in the first member.
    no_leak_for_every_call(
        [&](std::size_t k) {
          return itscale::make_ensemble({.mode = itscale::ensemble_mode::mixture}, faulty(1, k, nan),
                                        counted(hash_lm(V, 2)));
        },
        [](auto& s) { return s.template member<0>().live + s.template member<1>().live; }, nan);
    no_leak_for_every_call(
        [&](std::size_t k) { return itscale::make_contrastive(counted(hash_lm(V, 1)), faulty(2, k, nan)); },
        [](auto& s) { return s.expert().live + s.amateur().live; }, nan);
    no_leak_for_every_call(
        [&](std::size_t k) {
          return itscale::make_cfg(faulty(1, k, nan), {.gamma = 1.5, .unconditional_prompt = {0}});
        },
        [](auto& s) { return s.model().live; }, nan);
  }
}

TEST_CASE("combinators: a failed extend changes nothing: old handles stay valid, no new ones") {
  auto ens = itscale::make_ensemble(counted(hash_lm(V, 1)), counted(hash_lm(V, 2)));
  const auto h = ens.prefill(prompt_a);
  const auto before = copy_row(ens.logits().row(0));
  ens.member<1>().throw_on_call = ens.member<1>().calls;  // the next call of member 1 throws
  std::vector<itscale::ensemble_source<counted, counted>::handle> kids(2);
  CHECK_THROWS_AS(ens.extend(std::vector{h, h}, tokens{4, 5}, kids), std::runtime_error);
  CHECK(ens.member<0>().live == 1);  // member 0's two new handles were released
  CHECK(ens.member<1>().live == 1);
  CHECK(ens.live_handles() == 1);
  // A dead parent is rejected before any member is called.
  const std::size_t calls = ens.member<0>().calls;
  CHECK_THROWS_AS(ens.extend(std::vector{h, h + 7}, tokens{4, 5}, kids), itscale::invalid_input);
  CHECK(ens.member<0>().calls == calls);
  // The old handle still works.
  ens.extend(std::vector{h}, tokens{4}, std::span(kids.data(), 1));
  CHECK(max_diff(ens.logits().row(0), ref_poe({hash_row(1, plus(prompt_a, 4)), hash_row(2, plus(prompt_a, 4))}, {1, 1})) <
        2e-5);
  (void)before;
  ens.release(kids[0]);
  ens.release(h);
  CHECK(ens.member<0>().live == 0);
  CHECK(ens.member<1>().live == 0);
}

TEST_CASE("combinators: destroying a combinator releases the member handles it still holds") {
  hash_lm a(V, 1), b(V, 2);
  {
    auto ens = itscale::make_ensemble(a, b);
    (void)ens.prefill(prompt_a);
    auto cd = itscale::make_contrastive(a, b);
    (void)cd.prefill(prompt_a);
    auto cfg = itscale::make_cfg(a, {.gamma = 2, .unconditional_prompt = {0}});
    const auto h = cfg.prefill(prompt_a);
    std::vector<decltype(cfg)::handle> kids(3);
    cfg.extend(std::vector{h, h, h}, tokens{1, 2, 3}, kids);
    auto moved = std::move(cfg);  // the moved-from combinator owns nothing
    CHECK(moved.live_handles() == 4);
    CHECK(a.live_handles() == 1 + 1 + 2 + 6);
  }
  CHECK(a.live_handles() == 0);
  CHECK(b.live_handles() == 0);
}

// ---- extend_span is forwarded when every member has it -------------------------------------------

namespace {

template <class S>
concept spans = requires(S& s, typename S::handle h, std::span<const token_id> t) { s.extend_span(h, t); };

// The rows of teacher forcing `span` after `prompt`, one single-token extend at a time.
template <class S>
std::vector<std::vector<float>> stepwise(S& s, const tokens& prompt, const tokens& span) {
  auto h = s.prefill(prompt);
  std::vector<std::vector<float>> rows;
  for (token_id t : span) {
    typename S::handle next{};
    s.extend(std::span(&h, 1), std::span(&t, 1), std::span(&next, 1));
    rows.push_back(copy_row(s.logits().row(0)));
    s.release(h);
    h = next;
  }
  s.release(h);
  return rows;
}

template <class S>
void check_span(S& s) {
  const tokens span = {5, 1, 7, 7, 2};
  const auto ref = stepwise(s, prompt_a, span);
  const auto h = s.prefill(prompt_a);
  const auto c = s.extend_span(h, span);
  const auto v = s.logits();
  REQUIRE(v.rows == span.size());
  for (std::size_t i = 0; i < span.size(); ++i) CHECK(copy_row(v.row(i)) == ref[i]);
  CHECK_THROWS_AS((void)s.extend_span(h, tokens{}), itscale::invalid_input);
  CHECK_THROWS_AS((void)s.extend_span(h, tokens{1, static_cast<token_id>(V)}), itscale::invalid_input);
  s.release(h);
  s.release(c);
  CHECK(s.live_handles() == 0);
}

}  // namespace

TEST_CASE("combinators: extend_span is forwarded when every member has it") {
  static_assert(!spans<itscale::ensemble_source<hash_lm, itscale::logit_source_archetype>>);  // not every member can
  static_assert(spans<itscale::ensemble_source<hash_lm, hash_lm&>>);
  static_assert(itscale::ScoringLogitSource<itscale::contrastive_source<hash_lm, hash_lm&>>);
  static_assert(itscale::ScoringLogitSource<itscale::cfg_source<hash_lm>>);
  static_assert(!itscale::ScoringLogitSource<itscale::cfg_source<itscale::logit_source_archetype>>);
  auto ens = itscale::make_ensemble({.mode = itscale::ensemble_mode::mixture}, hash_lm(V, 1), hash_lm(V, 2));
  check_span(ens);
  CHECK(ens.member<0>().live_handles() == 0);
  auto cd = itscale::make_contrastive(hash_lm(V, 1), hash_lm(V, 2), {.alpha = 0.7});
  check_span(cd);
  auto cfg = itscale::make_cfg(hash_lm(V, 3), {.gamma = 1.7, .unconditional_prompt = {0}});
  check_span(cfg);
  CHECK(cfg.model().live_handles() == 0);
}

// ---- capacity is forwarded when a member declares it -------------------------------------------

namespace {

// The hash LM with limits it declares and enforces (all-or-nothing): at most `live` handles and
// sequences of at most `context` tokens (0 = unbounded).
class limited_lm {
 public:
  using handle = hash_lm::handle;
  limited_lm(std::uint64_t seed, std::size_t live, std::size_t context) : lm_(V, seed), cap_{live, context} {}
  [[nodiscard]] std::size_t vocab_size() const noexcept { return V; }
  [[nodiscard]] itscale::source_capacity capacity() const noexcept { return cap_; }
  handle prefill(std::span<const token_id> p) {
    fits(p.size());
    room(1);
    const handle h = lm_.prefill(p);
    len(h) = p.size();
    return h;
  }
  void extend(std::span<const handle> parents, std::span<const token_id> t, std::span<handle> kids) {
    itscale::detail::check_extend_shape(parents.size(), t.size(), kids.size());
    std::vector<std::size_t> n;
    for (handle p : parents) n.push_back(len(p) + 1);
    for (std::size_t x : n) fits(x);
    room(parents.size());
    lm_.extend(parents, t, kids);
    for (std::size_t i = 0; i < kids.size(); ++i) len(kids[i]) = n[i];
  }
  handle extend_span(handle parent, std::span<const token_id> t) {
    const std::size_t n = len(parent) + t.size();
    fits(n);
    room(1);
    const handle h = lm_.extend_span(parent, t);
    len(h) = n;
    return h;
  }
  [[nodiscard]] itscale::logits_view logits() noexcept { return lm_.logits(); }
  void release(handle h) noexcept { lm_.release(h); }
  [[nodiscard]] std::size_t live_handles() const noexcept { return lm_.live_handles(); }

 private:
  void fits(std::size_t n) const {
    if (cap_.max_context != 0 && n > cap_.max_context) throw itscale::invalid_input("limited_lm: context exceeded");
  }
  void room(std::size_t n) const {
    if (cap_.max_live_sequences != 0 && lm_.live_handles() + n > cap_.max_live_sequences)
      throw itscale::invalid_input("limited_lm: out of sequence slots");
  }
  std::size_t& len(handle h) {
    if (h >= lens_.size()) lens_.resize(h + 1, 0);
    return lens_[h];
  }
  hash_lm lm_;
  itscale::source_capacity cap_;
  std::vector<std::size_t> lens_;
};
static_assert(itscale::SourceWithCapacity<limited_lm> && itscale::ScoringLogitSource<limited_lm>);

}  // namespace

TEST_CASE("combinators: capacity is the tightest a member allows, and the suite's limit checks hold") {
  static_assert(!itscale::SourceWithCapacity<itscale::ensemble_source<hash_lm, hash_lm>>);
  static_assert(itscale::SourceWithCapacity<itscale::ensemble_source<hash_lm, limited_lm>>);
  static_assert(itscale::SourceWithCapacity<itscale::cfg_source<limited_lm&>>);

  SUBCASE("ensemble and contrastive: the shortest context, the fewest slots") {
    // (The suite's search tree holds up to 13 handles at once.)
    auto e = itscale::make_ensemble(limited_lm(1, 40, 12), limited_lm(2, 32, 16), hash_lm(V, 3));
    CHECK(e.capacity() == itscale::source_capacity{32, 12});
    itscale::testing::check_logit_source(
        [] { return itscale::make_ensemble(limited_lm(1, 40, 12), limited_lm(2, 32, 16), hash_lm(V, 3)); });
    itscale::testing::check_logit_source(
        [] { return itscale::make_contrastive(limited_lm(1, 0, 9), limited_lm(2, 20, 0), {.alpha = 0.5}); });
  }
  SUBCASE("one object borrowed twice gives each ensemble handle two of its slots") {
    limited_lm lm(1, 7, 0);
    auto e = itscale::make_ensemble(lm, lm);
    CHECK(e.capacity() == itscale::source_capacity{3, 0});
    std::vector<decltype(e)::handle> hs;
    for (int i = 0; i < 3; ++i) hs.push_back(e.prefill(prompt_a));
    for (auto h : hs) e.release(h);
    limited_lm one(1, 1, 0);
    CHECK_THROWS_AS((void)itscale::make_ensemble(one, one), itscale::invalid_input);
    CHECK_NOTHROW((void)itscale::make_ensemble(one, limited_lm(2, 1, 0)));
  }
  SUBCASE("cfg: half the slots; the context less the unconditional prompt's extra tokens, enforced") {
    limited_lm lm(1, 65, 12);
    auto g = itscale::make_cfg(lm, {.gamma = 1.5, .unconditional_prompt = {0, 0, 0}});
    CHECK(g.capacity() == itscale::source_capacity{32, 10});
    itscale::testing::check_logit_source([] {
      return split_after_prompt(
          itscale::make_cfg(limited_lm(1, 65, 12), {.gamma = 1.5, .unconditional_prompt = {0, 0, 0}}));
    });
    // 32 handles at once (16 prefilled, sharing the unconditional prompt, and their 16 children).
    std::vector<decltype(g)::handle> hs(16), kids(16);
    for (auto& h : hs) h = g.prefill(prompt_a);
    g.extend(hs, tokens(16, 1), kids);
    CHECK(lm.live_handles() == 16 + 1 + 32);
    for (auto h : hs) g.release(h);
    CHECK(lm.live_handles() == 32);
    for (auto h : kids) g.release(h);
    limited_lm one(1, 1, 0);
    CHECK_THROWS_AS((void)itscale::make_cfg(one, {.gamma = 1.5, .unconditional_prompt = {0}}), itscale::invalid_input);
    CHECK_THROWS_AS((void)itscale::make_cfg(lm, {.gamma = 1.5, .unconditional_prompt = tokens(13, 0)}),
                    itscale::invalid_option);
    CHECK(lm.live_handles() == 0);
  }
}

// ---- bad input ------------------------------------------------------------------------------------

TEST_CASE("combinators: bad members, weights and scales are rejected with the rule they break") {
  hash_lm a(V, 1), b(V + 1, 2);
  CHECK_THROWS_AS((void)itscale::make_ensemble(a, b), itscale::invalid_input);
  CHECK(what_of([&] { (void)itscale::make_ensemble(a, a, b); }).find("member 2 has vocab size 49, member 0 has 48") !=
        std::string::npos);
  CHECK_THROWS_AS((void)itscale::make_contrastive(a, b), itscale::invalid_input);

  const auto weights = [&](std::vector<double> w) { (void)itscale::make_ensemble({.weights = std::move(w)}, a, a); };
  CHECK_THROWS_AS(weights({1, -0.5}), itscale::invalid_option);
  CHECK(what_of([&] { weights({1, -0.5}); }).find("weights[1] = -0.5 must be finite and >= 0") != std::string::npos);
  CHECK_THROWS_AS(weights({1, std::numeric_limits<double>::quiet_NaN()}), itscale::invalid_option);
  CHECK_THROWS_AS(weights({1, std::numeric_limits<double>::infinity()}), itscale::invalid_option);
  CHECK_THROWS_AS(weights({0, 0}), itscale::invalid_option);
  CHECK_THROWS_AS(weights({1}), itscale::invalid_option);
  CHECK_THROWS_AS(weights({1e308, 1e308}), itscale::invalid_option);
  CHECK_NOTHROW(weights({0, 2}));

  const auto cd = [&](double alpha, double beta) {
    (void)itscale::make_contrastive(a, a, {.alpha = alpha, .beta = beta});
  };
  CHECK_THROWS_AS(cd(-0.1, 0.1), itscale::invalid_option);
  CHECK_THROWS_AS(cd(std::numeric_limits<double>::quiet_NaN(), 0.1), itscale::invalid_option);
  CHECK_THROWS_AS(cd(2e6, 0.1), itscale::invalid_option);
  CHECK_THROWS_AS(cd(1, -0.01), itscale::invalid_option);
  CHECK_THROWS_AS(cd(1, 1.01), itscale::invalid_option);
  CHECK(what_of([&] { cd(1, 1.5); }).find("contrastive_options.beta = 1.5 must be in [0, 1]") != std::string::npos);
  CHECK_NOTHROW(cd(0, 0));
  CHECK_NOTHROW(cd(1e6, 1));

  const auto cfg = [&](double gamma, tokens u) {
    (void)itscale::make_cfg(a, {.gamma = gamma, .unconditional_prompt = std::move(u)});
  };
  CHECK_THROWS_AS(cfg(-1, {0}), itscale::invalid_option);
  CHECK_THROWS_AS(cfg(std::numeric_limits<double>::infinity(), {0}), itscale::invalid_option);
  CHECK_THROWS_AS(cfg(std::numeric_limits<double>::quiet_NaN(), {0}), itscale::invalid_option);
  CHECK_THROWS_AS(cfg(1.5, {}), itscale::invalid_option);
  CHECK(what_of([&] { cfg(1.5, {0, 48}); }).find("unconditional_prompt[1] = 48 is outside the vocabulary") !=
        std::string::npos);
  CHECK_NOTHROW(cfg(0, {0}));
}

TEST_CASE("combinators: bad prompts, tokens and handles are invalid_input and create nothing") {
  hash_lm a(V, 1);
  auto ens = itscale::make_ensemble(a, a);
  auto cfg = itscale::make_cfg(a, {.gamma = 2, .unconditional_prompt = {0}});
  CHECK_THROWS_AS((void)ens.prefill(tokens{}), itscale::invalid_input);
  CHECK_THROWS_AS((void)ens.prefill(tokens{1, -1}), itscale::invalid_input);
  CHECK_THROWS_AS((void)cfg.prefill(tokens{}), itscale::invalid_input);
  CHECK_THROWS_AS((void)cfg.prefill(prompt_a, tokens{}), itscale::invalid_input);
  CHECK_THROWS_AS((void)cfg.prefill(tokens{static_cast<token_id>(V)}), itscale::invalid_input);
  const auto h = cfg.prefill(prompt_a);
  std::vector<decltype(cfg)::handle> kids(1);
  CHECK_THROWS_AS(cfg.extend(std::vector{h + 1}, tokens{1}, kids), itscale::invalid_input);
  CHECK_THROWS_AS(cfg.extend(std::vector{h}, tokens{static_cast<token_id>(V)}, kids), itscale::invalid_input);
  CHECK(a.live_handles() == 2);  // the prefilled handle's two sequences only
  cfg.release(h);
  cfg.release(h);  // a second release of a dead handle is ignored
  CHECK(a.live_handles() == 0);
  CHECK(ens.live_handles() == 0);
}
