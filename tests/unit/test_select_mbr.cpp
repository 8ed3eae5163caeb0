// MBR decoding: the utilities against independent references (a dynamic-programming LCS,
// sacreBLEU's chrF values), MBR with exact match equals majority vote, the full and pruned
// drivers, and bad utilities.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <itscale/core/rng.hpp>
#include <itscale/select/mbr.hpp>
#include <itscale/select/self_consistency.hpp>
#include <itscale/select/vote.hpp>

#include "select_support.hpp"

namespace {
using itscale::token_id;
using tokens = std::vector<token_id>;
using spans = std::vector<std::span<const token_id>>;

spans spans_of(const std::vector<tokens>& c) { return spans(c.begin(), c.end()); }

std::size_t lcs_dp(const tokens& a, const tokens& b) {
  std::vector<std::size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Random sequences from a counter-based stream: lengths in [0, max_len], ids in [0, alphabet).
std::vector<tokens> random_sequences(std::size_t n, std::size_t max_len, std::size_t alphabet, std::uint64_t seed) {
  const itscale::counter_rng rng(seed, 1);
  std::vector<tokens> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto len = static_cast<std::size_t>(rng.uniform(static_cast<std::uint32_t>(i), 0) * static_cast<double>(max_len + 1));
    for (std::size_t k = 0; k < len; ++k)
      out[i].push_back(static_cast<token_id>(rng.uniform(static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(k + 1)) *
                                             static_cast<double>(alphabet)));
  }
  return out;
}

// Noisy copies of one base sequence (a cluster of samples): candidate i replaces each token with
// probability 0.05 + 0.5 i / n.
std::vector<tokens> noisy_copies(std::size_t n, std::size_t len, std::uint64_t seed) {
  const itscale::counter_rng rng(seed, 2);
  tokens base(len);
  for (std::size_t k = 0; k < len; ++k) base[k] = static_cast<token_id>(rng.uniform(0, static_cast<std::uint32_t>(k)) * 1000);
  std::vector<tokens> out(n, base);
  for (std::size_t i = 0; i < n; ++i) {
    const double rate = 0.05 + 0.5 * static_cast<double>((i * 37) % n) / static_cast<double>(n);
    for (std::size_t k = 0; k < len; ++k)
      if (rng.uniform(static_cast<std::uint32_t>(i + 1), static_cast<std::uint32_t>(2 * k)) < rate)
        out[i][k] = static_cast<token_id>(rng.uniform(static_cast<std::uint32_t>(i + 1), static_cast<std::uint32_t>(2 * k + 1)) * 1000);
  }
  return out;
}

tokens bytes_of(const std::string& s) {
  tokens t;
  for (char c : s) t.push_back(static_cast<unsigned char>(c));
  return t;
}

auto byte_detok() {
  return [](std::span<const token_id> t) {
    std::string s;
    for (token_id x : t) s.push_back(static_cast<char>(x));
    return s;
  };
}
}  // namespace

TEST_CASE("rouge_l: the bit-parallel LCS equals the dynamic program (one word and many)") {
  for (const auto& [max_len_, alphabet_] : std::vector<std::pair<std::size_t, std::size_t>>{{20, 3}, {70, 4}, {200, 6}, {150, 5000}}) {
    const std::size_t max_len = max_len_, alphabet = alphabet_;  // clang 14: lambdas cannot capture bindings
    const auto seqs = random_sequences(24, max_len, alphabet, max_len * 7 + alphabet);
    const auto sp = spans_of(seqs);
    itscale::rouge_l u;
    u.prepare(sp);
    for (std::size_t i = 0; i < seqs.size(); ++i)
      for (std::size_t j = 0; j < seqs.size(); ++j) {
        INFO("lengths " << seqs[i].size() << ", " << seqs[j].size() << ", alphabet " << alphabet);
        const std::size_t want = lcs_dp(seqs[i], seqs[j]);
        CHECK(u.lcs(i, j) == want);
        const auto p = u.pair(i, j);
        const double li = static_cast<double>(seqs[i].size()), lj = static_cast<double>(seqs[j].size());
        const double f = li + lj == 0 ? 1.0 : 2.0 * static_cast<double>(want) / (li + lj);
        CHECK(p.forward == doctest::Approx(f));
        CHECK(p.backward == doctest::Approx(f));
      }
  }
  // beta != 1 is asymmetric: recall-weighted in each direction.
  const std::vector<tokens> c{{1, 2, 3, 4}, {1, 2}};
  const auto sp = spans_of(c);
  itscale::rouge_l r2(2.0);
  r2.prepare(sp);
  const auto p = r2.pair(0, 1);  // LCS 2: hyp 0 has P = 0.5, R = 1; hyp 1 has P = 1, R = 0.5
  CHECK(p.forward == doctest::Approx(5 * 0.5 * 1 / (4 * 0.5 + 1)));
  CHECK(p.backward == doctest::Approx(5 * 1 * 0.5 / (4 * 1 + 0.5)));
}

TEST_CASE("token_f1: multiset overlap, symmetric, empty sequences") {
  const std::vector<tokens> c{{1, 2, 2, 3}, {2, 2, 4}, {}, {}, {9, 9, 9}};
  const auto sp = spans_of(c);
  itscale::token_f1 u;
  u.prepare(sp);
  CHECK(u.pair(0, 1).forward == doctest::Approx(2.0 * 2 / 7));
  CHECK(u.pair(1, 0).forward == doctest::Approx(2.0 * 2 / 7));
  CHECK(u.pair(0, 0).forward == 1.0);
  CHECK(u.pair(2, 3).forward == 1.0);
  CHECK(u.pair(0, 2).forward == 0.0);
  CHECK(u.pair(4, 4).forward == 1.0);
  CHECK(u.pair(0, 4).forward == 0.0);
}

TEST_CASE("chrf: sacreBLEU's sentence chrF (char order 6, beta 2, no whitespace) on a 0..1 scale") {
  // Expected values: sacreBLEU's CHRF().sentence_score(hyp, [ref]).score / 100. The first is the
  // example of the Hugging Face metric card (61.576379378113785); the others from an independent
  // reimplementation that reproduces that example.
  struct pair_case {
    std::string hyp, ref;
    double forward, backward;
  };
  const std::vector<pair_case> cases{
      {"The relationship between Obama and Netanyahu is not exactly friendly.",
       "The ties between Obama and Netanyahu are not particularly friendly.", 0.61576379378113785, -1},
      {"the cat sat on the mat", "the cat is on the mat", 0.64577942062528704, 0.61925151289932501},
      {"caf\xC3\xA9 au lait", "cafe au lait", 0.54411375661375672, 0.54411375661375672},
      {"a", "abc", 0.38461538461538458, 0.7142857142857143},
      {"", "abc", 0, 0},
      {"ab ab", "ab", 0.78124999999999989, 0.47169811320754707},
      {"x\xE3\x80\x80y z", "xyz", 1, 1},  // U+3000 is whitespace to str.split()
  };
  for (const auto& c : cases) {
    INFO(c.hyp << " | " << c.ref);
    const std::vector<tokens> t{bytes_of(c.hyp), bytes_of(c.ref)};
    const auto sp = spans_of(t);
    auto u = itscale::make_chrf(byte_detok());
    u.prepare(sp);
    const auto p = u.pair(0, 1);
    CHECK(p.forward == doctest::Approx(c.forward).epsilon(1e-12));
    if (c.backward >= 0) CHECK(p.backward == doctest::Approx(c.backward).epsilon(1e-12));
    // The other orientation of the same pair gives the mirrored values.
    const auto q = u.pair(1, 0);
    CHECK(q.forward == p.backward);
    CHECK(q.backward == p.forward);
  }
  // Invalid UTF-8 bytes count as characters (nothing dropped): equal byte strings score 1.
  const std::vector<tokens> bad{{0xFF, 0x41, 0xC3}, {0xFF, 0x41, 0xC3}};
  const auto sp = spans_of(bad);
  auto u = itscale::make_chrf(byte_detok());
  u.prepare(sp);
  CHECK(u.pair(0, 1).forward == 1.0);
  CHECK_THROWS_AS((void)itscale::make_chrf(byte_detok(), 7), itscale::invalid_option);
}

TEST_CASE("MBR with exact answer match equals majority vote") {
  auto src = select_support::answer_source();
  std::vector<std::vector<token_id>> prompts;
  std::vector<itscale::request> reqs;
  for (std::size_t id = 0; id < select_support::problems; ++id) prompts.push_back(select_support::prompt_of(id));
  for (std::size_t i = 0; i < prompts.size(); ++i) reqs.push_back({prompts[i], static_cast<std::uint32_t>(i)});
  // Small N, so that ties are frequent.
  const auto sc = itscale::self_consistency(src, std::span<const itscale::request>(reqs), select_support::extract_answer,
                                            {.samples = 6, .sampling = select_support::answer_sampling(11)});
  auto u = itscale::make_answer_match(select_support::extract_answer);
  std::size_t ties = 0;
  for (const auto& p : sc) {
    if (p.vote.distribution.size() > 1 && p.vote.distribution[0].weight == p.vote.distribution[1].weight) ++ties;
    const auto m = itscale::mbr(std::span<const itscale::generation>(p.samples), u);
    CHECK(select_support::extract_answer(p.samples[m.best].tokens) == p.vote.answer);
    if (p.vote.answer) CHECK(m.best == p.vote.winner().samples.front());
    // Without the self pair a lone answer scores 0 like a sample without one, so the two agree
    // only when the winner has two votes or more.
    const auto x = itscale::mbr(std::span<const itscale::generation>(p.samples), u, {.include_self = false});
    if (p.vote.answer && p.vote.winner().count >= 2) CHECK(x.best == m.best);
  }
  MESSAGE(ties << " of " << sc.size() << " votes had a tie at the top");
  CHECK(ties > 0);
  CHECK(src.live_handles() == 0);
}

TEST_CASE("mbr (full): expected utilities, matrix and pair count against a brute force; ties to the lowest index") {
  const auto seqs = random_sequences(17, 30, 8, 5);
  const auto sp = spans_of(seqs);
  // An asymmetric utility: the share of the hypothesis' tokens present in the reference.
  const auto precision = [](std::span<const token_id> h, std::span<const token_id> r) {
    if (h.empty()) return 0.0;
    std::size_t hit = 0;
    for (token_id t : h) hit += std::find(r.begin(), r.end(), t) != r.end();
    return static_cast<double>(hit) / static_cast<double>(h.size());
  };
  auto u = itscale::make_utility(precision, false, "precision");
  for (bool self : {true, false}) {
    const auto m = itscale::mbr(std::span<const std::span<const token_id>>(sp), u, {.include_self = self, .keep_matrix = true});
    const std::size_t n = seqs.size();
    CHECK(m.pairs == (self ? n * (n + 1) / 2 : n * (n - 1) / 2));
    std::size_t best = 0;
    std::vector<double> eu(n, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t j = 0; j < n; ++j) {
        const double x = precision(seqs[i], seqs[j]);
        if (i != j || self) {
          CHECK(m.matrix[i * n + j] == x);
          eu[i] += x;
        }
      }
      eu[i] /= static_cast<double>(self ? n : n - 1);
      CHECK(m.expected_utility[i] == doctest::Approx(eu[i]));
      if (eu[i] > eu[best] + 1e-12) best = i;
    }
    CHECK(m.best == best);
    CHECK(m.survivors == n);
  }
  // All candidates equal: every expected utility ties, the first wins.
  const std::vector<tokens> same(5, tokens{1, 2, 3});
  const auto ss = spans_of(same);
  itscale::token_f1 f1;
  const auto m = itscale::mbr(std::span<const std::span<const token_id>>(ss), f1);
  CHECK(m.best == 0);
  CHECK(m.order == std::vector<std::size_t>{0, 1, 2, 3, 4});
}

TEST_CASE("mbr with confidence-based pruning: same choice on a clear cluster, fewer pairs, deterministic") {
  const auto cands = noisy_copies(128, 48, 3);
  const auto sp = spans_of(cands);
  itscale::rouge_l u;
  const auto full = itscale::mbr(std::span<const std::span<const token_id>>(sp), u);
  const itscale::mbr_options o{.pruning = {.enabled = true, .seed = 9}};
  const auto pruned = itscale::mbr(std::span<const std::span<const token_id>>(sp), u, o);
  MESSAGE("pairs: full " << full.pairs << ", pruned " << pruned.pairs << ", survivors " << pruned.survivors);
  CHECK(pruned.best == full.best);
  CHECK(pruned.pairs < full.pairs / 2);
  CHECK(pruned.survivors < 128);
  CHECK(pruned.pruned_at[pruned.best] == itscale::mbr_result::npos);
  // The survivor's estimate is over its references, exactly the full one when they were all used.
  if (pruned.references[pruned.best] == cands.size())
    CHECK(pruned.expected_utility[pruned.best] == doctest::Approx(full.expected_utility[full.best]));
  const auto again = itscale::mbr(std::span<const std::span<const token_id>>(sp), u, o);
  CHECK(again.pruned_at == pruned.pruned_at);
  CHECK(again.pairs == pruned.pairs);
  // An explicit schedule; pruning needs include_self; bad alpha / schedule.
  const auto sched = itscale::mbr(std::span<const std::span<const token_id>>(sp), u,
                                  {.pruning = {.enabled = true, .schedule = {16, 64}, .alpha = 0.9}});
  CHECK(sched.best == full.best);
  using itscale::invalid_option;
  CHECK_THROWS_AS((void)itscale::mbr(std::span<const std::span<const token_id>>(sp), u,
                                     {.include_self = false, .pruning = {.enabled = true}}),
                  invalid_option);
  CHECK_THROWS_AS((void)itscale::mbr(std::span<const std::span<const token_id>>(sp), u, {.pruning = {.enabled = true, .alpha = 1}}),
                  invalid_option);
  CHECK_THROWS_AS((void)itscale::mbr(std::span<const std::span<const token_id>>(sp), u,
                                     {.pruning = {.enabled = true, .schedule = {16, 8}}}),
                  invalid_option);
}

TEST_CASE("mbr bad input: no candidates, a NaN or infinite utility, a throwing extractor") {
  itscale::token_f1 f1;
  CHECK_THROWS_AS((void)itscale::mbr(std::span<const itscale::generation>(), f1), itscale::invalid_input);
  const auto seqs = random_sequences(6, 10, 4, 1);
  const auto sp = spans_of(seqs);
  int calls = 0;
  auto nan_at_5 = itscale::make_utility(
      [&calls](std::span<const token_id>, std::span<const token_id>) { return ++calls == 5 ? std::nan("") : 0.5; }, true, "flaky");
  CHECK_THROWS_WITH_AS((void)itscale::mbr(std::span<const std::span<const token_id>>(sp), nan_at_5),
                       doctest::Contains("'flaky' returned nan"), itscale::backend_error);
  calls = 0;
  CHECK_THROWS_AS((void)itscale::mbr(std::span<const std::span<const token_id>>(sp), nan_at_5, {.pruning = {.enabled = true}}),
                  itscale::backend_error);
  auto inf = itscale::make_utility([](auto, auto) { return INFINITY; }, true, "inf");
  CHECK_THROWS_AS((void)itscale::mbr(std::span<const std::span<const token_id>>(sp), inf), itscale::backend_error);
  auto throwing = itscale::make_answer_match([](std::span<const token_id>) -> std::optional<int> {
    throw std::runtime_error("extractor failed");
  });
  CHECK_THROWS_WITH_AS((void)itscale::mbr(std::span<const std::span<const token_id>>(sp), throwing), "extractor failed",
                       std::runtime_error);
  // A single candidate is its own answer.
  const std::vector<tokens> one{{1, 2}};
  const auto s1 = spans_of(one);
  CHECK(itscale::mbr(std::span<const std::span<const token_id>>(s1), f1).best == 0);
  CHECK(itscale::mbr(std::span<const std::span<const token_id>>(s1), f1, {.include_self = false}).expected_utility[0] == 0);
}
