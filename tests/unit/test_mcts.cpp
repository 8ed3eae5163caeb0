// MCTS over steps on a synthetic proposer (tests/unit/toy_proposer.hpp): selection follows the
// PUCT / UCT formulas, a bandit concentrates its visits on the best arm, widening follows
// ceil(c N^alpha), virtual loss spreads a round's leaves, tree reuse keeps statistics, the trap
// problem, root noise, the final choice, exports.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <itscale/tree/mcts.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "mcts_fixtures.hpp"

using namespace mcts_fixtures;

TEST_CASE("mcts selects by the PUCT formula: each simulation goes to the hand-computed argmax") {
  // Bandit: 4 terminal arms, priors 0.1 0.2 0.3 0.4 (from log-probs), rewards 0.1 0.4 0.8 0.6.
  const std::vector<double> reward{0.1, 0.4, 0.8, 0.6};
  toy_proposer p(bandit_rule({std::log(0.1), std::log(0.2), std::log(0.3), std::log(0.4)}));
  p.enumerate = true;
  auto v = verifier_of([&](span_t s, bool) { return reward[static_cast<std::size_t>(s[0] - 1)]; });
  itscale::mcts m(p, v, prompt, {.simulations = 1, .samples_per_expansion = 4, .c_init = 1.25, .c_base = 3});
  m.search();  // expands the root, visits one arm
  for (int sim = 1; sim < 40; ++sim) {
    const auto nodes = m.nodes();
    const auto& root = nodes[m.root()];
    REQUIRE(root.children.size() == 4);
    const double n_parent = static_cast<double>(root.visits);
    const double fpu = root.mean();  // unvisited arms: Q = Q(parent) (fpu_reduction 0)
    std::uint32_t want = 0;
    double best = -1;
    for (std::uint32_t c : root.children) {
      const auto& k = nodes[c];
      const double q = k.visits > 0 ? k.mean() : fpu;
      const double s = itscale::puct_score(q, k.prior, n_parent, static_cast<double>(k.visits), 1.25, 3);
      if (s > best) {
        best = s;
        want = c;
      }
    }
    std::vector<std::uint64_t> before;
    for (std::uint32_t c : root.children) before.push_back(nodes[c].visits);
    m.search();
    const auto after = m.nodes();
    for (std::size_t i = 0; i < 4; ++i) {
      const std::uint32_t c = after[m.root()].children[i];
      CHECK(after[c].visits == before[i] + (c == want ? 1 : 0));
    }
  }
  CHECK(p.live == 0);  // a terminal-only tree needs no handle once the root is expanded
}

TEST_CASE("mcts selects by the UCT formula, every arm once first") {
  const std::vector<double> reward{0.1, 0.4, 0.8, 0.6, 0.3};
  toy_proposer p(bandit_rule(std::vector<double>(5, std::log(0.2))));
  p.enumerate = true;
  auto v = verifier_of([&](span_t s, bool) { return reward[static_cast<std::size_t>(s[0] - 1)]; });
  itscale::mcts m(
      p, v, prompt,
      {.simulations = 1, .samples_per_expansion = 5, .selection = itscale::mcts_selection::uct, .c_uct = 0.7});
  for (int sim = 0; sim < 60; ++sim) {
    m.search();
    const auto nodes = m.nodes();
    const auto& root = nodes[m.root()];
    if (sim < 5) {  // the first five simulations try each arm once, in order
      for (std::size_t i = 0; i < 5; ++i) CHECK(nodes[root.children[i]].visits == (i <= std::size_t(sim) ? 1u : 0u));
      continue;
    }
  }
  // From here on, replay the rule by hand for 30 more simulations.
  for (int sim = 0; sim < 30; ++sim) {
    const auto nodes = m.nodes();
    const auto& root = nodes[m.root()];
    std::uint32_t want = 0;
    double best = -1;
    for (std::uint32_t c : root.children) {
      const double s = itscale::uct_score(nodes[c].mean(), double(root.visits), double(nodes[c].visits), 0.7);
      if (s > best) {
        best = s;
        want = c;
      }
    }
    const auto before = nodes[want].visits;
    m.search();
    CHECK(m.nodes()[want].visits == before + 1);
  }
}

TEST_CASE("bandit: visits concentrate on the best arm (PUCT, UCT; fixed and noisy rewards)") {
  const std::vector<double> reward{0.2, 0.5, 0.9, 0.4, 0.7};
  for (auto sel : {itscale::mcts_selection::puct, itscale::mcts_selection::uct}) {
    for (bool noisy : {false, true}) {
      CAPTURE(int(sel));
      CAPTURE(noisy);
      toy_proposer p(bandit_rule(std::vector<double>(5, std::log(0.2))));
      p.enumerate = true;
      // Noisy: each call draws Bernoulli(reward) from a counter, so an arm's value must be averaged.
      std::uint64_t calls = 0;
      auto v = verifier_of([&](span_t s, bool) {
        const double r = reward[static_cast<std::size_t>(s[0] - 1)];
        if (!noisy) return r;
        return itscale::counter_rng(9, 0).uniform(static_cast<std::uint32_t>(calls++)) < r ? 1.0 : 0.0;
      });
      const auto res = itscale::mcts_search(p, v, prompt,
                                            {.simulations = 500,
                                             .samples_per_expansion = 5,
                                             .selection = sel,
                                             .c_uct = 0.5,
                                             .cache_terminal_values = !noisy});
      CHECK(res.simulations == 500);
      REQUIRE(res.sequences.size() == 1);
      CHECK(res.sequences[0].tokens == tokens{3});  // the best arm is chosen (most visits)
      CHECK(res.sequences[0].stop == itscale::stop_reason::eos);
      // Visits of the best arm (reward 0.9; next 0.7), share of 500 simulations. Measured: PUCT
      // 0.886 / 0.876 (fixed / noisy rewards), UCT (c = 0.5) 0.92 / 0.93.
      itscale::mcts m(p, v, prompt,
                      {.simulations = 500,
                       .samples_per_expansion = 5,
                       .selection = sel,
                       .c_uct = 0.5,
                       .cache_terminal_values = !noisy});
      m.search();
      const auto nodes = m.nodes();
      std::uint64_t best = 0, total = 0;
      for (std::uint32_t c : nodes[m.root()].children) {
        total += nodes[c].visits;
        if (nodes[c].step == tokens{3}) best = nodes[c].visits;
      }
      CHECK(total == 500);
      MESSAGE("best-arm share " << double(best) / double(total));
      CHECK(double(best) / double(total) > 0.75);
    }
  }
}

TEST_CASE("progressive widening: a node visited N times has ceil(c (N - 1)^alpha) children") {
  // The last simulation through a node saw N - 1 completed visits (a non-root node's first visit
  // evaluated it; the root's first saw 0).
  for (auto [c, alpha] : {std::pair{1.0, 0.5}, std::pair{2.0, 0.3}, std::pair{0.5, 0.8}}) {
    toy_proposer p(uniform_tree(64, 3));
    p.enumerate = true;  // every sample a new step, so the only limit is the widening rule
    auto v = verifier_of([](span_t s, bool) { return double(s.back() % 7) / 6.0; });
    itscale::mcts m(p, v, prompt,
                    {.simulations = 300, .samples_per_expansion = 1, .widening = {.c = c, .alpha = alpha}});
    m.search();
    const auto nodes = m.nodes();
    std::size_t checked = 0;
    for (std::uint32_t x = 0; x < nodes.size(); ++x) {
      const auto& n = nodes[x];
      if (n.terminal || (n.visits < 2 && x != m.root())) continue;
      CHECK(n.children.size() == itscale::widening_limit(c, alpha, n.visits - 1));
      CHECK(n.pending.empty());  // one sample per expansion: nothing waits
      ++checked;
    }
    CHECK(checked > 10);
    CHECK(nodes[m.root()].children.size() == itscale::widening_limit(c, alpha, 299));
  }
}

TEST_CASE("progressive widening: surplus steps wait in proposal order and are admitted as N grows") {
  toy_proposer p(uniform_tree(16, 2));
  p.enumerate = true;
  auto v = verifier_of([](span_t s, bool) { return double(s.back()) / 16.0; });
  itscale::mcts m(p, v, prompt, {.simulations = 10, .samples_per_expansion = 8, .widening = {.c = 1, .alpha = 0.5}});
  m.search();
  const auto& root = m.nodes()[m.root()];
  // 10 simulations: the last saw N = 9, so 3 children; 8 samples came in one expansion, 5 wait.
  CHECK(root.children.size() == 3);
  CHECK(root.pending.size() == 5);
  CHECK(root.drawn == 8);
  for (std::size_t i = 0; i < 3; ++i) CHECK(m.nodes()[root.children[i]].step == tokens{token_id(i + 1)});
  CHECK(p.batches[0] == std::vector<std::uint32_t>{0});
}

TEST_CASE("virtual loss spreads the B leaves of a round over distinct paths") {
  for (double vl : {1.0, 0.0}) {
    toy_proposer p(uniform_tree(6, 3));
    p.enumerate = true;
    std::vector<std::size_t> batch_sizes;
    std::vector<std::size_t> distinct;
    auto v = itscale::make_verifier("count", {0, 1}, [](span_t, span_t, bool) { return 0.5; });
    struct recording {
      decltype(v)& inner;
      std::vector<std::size_t>& sizes;
      std::vector<std::size_t>& distinct;
      std::vector<double> verify(std::span<const itscale::verify_item> b) {
        sizes.push_back(b.size());
        std::set<tokens> d;
        for (const auto& it : b) d.insert(tokens(it.sequence.begin(), it.sequence.end()));
        distinct.push_back(d.size());
        return inner.verify(b);
      }
      itscale::score_range range() const { return inner.range(); }
      std::string_view name() const { return "recording"; }
    } rec{v, batch_sizes, distinct};
    const auto r = itscale::mcts_search(
        p, rec, prompt, {.simulations = 40, .leaves_per_round = 4, .samples_per_expansion = 6, .virtual_loss = vl});
    CHECK(r.simulations == 40);
    // Without virtual loss the four paths of a round collide: one simulation a round.
    CHECK(r.rounds == (vl > 0 ? 10u : 40u));
    CHECK((r.collisions == 0) == (vl > 0));  // (a round takes min(B, simulations left) paths)
    REQUIRE(batch_sizes.size() >= 5);
    for (std::size_t i = 0; i < 5; ++i) {
      CAPTURE(i);
      if (vl > 0) {
        CHECK(batch_sizes[i] == 4);  // four distinct leaves per round
        CHECK(distinct[i] == 4);
      } else {
        CHECK(batch_sizes[i] == 1);  // no virtual loss: the four paths of a round meet at one leaf
      }
    }
    // Each round's expansions went to the proposer in one batch.
    CHECK(p.batches.size() <= r.rounds);
  }
}

TEST_CASE("with widening, a round's expansions go to the proposer in one batch") {
  // Only the first path waits on a node being widened (later ones pass to its children), and a
  // path resumes at a new child: no chain of one-item batches inside a round.
  toy_proposer p(uniform_tree(50, 4));
  p.enumerate = true;  // every sample a new step: no expansion comes back empty-handed
  auto v = verifier_of([](span_t s, bool) { return double(s.back() % 10) / 9.0; });
  const auto r = itscale::mcts_search(
      p, v, prompt,
      {.simulations = 400, .leaves_per_round = 8, .samples_per_expansion = 1, .widening = {.c = 1.5, .alpha = 0.5}});
  std::size_t items = 0;
  for (const auto& b : p.batches) items += b.size();
  MESSAGE(r.rounds << " rounds, " << p.batches.size() << " proposer batches, " << items << " items");
  CHECK(p.batches.size() <= r.rounds);
  CHECK(double(items) / double(p.batches.size()) > 4);
}

TEST_CASE("tree reuse: commit keeps the chosen child's subtree and statistics, and releases the rest") {
  toy_proposer p(trap_rule());
  p.enumerate = true;
  auto v = verifier_of(trap_score);
  itscale::mcts m(p, v, prompt, {.simulations = 60, .samples_per_expansion = 2});
  const auto r1 = m.search();
  REQUIRE(r1.chosen != itscale::no_node);
  // The chosen child's subtree, keyed by stream key.
  std::map<std::uint32_t, std::tuple<std::uint64_t, double, tokens, std::size_t>> before;
  {
    const auto nodes = m.nodes();
    std::vector<std::uint32_t> stack{r1.chosen};
    while (!stack.empty()) {
      const auto x = stack.back();
      stack.pop_back();
      before[nodes[x].key] = {nodes[x].visits, nodes[x].value_sum, nodes[x].step, nodes[x].children.size()};
      for (auto c : nodes[x].children) stack.push_back(c);
    }
  }
  const tokens chosen_step = m.nodes()[r1.chosen].step;
  m.commit(r1.chosen);
  CHECK(tokens(m.committed().begin(), m.committed().end()) == chosen_step);
  const auto nodes = m.nodes();
  CHECK(nodes.size() == before.size());  // nothing else survives
  CHECK(nodes[m.root()].parent == itscale::no_node);
  for (std::uint32_t x = 0; x < nodes.size(); ++x) {
    REQUIRE(before.count(nodes[x].key) == 1);
    const auto& [visits, sum, step, nchildren] = before[nodes[x].key];
    CHECK(nodes[x].visits == visits);
    CHECK(nodes[x].value_sum == sum);
    CHECK(nodes[x].step == step);
    CHECK(nodes[x].children.size() == nchildren);
    for (auto c : nodes[x].children) CHECK(nodes[c].parent == x);
  }
  CHECK(std::ptrdiff_t(m.live_states()) == p.live);
  const std::uint64_t root_visits = nodes[m.root()].visits;
  const auto r2 = m.search();
  CHECK(m.nodes()[m.root()].visits == root_visits + 60);
  REQUIRE(!r2.sequences.empty());
  // Sequences start with the committed step.
  CHECK(std::equal(chosen_step.begin(), chosen_step.end(), r2.sequences[0].tokens.begin()));
  CHECK(r2.compute.prefill_calls == 0);  // the subtree's states were kept: nothing rebuilt
  // Committing to a non-child is refused.
  CHECK(what_of([&] { m.commit(m.root()); }).find("not a child of the root") != std::string::npos);
}

TEST_CASE("the trap: greedy ends at reward 0; MCTS finds the reward-1 leaf within its stated budget") {
  // Greedy: follow the likeliest step at every node.
  {
    tokens seq;
    const auto rule = trap_rule();
    for (;;) {
      tokens t = prompt;
      t.insert(t.end(), seq.begin(), seq.end());
      const auto steps = rule(t);
      if (steps.empty()) break;
      const auto best =
          std::max_element(steps.begin(), steps.end(), [](auto& a, auto& b) { return a.logprob < b.logprob; });
      seq.push_back(best->tokens[0]);
      if (best->terminal) break;
    }
    CHECK(seq == tokens{1, 3, 5});
    CHECK(trap_score(seq, true) == 0.0);
  }
  // Budgets (simulations) stated per configuration. Measured (first budget at which the reward-1
  // leaf is in the tree / is the chosen sequence): PUCT B=1 56 / 94, PUCT B=4 56 / 94, UCT 15 / 16,
  // rollouts (greedy, so as deceived as the verifier) 109 / 196, mixed B=2 77 / 134, choice by
  // value 56 / 56. (Max backup never leaves A: its Q keeps A's best partial score, 0.6 > 0.3.)
  struct config {
    itscale::mcts_options o;
    std::size_t budget;
  };
  const std::vector<config> configs{
      {{.leaves_per_round = 1, .samples_per_expansion = 2}, 128},
      {{.leaves_per_round = 4, .samples_per_expansion = 2}, 128},
      {{.leaves_per_round = 1, .samples_per_expansion = 2, .selection = itscale::mcts_selection::uct}, 32},
      {{.leaves_per_round = 1, .samples_per_expansion = 2, .evaluation = itscale::mcts_evaluation::rollout}, 256},
      {{.leaves_per_round = 2, .samples_per_expansion = 2, .evaluation = itscale::mcts_evaluation::mixed}, 176},
      {{.leaves_per_round = 1, .samples_per_expansion = 2, .choice = itscale::mcts_choice::value}, 80},
  };
  for (std::size_t i = 0; i < configs.size(); ++i) {
    CAPTURE(i);
    toy_proposer p(trap_rule());
    p.enumerate = true;
    auto v = verifier_of(trap_score);
    auto o = configs[i].o;
    o.simulations = configs[i].budget;
    const auto r = itscale::mcts_search(p, v, prompt, o);
    REQUIRE(!r.sequences.empty());
    MESSAGE("config " << i << ": chosen " << join(r.sequences[0].tokens));
    CHECK(r.sequences[0].tokens == tokens{2, 8, 10});
    CHECK(r.sequences[0].score == doctest::Approx(1.0));
    CHECK(p.live == 0);
  }
}

TEST_CASE("root Dirichlet noise: priors on the simplex, reproducible, moved away from the proposer's") {
  toy_proposer p(uniform_tree(6, 2));
  p.enumerate = true;
  auto v = verifier_of([](span_t, bool) { return 0.5; });
  const auto priors = [&](double w, std::uint64_t seed) {
    itscale::mcts m(
        p, v, prompt,
        {.simulations = 3, .samples_per_expansion = 6, .dirichlet = {.weight = w, .alpha = 0.3}, .seed = seed});
    m.search();
    std::vector<double> out;
    for (auto c : m.nodes()[m.root()].children) out.push_back(m.nodes()[c].prior);
    // Below the root: no noise.
    for (auto c : m.nodes()[m.root()].children)
      for (auto g : m.nodes()[c].children) CHECK(m.nodes()[g].prior == m.nodes()[g].prior_raw);
    return out;
  };
  const auto plain = priors(0, 1), a = priors(0.25, 1), b = priors(0.25, 1), c = priors(0.25, 2);
  double sum = 0;
  for (double x : a) sum += x;
  CHECK(sum == doctest::Approx(1.0));
  CHECK(a == b);
  CHECK(a != c);
  for (double x : plain) CHECK(x == doctest::Approx(1.0 / 6));
  for (double x : a) CHECK(x >= 0.75 / 6 - 1e-12);  // (1 - w) P + w eta >= (1 - w) P
  CHECK(a != plain);
}

TEST_CASE("final choice: visits, value, sampled; max backup; several sequences") {
  const std::vector<double> reward{0.2, 0.9, 0.5};
  toy_proposer p(bandit_rule({std::log(0.7), std::log(0.1), std::log(0.2)}));
  p.enumerate = true;
  auto v = verifier_of([&](span_t s, bool) { return reward[static_cast<std::size_t>(s[0] - 1)]; });
  {
    // Few simulations with a strong prior: the likeliest arm has the most visits (measured: 7, 3, 2),
    // the best arm the best value.
    const itscale::mcts_options o{
        .simulations = 12, .samples_per_expansion = 3, .c_init = 3, .num_return_sequences = 3};
    const auto by_visits = itscale::mcts_search(p, v, prompt, o);
    auto ov = o;
    ov.choice = itscale::mcts_choice::value;
    const auto by_value = itscale::mcts_search(p, v, prompt, ov);
    CHECK(by_value.sequences[0].tokens == tokens{2});
    CHECK(by_value.sequences[0].score == doctest::Approx(0.9));
    REQUIRE(by_visits.sequences.size() == 3);
    CHECK(by_visits.sequences[0].tokens == tokens{1});
    for (std::size_t i = 0; i < 3; ++i) CHECK(by_visits.sequences[i].sample == i);
  }
  {
    const itscale::mcts_options o{.simulations = 30,
                                  .samples_per_expansion = 3,
                                  .choice = itscale::mcts_choice::sampled,
                                  .choice_temperature = 1,
                                  .seed = 5};
    const auto a = itscale::mcts_search(p, v, prompt, o);
    const auto b = itscale::mcts_search(p, v, prompt, o);
    CHECK(a.sequences[0].tokens == b.sequences[0].tokens);
    // Over seeds, the sampled choice follows the visit counts: the most visited arm most often.
    std::map<token_id, int> picks;
    for (std::uint64_t seed = 0; seed < 60; ++seed) {
      auto os = o;
      os.seed = seed;
      ++picks[itscale::mcts_search(p, v, prompt, os).sequences[0].tokens[0]];
    }
    CHECK(picks.size() >= 2);
    CHECK(picks[2] > picks[1]);
  }
  {
    // Max backup: a node's Q is the best value below it.
    toy_proposer q(uniform_tree(3, 2));
    q.enumerate = true;
    auto w = verifier_of([](span_t s, bool c) {
      return c ? (tokens(s.begin(), s.end()) == tokens{3, 1} ? 1.0 : 0.1) : 0.0;
    });
    itscale::mcts m(q, w, prompt, {.simulations = 40, .samples_per_expansion = 3, .backup = itscale::mcts_backup::max});
    const auto r = m.search();
    CHECK(r.sequences[0].score == 1.0);
    for (const auto& n : m.nodes())
      if (n.visits > 0 && !n.terminal) CHECK(n.value_max <= 1.0);
    CHECK(m.nodes()[m.root()].value_max == 1.0);
  }
}

TEST_CASE("exports: JSON parses and matches the tree; DOT names every node and edge") {
  toy_proposer p(trap_rule());
  p.enumerate = true;
  auto v = verifier_of(trap_score);
  itscale::mcts m(p, v, prompt, {.simulations = 25, .samples_per_expansion = 2});
  const auto r = m.search();
  const auto j = nlohmann::json::parse(
      m.to_json({.detokenize = [](span_t t) { return "\"s" + join(tokens(t.begin(), t.end())) + "\\\n"; }}));
  const auto nodes = m.nodes();
  REQUIRE(j["nodes"].size() == nodes.size());
  CHECK(j["root"] == m.root());
  for (const auto& jn : j["nodes"]) {
    const auto id = jn["id"].get<std::uint32_t>();
    const auto& n = nodes[id];
    CHECK(jn["visits"] == n.visits);
    CHECK(jn["children"].get<std::vector<std::uint32_t>>() == n.children);
    CHECK(jn["step"].get<tokens>() == n.step);
    CHECK(jn["text"].get<std::string>() == "\"s" + join(n.step) + "\\\n");
    if (n.visits > 0)
      CHECK(jn["mean"].get<double>() == n.mean());
    else
      CHECK(jn["mean"].is_null());
    if (id == m.root())
      CHECK(jn["parent"].is_null());
    else
      CHECK(jn["parent"] == n.parent);
  }
  const std::string dot = m.to_dot({.highlight = r.path});
  CHECK(dot.rfind("digraph mcts {", 0) == 0);
  for (std::uint32_t x = 0; x < nodes.size(); ++x) {
    CHECK(dot.find("  n" + std::to_string(x) + " [") != std::string::npos);
    for (auto c : nodes[x].children)
      CHECK(dot.find("n" + std::to_string(x) + " -> n" + std::to_string(c)) != std::string::npos);
  }
  CHECK(dot.find("penwidth") != std::string::npos);
  // min_visits prunes.
  const auto pruned = nlohmann::json::parse(m.to_json({.min_visits = 3}));
  for (const auto& jn : pruned["nodes"])
    if (jn["id"] != m.root()) CHECK(jn["visits"].get<std::uint64_t>() >= 3);
}
