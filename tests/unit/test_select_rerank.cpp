// Reranking: best-of-N by a score or a verifier, weighted best-of-N, and rescoring with a second
// source (teacher forcing, batched with shared prefixes, or through extend_span).

#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <set>
#include <stdexcept>
#include <vector>

#include <itscale/backends/hash_lm.hpp>
#include <itscale/decode/generate.hpp>
#include <itscale/select/best_of_n.hpp>
#include <itscale/select/rescore.hpp>

#include "instrumented_source.hpp"
#include <itscale/steps/verifier.hpp>

#include "select_support.hpp"

namespace {
using itscale::generation;
using itscale::token_id;
using tokens = std::vector<token_id>;

generation candidate(tokens t, std::vector<float> lps = {}) {
  generation g;
  g.tokens = std::move(t);
  if (lps.empty()) lps.assign(g.tokens.size(), -1.0f);
  g.logprobs = std::move(lps);
  for (float x : g.logprobs) g.logprob_sum += x;
  g.score = g.logprob_sum;
  return g;
}

// Scores a candidate by its first token: answer 0 -> 0.9, answer 1 -> 0.6, else 0.1.
auto first_token_verifier() {
  return itscale::make_verifier("first-token", {0, 1}, [](std::span<const token_id>, std::span<const token_id> s, bool complete) {
    CHECK(complete);
    return s.empty() ? 0.0 : s[0] == 0 ? 0.9 : s[0] == 1 ? 0.6 : 0.1;
  });
}

// A source with the teacher-forcing capability `extend_span`, built from single-token extends:
// the logits view after a span holds one row per prefix.
template <itscale::LogitSource S>
class span_source {
 public:
  using handle = itscale::handle_t<S>;
  explicit span_source(S inner) : inner_(std::move(inner)) {}
  [[nodiscard]] std::size_t vocab_size() const { return inner_.vocab_size(); }
  handle prefill(std::span<const token_id> p) {
    span_view_ = false;
    return inner_.prefill(p);
  }
  void extend(std::span<const handle> parents, std::span<const token_id> t, std::span<handle> children) {
    span_view_ = false;
    inner_.extend(parents, t, children);
  }
  handle extend_span(handle parent, std::span<const token_id> t) {
    rows_.clear();
    handle cur = parent;
    for (std::size_t i = 0; i < t.size(); ++i) {
      handle child{};
      inner_.extend(std::span<const handle>(&cur, 1), t.subspan(i, 1), std::span<handle>(&child, 1));
      const auto v = inner_.logits();
      rows_.insert(rows_.end(), v.data, v.data + v.vocab);
      if (i > 0) inner_.release(cur);
      cur = child;
    }
    span_view_ = true;
    ++span_calls;
    return cur;
  }
  [[nodiscard]] itscale::logits_view logits() {
    return span_view_ ? itscale::logits_view{rows_.data(), rows_.size() / vocab_size(), vocab_size()} : inner_.logits();
  }
  void release(handle h) noexcept { inner_.release(h); }
  [[nodiscard]] std::size_t live_handles() const noexcept { return inner_.live_handles(); }
  std::size_t span_calls = 0;

 private:
  S inner_;
  std::vector<float> rows_;
  bool span_view_ = false;
};

// Throws on the k-th extend (0-based).
template <itscale::LogitSource S>
struct failing_source {
  using handle = itscale::handle_t<S>;
  S inner;
  std::size_t fail_at = 0, extends = 0;
  [[nodiscard]] std::size_t vocab_size() const { return inner.vocab_size(); }
  handle prefill(std::span<const token_id> p) { return inner.prefill(p); }
  void extend(std::span<const handle> parents, std::span<const token_id> t, std::span<handle> children) {
    if (extends++ == fail_at) throw std::runtime_error("backend down");
    inner.extend(parents, t, children);
  }
  [[nodiscard]] itscale::logits_view logits() { return inner.logits(); }
  void release(handle h) noexcept { inner.release(h); }
};

// log_softmax(row)[t] in double, the row from a fresh prefill of `prefix`: the one-token-at-a-time
// reference of rescoring.
double fresh_logprob(itscale::hash_lm& lm, const tokens& prefix, token_id t) {
  const auto h = lm.prefill(prefix);
  const auto row = lm.logits().row(0);
  double m = -INFINITY;
  for (float x : row) m = std::max(m, static_cast<double>(x));
  double s = 0;
  for (float x : row) s += std::exp(static_cast<double>(x) - m);
  const double lp = static_cast<double>(row[static_cast<std::size_t>(t)]) - m - std::log(s);
  lm.release(h);
  return lp;
}

// Candidates with shared prefixes (as a beam's n-best has), samples of another model, one token
// long ones and an empty one.
std::vector<generation> mixed_candidates(const tokens& prompt) {
  itscale::hash_lm proposer(40, 99);
  const auto samples = itscale::generate(proposer, std::span<const token_id>(prompt),
                                         {.stop = {.max_new_tokens = 9}, .do_sample = true, .seed = 4, .num_return_sequences = 6});
  std::vector<generation> c(samples.begin(), samples.end());
  c.push_back(candidate({5, 6, 7, 8, 9}));
  c.push_back(candidate({5, 6, 7, 8, 1}));
  c.push_back(candidate({5, 6, 2}));
  c.push_back(candidate({5, 6, 7, 8, 9}));  // a duplicate
  c.push_back(candidate({31}));
  c.push_back(candidate({}));
  return c;
}
}  // namespace

TEST_CASE("best_of_n: by log-prob, by mean log-prob, by a verifier; ties to the lower index") {
  const std::vector<generation> c{candidate({1}, {-1.0f}), candidate({2, 2, 2, 2}, {-0.3f, -0.3f, -0.3f, -0.3f}),
                                  candidate({3, 3}, {-0.5f, -0.5f})};
  const auto by_sum = itscale::best_of_n(c, itscale::sequence_score::logprob);
  CHECK(by_sum.best == 0);
  CHECK(by_sum.order == std::vector<std::size_t>{0, 2, 1});
  CHECK(by_sum.scores[1] == doctest::Approx(-1.2));
  const auto by_mean = itscale::best_of_n(c, itscale::sequence_score::mean_logprob);
  CHECK(by_mean.best == 1);
  CHECK(by_mean.scores[2] == doctest::Approx(-0.5));
  // candidate 0 and 2 tie on the sum: the lower index first.
  const std::vector<generation> tie{candidate({4}, {-1.0f}), candidate({5}, {-2.0f}), candidate({6}, {-1.0f})};
  CHECK(itscale::best_of_n(tie, itscale::sequence_score::logprob).order == std::vector<std::size_t>{0, 2, 1});

  auto v = first_token_verifier();
  const tokens prompt{1, 2};
  const std::vector<generation> answers{candidate({2, 6}), candidate({0, 6}), candidate({1, 6}), candidate({0, 6})};
  const auto r = itscale::best_of_n(v, prompt, answers);
  CHECK(r.best == 1);  // 0.9, tied with candidate 3: the lower index
  CHECK(r.order == std::vector<std::size_t>{1, 3, 2, 0});
  CHECK(r.compute.verifier_calls == 1);
  CHECK(r.compute.verified_sequences == 4);
}

TEST_CASE("weighted best-of-N sums verifier scores per answer and can differ from best-of-N") {
  auto v = first_token_verifier();
  const tokens prompt{3};
  // Answer 0 has the single best score (0.9); answer 1 has two samples at 0.6 = 1.2 in total.
  const std::vector<generation> c{candidate({1, 6}), candidate({0, 6}), candidate({2, 6}), candidate({1, 6})};
  const auto bon = itscale::best_of_n(v, prompt, c);
  const auto wbon = itscale::weighted_best_of_n(v, prompt, c, select_support::extract_answer);
  CHECK(bon.best == 1);
  REQUIRE(wbon.vote.answer);
  CHECK(*wbon.vote.answer == 1);
  CHECK(wbon.best == 0);  // the best-scored candidate with answer 1 (0 and 3 tie: the lower index)
  CHECK(wbon.vote.winner().weight == doctest::Approx(1.2));
  CHECK(wbon.vote.winner().samples == std::vector<std::size_t>{0, 3});
  CHECK(wbon.scores == std::vector<double>{0.6, 0.9, 0.1, 0.6});
  CHECK(wbon.vote.confidence == doctest::Approx(1.2 / 2.2));
  // With no answer anywhere: the best-scored candidate, no answer.
  const std::vector<generation> none{candidate({9, 6}), candidate({0 + 7, 6})};
  const auto n = itscale::weighted_best_of_n(v, prompt, none, select_support::extract_answer);
  CHECK(!n.vote.answer);
  CHECK(n.best == 0);
}

TEST_CASE("rescore equals the sum of teacher-forced log-probs computed one token at a time") {
  const tokens prompt{3, 1, 4, 1};
  const auto cands = mixed_candidates(prompt);
  // The batched-extend path: instrumented_source forwards no extend_span (hash_lm has one).
  test_support::instrumented_source<itscale::hash_lm> scorer(itscale::hash_lm(40, 1234));
  const auto r = itscale::rescore(scorer, prompt, cands);
  REQUIRE(r.logprob.size() == cands.size());
  itscale::hash_lm ref(40, 1234);
  for (std::size_t c = 0; c < cands.size(); ++c) {
    INFO("candidate " << c);
    tokens prefix = prompt;
    double sum = 0;
    REQUIRE(r.token_logprobs[c].size() == cands[c].tokens.size());
    for (std::size_t k = 0; k < cands[c].tokens.size(); ++k) {
      const double lp = fresh_logprob(ref, prefix, cands[c].tokens[k]);
      CHECK(r.token_logprobs[c][k] == doctest::Approx(lp).epsilon(1e-5));
      sum += lp;
      prefix.push_back(cands[c].tokens[k]);
    }
    CHECK(r.logprob[c] == doctest::Approx(sum).epsilon(1e-5));
  }
  CHECK(r.logprob.back() == 0);  // the empty candidate
  // One prefill; one batched extend per position; one row per distinct proper prefix.
  std::set<tokens> prefixes;
  std::size_t longest = 0;
  for (const auto& g : cands) {
    longest = std::max(longest, g.tokens.size());
    for (std::size_t k = 1; k < g.tokens.size(); ++k) prefixes.emplace(g.tokens.begin(), g.tokens.begin() + static_cast<std::ptrdiff_t>(k));
  }
  CHECK(r.compute.prefill_calls == 1);
  CHECK(r.compute.extend_calls == longest - 1);
  CHECK(r.compute.extend_rows == prefixes.size());
  CHECK(scorer.live == 0);
  // Ranking by the rescored log-prob.
  const auto rk = r.rank(true);
  CHECK(rk.scores[rk.best] == *std::max_element(rk.scores.begin(), rk.scores.end()));
}

TEST_CASE("rescore through extend_span agrees with the batched path; from a caller's prefill") {
  const tokens prompt{2, 7};
  const auto cands = mixed_candidates(prompt);
  itscale::hash_lm plain(40, 77);
  const auto batched = itscale::rescore(plain, prompt, cands);
  span_source<itscale::hash_lm> spans(itscale::hash_lm(40, 77));
  const auto spanned = itscale::rescore(spans, prompt, cands);
  std::size_t longer = 0;
  for (const auto& g : cands) longer += g.tokens.size() > 1;
  CHECK(spans.span_calls == longer);
  CHECK(spanned.compute.span_calls == longer);
  CHECK(spanned.compute.extend_calls == 0);
  for (std::size_t c = 0; c < cands.size(); ++c) {
    CHECK(spanned.token_logprobs[c] == batched.token_logprobs[c]);
    CHECK(spanned.logprob[c] == batched.logprob[c]);
  }
  CHECK(spans.live_handles() == 0);
  // Opting out of extend_span takes the batched path on the same source.
  const auto forced = itscale::rescore(spans, prompt, cands, {.use_extend_span = false});
  CHECK(forced.compute.span_calls == 0);
  CHECK(forced.logprob == batched.logprob);
  // A caller's prefill: no prefill here, the caller's handle stays live.
  {
    auto p = itscale::prefill(plain, prompt);
    const auto live = itscale::rescore(plain, p, cands);
    CHECK(live.compute.prefill_calls == 0);
    CHECK(live.logprob == batched.logprob);
    CHECK(plain.live_handles() == 1);
  }
  CHECK(plain.live_handles() == 0);
}

TEST_CASE("reranking bad input: no candidates, missing log-probs, throwing verifiers and sources; nothing leaks") {
  const tokens prompt{1, 2};
  const std::vector<generation> none;
  auto v = first_token_verifier();
  CHECK_THROWS_AS((void)itscale::best_of_n(none, itscale::sequence_score::logprob), itscale::invalid_input);
  CHECK_THROWS_AS((void)itscale::best_of_n(v, prompt, none), itscale::invalid_input);
  CHECK_THROWS_AS((void)itscale::weighted_best_of_n(v, prompt, none, select_support::extract_answer), itscale::invalid_input);
  itscale::hash_lm lm(40, 5);
  CHECK_THROWS_AS((void)itscale::rescore(lm, prompt, none), itscale::invalid_input);
  // Log-probs the score needs are missing.
  generation bare;
  bare.tokens = {1, 2, 3};
  const std::vector<generation> one{bare};
  CHECK_THROWS_AS((void)itscale::best_of_n(one, itscale::sequence_score::mean_logprob), itscale::invalid_input);
  CHECK_THROWS_AS((void)itscale::best_of_n(one, itscale::sequence_score::model_logprob), itscale::invalid_input);
  // Verifiers that throw, return NaN, or score in a signed range (weighted).
  const std::vector<generation> c{candidate({0, 6}), candidate({1, 6})};
  auto failing = itscale::make_verifier("failing", {0, 1}, [](auto, auto, bool) -> double { throw std::runtime_error("verifier down"); });
  CHECK_THROWS_WITH_AS((void)itscale::best_of_n(failing, prompt, c), "verifier down", std::runtime_error);
  CHECK_THROWS_WITH_AS((void)itscale::weighted_best_of_n(failing, prompt, c, select_support::extract_answer), "verifier down",
                       std::runtime_error);
  auto nan = itscale::make_verifier("nan", {0, 1}, [](auto, auto, bool) { return std::nan(""); });
  CHECK_THROWS_AS((void)itscale::best_of_n(nan, prompt, c), itscale::backend_error);
  auto signed_v = itscale::make_verifier("signed", {-1, 1}, [](auto, auto, bool) { return 0.0; });
  CHECK_THROWS_AS((void)itscale::weighted_best_of_n(signed_v, prompt, c, select_support::extract_answer), itscale::invalid_option);
  // An extractor that throws.
  const auto throwing = [](std::span<const token_id>) -> std::optional<int> { throw std::runtime_error("extractor failed"); };
  CHECK_THROWS_WITH_AS((void)itscale::weighted_best_of_n(v, prompt, c, throwing), "extractor failed", std::runtime_error);
  // Rescoring: a token outside the vocabulary, an empty prompt, a source failing mid-way.
  const std::vector<generation> outside{candidate({1, 2}), candidate({3, 400})};
  CHECK_THROWS_AS((void)itscale::rescore(lm, prompt, outside), itscale::invalid_input);
  CHECK_THROWS_AS((void)itscale::rescore(lm, tokens{}, c), itscale::invalid_input);
  CHECK(lm.live_handles() == 0);
  const auto cands = mixed_candidates(prompt);
  for (std::size_t k = 0; k < 8; ++k) {
    failing_source<itscale::hash_lm> f{itscale::hash_lm(40, 5), k};
    CHECK_THROWS_WITH_AS((void)itscale::rescore(f, prompt, cands), "backend down", std::runtime_error);
    CHECK(f.inner.live_handles() == 0);
  }
}
