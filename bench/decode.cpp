// itscale_bench_decode: the decoders' own cost per generated token, and that it does not grow
// with the sequence (issue 9). Source: the hash LM (its extend is O(1) per row), small vocabulary
// so the library's share is visible.
//
//   decode/greedy/prompt:P/new:N      greedy, log-probs on, P prompt tokens, N new tokens (no EOS)
//   decode/greedy_bare/prompt:P/new:N greedy with every per-token output off: one argmax per row
//   decode/sample/prompt:P/new:N      8 samples, temperature 0.8, top-k 20
//   decode/penalty/prompt:P/new:N     greedy + repetition penalty (a processor that reads every
//                                     token: its own work grows with length, the decoder's does not)
//
// Counters: ns_per_token (CPU time per generated token, source included) and library_ns_per_token
// (the same minus the time inside the source, from compute_stats.source_seconds). Compare N = 16
// with N = 1024 and P = 16 with P = 1024: flat library_ns_per_token is the claim.

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <itscale/search.hpp>

namespace {

using itscale::token_id;

enum class mode : int { greedy, greedy_bare, sample, penalty };

itscale::sampling_options options(mode m, std::size_t new_tokens) {
  itscale::sampling_options o{.stop = {.max_new_tokens = new_tokens}};
  switch (m) {
    case mode::greedy: break;
    case mode::greedy_bare: o.output_logprobs = false; break;
    case mode::sample:
      o.do_sample = true;
      o.seed = 3;
      o.num_return_sequences = 8;
      o.temperature = 0.8f;
      o.top_k = 20;
      break;
    case mode::penalty: o.repetition_penalty = 1.3f; break;
  }
  return o;
}

void decode(benchmark::State& state, mode m) {
  const auto prompt_len = static_cast<std::size_t>(state.range(0));
  const auto new_tokens = static_cast<std::size_t>(state.range(1));
  itscale::hash_lm lm(256, 5);
  std::vector<token_id> prompt(prompt_len);
  for (std::size_t i = 0; i < prompt_len; ++i) prompt[i] = static_cast<token_id>((i * 7 + 3) % 256);
  const auto opts = options(m, new_tokens);
  double source_s = 0, total_s = 0, tokens = 0;
  for (auto _ : state) {
    const auto out = itscale::generate(lm, std::span<const token_id>(prompt), opts);
    benchmark::DoNotOptimize(out.sequences.data());
    source_s += out.compute.source_seconds;
    total_s += out.compute.wall_seconds;
    for (const auto& g : out) tokens += static_cast<double>(g.tokens.size());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(tokens));
  state.counters["ns_per_token"] = total_s * 1e9 / tokens;
  state.counters["library_ns_per_token"] = (total_s - source_s) * 1e9 / tokens;
}

}  // namespace

#define ITSCALE_DECODE_BENCH(name, m)                                                                  \
  BENCHMARK_CAPTURE(decode, name, m)->ArgNames({"prompt", "new"})->Args({16, 16})->Args({16, 256})     \
      ->Args({16, 1024})->Args({1024, 16})->Args({1024, 1024})->Unit(benchmark::kMicrosecond)

ITSCALE_DECODE_BENCH(greedy, mode::greedy);
ITSCALE_DECODE_BENCH(greedy_bare, mode::greedy_bare);
ITSCALE_DECODE_BENCH(sample, mode::sample);
ITSCALE_DECODE_BENCH(penalty, mode::penalty);

BENCHMARK_MAIN();
