#pragma once
/// \file source_suite.hpp
/// The concept test-suite every `LogitSource` backend runs: the lifetime and validity rules of
/// itscale/core/logit_source.hpp, checked through the concept alone, plus the optional
/// capabilities the source models (`ScoringLogitSource`: `extend_span` against single-token
/// extends and fresh prefills, all-or-nothing, handle hygiene; `SourceWithCapacity`: the declared
/// limits hold), and the free `extend_span` / `sequence_logprobs` of itscale/core/scoring.hpp on it.
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

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/scoring.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/reduce.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace testing {

struct source_suite_options {
  /// The prompt the suite starts from; empty: {1, 2, 3} taken modulo the vocabulary.
  std::vector<token_id> prompt = {};
  /// Largest absolute difference allowed between a row from `extend` and the row of a fresh
  /// prefill of the same prefix. 0 demands bitwise equality (deterministic backends); a backend
  /// whose batched and single-sequence kernels round differently passes a small tolerance.
  float tolerance = 0.0f;
  /// A `SourceWithCapacity` whose `max_context` is at most this gets its context limit exercised
  /// (a sequence of exactly `max_context` tokens, then one token more); a longer context is only
  /// checked for consistency, to keep the suite fast.
  std::size_t max_context_checked = 4096;
  /// Likewise for `max_live_sequences`: up to this many live handles are made at once.
  std::size_t max_live_checked = 256;
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

inline std::vector<token_id> plus(std::vector<token_id> p, std::span<const token_id> more) {
  p.insert(p.end(), more.begin(), more.end());
  return p;
}

/// 1 when `r` holds a NaN or +inf (a logit no source may return), else 0.
inline std::size_t find_invalid_count(const row& r) {
  return kernels::find_invalid(r) == kernels::npos ? 0u : 1u;
}

/// log_softmax(row)[t] in double: the reference of `sequence_logprobs`.
inline double log_softmax_at(const row& r, token_id t) {
  const double x = r.at(static_cast<std::size_t>(t));
  if (x == -std::numeric_limits<double>::infinity()) return x;
  double mx = -std::numeric_limits<double>::infinity();
  for (float v : r) mx = std::max(mx, double{v});
  double sum = 0;
  for (float v : r) sum += std::exp(double{v} - mx);
  return x - (mx + std::log(sum));
}

/// The rows of `tokens` forced after `parent` one `extend` at a time (the definition
/// `extend_span` must agree with); every handle it makes is released.
template <class S>
std::vector<row> single_extend_rows(S& s, typename S::handle parent, std::span<const token_id> tokens) {
  using H = typename S::handle;
  std::vector<row> out;
  H cur = parent;
  bool own = false;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    H child{};
    s.extend(std::span<const H>(&cur, 1), tokens.subspan(i, 1), std::span<H>(&child, 1));
    if (own) s.release(cur);
    cur = child;
    own = true;
    out.push_back(copy_rows(s).at(0));
  }
  if (own) s.release(cur);
  return out;
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

  // The context left after the prompt (the suite's longest sequences stay under it).
  const source_capacity cap = capacity_of(make_source());
  const std::size_t room = cap.max_context == 0 ? std::size_t{64}
                           : cap.max_context > prompt.size() ? cap.max_context - prompt.size()
                                                             : 0;

  // --- extend_span (ScoringLogitSource): rows, handles, all-or-nothing -----------------------
  if constexpr (ScoringLogitSource<S>) {
    INFO("extend_span");
    if (room < 5) {
      MESSAGE("extend_span checks skipped: max_context " << cap.max_context << " leaves " << room
                                                         << " tokens after the prompt");
    } else {
      auto s = make_source();
      const H p = s.prefill(prompt);
      const std::size_t live0 = live(s);
      // Spans of 1, 2, 7 and up to 20 tokens (20 crosses KV-block boundaries for most block sizes),
      // leaving room for one more token after them.
      for (std::size_t len : {std::size_t{1}, std::size_t{2}, std::size_t{7}, std::size_t{20}}) {
        len = std::min(len, room - 1);
        CAPTURE(len);
        std::vector<token_id> span(len);
        for (std::size_t i = 0; i < len; ++i) span[i] = tok(3 * i + len);
        const H h = s.extend_span(p, span);
        CHECK(h != p);
        CHECK(live(s) == live0 + (has_live_handles<S> ? 1u : 0u));
        const logits_view v = s.logits();
        REQUIRE(v.rows == len);
        CHECK(v.vocab == V);
        REQUIRE(v.data != nullptr);
        const auto rows = copy_rows(s);
        std::size_t invalid = 0;
        for (const row& r : rows) invalid += find_invalid_count(r);
        CHECK(invalid == 0);
        // Row i = a fresh prefill of prompt + span[0..i] = the i-th of single-token extends.
        const auto singles = single_extend_rows(s, p, span);
        for (std::size_t i = 0; i < len; ++i) {
          CAPTURE(i);
          const auto prefix = plus(prompt, std::span<const token_id>(span).first(i + 1));
          CHECK(close(rows[i], fresh_row(make_source, prefix), tol));
          CHECK(close(rows[i], singles[i], tol));
        }
        CHECK(live(s) == live0 + (has_live_handles<S> ? 1u : 0u));
        // The new handle holds the whole span: extending it continues after the last token.
        H next{};
        s.extend(std::span<const H>(&h, 1), std::vector<token_id>{d}, std::span<H>(&next, 1));
        CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(plus(prompt, span), d)), tol));
        // The parent is unchanged.
        H sib{};
        s.extend(std::span<const H>(&p, 1), std::vector<token_id>{a}, std::span<H>(&sib, 1));
        CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(prompt, a)), tol));
        for (H x : {h, next, sib}) s.release(x);
        CHECK(live(s) == live0);
      }

      // The same span twice from one parent: two independent handles with identical rows.
      {
        const std::vector<token_id> span = {b, c, d};
        const H h1 = s.extend_span(p, span);
        const auto rows1 = copy_rows(s);
        const H h2 = s.extend_span(p, span);
        const auto rows2 = copy_rows(s);
        CHECK(h1 != h2);
        REQUIRE(rows1.size() == 3);
        REQUIRE(rows2.size() == 3);
        for (std::size_t i = 0; i < 3; ++i) CHECK(close(rows1[i], rows2[i], 0.0f));
        // Extending one does not move the other.
        H g1{};
        s.extend(std::span<const H>(&h1, 1), std::vector<token_id>{a}, std::span<H>(&g1, 1));
        s.release(h1);
        H g2{};
        s.extend(std::span<const H>(&h2, 1), std::vector<token_id>{b}, std::span<H>(&g2, 1));
        CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(plus(prompt, span), b)), tol));
        for (H x : {h2, g1, g2}) s.release(x);
        CHECK(live(s) == live0);
      }

      // A child of the parent already wrote after the parent's last token (a KV cache shares
      // that block): a span from the parent must not disturb the child, nor read its token.
      // Then a span of a span, with its parent released first.
      {
        H child{};
        s.extend(std::span<const H>(&p, 1), std::vector<token_id>{a}, std::span<H>(&child, 1));
        const std::vector<token_id> span = {b, c};
        const H h1 = s.extend_span(p, span);
        const auto rows1 = copy_rows(s);
        REQUIRE(rows1.size() == 2);
        CHECK(close(rows1[1], fresh_row(make_source, plus(prompt, span)), tol));
        H g{};
        s.extend(std::span<const H>(&child, 1), std::vector<token_id>{d}, std::span<H>(&g, 1));
        CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(plus(prompt, a), d)), tol));
        const std::vector<token_id> more = {d, a};
        const H h2 = s.extend_span(h1, more);
        s.release(h1);
        const auto rows2 = copy_rows(s);
        REQUIRE(rows2.size() == 2);
        CHECK(close(rows2[0], fresh_row(make_source, plus(plus(prompt, span), d)), tol));
        CHECK(close(rows2[1], fresh_row(make_source, plus(plus(prompt, span), more)), tol));
        // Processors overwrite rows in place; the source must not read them back.
        for (std::size_t i = 0; i < s.logits().rows; ++i)
          for (float& x : s.logits().row(i)) x = 12345.0f;
        const H h3 = s.extend_span(h2, std::vector<token_id>{b});
        CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(plus(plus(prompt, span), more), b)), tol));
        for (H x : {child, g, h2, h3}) s.release(x);
        CHECK(live(s) == live0);
      }

      // All-or-nothing: a bad token anywhere in the span, or an empty span, creates nothing.
      {
        const auto big = static_cast<token_id>(V);
        const token_id extremes[] = {big, -1, std::numeric_limits<token_id>::max(),
                                     std::numeric_limits<token_id>::min()};
        for (token_id bad : extremes) {
          CAPTURE(bad);
          CHECK_THROWS_AS((void)s.extend_span(p, std::vector<token_id>{bad}), invalid_input);
          CHECK_THROWS_AS((void)s.extend_span(p, std::vector<token_id>{bad, a, b}), invalid_input);
          CHECK_THROWS_AS((void)s.extend_span(p, std::vector<token_id>{a, bad, b}), invalid_input);
          CHECK_THROWS_AS((void)s.extend_span(p, std::vector<token_id>{a, b, bad}), invalid_input);
          CHECK(live(s) == live0);
        }
        CHECK_THROWS_AS((void)s.extend_span(p, std::span<const token_id>()), invalid_input);
        CHECK(live(s) == live0);
        const H h = s.extend_span(p, std::vector<token_id>{c});
        CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(prompt, c)), tol));
        s.release(h);
      }

      // Released span handles may be reused by the source without disturbing live ones.
      {
        const H keep = s.extend_span(p, std::vector<token_id>{a, b});
        const H gone = s.extend_span(p, std::vector<token_id>{c, d, a});
        s.release(gone);
        const H again = s.extend_span(p, std::vector<token_id>{d});
        CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(prompt, d)), tol));
        const H after = s.extend_span(keep, std::vector<token_id>{c});
        CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(plus(plus(prompt, a), b), c)), tol));
        for (H x : {keep, again, after}) s.release(x);
      }
      s.release(p);
      CHECK(live(s) == 0);
    }
  }

  // --- the free extend_span and sequence_logprobs (itscale/core/scoring.hpp) on this source ----
  // They use the member extend_span when the source has one, else single-token extends.
  if (room >= 5) {
    INFO("scoring.hpp");
    auto s = make_source();
    const H p = s.prefill(prompt);
    const row prow = copy_rows(s).at(0);
    const std::size_t live0 = live(s);
    const std::vector<token_id> span = {c, a, d, b};
    const span_extension<S> ext = extend_span(s, p, span);
    CHECK(live(s) == live0 + (has_live_handles<S> ? 1u : 0u));
    CHECK(ext.handle != p);
    REQUIRE(ext.size() == span.size());
    CHECK(ext.vocab == V);
    for (std::size_t i = 0; i < span.size(); ++i) {
      CAPTURE(i);
      const row r(ext.row(i).begin(), ext.row(i).end());
      CHECK(close(r, fresh_row(make_source, plus(prompt, std::span<const token_id>(span).first(i + 1))), tol));
    }
    H next{};
    s.extend(std::span<const H>(&ext.handle, 1), std::vector<token_id>{a}, std::span<H>(&next, 1));
    CHECK(close(copy_rows(s).at(0), fresh_row(make_source, plus(plus(prompt, span), a)), tol));
    s.release(next);
    s.release(ext.handle);
    CHECK(live(s) == live0);
    CHECK_THROWS_AS((void)extend_span(s, p, std::vector<token_id>{a, static_cast<token_id>(V)}), invalid_input);
    CHECK_THROWS_AS((void)extend_span(s, p, std::span<const token_id>()), invalid_input);
    CHECK(live(s) == live0);

    // sequence_logprobs = log-softmax of each forced token, in double over fresh rows.
    const std::vector<float> lp = sequence_logprobs(s, p, prow, span);
    CHECK(live(s) == live0);
    REQUIRE(lp.size() == span.size());
    for (std::size_t i = 0; i < span.size(); ++i) {
      CAPTURE(i);
      const row r = i == 0 ? prow : fresh_row(make_source, plus(prompt, std::span<const token_id>(span).first(i)));
      const double want = log_softmax_at(r, span[i]);
      // A masked forced token is -inf on both sides (a contrastive source masks implausible tokens).
      CHECK((double{lp[i]} == want || std::fabs(double{lp[i]} - want) <= 2.0 * double{tol} + 1e-5 + 1e-6 * std::fabs(want)));
    }
    const std::vector<float> one = sequence_logprobs(s, p, prow, std::span<const token_id>(span).first(1));
    REQUIRE(one.size() == 1);
    CHECK(one[0] == lp[0]);
    CHECK_THROWS_AS((void)sequence_logprobs(s, p, prow, std::vector<token_id>{a, -1}), invalid_input);
    CHECK(live(s) == live0);
    s.release(p);
    CHECK(live(s) == 0);
  }

  // --- capacity (SourceWithCapacity): the declared limits hold --------------------------------
  if constexpr (SourceWithCapacity<S>) {
    INFO("capacity");
    auto s = make_source();
    const source_capacity c0 = s.capacity();
    CHECK(capacity_of(s) == c0);
    CAPTURE(c0.max_context);
    CAPTURE(c0.max_live_sequences);
    // The suite has made sequences of prompt + 2 tokens all along.
    CHECK((c0.max_context == 0 || c0.max_context >= prompt.size() + 2));
    if (c0.max_context != 0 && c0.max_context <= opt.max_context_checked) {
      const std::size_t n = c0.max_context;
      std::vector<token_id> full(n);
      for (std::size_t i = 0; i < n; ++i) full[i] = tok(i * 5 + 1);
      // Exactly max_context tokens: accepted, with a valid row.
      const H h = s.prefill(full);
      const std::size_t live1 = live(s);
      REQUIRE(s.logits().rows == 1);
      CHECK(find_invalid_count(copy_rows(s).at(0)) == 0);
      // One more: rejected, nothing created.
      H kid{};
      CHECK_THROWS_AS(s.extend(std::span<const H>(&h, 1), std::vector<token_id>{a}, std::span<H>(&kid, 1)),
                      invalid_input);
      CHECK_THROWS_AS((void)s.prefill(plus(full, a)), invalid_input);
      CHECK(live(s) == live1);
      if constexpr (ScoringLogitSource<S>) {
        CHECK_THROWS_AS((void)s.extend_span(h, std::vector<token_id>{a}), invalid_input);
        // A span that reaches the limit exactly works; one token longer does not.
        if (n >= 4) {
          const std::vector<token_id> head(full.begin(), full.end() - 3);
          const H q = s.prefill(head);
          const std::size_t live2 = live(s);
          CHECK_THROWS_AS((void)s.extend_span(q, std::vector<token_id>{a, b, c, d}), invalid_input);
          CHECK(live(s) == live2);
          const std::vector<token_id> tail(full.end() - 3, full.end());
          const H r = s.extend_span(q, tail);
          const auto rows = copy_rows(s);
          REQUIRE(rows.size() == 3);
          CHECK(close(rows[2], fresh_row(make_source, full), tol));
          s.release(q);
          s.release(r);
        }
      }
      s.release(h);
      CHECK(live(s) == 0);
    }
    if (c0.max_live_sequences != 0 && c0.max_live_sequences <= opt.max_live_checked) {
      // max_live_sequences handles at once.
      std::vector<H> hs;
      for (std::size_t i = 0; i < c0.max_live_sequences; ++i) hs.push_back(s.prefill(prompt));
      std::size_t same = 0;
      for (std::size_t i = 0; i < hs.size(); ++i)
        for (std::size_t j = i + 1; j < hs.size(); ++j) same += hs[i] == hs[j] ? 1u : 0u;
      CHECK(same == 0);
      for (H h : hs) s.release(h);
      CHECK(live(s) == 0);
    }
    CHECK(s.capacity() == c0);  // constant over the source's life
  } else {
    CHECK(capacity_of(make_source()) == source_capacity{});
  }
}

}  // namespace testing
ITSCALE_END_NAMESPACE
