// The paged KV cache on its own (no model needed): sharing and copy-on-write keep every
// sequence's data intact under random forks, growth and releases (deep fork chains included, and
// in any release order); forks copy no data and touch no block but the partial last one; table
// chains stay shallow; the accounting matches a recount from the block tables; errors leave
// everything unchanged.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <itscale/backends/support/paged_kv_cache.hpp>

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
  const auto table = c.block_table(s);
  for (std::size_t p = 0; p < truth.size(); ++p)
    for (std::size_t l = 0; l < layers; ++l)
      for (std::size_t j = 0; j < kv_dim; ++j) {
        const std::uint32_t b = table[p / block];
        if (c.keys(b, l)[(p % block) * kv_dim + j] != stamp(truth[p], l, p, j, false)) return false;
        if (c.values(b, l)[(p % block) * kv_dim + j] != stamp(truth[p], l, p, j, true)) return false;
      }
  return true;
}

/// The lookup chain of `s` is within the bound the cache promises (see paged_kv_cache.hpp).
bool shallow(const cache_t& c, cache_t::seq_id s) {
  return c.table_depth(s) <= std::max<std::size_t>(16, c.block_count(s)) + 1;
}

/// Every live sequence intact and shallow, and the accounting equal to a recount from the tables.
bool consistent(const cache_t& c, const std::map<cache_t::seq_id, std::vector<std::uint32_t>>& live) {
  std::set<std::uint32_t> used;
  std::size_t tokens = 0;
  for (const auto& [s, truth] : live) {
    if (!intact(c, s, truth) || !shallow(c, s)) return false;
    const auto table = c.block_table(s);
    used.insert(table.begin(), table.end());
    tokens += truth.size();
  }
  const auto st = c.stats();
  return st.live_sequences == live.size() && st.live_tokens == tokens && st.blocks_in_use == used.size();
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
  CHECK(c.block_table(a) == c.block_table(p));
  auto ta = tp;
  c.grow(a, 1);  // first writer past the parent's prefix: in place
  write(c, a, 10, 11, 2, ta);
  CHECK(c.stats().blocks_in_use == 3);

  const auto b = c.fork(p);
  auto tb = tp;
  c.grow(b, 1);  // a sibling already wrote position 10 of the shared block: copy that block only
  write(c, b, 10, 11, 3, tb);
  CHECK(c.stats().blocks_in_use == 4);
  CHECK(c.block_table(b)[0] == c.block_table(p)[0]);
  CHECK(c.block_table(b)[1] == c.block_table(p)[1]);
  CHECK(c.block_table(b)[2] != c.block_table(p)[2]);

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

/// Random creates, forks (the child grown by 1..3), growth and releases; `p_fork_step` is the
/// chance that an operation is a decoder step instead: fork, grow the child by one, release the
/// parent (which builds deep chains of table segments).
void random_history(std::size_t seed, std::size_t max_tok, int steps, double p_fork_step) {
  CAPTURE(seed);
  std::mt19937 rng(static_cast<std::uint32_t>(seed));
  const auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  cache_t c(layers, kv_dim, block, max_tok);
  std::map<cache_t::seq_id, std::vector<std::uint32_t>> live;
  std::uint32_t tag = 1;
  for (int step = 0; step < steps; ++step) {
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
      if (std::uniform_real_distribution<double>(0, 1)(rng) < p_fork_step) {
        const auto f = c.fork(s);
        auto truth = it->second;
        if (truth.size() < max_tok) {
          c.grow(f, 1);
          write(c, f, truth.size(), truth.size() + 1, tag++, truth);
        }
        c.release(s);
        live.erase(it);
        live[f] = std::move(truth);
      } else if (op <= 4) {  // fork and grow the child by 1..3
        const auto f = c.fork(s);
        auto truth = it->second;
        const std::size_t n = 1 + pick(3);
        if (truth.size() + n <= max_tok) {
          c.grow(f, n);
          write(c, f, truth.size(), truth.size() + n, tag++, truth);
        }
        live[f] = truth;
      } else if (op <= 7) {  // grow in place
        const std::size_t n = 1 + pick(3);
        auto& truth = it->second;
        if (truth.size() + n <= max_tok) {
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
    REQUIRE(consistent(c, live));
  }
  for (const auto& kv : live) c.release(kv.first);
  CHECK(c.stats().blocks_in_use == 0);
  CHECK(c.stats().live_tokens == 0);
}

TEST_CASE("paged_kv_cache: random forks, growth and releases keep every sequence intact") {
  for (std::size_t seed = 1; seed <= 20; ++seed) random_history(seed, max_tokens, 300, 0.0);
}

TEST_CASE("paged_kv_cache: random histories with deep fork chains keep every sequence intact") {
  for (std::size_t seed = 1; seed <= 10; ++seed) random_history(seed, 400, 1500, 0.6);
}

TEST_CASE("paged_kv_cache: a fork touches no block but the parent's partial last one") {
  cache_t c(layers, kv_dim, block, 2000);
  std::vector<std::uint32_t> tp;
  const auto p = c.create();
  c.grow(p, 501);  // 125 full blocks and 1 position in block 125
  write(c, p, 0, 501, 1, tp);
  const auto table = c.block_table(p);
  REQUIRE(table.size() == 126);
  const auto before = c.stats();
  const auto f = c.fork(p);
  CHECK(c.stats().blocks_in_use == before.blocks_in_use);
  for (std::size_t i = 0; i + 1 < table.size(); ++i) CHECK(c.block_refs(table[i]) == 1);
  CHECK(c.block_refs(table.back()) == 2);  // the child holds it for copy-on-write
  CHECK(c.table_depth(f) == 2);
  CHECK(c.block_table(f) == table);
  auto tf = tp;
  c.grow(f, 1);
  write(c, f, 501, 502, 2, tf);
  c.release(p);
  CHECK(intact(c, f, tf));
  CHECK(c.stats().blocks_in_use == before.blocks_in_use);  // the child wrote in place

  // A fork at a block boundary holds nothing of the parent's.
  const auto g = c.fork(f);  // 502 tokens: still partial
  c.grow(g, 2);               // 504: full, and the sibling-free write stayed in place
  auto tg = tf;
  write(c, g, 502, 504, 3, tg);
  c.release(f);  // f's segment now keeps only what g sees through it
  const auto before_h = c.stats();
  const auto h = c.fork(g);
  CHECK(c.stats().blocks_in_use == before_h.blocks_in_use);
  for (std::uint32_t b : c.block_table(g)) CHECK(c.block_refs(b) == 1);
  CHECK(intact(c, h, tg));
  c.release(g);
  c.release(h);
  CHECK(c.stats().blocks_in_use == 0);
}

TEST_CASE("paged_kv_cache: 1000 decoder steps keep the data and a shallow table") {
  // fork, grow the child by one, release the parent: what extend + release does each step.
  for (const std::size_t grow_by : {std::size_t{0}, std::size_t{1}}) {
    CAPTURE(grow_by);
    cache_t c(layers, kv_dim, block, 2000);
    std::vector<std::uint32_t> truth;
    auto s = c.create();
    c.grow(s, 37);
    write(c, s, 0, 37, 1, truth);
    std::size_t deepest = 0;
    for (std::uint32_t step = 0; step < 1000; ++step) {
      const auto f = c.fork(s);
      if (grow_by != 0) {
        c.grow(f, grow_by);
        write(c, f, truth.size(), truth.size() + grow_by, 2 + step, truth);
      }
      c.release(s);
      s = f;
      deepest = std::max(deepest, c.table_depth(s));
      REQUIRE(shallow(c, s));
      if (step % 97 == 0) REQUIRE(intact(c, s, truth));
    }
    CHECK(intact(c, s, truth));
    CHECK(deepest > 2);  // chains did form
    // Nothing is held but the survivor's blocks.
    CHECK(c.stats().blocks_in_use == c.block_count(s));
    c.release(s);
    CHECK(c.stats().blocks_in_use == 0);
  }
}

TEST_CASE("paged_kv_cache: any release order frees exactly the blocks nobody sees") {
  // A family: p; a = p + 3; b = a + 5; d = p + 1 (fork at a partial block); e = b (no growth);
  // and p grows after the forks, so its segment holds blocks no child sees.
  std::vector<int> order{0, 1, 2, 3, 4};
  do {
    cache_t c(layers, kv_dim, block, max_tokens);
    std::map<cache_t::seq_id, std::vector<std::uint32_t>> live;
    std::vector<cache_t::seq_id> ids;
    const auto p = c.create();
    c.grow(p, 9);
    write(c, p, 0, 9, 1, live[p]);
    const auto add = [&](cache_t::seq_id parent, std::size_t n, std::uint32_t tag) {
      const auto f = c.fork(parent);
      auto truth = live[parent];
      const std::size_t from = c.grow(f, n);
      write(c, f, from, from + n, tag, truth);
      live[f] = truth;
      return f;
    };
    const auto a = add(p, 3, 2);
    const auto b = add(a, 5, 3);
    const auto d = add(p, 1, 4);
    const auto e = add(b, 0, 5);
    const std::size_t from = c.grow(p, 6);
    write(c, p, from, from + 6, 6, live[p]);
    ids = {p, a, b, d, e};
    REQUIRE(consistent(c, live));
    for (int i : order) {
      const auto s = ids[static_cast<std::size_t>(i)];
      c.release(s);
      live.erase(s);
      REQUIRE(consistent(c, live));
    }
    CHECK(c.stats().blocks_in_use == 0);
    CHECK(c.stats().live_tokens == 0);
  } while (std::next_permutation(order.begin(), order.end()));
}
