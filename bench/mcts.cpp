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
//
// Proposer and verifier are trivial: the figures are the search's overhead, which a real model's
// work dwarfs.

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include <itscale/steps/verifier.hpp>
#include <itscale/tree/mcts.hpp>

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

}  // namespace

BENCHMARK_MAIN();
