// The step-level searches: a trap problem (greedy fails, search finds the reward-1 leaf within
// stated budgets), compute accounting, determinism, budgets and cancellation, the handle budget
// (re-prefills, identical results, bounded peak), no live handle after a throwing verifier or
// source, and bad input.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string_view>
#include <vector>

#include <itscale/backends/function_source.hpp>
#include <itscale/backends/hash_lm.hpp>
#include <itscale/decode/generate.hpp>
#include <itscale/steps/best_first_search.hpp>
#include <itscale/steps/dvts.hpp>
#include <itscale/steps/rebase.hpp>
#include <itscale/steps/sampling_proposer.hpp>
#include <itscale/steps/step_beam_search.hpp>
#include <itscale/steps/top_k_proposer.hpp>
#include <itscale/steps/verifier.hpp>

#include "instrumented_source.hpp"

namespace {
using itscale::token_id;
using tokens = std::vector<token_id>;

// --- the trap ---------------------------------------------------------------------------------
// 0 pad, 1 BOS, 2 EOS, 3 'a', 4 'b', 5 'c', 6 ';'. A step is one letter and ';' (a: 0.7, b: 0.2,
// c: 0.1 at every step); after three steps EOS. The process verifier first prefers 'a' (a 0.6,
// b 0.5, c 0.1), then sees through it: from step 2 on, a sequence that began with 'b' scores 0.9,
// any other 0.2; finished, 1 for a b-first sequence, else 0. The highest-prior path a;a;a; ends
// with reward 0; the reward-1 leaves lie behind the low-prior first step b.
constexpr token_id bos = 1, eos = 2, a = 3, b = 4, c = 5, semi = 6;
constexpr std::size_t depth = 3;

auto trap_source() {
  return itscale::from_function(7, [](std::span<const token_id> prefix, std::span<float> row) {
    for (auto& x : row) x = itscale::masked_logit;
    const token_id last = prefix.back();
    if (last == a || last == b || last == c) {
      row[semi] = 0;
      return;
    }
    if (static_cast<std::size_t>(std::count(prefix.begin(), prefix.end(), semi)) == depth) {
      row[eos] = 0;
      return;
    }
    row[a] = std::log(0.7f);
    row[b] = std::log(0.2f);
    row[c] = std::log(0.1f);
  });
}

double trap_score(std::span<const token_id> seq, bool complete) {
  if (seq.empty()) return 0;
  const auto steps = std::count(seq.begin(), seq.end(), semi);
  if (complete) return seq[0] == b ? 1.0 : 0.0;
  if (steps <= 1) return seq[0] == a ? 0.6 : seq[0] == b ? 0.5 : 0.1;
  return seq[0] == b ? 0.9 : 0.2;
}

auto trap_verifier() {
  return itscale::make_verifier("trap", {0, 1}, [](std::span<const token_id>, std::span<const token_id> seq, bool complete) {
    return trap_score(seq, complete);
  });
}

itscale::sampling_proposer_options trap_opts(std::uint64_t seed) {
  return {.sampling = {.do_sample = true, .seed = seed}, .delimiters = {{semi}}, .eos_token_id = {eos}, .max_step_tokens = 4};
}

const tokens trap_prompt{bos};

bool found_reward_one(const itscale::step_search_result& r) {
  return !r.empty() && r[0].stop == itscale::stop_reason::eos && trap_score(r[0].tokens, true) == 1.0 && r[0].score == 1.0;
}

// --- a pseudo-random process verifier over any tokens (for the hash LM) ------------------------
auto hash_verifier() {
  return itscale::make_verifier("hash", {0, 1}, [](std::span<const token_id>, std::span<const token_id> seq, bool) {
    std::uint64_t h = 7;
    for (token_id t : seq) h = itscale::hash_lm::advance(h, t);
    return static_cast<double>(h >> 11) * 0x1.0p-53;
  });
}

itscale::sampling_proposer_options hash_opts(std::uint64_t seed) {
  return {.sampling = {.do_sample = true, .seed = seed, .temperature = 1.5f},
          .delimiters = {{3}},
          .eos_token_id = {0},
          .max_step_tokens = 4,
          .max_sequence_tokens = 24};
}

void check_same(const itscale::step_search_result& x, const itscale::step_search_result& y) {
  REQUIRE(x.size() == y.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    CHECK(x[i].tokens == y[i].tokens);
    CHECK(x[i].score == y[i].score);
    CHECK(x[i].logprob_sum == y[i].logprob_sum);
    CHECK(x[i].stop == y[i].stop);
  }
  CHECK(x.rounds == y.rounds);
  CHECK(x.expanded == y.expanded);
  CHECK(x.candidates == y.candidates);
}
}  // namespace

TEST_CASE("trap: greedy decoding ends with reward 0") {
  auto src = trap_source();
  const auto g = itscale::generate(src, std::span<const token_id>(trap_prompt), itscale::sampling_options{.stop = {.max_new_tokens = 16, .eos_token_id = {eos}}});
  CHECK(g[0].tokens == tokens{a, semi, a, semi, a, semi, eos});
  CHECK(trap_score(g[0].tokens, true) == 0.0);
  // A greedy proposer in the step searches follows the same path.
  auto vf = trap_verifier();
  auto o = trap_opts(1);
  o.sampling.do_sample = false;
  itscale::sampling_proposer prop(src, o);
  const auto r = itscale::step_beam_search(prop, vf, trap_prompt, {.num_candidates = 4, .expansions = 4});
  CHECK(r[0].tokens == tokens{a, semi, a, semi, a, semi, eos});
  CHECK(r[0].score == 0.0);
  CHECK(src.live_handles() == 0);
}

TEST_CASE("trap: step beam search (N = 8, M = 4) finds the reward-1 leaf within 160 generated tokens") {
  auto src = trap_source();
  auto vf = trap_verifier();
  itscale::sampling_proposer prop(src, trap_opts(3));
  const auto r = itscale::step_beam_search(prop, vf, trap_prompt, {.num_candidates = 8, .expansions = 4});
  CHECK(found_reward_one(r));
  CHECK(r.status == itscale::run_status::completed);
  CHECK(r.compute.generated_tokens() <= 160);
  CHECK(r.compute.verifier_calls == r.rounds);
  CHECK(r.compute.verified_sequences == r.candidates);
  MESSAGE("step beam search, trap: generated tokens " << r.compute.generated_tokens() << ", verifier calls "
                                                      << r.compute.verifier_calls << ", rounds " << r.rounds);
  // Most seeds: the only miss is a seed whose 8 root samples hold no 'b' (probability 0.8^8).
  int hits = 0;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    itscale::sampling_proposer p(src, trap_opts(seed));
    hits += found_reward_one(itscale::step_beam_search(p, vf, trap_prompt, {.num_candidates = 8, .expansions = 4}));
  }
  MESSAGE("step beam search N=8 M=4: reward-1 leaf found for " << hits << " of 20 seeds");
  CHECK(hits >= 14);
  CHECK(src.live_handles() == 0);
}

TEST_CASE("trap: REBASE (N = 16, T = 0.1) finds the reward-1 leaf within 200 generated tokens") {
  auto src = trap_source();
  auto vf = trap_verifier();
  itscale::sampling_proposer prop(src, trap_opts(3));
  const auto r = itscale::rebase(prop, vf, trap_prompt, {.width = 16, .temperature = 0.1});
  CHECK(found_reward_one(r));
  CHECK(r.compute.generated_tokens() <= 200);
  MESSAGE("REBASE, trap: generated tokens " << r.compute.generated_tokens() << ", rounds " << r.rounds);
  int hits = 0;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    itscale::sampling_proposer p(src, trap_opts(seed));
    hits += found_reward_one(itscale::rebase(p, vf, trap_prompt, {.width = 16, .temperature = 0.1}));
  }
  MESSAGE("REBASE N=16 T=0.1: reward-1 leaf found for " << hits << " of 20 seeds");
  CHECK(hits >= 15);
  CHECK(src.live_handles() == 0);
}

TEST_CASE("trap: best-first search finds the reward-1 leaf; DVTS's per-subtree greed mostly takes the bait") {
  auto src = trap_source();
  auto vf = trap_verifier();
  {
    itscale::sampling_proposer prop(src, trap_opts(3));
    const auto r = itscale::best_first_search(prop, vf, trap_prompt, {.expansions = 8, .max_expansions = 16});
    CHECK(found_reward_one(r));
    CHECK(r.compute.generated_tokens() <= 200);
    MESSAGE("best-first, trap: generated tokens " << r.compute.generated_tokens() << ", expanded " << r.expanded);
  }
  int dvts_hits = 0;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    itscale::sampling_proposer p(src, trap_opts(seed));
    const auto r = itscale::dvts(p, vf, trap_prompt, {.num_candidates = 16, .expansions = 4, .num_return_sequences = 4});
    CHECK(r.size() == 4);  // one leaf per subtree
    dvts_hits += found_reward_one(r);
  }
  MESSAGE("DVTS N=16 M=4: reward-1 leaf found for " << dvts_hits << " of 20 seeds (the first step's verifier prefers 'a')");
  CHECK(src.live_handles() == 0);
}

TEST_CASE("step searches are deterministic given the proposer's seed, and report compute from one meter") {
  itscale::hash_lm lm(12, 5);
  auto vf = hash_verifier();
  const tokens prompt{1, 2};
  const auto run_all = [&](std::uint64_t seed) {
    std::vector<itscale::step_search_result> out;
    itscale::sampling_proposer p(lm, hash_opts(seed));
    out.push_back(itscale::step_beam_search(p, vf, prompt, {.num_candidates = 8, .expansions = 2, .num_return_sequences = 3}));
    out.push_back(itscale::dvts(p, vf, prompt, {.num_candidates = 8, .expansions = 2, .num_return_sequences = 2}));
    out.push_back(itscale::rebase(p, vf, prompt, {.width = 8, .temperature = 0.3, .num_return_sequences = 3}));
    out.push_back(itscale::best_first_search(p, vf, prompt, {.expansions = 3, .batch = 2, .num_return_sequences = 2}));
    return out;
  };
  const auto x = run_all(9), y = run_all(9);
  for (std::size_t i = 0; i < x.size(); ++i) {
    check_same(x[i], y[i]);
    CHECK(x[i].compute.verifier_calls == x[i].rounds);
    CHECK(x[i].compute.verified_sequences == x[i].candidates);
    CHECK(x[i].compute.prefill_calls == 1);  // the root; nothing alive is evaluated twice
    CHECK(x[i].compute.generated_tokens() > 0);
    CHECK(x[i].compute.wall_seconds >= x[i].compute.source_seconds);
    for (std::size_t j = 1; j < x[i].size(); ++j) CHECK(x[i][j - 1].score >= x[i][j].score);
  }
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("step searches: the compute budget ends a search with what it found; cancellation too") {
  itscale::hash_lm lm(12, 5);
  auto vf = hash_verifier();
  const tokens prompt{1, 2};
  itscale::sampling_proposer p(lm, hash_opts(4));
  const itscale::step_run_options tight{.budget = {.max_generated_tokens = 30}};
  const auto r = itscale::step_beam_search(p, vf, prompt, {.num_candidates = 8, .expansions = 2, .num_return_sequences = 2}, tight);
  CHECK(r.status == itscale::run_status::budget_exhausted);
  CHECK(r.size() == 2);
  const itscale::step_run_options calls{.budget = {.max_verifier_calls = 2}};
  const auto q = itscale::rebase(p, vf, prompt, {.width = 8, .temperature = 0.3}, calls);
  CHECK(q.status == itscale::run_status::budget_exhausted);
  CHECK(q.compute.verifier_calls == 2);
  std::stop_source stop;
  stop.request_stop();
  const itscale::step_run_options cancelled{.budget = {.stop = stop.get_token()}};
  const auto z = itscale::best_first_search(p, vf, prompt, {}, cancelled);
  CHECK(z.status == itscale::run_status::cancelled);
  REQUIRE(z.size() == 1);  // the root, unfinished
  CHECK(z[0].stop == itscale::stop_reason::cancelled);
  CHECK(z[0].tokens.empty());
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("handle budget: best-first search re-prefills cold nodes and returns the unbounded search's result") {
  test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(12, 5));
  auto vf = hash_verifier();
  const tokens prompt{1, 2};
  const itscale::best_first_options o{.expansions = 2, .batch = 1, .max_frontier = 40, .max_expansions = 40,
                                      .num_return_sequences = 3};
  auto po = hash_opts(11);
  po.eos_token_id.clear();  // sequences end at max_sequence_tokens only: a deep, wide frontier
  itscale::sampling_proposer p(src, po);
  const auto free_run = itscale::best_first_search(p, vf, prompt, o);
  const itscale::step_run_options bounded{.max_live_handles = o.in_flight() + 1};
  const auto tight = itscale::best_first_search(p, vf, prompt, o, bounded);
  check_same(free_run, tight);
  CHECK(free_run.compute.reprefills == 0);
  CHECK(tight.compute.reprefills > 0);
  CHECK(tight.compute.prefill_calls == 1 + tight.compute.reprefills);
  CHECK(tight.compute.extend_rows == free_run.compute.extend_rows);  // the same generated work
  CHECK(tight.compute.prefill_tokens > free_run.compute.prefill_tokens);
  CHECK(tight.compute.peak_live_handles <= bounded.max_live_handles);
  CHECK(free_run.compute.peak_live_handles > bounded.max_live_handles);
  MESSAGE("best-first with max_live_handles " << bounded.max_live_handles << ": " << tight.compute.reprefills
                                             << " re-prefills, peak " << tight.compute.peak_live_handles
                                             << " live handles (unbounded: peak " << free_run.compute.peak_live_handles << ")");
  CHECK(src.live == 0);
}

TEST_CASE("step searches: a verifier or source that throws at any call leaves no live handle") {
  const tokens prompt{1, 2};
  for (int search = 0; search < 4; ++search) {
    for (std::size_t fail_at = 0; fail_at < 6; ++fail_at) {
      itscale::hash_lm lm(12, 5);
      std::size_t calls = 0;
      auto vf = itscale::make_verifier("flaky", {0, 1}, [&](std::span<const token_id>, std::span<const token_id> s, bool) {
        if (calls++ == fail_at * 3) throw std::runtime_error("verifier down");
        return static_cast<double>(s.size() % 5) / 5;
      });
      itscale::sampling_proposer p(lm, hash_opts(2));
      try {
        switch (search) {
          case 0: (void)itscale::step_beam_search(p, vf, prompt, {.num_candidates = 6, .expansions = 3}); break;
          case 1: (void)itscale::dvts(p, vf, prompt, {.num_candidates = 6, .expansions = 3}); break;
          case 2: (void)itscale::rebase(p, vf, prompt, {.width = 6}); break;
          default: (void)itscale::best_first_search(p, vf, prompt, {.expansions = 3}, {.max_live_handles = 8}); break;
        }
      } catch (const std::runtime_error&) {
      }
      CHECK(lm.live_handles() == 0);
    }
    for (std::size_t fail_at = 0; fail_at < 8; ++fail_at) {
      test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(12, 5));
      src.throw_on_call = fail_at * 3;
      auto vf = hash_verifier();
      itscale::sampling_proposer p(src, hash_opts(2));
      try {
        switch (search) {
          case 0: (void)itscale::step_beam_search(p, vf, prompt, {.num_candidates = 6, .expansions = 3}); break;
          case 1: (void)itscale::dvts(p, vf, prompt, {.num_candidates = 6, .expansions = 3}); break;
          case 2: (void)itscale::rebase(p, vf, prompt, {.width = 6}); break;
          default: (void)itscale::best_first_search(p, vf, prompt, {.expansions = 3}, {.max_live_handles = 8}); break;
        }
      } catch (const std::runtime_error&) {
      }
      CHECK(src.live == 0);
    }
  }
}

TEST_CASE("REBASE's allocation: shares of softmax(score / T) weighted by count, rounded to sum exactly") {
  const double scores[] = {0.2, 0.9, 0.9, 0.5};
  const std::size_t counts[] = {1, 1, 3, 2};
  const auto parts = itscale::detail::apportion(scores, counts, 10, 0.1);
  CHECK(parts == std::vector<std::size_t>{0, 3, 7, 0});  // shares 0.002, 2.48, 7.43, 0.09: floors 0 2 7 0, the 0.48 rounds up
  const auto flat = itscale::detail::apportion(scores, counts, 7, 1e6);  // T -> inf: by count
  CHECK(flat == std::vector<std::size_t>{1, 1, 3, 2});
  const auto one = itscale::detail::apportion(scores, counts, 1, 0.1);
  CHECK(one == std::vector<std::size_t>{0, 0, 1, 0});
}

TEST_CASE("stop_at_score ends a search once a finished sequence reaches it") {
  itscale::hash_lm lm(12, 5);
  auto vf = hash_verifier();
  const tokens prompt{1, 2};
  itscale::sampling_proposer p(lm, hash_opts(4));
  const auto full = itscale::step_beam_search(p, vf, prompt, {.num_candidates = 8, .expansions = 2});
  const auto early = itscale::step_beam_search(p, vf, prompt, {.num_candidates = 8, .expansions = 2, .stop_at_score = 0});
  CHECK(early.rounds < full.rounds);
  CHECK(early.status == itscale::run_status::completed);
  CHECK(early.compute.generated_tokens() < full.compute.generated_tokens());
  const auto never = itscale::step_beam_search(p, vf, prompt, {.num_candidates = 8, .expansions = 2, .stop_at_score = 2});
  check_same(full, never);
  CHECK(lm.live_handles() == 0);
}

namespace {
// A proposer that forgets to answer the nodes from id `skip_id` on (their candidates are dropped).
template <class P>
struct forgetful_proposer {
  using state = typename P::state;
  P& inner;
  std::uint32_t skip_id;
  state root(std::span<const token_id> t) { return inner.root(t); }
  std::vector<std::vector<itscale::step_candidate<state>>> propose(std::span<const itscale::propose_item<state>> batch, std::size_t n) {
    auto out = inner.propose(batch, n);
    for (std::size_t i = 0; i < batch.size(); ++i)
      if (batch[i].id >= skip_id) out[i].clear();
    return out;
  }
  std::span<const token_id> tokens_of(const state& s) const { return inner.tokens_of(s); }
  bool is_live(const state& s) const { return inner.is_live(s); }
  void drop(state& s) noexcept { inner.drop(s); }
  void restore(state& s) { inner.restore(s); }
  itscale::compute_stats& stats() { return inner.stats(); }
};
}  // namespace

TEST_CASE("step searches: bad options and bad answers are clear exceptions, and nothing leaks") {
  itscale::hash_lm lm(12, 5);
  auto vf = hash_verifier();
  const tokens prompt{1, 2};
  {
    itscale::sampling_proposer p(lm, hash_opts(2));
    const auto bad_beam = [&](itscale::step_beam_options o) { (void)itscale::step_beam_search(p, vf, prompt, o); };
    CHECK_THROWS_WITH_AS(bad_beam({.num_candidates = 0}), doctest::Contains("num_candidates (N) must be >= 1"), itscale::invalid_option);
    CHECK_THROWS_WITH_AS(bad_beam({.num_candidates = 8, .expansions = 0}), doctest::Contains("expansions (M) must be >= 1"), itscale::invalid_option);
    CHECK_THROWS_WITH_AS(bad_beam({.num_candidates = 8, .expansions = 3}), doctest::Contains("must divide num_candidates"), itscale::invalid_option);
    CHECK_THROWS_AS(bad_beam({.max_steps = 0}), itscale::invalid_option);
    CHECK_THROWS_AS((void)itscale::dvts(p, vf, prompt, {.num_candidates = 6, .expansions = 4}), itscale::invalid_option);
    CHECK_THROWS_AS((void)itscale::dvts(p, vf, prompt, {.num_candidates = 8, .expansions = 4, .num_return_sequences = 3}), itscale::invalid_option);
    CHECK_THROWS_AS((void)itscale::rebase(p, vf, prompt, {.width = 0}), itscale::invalid_option);
    CHECK_THROWS_WITH_AS((void)itscale::rebase(p, vf, prompt, {.stop_at_score = std::nan("")}),
                         doctest::Contains("rebase_options.stop_at_score must not be NaN"), itscale::invalid_option);
    CHECK_THROWS_AS(bad_beam({.stop_at_score = std::nan("")}), itscale::invalid_option);
    CHECK_THROWS_AS((void)itscale::rebase(p, vf, prompt, {.temperature = 0}), itscale::invalid_option);
    CHECK_THROWS_AS((void)itscale::rebase(p, vf, prompt, {.temperature = std::numeric_limits<double>::quiet_NaN()}), itscale::invalid_option);
    CHECK_THROWS_AS((void)itscale::best_first_search(p, vf, prompt, {.batch = 0}), itscale::invalid_option);
    CHECK_THROWS_AS((void)itscale::best_first_search(p, vf, prompt, {.batch = 4, .max_frontier = 2}), itscale::invalid_option);
    CHECK_THROWS_WITH_AS((void)itscale::best_first_search(p, vf, prompt, {.expansions = 3}, {.max_live_handles = 4}),
                         doctest::Contains("max_live_handles (4) must be 0 or >= batch * (1 + 2 * expansions) = 7"), itscale::invalid_option);
    CHECK_THROWS_AS((void)itscale::step_beam_search(p, vf, tokens{}, {}), itscale::invalid_input);
    CHECK_THROWS_AS((void)itscale::step_beam_search(p, vf, prompt, {}, {.budget = {.max_seconds = -1}}), itscale::invalid_option);
    CHECK(lm.live_handles() == 0);

    // Verifiers: NaN, out of range, wrong batch size -> backend_error naming the verifier.
    auto nan_vf = itscale::make_verifier("nan-scorer", {0, 1}, [](auto, auto, bool) { return std::nan(""); });
    CHECK_THROWS_WITH_AS((void)itscale::step_beam_search(p, nan_vf, prompt, {}), doctest::Contains("'nan-scorer' returned NaN"), itscale::backend_error);
    auto big_vf = itscale::make_verifier("big", {0, 1}, [](auto, auto, bool) { return 2.0; });
    CHECK_THROWS_WITH_AS((void)itscale::rebase(p, big_vf, prompt, {}), doctest::Contains("outside its declared range"), itscale::backend_error);
    struct short_verifier {
      std::vector<double> verify(std::span<const itscale::verify_item> batch) { return std::vector<double>(batch.size() - 1, 0.5); }
      itscale::score_range range() const { return {}; }
      std::string_view name() const { return "short"; }
    } short_vf;
    CHECK_THROWS_WITH_AS((void)itscale::dvts(p, short_vf, prompt, {.num_candidates = 4, .expansions = 2}), doctest::Contains("'short' returned"), itscale::backend_error);
    CHECK(lm.live_handles() == 0);
  }
  // The proposer's own option rule: no delimiter.
  auto no_delims = hash_opts(1);
  no_delims.delimiters.clear();
  CHECK_THROWS_AS(itscale::sampling_proposer(lm, no_delims), itscale::invalid_option);
  // A proposer that returns no step for a non-terminal node.
  {
    itscale::sampling_proposer inner(lm, hash_opts(2));
    forgetful_proposer<decltype(inner)> p{inner, 0};  // the root
    static_assert(itscale::StepProposer<decltype(p)>);
    CHECK_THROWS_WITH_AS((void)itscale::step_beam_search(p, vf, prompt, {}), doctest::Contains("returned no step for node 0"), itscale::search_error);
    forgetful_proposer<decltype(inner)> later{inner, 1};
    CHECK_THROWS_AS((void)itscale::best_first_search(later, vf, prompt, {.expansions = 3, .max_expansions = 50}), itscale::search_error);
    CHECK(lm.live_handles() == 0);
  }
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("the searches use nothing beyond the StepProposer and Verifier concepts (archetypes)") {
  itscale::step_proposer_archetype p;
  itscale::verifier_archetype v;
  const tokens prompt{1};
  const auto beam = itscale::step_beam_search(p, v, prompt, {.num_candidates = 4, .expansions = 2});
  const auto dv = itscale::dvts(p, v, prompt, {.num_candidates = 4, .expansions = 2, .num_return_sequences = 2});
  const auto reb = itscale::rebase(p, v, prompt, {.width = 4});
  const auto bf = itscale::best_first_search(p, v, prompt, {}, {.max_live_handles = 16});
  for (const auto* r : {&beam, &dv, &reb, &bf}) {
    REQUIRE(!r->empty());
    CHECK(r->front().tokens == tokens{0});
    CHECK(r->front().stop == itscale::stop_reason::eos);
    CHECK(r->status == itscale::run_status::completed);
  }
  CHECK(dv.size() == 2);  // one leaf per subtree
}

TEST_CASE("top_k_proposer drives a step search: token-level best-first search on the trap") {
  auto src = trap_source();
  auto vf = trap_verifier();
  itscale::top_k_proposer prop(src, {.eos_token_id = {eos}});
  // One-token steps: the verifier sees letters and ';' one at a time.
  const auto r = itscale::best_first_search(prop, vf, trap_prompt, {.expansions = 3, .max_expansions = 64});
  REQUIRE(!r.empty());
  CHECK(r[0].tokens.size() == 7);
  CHECK(r[0].tokens[0] == b);
  CHECK(r[0].score == 1.0);
  CHECK(src.live_handles() == 0);
}
