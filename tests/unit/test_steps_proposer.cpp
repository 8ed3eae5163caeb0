// The step proposers over a LogitSource: delimiters, EOS and length limits, merging of identical
// steps, live child states, batch-invariant streams, drop/restore, metering, bad input, and no
// handle left behind when the source throws.

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include <itscale/backends/function_source.hpp>
#include <itscale/backends/hash_lm.hpp>
#include <itscale/steps/handle_budget.hpp>
#include <itscale/steps/sampling_proposer.hpp>
#include <itscale/steps/top_k_proposer.hpp>

#include "instrumented_source.hpp"

namespace {
using itscale::token_id;
using tokens = std::vector<token_id>;

// Letters source: 0 pad, 1 BOS, 2 EOS, 3 'a', 4 'b', 5 ';'. After a letter, ';' is certain; else
// a 0.5, b 0.3, EOS 0.2. Steps are "a;", "b;" or EOS.
constexpr token_id eos = 2, a = 3, b = 4, semi = 5;
auto letters() {
  return itscale::from_function(6, [](std::span<const token_id> prefix, std::span<float> row) {
    for (auto& x : row) x = itscale::masked_logit;
    if (prefix.back() == a || prefix.back() == b) {
      row[semi] = 0;
      return;
    }
    row[a] = std::log(0.5f);
    row[b] = std::log(0.3f);
    row[eos] = std::log(0.2f);
  });
}

itscale::sampling_proposer_options step_opts(std::uint64_t seed = 5) {
  return {.sampling = {.do_sample = true, .seed = seed}, .delimiters = {{semi}}, .eos_token_id = {eos}};
}

template <class P>
using items_of = std::vector<itscale::propose_item<typename P::state>>;

template <class C>
std::size_t total_count(const std::vector<C>& cands) {
  std::size_t n = 0;
  for (const auto& c : cands) n += c.count;
  return n;
}
}  // namespace

TEST_CASE("sampling_proposer: steps end at a delimiter or EOS, identical steps merge with their counts") {
  auto src = letters();
  {
    itscale::sampling_proposer prop(src, step_opts());
    auto root = prop.root(tokens{1});
    const items_of<decltype(prop)> items{{&root, 0, 0}};
    const auto out = prop.propose(items, 32);
    REQUIRE(out.size() == 1);
    const auto& cands = out[0];
    CHECK(cands.size() == 3);  // "a;", "b;", EOS: 32 samples merged
    CHECK(total_count(cands) == 32);
    std::size_t live = 0;
    for (const auto& c : cands) {
      CHECK(c.count >= 1);
      tokens whole{1};
      whole.insert(whole.end(), c.tokens.begin(), c.tokens.end());
      CHECK(tokens(prop.tokens_of(c.state).begin(), prop.tokens_of(c.state).end()) == whole);
      if (c.tokens.back() == eos) {
        CHECK(c.terminal);
        CHECK(c.stop == itscale::stop_reason::eos);
        CHECK(!prop.is_live(c.state));
        CHECK(c.tokens.size() == 1);
        CHECK(c.logprob == doctest::Approx(std::log(0.2)).epsilon(1e-5));
      } else {
        CHECK(!c.terminal);
        CHECK(c.stop == itscale::stop_reason::stop_sequence);
        CHECK(c.tokens.size() == 2);
        CHECK(c.tokens.back() == semi);
        CHECK(prop.is_live(c.state));
        CHECK(c.state.logits.size() == 6);
        CHECK(c.state.logits[a] == doctest::Approx(std::log(0.5f)));  // the row after "x;"
        CHECK(c.logprob == doctest::Approx(std::log(c.tokens[0] == a ? 0.5 : 0.3)).epsilon(1e-5));
        ++live;
      }
      CHECK(c.model_logprob == doctest::Approx(c.logprob));  // temperature 1, no warper
    }
    CHECK(src.live_handles() == 1 + live);  // root + one handle per distinct live step
    // More samples later continue the node's streams: drawn = 32 gives new draws, same merging.
    const items_of<decltype(prop)> later{{&root, 0, 32}};
    CHECK(total_count(prop.propose(later, 8)[0]) == 8);
  }
  CHECK(src.live_handles() == 0);
}

TEST_CASE("sampling_proposer: max_step_tokens cuts a step (not terminal); max_sequence_tokens and a predicate end it") {
  itscale::hash_lm lm(30, 11);  // never emits the delimiter 29 often: steps run to the limit
  const tokens prompt{1, 2, 3};
  {
    auto o = step_opts();
    o.delimiters = {{29, 28}};  // a two-token delimiter: rare
    o.max_step_tokens = 4;
    o.max_sequence_tokens = 9;
    itscale::sampling_proposer prop(lm, o);
    auto root = prop.root(prompt);
    const items_of<decltype(prop)> items{{&root, 0, 0}};
    auto step1 = prop.propose(items, 4);
    bool saw_cut = false;
    for (auto& c : step1[0]) {
      if (c.stop != itscale::stop_reason::max_new_tokens) continue;
      saw_cut = true;
      CHECK(c.tokens.size() == 4);
      CHECK(!c.terminal);  // 3 + 4 = 7 < 9
      CHECK(prop.is_live(c.state));
      // The next step may hold only 2 tokens: reaching 9 is terminal, by length.
      const items_of<decltype(prop)> deeper{{&c.state, 1, 0}};
      const auto next = prop.propose(deeper, 3);
      for (const auto& d : next[0]) {
        CHECK(d.tokens.size() <= 2);
        if (d.tokens.size() == 2) {
          CHECK(d.terminal);
          CHECK(!prop.is_live(d.state));
          CHECK(prop.tokens_of(d.state).size() == 9);
        }
      }
      // A node at the limit cannot be expanded.
      c.state.tokens.resize(9, 0);
      CHECK_THROWS_AS((void)prop.propose(deeper, 1), itscale::invalid_input);
      break;
    }
    CHECK(saw_cut);
  }
  CHECK(lm.live_handles() == 0);
  {
    auto o = step_opts();
    o.delimiters = {{5}};
    o.max_step_tokens = 3;
    o.ends_sequence = [](std::span<const token_id> t) { return t.size() >= 5; };  // "an answer marker"
    itscale::sampling_proposer prop(lm, o);
    auto root = prop.root(prompt);
    const items_of<decltype(prop)> items{{&root, 0, 0}};
    const auto out = prop.propose(items, 6);
    for (const auto& c : out[0]) {
      CHECK(c.terminal == (prop.tokens_of(c.state).size() >= 5));
      CHECK(prop.is_live(c.state) == !c.terminal);
    }
  }
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("sampling_proposer: a node's candidates do not depend on the batch (streams keyed by id and drawn)") {
  itscale::hash_lm lm(12, 21);
  auto o = step_opts(99);
  o.delimiters = {{7}, {8, 9}};
  o.max_step_tokens = 5;
  o.sampling.temperature = 1.5f;
  itscale::sampling_proposer prop(lm, o);
  std::vector<decltype(prop)::state> nodes;
  nodes.push_back(prop.root(tokens{1}));
  nodes.push_back(prop.root(tokens{2, 3}));
  nodes.push_back(prop.root(tokens{4, 4, 4}));
  const std::uint32_t ids[] = {7, 3, 12};
  const std::uint32_t drawn[] = {0, 5, 2};
  const std::size_t samples[] = {6, 2, 4};
  items_of<decltype(prop)> together;
  for (std::size_t i = 0; i < 3; ++i) together.push_back({&nodes[i], ids[i], drawn[i], samples[i]});
  const auto all = prop.propose(together, 1);
  const auto calls_together = prop.stats().extend_calls;
  for (std::size_t i = 0; i < 3; ++i) {
    const items_of<decltype(prop)> alone{{&nodes[i], ids[i], drawn[i]}};
    const auto one = prop.propose(alone, samples[i]);
    REQUIRE(one[0].size() == all[i].size());
    CHECK(total_count(all[i]) == samples[i]);
    for (std::size_t j = 0; j < one[0].size(); ++j) {
      CHECK(one[0][j].tokens == all[i][j].tokens);
      CHECK(one[0][j].count == all[i][j].count);
      CHECK(one[0][j].logprob == all[i][j].logprob);
      CHECK(one[0][j].model_logprob == all[i][j].model_logprob);
      CHECK(one[0][j].terminal == all[i][j].terminal);
      CHECK(one[0][j].state.logits == all[i][j].state.logits);
    }
  }
  CHECK(calls_together > 0);
}

TEST_CASE("sampling_proposer: drop gives the handle back, restore re-prefills (counted) to the same state") {
  test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(16, 4));
  {
    auto o = step_opts();
    o.delimiters = {{3}};
    itscale::sampling_proposer prop(src, o);
    auto root = prop.root(tokens{1, 2});
    const items_of<decltype(prop)> items{{&root, 0, 0}};
    auto out = prop.propose(items, 3);
    auto& c = out[0].front();
    REQUIRE(prop.is_live(c.state));
    const auto row = c.state.logits;
    const auto live = src.live;
    prop.drop(c.state);
    CHECK(!prop.is_live(c.state));
    CHECK(c.state.logits.empty());
    CHECK(src.live == live - 1);
    const auto tokens_before = prop.stats().prefill_tokens;
    prop.restore(c.state);
    CHECK(prop.is_live(c.state));
    CHECK(c.state.logits == row);
    CHECK(prop.stats().reprefills == 1);
    CHECK(prop.stats().prefill_tokens == tokens_before + c.state.tokens.size());
    // Every source call went through the proposer's meter.
    CHECK(prop.stats().prefill_calls == src.prefills);
    CHECK(prop.stats().extend_calls == src.extends);
    CHECK(prop.stats().extend_rows == src.extend_rows);
    CHECK(prop.stats().peak_live_handles == static_cast<std::uint64_t>(src.peak_live));
    // A dropped node is restored by propose itself.
    prop.drop(c.state);
    const items_of<decltype(prop)> again{{&c.state, 1, 0}};
    CHECK(!prop.propose(again, 2)[0].empty());
    CHECK(prop.stats().reprefills == 2);
  }
  CHECK(src.live == 0);
}

TEST_CASE("handle_budget: least recently used cold states give their handles back; use restores them") {
  itscale::hash_lm lm(16, 4);
  auto o = step_opts();
  o.delimiters = {{3}};
  itscale::sampling_proposer prop(lm, o);
  std::vector<decltype(prop)::state> s;
  for (token_id t = 1; t <= 4; ++t) s.push_back(prop.root(tokens{t}));
  itscale::handle_budget lru(prop, 3);
  for (auto& x : s) lru.keep(x);
  lru.keep(s[0]);  // touched again: now the most recently used
  CHECK(lru.cold_live() == 4);
  lru.trim(1);  // room for one handle in flight: two cold ones go, s[1] and s[2]
  CHECK(lru.cold_live() == 2);
  CHECK(lru.drops() == 2);
  CHECK(prop.is_live(s[0]));
  CHECK(!prop.is_live(s[1]));
  CHECK(!prop.is_live(s[2]));
  CHECK(prop.is_live(s[3]));
  CHECK(lm.live_handles() == 2);
  lru.use(s[1]);
  CHECK(prop.is_live(s[1]));
  CHECK(prop.stats().reprefills == 1);
  CHECK(lru.cold_live() == 2);  // s[1] is hot now
  lru.forget(s[0]);
  CHECK(lru.cold_live() == 1);
  itscale::handle_budget unbounded(prop, 0);
  for (auto& x : s) unbounded.keep(x);
  unbounded.trim(100);
  CHECK(unbounded.drops() == 0);
}

TEST_CASE("top_k_proposer: the k best tokens as one-token steps with softmax priors and live children") {
  itscale::hash_lm lm(20, 8);
  {
    itscale::top_k_proposer prop(lm, {.temperature = 2.0f, .eos_token_id = {0}});
    auto root = prop.root(tokens{5, 6});
    const items_of<decltype(prop)> items{{&root, 0, 0}};
    const auto out = prop.propose(items, 20);  // every token: EOS (0) among them
    REQUIRE(out[0].size() == 20);
    const auto& row = root.logits;
    double lse = 0, lse_t = 0;
    for (float x : row) {
      lse += std::exp(static_cast<double>(x));
      lse_t += std::exp(static_cast<double>(x) / 2);
    }
    lse = std::log(lse);
    lse_t = std::log(lse_t);
    for (std::size_t j = 0; j < out[0].size(); ++j) {
      const auto& c = out[0][j];
      const auto t = static_cast<std::size_t>(c.tokens[0]);
      if (j > 0) CHECK(row[t] <= row[static_cast<std::size_t>(out[0][j - 1].tokens[0])]);
      CHECK(c.model_logprob == doctest::Approx(row[t] - lse).epsilon(1e-5));
      CHECK(c.logprob == doctest::Approx(row[t] / 2 - lse_t).epsilon(1e-5));
      CHECK(c.terminal == (t == 0));
      CHECK(prop.is_live(c.state) == (t != 0));
      if (t != 0) {
        std::vector<float> want(20);
        lm.fill(lm.state_of(tokens{5, 6, static_cast<token_id>(t)}), want);
        CHECK(c.state.logits == want);
      }
    }
    CHECK(lm.live_handles() == 1 + 19);
    CHECK(prop.stats().extend_calls == 1);  // one batched extend for every child
    const auto three = prop.propose(items, 3);
    CHECK(three[0].size() == 3);
    CHECK(three[0][0].tokens == out[0][0].tokens);
  }
  CHECK(lm.live_handles() == 0);
  // Masked tokens are never proposed.
  auto masked = itscale::from_function(5, [](std::span<const token_id>, std::span<float> row) {
    for (auto& x : row) x = itscale::masked_logit;
    row[2] = 0;
    row[4] = -1;
  });
  itscale::top_k_proposer prop(masked, {});
  auto root = prop.root(tokens{1});
  const items_of<decltype(prop)> items{{&root, 0, 0}};
  const auto out = prop.propose(items, 5);
  REQUIRE(out[0].size() == 2);
  CHECK(out[0][0].tokens == tokens{2});
  CHECK(out[0][1].tokens == tokens{4});
}

TEST_CASE("proposers: bad options and bad batches are rejected with the broken rule") {
  itscale::hash_lm lm(10, 1);
  auto o = step_opts();
  o.delimiters = {};
  CHECK_THROWS_WITH_AS(itscale::sampling_proposer(lm, o), doctest::Contains("delimiters is empty"), itscale::invalid_option);
  o = step_opts();
  o.delimiters = {{}};
  CHECK_THROWS_AS(itscale::sampling_proposer(lm, o), itscale::invalid_option);
  o = step_opts();
  o.delimiters = {{10}};  // outside the vocabulary
  CHECK_THROWS_AS(itscale::sampling_proposer(lm, o), itscale::invalid_option);
  o = step_opts();
  o.sampling.stop.max_new_tokens = 5;
  CHECK_THROWS_WITH_AS(itscale::sampling_proposer(lm, o), doctest::Contains("sampling.stop must be left"), itscale::invalid_option);
  o = step_opts();
  o.max_step_tokens = 0;
  CHECK_THROWS_AS(itscale::sampling_proposer(lm, o), itscale::invalid_option);
  o = step_opts();
  o.sampling.temperature = 0;
  CHECK_THROWS_AS(itscale::sampling_proposer(lm, o), itscale::invalid_option);
  CHECK_THROWS_AS(itscale::top_k_proposer(lm, {.temperature = -1}), itscale::invalid_option);
  CHECK_THROWS_AS(itscale::top_k_proposer(lm, {.eos_token_id = {10}}), itscale::invalid_option);

  itscale::sampling_proposer prop(lm, step_opts());
  auto r1 = prop.root(tokens{1});
  auto r2 = prop.root(tokens{2});
  const items_of<decltype(prop)> same_id{{&r1, 4, 0}, {&r2, 4, 0}};
  CHECK_THROWS_WITH_AS((void)prop.propose(same_id, 2), doctest::Contains("share id 4"), itscale::invalid_input);
  const items_of<decltype(prop)> none{{nullptr, 0, 0}};
  CHECK_THROWS_AS((void)prop.propose(none, 2), itscale::invalid_input);
  const items_of<decltype(prop)> zero{{&r1, 0, 0}};
  CHECK_THROWS_AS((void)prop.propose(zero, 0), itscale::invalid_input);
  CHECK(lm.live_handles() == 2);
}

TEST_CASE("proposers: a source that throws at any call of a propose leaves no live handle") {
  for (std::size_t fail_at = 1; fail_at < 12; ++fail_at) {
    test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(16, 3));
    {
      auto o = step_opts();
      o.delimiters = {{3}};
      o.max_step_tokens = 6;
      itscale::sampling_proposer prop(src, o);
      auto root = prop.root(tokens{1, 2});
      src.throw_on_call = fail_at;
      const items_of<decltype(prop)> items{{&root, 0, 0}};
      try {
        auto out = prop.propose(items, 4);
        auto more = prop.propose(items, 4);
      } catch (const std::runtime_error&) {
      }
      CHECK(src.live == 1);  // only the root
    }
    CHECK(src.live == 0);
  }
  test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(16, 3));
  {
    itscale::top_k_proposer prop(src, {});
    auto root = prop.root(tokens{1, 2});
    src.throw_on_call = 1;
    const items_of<decltype(prop)> items{{&root, 0, 0}};
    CHECK_THROWS_AS((void)prop.propose(items, 4), std::runtime_error);
    CHECK(src.live == 1);
  }
  CHECK(src.live == 0);
}
