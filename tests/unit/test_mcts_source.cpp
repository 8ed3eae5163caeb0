// MCTS over a LogitSource through sampling_proposer: the trap problem on a synthetic source (greedy
// decoding fails, MCTS finds the reward-1 answer within the stated budget), the handle budget with
// real re-prefills (identical results), a source failing at every call (no handle left), and
// determinism across B with a real proposer.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <itscale/backends/function_source.hpp>
#include <itscale/backends/hash_lm.hpp>
#include <itscale/decode/generate.hpp>
#include <itscale/steps/sampling_proposer.hpp>
#include <itscale/tree/mcts.hpp>
#include <map>
#include <string>
#include <vector>

#include "instrumented_source.hpp"

namespace {

using itscale::token_id;
using tokens = std::vector<token_id>;
using span_t = std::span<const token_id>;

// The trap as a language model. Tokens: 1 BOS, 2 EOS, 3 ';', 4.. letters (letter x is token x + 3).
// A step is a letter then ';' (depth 1 and 2) or a letter then EOS (depth 3, terminal). Letter
// probabilities after each prefix (letters of the problem in test_mcts.cpp's trap):
//   root: 1 (0.9), 2 (0.1);  1: 3 (0.8), 4 (0.2);  1 3 / 1 4: 5 (0.6), 6 (0.4);
//   2: 7 (0.7), 8 (0.3);  2 7: 9 (0.6), 12 (0.4);  2 8: 11 (0.5), 10 (0.5).
// Only 2 8 10 earns 1; the process verifier prefers partial answers starting with 1 (0.6 vs 0.3).
constexpr token_id bos = 1, eos = 2, semi = 3;
constexpr token_id letter(int x) { return x + 3; }

tokens letters_of(span_t seq) {
  tokens out;
  for (token_id t : seq)
    if (t > semi) out.push_back(t - 3);
  return out;
}

auto trap_source() {
  return itscale::from_function(16, [](span_t prefix, std::span<float> row) {
    std::fill(row.begin(), row.end(), itscale::masked_logit);
    const tokens path = letters_of(prefix);
    if (prefix.back() > semi) {  // after a letter: ';' or, at depth 3, EOS
      row[static_cast<std::size_t>(path.size() == 3 ? eos : semi)] = 0;
      return;
    }
    const auto set = [&](int x, double p, int y, double q) {
      row[static_cast<std::size_t>(letter(x))] = static_cast<float>(std::log(p));
      row[static_cast<std::size_t>(letter(y))] = static_cast<float>(std::log(q));
    };
    if (path.empty())
      set(1, 0.9, 2, 0.1);
    else if (path == tokens{1})
      set(3, 0.8, 4, 0.2);
    else if (path == tokens{1, 3} || path == tokens{1, 4})
      set(5, 0.6, 6, 0.4);
    else if (path == tokens{2})
      set(7, 0.7, 8, 0.3);
    else if (path == tokens{2, 7})
      set(9, 0.6, 12, 0.4);
    else
      set(11, 0.5, 10, 0.5);
  });
}

double trap_reward(span_t, span_t seq, bool complete) {
  const tokens p = letters_of(seq);
  if (complete) return p == tokens{2, 8, 10} ? 1.0 : 0.0;
  return !p.empty() && p[0] == 1 ? 0.6 : 0.3;
}

itscale::sampling_proposer_options trap_steps(std::uint64_t seed) {
  return {.sampling = {.do_sample = true, .seed = seed},
          .delimiters = {{semi}},
          .eos_token_id = {eos},
          .max_step_tokens = 4};
}

// A hash LM with steps: vocabulary 8, ';' = 3 ends a step of at most 4 tokens; a sequence ends at
// 14 tokens (no EOS, so the tree is deep).
itscale::sampling_proposer_options hash_steps(std::uint64_t seed) {
  return {.sampling = {.do_sample = true, .seed = seed, .temperature = 1.5f},
          .delimiters = {{3}},
          .max_step_tokens = 4,
          .max_sequence_tokens = 14};
}
auto hash_verifier() {
  return itscale::make_verifier("hash", {0, 1}, [](span_t, span_t seq, bool complete) {
    std::uint64_t h = complete ? 7 : 3;
    for (token_id t : seq) h = itscale::hash_lm::mix(h ^ static_cast<std::uint64_t>(t));
    return static_cast<double>(h % 1000) / 999.0;
  });
}

}  // namespace

TEST_CASE("trap on a synthetic source: greedy decoding ends at reward 0, MCTS chooses the reward-1 answer") {
  auto src = trap_source();
  const tokens prompt{bos};
  {
    const auto g = itscale::generate(src, span_t(prompt), {.stop = {.max_new_tokens = 12, .eos_token_id = {eos}}});
    CHECK(letters_of(g[0].tokens) == tokens{1, 3, 5});
    CHECK(trap_reward(prompt, g[0].tokens, true) == 0.0);
  }
  auto v = itscale::make_verifier("trap", {0, 1}, trap_reward);
  // Budget: 160 simulations at B = 1 and B = 4 (toy version: chosen at 94 for both); 32 samples
  // per expansion so that every step, even the 0.1 one, is proposed (the trap is about priors).
  for (std::size_t B : {1u, 4u}) {
    CAPTURE(B);
    itscale::sampling_proposer prop(src, trap_steps(11));
    itscale::mcts m(prop, v, prompt, {.simulations = 160, .leaves_per_round = B, .samples_per_expansion = 32});
    const auto r = m.search();
    REQUIRE(!r.sequences.empty());
    CHECK(letters_of(r.sequences[0].tokens) == tokens{2, 8, 10});
    CHECK(r.sequences[0].tokens.back() == eos);
    CHECK(r.sequences[0].stop == itscale::stop_reason::eos);
    CHECK(r.sequences[0].score == doctest::Approx(1.0));
    MESSAGE("B " << B << ": " << r.compute.generated_tokens() << " generated tokens, " << r.compute.extend_calls
                 << " extend calls, " << r.compute.verifier_calls << " verifier calls, " << r.nodes << " nodes");
    CHECK(r.compute.verifier_calls <= r.rounds);  // at most one verifier call per round (known terminals need none)
    CHECK(r.compute.extend_calls <= r.compute.generated_tokens());
  }
  CHECK(src.live_handles() == 0);
}

TEST_CASE("handle budget over a source: re-prefills instead of live handles, the same tree") {
  for (std::size_t B : {1u, 4u}) {
    CAPTURE(B);
    const auto run = [&](std::size_t limit) {
      test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(8, 21));
      auto v = hash_verifier();
      std::string fp;
      itscale::mcts_result r;
      {
        itscale::sampling_proposer prop(src, hash_steps(3));
        itscale::mcts m(prop, v, tokens{1, 5},
                        {.simulations = 60,
                         .leaves_per_round = B,
                         .samples_per_expansion = 3,
                         .widening = {.c = 1.5, .alpha = 0.5},
                         .max_live_handles = limit});
        r = m.search();
        fp = m.to_json();
        for (const auto& g : r.sequences) fp += "|" + std::to_string(g.score);
      }
      CHECK(src.live == 0);
      return std::tuple{fp, r, src.peak_live};
    };
    const auto [f0, r0, peak0] = run(0);
    const auto [f1, r1, peak1] = run(B + 2);
    CHECK(f0 == f1);
    CHECK(r0.compute.reprefills == 0);
    CHECK(r1.compute.reprefills > 0);
    CHECK(r1.compute.reprefills == r1.restores);
    CHECK(r1.compute.prefill_calls == 1 + r1.restores);
    CHECK(peak1 < peak0);
    MESSAGE("B " << B << ": peak live handles " << peak0 << " -> " << peak1 << ", re-prefills " << r1.compute.reprefills
                 << ", prefill tokens " << r0.compute.prefill_tokens << " -> " << r1.compute.prefill_tokens);
  }
}

TEST_CASE("a source throwing at call k leaves no live handle, for every k") {
  for (auto eval : {itscale::mcts_evaluation::verifier, itscale::mcts_evaluation::mixed}) {
    const itscale::mcts_options o{.simulations = 24,
                                  .leaves_per_round = 3,
                                  .samples_per_expansion = 2,
                                  .widening = {.c = 1, .alpha = 0.5},
                                  .evaluation = eval,
                                  .max_rollout_steps = 3,
                                  .max_live_handles = 4};
    std::size_t calls = 0;
    {
      test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(8, 4));
      auto v = hash_verifier();
      itscale::sampling_proposer prop(src, hash_steps(9));
      (void)itscale::mcts_search(prop, v, tokens{1, 6}, o);
      calls = src.calls;
      CHECK(src.live == 0);
    }
    REQUIRE(calls > 10);
    for (std::size_t k = 0; k <= calls; ++k) {
      CAPTURE(k);
      test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(8, 4));
      src.throw_on_call = k;
      auto v = hash_verifier();
      bool threw = false;
      {
        itscale::sampling_proposer prop(src, hash_steps(9));
        try {
          (void)itscale::mcts_search(prop, v, tokens{1, 6}, o);
        } catch (const std::runtime_error& e) {
          threw = std::string(e.what()) == "instrumented_source: injected backend failure";
        }
      }
      CHECK(threw == (k < calls));
      CHECK(src.live == 0);
    }
  }
}

TEST_CASE("determinism with a sampling proposer: B = 1, 4, 8 agree on every node both trees hold") {
  // Per node: the step (tokens, log-prob, count, terminal) and, where both trees computed them,
  // its value and its children (one list a prefix of the other: empty if a tree never expanded it).
  struct content {
    std::string step;
    double value;
    std::vector<std::uint32_t> children;
  };
  const auto nodes_by_key = [](std::size_t B, std::size_t sims) {
    itscale::hash_lm lm(8, 5);
    auto v = hash_verifier();
    itscale::sampling_proposer prop(lm, hash_steps(17));
    itscale::mcts m(prop, v, tokens{1, 4}, {.simulations = sims, .leaves_per_round = B, .samples_per_expansion = 3});
    m.search();
    std::map<std::uint32_t, content> out;
    const auto ns = m.nodes();
    for (const auto& n : ns) {
      content c;
      for (token_id t : n.step) c.step += std::to_string(t) + " ";
      c.step += "|" + std::to_string(n.logprob) + "|" + std::to_string(n.count) + "|" + std::to_string(n.terminal);
      c.value = n.value;
      for (auto k : n.children) c.children.push_back(ns[k].key);
      out[n.key] = c;
    }
    return out;
  };
  const auto same = [](const content& x, const content& y) {
    CHECK(x.step == y.step);
    if (!std::isnan(x.value) && !std::isnan(y.value)) CHECK(x.value == y.value);
    const std::size_t k = std::min(x.children.size(), y.children.size());
    CHECK(std::equal(x.children.begin(), x.children.begin() + static_cast<std::ptrdiff_t>(k), y.children.begin()));
    return !std::isnan(x.value) && !std::isnan(y.value) && !x.children.empty() && !y.children.empty();
  };
  for (std::size_t sims : {16u, 48u}) {
    const auto a = nodes_by_key(1, sims), b = nodes_by_key(4, sims), c = nodes_by_key(8, sims);
    std::size_t common = 0, both_expanded = 0;
    for (const auto& [k, x] : a) {
      if (b.count(k) != 0) {
        ++common;
        both_expanded += same(x, b.at(k)) ? 1u : 0u;
      }
      if (c.count(k) != 0) same(x, c.at(k));
    }
    MESSAGE(sims << " simulations: " << a.size() << " / " << b.size() << " / " << c.size() << " nodes (B = 1 / 4 / 8), "
                 << common << " shared by B = 1 and 4, " << both_expanded << " of them evaluated and expanded in both");
    CHECK(common >= 8);
    CHECK(both_expanded >= 3);
  }
}
