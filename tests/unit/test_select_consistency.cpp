// Self-consistency and adaptive consistency on a synthetic source with a known answer
// distribution (select_support.hpp): votes, weights, the samples adaptive stopping saves, and
// every bad input.

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <vector>

#include <itscale/decode/generate.hpp>
#include <itscale/select/adaptive_consistency.hpp>
#include <itscale/select/self_consistency.hpp>
#include <itscale/steps/verifier.hpp>

#include "select_support.hpp"

namespace {
using namespace select_support;
using itscale::request;

std::vector<std::vector<token_id>> all_prompts() {
  std::vector<std::vector<token_id>> p;
  for (std::size_t id = 0; id < problems; ++id) p.push_back(prompt_of(id));
  return p;
}

std::vector<request> requests_of(const std::vector<std::vector<token_id>>& prompts) {
  std::vector<request> r;
  for (std::size_t i = 0; i < prompts.size(); ++i) r.push_back({prompts[i], static_cast<std::uint32_t>(i)});
  return r;
}

template <class R>
double accuracy(const R& result) {
  std::size_t right = 0;
  for (std::size_t id = 0; id < result.size(); ++id)
    right += result[id].vote.answer && *result[id].vote.answer == static_cast<int>(id % answers);
  return static_cast<double>(right) / static_cast<double>(result.size());
}

// Scores a sample 1 when its answer is the problem's mode, 0.2 otherwise (0 without an answer).
auto oracle_verifier() {
  return itscale::make_verifier("oracle", {0, 1}, [](std::span<const token_id> prompt, std::span<const token_id> seq, bool) {
    const auto a = extract_answer(seq);
    if (!a) return 0.0;
    const std::size_t id = static_cast<std::size_t>(prompt[1]) * 15 + static_cast<std::size_t>(prompt[2]);
    return *a == static_cast<int>(id % answers) ? 1.0 : 0.2;
  });
}
}  // namespace

TEST_CASE("self_consistency: N samples forked from one prefill, voted with the tie rule") {
  auto src = answer_source();
  const auto prompt = prompt_of(17);
  const auto r = itscale::self_consistency(src, prompt, extract_answer, {.samples = 12, .sampling = answer_sampling(3)});
  REQUIRE(r.size() == 1);
  const auto& p = r[0];
  CHECK(p.samples_spent == 12);
  CHECK(p.samples.size() == 12);
  CHECK(p.stop == itscale::consistency_stop::fixed);
  CHECK(std::isnan(p.criterion));
  CHECK(r.status == itscale::run_status::completed);
  // The samples are generate's, with num_return_sequences = N.
  auto so = answer_sampling(3);
  so.num_return_sequences = 12;
  const auto g = itscale::generate(src, std::span<const token_id>(prompt), so);
  for (std::size_t i = 0; i < 12; ++i) CHECK(p.samples[i].tokens == g[i].tokens);
  // The vote is tally_votes over the extracted answers.
  std::vector<std::optional<int>> answers_seen;
  for (const auto& s : p.samples) answers_seen.push_back(extract_answer(s.tokens));
  CHECK(p.answers == answers_seen);
  const auto t = itscale::tally_votes(answers_seen);
  CHECK(p.vote.answer == t.answer);
  CHECK(p.vote.confidence == t.confidence);
  CHECK(p.vote.distribution.size() == t.distribution.size());
  CHECK(p.weights.empty());
  // One prefill of 3 tokens, one extend row per sample (the answer; EOS ends it).
  CHECK(r.compute.prefill_calls == 1);
  CHECK(r.compute.prefill_tokens == 3);
  CHECK(r.compute.extend_rows == 12);
  CHECK(r.compute.verifier_calls == 0);
  CHECK(src.live_handles() == 0);
}

TEST_CASE("self_consistency: many prompts in one batched call; majority beats one sample") {
  auto src = answer_source();
  const auto prompts = all_prompts();
  const auto reqs = requests_of(prompts);
  const auto one = itscale::self_consistency(src, std::span<const request>(reqs), extract_answer,
                                             {.samples = 1, .sampling = answer_sampling()});
  const auto many = itscale::self_consistency(src, std::span<const request>(reqs), extract_answer,
                                              {.samples = 16, .sampling = answer_sampling()});
  REQUIRE(many.size() == problems);
  CHECK(many.compute.prefill_calls == problems);
  CHECK(many.compute.extend_calls == 1);  // every prompt's every sample in one batched step
  CHECK(many.compute.extend_rows == problems * 16);
  const double a1 = accuracy(one), a16 = accuracy(many);
  MESSAGE("accuracy: 1 sample " << a1 << ", majority@16 " << a16);
  CHECK(a16 > a1 + 0.1);
  // A prompt's samples do not depend on the rest of the batch.
  const auto alone = itscale::self_consistency(src, std::span<const request>(&reqs[40], 1), extract_answer,
                                               {.samples = 16, .sampling = answer_sampling()});
  for (std::size_t i = 0; i < 16; ++i) CHECK(alone[0].samples[i].tokens == many[40].samples[i].tokens);
  CHECK(src.live_handles() == 0);
}

TEST_CASE("self_consistency: weighted by a verifier and by the length-normalised log-prob") {
  auto src = answer_source();
  auto v = oracle_verifier();
  const auto prompts = all_prompts();
  const auto reqs = requests_of(prompts);
  const auto plain = itscale::self_consistency(src, std::span<const request>(reqs), extract_answer,
                                               {.samples = 5, .sampling = answer_sampling(9)});
  const auto weighted = itscale::self_consistency(src, std::span<const request>(reqs), extract_answer, v,
                                                  {.samples = 5, .sampling = answer_sampling(9),
                                                   .weight = itscale::vote_weight::verifier});
  // One batched verifier call over every sample of every prompt.
  CHECK(weighted.compute.verifier_calls == 1);
  CHECK(weighted.compute.verified_sequences == problems * 5);
  const auto& w0 = weighted[0];
  REQUIRE(w0.weights.size() == 5);
  for (std::size_t i = 0; i < 5; ++i) {
    const auto a = w0.answers[i];
    CHECK(w0.weights[i] == (!a ? 0.0 : *a == 0 ? 1.0 : 0.2));
  }
  MESSAGE("accuracy@5: majority " << accuracy(plain) << ", verifier-weighted " << accuracy(weighted));
  CHECK(accuracy(weighted) > accuracy(plain));

  const auto lp = itscale::self_consistency(src, std::span<const request>(reqs), extract_answer,
                                            {.samples = 5, .sampling = answer_sampling(9),
                                             .weight = itscale::vote_weight::mean_logprob});
  // Two tokens per sample: the answer (log p) and EOS (log 1 = 0): weight = exp(log p / 2).
  for (std::size_t id : {0u, 33u, 101u}) {
    const auto dist = distribution(id);
    for (std::size_t i = 0; i < 5; ++i) {
      const token_id t = lp[id].samples[i].tokens[0];
      CHECK(lp[id].weights[i] == doctest::Approx(std::sqrt(dist[static_cast<std::size_t>(t)])).epsilon(1e-5));
    }
  }
  // Same samples as the majority run; raw-logit weights equal processed ones at temperature 1.
  const auto model = itscale::self_consistency(src, std::span<const request>(reqs), extract_answer,
                                               {.samples = 5, .sampling = answer_sampling(9),
                                                .weight = itscale::vote_weight::mean_model_logprob});
  for (std::size_t i = 0; i < 5; ++i) CHECK(model[7].weights[i] == doctest::Approx(lp[7].weights[i]).epsilon(1e-6));
  CHECK(lp[7].samples[0].tokens == plain[7].samples[0].tokens);
  CHECK(src.live_handles() == 0);
}

TEST_CASE("adaptive consistency spends fewer samples than fixed N at equal accuracy") {
  auto src = answer_source();
  const auto prompts = all_prompts();
  const auto reqs = requests_of(prompts);
  const std::size_t n = 40;
  double fixed_acc = 0;
  std::size_t fixed_spent = 0;
  const std::uint64_t seeds[] = {1, 2, 3, 4};
  for (std::uint64_t seed : seeds) {
    const auto fixed = itscale::self_consistency(src, std::span<const request>(reqs), extract_answer,
                                                 {.samples = n, .sampling = answer_sampling(seed)});
    fixed_acc += accuracy(fixed) / std::size(seeds);
    fixed_spent += fixed.samples_spent();
  }
  struct variant {
    const char* name;
    itscale::adaptive_options opts;
    double max_share;  // samples spent / fixed N's, at most
  };
  const variant variants[] = {
      {"beta 0.95", {.rule = itscale::stop_rule::beta, .confidence = 0.95, .max_samples = n}, 0.5},
      {"dirichlet 0.95", {.rule = itscale::stop_rule::dirichlet, .confidence = 0.95, .max_samples = n}, 0.5},
      {"entropy 0.75", {.rule = itscale::stop_rule::entropy, .max_entropy = 0.75, .max_samples = n}, 0.5},
      {"window 5 (ESC)", {.rule = itscale::stop_rule::window, .window = 5, .max_samples = n, .round_size = 5}, 0.75},
      {"beta 0.95, rounds of 4", {.rule = itscale::stop_rule::beta, .max_samples = n, .round_size = 4}, 0.6},
  };
  for (const auto& v : variants) {
    double acc = 0;
    std::size_t spent = 0;
    for (std::uint64_t seed : seeds) {
      auto o = v.opts;
      o.sampling = answer_sampling(seed);
      const auto r = itscale::adaptive_consistency(src, std::span<const request>(reqs), extract_answer, o);
      acc += accuracy(r) / std::size(seeds);
      spent += r.samples_spent();
      for (const auto& p : r) CHECK(p.stop != itscale::consistency_stop::budget);
    }
    const double share = static_cast<double>(spent) / static_cast<double>(fixed_spent);
    char line[200];
    std::snprintf(line, sizeof line, "%-24s samples/prompt %.2f vs %zu (%.1fx fewer), accuracy %.4f vs fixed %.4f",
                  v.name, static_cast<double>(spent) / (problems * std::size(seeds)), n, 1 / share, acc, fixed_acc);
    MESSAGE(line);
    CHECK(share <= v.max_share);
    CHECK(acc >= fixed_acc - 0.02);
  }
  CHECK(src.live_handles() == 0);
}

TEST_CASE("adaptive consistency draws the same samples as fixed self-consistency, round size aside") {
  auto src = answer_source();
  const auto prompts = all_prompts();
  const std::vector<request> reqs{{prompts[3], 7, 0}, {prompts[50], 9, 0}, {prompts[120], 2, 0}};
  const auto fixed = itscale::self_consistency(src, std::span<const request>(reqs), extract_answer,
                                               {.samples = 40, .sampling = answer_sampling(5)});
  for (std::size_t round : {1u, 3u, 8u}) {
    const auto r = itscale::adaptive_consistency(src, std::span<const request>(reqs), extract_answer,
                                                 {.max_samples = 40, .round_size = round, .sampling = answer_sampling(5)});
    for (std::size_t q = 0; q < reqs.size(); ++q) {
      REQUIRE(r[q].samples_spent <= 40);
      for (std::size_t i = 0; i < r[q].samples_spent; ++i) {
        CHECK(r[q].samples[i].tokens == fixed[q].samples[i].tokens);
        CHECK(r[q].samples[i].sample == i);
      }
      // Rounds may overshoot the stopping point by less than one round.
      if (r[q].stop == itscale::consistency_stop::criterion) CHECK(r[q].criterion >= 0.95);
    }
  }
  CHECK(src.live_handles() == 0);
}

TEST_CASE("adaptive consistency: each rule stops where its definition says") {
  auto src = answer_source();
  const auto prompts = all_prompts();
  const auto reqs = requests_of(prompts);
  SUBCASE("window: the first unanimous window of w, checked at window boundaries") {
    const auto r = itscale::adaptive_consistency(src, std::span<const request>(reqs), extract_answer,
                                                 {.rule = itscale::stop_rule::window, .window = 4, .max_samples = 40});
    for (const auto& p : r) {
      REQUIRE(p.samples_spent % 4 == 0);
      const auto unanimous = [&](std::size_t b) {
        for (std::size_t i = b; i < b + 4; ++i)
          if (!p.answers[i] || *p.answers[i] != *p.answers[b]) return false;
        return true;
      };
      for (std::size_t b = 0; b + 4 < p.samples_spent; b += 4) CHECK(!unanimous(b));
      if (p.stop == itscale::consistency_stop::criterion) CHECK(unanimous(p.samples_spent - 4));
      else CHECK(p.samples_spent == 40);
    }
  }
  SUBCASE("beta: stops at the first sample whose Beta probability reaches the confidence") {
    const auto r = itscale::adaptive_consistency(src, std::span<const request>(reqs), extract_answer,
                                                 {.rule = itscale::stop_rule::beta, .confidence = 0.9, .max_samples = 30});
    for (const auto& p : r) {
      for (std::size_t k = 1; k <= p.samples_spent; ++k) {
        const auto t = itscale::tally_votes(std::span<const std::optional<int>>(p.answers).first(k));
        const double prob = t.distribution.empty() ? 0.0
                            : itscale::beta_stop_probability(t.distribution[0].count,
                                                             t.distribution.size() > 1 ? t.distribution[1].count : 0);
        if (k < p.samples_spent) CHECK(prob < 0.9);
        else if (p.stop == itscale::consistency_stop::criterion) CHECK(prob == p.criterion);
      }
    }
  }
  SUBCASE("min_samples holds every prompt back") {
    const auto r = itscale::adaptive_consistency(src, std::span<const request>(reqs), extract_answer,
                                                 {.max_samples = 20, .min_samples = 12});
    for (const auto& p : r) CHECK(p.samples_spent >= 12);
  }
  CHECK(src.live_handles() == 0);
}

TEST_CASE("adaptive consistency: the budget spans all rounds; cancellation") {
  auto src = answer_source();
  const auto prompts = all_prompts();
  const auto reqs = requests_of(prompts);
  itscale::adaptive_options o{.max_samples = 40};
  o.run.budget.max_generated_tokens = 1000;
  const auto r = itscale::adaptive_consistency(src, std::span<const request>(reqs), extract_answer, o);
  CHECK(r.status == itscale::run_status::budget_exhausted);
  // A step in flight completes: the overshoot is at most one step of every prompt's samples.
  CHECK(r.compute.generated_tokens() <= 1000 + problems);
  std::size_t cut = 0;
  for (const auto& p : r) cut += p.stop == itscale::consistency_stop::budget;
  CHECK(cut > 0);
  CHECK(src.live_handles() == 0);

  std::stop_source stop;
  stop.request_stop();
  itscale::adaptive_options c{};
  c.run.budget.stop = stop.get_token();
  const auto rc = itscale::adaptive_consistency(src, std::span<const request>(reqs), extract_answer, c);
  CHECK(rc.status == itscale::run_status::cancelled);
  CHECK(rc.compute.generated_tokens() == 0);
  CHECK(src.live_handles() == 0);
}

TEST_CASE("self-consistency bad input: N = 0, bad options, throwing extractors and verifiers; nothing leaks") {
  auto src = answer_source();
  const auto prompt = prompt_of(5);
  const auto prompts = all_prompts();
  const auto reqs = requests_of(prompts);
  using itscale::invalid_option;
  CHECK_THROWS_AS((void)itscale::self_consistency(src, prompt, extract_answer, {.samples = 0}), invalid_option);
  CHECK_THROWS_AS((void)itscale::adaptive_consistency(src, prompt, extract_answer, {.max_samples = 0}), invalid_option);
  CHECK_THROWS_AS((void)itscale::adaptive_consistency(src, prompt, extract_answer, {.round_size = 0}), invalid_option);
  CHECK_THROWS_AS((void)itscale::adaptive_consistency(src, prompt, extract_answer, {.confidence = 1.5}), invalid_option);
  CHECK_THROWS_AS((void)itscale::adaptive_consistency(src, prompt, extract_answer, {.min_samples = 50}), invalid_option);
  CHECK_THROWS_AS((void)itscale::self_consistency(src, prompt, extract_answer, {.samples = 4, .sampling = {.do_sample = false}}),
                  invalid_option);
  CHECK_THROWS_AS((void)itscale::self_consistency(src, prompt, extract_answer,
                                                  {.samples = 4, .sampling = {.do_sample = true, .num_return_sequences = 3}}),
                  invalid_option);
  CHECK_THROWS_AS((void)itscale::self_consistency(src, prompt, extract_answer,
                                                  {.samples = 4, .weight = itscale::vote_weight::verifier}),
                  invalid_option);
  auto v = oracle_verifier();
  CHECK_THROWS_AS((void)itscale::self_consistency(src, prompt, extract_answer, v, {.samples = 4}), invalid_option);
  auto signed_v = itscale::make_verifier("signed", {-1, 1}, [](auto, auto, bool) { return 0.0; });
  CHECK_THROWS_AS((void)itscale::self_consistency(src, prompt, extract_answer, signed_v,
                                                  {.samples = 4, .weight = itscale::vote_weight::verifier}),
                  invalid_option);
  // Bad prompts and repeated streams.
  const std::vector<token_id> bad{15, 99};
  CHECK_THROWS_AS((void)itscale::self_consistency(src, bad, extract_answer, {.samples = 2}), itscale::invalid_input);
  CHECK_THROWS_AS((void)itscale::adaptive_consistency(src, bad, extract_answer, {}), itscale::invalid_input);
  const std::vector<request> same{{prompts[0], 1}, {prompts[1], 1}};
  CHECK_THROWS_AS((void)itscale::adaptive_consistency(src, std::span<const request>(same), extract_answer, {}),
                  itscale::invalid_input);
  CHECK(src.live_handles() == 0);

  // An extractor that throws: on the first sample (fixed), and in a later round (adaptive, with
  // the prefills of 225 prompts alive at that moment).
  int calls = 0;
  const auto throwing = [&calls](std::span<const token_id> t) -> std::optional<int> {
    if (++calls == 300) throw std::runtime_error("extractor failed");
    return extract_answer(t);
  };
  CHECK_THROWS_WITH_AS((void)itscale::self_consistency(src, std::span<const request>(reqs), throwing, {.samples = 2}),
                       "extractor failed", std::runtime_error);
  CHECK(src.live_handles() == 0);
  calls = 0;
  CHECK_THROWS_WITH_AS((void)itscale::adaptive_consistency(src, std::span<const request>(reqs), throwing, {}),
                       "extractor failed", std::runtime_error);
  CHECK(src.live_handles() == 0);

  // A verifier that throws, and one that returns NaN.
  auto failing = itscale::make_verifier("failing", {0, 1}, [](auto, auto, bool) -> double { throw std::runtime_error("verifier down"); });
  CHECK_THROWS_WITH_AS((void)itscale::self_consistency(src, prompt, extract_answer, failing,
                                                       {.samples = 3, .weight = itscale::vote_weight::verifier}),
                       "verifier down", std::runtime_error);
  auto nan = itscale::make_verifier("nan", {0, 1}, [](auto, auto, bool) { return std::nan(""); });
  CHECK_THROWS_AS((void)itscale::self_consistency(src, prompt, extract_answer, nan,
                                                  {.samples = 3, .weight = itscale::vote_weight::verifier}),
                  itscale::backend_error);
  CHECK(src.live_handles() == 0);
}
