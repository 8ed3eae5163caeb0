#pragma once
// A synthetic StepProposer for tree-search tests: the steps available after a token sequence are
// given by a rule (tokens of each step, its log-prob, whether it ends the sequence); n samples are
// drawn from softmax(log-probs) with counter-based uniforms keyed by (seed, item id, sample index)
// — the StepProposer contract — and identical steps are merged. A state's "handle" is a flag
// counted in `live`, so tests can check that a search gives every one back; it can throw on a
// chosen call, and record each call's batch.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <itscale/core/rng.hpp>
#include <itscale/steps/step_proposer.hpp>
#include <limits>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

namespace test_support {

using itscale::token_id;

struct toy_step {
  std::vector<token_id> tokens;
  double logprob = 0;
  bool terminal = false;
};

/// The state of a toy node: its tokens, and whether it holds a (simulated) live handle. Moving
/// transfers the handle; a moved-from state holds none.
struct toy_state {
  std::vector<token_id> tokens;
  bool live = false;

  toy_state() = default;
  toy_state(std::vector<token_id> t, bool l) : tokens(std::move(t)), live(l) {}
  toy_state(toy_state&& o) noexcept : tokens(std::move(o.tokens)), live(std::exchange(o.live, false)) {}
  toy_state& operator=(toy_state&& o) noexcept {
    tokens = std::move(o.tokens);
    live = std::exchange(o.live, false);
    return *this;
  }
  toy_state(const toy_state&) = delete;
  toy_state& operator=(const toy_state&) = delete;
};

class toy_proposer {
 public:
  using state = toy_state;
  using rule_fn = std::function<std::vector<toy_step>(std::span<const token_id>)>;

  toy_proposer(rule_fn rule, std::uint64_t seed = 1) : rule_(std::move(rule)), seed_(seed) {}

  toy_state root(std::span<const token_id> prompt) {
    maybe_throw();
    stats_.prefill_calls += 1;
    stats_.prefill_tokens += prompt.size();
    on_new(1);
    return toy_state({prompt.begin(), prompt.end()}, true);
  }

  std::vector<std::vector<itscale::step_candidate<toy_state>>> propose(
      std::span<const itscale::propose_item<toy_state>> batch, std::size_t n) {
    maybe_throw();
    ++stats_.extend_calls;
    live_at_call.push_back(live);
    for (std::size_t i = 0; i < batch.size(); ++i)  // the StepProposer contract: distinct ids in a batch
      for (std::size_t j = 0; j < i; ++j)
        if (batch[i].id == batch[j].id) throw std::logic_error("toy_proposer: two batch items share an id");
    batches.emplace_back();
    std::vector<std::vector<itscale::step_candidate<toy_state>>> out(batch.size());
    // Optionally process the items in reverse, to show that order inside a batch does not matter.
    for (std::size_t k = 0; k < batch.size(); ++k) {
      const std::size_t i = reverse_batches ? batch.size() - 1 - k : k;
      const auto& it = batch[i];
      if (!it.node->live) throw std::logic_error("toy_proposer: asked to expand a state that is not live");
      batches.back().push_back(it.id);
      const auto steps = rule_(it.node->tokens);
      if (steps.empty()) continue;
      double m = -INFINITY;
      for (const auto& s : steps) m = std::max(m, s.logprob);
      double z = 0;
      for (const auto& s : steps) z += std::exp(s.logprob - m);
      std::vector<std::size_t> count(steps.size(), 0);
      std::vector<std::size_t> order;
      const std::size_t draws = it.samples != 0 ? it.samples : n;  // the item's own count, if it sets one
      for (std::size_t j = 0; j < draws; ++j) {
        const itscale::counter_rng rng(seed_, (std::uint64_t{it.id} << 32) | (it.drawn + j));
        double u = rng.uniform(0) * z;
        std::size_t pick = steps.size() - 1;
        if (enumerate) {
          pick = (it.drawn + j) % steps.size();  // sample k of a node is its step k: never a duplicate early
        } else {
          for (std::size_t c = 0; c < steps.size(); ++c) {
            u -= std::exp(steps[c].logprob - m);
            if (u < 0) {
              pick = c;
              break;
            }
          }
        }
        if (count[pick]++ == 0) order.push_back(pick);
        stats_.extend_rows += steps[pick].tokens.size();
      }
      for (std::size_t c : order) {
        itscale::step_candidate<toy_state> cand;
        cand.tokens = steps[c].tokens;
        cand.logprob = steps[c].logprob;
        cand.model_logprob = steps[c].logprob;
        cand.count = count[c];
        cand.terminal = steps[c].terminal;
        cand.stop = steps[c].terminal ? itscale::stop_reason::eos : itscale::stop_reason::max_new_tokens;
        std::vector<token_id> t = it.node->tokens;
        t.insert(t.end(), steps[c].tokens.begin(), steps[c].tokens.end());
        cand.state = toy_state(std::move(t), !steps[c].terminal);
        if (!steps[c].terminal) on_new(1);
        out[i].push_back(std::move(cand));
      }
    }
    return out;
  }

  [[nodiscard]] std::span<const token_id> tokens_of(const toy_state& s) const { return s.tokens; }
  [[nodiscard]] bool is_live(const toy_state& s) const { return s.live; }
  void drop(toy_state& s) noexcept {
    if (s.live) {
      s.live = false;
      --live;
    }
  }
  void restore(toy_state& s) {
    maybe_throw();
    if (s.live) return;
    s.live = true;
    on_new(1);
    ++stats_.reprefills;
    ++stats_.prefill_calls;
    stats_.prefill_tokens += s.tokens.size();
    ++restores;
  }
  itscale::compute_stats& stats() { return stats_; }

  // knobs and counters
  std::size_t throw_on_call = std::numeric_limits<std::size_t>::max();  // 0-based root/propose/restore count
  bool reverse_batches = false;
  bool enumerate = false;  // sample k of a node is its k-th step (mod the number of steps) instead of a draw
  std::vector<std::ptrdiff_t> live_at_call;  // `live` when each propose call came in
  std::size_t calls = 0, restores = 0;
  std::ptrdiff_t live = 0, peak_live = 0;
  std::vector<std::vector<std::uint32_t>> batches;  // item ids of each propose call

 private:
  void maybe_throw() {
    if (calls++ == throw_on_call) throw std::runtime_error("toy_proposer: injected failure");
  }
  void on_new(std::ptrdiff_t k) {
    live += k;
    peak_live = std::max(peak_live, live);
    stats_.peak_live_handles = std::max<std::uint64_t>(stats_.peak_live_handles, static_cast<std::uint64_t>(peak_live));
  }

  rule_fn rule_;
  std::uint64_t seed_;
  itscale::compute_stats stats_;
};

static_assert(itscale::StepProposer<toy_proposer>);

}  // namespace test_support
