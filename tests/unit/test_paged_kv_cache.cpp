// The paged KV cache on its own (no model needed): sharing and copy-on-write keep every
// sequence's data intact under random forks, growth and releases; forks copy no data; the
// accounting matches a recount from the block tables; errors leave everything unchanged.

#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <itscale/models/paged_kv_cache.hpp>

namespace {

using cache_t = itscale::paged_kv_cache;

constexpr std::size_t layers = 2, kv_dim = 3, block = 4, max_tokens = 40;

/// The value stored at (layer, pos, component) by the writer `tag`: distinct per writer.
float stamp(std::uint32_t tag, std::size_t layer, std::size_t pos, std::size_t j, bool value) {
  return static_cast<float>(tag * 100000 + layer * 10000 + pos * 10 + j) + (value ? 0.5f : 0.0f);
}

/// Writes positions [from, to) of `s` with `tag`; `truth` records each position's tag.
void write(cache_t& c, cache_t::seq_id s, std::size_t from, std::size_t to, std::uint32_t tag,
           std::vector<std::uint32_t>& truth) {
  for (std::size_t p = from; p < to; ++p) {
    for (std::size_t l = 0; l < layers; ++l)
      for (std::size_t j = 0; j < kv_dim; ++j) {
        c.key(s, l, p)[j] = stamp(tag, l, p, j, false);
        c.value(s, l, p)[j] = stamp(tag, l, p, j, true);
      }
    truth.push_back(tag);
  }
}

/// Every position of `s` reads back what `truth` says, through the block table.
bool intact(const cache_t& c, cache_t::seq_id s, const std::vector<std::uint32_t>& truth) {
  if (c.length(s) != truth.size()) return false;
  const auto& table = c.blocks(s);
  for (std::size_t p = 0; p < truth.size(); ++p)
    for (std::size_t l = 0; l < layers; ++l)
      for (std::size_t j = 0; j < kv_dim; ++j) {
        const std::uint32_t b = table[p / block];
        if (c.keys(b, l)[(p % block) * kv_dim + j] != stamp(truth[p], l, p, j, false)) return false;
        if (c.values(b, l)[(p % block) * kv_dim + j] != stamp(truth[p], l, p, j, true)) return false;
      }
  return true;
}

}  // namespace

TEST_CASE("paged_kv_cache: forks share blocks, siblings copy one block, a lone child writes in place") {
  cache_t c(layers, kv_dim, block, max_tokens);
  std::vector<std::uint32_t> tp;
  const auto p = c.create();
  c.grow(p, 10);  // blocks: 4 + 4 + 2 of 4
  write(c, p, 0, 10, 1, tp);
  CHECK(c.stats().blocks_in_use == 3);

  const auto a = c.fork(p);
  CHECK(c.stats().blocks_in_use == 3);  // a fork copies nothing
  CHECK(c.blocks(a) == c.blocks(p));
  auto ta = tp;
  c.grow(a, 1);  // first writer past the parent's prefix: in place
  write(c, a, 10, 11, 2, ta);
  CHECK(c.stats().blocks_in_use == 3);

  const auto b = c.fork(p);
  auto tb = tp;
  c.grow(b, 1);  // a sibling already wrote position 10 of the shared block: copy that block only
  write(c, b, 10, 11, 3, tb);
  CHECK(c.stats().blocks_in_use == 4);
  CHECK(c.blocks(b)[0] == c.blocks(p)[0]);
  CHECK(c.blocks(b)[1] == c.blocks(p)[1]);
  CHECK(c.blocks(b)[2] != c.blocks(p)[2]);

  // The parent grows too: it must copy as well, and nobody's data moves.
  c.grow(p, 3);  // 13 tokens: copies block 2, then a new block 3
  write(c, p, 10, 13, 4, tp);
  CHECK(intact(c, p, tp));
  CHECK(intact(c, a, ta));
  CHECK(intact(c, b, tb));
  CHECK(c.stats().blocks_in_use == 6);

  c.release(p);
  c.release(b);
  CHECK(intact(c, a, ta));
  CHECK(c.stats().blocks_in_use == 3);
  CHECK(c.stats().live_tokens == 11);
  c.release(a);
  const auto st = c.stats();
  CHECK(st.live_sequences == 0);
  CHECK(st.live_tokens == 0);
  CHECK(st.blocks_in_use == 0);
  CHECK(st.bytes_in_use == 0);
  CHECK(st.blocks_pooled == 6);
  CHECK(st.block_bytes == layers * 2 * block * kv_dim * sizeof(float));
  c.trim();
  CHECK(c.stats().bytes_allocated == 0);
  // Pooled blocks come back after trim().
  const auto d = c.create();
  std::vector<std::uint32_t> td;
  c.grow(d, 5);
  write(c, d, 0, 5, 9, td);
  CHECK(intact(c, d, td));
  c.release(d);
}

TEST_CASE("paged_kv_cache: errors change nothing") {
  cache_t c(layers, kv_dim, block, max_tokens);
  std::vector<std::uint32_t> t;
  const auto s = c.create();
  c.grow(s, 38);
  write(c, s, 0, 38, 1, t);
  const auto before = c.stats();
  CHECK_THROWS_AS(c.grow(s, 3), itscale::invalid_input);
  CHECK(c.length(s) == 38);
  CHECK(c.stats().blocks_in_use == before.blocks_in_use);
  CHECK(c.stats().live_tokens == before.live_tokens);
  CHECK(intact(c, s, t));
  c.grow(s, 2);  // exactly max_tokens is fine
  CHECK(c.length(s) == max_tokens);
  CHECK_THROWS_AS(c.grow(s, 1), itscale::invalid_input);
  c.release(s);
  CHECK_THROWS_AS((void)c.fork(s), itscale::invalid_input);
  CHECK_THROWS_AS((void)c.length(12345), itscale::invalid_input);
  c.release(s);  // a second release is ignored
  c.release(777);
  CHECK(c.stats().live_sequences == 0);
  CHECK(c.stats().blocks_in_use == 0);
  CHECK_THROWS_AS(cache_t(0, 1, 1, 1), itscale::invalid_input);
}

TEST_CASE("paged_kv_cache: random forks, growth and releases keep every sequence intact") {
  for (std::size_t seed = 1; seed <= 20; ++seed) {
    CAPTURE(seed);
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    const auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
    cache_t c(layers, kv_dim, block, max_tokens);
    std::map<cache_t::seq_id, std::vector<std::uint32_t>> live;
    std::uint32_t tag = 1;
    for (int step = 0; step < 300; ++step) {
      const std::size_t op = live.empty() ? 0 : pick(10);
      if (op == 0) {
        const auto s = c.create();
        REQUIRE(live.count(s) == 0);
        live[s] = {};
        const std::size_t n = 1 + pick(9);
        c.grow(s, n);
        write(c, s, 0, n, tag++, live[s]);
      } else {
        auto it = live.begin();
        std::advance(it, static_cast<std::ptrdiff_t>(pick(live.size())));
        const auto s = it->first;
        if (op <= 4) {  // fork and grow the child by 1..3
          const auto f = c.fork(s);
          auto truth = it->second;
          const std::size_t n = 1 + pick(3);
          if (truth.size() + n <= max_tokens) {
            c.grow(f, n);
            write(c, f, truth.size(), truth.size() + n, tag++, truth);
          }
          live[f] = truth;
        } else if (op <= 7) {  // grow in place
          const std::size_t n = 1 + pick(3);
          auto& truth = it->second;
          if (truth.size() + n <= max_tokens) {
            const std::size_t from = c.grow(s, n);
            CHECK(from == truth.size());
            write(c, s, from, from + n, tag++, truth);
          } else {
            CHECK_THROWS_AS(c.grow(s, n), itscale::invalid_input);
          }
        } else {
          c.release(s);
          live.erase(it);
        }
      }
      // Every sequence intact; the accounting equals a recount from the tables.
      std::set<std::uint32_t> used;
      std::size_t tokens = 0;
      for (const auto& [s, truth] : live) {
        REQUIRE(intact(c, s, truth));
        used.insert(c.blocks(s).begin(), c.blocks(s).end());
        tokens += truth.size();
      }
      const auto st = c.stats();
      REQUIRE(st.live_sequences == live.size());
      REQUIRE(st.live_tokens == tokens);
      REQUIRE(st.blocks_in_use == used.size());
    }
    for (const auto& kv : live) c.release(kv.first);
    CHECK(c.stats().blocks_in_use == 0);
    CHECK(c.stats().live_tokens == 0);
  }
}
