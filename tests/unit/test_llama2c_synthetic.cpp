// The llama2.c loader and model on a small synthetic checkpoint built in memory (no files needed):
// every truncation and random corruption of the bytes ends in format_error or a valid load, never
// anything else (run it under ASan to see no read goes out of bounds); the model built from it
// (GQA with two query heads per kv head, separate classifier, contexts across block boundaries)
// passes the LogitSource concept suite, and its sequence_logprobs equals plain teacher forcing.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <itscale/backends/llama2c_checkpoint.hpp>
#include <itscale/backends/llama2c_model.hpp>
#include <itscale/core/scoring.hpp>

#include <itscale/testing/source_suite.hpp>

namespace {

struct shape {
  std::int32_t dim = 8, hidden = 12, layers = 2, heads = 4, kv_heads = 2, vocab = 24, seq = 40;
  bool shared = false;
};

/// A checkpoint of `s` with random weights (RoPE tables included, as export.py writes them).
std::vector<std::byte> synthetic(const shape& s, std::uint32_t seed) {
  std::vector<std::byte> b;
  const auto put = [&](const void* p, std::size_t n) {
    const auto* c = static_cast<const std::byte*>(p);
    // resize + memcpy: GCC 12 at -O3 reports a false -Wstringop-overflow on vector::insert here.
    const std::size_t at = b.size();
    b.resize(at + n);
    std::memcpy(b.data() + at, c, n);
  };
  const std::int32_t header[7] = {s.dim, s.hidden, s.layers, s.heads, s.kv_heads, s.shared ? s.vocab : -s.vocab, s.seq};
  put(header, sizeof header);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  const auto floats = [&](std::size_t n, float scale = 1.0f) {
    for (std::size_t i = 0; i < n; ++i) {
      const float x = normal(rng) * scale;
      put(&x, 4);
    }
  };
  const auto d = static_cast<std::size_t>(s.dim), hd = static_cast<std::size_t>(s.hidden),
             L = static_cast<std::size_t>(s.layers), V = static_cast<std::size_t>(s.vocab),
             kv = d / static_cast<std::size_t>(s.heads) * static_cast<std::size_t>(s.kv_heads),
             half = d / static_cast<std::size_t>(s.heads) / 2;
  floats(V * d);
  floats(L * d);
  floats(L * d * d);
  floats(L * kv * d);
  floats(L * kv * d);
  floats(L * d * d);
  floats(L * d);
  floats(L * hd * d);
  floats(L * d * hd);
  floats(L * hd * d);
  floats(d);
  floats(static_cast<std::size_t>(s.seq) * half * 2);
  if (!s.shared) floats(V * d);
  return b;
}

}  // namespace

TEST_CASE("llama2c synthetic checkpoint: loads with the written shape, both classifier layouts") {
  for (bool shared : {true, false}) {
    CAPTURE(shared);
    shape s;
    s.shared = shared;
    const auto bytes = synthetic(s, 7);
    const auto w = itscale::parse_llama2c_checkpoint(bytes, "synthetic");
    CHECK(w.config.dim == 8);
    CHECK(w.config.kv_dim() == 4);
    CHECK(w.config.kv_group() == 2);
    CHECK(w.config.shared_classifier == shared);
    CHECK(w.layers.size() == 2);
    CHECK(w.layers[1].wk.rows() == 4);
    CHECK(w.classifier().rows() == 24);
    CHECK(w.wcls.size() == (shared ? 0 : 24 * 8));
  }
}

TEST_CASE("llama2c synthetic checkpoint: every truncation and corruption is a format_error or a clean load") {
  const auto good = synthetic({}, 11);
  // Every proper prefix is too short.
  for (std::size_t n = 0; n < good.size(); ++n) {
    CAPTURE(n);
    CHECK_THROWS_AS((void)itscale::parse_llama2c_checkpoint(std::span(good.data(), n), "cut"), itscale::format_error);
  }
  std::mt19937 rng(5);
  const std::int32_t extremes[] = {0, -1, 1, 2, 3, INT32_MIN, INT32_MAX, 1 << 16, 1 << 20, -(1 << 20), 48, 6};
  std::size_t loaded = 0, rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    auto b = good;
    const int kind = trial % 3;
    if (kind == 0) {  // one header field set to an extreme or random value
      const std::int32_t v = trial % 2 ? extremes[static_cast<std::size_t>(trial / 3) % std::size(extremes)]
                                       : static_cast<std::int32_t>(rng());
      std::memcpy(b.data() + 4 * (static_cast<std::size_t>(trial / 2) % 7), &v, 4);
    } else if (kind == 1) {  // random bytes flipped anywhere
      for (int k = 0; k < 4; ++k) b[rng() % b.size()] ^= static_cast<std::byte>(1u << (rng() % 8));
    } else {  // bytes added or removed at the end
      const std::size_t delta = 1 + rng() % 64;
      if (rng() % 2) b.resize(b.size() + delta, std::byte{0});
      else b.resize(b.size() - delta);
    }
    try {
      const auto w = itscale::parse_llama2c_checkpoint(b, "mutated");
      ++loaded;
      // A clean load is a consistent one.
      CHECK(w.layers.size() == w.config.n_layers);
      CHECK(w.token_embedding.rows() == static_cast<Eigen::Index>(w.config.vocab_size));
    } catch (const itscale::format_error& e) {
      ++rejected;
      CHECK(std::string(e.what()).find("mutated: ") != std::string::npos);
    }
  }
  MESSAGE("mutated checkpoints: " << loaded << " loaded, " << rejected << " rejected with format_error");
  CHECK(rejected > 1000);
}

TEST_CASE("llama2c synthetic model: logits are finite, the context limit holds, the concept suite passes") {
  shape s;
  const auto w = std::make_shared<const itscale::llama2c_weights>(
      itscale::parse_llama2c_checkpoint(synthetic(s, 3), "synthetic"));
  for (std::size_t block : {1u, 3u, 16u}) {
    CAPTURE(block);
    itscale::llama2c_model m(w, {.kv_block_tokens = block});
    std::vector<itscale::token_id> prompt(40);
    for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<itscale::token_id>(i % 24);
    const auto h = m.prefill(prompt);
    for (float x : m.logits().row(0)) CHECK(std::isfinite(x));
    std::vector<itscale::llama2c_model::handle> kid(1);
    CHECK_THROWS_AS(m.extend(std::vector{h}, std::vector<itscale::token_id>{1}, kid), itscale::invalid_input);
    m.release(h);
    CHECK(m.memory().blocks_in_use == 0);
  }
  CHECK_THROWS_AS(itscale::llama2c_model(w, {.kv_block_tokens = 0}), itscale::invalid_option);
  CHECK_THROWS_AS(itscale::llama2c_model(nullptr), itscale::invalid_input);
  // Block size 3 puts block boundaries inside the suite's short prefixes.
  itscale::testing::check_logit_source([&] { return itscale::llama2c_model(w, {.kv_block_tokens = 3}); },
                                       {.tolerance = 1e-4f});
}

TEST_CASE("llama2c synthetic model: sequence_logprobs equals teacher forcing one plain extend at a time") {
  // GQA, separate classifier, blocks of 3 (a 30-token span crosses ten block boundaries), and a
  // span that ends exactly at the context (4 + 36 = seq_len 40).
  shape s;
  const auto w = std::make_shared<const itscale::llama2c_weights>(
      itscale::parse_llama2c_checkpoint(synthetic(s, 5), "synthetic"));
  itscale::llama2c_model m(w, {.kv_block_tokens = 3});
  const auto p = m.prefill(std::vector<itscale::token_id>{1, 2, 3, 4});
  const auto pr = m.logits().row(0);
  const std::vector<float> prow(pr.begin(), pr.end());
  std::vector<itscale::token_id> span(36);
  for (std::size_t i = 0; i < span.size(); ++i) span[i] = static_cast<itscale::token_id>((i * 7 + 5) % 24);
  const std::vector<float> lp = itscale::sequence_logprobs(m, p, prow, span);
  REQUIRE(lp.size() == span.size());
  // The reference: log-softmax in double of the rows of single-token extends.
  std::vector<float> row = prow;
  auto cur = p;
  for (std::size_t i = 0; i < span.size(); ++i) {
    CAPTURE(i);
    double mx = -1e300, sum = 0;
    for (float x : row) mx = std::max(mx, double{x});
    for (float x : row) sum += std::exp(double{x} - mx);
    const double want = double{row[static_cast<std::size_t>(span[i])]} - mx - std::log(sum);
    CHECK(std::fabs(double{lp[i]} - want) <= 1e-4);
    if (i + 1 == span.size()) break;
    std::vector<itscale::llama2c_model::handle> kid(1);
    m.extend(std::vector{cur}, std::vector<itscale::token_id>{span[i]}, kid);
    if (cur != p) m.release(cur);
    cur = kid[0];
    const auto r = m.logits().row(0);
    row.assign(r.begin(), r.end());
  }
  if (cur != p) m.release(cur);
  CHECK(m.live_handles() == 1);
  // The whole span (4 + 36 tokens = seq_len) fits; one more token does not, and leaves nothing.
  const auto blocks = m.memory().blocks_in_use;
  const auto full = itscale::extend_span(m, p, span);
  CHECK(m.length(full.handle) == 40);
  std::vector<itscale::token_id> longer = span;
  longer.push_back(1);
  m.release(full.handle);
  CHECK(m.memory().blocks_in_use == blocks);
  CHECK_THROWS_AS((void)itscale::extend_span(m, p, longer), itscale::invalid_input);
  // sequence_logprobs never feeds its last token: 37 tokens after 4 fit a context of 40, 38 do not.
  CHECK(itscale::sequence_logprobs(m, p, prow, std::vector<itscale::token_id>(37, 1)).size() == 37);
  CHECK_THROWS_AS((void)itscale::sequence_logprobs(m, p, prow, std::vector<itscale::token_id>(38, 1)),
                  itscale::invalid_input);
  CHECK(m.memory().blocks_in_use == blocks);
  CHECK(m.live_handles() == 1);
  m.release(p);
}
