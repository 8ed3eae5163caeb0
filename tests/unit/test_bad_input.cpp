// The README's bad-input table (issue #15): each TEST_CASE here is one kind of bad input, run
// through every public entry point it can reach; each check asserts the exception TYPE and a
// substring of its MESSAGE (the message must name the broken rule), and, where a source is
// involved, that no handle is left live. The table cites these TEST_CASE names.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <itscale/search.hpp>

#include "instrumented_source.hpp"

namespace {

using itscale::token_id;
using tokens = std::vector<token_id>;
using isrc = test_support::instrumented_source<itscale::hash_lm>;

constexpr std::size_t V = 24;
const float nan_f = std::numeric_limits<float>::quiet_NaN();
const double nan_d = std::numeric_limits<double>::quiet_NaN();
const double inf_d = std::numeric_limits<double>::infinity();

// `f()` must throw an `E` whose message contains `needle`; `label` names the row in failures.
template <class E, class F>
void expect_throw(const char* label, F&& f, const std::string& needle) {
  INFO(label);
  std::string what;
  bool right_type = false;
  try {
    f();
    what = "(no exception)";
  } catch (const E& e) {
    right_type = true;
    what = e.what();
  } catch (const std::exception& e) {
    what = std::string("(another exception type) ") + e.what();
  }
  CHECK_MESSAGE(right_type, what);
  CHECK_MESSAGE(what.find(needle) != std::string::npos, what << "  [expected to contain: " << needle << "]");
}

const tokens prompt{1, 2};
std::span<const token_id> P() { return prompt; }

auto hash_verifier() {
  return itscale::make_verifier("hash", {0, 1}, [](std::span<const token_id>, std::span<const token_id> s, bool) {
    std::uint64_t h = 7;
    for (token_id t : s) h = itscale::hash_lm::advance(h, t);
    return static_cast<double>(h >> 11) * 0x1.0p-53;
  });
}

itscale::sampling_proposer_options step_opts() {
  return {.sampling = {.do_sample = true, .seed = 3}, .delimiters = {{3}}, .eos_token_id = {0}, .max_step_tokens = 4,
          .max_sequence_tokens = 12};
}

std::optional<int> first_token(std::span<const token_id> t) {
  if (t.empty()) return std::nullopt;
  return static_cast<int>(t[0] % 4);
}

itscale::sampling_options sampled() { return {.stop = {.max_new_tokens = 3}, .do_sample = true, .seed = 1}; }

// Candidates for the rerankers, drawn from hash_lm.
std::vector<itscale::generation> candidates() {
  itscale::hash_lm lm(V, 1);
  auto o = sampled();
  o.num_return_sequences = 3;
  return itscale::generate(lm, P(), o).sequences;
}

// A source whose logits hold `bad` at token 5 of row 0 on its first call (a prefill).
isrc corrupt_source(float bad) {
  isrc s(itscale::hash_lm(V, 1));
  s.corrupt_on_call = 0;
  s.corrupt_value = bad;
  s.corrupt_token = 5;
  return s;
}

// Runs every source-driven entry point on a fresh corrupt source; each must throw backend_error
// naming `needle`, and leave nothing live.
void every_source_entry_point(float bad, const std::string& needle) {
  const auto each = [&](const char* label, auto run) {
    auto s = corrupt_source(bad);
    expect_throw<itscale::backend_error>(label, [&] { run(s); }, needle);
    CHECK(s.live == 0);
  };
  each("generate", [](isrc& s) { (void)itscale::generate(s, P(), {.stop = {.max_new_tokens = 3}}); });
  each("beam_search", [](isrc& s) { (void)itscale::beam_search(s, P(), {.num_beams = 2, .stop = {.max_new_tokens = 3}}); });
  each("diverse_beam_search", [](isrc& s) {
    (void)itscale::diverse_beam_search(s, P(), {.beam = {.num_beams = 2, .stop = {.max_new_tokens = 3}}, .num_beam_groups = 2});
  });
  each("stochastic_beam_search", [](isrc& s) {
    (void)itscale::stochastic_beam_search(s, P(), {.num_samples = 2, .stop = {.max_new_tokens = 3}}, 1);
  });
  each("self_consistency", [](isrc& s) { (void)itscale::self_consistency(s, P(), first_token, {.samples = 3, .sampling = sampled()}); });
  each("adaptive_consistency", [](isrc& s) {
    (void)itscale::adaptive_consistency(s, P(), first_token, {.max_samples = 3, .sampling = sampled()});
  });
  each("rescore", [](isrc& s) {
    const auto c = candidates();
    (void)itscale::rescore(s, P(), std::span<const itscale::generation>(c));
  });
  each("step_beam_search (sampling_proposer)", [](isrc& s) {
    auto v = hash_verifier();
    itscale::sampling_proposer p(s, step_opts());
    (void)itscale::step_beam_search(p, v, P(), {.num_candidates = 4, .expansions = 2});
  });
  each("mcts_search (top_k_proposer)", [](isrc& s) {
    auto v = hash_verifier();
    itscale::top_k_proposer p(s, {.eos_token_id = {0}, .max_sequence_tokens = 6});
    (void)itscale::mcts_search(p, v, P(), {.simulations = 4});
  });
  each("ensemble_source member", [](isrc& s) {
    auto e = itscale::make_ensemble(s, itscale::hash_lm(V, 2));
    (void)itscale::generate(e, P(), {.stop = {.max_new_tokens = 3}});
  });
  each("contrastive_source amateur", [](isrc& s) {
    auto c = itscale::make_contrastive(itscale::hash_lm(V, 2), s);
    (void)itscale::generate(c, P(), {.stop = {.max_new_tokens = 3}});
  });
  each("cfg_source model", [](isrc& s) {
    auto c = itscale::make_cfg(s, {.gamma = 1.5, .unconditional_prompt = {6}});
    (void)itscale::generate(c, P(), {.stop = {.max_new_tokens = 3}});
  });
}

}  // namespace

TEST_CASE("bad input: NaN logits from a source, at every entry point") {
  every_source_entry_point(nan_f, "NaN for token 5");
}

TEST_CASE("bad input: +inf logits from a source, at every entry point") {
  every_source_entry_point(std::numeric_limits<float>::infinity(), "+inf for token 5");
}

TEST_CASE("bad input: a source's logits view of the wrong shape") {
  // A source that claims V tokens but shows rows of V - 1.
  struct short_rows {
    using handle = std::uint32_t;
    std::vector<float> row = std::vector<float>(V - 1, 0.0f);
    [[nodiscard]] std::size_t vocab_size() const { return V; }
    handle prefill(std::span<const token_id>) { return 0; }
    void extend(std::span<const handle>, std::span<const token_id>, std::span<handle> c) {
      for (auto& h : c) h = 0;
    }
    [[nodiscard]] itscale::logits_view logits() { return {row.data(), 1, V - 1}; }
    void release(handle) noexcept {}
  };
  short_rows s;
  expect_throw<itscale::backend_error>("generate", [&] { (void)itscale::generate(s, P(), {.stop = {.max_new_tokens = 2}}); },
                                       "1 x 23 logits view at step 0, expected 1 x 24");
  expect_throw<itscale::backend_error>("beam_search",
                                       [&] { (void)itscale::beam_search(s, P(), {.num_beams = 2, .stop = {.max_new_tokens = 2}}); },
                                       "x 23");
}

TEST_CASE("bad input: top_k = 0 or > V") {
  itscale::hash_lm lm(V, 1);
  auto o = sampled();
  o.top_k = V + 1;
  expect_throw<itscale::invalid_option>("generate, top_k > V", [&] { (void)itscale::generate(lm, P(), o); },
                                        "top_k (25) must be <= the vocabulary size 24");
  expect_throw<itscale::invalid_option>(
      "self_consistency, top_k > V",
      [&] { (void)itscale::self_consistency(lm, P(), first_token, {.samples = 2, .sampling = o}); }, "top_k (25)");
  auto po = step_opts();
  po.sampling.top_k = V + 1;
  expect_throw<itscale::invalid_option>("sampling_proposer, top_k > V", [&] { itscale::sampling_proposer p(lm, po); },
                                        "top_k (25)");
  // top_k = 0 is "off" (documented in sampling_options, HF's convention): the full distribution.
  o.top_k = 0;
  CHECK_NOTHROW((void)itscale::generate(lm, P(), o));
  // num_beams > V is not bad input: beams are sequences, of which there are V^n after n steps.
  itscale::hash_lm small(4, 1);
  const auto r = itscale::beam_search(small, P(), {.num_beams = 9, .num_return_sequences = 9, .stop = {.max_new_tokens = 3}});
  REQUIRE(r.sequences.size() == 9);
  for (std::size_t i = 0; i < 9; ++i)
    for (std::size_t j = 0; j < i; ++j) CHECK(r.sequences[i].tokens != r.sequences[j].tokens);
  CHECK(small.live_handles() == 0);
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("bad input: an empty vocabulary") {
  expect_throw<itscale::invalid_input>("hash_lm", [] { itscale::hash_lm lm(0, 1); }, "needs vocab >= 1");
  expect_throw<itscale::invalid_input>("function_source",
                                       [] { (void)itscale::from_function(0, [](std::span<const token_id>, std::span<float>) {}); },
                                       "needs vocab >= 1");
  // Members of different vocabularies (the same rule: each row must match the combinator's V).
  expect_throw<itscale::invalid_input>("ensemble_source, vocabularies differ",
                                       [] { (void)itscale::make_ensemble(itscale::hash_lm(V, 1), itscale::hash_lm(V + 1, 2)); },
                                       "vocabulary");
  expect_throw<itscale::invalid_input>("contrastive_source, vocabularies differ",
                                       [] { (void)itscale::make_contrastive(itscale::hash_lm(V, 1), itscale::hash_lm(V + 1, 2)); },
                                       "vocabulary");
}

TEST_CASE("bad input: zero beams, samples, candidates or simulations") {
  itscale::hash_lm lm(V, 1);
  expect_throw<itscale::invalid_option>("beam_search num_beams = 0", [&] { (void)itscale::beam_search(lm, P(), {.num_beams = 0}); },
                                        "num_beams must be >= 1, got 0");
  expect_throw<itscale::invalid_option>(
      "diverse_beam_search num_beam_groups = 0",
      [&] { (void)itscale::diverse_beam_search(lm, P(), {.beam = {.num_beams = 2}, .num_beam_groups = 0}); }, "num_beam_groups");
  expect_throw<itscale::invalid_option>("stochastic_beam_search num_samples = 0",
                                        [&] { (void)itscale::stochastic_beam_search(lm, P(), {.num_samples = 0}, 1); },
                                        "num_samples must be >= 1, got 0");
  auto o = sampled();
  o.num_return_sequences = 0;
  expect_throw<itscale::invalid_option>("generate num_return_sequences = 0", [&] { (void)itscale::generate(lm, P(), o); },
                                        "num_return_sequences must be >= 1, got 0");
  expect_throw<itscale::invalid_option>("self_consistency samples = 0",
                                        [&] { (void)itscale::self_consistency(lm, P(), first_token, {.samples = 0}); },
                                        "samples must be >= 1, got 0");
  expect_throw<itscale::invalid_option>("adaptive_consistency max_samples = 0",
                                        [&] { (void)itscale::adaptive_consistency(lm, P(), first_token, {.max_samples = 0}); },
                                        "max_samples");
  auto v = hash_verifier();
  itscale::sampling_proposer p(lm, step_opts());
  expect_throw<itscale::invalid_option>("step_beam_search num_candidates = 0",
                                        [&] { (void)itscale::step_beam_search(p, v, P(), {.num_candidates = 0}); },
                                        "num_candidates (N) must be >= 1, got 0");
  expect_throw<itscale::invalid_option>("dvts num_candidates = 0",
                                        [&] { (void)itscale::dvts(p, v, P(), {.num_candidates = 0}); },
                                        "num_candidates (N) must be >= 1, got 0");
  expect_throw<itscale::invalid_option>("rebase width = 0", [&] { (void)itscale::rebase(p, v, P(), {.width = 0}); },
                                        "width (N) must be >= 1, got 0");
  expect_throw<itscale::invalid_option>("best_first_search expansions = 0",
                                        [&] { (void)itscale::best_first_search(p, v, P(), {.expansions = 0}); },
                                        "expansions must be >= 1, got 0");
  expect_throw<itscale::invalid_option>("mcts_search simulations = 0",
                                        [&] { (void)itscale::mcts_search(p, v, P(), {.simulations = 0}); }, "simulations");
  const std::vector<itscale::generation> none;
  expect_throw<itscale::invalid_input>("best_of_n, no candidates", [&] { (void)itscale::best_of_n(v, P(), none); },
                                       "best_of_n");
  itscale::token_f1 u;
  expect_throw<itscale::invalid_input>("mbr, no candidates",
                                       [&] { (void)itscale::mbr(std::span<const itscale::generation>(none), u); },
                                       "mbr needs at least one candidate");
  expect_throw<itscale::invalid_input>("rescore, no candidates",
                                       [&] { (void)itscale::rescore(lm, P(), std::span<const itscale::generation>(none)); },
                                       "candidate");
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("bad input: a token id >= V or < 0") {
  itscale::hash_lm lm(V, 1);
  const tokens bad{1, static_cast<token_id>(V)};
  const std::span<const token_id> B = bad;
  const std::string oov = "= 24 is outside the vocabulary [0, 24)";
  expect_throw<itscale::invalid_input>("generate", [&] { (void)itscale::generate(lm, B, sampled()); }, oov);
  expect_throw<itscale::invalid_input>("beam_search", [&] { (void)itscale::beam_search(lm, B, {.num_beams = 2}); }, oov);
  expect_throw<itscale::invalid_input>(
      "diverse_beam_search", [&] { (void)itscale::diverse_beam_search(lm, B, {.beam = {.num_beams = 2}, .num_beam_groups = 2}); },
      oov);
  expect_throw<itscale::invalid_input>("stochastic_beam_search", [&] { (void)itscale::stochastic_beam_search(lm, B, {}, 1); }, oov);
  expect_throw<itscale::invalid_input>("self_consistency",
                                       [&] { (void)itscale::self_consistency(lm, B, first_token, {.samples = 2, .sampling = sampled()}); },
                                       oov);
  expect_throw<itscale::invalid_input>("rescore, a candidate token",
                                       [&] {
                                         const std::vector<std::span<const token_id>> c{B};
                                         (void)itscale::rescore(lm, P(), std::span<const std::span<const token_id>>(c));
                                       },
                                       oov);
  expect_throw<itscale::invalid_input>("hash_lm prefill", [&] { (void)lm.prefill(B); }, oov);
  auto ens = itscale::make_ensemble(itscale::hash_lm(V, 1), itscale::hash_lm(V, 2));
  expect_throw<itscale::invalid_input>("ensemble prefill", [&] { (void)ens.prefill(B); }, oov);
  auto v = hash_verifier();
  itscale::sampling_proposer p(lm, step_opts());
  expect_throw<itscale::invalid_input>("step_beam_search prompt",
                                       [&] { (void)itscale::step_beam_search(p, v, B, {.num_candidates = 2, .expansions = 1}); },
                                       oov);
  expect_throw<itscale::invalid_option>("sampling eos_token_id >= V",
                                        [&] { (void)itscale::generate(lm, P(), {.stop = {.eos_token_id = {99}}}); }, "99");
  const tokens negative{1, -3};
  expect_throw<itscale::invalid_input>("generate, a negative id",
                                       [&] { (void)itscale::generate(lm, std::span<const token_id>(negative), sampled()); },
                                       "= -3 is outside the vocabulary");
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("bad input: negative or non-finite options") {
  itscale::hash_lm lm(V, 1);
  const auto gen = [&](itscale::sampling_options o) { (void)itscale::generate(lm, P(), o); };
  auto o = sampled();
  o.temperature = -1.0f;
  expect_throw<itscale::invalid_option>("sampling temperature < 0", [&] { gen(o); }, "temperature must be finite and > 0");
  o = sampled();
  o.temperature = nan_f;
  expect_throw<itscale::invalid_option>("sampling temperature NaN", [&] { gen(o); }, "temperature must be finite and > 0");
  o = sampled();
  o.top_p = nan_d;
  expect_throw<itscale::invalid_option>("sampling top_p NaN", [&] { gen(o); }, "top_p must be in (0, 1]");
  o = sampled();
  o.min_p = -0.5f;
  expect_throw<itscale::invalid_option>("sampling min_p < 0", [&] { gen(o); }, "min_p must be in [0, 1]");
  o = sampled();
  o.repetition_penalty = 0.0f;
  expect_throw<itscale::invalid_option>("repetition_penalty 0", [&] { gen(o); }, "repetition_penalty must be finite and > 0");
  expect_throw<itscale::invalid_option>("beam length_penalty NaN",
                                        [&] { (void)itscale::beam_search(lm, P(), {.length_penalty = nan_d}); },
                                        "length_penalty must be finite");
  expect_throw<itscale::invalid_option>(
      "diverse diversity_penalty < 0",
      [&] { (void)itscale::diverse_beam_search(lm, P(), {.beam = {.num_beams = 2}, .num_beam_groups = 2, .diversity_penalty = -1}); },
      "diversity_penalty");
  expect_throw<itscale::invalid_option>("stochastic temperature inf",
                                        [&] { (void)itscale::stochastic_beam_search(lm, P(), {.temperature = inf_d}, 1); },
                                        "temperature must be finite and > 0");
  expect_throw<itscale::invalid_option>("budget max_seconds NaN",
                                        [&] {
                                          (void)itscale::generate(lm, P(), sampled(), itscale::run_options{.budget = {.max_seconds = nan_d}});
                                        },
                                        "max_seconds must be finite and >= 0");
  auto v = hash_verifier();
  itscale::sampling_proposer p(lm, step_opts());
  expect_throw<itscale::invalid_option>("rebase temperature < 0",
                                        [&] { (void)itscale::rebase(p, v, P(), {.width = 2, .temperature = -1}); },
                                        "temperature must be finite and > 0");
  expect_throw<itscale::invalid_option>("mcts c_init < 0", [&] { (void)itscale::mcts_search(p, v, P(), {.c_init = -1}); },
                                        "c_init");
  expect_throw<itscale::invalid_option>("adaptive confidence > 1",
                                        [&] { (void)itscale::adaptive_consistency(lm, P(), first_token, {.confidence = 1.5}); },
                                        "confidence");
  expect_throw<itscale::invalid_option>("ensemble weight < 0",
                                        [&] {
                                          (void)itscale::make_ensemble({.weights = {1, -1}}, itscale::hash_lm(V, 1), itscale::hash_lm(V, 2));
                                        },
                                        "weights");
  expect_throw<itscale::invalid_option>(
      "contrastive alpha NaN",
      [&] { (void)itscale::make_contrastive(itscale::hash_lm(V, 1), itscale::hash_lm(V, 2), {.alpha = nan_d}); },
      "contrastive_options.alpha = nan must be in [0, 1e6]");
  expect_throw<itscale::invalid_option>("cfg gamma inf",
                                        [&] { (void)itscale::make_cfg(itscale::hash_lm(V, 1), {.gamma = inf_d, .unconditional_prompt = {1}}); },
                                        "cfg_options.gamma = inf must be in [0, 1e6]");
  expect_throw<itscale::invalid_option>("verifier range NaN",
                                        [&] { (void)itscale::make_verifier("v", {nan_d, 1}, [](auto, auto, bool) { return 0.0; }); },
                                        "score range must be finite with lo <= hi");
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("bad input: a verifier returning NaN, out-of-range scores or the wrong batch size") {
  struct bad_verifier {
    int mode;  // 0: NaN, 1: one score too few, 2: above the declared range
    std::vector<double> verify(std::span<const itscale::verify_item> b) {
      std::vector<double> s(b.size(), 0.5);
      if (mode == 0) s[0] = nan_d;
      if (mode == 1) s.pop_back();
      if (mode == 2) s[0] = 2;
      return s;
    }
    [[nodiscard]] itscale::score_range range() const noexcept { return {0, 1}; }
    [[nodiscard]] std::string_view name() const noexcept { return "bad"; }
  };
  const char* needles[] = {"verifier 'bad' returned NaN for item 0", "verifier 'bad' returned 0 scores for a batch of 1",
                           "outside its declared range [0, 1]"};
  for (int mode = 0; mode < 3; ++mode) {
    CAPTURE(mode);
    bad_verifier v{mode};
    isrc s(itscale::hash_lm(V, 1));
    const auto cands = candidates();
    const std::string needle = needles[mode];
    // best_of_n scores one batch of 3: "returned 2 scores for a batch of 3".
    expect_throw<itscale::backend_error>("best_of_n", [&] { (void)itscale::best_of_n(v, P(), cands); },
                                         mode == 1 ? "returned 2 scores for a batch of 3" : needle);
    expect_throw<itscale::backend_error>("weighted_best_of_n",
                                         [&] { (void)itscale::weighted_best_of_n(v, P(), cands, first_token); },
                                         mode == 1 ? "returned 2 scores for a batch of 3" : needle);
    expect_throw<itscale::backend_error>("self_consistency, verifier weight",
                                         [&] {
                                           (void)itscale::self_consistency(s, P(), first_token, v,
                                                                           {.samples = 3, .sampling = sampled(), .weight = itscale::vote_weight::verifier});
                                         },
                                         "verifier 'bad' returned");
    itscale::sampling_proposer p(s, step_opts());
    expect_throw<itscale::backend_error>(
        "step_beam_search", [&] { (void)itscale::step_beam_search(p, v, P(), {.num_candidates = 2, .expansions = 1}); },
        "verifier 'bad' returned");
    expect_throw<itscale::backend_error>("dvts", [&] { (void)itscale::dvts(p, v, P(), {.num_candidates = 2, .expansions = 1}); },
                                         "verifier 'bad' returned");
    expect_throw<itscale::backend_error>("rebase", [&] { (void)itscale::rebase(p, v, P(), {.width = 2}); }, "verifier 'bad' returned");
    expect_throw<itscale::backend_error>("best_first_search",
                                         [&] { (void)itscale::best_first_search(p, v, P(), {.expansions = 1}); },
                                         "verifier 'bad' returned");
    expect_throw<itscale::backend_error>("mcts_search", [&] { (void)itscale::mcts_search(p, v, P(), {.simulations = 4}); },
                                         "verifier 'bad' returned");
    CHECK(s.live == 0);
  }
}

namespace {

// A proposer over a real source that proposes nothing: its root and states are the sampling
// proposer's (live handles of `isrc`, so a leak shows in the source's count).
template <class Inner>
struct silent_proposer {
  using state = typename Inner::state;
  Inner* in;
  state root(std::span<const token_id> p) { return in->root(p); }
  std::vector<std::vector<itscale::step_candidate<state>>> propose(std::span<const itscale::propose_item<state>> b, std::size_t) {
    return std::vector<std::vector<itscale::step_candidate<state>>>(b.size());
  }
  [[nodiscard]] std::span<const token_id> tokens_of(const state& s) const { return std::as_const(*in).tokens_of(s); }
  [[nodiscard]] bool is_live(const state& s) const { return std::as_const(*in).is_live(s); }
  void drop(state& s) noexcept { in->drop(s); }
  void restore(state& s) { in->restore(s); }
  itscale::compute_stats& stats() { return in->stats(); }
};

}  // namespace

TEST_CASE("bad input: a proposer returning no step") {
  isrc s(itscale::hash_lm(V, 1));
  itscale::sampling_proposer inner(s, step_opts());
  silent_proposer<decltype(inner)> p{&inner};
  static_assert(itscale::StepProposer<decltype(p)>);
  auto v = hash_verifier();
  const std::string needle = "the proposer returned no step for node";
  expect_throw<itscale::search_error>("step_beam_search",
                                      [&] { (void)itscale::step_beam_search(p, v, P(), {.num_candidates = 2, .expansions = 1}); },
                                      needle);
  expect_throw<itscale::search_error>("dvts", [&] { (void)itscale::dvts(p, v, P(), {.num_candidates = 2, .expansions = 1}); }, needle);
  expect_throw<itscale::search_error>("rebase", [&] { (void)itscale::rebase(p, v, P(), {.width = 2}); }, needle);
  expect_throw<itscale::search_error>("best_first_search", [&] { (void)itscale::best_first_search(p, v, P(), {.expansions = 1}); },
                                      needle);
  expect_throw<itscale::search_error>("mcts_search", [&] { (void)itscale::mcts_search(p, v, P(), {.simulations = 2}); },
                                      "no step for node");
  CHECK(s.live == 0);
}

TEST_CASE("bad input: a tokenizer that does not match the model") {
  // The real files: aidreams260K (vocabulary 512) and the arith tokenizer (275 tokens), and the
  // other way round (arith-1750, vocabulary 275, with aidreams' 512-token tokenizer).
  const std::filesystem::path models = std::filesystem::path(ITSCALE_DATA_DIR) / "models";
  const auto arith_tok = itscale::llama2c_tokenizer::load(models / "arith-tok.bin");
  const auto dream_tok = itscale::llama2c_tokenizer::load(models / "aidreams-tok512.bin");
  auto dreams = itscale::llama2c_model::load(models / "aidreams260K.bin");
  auto arith = itscale::llama2c_model::load(models / "arith-1750.bin");
  REQUIRE(arith_tok.vocab_size() == 275);
  expect_throw<itscale::invalid_input>("check_vocab_match, smaller tokenizer",
                                       [&] { itscale::check_vocab_match(arith_tok, dreams.vocab_size()); },
                                       "the tokenizer has 275 tokens but the model's vocabulary is 512");
  expect_throw<itscale::invalid_input>("check_vocab_match, larger tokenizer",
                                       [&] { itscale::check_vocab_match(dream_tok, arith.vocab_size()); },
                                       "the tokenizer has 512 tokens but the model's vocabulary is 275");
  // Unchecked, a mismatch still cannot pass silently. A larger tokenizer's ids reach past the
  // model's vocabulary: the prompt is rejected before the model runs...
  const auto ids = dream_tok.encode("I dreamed of a big tree", true);
  REQUIRE(*std::max_element(ids.begin(), ids.end()) >= 275);
  expect_throw<itscale::invalid_input>("generate, prompt from a larger tokenizer",
                                       [&] { (void)itscale::generate(arith, std::span<const token_id>(ids), sampled()); },
                                       "is outside the vocabulary [0, 275)");
  // ... and a smaller tokenizer cannot turn the model's ids past its own size into text.
  const tokens written{1, 300, 511};
  expect_throw<itscale::invalid_input>("decode, a model token past the tokenizer",
                                       [&] { (void)arith_tok.decode(std::span<const token_id>(written)); },
                                       "= 300 is outside the vocabulary [0, 275)");
  CHECK(arith.live_handles() == 0);
  CHECK(dreams.live_handles() == 0);
}
