#pragma once
/// \file source_suite.hpp
/// The concept test-suite every `LogitSource` backend runs: the lifetime and validity rules of
/// itscale/core/logit_source.hpp, checked through the concept alone.
///
/// **Needs doctest** (https://github.com/doctest/doctest, 2.4+): this header includes
/// `<doctest/doctest.h>` and reports through CHECK/REQUIRE, so it is for your test binary only
/// (one of its translation units defines the doctest main, as usual). `<itscale/search.hpp>` does
/// not include it. Run it on your own backend:
///
///     #include <itscale/testing/source_suite.hpp>
///
///     TEST_CASE("my backend models LogitSource") {
///       itscale::testing::check_logit_source([] { return my_backend(...); });
///     }
///
/// `make_source()` must return a fresh source each call (equal sources for equal calls): the suite
/// uses separate instances as the reference ("a fresh prefill of the whole prefix"), so state
/// that leaks from one sequence into another shows up as a difference. When the source has a
/// `live_handles()` member the suite also checks that every call leaves exactly the handles it
/// should (no leak on any path, exceptions included).

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/reduce.hpp"

namespace itscale {
inline namespace v0 {
namespace testing {

struct source_suite_options {
  /// The prompt the suite starts from; empty: {1, 2, 3} taken modulo the vocabulary.
  std::vector<token_id> prompt = {};
  /// Largest absolute difference allowed between a row from `extend` and the row of a fresh
  /// prefill of the same prefix. 0 demands bitwise equality (deterministic backends); a backend
  /// whose batched and single-sequence kernels round differently passes a small tolerance.
  float tolerance = 0.0f;
};

namespace detail {

using row = std::vector<float>;

template <class S>
concept has_live_handles = requires(const S& s) {
  { s.live_handles() } -> std::convertible_to<std::size_t>;
};

/// Number of live handles when the source can tell, else 0 (the check is then vacuous).
template <class S>
std::size_t live(const S& s) {
  if constexpr (has_live_handles<S>) return s.live_handles();
  else return 0;
}

/// Copies every row of the current logits view.
template <class S>
std::vector<row> copy_rows(S& s) {
  const logits_view v = s.logits();
  std::vector<row> out;
  for (std::size_t i = 0; i < v.rows; ++i) {
    const auto r = v.row(i);
    out.emplace_back(r.begin(), r.end());
  }
  return out;
}

/// The next-token row of `prefix` computed by a brand-new source: the reference.
template <class Make>
row fresh_row(Make& make_source, const std::vector<token_id>& prefix) {
  auto s = make_source();
  const auto h = s.prefill(prefix);
  row r = copy_rows(s).at(0);
  s.release(h);
  return r;
}

inline bool close(const row& a, const row& b, float tol) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == b[i]) continue;  // covers equal infinities
    if (tol == 0.0f || !(std::fabs(a[i] - b[i]) <= tol)) return false;
  }
  return true;
}

inline std::vector<token_id> plus(std::vector<token_id> p, token_id t) {
  p.push_back(t);
  return p;
}

inline std::string show(const std::vector<token_id>& p) {
  std::string s = "[";
  for (token_id t : p) s += std::to_string(t) + " ";
  return s + "]";
}

}  // namespace detail

/// Runs every check of the suite on sources made by `make_source`.
template <class Make>
void check_logit_source(Make make_source, source_suite_options opt = {}) {
  using namespace detail;
  using S = std::decay_t<decltype(make_source())>;
  using H = typename S::handle;
  static_assert(LogitSource<S>);

  const std::size_t V = make_source().vocab_size();
  REQUIRE(V >= 1);
  // Token i of the suite, always inside the vocabulary (V may be 1).
  const auto tok = [V](std::size_t i) { return static_cast<token_id>(i % V); };
  const std::vector<token_id> prompt =
      opt.prompt.empty() ? std::vector<token_id>{tok(1), tok(2), tok(3)} : opt.prompt;
  const float tol = opt.tolerance;
  const token_id a = tok(5), b = tok(7), c = tok(11), d = tok(13);

  // --- prefill: one row of vocab_size valid logits -------------------------------------------
  {
    INFO("prefill");
    auto s = make_source();
    CHECK(live(s) == 0);
    const H h = s.prefill(prompt);
    const auto v = s.logits();
    CHECK(v.rows == 1);
    CHECK(v.vocab == V);
    REQUIRE(v.data != nullptr);
    CHECK(kernels::find_invalid(v.row(0)) == kernels::npos);
    CHECK(live(s) == (has_live_handles<S> ? 1u : 0u));
    // The same prompt twice gives two handles with the same row.
    const row first = copy_rows(s).at(0);
    const H h2 = s.prefill(prompt);
    CHECK(h2 != h);
    CHECK(close(copy_rows(s).at(0), first, tol));
    s.release(h);
    s.release(h2);
    CHECK(live(s) == 0);
  }

  // --- extend forks: a repeated parent gives independent children -----------------------------
  {
    INFO("fork");
    auto s = make_source();
    const H p = s.prefill(prompt);
    const std::vector<H> parents = {p, p, p, p};
    const std::vector<token_id> tokens = {a, a, b, c};
    std::vector<H> kids(4);
    s.extend(parents, tokens, kids);
    const auto v = s.logits();
    REQUIRE(v.rows == 4);  // the row checks below index rows 0..3
    CHECK(v.vocab == V);
    const auto rows = copy_rows(s);
    // Children of the same parent and token have identical rows.
    CHECK(close(rows[0], rows[1], 0.0f));
    // Every row equals a fresh prefill of the whole prefix.
    for (std::size_t i = 0; i < 4; ++i) {
      CAPTURE(i);
      CHECK(close(rows[i], fresh_row(make_source, plus(prompt, tokens[i])), tol));
    }
    // All live handles are distinct (handles are only equality-comparable: compare pairwise).
    const std::vector<H> all = {p, kids[0], kids[1], kids[2], kids[3]};
    std::size_t same = 0;
    for (std::size_t i = 0; i < all.size(); ++i)
      for (std::size_t j = i + 1; j < all.size(); ++j) same += all[i] == all[j] ? 1u : 0u;
    CHECK(same == 0);
    if constexpr (has_live_handles<S>) CHECK(s.live_handles() == 5);

    // The two identical children evolve independently: extending one does not move the other.
    std::vector<H> g0(1), g1(1);
    s.extend(std::span<const H>(&kids[0], 1), std::vector<token_id>{d}, g0);
    const row r0 = copy_rows(s).at(0);
    s.extend(std::span<const H>(&kids[1], 1), std::vector<token_id>{c}, g1);
    const row r1 = copy_rows(s).at(0);
    CHECK(close(r0, fresh_row(make_source, plus(plus(prompt, a), d)), tol));
    CHECK(close(r1, fresh_row(make_source, plus(plus(prompt, a), c)), tol));

    for (H h : kids) s.release(h);
    s.release(g0[0]);
    s.release(g1[0]);
    s.release(p);
    CHECK(live(s) == 0);
  }

  // --- parents stay valid after extend; releasing a parent leaves its children intact --------
  {
    INFO("parent lifetime");
    auto s = make_source();
    const H p = s.prefill(prompt);
    H child{};
    s.extend(std::span<const H>(&p, 1), std::vector<token_id>{a}, std::span<H>(&child, 1));
    // The parent is still usable: a second child with another token.
    H sibling{};
    s.extend(std::span<const H>(&p, 1), std::vector<token_id>{b}, std::span<H>(&sibling, 1));
    CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(prompt, b)), tol));
    s.release(p);
    CHECK(live(s) == (has_live_handles<S> ? 2u : 0u));
    // The children, extended after their parent is gone, still carry the parent's prefix.
    const std::vector<H> parents = {child, sibling, child};
    const std::vector<token_id> tokens = {c, d, d};
    std::vector<H> grand(3);
    s.extend(parents, tokens, grand);
    const auto rows = copy_rows(s);
    REQUIRE(rows.size() == 3);
    CHECK(close(rows[0], fresh_row(make_source, plus(plus(prompt, a), c)), tol));
    CHECK(close(rows[1], fresh_row(make_source, plus(plus(prompt, b), d)), tol));
    CHECK(close(rows[2], fresh_row(make_source, plus(plus(prompt, a), d)), tol));
    // A handle released and possibly reused by the source must not disturb live ones.
    s.release(child);
    const H again = s.prefill(std::vector<token_id>{tok(17)});
    CHECK(close(copy_rows(s).at(0), fresh_row(make_source, {tok(17)}), tol));
    H great{};
    s.extend(std::span<const H>(&grand[0], 1), std::vector<token_id>{b}, std::span<H>(&great, 1));
    CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(plus(plus(prompt, a), c), b)), tol));
    for (H h : {sibling, grand[0], grand[1], grand[2], again, great}) s.release(h);
    CHECK(live(s) == 0);
  }

  // --- the logits view: stable until the next call, writable, never read back ----------------
  {
    INFO("logits view");
    auto s = make_source();
    const H p = s.prefill(prompt);
    std::vector<H> kids(2);
    s.extend(std::vector<H>{p, p}, std::vector<token_id>{a, b}, kids);
    const auto v1 = s.logits();
    const auto before = copy_rows(s);
    // Calling logits() again and releasing handles do not invalidate or change the view.
    const auto v2 = s.logits();
    CHECK(v2.data == v1.data);
    CHECK(v2.rows == v1.rows);
    CHECK(v2.vocab == v1.vocab);
    s.release(kids[1]);
    CHECK(copy_rows(s) == before);
    // Processors overwrite rows in place; the source must not read them back.
    for (std::size_t i = 0; i < v1.rows; ++i)
      for (float& x : v1.row(i)) x = -std::numeric_limits<float>::infinity();
    H g{};
    s.extend(std::span<const H>(&kids[0], 1), std::vector<token_id>{c}, std::span<H>(&g, 1));
    CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(plus(prompt, a), c)), tol));
    for (float& x : s.logits().row(0)) x = 12345.0f;
    H g2{};
    s.extend(std::span<const H>(&p, 1), std::vector<token_id>{c}, std::span<H>(&g2, 1));
    CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(prompt, c)), tol));
    for (H h : {p, kids[0], g, g2}) s.release(h);
    CHECK(live(s) == 0);
  }

  // --- invalid tokens: invalid_input, nothing created, old handles unchanged -----------------
  {
    INFO("invalid tokens");
    auto s = make_source();
    const H p = s.prefill(prompt);
    const std::size_t live_before = live(s);
    const auto big = static_cast<token_id>(V);
    const token_id extremes[] = {big, -1, std::numeric_limits<token_id>::max(),
                                 std::numeric_limits<token_id>::min()};
    for (token_id bad : extremes) {
      CAPTURE(bad);
      CHECK_THROWS_AS((void)s.prefill(std::vector<token_id>{bad}), invalid_input);
      CHECK_THROWS_AS((void)s.prefill(std::vector<token_id>{tok(0), bad, tok(1)}), invalid_input);
      std::vector<H> one(1);
      CHECK_THROWS_AS(s.extend(std::vector<H>{p}, std::vector<token_id>{bad}, one), invalid_input);
      // A batch with one bad token is rejected whole: the good child is not created either.
      std::vector<H> two(2);
      CHECK_THROWS_AS(s.extend(std::vector<H>{p, p}, std::vector<token_id>{a, bad}, two),
                      invalid_input);
      CHECK(live(s) == live_before);
    }
    // The parent still works and gives the right rows.
    H child{};
    s.extend(std::span<const H>(&p, 1), std::vector<token_id>{a}, std::span<H>(&child, 1));
    CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(prompt, a)), tol));
    s.release(child);
    s.release(p);
    CHECK(live(s) == 0);
  }

  // --- span lengths and empty prompts ---------------------------------------------------------
  {
    INFO("shapes");
    auto s = make_source();
    const H p = s.prefill(prompt);
    const std::size_t live_before = live(s);
    std::vector<H> one(1), two(2);
    CHECK_THROWS_AS(s.extend(std::vector<H>{p, p}, std::vector<token_id>{a}, two), invalid_input);
    CHECK_THROWS_AS(s.extend(std::vector<H>{p}, std::vector<token_id>{a, b}, one), invalid_input);
    CHECK_THROWS_AS(s.extend(std::vector<H>{p}, std::vector<token_id>{a}, two), invalid_input);
    CHECK_THROWS_AS(s.extend(std::vector<H>{p, p}, std::vector<token_id>{a, b}, one), invalid_input);
    CHECK_THROWS_AS(s.extend(std::span<const H>(), std::span<const token_id>(), std::span<H>()),
                    invalid_input);
    CHECK_THROWS_AS((void)s.prefill(std::span<const token_id>()), invalid_input);
    CHECK(live(s) == live_before);
    s.release(p);
    CHECK(live(s) == 0);
  }

  // --- a small search tree: many extends, releases and reused handles -----------------------
  {
    INFO("tree");
    auto s = make_source();
    struct node {
      H h;
      std::vector<token_id> prefix;
    };
    std::vector<node> frontier = {{s.prefill(prompt), prompt}};
    for (std::size_t step = 0; step < 4; ++step) {
      // Each node gets two children (the first node three, so a parent repeats unevenly).
      std::vector<H> parents;
      std::vector<token_id> tokens;
      std::vector<std::vector<token_id>> prefixes;
      for (std::size_t i = 0; i < frontier.size(); ++i) {
        const std::size_t fan = i == 0 ? 3 : 2;
        for (std::size_t j = 0; j < fan; ++j) {
          parents.push_back(frontier[i].h);
          tokens.push_back(tok(step * 7 + i * 3 + j));
          prefixes.push_back(plus(frontier[i].prefix, tokens.back()));
        }
      }
      std::vector<H> kids(parents.size());
      s.extend(parents, tokens, kids);
      const auto rows = copy_rows(s);
      REQUIRE(rows.size() == kids.size());
      for (std::size_t i = 0; i < rows.size(); ++i) {
        CAPTURE(step);
        INFO("prefix " << show(prefixes[i]));
        CHECK(close(rows[i], fresh_row(make_source, prefixes[i]), tol));
      }
      // Beam-like pruning: keep every other child, release the rest and the old frontier.
      for (const node& n : frontier) s.release(n.h);
      std::vector<node> next;
      for (std::size_t i = 0; i < kids.size(); ++i) {
        if (i % 2 == 0 && next.size() < 4) next.push_back({kids[i], prefixes[i]});
        else s.release(kids[i]);
      }
      frontier = std::move(next);
      if constexpr (has_live_handles<S>) CHECK(s.live_handles() == frontier.size());
    }
    for (const node& n : frontier) s.release(n.h);
    CHECK(live(s) == 0);
  }
}

}  // namespace testing
}  // namespace v0
}  // namespace itscale
