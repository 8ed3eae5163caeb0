// Scoring (itscale/core/scoring.hpp) and the two optional capabilities of a LogitSource:
// the concepts and their archetypes; extend_span through the member and through the fallback
// (single-token extends), its handle hygiene on every exception path; sequence_logprobs against
// teacher forcing one plain extend at a time on the hash LM and the llama2.c model (synthetic and
// the shipped checkpoints in ITSCALE_DATA_DIR/models (tests/data/models); the synthetic one in
// test_llama2c_synthetic.cpp); llama2c_model's extend_span in detail.

#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <itscale/backends/function_source.hpp>
#include <itscale/backends/hash_lm.hpp>
#include <itscale/backends/llama2c_checkpoint.hpp>
#include <itscale/backends/llama2c_model.hpp>
#include <itscale/core/errors.hpp>
#include <itscale/core/logit_source.hpp>
#include <itscale/core/logit_source_archetype.hpp>
#include <itscale/core/scoring.hpp>

using itscale::token_id;

// ---- the concepts ------------------------------------------------------------------------------

static_assert(itscale::ScoringLogitSource<itscale::scoring_logit_source_archetype>);
static_assert(itscale::SourceWithCapacity<itscale::logit_source_with_capacity_archetype>);
static_assert(itscale::ScoringLogitSource<itscale::hash_lm>);
static_assert(!itscale::SourceWithCapacity<itscale::hash_lm>);
static_assert(itscale::ScoringLogitSource<itscale::llama2c_model>);
static_assert(itscale::SourceWithCapacity<itscale::llama2c_model>);

namespace {

// Near-misses: each breaks one requirement of a refinement.
struct span_returns_void : itscale::logit_source_archetype {
  void extend_span(handle, std::span<const token_id>) {}
};
struct capacity_may_throw : itscale::logit_source_archetype {
  itscale::source_capacity capacity() const { return {}; }
};
struct capacity_wrong_type : itscale::logit_source_archetype {
  std::size_t capacity() const noexcept { return 0; }
};
}  // namespace
static_assert(!itscale::ScoringLogitSource<span_returns_void>);
static_assert(!itscale::SourceWithCapacity<capacity_may_throw>);
static_assert(!itscale::SourceWithCapacity<capacity_wrong_type>);

namespace {

/// `S` seen through `LogitSource` alone (no extend_span, no capacity): the free functions take
/// their fallback. Counts the calls into the source.
template <class S>
class plain {
 public:
  using handle = typename S::handle;
  explicit plain(S s) : s_(std::move(s)) {}
  [[nodiscard]] std::size_t vocab_size() const noexcept { return s_.vocab_size(); }
  handle prefill(std::span<const token_id> p) {
    ++calls;
    return s_.prefill(p);
  }
  void extend(std::span<const handle> p, std::span<const token_id> t, std::span<handle> c) {
    ++calls;
    s_.extend(p, t, c);
  }
  [[nodiscard]] itscale::logits_view logits() noexcept { return s_.logits(); }
  void release(handle h) noexcept { s_.release(h); }
  [[nodiscard]] std::size_t live_handles() const noexcept { return s_.live_handles(); }
  S& inner() noexcept { return s_; }
  std::size_t calls = 0;

 private:
  S s_;
};
static_assert(itscale::LogitSource<plain<itscale::hash_lm>>);
static_assert(!itscale::ScoringLogitSource<plain<itscale::hash_lm>>);

/// A scoring source whose extend_span shows one row too few: a broken backend.
class short_rows : public itscale::hash_lm {
 public:
  using hash_lm::hash_lm;
  handle extend_span(handle parent, std::span<const token_id> tokens) {
    const handle h = hash_lm::extend_span(parent, tokens);
    short_ = true;
    return h;
  }
  [[nodiscard]] itscale::logits_view logits() noexcept {
    auto v = hash_lm::logits();
    if (short_) --v.rows;
    return v;
  }

 private:
  bool short_ = false;
};
static_assert(itscale::ScoringLogitSource<short_rows>);

std::vector<float> row0(itscale::logits_view v) { return {v.row(0).begin(), v.row(0).end()}; }

/// log_softmax(row)[t] in double.
double log_softmax_at(std::span<const float> row, token_id t) {
  double mx = -std::numeric_limits<double>::infinity();
  for (float x : row) mx = std::max(mx, double{x});
  double sum = 0;
  for (float x : row) sum += std::exp(double{x} - mx);
  return double{row[static_cast<std::size_t>(t)]} - (mx + std::log(sum));
}

/// The reference of sequence_logprobs: each token's log-softmax under the row before it, the rows
/// from plain single-token extends (every handle released).
template <class S>
std::vector<double> teacher_forced(S& s, typename S::handle parent, std::span<const float> parent_row,
                                   std::span<const token_id> tokens) {
  using H = typename S::handle;
  std::vector<double> out;
  std::vector<float> row(parent_row.begin(), parent_row.end());
  H cur = parent;
  bool own = false;
  for (token_id t : tokens) {
    out.push_back(log_softmax_at(row, t));
    H child{};
    s.extend(std::span<const H>(&cur, 1), std::span<const token_id>(&t, 1), std::span<H>(&child, 1));
    if (own) s.release(cur);
    cur = child;
    own = true;
    row = row0(s.logits());
  }
  if (own) s.release(cur);
  return out;
}

std::vector<token_id> some_tokens(std::size_t n, std::size_t vocab, std::size_t salt) {
  std::vector<token_id> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<token_id>((i * 37 + salt * 11 + 3) % vocab);
  return t;
}

double sum(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return s;
}
double sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

const std::filesystem::path models_dir = std::filesystem::path(ITSCALE_DATA_DIR) / "models";

/// The shipped checkpoint `name` (in the repository: a missing one fails).
std::shared_ptr<const itscale::llama2c_weights> checkpoint(const std::string& name) {
  const auto file = models_dir / (name + ".bin");
  REQUIRE_MESSAGE(std::filesystem::exists(file), file.string() << " not found");
  return std::make_shared<const itscale::llama2c_weights>(itscale::load_llama2c_checkpoint(file));
}

}  // namespace

// ---- capacity_of -------------------------------------------------------------------------------

TEST_CASE("capacity_of: unbounded for a source that does not say, the member's values otherwise") {
  const itscale::hash_lm lm(10, 1);
  CHECK(itscale::capacity_of(lm) == itscale::source_capacity{});
  CHECK(itscale::capacity_of(itscale::logit_source_with_capacity_archetype{}) == itscale::source_capacity{0, 0});
  if (const auto w = checkpoint("aidreams260K")) {
    const itscale::llama2c_model m(w);
    CHECK(itscale::capacity_of(m) == itscale::source_capacity{.max_live_sequences = 0, .max_context = 128});
    CHECK(m.capacity().max_context == w->config.seq_len);
  }
}

// ---- extend_span: member and fallback ----------------------------------------------------------

TEST_CASE("extend_span: the fallback's rows and handle equal the member's (hash LM, bit for bit)") {
  itscale::hash_lm lm(300, 5);
  plain<itscale::hash_lm> pl(itscale::hash_lm(300, 5));
  const std::vector<token_id> prompt = {4, 8, 15};
  const auto p1 = lm.prefill(prompt);
  const auto p2 = pl.prefill(prompt);
  for (std::size_t n : {1u, 2u, 9u, 40u}) {
    CAPTURE(n);
    const auto span = some_tokens(n, 300, n);
    const auto a = itscale::extend_span(lm, p1, span);
    pl.calls = 0;
    const auto b = itscale::extend_span(pl, p2, span);
    CHECK(pl.calls == n);  // one extend per token
    CHECK(a.size() == n);
    CHECK(b.size() == n);
    CHECK(a.rows == b.rows);
    // The fallback released every intermediate: parent + the result only.
    CHECK(pl.live_handles() == 2);
    CHECK(lm.live_handles() == 2);
    // Both handles hold the whole span.
    std::vector<itscale::hash_lm::handle> k1(1), k2(1);
    lm.extend(std::vector{a.handle}, std::vector<token_id>{7}, k1);
    pl.extend(std::vector{b.handle}, std::vector<token_id>{7}, k2);
    CHECK(row0(lm.logits()) == row0(pl.logits()));
    lm.release(k1[0]);
    lm.release(a.handle);
    pl.release(k2[0]);
    pl.release(b.handle);
  }
  CHECK(lm.live_handles() == 1);
  CHECK(pl.live_handles() == 1);
}

TEST_CASE("extend_span: bad input is rejected before the source is called") {
  plain<itscale::hash_lm> pl(itscale::hash_lm(50, 1));
  const auto p = pl.prefill(std::vector<token_id>{1});
  pl.calls = 0;
  CHECK_THROWS_AS((void)itscale::extend_span(pl, p, std::span<const token_id>()), itscale::invalid_input);
  CHECK_THROWS_AS((void)itscale::extend_span(pl, p, std::vector<token_id>{1, 2, 50}), itscale::invalid_input);
  CHECK_THROWS_AS((void)itscale::extend_span(pl, p, std::vector<token_id>{-1, 2}), itscale::invalid_input);
  CHECK(pl.calls == 0);
  CHECK(pl.live_handles() == 1);
  // A dead parent: the source's own error, nothing left behind.
  pl.release(p);
  CHECK_THROWS_AS((void)itscale::extend_span(pl, p, std::vector<token_id>{1, 2}), itscale::invalid_input);
  itscale::hash_lm lm(50, 1);
  CHECK_THROWS_AS((void)itscale::extend_span(lm, itscale::hash_lm::handle{3}, std::vector<token_id>{1}),
                  itscale::invalid_input);
  CHECK(pl.live_handles() == 0);
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("extend_span: an exception part-way releases every handle it made (member and fallback)") {
  struct model_down : std::runtime_error {
    using std::runtime_error::runtime_error;
  };
  // Throws at prefixes of length 6; NaN at length 9.
  auto f = [](std::span<const token_id> prefix, std::span<float> row) {
    if (prefix.size() == 6) throw model_down("remote model unavailable");
    for (std::size_t v = 0; v < row.size(); ++v) row[v] = static_cast<float>(v) * 0.25f - static_cast<float>(prefix.size());
    if (prefix.size() == 9) row[3] = std::numeric_limits<float>::quiet_NaN();
  };
  auto member = itscale::from_function(12, f);
  plain fallback(itscale::from_function(12, f));
  const std::vector<token_id> prompt = {1, 2, 3};
  const auto pm = member.prefill(prompt);
  const auto pf = fallback.prefill(prompt);
  const auto pf_row = row0(fallback.logits());
  // 3 + 4 tokens reaches length 6 inside the span.
  const std::vector<token_id> four = {4, 5, 6, 7};
  CHECK_THROWS_AS((void)itscale::extend_span(member, pm, four), model_down);
  CHECK_THROWS_AS((void)itscale::extend_span(fallback, pf, four), model_down);
  CHECK(member.live_handles() == 1);
  CHECK(fallback.live_handles() == 1);
  CHECK_THROWS_AS((void)itscale::sequence_logprobs(fallback, pf, pf_row, std::vector<token_id>{4, 5, 6, 7, 8}),
                  model_down);
  CHECK(fallback.live_handles() == 1);

  // Past the throwing length, NaN at length 9: a backend_error naming it, nothing left behind.
  const std::vector<token_id> seven = {1, 2, 3, 4, 5, 6, 7};
  const auto qm = member.prefill(seven);
  const auto qf = fallback.prefill(seven);
  for (auto* what : {"member", "fallback"}) {
    CAPTURE(what);
    try {
      if (std::string(what) == "member") (void)itscale::extend_span(member, qm, std::vector<token_id>{1, 2, 3, 4});
      else (void)itscale::extend_span(fallback, qf, std::vector<token_id>{1, 2, 3, 4});
      FAIL("no exception");
    } catch (const itscale::backend_error& e) {
      CHECK(std::string(e.what()).find("NaN") != std::string::npos);
      CHECK(std::string(e.what()).find("token 3") != std::string::npos);
    }
  }
  CHECK(member.live_handles() == 2);
  CHECK(fallback.live_handles() == 2);
  // Up to length 8 the source is fine, and both paths agree.
  const auto a = itscale::extend_span(member, qm, std::vector<token_id>{1});
  const auto b = itscale::extend_span(fallback, qf, std::vector<token_id>{1});
  CHECK(a.rows == b.rows);
  member.release(a.handle);
  fallback.release(b.handle);
  for (auto h : {pm, qm}) member.release(h);
  for (auto h : {pf, qf}) fallback.release(h);
  CHECK(member.live_handles() == 0);
  CHECK(fallback.live_handles() == 0);
}

TEST_CASE("extend_span: a source showing the wrong number of rows is a backend_error, its handle released") {
  short_rows s(20, 3);
  const auto p = s.prefill(std::vector<token_id>{1});
  CHECK_THROWS_AS((void)itscale::extend_span(s, p, std::vector<token_id>{1, 2, 3}), itscale::backend_error);
  CHECK(s.live_handles() == 1);
  s.release(p);
}

// ---- sequence_logprobs -------------------------------------------------------------------------

TEST_CASE("sequence_logprobs equals teacher forcing one plain extend at a time (hash LM)") {
  for (std::size_t vocab : {2u, 64u, 32000u}) {
    CAPTURE(vocab);
    itscale::hash_lm lm(vocab, 17);
    plain<itscale::hash_lm> pl(itscale::hash_lm(vocab, 17));
    const auto p = lm.prefill(std::vector<token_id>{1, 0, 1});
    const auto prow = row0(lm.logits());
    const auto pp = pl.prefill(std::vector<token_id>{1, 0, 1});
    for (std::size_t n : {1u, 2u, 33u}) {
      CAPTURE(n);
      const auto span = some_tokens(n, vocab, 2);
      const auto lp = itscale::sequence_logprobs(lm, p, prow, span);
      const auto ref = teacher_forced(lm, p, prow, span);
      REQUIRE(lp.size() == n);
      for (std::size_t i = 0; i < n; ++i) {
        CAPTURE(i);
        CHECK(std::fabs(double{lp[i]} - ref[i]) <= 1e-5);
        CHECK(lp[i] <= 0.0f);
      }
      CHECK(std::fabs(sum(lp) - sum(ref)) <= 1e-5 * static_cast<double>(n));
      // The fallback (plain extends inside sequence_logprobs) gives the same floats.
      pl.calls = 0;
      CHECK(itscale::sequence_logprobs(pl, pp, prow, span) == lp);
      CHECK(pl.calls == n - 1);  // the last token's row is not needed
    }
    CHECK(lm.live_handles() == 1);
    CHECK(pl.live_handles() == 1);
  }
}

TEST_CASE("sequence_logprobs: input checks, masked tokens") {
  itscale::hash_lm lm(16, 2);
  const auto p = lm.prefill(std::vector<token_id>{3});
  auto prow = row0(lm.logits());
  CHECK_THROWS_AS((void)itscale::sequence_logprobs(lm, p, prow, std::span<const token_id>()), itscale::invalid_input);
  CHECK_THROWS_AS((void)itscale::sequence_logprobs(lm, p, prow, std::vector<token_id>{1, 16}), itscale::invalid_input);
  CHECK_THROWS_AS((void)itscale::sequence_logprobs(lm, p, std::span<const float>(prow).first(15), std::vector<token_id>{1}),
                  itscale::invalid_input);
  auto nan_row = prow;
  nan_row[4] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS((void)itscale::sequence_logprobs(lm, p, nan_row, std::vector<token_id>{1}),
                       "itscale: sequence_logprobs: parent_row[4] is NaN", itscale::invalid_input);
  auto inf_row = prow;
  inf_row[0] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS((void)itscale::sequence_logprobs(lm, p, inf_row, std::vector<token_id>{1}), itscale::invalid_input);
  // A masked forced token has log-probability -inf; the others are unaffected by the mask only
  // through the normaliser.
  auto masked = prow;
  masked[5] = itscale::masked_logit;
  const auto lp = itscale::sequence_logprobs(lm, p, masked, std::vector<token_id>{5, 6});
  CHECK(lp[0] == -std::numeric_limits<float>::infinity());
  CHECK(std::isfinite(lp[1]));
  // An all-masked row: -inf, not NaN.
  std::vector<float> none(16, itscale::masked_logit);
  CHECK(itscale::sequence_logprobs(lm, p, none, std::vector<token_id>{2})[0] == -std::numeric_limits<float>::infinity());
  CHECK(lm.live_handles() == 1);
}

TEST_CASE("sequence_logprobs equals teacher forcing one plain extend at a time (llama2.c checkpoints)") {
  for (const std::string name : {"aidreams260K", "stories260K"}) {
    CAPTURE(name);
    const auto w = checkpoint(name);
    if (!w) continue;
    itscale::llama2c_model m(w);
    const std::vector<token_id> prompt = {1, 400, 34, 301, 92};
    const auto p = m.prefill(prompt);
    const auto prow = row0(m.logits());
    for (std::size_t n : {1u, 2u, 17u, 64u}) {
      CAPTURE(n);
      const auto span = some_tokens(n, m.vocab_size(), n);
      const auto lp = itscale::sequence_logprobs(m, p, prow, span);
      const auto ref = teacher_forced(m, p, prow, span);
      REQUIRE(lp.size() == n);
      for (std::size_t i = 0; i < n; ++i) {
        CAPTURE(i);
        CHECK(std::fabs(double{lp[i]} - ref[i]) <= 1e-4);
      }
      CHECK(std::fabs(sum(lp) - sum(ref)) <= 1e-4 * static_cast<double>(n));
      CHECK(m.live_handles() == 1);
    }
  }
}

// ---- llama2c_model::extend_span ------------------------------------------------------------------

TEST_CASE("llama2c extend_span: one token is bit-identical to extend; a span matches single extends") {
  for (const std::string name : {"aidreams260K", "stories260K"}) {
    CAPTURE(name);
    const auto w = checkpoint(name);
    if (!w) continue;
    itscale::llama2c_model m(w);
    const auto p = m.prefill(some_tokens(21, m.vocab_size(), 4));  // a partial KV block
    // One token: the same batch of one row as extend.
    const auto one = m.extend_span(p, std::vector<token_id>{77});
    const auto span_row = row0(m.logits());
    std::vector<itscale::llama2c_model::handle> kid(1);
    m.extend(std::vector{p}, std::vector<token_id>{77}, kid);
    CHECK(row0(m.logits()) == span_row);
    m.release(one);
    m.release(kid[0]);
    // 64 tokens: rows of one 64-row batch against 64 one-row batches.
    const auto span = some_tokens(64, m.vocab_size(), 9);
    const auto h = m.extend_span(p, span);
    CHECK(m.length(h) == 21 + 64);
    const auto v = m.logits();
    REQUIRE(v.rows == 64);
    const std::vector<float> rows(v.data, v.data + 64 * v.vocab);
    float worst = 0;
    auto cur = p;
    for (std::size_t i = 0; i < span.size(); ++i) {
      m.extend(std::vector{cur}, std::vector<token_id>{span[i]}, kid);
      if (cur != p) m.release(cur);
      cur = kid[0];
      const auto r = m.logits().row(0);
      for (std::size_t t = 0; t < r.size(); ++t)
        worst = std::max(worst, std::fabs(r[t] - rows[i * v.vocab + t]));
    }
    m.release(cur);
    CHECK(worst <= 1e-4f);
    m.release(h);
    m.release(p);
    CHECK(m.live_handles() == 0);
    CHECK(m.memory().blocks_in_use == 0);
  }
}

TEST_CASE("llama2c extend_span: the parent's blocks are shared, the span's are new; nothing leaks on failure") {
  const auto w = checkpoint("aidreams260K");
  if (!w) return;
  itscale::llama2c_model m(w);  // 16-token blocks, context 128
  const auto p = m.prefill(some_tokens(32, m.vocab_size(), 1));  // two full blocks
  const auto before = m.memory().blocks_in_use;
  const auto h = m.extend_span(p, some_tokens(20, m.vocab_size(), 2));
  CHECK(m.memory().blocks_in_use == before + 2);  // positions 32..51
  // Too long for the context (32 + 97 > 128), a bad token at the end, a dead parent: no change.
  CHECK_THROWS_AS((void)m.extend_span(p, some_tokens(97, m.vocab_size(), 3)), itscale::invalid_input);
  CHECK_THROWS_AS((void)m.extend_span(p, std::vector<token_id>{1, 2, 512}), itscale::invalid_input);
  CHECK_THROWS_AS((void)m.extend_span(99, std::vector<token_id>{1}), itscale::invalid_input);
  CHECK(m.memory().blocks_in_use == before + 2);
  CHECK(m.live_handles() == 2);
  // 32 + 96 = 128 fits exactly.
  const auto full = m.extend_span(p, some_tokens(96, m.vocab_size(), 3));
  CHECK(m.length(full) == 128);
  CHECK(m.memory().blocks_in_use == before + 2 + 6);
  for (auto x : {h, full, p}) m.release(x);
  CHECK(m.memory().blocks_in_use == 0);
}

TEST_CASE("llama2c extend_span: bit-identical with 1 and 2 threads") {
  const auto w = checkpoint("stories260K");
  if (!w) return;
  std::vector<std::vector<float>> out;
  for (std::size_t threads : {1u, 2u}) {
    itscale::llama2c_model m(w, {.threads = threads});
    const auto p = m.prefill(some_tokens(10, m.vocab_size(), 5));
    const auto h = m.extend_span(p, some_tokens(40, m.vocab_size(), 6));
    const auto v = m.logits();
    out.emplace_back(v.data, v.data + v.rows * v.vocab);
    m.release(h);
    m.release(p);
  }
  CHECK(out[0] == out[1]);
}
