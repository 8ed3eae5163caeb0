// The shipped LogitSources (hash_lm, function_source) through the concept test-suite, plus what
// is specific to each: hash_lm against an independent implementation of the conformance formula
// and Hugging Face's own numbers; function_source's two callable forms and its error paths.

#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/logit_source_archetype.hpp"
#include "itscale/backends/function_source.hpp"
#include "itscale/backends/hash_lm.hpp"
#include <itscale/testing/source_suite.hpp>

using itscale::token_id;

// ---- the concept ---------------------------------------------------------------------------------

static_assert(itscale::LogitSource<itscale::logit_source_archetype>);
static_assert(itscale::LogitSource<itscale::hash_lm>);

namespace {
// Near-misses of the concept: each breaks one requirement, so none may model it.
struct release_may_throw {
  using handle = int;
  std::size_t vocab_size() const { return 1; }
  handle prefill(std::span<const token_id>) { return 0; }
  void extend(std::span<const handle>, std::span<const token_id>, std::span<handle>) {}
  itscale::logits_view logits() { return {}; }
  void release(handle) {}  // not noexcept
};
struct handle_not_trivial {
  using handle = std::string;
  std::size_t vocab_size() const { return 1; }
  handle prefill(std::span<const token_id>) { return {}; }
  void extend(std::span<const handle>, std::span<const token_id>, std::span<handle>) {}
  itscale::logits_view logits() { return {}; }
  void release(handle) noexcept {}
};
struct no_extend {
  using handle = int;
  std::size_t vocab_size() const { return 1; }
  handle prefill(std::span<const token_id>) { return 0; }
  itscale::logits_view logits() { return {}; }
  void release(handle) noexcept {}
};
}  // namespace
static_assert(!itscale::LogitSource<release_may_throw>);
static_assert(!itscale::LogitSource<handle_not_trivial>);
static_assert(!itscale::LogitSource<no_extend>);

// ---- an independent hash LM, written from tests/data/conformance/README.md ------------------------------

namespace {

std::uint64_t ref_mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::vector<float> ref_hash_row(std::size_t vocab, std::uint64_t seed, const std::vector<token_id>& prefix) {
  std::uint64_t h = ref_mix(seed);
  for (token_id t : prefix) h = ref_mix(h ^ (static_cast<std::uint64_t>(t) + 1));
  std::vector<float> row(vocab);
  for (std::size_t v = 0; v < vocab; ++v) {
    const std::uint64_t r = ref_mix(h ^ (0x9E3779B97F4A7C15ull * (v + 1)));
    // In double, as the README writes it: (r >> 40) / 2^24 * 16 - 8.
    row[v] = static_cast<float>(static_cast<double>(r >> 40) / 16777216.0 * 16.0 - 8.0);
  }
  return row;
}

std::vector<float> hash_row(itscale::hash_lm& lm, const std::vector<token_id>& prefix) {
  const auto h = lm.prefill(prefix);
  const auto r = lm.logits().row(0);
  std::vector<float> out(r.begin(), r.end());
  lm.release(h);
  return out;
}

}  // namespace

TEST_CASE("hash_lm passes the LogitSource suite") {
  for (std::size_t vocab : {std::size_t{1}, std::size_t{2}, std::size_t{64}, std::size_t{1000}}) {
    CAPTURE(vocab);
    itscale::testing::check_logit_source([vocab] { return itscale::hash_lm(vocab, 11); });
  }
  itscale::testing::check_logit_source([] { return itscale::hash_lm(257, 0xdeadbeefcafef00dull); },
                                       {.prompt = {256, 0, 256, 17}});
}

TEST_CASE("hash_lm matches an independent implementation of the conformance formula") {
  const std::vector<std::vector<token_id>> prefixes = {{0}, {3, 9, 3}, {3, 9, 3, 17}, {5, 6}, {63, 63, 63, 0, 1}};
  for (std::uint64_t seed : {std::uint64_t{0}, std::uint64_t{11}, std::uint64_t{21}, ~std::uint64_t{0}}) {
    for (std::size_t vocab : {std::size_t{64}, std::size_t{257}, std::size_t{32000}}) {
      itscale::hash_lm lm(vocab, seed);
      for (const auto& p : prefixes) {
        CAPTURE(seed);
        CAPTURE(vocab);
        CAPTURE(p.size());
        CHECK(hash_row(lm, p) == ref_hash_row(vocab, seed, p));
      }
    }
  }
  // extend reaches the same rows as the formula on the extended prefix.
  itscale::hash_lm lm(100, 3);
  const auto h = lm.prefill(std::vector<token_id>{7});
  std::vector<itscale::hash_lm::handle> kids(2);
  lm.extend(std::vector<itscale::hash_lm::handle>{h, h}, std::vector<token_id>{99, 0}, kids);
  const auto v = lm.logits();
  CHECK(std::vector<float>(v.row(0).begin(), v.row(0).end()) == ref_hash_row(100, 3, {7, 99}));
  CHECK(std::vector<float>(v.row(1).begin(), v.row(1).end()) == ref_hash_row(100, 3, {7, 0}));
}

TEST_CASE("hash_lm logits are multiples of 2^-20 in [-8, 8)") {
  itscale::hash_lm lm(32000, 21);
  const auto row = hash_row(lm, {5, 6});
  std::size_t bad = 0;
  float lo = 8, hi = -8;
  for (float x : row) {
    const double scaled = static_cast<double>(x) * 1048576.0;  // exact: x * 2^20
    bad += (x >= -8.0f && x < 8.0f && scaled == std::floor(scaled)) ? 0u : 1u;
    lo = std::fmin(lo, x);
    hi = std::fmax(hi, x);
  }
  CHECK(bad == 0);
  // 32000 draws from 2^24 levels reach close to both ends of the range.
  CHECK(lo < -7.99f);
  CHECK(hi > 7.99f);
}

TEST_CASE("hash_lm reproduces Hugging Face's numbers (hf_sampling_chain.json, case 0)") {
  // V = 64, seed = 11, temperature 0.7: HF's scores are logits / 0.7 in float32; the first six
  // entries of the rows after prefix [3, 9, 3] and [3, 9, 3, 17], copied from the file.
  const std::array<float, 6> step0 = {2.40509033203125f,   -8.902958869934082f, -8.981417655944824f,
                                      11.422446250915527f, 9.719776153564453f,  -6.717835903167725f};
  const std::array<float, 6> step1 = {-2.6025280952453613f, 0.9818227291107178f, 3.177198648452759f,
                                      4.290854454040527f,   -6.835296154022217f, 5.888944625854492f};
  itscale::hash_lm lm(64, 11);
  const auto r0 = hash_row(lm, {3, 9, 3});
  const auto r1 = hash_row(lm, {3, 9, 3, 17});
  for (std::size_t v = 0; v < 6; ++v) {
    CAPTURE(v);
    CHECK(r0[v] / 0.7f == step0[v]);
    CHECK(r1[v] / 0.7f == step1[v]);
  }
}

TEST_CASE("hash_lm rejects a zero vocabulary and dead parents") {
  CHECK_THROWS_AS(itscale::hash_lm(0, 1), itscale::invalid_input);
  itscale::hash_lm lm(10, 1);
  const auto keep = lm.prefill(std::vector<token_id>{1});
  const auto dead = lm.prefill(std::vector<token_id>{2});
  lm.release(dead);
  std::vector<itscale::hash_lm::handle> kids(2);
  // The live parent comes first: an implementation that creates children before checking the
  // second parent would leak one.
  CHECK_THROWS_AS(lm.extend(std::vector<itscale::hash_lm::handle>{keep, dead}, std::vector<token_id>{3, 4}, kids),
                  itscale::invalid_input);
  CHECK(lm.live_handles() == 1);
  lm.release(keep);
  CHECK(lm.live_handles() == 0);
}

// ---- function_source ---------------------------------------------------------------------------------

namespace {

// A function of the whole prefix, order-sensitive, unrelated to hash_lm.
float test_logit(std::span<const token_id> prefix, std::size_t v) {
  double acc = 0;
  for (token_id t : prefix) acc = std::fmod(acc * 1.618 + (t + 1) * 0.37, 1000.0);
  return static_cast<float>(3.0 * std::sin(acc + 0.25 * static_cast<double>(v)));
}

constexpr std::size_t fn_vocab = 23;

auto make_row_form() {
  return itscale::from_function(fn_vocab, [](std::span<const token_id> prefix, std::span<float> row) {
    for (std::size_t v = 0; v < row.size(); ++v) row[v] = test_logit(prefix, v);
  });
}

auto make_vector_form() {
  return itscale::from_function(fn_vocab, [](std::span<const token_id> prefix) {
    std::vector<float> row(fn_vocab);
    for (std::size_t v = 0; v < fn_vocab; ++v) row[v] = test_logit(prefix, v);
    return row;
  });
}

}  // namespace

static_assert(itscale::LogitSource<decltype(make_row_form())>);
static_assert(itscale::LogitSource<decltype(make_vector_form())>);

TEST_CASE("function_source passes the LogitSource suite in both callable forms") {
  SUBCASE("f(prefix, row)") { itscale::testing::check_logit_source(make_row_form); }
  SUBCASE("f(prefix) -> vector<float>") { itscale::testing::check_logit_source(make_vector_form); }
  SUBCASE("vocab 1") {
    itscale::testing::check_logit_source([] {
      return itscale::from_function(1, [](std::span<const token_id> p, std::span<float> row) {
        row[0] = static_cast<float>(p.size());
      });
    });
  }
}

TEST_CASE("function_source calls the function with the whole prefix") {
  std::vector<std::vector<token_id>> seen;
  auto src = itscale::from_function(fn_vocab, [&seen](std::span<const token_id> prefix, std::span<float> row) {
    seen.emplace_back(prefix.begin(), prefix.end());
    for (std::size_t v = 0; v < row.size(); ++v) row[v] = test_logit(prefix, v);
  });
  const auto h = src.prefill(std::vector<token_id>{4, 2});
  REQUIRE(seen.size() == 1);
  CHECK(seen[0] == std::vector<token_id>{4, 2});
  std::vector<std::uint32_t> kids(2);
  src.extend(std::vector<std::uint32_t>{h, h}, std::vector<token_id>{22, 0}, kids);
  REQUIRE(seen.size() == 3);
  CHECK(seen[1] == std::vector<token_id>{4, 2, 22});
  CHECK(seen[2] == std::vector<token_id>{4, 2, 0});
  const auto p0 = src.prefix(kids[0]);
  CHECK(std::vector<token_id>(p0.begin(), p0.end()) == std::vector<token_id>{4, 2, 22});
  // The rows are the function's values, unchanged.
  const auto v = src.logits();
  REQUIRE(v.rows == 2);
  std::size_t bad = 0;
  for (std::size_t t = 0; t < fn_vocab; ++t) bad += v.row(1)[t] == test_logit(seen[2], t) ? 0u : 1u;
  CHECK(bad == 0);
}

TEST_CASE("function_source: a function returning the wrong size is a backend_error") {
  for (std::size_t wrong : {fn_vocab - 1, fn_vocab + 1, std::size_t{0}}) {
    CAPTURE(wrong);
    // Right size for prefixes of length < 3, wrong afterwards: prefill works, the extend fails.
    auto src = itscale::from_function(fn_vocab, [wrong](std::span<const token_id> prefix) {
      return std::vector<float>(prefix.size() < 3 ? fn_vocab : wrong, 0.5f);
    });
    CHECK_THROWS_AS((void)src.prefill(std::vector<token_id>{1, 2, 3}), itscale::backend_error);
    CHECK(src.live_handles() == 0);
    const auto h = src.prefill(std::vector<token_id>{1, 2});
    std::vector<std::uint32_t> kids(2);
    try {
      src.extend(std::vector<std::uint32_t>{h, h}, std::vector<token_id>{0, 1}, kids);
      FAIL("extend did not throw");
    } catch (const itscale::backend_error& e) {
      // The message gives both sizes, so the user can find the bug.
      const std::string what = e.what();
      CHECK(what.find(std::to_string(wrong)) != std::string::npos);
      CHECK(what.find(std::to_string(fn_vocab)) != std::string::npos);
    }
    CHECK(src.live_handles() == 1);  // all-or-nothing: no child was created
    src.release(h);
    CHECK(src.live_handles() == 0);
  }
}

TEST_CASE("function_source: the function's own exceptions pass through unchanged") {
  struct model_down : std::runtime_error {
    using std::runtime_error::runtime_error;
  };
  auto src = itscale::from_function(fn_vocab, [](std::span<const token_id> prefix, std::span<float> row) {
    if (prefix.back() == 7) throw model_down("remote model unavailable");
    for (float& x : row) x = 0;
  });
  CHECK_THROWS_AS((void)src.prefill(std::vector<token_id>{7}), model_down);
  const auto h = src.prefill(std::vector<token_id>{1});
  std::vector<std::uint32_t> kids(3);
  CHECK_THROWS_WITH_AS(src.extend(std::vector<std::uint32_t>{h, h, h}, std::vector<token_id>{1, 7, 2}, kids),
                       "remote model unavailable", model_down);
  CHECK(src.live_handles() == 1);
  src.release(h);
}

TEST_CASE("function_source rejects a zero vocabulary") {
  auto f = [](std::span<const token_id>, std::span<float>) {};
  CHECK_THROWS_AS((void)itscale::from_function(0, f), itscale::invalid_input);
}
