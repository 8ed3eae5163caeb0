// Benchmarks of the in-tree llama2.c model (llama2c_model) on the shipped tiny checkpoints:
//
//   decode/batch:B/threads:T   one batched extend of B sequences by one token each (aidreams260K,
//                              parents of 32 tokens); counter tokens_per_s
//   fork_extend/len:L          an extend forking one parent of L tokens into 2 children
//                              (stories260K, context 512), children released after; counters
//                              new_blocks (KV blocks the fork allocated) and block_bytes
//   fork_cache/len:L           the KV cache's fork + release alone, same geometry
//   beams_memory/K:K           K beams sharing a 200-token prompt (stories260K), 20 decode steps
//                              each, vs K independent copies of the same sequences; counters
//                              shared_bytes, copies_bytes, copies_over_shared (KV bytes in use
//                              from the model's memory accounting)
//   score_span/len:N           teacher forcing N tokens after a 32-token prompt (aidreams260K):
//                              one extend_span (the timed figure) against N single-token extends
//                              (each releasing its parent), interleaved in every iteration;
//                              counters span_us, singles_us and singles_over_span (the ratio)
//
// The checkpoints are read from ITSCALE_DATA_DIR/models (tests/data/models by default); a missing
// one makes every benchmark that needs it report an error.

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <itscale/backends/llama2c_checkpoint.hpp>
#include <itscale/backends/llama2c_model.hpp>
#include <itscale/backends/support/paged_kv_cache.hpp>

namespace {

using itscale::token_id;
using handle = itscale::llama2c_model::handle;
namespace fs = std::filesystem;

const fs::path models_dir = fs::path(ITSCALE_DATA_DIR) / "models";

/// The checkpoint's weights (loaded once), or null after reporting the missing file on `st`.
std::shared_ptr<const itscale::llama2c_weights> weights(benchmark::State& st, const std::string& name) {
  static std::shared_ptr<const itscale::llama2c_weights> cache[2];
  const int slot = name == "aidreams260K" ? 0 : 1;
  if (!cache[slot]) {
    const fs::path file = models_dir / (name + ".bin");
    if (!fs::exists(file)) {
      st.SkipWithError((file.string() + " not found (ITSCALE_DATA_DIR/models)").c_str());
      return nullptr;
    }
    cache[slot] = std::make_shared<const itscale::llama2c_weights>(itscale::load_llama2c_checkpoint(file));
  }
  return cache[slot];
}

std::vector<token_id> tokens(std::size_t n, std::size_t salt, std::size_t vocab) {
  std::vector<token_id> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<token_id>(3 + (i * 37 + salt * 11) % (vocab - 3));
  return t;
}

void decode(benchmark::State& st) {
  const auto w = weights(st, "aidreams260K");
  if (!w) return;
  const auto batch = static_cast<std::size_t>(st.range(0));
  itscale::llama2c_model m(w, {.threads = static_cast<std::size_t>(st.range(1))});
  // Parents of 32 tokens (two full blocks): each child starts a fresh block, nothing is copied.
  std::vector<handle> parents;
  for (std::size_t b = 0; b < batch; ++b) parents.push_back(m.prefill(tokens(32, b, m.vocab_size())));
  const std::vector<token_id> next = tokens(batch, 99, m.vocab_size());
  std::vector<handle> kids(batch);
  for (auto _ : st) {
    m.extend(parents, next, kids);
    benchmark::DoNotOptimize(m.logits().data);
    st.PauseTiming();
    for (handle h : kids) m.release(h);
    st.ResumeTiming();
  }
  st.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  for (handle h : parents) m.release(h);
}

void fork_extend(benchmark::State& st) {
  const auto w = weights(st, "stories260K");
  if (!w) return;
  const auto len = static_cast<std::size_t>(st.range(0));
  itscale::llama2c_model m(w);
  const handle p = m.prefill(tokens(len, 1, m.vocab_size()));
  const std::vector<handle> parents{p, p};
  const std::vector<token_id> next{5, 6};
  std::vector<handle> kids(2);
  std::size_t new_blocks = 0;
  for (auto _ : st) {
    const std::size_t before = m.memory().blocks_in_use;
    m.extend(parents, next, kids);
    benchmark::DoNotOptimize(m.logits().data);
    st.PauseTiming();
    new_blocks = m.memory().blocks_in_use - before;
    for (handle h : kids) m.release(h);
    st.ResumeTiming();
  }
  st.counters["new_blocks"] = static_cast<double>(new_blocks);
  st.counters["parent_blocks"] = static_cast<double>(m.cache().block_count(p));
  st.counters["block_bytes"] = static_cast<double>(m.memory().block_bytes);
  m.release(p);
}

void fork_cache(benchmark::State& st) {
  const auto w = weights(st, "stories260K");
  if (!w) return;
  const auto len = static_cast<std::size_t>(st.range(0));
  const auto& c = w->config;
  itscale::paged_kv_cache cache(c.n_layers, c.kv_dim(), 16, c.seq_len);
  const auto p = cache.create();
  cache.grow(p, len);
  for (auto _ : st) {
    const auto a = cache.fork(p);
    const auto b = cache.fork(p);
    benchmark::DoNotOptimize(a);
    benchmark::DoNotOptimize(b);
    cache.release(a);
    cache.release(b);
  }
  st.counters["forks_per_iter"] = 2;
  cache.release(p);
}

/// Bytes in use after K beams decode `steps` tokens from one shared prompt, each step being an
/// extend of every beam followed by the release of the parents (what a decoder does).
std::size_t beams_from(itscale::llama2c_model& m, std::size_t k, const std::vector<token_id>& prompt, std::size_t steps,
                       bool shared) {
  std::vector<handle> beams;
  if (shared) {
    const handle p = m.prefill(prompt);
    const std::vector<handle> parents(k, p);
    beams.resize(k);
    m.extend(parents, tokens(k, 5, m.vocab_size()), beams);
    m.release(p);
  } else {
    for (std::size_t b = 0; b < k; ++b) {
      auto own = prompt;
      own.push_back(tokens(k, 5, m.vocab_size())[b]);
      beams.push_back(m.prefill(own));
    }
  }
  std::vector<handle> kids(k);
  for (std::size_t s = 1; s < steps; ++s) {
    m.extend(beams, tokens(k, 7 + s, m.vocab_size()), kids);
    for (handle h : beams) m.release(h);
    beams.swap(kids);
  }
  const std::size_t bytes = m.memory().bytes_in_use;
  for (handle h : beams) m.release(h);
  return bytes;
}

void beams_memory(benchmark::State& st) {
  const auto w = weights(st, "stories260K");
  if (!w) return;
  const auto k = static_cast<std::size_t>(st.range(0));
  constexpr std::size_t prompt_len = 200, steps = 20;
  itscale::llama2c_model m(w);
  const auto prompt = tokens(prompt_len, 3, m.vocab_size());
  std::size_t shared = 0;
  for (auto _ : st) shared = beams_from(m, k, prompt, steps, true);
  const std::size_t copies = beams_from(m, k, prompt, steps, false);
  st.counters["shared_bytes"] = static_cast<double>(shared);
  st.counters["copies_bytes"] = static_cast<double>(copies);
  st.counters["copies_over_shared"] = static_cast<double>(copies) / static_cast<double>(shared);
  st.counters["live_tokens"] = static_cast<double>(k * (prompt_len + steps));
}

void score_span(benchmark::State& st) {
  const auto w = weights(st, "aidreams260K");
  if (!w) return;
  const auto len = static_cast<std::size_t>(st.range(0));
  itscale::llama2c_model m(w);
  const handle p = m.prefill(tokens(32, 1, m.vocab_size()));
  const std::vector<token_id> span = tokens(len, 2, m.vocab_size());
  using clock = std::chrono::steady_clock;
  double span_s = 0, singles_s = 0;
  std::vector<handle> kid(1);
  for (auto _ : st) {
    // Both ways in every iteration, so that the ratio sees the same machine load.
    const auto t0 = clock::now();
    const handle h = m.extend_span(p, span);
    benchmark::DoNotOptimize(m.logits().data);
    const auto t1 = clock::now();
    m.release(h);
    const auto t2 = clock::now();
    handle cur = p;
    for (std::size_t i = 0; i < len; ++i) {
      m.extend(std::span<const handle>(&cur, 1), std::span<const token_id>(&span[i], 1), kid);
      benchmark::DoNotOptimize(m.logits().data);
      if (cur != p) m.release(cur);
      cur = kid[0];
    }
    const auto t3 = clock::now();
    m.release(cur);
    const double a = std::chrono::duration<double>(t1 - t0).count();
    span_s += a;
    singles_s += std::chrono::duration<double>(t3 - t2).count();
    st.SetIterationTime(a);
  }
  const auto iters = static_cast<double>(st.iterations());
  st.counters["span_us"] = span_s / iters * 1e6;
  st.counters["singles_us"] = singles_s / iters * 1e6;
  st.counters["singles_over_span"] = singles_s / span_s;
  st.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(len), benchmark::Counter::kIsIterationInvariantRate);
  m.release(p);
}

}  // namespace

// Real time: with threads > 1 the workers' CPU time is not in the main thread's.
BENCHMARK(decode)->ArgNames({"batch", "threads"})->ArgsProduct({{1, 8, 32}, {1, 2}})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(fork_extend)->ArgName("len")->Arg(10)->Arg(100)->Arg(500)->Unit(benchmark::kMicrosecond);
BENCHMARK(fork_cache)->ArgName("len")->Arg(10)->Arg(100)->Arg(500)->Unit(benchmark::kNanosecond);
BENCHMARK(score_span)->ArgName("len")->Arg(16)->Arg(64)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(beams_memory)->ArgName("K")->Arg(4)->Arg(8)->Arg(16)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
