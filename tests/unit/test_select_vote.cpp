// Vote counting and its tie rule; the stopping criteria of adaptive consistency against
// independent numerical integrations.

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include <itscale/select/stop_criteria.hpp>
#include <itscale/select/vote.hpp>

namespace {
using opt = std::optional<std::string>;

// P(X > 1/2) for X ~ Beta(a + 1, b + 1) by Simpson's rule on the unnormalised density (what the
// reference implementation integrates with scipy's quad).
double beta_by_integration(double a, double b) {
  const auto f = [&](double x) { return std::pow(x, a) * std::pow(1 - x, b); };
  const auto simpson = [&](double lo, double hi) {
    const int n = 20000;
    const double h = (hi - lo) / n;
    double s = f(lo) + f(hi);
    for (int k = 1; k < n; ++k) s += (k % 2 ? 4 : 2) * f(lo + k * h);
    return s * h / 3;
  };
  return simpson(0.5, 1) / simpson(0, 1);
}

// P(p1 > p2 and p1 > p3) under Dirichlet(c1 + 1, c2 + 1, c3 + 1) as a nested integral over the
// simplex: for each p1, p2 runs over (max(0, 1 - 2 p1), min(p1, 1 - p1)) (so p1 beats p2 and
// p3 = 1 - p1 - p2); Simpson's rule in both variables, the outer one split at the kinks 1/3 and
// 1/2; normalised by the Dirichlet constant. A different method from the library's
// one-dimensional Gamma integral.
double dirichlet3_nested(double c1, double c2, double c3) {
  const auto simpson = [](auto f, double lo, double hi, int n) {
    if (hi <= lo) return 0.0;
    const double h = (hi - lo) / n;
    double s = f(lo) + f(hi);
    for (int k = 1; k < n; ++k) s += (k % 2 ? 4 : 2) * f(lo + k * h);
    return s * h / 3;
  };
  const auto inner = [&](double p1) {
    const double lo = std::max(0.0, 1 - 2 * p1), hi = std::min(p1, 1 - p1);
    const auto g = [&](double p2) {
      const double p3 = std::max(0.0, 1 - p1 - p2);
      return std::pow(p1, c1) * std::pow(p2, c2) * std::pow(p3, c3);
    };
    return simpson(g, lo, hi, 400);
  };
  const double win = simpson(inner, 1.0 / 3, 0.5, 400) + simpson(inner, 0.5, 1.0, 400);
  const double norm = std::exp(std::lgamma(c1 + 1) + std::lgamma(c2 + 1) + std::lgamma(c3 + 1) - std::lgamma(c1 + c2 + c3 + 3));
  return win / norm;
}
}  // namespace

TEST_CASE("tally_votes: majority, distribution order, samples behind each answer, confidence") {
  const std::vector<opt> a{"7", std::nullopt, "3", "7", "5", "3", "7"};
  const auto t = itscale::tally_votes(a);
  REQUIRE(t.answer);
  CHECK(*t.answer == "7");
  CHECK(t.answered == 6);
  CHECK(t.samples == 7);
  REQUIRE(t.distribution.size() == 3);
  CHECK(t.distribution[0].answer == "7");
  CHECK(t.distribution[0].count == 3);
  CHECK(t.distribution[0].samples == std::vector<std::size_t>{0, 3, 6});
  CHECK(t.distribution[1].answer == "3");
  CHECK(t.distribution[1].samples == std::vector<std::size_t>{2, 5});
  CHECK(t.distribution[2].answer == "5");
  CHECK(t.confidence == doctest::Approx(0.5));
  CHECK(t.winner().weight == 3);
}

TEST_CASE("tally_votes: ties go to the answer seen first (lowest sample index)") {
  // "b" and "a" both get two votes; "b" appears first (sample 1).
  const std::vector<opt> a{std::nullopt, "b", "a", "a", "b", "c"};
  const auto t = itscale::tally_votes(a);
  CHECK(*t.answer == "b");
  CHECK(t.distribution[1].answer == "a");
  // The same votes in another order: now "a" is first seen.
  const std::vector<opt> b{"a", "b", "b", "a"};
  CHECK(*itscale::tally_votes(b).answer == "a");
  // A single-sample tie of three answers.
  const std::vector<opt> c{"z", "y", "x"};
  CHECK(*itscale::tally_votes(c).answer == "z");
}

TEST_CASE("tally_votes: weighted votes, exact-weight ties, unhashable keys") {
  const std::vector<opt> a{"x", "y", "y", "x"};
  const double w[] = {0.9, 0.5, 0.5, 0.05};
  const auto t = itscale::tally_votes(a, w);
  CHECK(*t.answer == "y");  // 1.0 against 0.95, although "x" has the single best sample
  CHECK(t.winner().weight == doctest::Approx(1.0));
  CHECK(t.confidence == doctest::Approx(1.0 / 1.95));
  // Equal sums tie to the answer seen first.
  const double tie[] = {0.5, 0.25, 0.25, 0.0};
  CHECK(*itscale::tally_votes(a, tie).answer == "x");
  // All weights zero: still a winner (the first seen), confidence 0.
  const double zero[] = {0, 0, 0, 0};
  const auto z = itscale::tally_votes(a, zero);
  CHECK(*z.answer == "x");
  CHECK(z.confidence == 0);
  // A key type without std::hash is counted by comparison.
  struct key {
    int v;
    bool operator==(const key&) const = default;
  };
  const std::vector<std::optional<key>> k{key{1}, key{2}, key{2}};
  CHECK(itscale::tally_votes(k).answer->v == 2);
}

TEST_CASE("tally_votes: no answer at all, and bad weights") {
  const std::vector<opt> none{std::nullopt, std::nullopt};
  const auto t = itscale::tally_votes(none);
  CHECK(!t.answer);
  CHECK(t.distribution.empty());
  CHECK(t.confidence == 0);
  const std::vector<opt> a{"x", "y"};
  const double one[] = {1.0};
  CHECK_THROWS_AS((void)itscale::tally_votes(a, one), itscale::invalid_input);
  const double neg[] = {1.0, -0.5};
  CHECK_THROWS_AS((void)itscale::tally_votes(a, neg), itscale::invalid_input);
  const double nan[] = {1.0, std::nan("")};
  CHECK_THROWS_AS((void)itscale::tally_votes(a, nan), itscale::invalid_input);
}

TEST_CASE("Beta criterion: exact binomial form equals the integral of the Beta posterior") {
  CHECK(itscale::beta_stop_probability(4, 0) == doctest::Approx(31.0 / 32).epsilon(1e-14));
  CHECK(itscale::beta_stop_probability(1, 0) == doctest::Approx(0.75).epsilon(1e-14));
  for (std::size_t a : {1u, 2u, 3u, 5u, 8u, 13u, 20u, 40u})
    for (std::size_t b = 0; b <= a; b += 1 + a / 4) {
      INFO("a = " << a << ", b = " << b);
      CHECK(itscale::beta_stop_probability(a, b) ==
            doctest::Approx(beta_by_integration(static_cast<double>(a), static_cast<double>(b))).epsilon(1e-9));
    }
  CHECK(itscale::beta_stop_probability(7, 7) == doctest::Approx(0.5).epsilon(1e-14));
  // Large counts stay finite and monotone in the lead.
  CHECK(itscale::beta_stop_probability(3000, 2900) > itscale::beta_stop_probability(3000, 2950));
  CHECK(itscale::beta_stop_probability(3000, 2900) < 1.0);
}

TEST_CASE("Dirichlet criterion: Beta for two answers, a nested 2-D integral for three, top-k cut") {
  const std::size_t two[] = {6, 2};
  CHECK(itscale::dirichlet_stop_probability(two) == itscale::beta_stop_probability(6, 2));
  const std::size_t one[] = {3};
  CHECK(itscale::dirichlet_stop_probability(one) == itscale::beta_stop_probability(3, 0));
  CHECK(itscale::dirichlet_stop_probability(std::span<const std::size_t>()) == 0);
  for (const auto& c : std::vector<std::array<std::size_t, 3>>{{5, 2, 1}, {3, 3, 1}, {10, 1, 1}, {2, 1, 1}, {20, 15, 4}}) {
    INFO(c[0] << " " << c[1] << " " << c[2]);
    const double lib = itscale::dirichlet_stop_probability(c);
    CHECK(lib == doctest::Approx(dirichlet3_nested(static_cast<double>(c[0]), static_cast<double>(c[1]),
                                                    static_cast<double>(c[2])))
                     .epsilon(1e-7));
  }
  // Order of the counts does not matter; a tie at the top is at most 1/2.
  const std::size_t shuffled[] = {1, 5, 2};
  const std::size_t sorted[] = {5, 2, 1};
  CHECK(itscale::dirichlet_stop_probability(shuffled) == itscale::dirichlet_stop_probability(sorted));
  const std::size_t tie[] = {3, 3, 1};
  CHECK(itscale::dirichlet_stop_probability(tie) < 0.5);
  // Only the top_k largest counts enter.
  const std::size_t many[] = {6, 2, 1, 1, 1, 1, 1};
  const std::size_t top3[] = {6, 2, 1};
  CHECK(itscale::dirichlet_stop_probability(many, 3) == itscale::dirichlet_stop_probability(top3, 3));
  CHECK(itscale::dirichlet_stop_probability(many, 5) < itscale::dirichlet_stop_probability(top3));
  // Finer quadrature changes nothing visible: the default is converged.
  const std::size_t c[] = {9, 4, 2, 1};
  CHECK(itscale::dirichlet_stop_probability(c, 5, 1024) ==
        doctest::Approx(itscale::dirichlet_stop_probability(c, 5, 16384)).epsilon(1e-9));
}

TEST_CASE("entropy criterion: normalised entropy with the pseudo-vote of a unanimous vote") {
  const std::size_t four[] = {4};
  const double h45 = -(0.8 * std::log(0.8) + 0.2 * std::log(0.2)) / std::log(2.0);
  CHECK(itscale::normalised_vote_entropy(four) == doctest::Approx(h45));
  const std::size_t even[] = {2, 2};
  CHECK(itscale::normalised_vote_entropy(even) == doctest::Approx(1.0));
  const std::size_t three[] = {3, 1, 0};
  CHECK(itscale::normalised_vote_entropy(three) == doctest::Approx(-(0.75 * std::log(0.75) + 0.25 * std::log(0.25)) / std::log(2.0)));
  const std::size_t k3[] = {2, 1, 1};
  CHECK(itscale::normalised_vote_entropy(k3) ==
        doctest::Approx(-(0.5 * std::log(0.5) + 2 * 0.25 * std::log(0.25)) / std::log(3.0)));
  CHECK(itscale::normalised_vote_entropy(std::span<const std::size_t>()) == 1.0);
}
