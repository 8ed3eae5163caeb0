// Benchmarks of MCTS over steps (tree/mcts.hpp):
//
//   tree_ops/saturated/K:K/depth:D   simulations on a fully expanded tree (K children per node,
//                                    terminal at depth D, values known): selection + backup only,
//                                    no proposer or verifier call; counters sims_per_s and
//                                    node_ops_per_s (a selection step or a backup of one node)
//   tree_ops/growing/B:B             fresh searches of 4096 simulations with a trivial proposer
//                                    (4 one-token steps per node, no model) and a trivial
//                                    verifier: the search's own cost per simulation, expansions
//                                    and verifier calls included; counter sims_per_s
//   arith_batched/T10:T/B:B          MCTS (128 simulations, widening c = 2, alpha = 0.5, 4 samples
//                                    per expansion at temperature T/10) on 8 chain-arithmetic
//                                    problems with arith-1750.bin and the calculator verifier, B
//                                    leaves per round: counters per problem extend_calls,
//                                    generated_tokens, rounds, source_s, and solved (of 8). At
//                                    T = 1.0 the model's trees are nearly chains (little for B to
//                                    batch); T = 2.0 gives bushy trees
//   arith_handles/limit:L            the same at T = 1.5, B = 8, with max_live_handles = L (0: unbounded):
//                                    peak_live_handles (the proposer's source, samples in flight
//                                    included), peak_tree_handles (states the tree held), kv_bytes (KV-cache
//                                    memory held at the end: its high-water mark), reprefills,
//                                    prefill_tokens, solved, and same_as_unbounded (1 if every
//                                    chosen sequence equals the unbounded run's)
//
// tree_ops use a trivial proposer and verifier: the figures are the search's own overhead, which
// a real model's work dwarfs. The arith benchmarks read ITSCALE_DATA_DIR/models and skip with an
// error message without them.

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <itscale/backends/llama2c_model.hpp>
#include <itscale/backends/llama2c_tokenizer.hpp>
#include <itscale/steps/sampling_proposer.hpp>
#include <itscale/steps/verifier.hpp>
#include <itscale/tree/mcts.hpp>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../examples/arith/arith_task.hpp"

namespace {

using itscale::token_id;

// A proposer without a model: every node has `width` one-token steps of equal log-prob (tokens
// 1..width), terminal at `depth`. States are a depth and a "live" flag.
struct tiny_state {
  std::uint32_t depth = 0;
  bool live = false;
  tiny_state() = default;
  tiny_state(std::uint32_t d, bool l) : depth(d), live(l) {}
  tiny_state(tiny_state&& o) noexcept : depth(o.depth), live(std::exchange(o.live, false)) {}
  tiny_state& operator=(tiny_state&& o) noexcept {
    depth = o.depth;
    live = std::exchange(o.live, false);
    return *this;
  }
};

class tiny_proposer {
 public:
  using state = tiny_state;
  tiny_proposer(int width, std::uint32_t depth) : width_(width), depth_(depth) {}
  state root(std::span<const token_id>) { return {0, true}; }
  std::vector<std::vector<itscale::step_candidate<state>>> propose(std::span<const itscale::propose_item<state>> batch,
                                                                   std::size_t) {
    std::vector<std::vector<itscale::step_candidate<state>>> out(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const std::uint32_t d = batch[i].node->depth + 1;
      out[i].reserve(static_cast<std::size_t>(width_));
      for (int k = 1; k <= width_; ++k) {
        itscale::step_candidate<state> c;
        c.tokens = {k};
        c.logprob = c.model_logprob = -1.386;
        c.terminal = d >= depth_;
        c.state = state(d, !c.terminal);
        out[i].push_back(std::move(c));
      }
      stats_.extend_rows += static_cast<std::uint64_t>(width_);
    }
    ++stats_.extend_calls;
    return out;
  }
  [[nodiscard]] std::span<const token_id> tokens_of(const state&) const noexcept { return {}; }
  [[nodiscard]] bool is_live(const state& s) const noexcept { return s.live; }
  void drop(state& s) noexcept { s.live = false; }
  void restore(state& s) { s.live = true; }
  itscale::compute_stats& stats() noexcept { return stats_; }

 private:
  int width_;
  std::uint32_t depth_;
  itscale::compute_stats stats_;
};
static_assert(itscale::StepProposer<tiny_proposer>);

// Scores a sequence by a hash of its last tokens: cheap and varied.
auto tiny_verifier() {
  return itscale::make_verifier("tiny", {0, 1}, [](std::span<const token_id>, std::span<const token_id> seq, bool) {
    std::uint64_t h = 0x9E3779B97F4A7C15ull;
    for (token_id t : seq) h = (h ^ static_cast<std::uint64_t>(t)) * 0xBF58476D1CE4E5B9ull;
    return static_cast<double>(h >> 40) / static_cast<double>(1ull << 24);
  });
}

void tree_ops_saturated(benchmark::State& st) {
  const int width = static_cast<int>(st.range(0));
  const auto depth = static_cast<std::uint32_t>(st.range(1));
  tiny_proposer p(width, depth);
  auto v = tiny_verifier();
  const std::vector<token_id> prompt{1};
  std::size_t leaves = 1;
  for (std::uint32_t d = 0; d < depth; ++d) leaves *= static_cast<std::size_t>(width);
  // UCT tries every child before any twice: 3 passes over the leaves expand and score everything.
  itscale::mcts m(p, v, prompt, {.simulations = 3 * leaves, .selection = itscale::mcts_selection::uct});
  m.search();
  const std::size_t per_iter = 10000;
  m.options().simulations = per_iter;
  const auto calls = p.stats().extend_calls;
  std::uint64_t sims = 0;
  for (auto _ : st) {
    const auto r = m.search();
    sims += r.simulations;
    benchmark::DoNotOptimize(r.simulations);
  }
  if (p.stats().extend_calls != calls) st.SkipWithError("the tree was not saturated");
  // Per simulation: `depth` selection steps, `depth + 1` backups (the root included).
  st.counters["sims_per_s"] = benchmark::Counter(static_cast<double>(sims), benchmark::Counter::kIsRate);
  st.counters["node_ops_per_s"] =
      benchmark::Counter(static_cast<double>(sims * (2 * depth + 1)), benchmark::Counter::kIsRate);
}
BENCHMARK(tree_ops_saturated)->Args({4, 6})->Args({16, 3})->Args({2, 12})->Unit(benchmark::kMillisecond);

void tree_ops_growing(benchmark::State& st) {
  const auto B = static_cast<std::size_t>(st.range(0));
  auto v = tiny_verifier();
  const std::vector<token_id> prompt{1};
  std::uint64_t sims = 0, nodes = 0;
  for (auto _ : st) {
    tiny_proposer p(4, 1000);
    const auto r = itscale::mcts_search(p, v, prompt, {.simulations = 4096, .leaves_per_round = B});
    sims += r.simulations;
    nodes += r.nodes;
  }
  st.counters["sims_per_s"] = benchmark::Counter(static_cast<double>(sims), benchmark::Counter::kIsRate);
  st.counters["nodes"] = benchmark::Counter(static_cast<double>(nodes), benchmark::Counter::kAvgIterations);
}
BENCHMARK(tree_ops_growing)->Arg(1)->Arg(8)->Arg(32)->Unit(benchmark::kMillisecond);

// --- chain arithmetic on arith-1750.bin ---------------------------------------------------------

namespace fs = std::filesystem;

struct arith_setup {
  itscale::llama2c_tokenizer tok;
  std::shared_ptr<const itscale::llama2c_weights> weights;
  std::vector<arith::problem> problems;
};

const arith_setup* arith_data(benchmark::State& st) {
  static std::unique_ptr<arith_setup> cache;
  if (!cache) {
    const fs::path dir = fs::path(ITSCALE_DATA_DIR) / "models";
    if (!fs::exists(dir / "arith-1750.bin") || !fs::exists(dir / "arith-tok.bin")) {
      st.SkipWithError(("skipped: " + (dir / "arith-1750.bin").string() + " not found").c_str());
      return nullptr;
    }
    cache = std::make_unique<arith_setup>(arith_setup{
        itscale::llama2c_tokenizer::load(dir / "arith-tok.bin"),
        std::make_shared<const itscale::llama2c_weights>(itscale::load_llama2c_checkpoint(dir / "arith-1750.bin")),
        arith::make_problems(2024, 8, 2, 6)});
  }
  return cache.get();
}

struct arith_run {
  std::vector<std::vector<token_id>> chosen;
  itscale::compute_stats compute;
  std::uint64_t rounds = 0, solved = 0, peak_tree = 0;
  std::size_t kv_bytes = 0;
};

// One MCTS per problem, each on a fresh model (so its KV-cache high-water mark is the search's).
arith_run run_arith(const arith_setup& a, std::size_t B, std::size_t limit, float temperature) {
  const arith::calculator_verifier calc(a.tok);
  const token_id semi = a.tok.lookup(";");
  arith_run out;
  for (std::size_t i = 0; i < a.problems.size(); ++i) {
    itscale::llama2c_model model(a.weights);
    const auto prompt = arith::encode_prompt(a.tok, a.problems[i].prompt());
    itscale::sampling_proposer prop(model, {.sampling = {.do_sample = true, .seed = 7 + i, .temperature = temperature},
                                            .delimiters = {{semi}},
                                            .eos_token_id = {2},
                                            .max_step_tokens = 20,
                                            .max_sequence_tokens = 128});
    const auto r = itscale::mcts_search(prop, calc, prompt,
                                        {.simulations = 128,
                                         .leaves_per_round = B,
                                         .samples_per_expansion = 4,
                                         .widening = {.c = 2, .alpha = 0.5},
                                         .max_live_handles = limit});
    out.chosen.push_back(r.sequences.empty() ? std::vector<token_id>{} : r.sequences[0].tokens);
    out.solved +=
        !r.sequences.empty() && arith::score_text(a.problems[i], calc.text(r.sequences[0].tokens), true) == 1.0;
    out.compute += r.compute;
    out.rounds += r.rounds;
    out.peak_tree = std::max(out.peak_tree, r.peak_tree_handles);
    out.kv_bytes = std::max(out.kv_bytes, model.memory().bytes_allocated);
  }
  return out;
}

void arith_batched(benchmark::State& st) {
  const auto* a = arith_data(st);
  if (a == nullptr) return;
  const float temperature = static_cast<float>(st.range(0)) / 10.0f;
  const auto B = static_cast<std::size_t>(st.range(1));
  arith_run last;
  for (auto _ : st) last = run_arith(*a, B, 0, temperature);
  const double n = static_cast<double>(a->problems.size());
  st.counters["extend_calls"] = static_cast<double>(last.compute.extend_calls) / n;
  st.counters["generated_tokens"] = static_cast<double>(last.compute.generated_tokens()) / n;
  st.counters["rounds"] = static_cast<double>(last.rounds) / n;
  st.counters["solved"] = static_cast<double>(last.solved);
  st.counters["source_s"] = last.compute.source_seconds / n;
}
BENCHMARK(arith_batched)
    ->ArgNames({"T10", "B"})
    ->ArgsProduct({{10, 20}, {1, 8, 32}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void arith_handles(benchmark::State& st) {
  const auto* a = arith_data(st);
  if (a == nullptr) return;
  const auto limit = static_cast<std::size_t>(st.range(0));
  static const arith_run unbounded = run_arith(*a, 8, 0, 1.5f);
  arith_run last;
  for (auto _ : st) last = run_arith(*a, 8, limit, 1.5f);
  const double n = static_cast<double>(a->problems.size());
  st.counters["peak_live_handles"] = static_cast<double>(last.compute.peak_live_handles);
  st.counters["peak_tree_handles"] = static_cast<double>(last.peak_tree);
  st.counters["kv_bytes"] = static_cast<double>(last.kv_bytes);
  st.counters["reprefills"] = static_cast<double>(last.compute.reprefills) / n;
  st.counters["prefill_tokens"] = static_cast<double>(last.compute.prefill_tokens) / n;
  st.counters["solved"] = static_cast<double>(last.solved);
  st.counters["same_as_unbounded"] = last.chosen == unbounded.chosen ? 1 : 0;
}
BENCHMARK(arith_handles)->ArgName("limit")->Arg(0)->Arg(32)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
