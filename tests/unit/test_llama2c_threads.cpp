// llama2c_model's optional threading: the logits are bit-identical for 1, 2 and 3 threads (prefill
// of a long prompt, batched extends with forks, several steps), on a synthetic checkpoint built in
// memory and on the shipped checkpoints (ITSCALE_DATA_DIR/models, tests/data/models by default); the
// fork-join pool runs every task once and rethrows a task's exception, staying usable after it.

#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <itscale/backends/support/fork_join_pool.hpp>
#include <itscale/backends/llama2c_checkpoint.hpp>
#include <itscale/backends/llama2c_model.hpp>

namespace {

using itscale::token_id;
using weights_ptr = std::shared_ptr<const itscale::llama2c_weights>;

/// A random checkpoint whose products span several column blocks (hidden 100, vocab 80), GQA 6/2.
weights_ptr threads_synthetic() {
  const std::int32_t dim = 48, hidden = 100, layers = 2, heads = 6, kv_heads = 2, vocab = 80, seq = 64;
  std::vector<std::byte> b;
  const auto put = [&](const void* p, std::size_t n) {
    const std::size_t at = b.size();  // resize + memcpy: see the GCC 12 note in test_llama2c_synthetic.cpp
    b.resize(at + n);
    std::memcpy(b.data() + at, p, n);
  };
  const std::int32_t header[7] = {dim, hidden, layers, heads, kv_heads, -vocab, seq};
  put(header, sizeof header);
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 0.4f);
  const std::size_t d = dim, hd = hidden, L = layers, V = vocab, kv = d / heads * kv_heads, half = d / heads / 2;
  const std::size_t counts[] = {V * d, L * d, L * d * d, L * kv * d, L * kv * d, L * d * d, L * d,
                                L * hd * d, L * d * hd, L * hd * d, d, std::size_t{seq} * half * 2, V * d};
  for (std::size_t n : counts)
    for (std::size_t i = 0; i < n; ++i) {
      const float x = normal(rng);
      put(&x, 4);
    }
  return std::make_shared<const itscale::llama2c_weights>(itscale::parse_llama2c_checkpoint(b, "threads-synthetic"));
}

/// Every logits row a fixed workload produces: a prompt of `prompt_len`, then `steps` batched
/// extends in which each of `width` sequences forks into two children (one kept).
std::vector<float> workload(const weights_ptr& w, std::size_t threads, std::size_t prompt_len, std::size_t width,
                            std::size_t steps) {
  itscale::llama2c_model m(w, {.kv_block_tokens = 16, .threads = threads});
  REQUIRE(m.threads() == threads);
  const auto vocab = static_cast<token_id>(m.vocab_size());
  std::vector<token_id> prompt(prompt_len);
  for (std::size_t i = 0; i < prompt_len; ++i) prompt[i] = static_cast<token_id>((i * 7 + 3) % static_cast<std::size_t>(vocab));
  std::vector<float> out;
  const auto keep = [&] {
    const auto v = m.logits();
    out.insert(out.end(), v.data, v.data + v.rows * v.vocab);
  };
  std::vector<itscale::llama2c_model::handle> live{m.prefill(prompt)};
  keep();
  for (std::size_t s = 0; s < steps; ++s) {
    std::vector<itscale::llama2c_model::handle> parents;
    std::vector<token_id> toks;
    for (std::size_t i = 0; i < std::max(width, live.size()); ++i) {
      parents.push_back(live[i % live.size()]);
      toks.push_back(static_cast<token_id>((s * 13 + i * 5 + 1) % static_cast<std::size_t>(vocab)));
    }
    std::vector<itscale::llama2c_model::handle> kids(parents.size());
    m.extend(parents, toks, kids);
    keep();
    for (auto h : live) m.release(h);
    live = kids;
  }
  for (auto h : live) m.release(h);
  CHECK(m.live_handles() == 0);
  CHECK(m.memory().blocks_in_use == 0);
  return out;
}

}  // namespace

TEST_CASE("llama2c threads: logits are bit-identical with 1, 2 and 3 threads (synthetic checkpoint)") {
  const auto w = threads_synthetic();
  const auto one = workload(w, 1, 40, 9, 6);
  for (std::size_t t : {2u, 3u}) {
    CAPTURE(t);
    const auto many = workload(w, t, 40, 9, 6);
    REQUIRE(many.size() == one.size());
    CHECK(std::memcmp(many.data(), one.data(), one.size() * sizeof(float)) == 0);
  }
  CHECK_THROWS_AS(itscale::llama2c_model(w, {.threads = 0}), itscale::invalid_option);
  CHECK_THROWS_AS(itscale::llama2c_model(w, {.threads = 257}), itscale::invalid_option);
}

TEST_CASE("llama2c threads: logits are bit-identical with 1, 2 and 3 threads (shipped checkpoints)") {
  const std::filesystem::path dir = std::filesystem::path(ITSCALE_DATA_DIR) / "models";
  for (const std::string name : {"aidreams260K", "stories260K"}) {
    const auto file = dir / (name + ".bin");
    CAPTURE(name);
    REQUIRE_MESSAGE(std::filesystem::exists(file), file.string() << " not found");
    const auto w = std::make_shared<const itscale::llama2c_weights>(itscale::load_llama2c_checkpoint(file));
    const auto one = workload(w, 1, 100, 32, 4);
    for (std::size_t t : {2u, 3u}) {
      CAPTURE(t);
      const auto many = workload(w, t, 100, 32, 4);
      REQUIRE(many.size() == one.size());
      CHECK(std::memcmp(many.data(), one.data(), one.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("fork_join_pool: runs every task once, rethrows a task's exception, stays usable") {
  for (std::size_t threads : {1u, 2u, 3u, 5u}) {
    CAPTURE(threads);
    itscale::detail::fork_join_pool pool(threads);
    CHECK(pool.threads() == threads);
    for (std::size_t n : {0u, 1u, 2u, 7u, 100u}) {
      std::vector<std::atomic<int>> hits(n);
      std::atomic<bool> worker_ok{true};
      auto f = [&](std::size_t i, std::size_t worker) {
        if (worker >= threads) worker_ok = false;
        ++hits[i];
      };
      pool.run(n, f);
      for (auto& h : hits) CHECK(h.load() == 1);
      CHECK(worker_ok.load());
    }
    auto bad = [](std::size_t i, std::size_t) {
      if (i == 3) throw std::runtime_error("task 3 failed");
    };
    CHECK_THROWS_WITH_AS(pool.run(10, bad), "task 3 failed", std::runtime_error);
    std::atomic<std::size_t> sum{0};
    auto good = [&](std::size_t i, std::size_t) { sum += i; };
    pool.run(10, good);
    CHECK(sum.load() == 45);
  }
  CHECK_THROWS_AS(itscale::detail::fork_join_pool(0), itscale::invalid_option);
}
