// The formulas of tree search against hand-computed numbers (PUCT, UCT, widening limits, stream
// keys), and the Gamma / Dirichlet draws of root noise against their moments.

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <itscale/steps/step_proposer.hpp>
#include <itscale/steps/verifier.hpp>
#include <itscale/tree/dirichlet.hpp>
#include <itscale/tree/mcts.hpp>
#include <itscale/tree/selection.hpp>
#include <limits>
#include <set>
#include <vector>

// mcts needs nothing beyond the two concepts: it instantiates on their archetypes.
template class itscale::mcts<itscale::step_proposer_archetype, itscale::verifier_archetype>;

TEST_CASE("PUCT: AlphaZero's c(s) and score, by hand") {
  // c_base = 10, N = 9: c(s) = ln((1 + 9 + 10) / 10) + c_init = ln 2 + 1 = 1.6931471805599453.
  CHECK(itscale::puct_coefficient(9, 1.0, 10) == doctest::Approx(1.6931471805599453).epsilon(1e-15));
  // Q = 0.25, P = 0.5, N = 9, n = 1: 0.25 + 1.693147... * 0.5 * sqrt(9) / (1 + 1) = 0.25 + 1.2698604 = 1.5198604.
  CHECK(itscale::puct_score(0.25, 0.5, 9, 1, 1.0, 10) == doctest::Approx(1.519860385419959).epsilon(1e-15));
  // AlphaZero's constants, N = 10: c(s) = ln(19663 / 19652) + 1.25 = 1.25 + 0.00055958... ;
  // Q = 0.5, P = 0.3, n = 2: 0.5 + 1.2505596 * 0.3 * 3.1622777 / 3 = 0.8954617.
  CHECK(itscale::puct_coefficient(10, 1.25, 19652) == doctest::Approx(1.250559582871018).epsilon(1e-15));
  CHECK(itscale::puct_score(0.5, 0.3, 10, 2, 1.25, 19652) == doctest::Approx(0.8954616631622507).epsilon(1e-15));
  // N = 0: no exploration term at all (sqrt 0), the score is Q.
  CHECK(itscale::puct_score(0.7, 0.9, 0, 0, 1.25, 19652) == 0.7);
}

TEST_CASE("UCT: Q + c sqrt(ln N / n), unvisited first") {
  // Q = 0.6, N = 100, n = 10, c = sqrt 2: sqrt(4.6051702 / 10) = 0.6786140, x 1.4142136 = 0.9597052.
  CHECK(itscale::uct_score(0.6, 100, 10, std::sqrt(2.0)) == doctest::Approx(1.5597051824376162).epsilon(1e-15));
  // Q = 0.1, N = 2, n = 1, c = 0.5: 0.1 + 0.5 sqrt(ln 2) = 0.1 + 0.5 * 0.8325546 = 0.5162773.
  CHECK(itscale::uct_score(0.1, 2, 1, 0.5) == doctest::Approx(0.5162773055788489).epsilon(1e-15));
  CHECK(itscale::uct_score(0.3, 5, 0, 1.0) == std::numeric_limits<double>::infinity());
  CHECK(itscale::uct_score(0.3, 1, 1, 1.0) == 0.3);  // ln 1 = 0
}

TEST_CASE("progressive widening: max(1, ceil(c N^alpha))") {
  // c = 1, alpha = 1/2: N = 0 1 2 3 4 5 9 10 16 17 -> 1 1 2 2 2 3 3 4 4 5 (ceil of sqrt, at least 1)
  const std::vector<std::uint64_t> n{0, 1, 2, 3, 4, 5, 9, 10, 16, 17};
  const std::vector<std::uint64_t> want{1, 1, 2, 2, 2, 3, 3, 4, 4, 5};
  for (std::size_t i = 0; i < n.size(); ++i) CHECK(itscale::widening_limit(1.0, 0.5, n[i]) == want[i]);
  // c = 2, alpha = 0.3: 8^0.3 = 1.866 -> ceil(3.73) = 4; 16^0.3 = 2.297 -> ceil(4.59) = 5
  CHECK(itscale::widening_limit(2.0, 0.3, 8) == 4);
  CHECK(itscale::widening_limit(2.0, 0.3, 16) == 5);
  // alpha = 0: a constant ceil(c); c = 0: no limit
  CHECK(itscale::widening_limit(2.5, 0.0, 1000) == 3);
  CHECK(itscale::widening_limit(0.0, 0.5, 7) == std::numeric_limits<std::uint64_t>::max());
}

TEST_CASE("child keys: a function of (parent key, index), distinct in a tree of thousands") {
  CHECK(itscale::child_key(7, 3) == itscale::child_key(7, 3));
  std::set<std::uint32_t> seen{0};
  std::vector<std::uint32_t> level{0};
  for (int depth = 0; depth < 4; ++depth) {  // 1 + 8 + 64 + 512 + 4096 keys
    std::vector<std::uint32_t> next;
    for (std::uint32_t k : level)
      for (std::uint32_t i = 0; i < 8; ++i) next.push_back(itscale::child_key(k, i));
    for (std::uint32_t k : next) seen.insert(k);
    level = next;
  }
  CHECK(seen.size() == 1 + 8 + 64 + 512 + 4096);
}

TEST_CASE("Gamma draws (Marsaglia-Tsang on Philox): mean alpha, variance alpha") {
  for (double alpha : {0.03, 0.3, 1.0, 2.5, 10.0}) {
    const itscale::counter_rng rng(42, 7);
    const int n = 40000;
    double s = 0, s2 = 0;
    for (int i = 0; i < n; ++i) {
      const double g = std::exp(itscale::detail::log_gamma_draw(rng, static_cast<std::uint32_t>(i), alpha));
      REQUIRE(g >= 0);
      s += g;
      s2 += g * g;
    }
    const double mean = s / n, var = s2 / n - mean * mean;
    // Standard error of the mean: sqrt(alpha / n); of the variance, larger for small alpha (heavy tail).
    INFO("alpha = " << alpha << " mean " << mean << " var " << var);
    CHECK(std::abs(mean - alpha) < 5 * std::sqrt(alpha / n));
    CHECK(std::abs(var - alpha) < 0.1 * alpha);
  }
}

TEST_CASE("Dirichlet draws: on the simplex, component means 1/K, earlier components keep their Gamma draw") {
  const itscale::counter_rng rng(3, 11);
  std::vector<double> a(4), b(6), mean(4, 0.0);
  itscale::detail::dirichlet_draw(rng, 0, 0.3, a);
  itscale::detail::dirichlet_draw(rng, 0, 0.3, b);
  double sa = 0;
  for (double x : a) sa += x;
  CHECK(sa == doctest::Approx(1.0).epsilon(1e-12));
  // Same Gamma draws for the first four: their ratios agree.
  for (std::size_t i = 1; i < 4; ++i) CHECK(a[i] / a[0] == doctest::Approx(b[i] / b[0]).epsilon(1e-9));
  const int n = 20000;
  for (int t = 0; t < n; ++t) {
    const itscale::counter_rng r(5, static_cast<std::uint64_t>(t));
    itscale::detail::dirichlet_draw(r, 0, 0.5, a);
    for (std::size_t i = 0; i < 4; ++i) mean[i] += a[i] / n;
  }
  // Var of a Dir(0.5 x 4) component: (1/4)(3/4)/(2 + 1) = 1/16; standard error sqrt(1/16/n) = 0.0018.
  for (double m : mean) CHECK(std::abs(m - 0.25) < 0.01);
}

TEST_CASE("mcts over the concept archetypes: every node a single terminal step") {
  itscale::step_proposer_archetype p;
  itscale::verifier_archetype v;
  const std::vector<itscale::token_id> prompt{1, 2};
  const auto r = itscale::mcts_search(p, v, prompt, {.simulations = 5, .leaves_per_round = 2, .max_live_handles = 2});
  CHECK(r.simulations == 5);
  REQUIRE(r.sequences.size() == 1);
  CHECK(r.sequences[0].tokens == std::vector<itscale::token_id>{0});
  CHECK(r.nodes == 2);
}
