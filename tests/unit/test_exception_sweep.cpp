// Exception safety of every algorithm (issue #15): a fault injected at EVERY call the algorithm
// makes — each source call (prefill, extend, extend_span, logits()), each verifier call, each
// caller callback (on_token, answer extractor, MBR utility) — must reach the caller unchanged and
// leave no handle live. Each sweep first runs once without a fault to count the calls C of each
// kind, then re-runs with the fault at every index 0..C-1 (and at C, where nothing may throw: the
// count is exact). The live count is read while the algorithm's proposer or combinator is still
// alive, so a handle that only a destructor would give back still counts as a leak.

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <itscale/search.hpp>

#include "instrumented_source.hpp"

namespace {

using itscale::token_id;
using tokens = std::vector<token_id>;
using isrc = test_support::instrumented_source<itscale::hash_lm, true>;  // with extend_span

constexpr std::size_t V = 24;
constexpr std::size_t never = std::numeric_limits<std::size_t>::max();

const std::vector<tokens>& prompts() {
  static const std::vector<tokens> p{{1, 2}, {3, 4, 5}};
  return p;
}

// The verifier and the callbacks count their calls here and throw at the chosen one.
struct probes {
  std::size_t verifier_calls = 0, callback_calls = 0;
  std::size_t verifier_throw = never, callback_throw = never;
  void verifier_tick() {
    if (verifier_calls++ == verifier_throw) throw std::runtime_error("flaky_verifier: injected failure");
  }
  void callback_tick() {
    if (callback_calls++ == callback_throw) throw std::runtime_error("callback: injected failure");
  }
};

// A hash verifier (scores in [0, 1], a function of the sequence) that can throw at a chosen call.
struct flaky_verifier {
  probes* p;
  std::vector<double> verify(std::span<const itscale::verify_item> batch) {
    p->verifier_tick();
    std::vector<double> out;
    for (const auto& it : batch) {
      std::uint64_t h = it.complete ? 7 : 3;
      for (token_id t : it.sequence) h = itscale::hash_lm::advance(h, t);
      out.push_back(static_cast<double>(h >> 11) * 0x1.0p-53);
    }
    return out;
  }
  [[nodiscard]] itscale::score_range range() const noexcept { return {0, 1}; }
  [[nodiscard]] std::string_view name() const noexcept { return "flaky"; }
};
static_assert(itscale::Verifier<flaky_verifier>);

// token_f1 whose every pair() is a caller callback that can throw.
struct flaky_utility {
  probes* p;
  itscale::token_f1 inner;
  void prepare(std::span<const std::span<const token_id>> c) { inner.prepare(c); }
  itscale::utility_pair pair(std::size_t i, std::size_t j) {
    p->callback_tick();
    return inner.pair(i, j);
  }
  [[nodiscard]] std::string_view name() const noexcept { return "flaky_f1"; }
};
static_assert(itscale::MbrUtility<flaky_utility>);

// What one run of an algorithm sees: its sources (srcs[0] is the one that faults) and the probes.
struct world {
  std::vector<std::unique_ptr<isrc>> srcs;
  probes p;
  explicit world(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) srcs.push_back(std::make_unique<isrc>(itscale::hash_lm(V, 11 + i)));
  }
  isrc& src(std::size_t i = 0) { return *srcs[i]; }
  std::ptrdiff_t live() const {
    std::ptrdiff_t n = 0;
    for (const auto& s : srcs) n += s->live;
    return n;
  }
  flaky_verifier verifier() { return {&p}; }
  auto extractor() {
    return [this](std::span<const token_id> t) -> std::optional<int> {
      p.callback_tick();
      if (t.empty()) return std::nullopt;
      return static_cast<int>(t[0] % 4);
    };
  }
  itscale::run_options streaming() {
    return {.on_token = [this](const itscale::token_event&) { p.callback_tick(); }};
  }
};

// Runs `f`; whether it returns or throws, `live()` must be 0 at that moment.
template <class F, class Live>
void checked(F&& f, Live&& live) {
  try {
    f();
  } catch (...) {
    CHECK(live() == 0);
    throw;
  }
  CHECK(live() == 0);
}

struct sweep_counts {
  std::size_t source = 0, verifier = 0, callback = 0;
};
sweep_counts totals;
std::size_t algorithms = 0;

// The sweep (see the file comment). `run(world&)` drives one algorithm.
template <class Run>
sweep_counts sweep(const std::string& name, std::size_t sources, Run run) {
  INFO(name);
  sweep_counts c;
  {
    world w(sources);
    run(w);
    REQUIRE(w.live() == 0);
    c = {w.src().ops, w.p.verifier_calls, w.p.callback_calls};
  }
  REQUIRE(c.source > 0);
  const auto trial = [&](int kind, std::size_t k, std::size_t count, const char* expected) {
    CAPTURE(kind);
    CAPTURE(k);
    world w(sources);
    if (kind == 0) w.src().throw_on_op = k;
    if (kind == 1) w.p.verifier_throw = k;
    if (kind == 2) w.p.callback_throw = k;
    std::string what;
    try {
      run(w);
    } catch (const std::exception& e) {
      what = e.what();
    }
    if (k < count)
      CHECK(what.find(expected) != std::string::npos);  // a combinator may add context, never replace it
    else
      CHECK(what.empty());
    CHECK(w.live() == 0);
  };
  for (std::size_t k = 0; k <= c.source; ++k) trial(0, k, c.source, "instrumented_source: injected backend failure");
  for (std::size_t k = 0; k <= c.verifier; ++k) trial(1, k, c.verifier, "flaky_verifier: injected failure");
  for (std::size_t k = 0; k <= c.callback; ++k) trial(2, k, c.callback, "callback: injected failure");
  MESSAGE(name << ": throw points: source " << c.source << ", verifier " << c.verifier << ", callback " << c.callback);
  totals.source += c.source;
  totals.verifier += c.verifier;
  totals.callback += c.callback;
  ++algorithms;
  return c;
}

itscale::sampling_options sampled(std::size_t n = 3) {
  return {.stop = {.max_new_tokens = 5, .eos_token_id = {0}}, .do_sample = true, .seed = 5, .num_return_sequences = n};
}

// Step-level searches: one proposer over the faulty source, checked while it is alive.
itscale::sampling_proposer_options step_opts() {
  return {.sampling = {.do_sample = true, .seed = 3, .temperature = 1.5f},
          .delimiters = {{3}},
          .eos_token_id = {0},
          .max_step_tokens = 4,
          .max_sequence_tokens = 16};
}

template <class Search>
auto step_run(Search search) {
  return [search](world& w) {
    auto v = w.verifier();
    itscale::sampling_proposer prop(w.src(), step_opts());
    checked([&] { (void)search(prop, v); }, [&] { return w.live(); });
  };
}

}  // namespace

TEST_CASE("exception sweep: token-level decoders and the beam family") {
  sweep("greedy", 1, [](world& w) {
    (void)itscale::generate(w.src(), prompts(), {.stop = {.max_new_tokens = 5}}, w.streaming());
  });
  sweep("sampling", 1, [](world& w) { (void)itscale::generate(w.src(), prompts(), sampled(), w.streaming()); });
  // keep_handles: the finished sequences' handles are the caller's on success, nobody's on a throw.
  sweep("sampling, keep_handles", 1, [](world& w) {
    auto run = w.streaming();
    run.keep_handles = true;
    auto r = itscale::generate(w.src(), prompts(), sampled(), run);
    CHECK(w.live() == static_cast<std::ptrdiff_t>(r.live.size()));
    r.live.clear();  // owned_handle: gives them back
  });
  sweep("beam", 1, [](world& w) {
    (void)itscale::beam_search(w.src(), prompts(),
                               {.num_beams = 3, .num_return_sequences = 2, .stop = {.max_new_tokens = 5, .eos_token_id = {0}}});
  });
  sweep("diverse beam", 1, [](world& w) {
    (void)itscale::diverse_beam_search(
        w.src(), prompts(),
        {.beam = {.num_beams = 4, .stop = {.max_new_tokens = 5, .eos_token_id = {0}}}, .num_beam_groups = 2, .diversity_penalty = 0.5});
  });
  sweep("stochastic beam", 1, [](world& w) {
    (void)itscale::stochastic_beam_search(w.src(), prompts(),
                                          {.num_samples = 3, .stop = {.max_new_tokens = 5, .eos_token_id = {0}}, .seed = 2});
  });
}

TEST_CASE("exception sweep: step-level searches and MCTS") {
  const tokens prompt{1, 2};
  sweep("step beam", 1, step_run([&](auto& p, auto& v) {
          return itscale::step_beam_search(p, v, prompt, {.num_candidates = 6, .expansions = 3});
        }));
  sweep("DVTS", 1, step_run([&](auto& p, auto& v) {
          return itscale::dvts(p, v, prompt, {.num_candidates = 6, .expansions = 3});
        }));
  sweep("REBASE", 1, step_run([&](auto& p, auto& v) { return itscale::rebase(p, v, prompt, {.width = 6}); }));
  sweep("best-first", 1, step_run([&](auto& p, auto& v) {
          return itscale::best_first_search(p, v, prompt, {.expansions = 3}, {.max_live_handles = 8});
        }));
  // Token-level MCTS: the top-k proposer expands a node into its k best next tokens.
  sweep("MCTS (top_k_proposer, token level)", 1, [&](world& w) {
    auto v = w.verifier();
    itscale::top_k_proposer prop(w.src(), {.eos_token_id = {0}, .max_sequence_tokens = 7});
    checked([&] { (void)itscale::mcts_search(prop, v, prompt, {.simulations = 10, .leaves_per_round = 2, .samples_per_expansion = 3,
                                                                .max_live_handles = 5}); },
            [&] { return w.live(); });
  });
  // A handle budget below the tree's size: cold nodes give their handles back and are re-prefilled.
  sweep("MCTS", 1, step_run([&](auto& p, auto& v) {
          return itscale::mcts_search(p, v, prompt,
                                      {.simulations = 16, .leaves_per_round = 2, .samples_per_expansion = 2,
                                       .widening = {.c = 1, .alpha = 0.5}, .evaluation = itscale::mcts_evaluation::mixed,
                                       .max_rollout_steps = 2, .max_live_handles = 4});
        }));
}

TEST_CASE("exception sweep: voting and reranking") {
  const auto reqs = [] {
    std::vector<itscale::request> r;
    for (std::size_t i = 0; i < prompts().size(); ++i) r.push_back({prompts()[i], static_cast<std::uint32_t>(i)});
    return r;
  };
  sweep("self-consistency", 1, [&](world& w) {
    const auto rq = reqs();
    (void)itscale::self_consistency(w.src(), std::span<const itscale::request>(rq), w.extractor(),
                                    {.samples = 4, .sampling = sampled(1), .run = w.streaming()});
  });
  sweep("self-consistency, verifier-weighted vote", 1, [&](world& w) {
    const auto rq = reqs();
    auto v = w.verifier();
    (void)itscale::self_consistency(w.src(), std::span<const itscale::request>(rq), w.extractor(), v,
                                    {.samples = 4, .sampling = sampled(1), .weight = itscale::vote_weight::verifier,
                                     .run = w.streaming()});
  });
  sweep("adaptive consistency", 1, [&](world& w) {
    const auto rq = reqs();
    (void)itscale::adaptive_consistency(w.src(), std::span<const itscale::request>(rq), w.extractor(),
                                        {.max_samples = 8, .round_size = 2, .sampling = sampled(1), .run = w.streaming()});
  });
  // Best-of-N, weighted best-of-N and MBR rank samples the caller drew: the source's part is the
  // sampling, the verifier's and the utility's the ranking.
  sweep("best-of-N (sampling + verifier)", 1, [&](world& w) {
    auto v = w.verifier();
    const auto c = itscale::generate(w.src(), std::span<const token_id>(prompts()[0]), sampled(4));
    (void)itscale::best_of_n(v, prompts()[0], c.sequences);
    (void)itscale::weighted_best_of_n(v, prompts()[0], c.sequences, w.extractor());
  });
  sweep("MBR (sampling + utility)", 1, [&](world& w) {
    const auto c = itscale::generate(w.src(), std::span<const token_id>(prompts()[0]), sampled(4));
    flaky_utility u{&w.p, {}};
    (void)itscale::mbr(std::span<const itscale::generation>(c.sequences), u);
  });
  for (const bool use_span : {true, false}) {
    sweep(use_span ? "rescoring (extend_span)" : "rescoring (batched extends)", 1, [&](world& w) {
      const std::vector<tokens> cands{{4, 5, 6}, {4, 5}, {7}, {}, {8, 9, 10, 11}};
      std::vector<std::span<const token_id>> sp(cands.begin(), cands.end());
      (void)itscale::rescore(w.src(), prompts()[1], std::span<const std::span<const token_id>>(sp), {.use_extend_span = use_span});
    });
  }
}

namespace {

// Combinators: the faulty source is a (borrowed) member; the combinator and every member must be
// empty when the algorithm returns or throws. Each is run under greedy, sampling, beam and
// rescoring (extend_span through the combinator).
template <class Make>
auto under_combinator(Make make) {
  return [make](world& w) {
    auto c = make(w);
    const auto live = [&] { return static_cast<std::ptrdiff_t>(c.live_handles()) + w.live(); };
    const std::vector<tokens> cands{{4, 5, 6}, {7}};
    std::vector<std::span<const token_id>> sp(cands.begin(), cands.end());
    checked(
        [&] {
          (void)itscale::generate(c, prompts(), {.stop = {.max_new_tokens = 4}}, w.streaming());
          (void)itscale::generate(c, prompts(), sampled(2));
          (void)itscale::beam_search(c, prompts(), {.num_beams = 2, .stop = {.max_new_tokens = 3}});
          (void)itscale::rescore(c, prompts()[1], std::span<const std::span<const token_id>>(sp));
        },
        live);
  };
}

}  // namespace

TEST_CASE("exception sweep: combinators with a faulty member") {
  sweep("ensemble (faulty last member)", 3, under_combinator([](world& w) {
          return itscale::make_ensemble(w.src(1), w.src(2), w.src(0));
        }));
  sweep("ensemble mixture (faulty first member)", 2, under_combinator([](world& w) {
          return itscale::make_ensemble({.mode = itscale::ensemble_mode::mixture}, w.src(0), w.src(1));
        }));
  sweep("contrastive (faulty expert)", 2, under_combinator([](world& w) {
          return itscale::make_contrastive(w.src(0), w.src(1));
        }));
  sweep("contrastive (faulty amateur)", 2, under_combinator([](world& w) {
          return itscale::make_contrastive(w.src(1), w.src(0));
        }));
  sweep("CFG", 1, under_combinator([](world& w) {
          return itscale::make_cfg(w.src(0), {.gamma = 1.5, .unconditional_prompt = {6}});
        }));
  MESSAGE("exception sweep total: " << algorithms << " algorithm configurations, throw points: source " << totals.source
                                    << ", verifier " << totals.verifier << ", callback " << totals.callback);
}
