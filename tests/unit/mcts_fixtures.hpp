#pragma once
// Shared fixtures of the MCTS tests: synthetic trees for toy_proposer (bandit arms, uniform trees,
// the trap), verifiers from functions, and small helpers.

#include <cmath>
#include <exception>
#include <itscale/tree/mcts.hpp>
#include <string>
#include <vector>

#include "toy_proposer.hpp"

namespace mcts_fixtures {

using itscale::token_id;
using test_support::toy_proposer;
using test_support::toy_step;
using tokens = std::vector<token_id>;
using span_t = std::span<const token_id>;

inline const tokens prompt{0};

// K one-step arms (tokens 1..K), terminal, with the given log-probs.
inline toy_proposer::rule_fn bandit_rule(std::vector<double> logprobs) {
  return [lp = std::move(logprobs)](span_t t) {
    std::vector<toy_step> s;
    if (t.size() > 1) return s;
    for (std::size_t i = 0; i < lp.size(); ++i) s.push_back({{static_cast<token_id>(i + 1)}, lp[i], true});
    return s;
  };
}

// A verifier from a function of the generated tokens.
template <class F>
auto verifier_of(F f) {
  return itscale::make_verifier("test", {0, 1}, [f](span_t, span_t seq, bool complete) { return f(seq, complete); });
}

// A uniform tree: `width` steps per node (tokens 1..width), terminal at `depth`.
inline toy_proposer::rule_fn uniform_tree(int width, std::size_t depth) {
  return [=](span_t t) {
    std::vector<toy_step> s;
    const std::size_t d = t.size() - 1;
    if (d >= depth) return s;
    for (int i = 1; i <= width; ++i) s.push_back({{i}, -std::log(double(width)), d + 1 == depth});
    return s;
  };
}

// The trap: the likeliest first step (A = 1, p 0.9) leads only to reward 0, and the partial
// sequences under it look better to the (deceptive) process verifier (0.6 against 0.3); the only
// reward-1 leaf is 2 8 10, of prior 0.1 * 0.3 * 0.5 = 0.015.
inline toy_proposer::rule_fn trap_rule() {
  return [](span_t t) {
    const tokens p(t.begin() + 1, t.end());
    const auto L = [](double x) { return std::log(x); };
    if (p.empty()) return std::vector<toy_step>{{{1}, L(0.9), false}, {{2}, L(0.1), false}};
    if (p == tokens{1}) return std::vector<toy_step>{{{3}, L(0.8), false}, {{4}, L(0.2), false}};
    if (p == tokens{1, 3} || p == tokens{1, 4}) return std::vector<toy_step>{{{5}, L(0.6), true}, {{6}, L(0.4), true}};
    if (p == tokens{2}) return std::vector<toy_step>{{{7}, L(0.7), false}, {{8}, L(0.3), false}};
    if (p == tokens{2, 7}) return std::vector<toy_step>{{{9}, L(0.6), true}, {{12}, L(0.4), true}};
    if (p == tokens{2, 8}) return std::vector<toy_step>{{{11}, L(0.5), true}, {{10}, L(0.5), true}};
    return std::vector<toy_step>{};
  };
}
inline double trap_score(span_t seq, bool complete) {
  if (complete) return seq.size() == 3 && seq[0] == 2 && seq[1] == 8 && seq[2] == 10 ? 1.0 : 0.0;
  return !seq.empty() && seq[0] == 1 ? 0.6 : 0.3;
}

// Everything a test compares between two searches: the tree as JSON and the chosen sequences.
inline std::string fingerprint(const auto& m, const itscale::mcts_result& r) {
  std::string s = m.to_json();
  for (const auto& g : r.sequences) {
    s += "|";
    for (token_id t : g.tokens) s += std::to_string(t) + ",";
    s += std::to_string(g.score);
  }
  return s;
}

inline std::string join(const tokens& t) {
  std::string s;
  for (token_id x : t) s += (s.empty() ? "" : " ") + std::to_string(x);
  return s;
}

inline std::string what_of(auto&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace mcts_fixtures
