// Diverse (group) beam search: one group is exactly beam_search; the Hamming penalty makes groups
// differ and acts as HF's HammingDiversityLogitsProcessor (checked against an independent
// per-group reference built on beam_search's own pieces' definitions); handle hygiene under
// injected failures; option rules.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <itscale/search.hpp>

#include "instrumented_source.hpp"
#include "same_search.hpp"

using itscale::token_id;
using tokens = std::vector<token_id>;

namespace {

std::string diverse_what_of(auto&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("diverse beam search with one group is exactly beam_search") {
  const std::vector<tokens> prompts{{4, 5, 6}, {7}, {10, 11, 12, 13, 14}};
  for (const auto mode : {itscale::early_stopping_mode::heuristic, itscale::early_stopping_mode::when_full,
                          itscale::early_stopping_mode::never}) {
    for (const double patience : {1.0, 2.0}) {
      for (const std::size_t k : {1u, 3u, 8u}) {
        CAPTURE(k);
        CAPTURE(patience);
        const itscale::beam_options bo{.num_beams = k, .length_penalty = 0.7, .early_stopping = mode,
                                       .num_return_sequences = k,
                                       .stop = {.max_new_tokens = 12, .eos_token_id = {0, 3}},
                                       .no_repeat_ngram_size = 3,
                                       .repetition_penalty = 1.3f, .patience = patience, .record_trace = true};
        itscale::hash_lm lm(50, 17);
        const auto plain = itscale::beam_search(lm, prompts, bo);
        // A penalty with one group has no earlier group to act on.
        const auto div = itscale::diverse_beam_search(lm, prompts, {.beam = bo, .num_beam_groups = 1, .diversity_penalty = 3.0});
        REQUIRE(plain.prompts.size() == div.prompts.size());
        for (std::size_t p = 0; p < plain.prompts.size(); ++p) {
          REQUIRE(plain.hypotheses(p).size() == div.hypotheses(p).size());
          CHECK(plain.prompts[p].steps == div.prompts[p].steps);
          for (std::size_t j = 0; j < plain.hypotheses(p).size(); ++j) {
            CHECK(plain.hypotheses(p)[j].tokens == div.hypotheses(p)[j].tokens);
            CHECK(plain.hypotheses(p)[j].score == div.hypotheses(p)[j].score);  // bit-identical
            CHECK(plain.hypotheses(p)[j].logprobs == div.hypotheses(p)[j].logprobs);
            CHECK(div.groups(p)[j] == 0);
          }
          REQUIRE(plain.prompts[p].trace.size() == div.prompts[p].trace.size());
          for (std::size_t s = 0; s < plain.prompts[p].trace.size(); ++s) {
            REQUIRE(plain.prompts[p].trace[s].candidates.size() == div.prompts[p].trace[s].candidates.size());
            for (std::size_t c = 0; c < plain.prompts[p].trace[s].candidates.size(); ++c) {
              CHECK(plain.prompts[p].trace[s].candidates[c].token == div.prompts[p].trace[s].candidates[c].token);
              CHECK(plain.prompts[p].trace[s].candidates[c].score == div.prompts[p].trace[s].candidates[c].score);
            }
          }
        }
        CHECK(lm.live_handles() == 0);
      }
    }
  }
}

TEST_CASE("diverse beam search: penalised selection on shifted logits equals it on written log-probs") {
  // A no-op processor that is not the archetype makes the search write the log-prob rows.
  struct opaque_identity {
    void apply(std::span<float>, const itscale::step_context&) const noexcept {}
  };
  const std::vector<tokens> prompts{{4, 5, 6}, {7}};
  for (const std::size_t vocab : {std::size_t{41}, std::size_t{3001}}) {
    CAPTURE(vocab);
    const itscale::diverse_beam_options o{
        .beam = {.num_beams = 6, .num_return_sequences = 6, .stop = {.max_new_tokens = 8, .eos_token_id = {0}},
                 .no_repeat_ngram_size = 2, .record_trace = true},
        .num_beam_groups = 3,
        .diversity_penalty = 0.75};
    itscale::hash_lm lm(vocab, 29);
    const std::vector<std::span<const token_id>> spans(prompts.begin(), prompts.end());
    const auto fused = itscale::diverse_beam_search(lm, spans, o);
    const auto written = itscale::diverse_beam_search(lm, spans, o, opaque_identity{});
    itscale_test::check_same_search(fused, written);
    CHECK(fused.group == written.group);
    CHECK(lm.live_handles() == 0);
  }
}

TEST_CASE("diverse beam search: with a positive penalty the groups' best hypotheses start differently; without it they coincide") {
  std::size_t differ_with_penalty = 0, runs = 0;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    CAPTURE(seed);
    const tokens prompt{1, 2};
    // No EOS: every hypothesis' first token is one its group continued with at the first step.
    itscale::diverse_beam_options o{.beam = {.num_beams = 6, .num_return_sequences = 6, .stop = {.max_new_tokens = 6}},
                                    .num_beam_groups = 3, .diversity_penalty = 0.0};
    itscale::hash_lm lm(40, seed);
    // Penalty 0: every group runs the same search; each group's best hypothesis is the same.
    auto r0 = itscale::diverse_beam_search(lm, std::span<const token_id>(prompt), o);
    std::map<std::size_t, tokens> best0;
    for (std::size_t j = 0; j < r0.size(); ++j) best0.try_emplace(r0.group[j], r0[j].tokens);
    for (const auto& [g, t] : best0) CHECK(t == best0.begin()->second);

    // A penalty larger than any log-prob gap (logits lie in [-8, 8)): group g must open with a
    // first token no earlier group continued with, so the groups' first tokens differ.
    o.diversity_penalty = 100.0;
    const auto r = itscale::diverse_beam_search(lm, std::span<const token_id>(prompt), o);
    std::map<std::size_t, token_id> first_of_best;
    for (std::size_t j = 0; j < r.hypotheses(0).size(); ++j)
      first_of_best.try_emplace(r.group[j], r.hypotheses(0)[j].tokens.front());
    REQUIRE(first_of_best.size() == 3);
    std::set<token_id> firsts;
    for (const auto& [g, t] : first_of_best) firsts.insert(t);
    CHECK(firsts.size() == 3);
    // A moderate penalty: measured, not forced; the groups should usually differ.
    o.diversity_penalty = 1.0;
    const auto rm = itscale::diverse_beam_search(lm, std::span<const token_id>(prompt), o);
    std::map<std::size_t, tokens> best_m;
    for (std::size_t j = 0; j < rm.size(); ++j) best_m.try_emplace(rm.group[j], rm[j].tokens);
    std::set<tokens> distinct;
    for (const auto& [g, t] : best_m) distinct.insert(t);
    differ_with_penalty += distinct.size() == best_m.size();
    ++runs;
    CHECK(lm.live_handles() == 0);
  }
  CHECK(differ_with_penalty * 2 > runs);
}

namespace {

// Independent reference for the first step of group g: the processed log-probs of the prompt,
// in float as the library (log-softmax), minus float(penalty) * count of the earlier groups'
// tokens, ranked; the top group-size non-EOS tokens are the group's beams.
std::vector<token_id> reference_first_step(const itscale::hash_lm& lm, const tokens& prompt, std::size_t groups,
                                           std::size_t gs, float penalty) {
  std::vector<float> row(lm.vocab_size());
  lm.fill(lm.state_of(prompt), row);
  double m = -INFINITY, s = 0;
  for (float x : row) m = std::max(m, double{x});
  for (float x : row) s += std::exp(double{x} - m);
  std::vector<double> lp(row.size());
  for (std::size_t i = 0; i < row.size(); ++i) lp[i] = double{row[i]} - m - std::log(s);
  std::map<token_id, int> count;
  std::vector<token_id> chosen;
  for (std::size_t g = 0; g < groups; ++g) {
    std::vector<std::pair<double, token_id>> ranked;
    for (std::size_t t = 0; t < lp.size(); ++t)
      ranked.emplace_back(-(lp[t] - double{penalty} * count[static_cast<token_id>(t)]), static_cast<token_id>(t));
    std::sort(ranked.begin(), ranked.end());
    std::size_t taken = 0;
    for (const auto& [neg, t] : ranked) {
      if (taken == gs) break;
      if (t == 0) continue;  // EOS finishes, it does not run on
      chosen.push_back(t);
      ++taken;
    }
    for (std::size_t i = chosen.size() - gs; i < chosen.size(); ++i) ++count[chosen[i]];
  }
  return chosen;
}

}  // namespace

TEST_CASE("diverse beam search: the penalty counts the earlier groups' tokens at this step, with multiplicity (first step vs reference)") {
  for (const float penalty : {0.3f, 1.0f, 2.5f}) {
    for (std::uint64_t seed = 1; seed <= 6; ++seed) {
      CAPTURE(penalty);
      CAPTURE(seed);
      const tokens prompt{3, 4};
      const std::size_t groups = 4, gs = 2;
      itscale::hash_lm lm(12, seed);
      const auto r = itscale::diverse_beam_search(
          lm, std::span<const token_id>(prompt),
          {.beam = {.num_beams = groups * gs, .stop = {.max_new_tokens = 3, .eos_token_id = {0}}, .record_trace = true},
           .num_beam_groups = groups, .diversity_penalty = penalty});
      REQUIRE(r.prompts[0].trace.size() >= groups);
      std::vector<token_id> got;
      for (std::size_t g = 0; g < groups; ++g) {
        CHECK(r.prompts[0].trace[g].group == g);
        for (const auto& c : r.prompts[0].trace[g].candidates)
          if (c.kept_running) got.push_back(c.token);
      }
      CHECK(got == reference_first_step(lm, prompt, groups, gs, penalty));
      // The recorded log-prob of a penalised token includes the penalty (as HF's scores do).
      for (std::size_t g = 1; g < groups; ++g)
        for (const auto& c : r.prompts[0].trace[g].candidates)
          CHECK(c.score == doctest::Approx(c.logprob).epsilon(1e-6));
    }
  }
}

TEST_CASE("diverse beam search: several prompts equal each alone; at most 2K live handles; forks") {
  const std::vector<tokens> prompts{{1, 2}, {3}, {4, 5, 6}, {1, 2}};
  const itscale::diverse_beam_options o{.beam = {.num_beams = 6, .num_return_sequences = 4,
                                                 .stop = {.max_new_tokens = 9, .eos_token_id = {0, 5}}},
                                        .num_beam_groups = 3, .diversity_penalty = 0.8};
  test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(30, 9));
  const auto together = itscale::diverse_beam_search(src, prompts, o);
  CHECK(src.live == 0);
  CHECK(src.peak_live <= static_cast<std::ptrdiff_t>(prompts.size() * 2 * 6));
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    const auto alone = itscale::diverse_beam_search(src, std::span<const token_id>(prompts[p]), o);
    REQUIRE(alone.hypotheses(0).size() == together.hypotheses(p).size());
    for (std::size_t j = 0; j < alone.hypotheses(0).size(); ++j) {
      CHECK(alone.hypotheses(0)[j].tokens == together.hypotheses(p)[j].tokens);
      CHECK(alone.hypotheses(0)[j].score == together.hypotheses(p)[j].score);
      CHECK(alone.group[j] == together.groups(p)[j]);
    }
    for (std::size_t j = 1; j < alone.hypotheses(0).size(); ++j)
      CHECK(alone.hypotheses(0)[j - 1].score >= alone.hypotheses(0)[j].score);
  }
  CHECK(src.live == 0);
}

TEST_CASE("diverse beam search: a backend failure at any call, or a throwing processor, leaks nothing") {
  const std::vector<tokens> prompts{{1, 2}, {3}};
  const itscale::diverse_beam_options o{.beam = {.num_beams = 4, .num_return_sequences = 2,
                                                 .stop = {.max_new_tokens = 9, .eos_token_id = {0}}},
                                        .num_beam_groups = 2, .diversity_penalty = 1.0};
  test_support::instrumented_source<itscale::hash_lm> probe(itscale::hash_lm(25, 3));
  (void)itscale::diverse_beam_search(probe, prompts, o);
  const std::size_t calls = probe.prefills + probe.extends;
  REQUIRE(calls > 3);
  for (std::size_t fail_at = 0; fail_at < calls; ++fail_at) {
    CAPTURE(fail_at);
    test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(25, 3));
    src.throw_on_call = fail_at;
    CHECK_THROWS_WITH((void)itscale::diverse_beam_search(src, prompts, o), "instrumented_source: injected backend failure");
    CHECK(src.live == 0);
  }
  for (std::size_t call = 0; call < 4; ++call) {
    test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(25, 3));
    src.corrupt_on_call = call;
    src.corrupt_value = NAN;
    CHECK_THROWS_AS((void)itscale::diverse_beam_search(src, prompts, o), itscale::backend_error);
    CHECK(src.live == 0);
  }
  struct thrower {
    void apply(std::span<float>, const itscale::step_context& ctx) const {
      if (ctx.generated() == 2) throw std::runtime_error("processor failed");
    }
  };
  test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(25, 3));
  std::vector<std::span<const token_id>> spans(prompts.begin(), prompts.end());
  CHECK_THROWS_WITH((void)itscale::diverse_beam_search(src, std::span<const std::span<const token_id>>(spans), o, thrower{}),
                    "processor failed");
  CHECK(src.live == 0);
}

TEST_CASE("diverse beam options: each bad value throws a message naming it, before the source is touched") {
  test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(10, 1));
  const tokens prompt{1, 2};
  const std::span<const token_id> p(prompt);
  auto throws_option = [&](const itscale::diverse_beam_options& o, const std::string& name) {
    CAPTURE(name);
    CHECK_THROWS_AS((void)itscale::diverse_beam_search(src, p, o), itscale::invalid_option);
    CHECK(diverse_what_of([&] { (void)itscale::diverse_beam_search(src, p, o); }).find(name) != std::string::npos);
  };
  throws_option({.beam = {.num_beams = 4}, .num_beam_groups = 0}, "num_beam_groups");
  throws_option({.beam = {.num_beams = 4}, .num_beam_groups = 3, .diversity_penalty = 1}, "num_beam_groups");
  throws_option({.beam = {.num_beams = 4}, .num_beam_groups = 8, .diversity_penalty = 1}, "num_beam_groups");
  throws_option({.beam = {.num_beams = 4}, .num_beam_groups = 2, .diversity_penalty = -0.5}, "diversity_penalty");
  throws_option({.beam = {.num_beams = 4}, .num_beam_groups = 2, .diversity_penalty = NAN}, "diversity_penalty");
  throws_option({.beam = {.num_beams = 4}, .num_beam_groups = 2, .diversity_penalty = INFINITY}, "diversity_penalty");
  throws_option({.beam = {.num_beams = 0}}, "num_beams");
  throws_option({.beam = {.num_beams = 2, .num_return_sequences = 3}}, "num_return_sequences");
  throws_option({.beam = {.stop = {.eos_token_id = {10}}}}, "eos_token_id");
  // round(G * patience) per group: 4 groups of 2 with patience 0.6 keep 1 each, so 4 at most.
  throws_option({.beam = {.num_beams = 8, .num_return_sequences = 5, .patience = 0.6}, .num_beam_groups = 4},
                "num_return_sequences");
  CHECK(src.calls == 0);
  // Allowed: several groups without a penalty (identical groups), and one group with a penalty.
  CHECK_NOTHROW(itscale::diverse_beam_options{.beam = {.num_beams = 4}, .num_beam_groups = 2}.validate());
  CHECK_NOTHROW(itscale::diverse_beam_options{.beam = {.num_beams = 4}, .num_beam_groups = 1, .diversity_penalty = 2}.validate());
}

// Compile-time checks, nothing to run: diverse_beam_search uses nothing beyond the concepts. The
// concept checks that every overload resolves with the archetypes; it sees only declarations (the
// return types are not deduced), so the explicit instantiations compile the body with them.
namespace {
template <class S, class P>
concept diverse_beam_search_accepts =
    requires(S& s, std::span<const token_id> prompt, const std::vector<tokens>& prompts,
             std::span<const std::span<const token_id>> spans, const itscale::prefilled<S>& start,
             const itscale::diverse_beam_options& o, const P& user, const itscale::run_options& run) {
      { itscale::diverse_beam_search(s, prompt, o) } -> std::same_as<itscale::diverse_beam_search_result>;
      { itscale::diverse_beam_search(s, prompts, o) } -> std::same_as<itscale::diverse_beam_search_result>;
      { itscale::diverse_beam_search(s, spans, o, run) } -> std::same_as<itscale::diverse_beam_search_result>;
      { itscale::diverse_beam_search(s, spans, o, user, run) } -> std::same_as<itscale::diverse_beam_search_result>;
      { itscale::diverse_beam_search(s, start, o) } -> std::same_as<itscale::diverse_beam_search_result>;
    };
}  // namespace
static_assert(diverse_beam_search_accepts<itscale::logit_source_archetype, itscale::logits_processor_archetype>);
static_assert(
    diverse_beam_search_accepts<itscale::logit_source_archetype, itscale::stateful_logits_processor_archetype>);
template itscale::diverse_beam_search_result itscale::diverse_beam_search(
    itscale::logit_source_archetype&, std::span<const std::span<const token_id>>, const itscale::diverse_beam_options&,
    const itscale::logits_processor_archetype&, const itscale::run_options&);
template itscale::diverse_beam_search_result itscale::diverse_beam_search(
    itscale::logit_source_archetype&, std::span<const std::span<const token_id>>, const itscale::diverse_beam_options&,
    const itscale::stateful_logits_processor_archetype&, const itscale::run_options&);
