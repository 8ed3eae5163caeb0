// MCTS resources and contracts on a synthetic proposer: the handle budget (re-prefills, identical
// results), exceptions at every proposer and verifier call (nothing left live), a proposer with no
// step, determinism across B, budgets and cancellation, option validation.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <itscale/tree/mcts.hpp>
#include <map>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "mcts_fixtures.hpp"

using namespace mcts_fixtures;

TEST_CASE("handle budget: cold nodes give their states back and are rebuilt; results identical to unbounded") {
  for (auto eval : {itscale::mcts_evaluation::verifier, itscale::mcts_evaluation::mixed}) {
    for (std::size_t B : {1u, 3u}) {
      CAPTURE(int(eval));
      CAPTURE(B);
      const auto run = [&](std::size_t limit, toy_proposer& p) {
        auto v = verifier_of([](span_t s, bool c) { return (c ? 0.5 : 0.0) + double(s.back() % 5) / 10.0; });
        itscale::mcts m(p, v, prompt,
                        {.simulations = 120,
                         .leaves_per_round = B,
                         .samples_per_expansion = 3,
                         .widening = {.c = 1.5, .alpha = 0.5},
                         .evaluation = eval,
                         .max_rollout_steps = 3,
                         .max_live_handles = limit});
        const auto r = m.search();
        return std::pair{fingerprint(m, r), r};
      };
      toy_proposer free_p(uniform_tree(5, 5)), tight_p(uniform_tree(5, 5));
      const auto [f1, r1] = run(0, free_p);
      const std::size_t limit = B + 1;
      const auto [f2, r2] = run(limit, tight_p);
      CHECK(f1 == f2);
      CHECK(r1.restores == 0);
      CHECK(r2.restores > 0);
      CHECK(r2.compute.reprefills == r2.restores);
      CHECK(r2.compute.prefill_calls == 1 + r2.restores);  // the root's prefill, then re-prefills
      // Between proposer calls the tree held at most `limit` states; unbounded, many more.
      const auto most = *std::max_element(tight_p.live_at_call.begin(), tight_p.live_at_call.end());
      CHECK(most <= std::ptrdiff_t(limit));
      CHECK(*std::max_element(free_p.live_at_call.begin(), free_p.live_at_call.end()) > std::ptrdiff_t(limit) + 5);
      MESSAGE("B " << B << ": restores " << r2.restores << ", peak tree handles " << r1.peak_tree_handles << " -> "
                   << r2.peak_tree_handles);
      CHECK(free_p.live == 0);
      CHECK(tight_p.live == 0);
    }
  }
}

TEST_CASE("a proposer or verifier throwing at call k leaves no live state, for every k") {
  for (auto eval : {itscale::mcts_evaluation::verifier, itscale::mcts_evaluation::rollout}) {
    for (std::size_t limit : {0u, 2u}) {
      const itscale::mcts_options o{.simulations = 40,
                                    .leaves_per_round = 2,
                                    .samples_per_expansion = 3,
                                    .widening = {.c = 1, .alpha = 0.5},
                                    .evaluation = eval,
                                    .max_live_handles = limit};
      // A clean run counts the calls.
      std::size_t proposer_calls = 0, verifier_calls = 0;
      {
        toy_proposer p(uniform_tree(4, 4));
        auto v = verifier_of([](span_t s, bool) { return double(s.size() % 3) / 2.0; });
        const auto r = itscale::mcts_search(p, v, prompt, o);
        proposer_calls = p.calls;
        verifier_calls = r.compute.verifier_calls;
        CHECK(p.live == 0);
      }
      REQUIRE(proposer_calls > 10);
      for (std::size_t k = 0; k <= proposer_calls; ++k) {
        CAPTURE(k);
        toy_proposer p(uniform_tree(4, 4));
        p.throw_on_call = k;
        auto v = verifier_of([](span_t s, bool) { return double(s.size() % 3) / 2.0; });
        const std::string msg = what_of([&] { (void)itscale::mcts_search(p, v, prompt, o); });
        CHECK((k < proposer_calls) == (msg == "toy_proposer: injected failure"));
        CHECK(p.live == 0);
      }
      for (std::size_t k = 0; k <= verifier_calls; ++k) {
        CAPTURE(k);
        toy_proposer p(uniform_tree(4, 4));
        std::size_t calls = 0;
        auto v = verifier_of([&](span_t s, bool) {
          (void)s;
          return 0.5;
        });
        struct throwing {
          decltype(v)& inner;
          std::size_t& calls;
          std::size_t k;
          std::vector<double> verify(std::span<const itscale::verify_item> b) {
            if (calls++ == k) throw std::runtime_error("verifier: injected failure");
            return inner.verify(b);
          }
          itscale::score_range range() const { return {0, 1}; }
          std::string_view name() const { return "throwing"; }
        } tv{v, calls, k};
        const std::string msg = what_of([&] { (void)itscale::mcts_search(p, tv, prompt, o); });
        CHECK((k < verifier_calls) == (msg == "verifier: injected failure"));
        CHECK(p.live == 0);
      }
    }
  }
  // A kept search object is emptied by the exception, and says so.
  toy_proposer p(uniform_tree(4, 4));
  auto v = verifier_of([](span_t, bool) { return 0.5; });
  itscale::mcts m(p, v, prompt, {.simulations = 20});
  p.throw_on_call = p.calls + 2;
  CHECK(what_of([&] { m.search(); }) == "toy_proposer: injected failure");
  CHECK(p.live == 0);
  CHECK(what_of([&] { m.search(); }).find("call reset") != std::string::npos);
  m.reset(prompt);
  CHECK(m.search().simulations == 20);
}

TEST_CASE("a proposer returning no step for a non-terminal node is a search_error; nothing leaks") {
  // Nodes at depth 2 are not terminal, but the rule has no step for them.
  toy_proposer p([](span_t t) {
    std::vector<toy_step> s;
    if (t.size() < 3) s.push_back({{1}, 0.0, false});
    s.push_back({{2}, -1.0, false});
    if (t.size() >= 3) s.clear();
    return s;
  });
  auto v = verifier_of([](span_t, bool) { return 0.5; });
  bool thrown = false;
  try {
    (void)itscale::mcts_search(p, v, prompt, {.simulations = 50});
  } catch (const itscale::search_error& e) {
    thrown = true;
    CHECK(std::string(e.what()).find("no step for node") != std::string::npos);
  }
  CHECK(thrown);
  CHECK(p.live == 0);
  // The same in a rollout.
  toy_proposer q([](span_t t) {
    std::vector<toy_step> s;
    if (t.size() < 2) s.push_back({{1}, 0.0, false});
    return s;
  });
  CHECK_THROWS_AS(
      (void)itscale::mcts_search(q, v, prompt, {.simulations = 5, .evaluation = itscale::mcts_evaluation::rollout}),
      itscale::search_error);
  CHECK(q.live == 0);
}

TEST_CASE("determinism: same seed same tree; B = 1 and B = 4 agree on every node both trees hold") {
  // What is promised (mcts.hpp, "Determinism"): a node's step, log-probs, terminal flag, own value
  // and the order of its children depend on the seed and its path only; B changes which nodes are
  // visited and how often (so, with widening, how many children and samples a node got). Without
  // widening, a search that expands a finite tree completely builds the same nodes, sample counts
  // included, for every B; the order of the proposer's work inside a batch changes nothing.
  struct content {
    std::string step;                     // tokens, log-prob, terminal flag (and the sample count without widening)
    double value;                         // NaN if never evaluated
    std::vector<std::uint32_t> children;  // keys
    bool operator==(const content& o) const {
      return step == o.step && children == o.children &&
             (value == o.value || (std::isnan(value) && std::isnan(o.value)));
    }
  };
  const auto contents = [](const auto& m, bool with_counts) {
    std::map<std::uint32_t, content> out;
    const auto nodes = m.nodes();
    for (const auto& n : nodes) {
      content c{join(n.step) + "|" + std::to_string(n.logprob) + "|" + std::to_string(n.terminal) + "|" +
                    (with_counts ? std::to_string(n.count) : ""),
                n.value,
                {}};
      for (auto k : n.children) c.children.push_back(nodes[k].key);
      out[n.key] = c;
    }
    return out;
  };
  const auto rule = [](span_t t) {  // random-looking widths and log-probs, depth 3
    std::vector<toy_step> s;
    const std::size_t d = t.size() - 1;
    if (d >= 3) return s;
    const int w = 2 + int((t.back() * 7 + int(d)) % 3);
    for (int i = 1; i <= w; ++i) s.push_back({{i}, -0.3 * i, d + 1 == 3});
    return s;
  };
  const auto run = [&](std::size_t B, std::size_t sims, bool reverse, itscale::mcts_widening w = {}) {
    toy_proposer p(rule, 77);
    p.reverse_batches = reverse;
    auto v = verifier_of([](span_t s, bool c) { return c ? double(s.back() % 4) / 3.0 : 0.25; });
    auto m = std::make_unique<itscale::mcts<toy_proposer, decltype(v)>>(
        p, v, prompt,
        itscale::mcts_options{.simulations = sims, .leaves_per_round = B, .samples_per_expansion = 3, .widening = w});
    const auto r = m->search();
    return std::tuple{contents(*m, w.c == 0), fingerprint(*m, r), r.nodes};
  };
  // Full expansion (the tree has at most 1 + 4 + 16 + 64 nodes): the same nodes for B = 1, 4, 7.
  const auto [full1, fp1, n1] = run(1, 600, false);
  const auto [full4, fp4, n4] = run(4, 600, false);
  const auto [full7, fp7, n7] = run(7, 600, false);
  CHECK(full1 == full4);
  CHECK(full1 == full7);
  // Same B, proposer working through its batches in reverse: bit-identical tree and result.
  const auto [c4r, fp4r, n4r] = run(4, 600, true);
  CHECK(fp4 == fp4r);
  const auto [p4, pf4, pn4] = run(4, 23, false);
  const auto [p4r, pf4r, pn4r] = run(4, 23, true);
  CHECK(pf4 == pf4r);
  // Partial searches, with widening: every node both trees hold has the same step, the same value
  // where both evaluated it, and children of which one list is a prefix of the other.
  for (std::size_t sims : {10u, 25u, 60u}) {
    const auto [a, fa, na] = run(1, sims, false, {.c = 1, .alpha = 0.5});
    const auto [b, fb, nb] = run(4, sims, false, {.c = 1, .alpha = 0.5});
    std::size_t common = 0;
    for (const auto& [key, x] : a) {
      const auto it = b.find(key);
      if (it == b.end()) continue;
      ++common;
      const content& y = it->second;
      CHECK(x.step == y.step);
      if (!std::isnan(x.value) && !std::isnan(y.value)) CHECK(x.value == y.value);
      const std::size_t k = std::min(x.children.size(), y.children.size());
      CHECK(std::equal(x.children.begin(), x.children.begin() + static_cast<std::ptrdiff_t>(k), y.children.begin()));
    }
    MESSAGE(sims << " simulations: " << na << " and " << nb << " nodes, " << common << " in common");
    CHECK(common >= 5);
  }
}

TEST_CASE("budgets and cancellation: simulations, verifier calls, generated tokens, stop_token") {
  toy_proposer p(uniform_tree(3, 6));
  auto v = verifier_of([](span_t s, bool) { return double(s.back()) / 3.0; });
  {
    const auto r = itscale::mcts_search(p, v, prompt, {.simulations = 7, .leaves_per_round = 3});
    CHECK(r.simulations == 7);  // a round takes at most the simulations left
    CHECK(r.rounds >= 3);
    CHECK(r.simulations + r.collisions <= 3 * r.rounds);
    CHECK(r.status == itscale::run_status::completed);
  }
  {
    const auto r = itscale::mcts_search(
        p, v, prompt, {.simulations = 1000, .leaves_per_round = 2, .budget = {.max_verifier_calls = 5}});
    CHECK(r.status == itscale::run_status::budget_exhausted);
    CHECK(r.compute.verifier_calls == 5);
    CHECK(r.simulations + r.collisions == 10);  // five rounds of two paths
    REQUIRE(!r.sequences.empty());
    if (r.sequences[0].stop != itscale::stop_reason::eos) CHECK(r.sequences[0].stop == itscale::stop_reason::budget);
  }
  {
    const auto r = itscale::mcts_search(p, v, prompt, {.simulations = 1000, .budget = {.max_generated_tokens = 30}});
    CHECK(r.status == itscale::run_status::budget_exhausted);
    CHECK(r.compute.generated_tokens() >= 30);
    CHECK(r.compute.generated_tokens() < 30 + 4);  // one expansion of 4 one-token samples at most past it
  }
  {
    std::stop_source stop;
    stop.request_stop();
    const auto r = itscale::mcts_search(p, v, prompt, {.simulations = 10, .budget = {.stop = stop.get_token()}});
    CHECK(r.status == itscale::run_status::cancelled);
    CHECK(r.simulations == 0);
    CHECK(r.sequences.empty());
  }
  CHECK(p.live == 0);
}

TEST_CASE("options: every broken rule is an invalid_option naming it") {
  toy_proposer p(uniform_tree(2, 2));
  auto v = verifier_of([](span_t, bool) { return 0.5; });
  const auto msg = [&](itscale::mcts_options o) {
    std::string m;
    try {
      (void)itscale::mcts_search(p, v, prompt, o);
    } catch (const itscale::invalid_option& e) {
      m = e.what();
    }
    return m;
  };
  const std::vector<std::pair<itscale::mcts_options, std::string>> bad{
      {{.simulations = 0}, "simulations must be >= 1"},
      {{.leaves_per_round = 0}, "leaves_per_round (B) must be >= 1"},
      {{.samples_per_expansion = 0}, "samples_per_expansion"},
      {{.c_init = -1}, "c_init"},
      {{.c_base = 0}, "c_base"},
      {{.c_uct = NAN}, "c_uct"},
      {{.prior_temperature = 0}, "prior_temperature"},
      {{.fpu_reduction = 2}, "fpu_reduction"},
      {{.widening = {.c = -1}}, "widening.c"},
      {{.widening = {.c = 1, .alpha = 1.5}}, "widening.alpha"},
      {{.widening = {.c = 1, .alpha = 0.5, .patience = 0}}, "widening.patience"},
      {{.dirichlet = {.weight = 1.5}}, "dirichlet.weight"},
      {{.dirichlet = {.weight = 0.25, .alpha = 0}}, "dirichlet.alpha"},
      {{.mix_lambda = -0.1}, "mix_lambda"},
      {{.rollout_samples = 0}, "rollout_samples"},
      {{.max_rollout_steps = 0}, "max_rollout_steps"},
      {{.virtual_loss = -1}, "virtual_loss"},
      {{.leaves_per_round = 4, .max_live_handles = 3}, "max_live_handles"},
      {{.choice_temperature = 0}, "choice_temperature"},
      {{.num_return_sequences = 0}, "num_return_sequences"},
      {{.budget = {.max_seconds = -1}}, "max_seconds"},
  };
  for (const auto& [o, want_] : bad) {
    const auto& want = want_;  // clang 14: doctest's CAPTURE lambda cannot capture a binding
    CAPTURE(want);
    CHECK(msg(o).find(want) != std::string::npos);
  }
  CHECK(msg({}).empty());
  CHECK_THROWS_AS((void)itscale::mcts_search(p, v, tokens{}), itscale::invalid_input);
  CHECK(p.live == 0);
}

TEST_CASE("two nodes sharing a 32-bit stream key never share a proposer batch") {
  // Root key 1475185945 (found by exhaustive search): its children 0 and 1 get the same key. With
  // B = 2, round 2 expands both; the proposer (which rejects repeated ids, as the contract says)
  // gets them in two batches of the same round.
  const std::uint32_t root_key = 1475185945u;
  const std::uint32_t shared = itscale::child_key(root_key, 0);
  REQUIRE(itscale::child_key(root_key, 1) == shared);
  toy_proposer p(uniform_tree(2, 3));
  p.enumerate = true;
  auto v = verifier_of([](span_t s, bool) { return double(s.back()) / 2.0; });
  const auto r = itscale::mcts_search(
      p, v, prompt, {.simulations = 30, .leaves_per_round = 2, .samples_per_expansion = 2, .stream = root_key});
  CHECK(r.simulations == 30);
  bool split = false;
  for (std::size_t i = 1; i < p.batches.size(); ++i)
    split |=
        p.batches[i - 1] == std::vector<std::uint32_t>{shared} && p.batches[i] == std::vector<std::uint32_t>{shared};
  CHECK(split);
  CHECK(p.live == 0);
}
