// How the beam family runs (issue #9): compute counted by the metering wrapper equals what the
// source saw; budgets and cancellation end a search cleanly with what it has; live starts equal
// prompt starts and leave the caller's handle alive; every entry point takes a caller's
// processor (stochastic beam search included), whose token context and state follow each beam.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <stop_token>
#include <string>
#include <vector>

#include <itscale/search.hpp>

#include "instrumented_source.hpp"
#include "same_search.hpp"

using itscale::token_id;
using tokens = std::vector<token_id>;

namespace {

using src_t = test_support::instrumented_source<itscale::hash_lm>;

// What the instrumented source counted equals what the search reports.
void check_compute_matches(const itscale::compute_stats& c, const src_t& src, std::size_t prompt_tokens) {
  std::size_t rows = 0;
  for (const auto& parents : src.extend_parents) rows += parents.size();
  CHECK(c.prefill_calls == src.prefills);
  CHECK(c.prefill_tokens == prompt_tokens);
  CHECK(c.extend_calls == src.extends);
  CHECK(c.extend_rows == rows);
  CHECK(c.generated_tokens() == rows);
  CHECK(c.source_calls() == src.prefills + src.extends);
  CHECK(c.span_calls == 0);
  CHECK(c.peak_live_handles == static_cast<std::uint64_t>(src.peak_live));
  CHECK(c.wall_seconds > 0);
  CHECK(c.source_seconds <= c.wall_seconds);
}

// A stateful processor that records the generated tokens in its state and checks, at every row,
// that the search's token context (prompt + generated) and its generated count agree with the
// state it forked with its beam — a beam that received another beam's context or state fails.
struct context_witness {
  using state_type = tokens;
  state_type start(std::span<const token_id>) const { return {}; }
  void advance(state_type& s, token_id t) const { s.push_back(t); }
  void apply(std::span<float>, const itscale::step_context& ctx, const state_type& s) const {
    const auto generated = ctx.tokens.subspan(ctx.prompt_length);
    if (ctx.generated() != s.size() || !std::equal(generated.begin(), generated.end(), s.begin(), s.end()))
      throw std::logic_error("context or state not forked with its beam");
  }
};

bool is_budget_stop(itscale::stop_reason r) {
  return r == itscale::stop_reason::budget || r == itscale::stop_reason::cancelled;
}

}  // namespace

TEST_CASE("beam family: compute stats equal what an instrumented source counted") {
  const std::vector<tokens> prompts{{1, 2}, {3}, {4, 5, 6}};
  const std::size_t prompt_tokens = 6;
  {
    src_t src(itscale::hash_lm(40, 9));
    const auto r = itscale::beam_search(
        src, prompts, {.num_beams = 6, .num_return_sequences = 2, .stop = {.max_new_tokens = 10, .eos_token_id = {0}}});
    check_compute_matches(r.compute, src, prompt_tokens);
    CHECK(r.status == itscale::run_status::completed);
    for (const auto& p : r.prompts) CHECK(p.status == itscale::run_status::completed);
    CHECK(src.live == 0);
  }
  {
    src_t src(itscale::hash_lm(40, 9));
    const auto r = itscale::diverse_beam_search(
        src, prompts,
        {.beam = {.num_beams = 6, .num_return_sequences = 4, .stop = {.max_new_tokens = 9, .eos_token_id = {0, 5}}},
         .num_beam_groups = 3, .diversity_penalty = 0.8});
    check_compute_matches(r.compute, src, prompt_tokens);
    CHECK(r.status == itscale::run_status::completed);
    CHECK(src.live == 0);
  }
  {
    src_t src(itscale::hash_lm(40, 9));
    const auto r = itscale::stochastic_beam_search(
        src, prompts, {.num_samples = 4, .stop = {.max_new_tokens = 9, .eos_token_id = {0}}, .seed = 3});
    check_compute_matches(r.compute, src, prompt_tokens);
    CHECK(r.status == itscale::run_status::completed);
    CHECK(src.live == 0);
  }
}

TEST_CASE("beam results are generations: request, rank, log-probs, HF's float sum and score held in doubles") {
  const std::vector<tokens> prompts{{4, 5, 6}, {7}};
  const itscale::beam_options o{.num_beams = 4, .length_penalty = 0.7, .num_return_sequences = 3,
                                .stop = {.max_new_tokens = 9, .eos_token_id = {0, 3}}};
  itscale::hash_lm lm(60, 41);
  const auto r = itscale::beam_search(lm, prompts, o);
  REQUIRE(r.prompts.size() == 2);
  CHECK(r.size() == 6);
  std::size_t i = 0;
  for (std::size_t p = 0; p < 2; ++p) {
    CHECK(r.prompts[p].first == i);
    REQUIRE(r.prompts[p].count == 3);
    for (std::size_t j = 0; j < 3; ++j, ++i) {
      const itscale::generation& g = r[i];
      CHECK(&g == &r.hypotheses(p)[j]);
      CHECK(g.request == p);
      CHECK(g.sample == j);
      REQUIRE(g.logprobs.size() == g.tokens.size());
      CHECK(g.model_logprobs.empty());
      float sum = 0;  // left to right in float, as the search (and HF) accumulate
      for (float x : g.logprobs) sum += x;
      CHECK(g.logprob_sum == double{sum});
      CHECK(g.score == double{static_cast<float>(
                           sum / static_cast<float>(std::pow(static_cast<double>(g.tokens.size()), 0.7)))});
      CHECK(g.score == double{static_cast<float>(g.score)});  // a float value, exactly
    }
  }
  std::size_t n = 0;
  for (const auto& g : r) n += !g.tokens.empty();
  CHECK(n == r.size());
}

TEST_CASE("beam search cut by a budget returns what it has: the running beams, as the search to that length would") {
  // K = 4, no EOS: each step after the first extends 4 rows. With max_generated_tokens = 10 the
  // check after step 3's selection sees 12 >= 10 and stops: 4 running beams of 4 tokens, which
  // must be exactly the hypotheses of the same search with max_new_tokens = 4 (its last step
  // finishes the same top-4 candidates), apart from their stop reason.
  const tokens prompt{1, 2, 3};
  for (const double lp : {1.0, 0.5}) {
    CAPTURE(lp);
    itscale::beam_options o{.num_beams = 4, .length_penalty = lp, .num_return_sequences = 4,
                            .stop = {.max_new_tokens = 50}, .record_trace = true};
    src_t src(itscale::hash_lm(50, 3));
    const itscale::run_options run{.budget = {.max_generated_tokens = 10}};
    const auto cut = itscale::beam_search(src, std::span<const token_id>(prompt), o, run);
    CHECK(cut.status == itscale::run_status::budget_exhausted);
    CHECK(cut.prompts[0].status == itscale::run_status::budget_exhausted);
    CHECK(cut.prompts[0].steps == 4);
    CHECK(cut.prompts[0].trace.size() == 4);
    CHECK(cut.compute.generated_tokens() == 12);
    CHECK(src.extends == 3);
    CHECK(src.live == 0);
    o.stop.max_new_tokens = 4;
    itscale::hash_lm lm(50, 3);
    const auto full = itscale::beam_search(lm, std::span<const token_id>(prompt), o);
    REQUIRE(cut.size() == 4);
    REQUIRE(full.size() == 4);
    for (std::size_t j = 0; j < 4; ++j) {
      CHECK(cut[j].tokens == full[j].tokens);
      CHECK(cut[j].logprobs == full[j].logprobs);
      CHECK(cut[j].logprob_sum == full[j].logprob_sum);
      CHECK(cut[j].score == full[j].score);
      CHECK(cut[j].stop == itscale::stop_reason::budget);
      CHECK(full[j].stop == itscale::stop_reason::max_new_tokens);
    }
  }
}

TEST_CASE("beam search cut by a budget: finished hypotheses first, then running beams; "
          "prompts already done stay completed") {
  // Three prompts with EOS-heavy models end at different steps; a source-call budget cuts the run
  // after the shortest has finished. Found by scanning seeds (deterministic).
  const std::vector<tokens> prompts{{1, 2}, {3}, {4, 5, 6}};
  const itscale::beam_options o{.num_beams = 3, .num_return_sequences = 3,
                                .stop = {.max_new_tokens = 30, .eos_token_id = {0, 1}}};
  bool tested = false;
  for (std::uint64_t seed = 1; seed <= 200 && !tested; ++seed) {
    itscale::hash_lm lm(12, seed);
    const auto free = itscale::beam_search(lm, prompts, o);
    std::size_t lo = 1000, hi = 0;
    for (const auto& p : free.prompts) lo = std::min(lo, p.steps), hi = std::max(hi, p.steps);
    if (hi <= lo + 1) continue;
    tested = true;
    CAPTURE(seed);
    // After step t's selection 3 prefills + t extends have been made: t = lo cuts every prompt
    // that needs more than lo + 1 steps, and none that finished in lo + 1 or fewer.
    src_t src(itscale::hash_lm(12, seed));
    const auto r = itscale::beam_search(src, prompts, o, {.budget = {.max_source_calls = 3 + lo}});
    CHECK(r.status == itscale::run_status::budget_exhausted);
    CHECK(src.live == 0);
    REQUIRE(r.prompts.size() == 3);
    for (std::size_t p = 0; p < 3; ++p) {
      CAPTURE(p);
      const auto h = r.hypotheses(p);
      if (free.prompts[p].steps <= lo + 1) {
        CHECK(r.prompts[p].status == itscale::run_status::completed);
        CHECK(r.prompts[p].steps == free.prompts[p].steps);
        REQUIRE(h.size() == free.hypotheses(p).size());
        for (std::size_t j = 0; j < h.size(); ++j) CHECK(h[j].tokens == free.hypotheses(p)[j].tokens);
        continue;
      }
      CHECK(r.prompts[p].status == itscale::run_status::budget_exhausted);
      CHECK(r.prompts[p].steps == lo + 1);
      CHECK(h.size() == 3);  // finished ones, then running beams fill up to num_return_sequences
      bool running_seen = false;
      for (std::size_t j = 0; j < h.size(); ++j) {
        CHECK(h[j].sample == j);
        CHECK(h[j].tokens.size() <= lo + 1);
        if (h[j].stop == itscale::stop_reason::budget) {
          running_seen = true;
          CHECK(h[j].tokens.size() == lo + 1);
          CHECK(!o.stop.is_eos(h[j].tokens.back()));
        } else {
          CHECK_FALSE(running_seen);  // every finished hypothesis comes before every running beam
          CHECK(h[j].stop == itscale::stop_reason::eos);
        }
        if (j > 0 && h[j - 1].stop == h[j].stop) CHECK(h[j - 1].score >= h[j].score);
      }
    }
  }
  CHECK(tested);
}

TEST_CASE("beam family cancelled through a std::stop_source ends cleanly with status cancelled and leaks nothing") {
  const std::vector<tokens> prompts{{1, 2}, {3}};
  // Cancelled from inside the search, during step 3's rows: the check after that step stops it.
  struct cancel_at {
    std::stop_source* ss;
    void apply(std::span<float>, const itscale::step_context& ctx) const {
      if (ctx.generated() == 3) ss->request_stop();
    }
  };
  {
    std::stop_source ss;
    src_t src(itscale::hash_lm(30, 4));
    const itscale::run_options run{.budget = {.stop = ss.get_token()}};
    const auto r = itscale::beam_search(src, prompts,
                                        {.num_beams = 4, .num_return_sequences = 4, .stop = {.max_new_tokens = 20}},
                                        cancel_at{&ss}, run);
    CHECK(r.status == itscale::run_status::cancelled);
    for (std::size_t p = 0; p < 2; ++p) {
      CHECK(r.prompts[p].status == itscale::run_status::cancelled);
      CHECK(r.prompts[p].steps == 4);
      REQUIRE(r.hypotheses(p).size() == 4);
      for (const auto& h : r.hypotheses(p)) {
        CHECK(h.stop == itscale::stop_reason::cancelled);
        CHECK(h.tokens.size() == 4);
      }
    }
    CHECK(src.extends == 3);
    CHECK(src.live == 0);
  }
  {
    std::stop_source ss;
    src_t src(itscale::hash_lm(30, 4));
    const itscale::run_options run{.budget = {.stop = ss.get_token()}};
    const auto r = itscale::diverse_beam_search(
        src, prompts,
        {.beam = {.num_beams = 4, .num_return_sequences = 4, .stop = {.max_new_tokens = 20}}, .num_beam_groups = 2,
         .diversity_penalty = 1.0},
        cancel_at{&ss}, run);
    CHECK(r.status == itscale::run_status::cancelled);
    CHECK(r.size() == 8);
    CHECK(r.group.size() == 8);
    for (const auto& h : r) CHECK(h.stop == itscale::stop_reason::cancelled);
    CHECK(src.live == 0);
  }
  {
    std::stop_source ss;
    src_t src(itscale::hash_lm(30, 4));
    const itscale::run_options run{.budget = {.stop = ss.get_token()}};
    const auto r = itscale::stochastic_beam_search(src, prompts, {.num_samples = 3, .stop = {.max_new_tokens = 20}},
                                                   cancel_at{&ss}, {}, run);
    CHECK(r.status == itscale::run_status::cancelled);
    REQUIRE(r.size() == 6);
    CHECK(r.weights.size() == 6);
    for (const auto& h : r) {
      CHECK(h.stop == itscale::stop_reason::cancelled);
      CHECK(h.tokens.size() == 4);
    }
    CHECK(src.live == 0);
  }
  // Cancelled before the call: the first step runs (a step in flight completes), nothing more.
  std::stop_source ss;
  ss.request_stop();
  src_t src(itscale::hash_lm(30, 4));
  const auto r = itscale::beam_search(src, prompts, {.num_beams = 3, .num_return_sequences = 2},
                                      {.budget = {.stop = ss.get_token()}});
  CHECK(r.status == itscale::run_status::cancelled);
  CHECK(src.extends == 0);
  CHECK(r.size() == 4);
  for (const auto& h : r) CHECK(h.tokens.size() == 1);
  CHECK(src.live == 0);
}

TEST_CASE("beam family under a budget: every limit kind, and a bad budget is rejected before the source is touched") {
  const std::vector<tokens> prompts{{1, 2}, {3}};
  const itscale::beam_options o{.num_beams = 4, .num_return_sequences = 4, .stop = {.max_new_tokens = 40}};
  for (const itscale::compute_budget& b :
       {itscale::compute_budget{.max_generated_tokens = 20}, itscale::compute_budget{.max_total_tokens = 25},
        itscale::compute_budget{.max_source_calls = 5}}) {
    src_t src(itscale::hash_lm(30, 8));
    const auto r = itscale::beam_search(src, prompts, o, {.budget = b});
    CHECK(r.status == itscale::run_status::budget_exhausted);
    CHECK(r.prompts[0].steps < 40);
    CHECK(r.size() == 8);
    for (const auto& h : r) CHECK(is_budget_stop(h.stop));
    CHECK(src.live == 0);
  }
  // A limit the search never reaches changes nothing.
  itscale::hash_lm lm(30, 8);
  const auto free = itscale::beam_search(lm, prompts, o);
  const auto loose = itscale::beam_search(lm, prompts, o, {.budget = {.max_generated_tokens = 100000}});
  CHECK(loose.status == itscale::run_status::completed);
  itscale_test::check_same_search(free, loose);

  src_t src(itscale::hash_lm(30, 8));
  CHECK_THROWS_AS((void)itscale::beam_search(src, prompts, o, {.budget = {.max_seconds = -1}}),
                  itscale::invalid_option);
  CHECK_THROWS_AS((void)itscale::stochastic_beam_search(src, prompts, {}, {}, {.budget = {.max_seconds = NAN}}),
                  itscale::invalid_option);
  CHECK(src.calls == 0);
}

TEST_CASE("beam family from a prefilled start equals the prompt start, without its prefill; "
          "the caller's handle lives on") {
  const tokens prompt{4, 5, 6};
  const tokens other{7, 1};
  src_t src(itscale::hash_lm(60, 41));
  {
    const auto p = itscale::prefill(src, prompt);
    const auto q = itscale::prefill(src, other);
    REQUIRE(src.live == 2);
    const itscale::beam_options o{.num_beams = 4, .length_penalty = 0.7, .num_return_sequences = 4,
                                  .stop = {.max_new_tokens = 10, .min_new_tokens = 2, .eos_token_id = {0, 3}},
                                  .no_repeat_ngram_size = 2, .repetition_penalty = 1.2f, .record_trace = true};
    const auto from_prompt = itscale::beam_search(src, std::span<const token_id>(prompt), o);
    const std::size_t prefills = src.prefills;
    const auto from_live = itscale::beam_search(src, p, o);
    CHECK(src.prefills == prefills);  // no prefill: the stored row is the first step's
    CHECK(from_live.compute.prefill_calls == 0);
    itscale_test::check_same_search(from_prompt, from_live);
    CHECK(src.live == 2);  // the caller's handles, untouched

    // Several live requests, and again from the same prefill (its handle still valid).
    const std::vector<itscale::live_request<src_t>> starts{{&p}, {&q}};
    const auto together = itscale::beam_search(src, starts, o);
    const auto prompts = itscale::beam_search(src, std::vector<tokens>{prompt, other}, o);
    itscale_test::check_same_search(prompts, together);
    CHECK(src.live == 2);

    const itscale::diverse_beam_options d{.beam = o, .num_beam_groups = 2, .diversity_penalty = 0.5};
    const auto d_prompt = itscale::diverse_beam_search(src, std::span<const token_id>(prompt), d);
    const auto d_live = itscale::diverse_beam_search(src, p, d);
    itscale_test::check_same_search(d_prompt, d_live);
    CHECK(d_prompt.group == d_live.group);
    CHECK(src.live == 2);

    const itscale::stochastic_beam_options s{.num_samples = 5, .temperature = 0.8,
                                             .stop = {.max_new_tokens = 8, .eos_token_id = {0}}, .seed = 9};
    const auto s_prompt = itscale::stochastic_beam_search(src, std::vector<tokens>{prompt, other}, s);
    const auto s_live = itscale::stochastic_beam_search(src, starts, s);  // default streams: the tokens' hash
    REQUIRE(s_prompt.size() == s_live.size());
    for (std::size_t i = 0; i < s_prompt.size(); ++i) {
      CHECK(s_prompt[i].tokens == s_live[i].tokens);
      CHECK(s_prompt[i].score == s_live[i].score);
      CHECK(s_prompt.weights[i] == s_live.weights[i]);
    }
    const auto s_one = itscale::stochastic_beam_search(src, p, s, 77);
    const auto s_one_prompt = itscale::stochastic_beam_search(src, std::span<const token_id>(prompt), s, 77);
    REQUIRE(s_one.size() == s_one_prompt.size());
    for (std::size_t i = 0; i < s_one.size(); ++i) CHECK(s_one[i].tokens == s_one_prompt[i].tokens);
    CHECK(src.live == 2);

    // A budget cut from a live start leaks nothing and releases nothing of the caller's.
    const auto cut = itscale::beam_search(src, p, o, {.budget = {.max_generated_tokens = 1}});
    CHECK(cut.status == itscale::run_status::budget_exhausted);
    CHECK(src.live == 2);
  }
  CHECK(src.live == 0);  // the prefilled sequences released their handles themselves
}

TEST_CASE("beam family live starts: a start of another source, or without a handle, is rejected") {
  src_t a(itscale::hash_lm(20, 1)), b(itscale::hash_lm(20, 1));
  const tokens prompt{1, 2};
  const auto p = itscale::prefill(a, prompt);
  CHECK_THROWS_AS((void)itscale::beam_search(b, p, {}), itscale::invalid_input);
  CHECK_THROWS_AS((void)itscale::stochastic_beam_search(b, p, {}, 1), itscale::invalid_input);
  const itscale::prefilled<src_t> empty;
  CHECK_THROWS_AS((void)itscale::diverse_beam_search(a, empty, {}), itscale::invalid_input);
  CHECK(b.calls == 0);
  CHECK(a.live == 1);
}

TEST_CASE("beam family: a caller's stateful processor sees each beam's own tokens and state (context path)") {
  const std::vector<tokens> prompts{{4, 5, 6}, {7}};
  src_t src(itscale::hash_lm(40, 13));
  // Repetition penalty and n-grams also read tokens; the witness throws if any beam's context or
  // state belongs to another beam. Plenty of forks: K = 6 over a small vocabulary.
  const itscale::beam_options o{.num_beams = 6, .num_return_sequences = 6,
                                .stop = {.max_new_tokens = 12, .eos_token_id = {0}}, .no_repeat_ngram_size = 3,
                                .repetition_penalty = 1.3f};
  const auto r = itscale::beam_search(src, prompts, o, context_witness{});
  CHECK(r.size() == 12);
  const auto plain = itscale::beam_search(src, prompts, o);
  itscale_test::check_same_search(plain, r);  // the witness changes no value
  const auto d = itscale::diverse_beam_search(
      src, prompts, {.beam = o, .num_beam_groups = 3, .diversity_penalty = 1.0}, context_witness{});
  CHECK(d.size() == 12);
  const auto s = itscale::stochastic_beam_search(
      src, prompts, {.num_samples = 6, .stop = {.max_new_tokens = 12, .eos_token_id = {0}}, .seed = 2},
      context_witness{});
  CHECK(s.size() == 12);
  CHECK(src.live == 0);
}

TEST_CASE("stochastic beam search with a caller's processor samples from the processed distribution (exact)") {
  // A bias on token 2 and a ban on token 3, before the temperature: with K >= every sequence,
  // all come back, each with log p(y) under softmax((logits + processing) / T) and weight p(y).
  struct bias_and_ban {
    void apply(std::span<float> row, const itscale::step_context&) const {
      row[2] += 1.5f;
      row[3] = itscale::masked_logit;
    }
  };
  const itscale::hash_lm lm(5, 6);
  const tokens prompt{1};
  const double temperature = 0.7;
  const itscale::stochastic_beam_options o{.num_samples = 100, .temperature = temperature,
                                           .stop = {.max_new_tokens = 3, .eos_token_id = {0}}, .seed = 4};
  // Every complete sequence's exact log-prob under the processed model.
  std::map<tokens, double> all;
  std::vector<std::pair<tokens, double>> open{{{}, 0.0}};
  while (!open.empty()) {
    auto [gen, logp] = open.back();
    open.pop_back();
    tokens prefix = prompt;
    prefix.insert(prefix.end(), gen.begin(), gen.end());
    std::vector<float> row(lm.vocab_size());
    lm.fill(lm.state_of(prefix), row);
    std::vector<double> x(row.size());
    for (std::size_t t = 0; t < x.size(); ++t) x[t] = double{row[t] + (t == 2 ? 1.5f : 0.0f)} / temperature;
    double m = -INFINITY, sum = 0;
    for (std::size_t t = 0; t < x.size(); ++t)
      if (t != 3) m = std::max(m, x[t]);
    for (std::size_t t = 0; t < x.size(); ++t)
      if (t != 3) sum += std::exp(x[t] - m);
    for (std::size_t t = 0; t < x.size(); ++t) {
      if (t == 3) continue;
      tokens g = gen;
      g.push_back(static_cast<token_id>(t));
      const double lp = logp + x[t] - m - std::log(sum);
      if (t == 0 || g.size() == 3)
        all[g] = lp;
      else
        open.emplace_back(g, lp);
    }
  }
  src_t src(itscale::hash_lm(5, 6));
  const auto r = itscale::stochastic_beam_search(src, std::span<const token_id>(prompt), o, bias_and_ban{}, 1);
  REQUIRE(r.size() == all.size());
  CHECK(r.prompts[0].threshold == -INFINITY);
  double total = 0;
  for (std::size_t i = 0; i < r.size(); ++i) {
    REQUIRE(all.count(r[i].tokens) == 1);
    CHECK(std::find(r[i].tokens.begin(), r[i].tokens.end(), 3) == r[i].tokens.end());
    CHECK(r[i].logprob_sum == doctest::Approx(all.at(r[i].tokens)).epsilon(1e-5));
    CHECK(r.weights[i] == doctest::Approx(std::exp(all.at(r[i].tokens))).epsilon(1e-5));
    total += r.weights[i];
  }
  CHECK(total == doctest::Approx(1.0).epsilon(1e-5));
  // A throwing processor leaks nothing.
  struct thrower {
    void apply(std::span<float>, const itscale::step_context& ctx) const {
      if (ctx.generated() == 2) throw std::runtime_error("processor failed");
    }
  };
  CHECK_THROWS_WITH((void)itscale::stochastic_beam_search(src, std::span<const token_id>(prompt), o, thrower{}, 1),
                    "processor failed");
  CHECK(src.live == 0);
}
