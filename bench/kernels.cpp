// itscale_bench_kernels: the logits kernels against their peers, one thread, in one binary.
//
// Benchmark names are `op/impl/param:value/...` so that bench/ratio_table.py can pair an itscale
// run with its peers on the same configuration (same op, same parameters, another impl):
//
//   max_pass/{simd,scalar}/V:128256/dist:normal1           the one-read roofline (xsimd) and scalar
//   topk/{itscale,partial_sort,nth_element,llama_cpp}/V:128256/k:40/dist:normal1
//   softmax/{itscale,scalar}/V:.../dist:...                 scalar = three passes with std::exp
//   top_p/{itscale,llama_cpp}/V:128256/p:0.9/dist:normal1
//   chain/{itscale,llama_cpp}/V:128256/dist:normal1         llama.cpp's default sampling chain
//   beam_select/itscale/K:8/V:128256/dist:normal1           and logsumexp/itscale/K:8/...
//   .../rows:64                                              batch variant: 64 distinct rows per
//                                                            iteration (cold when > L3)
//
// Without `rows:`, one row is used over and over: hot in L2, the configuration of the goals.
// Every benchmark reports `per_row` (seconds per row of V logits) and items = logits processed.
// Flags (besides Google Benchmark's, e.g. --benchmark_filter=REGEX; --benchmark_min_time defaults
// to 0.25 s here):
//   --itscale_set=default   the configurations of ANCHORS.md (~230 benchmarks, under 10 minutes
//                           with --benchmark_repetitions=3)
//   --itscale_set=goals     only what the goals of issue 3 compare (quick)
//   --itscale_set=full      every op x vocabulary x distribution x k (long)
//   --itscale_list_dists    print the distribution names
// Data: fixed seeds (std::mt19937_64 per row); the llama_cpp benchmarks exist only in a build
// configured with -DITSCALE_BENCH_LLAMA_CPP=ON.
//
// The README table (presets `bench` = -O3 -march=native, `bench-portable` = baseline x86-64 with
// itscale's runtime dispatch; both fetch llama.cpp):
//   cmake --preset bench && cmake --build --preset bench
//   build/bench/bench/itscale_bench_kernels --benchmark_repetitions=3
//       --benchmark_out=native.json --benchmark_out_format=json      (one command line)
//   cmake --preset bench-portable && cmake --build --preset bench-portable
//   build/bench-portable/bench/itscale_bench_kernels --benchmark_filter=/itscale
//       --benchmark_repetitions=3 --benchmark_out=portable.json --benchmark_out_format=json
//   python3 bench/ratio_table.py native.json --portable portable.json
// On a shared machine, a goals-only run with interleaved repetitions is steadier:
//   itscale_bench_kernels --itscale_set=goals --benchmark_repetitions=10
//       --benchmark_enable_random_interleaving=true --benchmark_out=goals.json --benchmark_out_format=json

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

// GCC 12 reports -W(maybe-)uninitialized inside its own avx512fintrin.h once AVX-512 intrinsics
// are inlined (the intentionally undefined `__Y = __Y` pass-through): a false positive, GCC bug
// 105593, fixed in 13.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <xsimd/xsimd.hpp>

#include "itscale/core/rng.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/sample.hpp"
#include "itscale/kernels/softmax.hpp"
#include "itscale/kernels/sparse.hpp"
#include "itscale/kernels/top_k.hpp"
#include "itscale/processors/min_p.hpp"
#include "itscale/processors/sampling_chain.hpp"
#include "itscale/processors/sampling_options.hpp"
#include "itscale/processors/top_p.hpp"
#include "itscale/search/beam_select.hpp"

// Kernels that arrive with the SIMD work (issue 3); without them the benchmarks use what exists.
#if __has_include("itscale/kernels/beam_select.hpp")
#include "itscale/kernels/beam_select.hpp"
#define ITSCALE_BENCH_HAVE_BEAM_SELECT_KERNEL 1
#endif
#if __has_include("itscale/kernels/dispatch.hpp")  // with it: active_arch(), gumbel_top_k
#define ITSCALE_BENCH_HAVE_SIMD_KERNELS 1
#endif
#if __has_include("itscale/kernels/filters.hpp")
#include "itscale/kernels/filters.hpp"
#define ITSCALE_BENCH_HAVE_FILTER_KERNELS 1
#endif

#if defined(ITSCALE_BENCH_HAVE_LLAMA_CPP)
#include <llama.h>
#endif

// A loop GCC/Clang must keep scalar (the "scalar" peers would otherwise be auto-vectorised at -O3).
#if defined(__clang__)
#define ITSCALE_BENCH_SCALAR
#define ITSCALE_BENCH_NOVEC _Pragma("clang loop vectorize(disable) interleave(disable)")
#elif defined(__GNUC__)
#define ITSCALE_BENCH_SCALAR __attribute__((optimize("no-tree-vectorize")))
#define ITSCALE_BENCH_NOVEC
#else
#define ITSCALE_BENCH_SCALAR
#define ITSCALE_BENCH_NOVEC
#endif

namespace {

namespace ik = itscale::kernels;
using itscale::token_id;
constexpr float neg_inf = -std::numeric_limits<float>::infinity();

// Overloads that may or may not exist yet, detected in a dependent context (F = float).
template <class F = float>
constexpr bool has_batched_logsumexp =
    requires(std::span<const F> rows, std::size_t vocab, std::span<F> out) { ik::logsumexp(rows, vocab, out); };

// ---------------------------------------------------------------------------------------------
// Data

enum class dist { normal1, normal3, peaked, shift50, ascending, equal };
constexpr dist all_dists[] = {dist::normal1, dist::normal3, dist::peaked,
                              dist::shift50, dist::ascending, dist::equal};

const char* dist_name(dist d) {
  switch (d) {
    case dist::normal1: return "normal1";      // N(0, 1)
    case dist::normal3: return "normal3";      // N(0, 3^2)
    case dist::peaked: return "peaked";        // N(0, 1) and one logit at +25 (p ~ 1)
    case dist::shift50: return "shift50";      // N(0, 1) + 50 (breaks fixed-range bucket sorts)
    case dist::ascending: return "ascending";  // -8 .. +8 strictly ascending (worst case for heaps)
    case dist::equal: return "equal";          // all 0 (every tie rule at work)
  }
  return "?";
}

struct free_deleter {
  void operator()(float* p) const noexcept { std::free(p); }
};

/// `rows` rows of `vocab` logits, row-major without padding (as a backend's logits), the block
/// 64-byte aligned.
struct logits_block {
  dist d{};
  std::size_t vocab = 0, rows = 0;
  std::unique_ptr<float, free_deleter> mem;

  [[nodiscard]] std::span<const float> row(std::size_t r) const noexcept { return {mem.get() + r * vocab, vocab}; }
};

void fill_row(std::span<float> out, dist d, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  const std::size_t n = out.size();
  switch (d) {
    case dist::normal1:
    case dist::normal3:
    case dist::peaked:
    case dist::shift50: {
      const float sigma = d == dist::normal3 ? 3.0f : 1.0f;
      const float shift = d == dist::shift50 ? 50.0f : 0.0f;
      std::normal_distribution<float> nd(0.0f, sigma);
      for (float& x : out) x = nd(gen) + shift;
      if (d == dist::peaked) out[static_cast<std::size_t>(gen() % n)] = 25.0f;
      break;
    }
    case dist::ascending:
      for (std::size_t i = 0; i < n; ++i) out[i] = -8.0f + 16.0f * static_cast<float>(i) / static_cast<float>(n);
      break;
    case dist::equal:
      std::fill(out.begin(), out.end(), 0.0f);
      break;
  }
}

/// The block for (d, vocab, rows), generated once and kept while consecutive benchmarks ask for it
/// (benchmarks are registered grouped by data, and Google Benchmark runs them in that order).
const logits_block& logits(dist d, std::size_t vocab, std::size_t rows) {
  static logits_block cache;
  if (cache.mem && cache.d == d && cache.vocab == vocab && cache.rows == rows) return cache;
  cache.mem.reset();
  const std::size_t bytes = (vocab * rows * sizeof(float) + 63) / 64 * 64;
  cache.mem.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
  if (!cache.mem) std::abort();
  cache.d = d;
  cache.vocab = vocab;
  cache.rows = rows;
  for (std::size_t r = 0; r < rows; ++r)
    fill_row({cache.mem.get() + r * vocab, vocab}, d,
             0x9E3779B97F4A7C15ull ^ (static_cast<std::uint64_t>(d) << 56) ^ (vocab << 16) ^ r);
  return cache;
}

// ---------------------------------------------------------------------------------------------
// Peers written here

/// The one-read roofline: a SIMD max over the row (xsimd, the arch the build targets), four
/// independent accumulators.
float simd_max(std::span<const float> row) noexcept {
  using B = xsimd::batch<float>;
  constexpr std::size_t L = B::size;
  const float* p = row.data();
  const std::size_t n = row.size();
  B m0(neg_inf), m1(neg_inf), m2(neg_inf), m3(neg_inf);
  std::size_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    m0 = xsimd::max(m0, B::load_unaligned(p + i));
    m1 = xsimd::max(m1, B::load_unaligned(p + i + L));
    m2 = xsimd::max(m2, B::load_unaligned(p + i + 2 * L));
    m3 = xsimd::max(m3, B::load_unaligned(p + i + 3 * L));
  }
  for (; i + L <= n; i += L) m0 = xsimd::max(m0, B::load_unaligned(p + i));
  m0 = xsimd::max(xsimd::max(m0, m1), xsimd::max(m2, m3));
  alignas(64) float lanes[L];
  m0.store_aligned(lanes);
  float m = neg_inf;
  for (float x : lanes) m = x > m ? x : m;
  for (; i < n; ++i) m = p[i] > m ? p[i] : m;
  return m;
}

ITSCALE_BENCH_SCALAR float scalar_max(std::span<const float> row) noexcept {
  float m = neg_inf;
  ITSCALE_BENCH_NOVEC
  for (float x : row) m = x > m ? x : m;
  return m;
}

/// Three passes with std::exp (float), the sum in double: the textbook scalar softmax.
ITSCALE_BENCH_SCALAR void scalar_softmax(std::span<const float> in, std::span<float> out) noexcept {
  const float m = scalar_max(in);
  double s = 0;
  ITSCALE_BENCH_NOVEC
  for (std::size_t i = 0; i < in.size(); ++i) {
    const float e = std::exp(in[i] - m);
    out[i] = e;
    s += e;
  }
  const auto inv = static_cast<float>(1.0 / s);
  ITSCALE_BENCH_NOVEC
  for (float& x : out) x *= inv;
}

ITSCALE_BENCH_SCALAR float scalar_logsumexp(std::span<const float> in) noexcept {
  const float m = scalar_max(in);
  double s = 0;
  ITSCALE_BENCH_NOVEC
  for (float x : in) s += std::exp(x - m);
  return m + static_cast<float>(std::log(s));
}

/// Library tie rule: larger value first, then lower index.
struct rank_cmp {
  const float* v;
  bool operator()(token_id a, token_id b) const noexcept {
    const float va = v[a], vb = v[b];
    return va > vb || (va == vb && a < b);
  }
};

void topk_partial_sort(std::span<const float> row, std::span<token_id> ids, std::size_t k) {
  std::iota(ids.begin(), ids.end(), token_id{0});
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(), rank_cmp{row.data()});
}

void topk_nth_element(std::span<const float> row, std::span<token_id> ids, std::size_t k) {
  std::iota(ids.begin(), ids.end(), token_id{0});
  const auto kth = ids.begin() + static_cast<std::ptrdiff_t>(k);
  std::nth_element(ids.begin(), kth - 1, ids.end(), rank_cmp{row.data()});
  std::sort(ids.begin(), kth, rank_cmp{row.data()});
}

// ---------------------------------------------------------------------------------------------
// Registration helpers

struct config {
  std::string op, impl;
  dist d = dist::normal1;
  std::size_t vocab = 0;
  std::size_t rows = 1;         ///< rows per iteration; 1 = one hot row (no `rows:` in the name)
  std::size_t k = 0;            ///< topk / kth
  double p = 0;                 ///< top_p / min_p
  std::size_t beams = 0;        ///< K of the multi-row beam benchmarks (rows = K)
};

std::string fmt_p(double p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", p);
  return buf;
}

std::string name_of(const config& c) {
  std::string n = c.op + "/" + c.impl;
  if (c.beams) n += "/K:" + std::to_string(c.beams);
  n += "/V:" + std::to_string(c.vocab);
  if (c.k) n += "/k:" + std::to_string(c.k);
  if (c.p > 0) n += "/p:" + fmt_p(c.p);
  if (c.rows > 1 && !c.beams) n += "/rows:" + std::to_string(c.rows);
  n += std::string("/dist:") + dist_name(c.d);
  return n;
}

void finish(benchmark::State& st, std::size_t rows, std::size_t vocab) {
  const auto it = static_cast<std::int64_t>(st.iterations());
  st.SetItemsProcessed(it * static_cast<std::int64_t>(rows * vocab));
  st.counters["per_row"] = benchmark::Counter(static_cast<double>(rows),
                                              benchmark::Counter::kIsIterationInvariantRate |
                                                  benchmark::Counter::kInvert);
}

/// Registers `body(state, block)`: `body` runs the timed loop itself.
using body_fn = std::function<void(benchmark::State&, const config&, const logits_block&)>;

void add(const config& c, body_fn body) {
  benchmark::RegisterBenchmark(name_of(c).c_str(), [c, body](benchmark::State& st) {
    const std::size_t rows = c.beams ? c.beams : c.rows;
    const logits_block& blk = logits(c.d, c.vocab, rows);
    body(st, c, blk);
    finish(st, rows, c.vocab);
  })->Unit(benchmark::kMicrosecond);
}

/// A u in [0, 1) per step from the library's counter-based generator.
struct uniforms {
  itscale::counter_rng rng{2024, 0};
  std::uint32_t step = 0;
  double next() noexcept { return rng.uniform(step++); }
};

// ---------------------------------------------------------------------------------------------
// Benchmarks per op. Each `register_X(c)` registers c.impl for op X if that impl exists.

void reg_max_pass(config c, bool with_scalar = true) {
  c.op = "max_pass";
  c.impl = "simd";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) benchmark::DoNotOptimize(simd_max(b.row(r)));
  });
  if (!with_scalar) return;
  c.impl = "scalar";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) benchmark::DoNotOptimize(scalar_max(b.row(r)));
  });
}

void reg_scans(config c) {  // itscale's other one-pass scans, compared with the max pass
  c.op = "argmax";
  c.impl = "itscale";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) benchmark::DoNotOptimize(ik::argmax(b.row(r)));
  });
  c.op = "max";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) benchmark::DoNotOptimize(ik::max(b.row(r)));
  });
  c.op = "find_invalid";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) benchmark::DoNotOptimize(ik::find_invalid(b.row(r)));
  });
}

#if defined(ITSCALE_BENCH_HAVE_LLAMA_CPP)
/// llama.cpp's candidate array for one row, filled as llama_sampler_sample fills it (included in
/// the timing: every llama.cpp sampling step pays it).
struct llama_candidates {
  std::vector<llama_token_data> buf;
  llama_token_data_array arr{};
  void fill(std::span<const float> row) {
    buf.resize(row.size());
    for (std::size_t i = 0; i < row.size(); ++i) buf[i] = {static_cast<llama_token>(i), row[i], 0.0f};
    arr = {buf.data(), buf.size(), -1, false};
  }
};

struct llama_sampler_ptr {
  llama_sampler* s;
  explicit llama_sampler_ptr(llama_sampler* p) : s(p) {}
  llama_sampler_ptr(const llama_sampler_ptr&) = delete;
  llama_sampler_ptr& operator=(const llama_sampler_ptr&) = delete;
  ~llama_sampler_ptr() { llama_sampler_free(s); }
};

/// Runs the llama.cpp sampler `smpl` on every row, refilling the candidates each time.
void llama_loop(benchmark::State& st, const config& cf, const logits_block& b, llama_sampler* smpl) {
  llama_candidates c;
  c.buf.reserve(cf.vocab);
  for (auto _ : st)
    for (std::size_t r = 0; r < cf.rows; ++r) {
      c.fill(b.row(r));
      llama_sampler_apply(smpl, &c.arr);
      benchmark::DoNotOptimize(c.arr.size);
      benchmark::DoNotOptimize(c.arr.selected);
      benchmark::ClobberMemory();
    }
}

llama_sampler* llama_default_chain() {
  llama_sampler* ch = llama_sampler_chain_init(llama_sampler_chain_default_params());
  llama_sampler_chain_add(ch, llama_sampler_init_top_k(40));
  llama_sampler_chain_add(ch, llama_sampler_init_top_p(0.95f, 1));
  llama_sampler_chain_add(ch, llama_sampler_init_min_p(0.05f, 1));
  llama_sampler_chain_add(ch, llama_sampler_init_temp(0.8f));
  llama_sampler_chain_add(ch, llama_sampler_init_dist(1234));
  return ch;
}
#endif

/// Checks the k best (ids) against std::partial_sort's; values only when ties may reorder.
bool topk_matches(std::span<const float> row, std::span<const token_id> ids, std::size_t k, bool exact_ids) {
  std::vector<token_id> ref(row.size());
  topk_partial_sort(row, ref, k);
  for (std::size_t i = 0; i < k; ++i) {
    if (row[static_cast<std::size_t>(ids[i])] != row[static_cast<std::size_t>(ref[i])]) return false;
    if (exact_ids && ids[i] != ref[i]) return false;
  }
  return true;
}

enum class peers { all, partial_sort, none };

void reg_topk(config c, peers with = peers::all) {
  c.op = "topk";
  c.impl = "itscale";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    std::vector<token_id> ids(cf.k);
    std::vector<float> vals(cf.k);
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) {
        ik::top_k(b.row(r), ids, vals);
        benchmark::DoNotOptimize(ids.data());
        benchmark::ClobberMemory();
      }
    if (!topk_matches(b.row(cf.rows - 1), ids, cf.k, true)) st.SkipWithError("itscale top_k differs from std::partial_sort");
  });
  if (with == peers::none) return;
  c.impl = "partial_sort";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    std::vector<token_id> ids(cf.vocab);
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) {
        topk_partial_sort(b.row(r), ids, cf.k);
        benchmark::DoNotOptimize(ids.data());
        benchmark::ClobberMemory();
      }
  });
  if (with == peers::partial_sort) return;
  c.impl = "nth_element";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    std::vector<token_id> ids(cf.vocab);
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) {
        topk_nth_element(b.row(r), ids, cf.k);
        benchmark::DoNotOptimize(ids.data());
        benchmark::ClobberMemory();
      }
    if (!topk_matches(b.row(cf.rows - 1), ids, cf.k, true)) st.SkipWithError("nth_element top-k differs");
  });
#if defined(ITSCALE_BENCH_HAVE_LLAMA_CPP)
  c.impl = "llama_cpp";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    llama_sampler_ptr smpl(llama_sampler_init_top_k(static_cast<std::int32_t>(cf.k)));
    llama_loop(st, cf, b, smpl.s);
    // Check the last row's result: llama.cpp keeps the k best, sorted.
    llama_candidates c2;
    const auto row = b.row(cf.rows - 1);
    c2.fill(row);
    llama_sampler_apply(smpl.s, &c2.arr);
    std::vector<token_id> ids(cf.k);
    for (std::size_t i = 0; i < cf.k && i < c2.arr.size; ++i) ids[i] = c2.arr.data[i].id;
    if (c2.arr.size != cf.k || !topk_matches(row, ids, cf.k, false)) st.SkipWithError("llama.cpp top_k differs");
  });
#endif
}

void reg_softmax(config c) {
  c.op = "softmax";
  c.impl = "itscale";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    std::vector<float> out(cf.vocab);
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) {
        ik::softmax(b.row(r), out);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
      }
  });
  c.impl = "scalar";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    std::vector<float> out(cf.vocab);
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) {
        scalar_softmax(b.row(r), out);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
      }
  });
}

void reg_log_softmax(config c) {
  c.op = "log_softmax";
  c.impl = "itscale";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    std::vector<float> out(cf.vocab);
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) {
        ik::log_softmax(b.row(r), out);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
      }
  });
}

/// logsumexp of `rows` contiguous rows: the batched kernel when the library has it, else one call
/// per row.
template <class F = float>
void logsumexp_rows(const logits_block& b, std::size_t rows, std::span<F> out) noexcept {
  if constexpr (has_batched_logsumexp<F>) {
    ik::logsumexp(std::span<const F>(b.mem.get(), rows * b.vocab), b.vocab, out.first(rows));
  } else {
    for (std::size_t r = 0; r < rows; ++r) out[r] = ik::logsumexp(b.row(r));
  }
}

void reg_logsumexp(config c, bool with_scalar = true) {
  c.op = "logsumexp";
  c.impl = "itscale";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    const std::size_t rows = cf.beams ? cf.beams : cf.rows;
    std::vector<float> out(rows);
    for (auto _ : st) {
      if (rows == 1) {
        benchmark::DoNotOptimize(ik::logsumexp(b.row(0)));
      } else {
        logsumexp_rows(b, rows, std::span<float>(out));
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
      }
    }
  });
  if (!with_scalar) return;
  c.impl = "scalar";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    const std::size_t rows = cf.beams ? cf.beams : cf.rows;
    for (auto _ : st)
      for (std::size_t r = 0; r < rows; ++r) benchmark::DoNotOptimize(scalar_logsumexp(b.row(r)));
  });
}

/// In-place itscale processors work on a copy of the row (the copy is timed, as llama.cpp's
/// candidate fill is).
template <class Processor>
void processor_loop(benchmark::State& st, const config& cf, const logits_block& b, const Processor& proc) {
  itscale::workspace ws;
  ws.reserve(cf.vocab);
  const itscale::step_context ctx{{}, 0, &ws};
  std::vector<float> work(cf.vocab);
  for (auto _ : st)
    for (std::size_t r = 0; r < cf.rows; ++r) {
      const auto row = b.row(r);
      std::copy(row.begin(), row.end(), work.begin());
      proc.apply(std::span<float>(work), ctx);
      benchmark::DoNotOptimize(work.data());
      benchmark::ClobberMemory();
    }
}

/// Runs `f(work_row)` on a copy of every row (the copy is timed, as above).
template <class F>
void inplace_loop(benchmark::State& st, const config& cf, const logits_block& b, F f) {
  std::vector<float> work(cf.vocab);
  for (auto _ : st)
    for (std::size_t r = 0; r < cf.rows; ++r) {
      const auto row = b.row(r);
      std::copy(row.begin(), row.end(), work.begin());
      f(std::span<float>(work));
      benchmark::DoNotOptimize(work.data());
      benchmark::ClobberMemory();
    }
}

/// itscale: kernels::top_p_mask (no sort of the vocabulary) when it exists, else the processor.
/// hf_processor: itscale::top_p_filter, which reproduces HF's float32 rounding (sorts).
void reg_top_p(config c) {
  c.op = "top_p";
#if defined(ITSCALE_BENCH_HAVE_FILTER_KERNELS)
  c.impl = "itscale";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    std::vector<std::uint64_t> keys(cf.vocab);
    inplace_loop(st, cf, b, [&](std::span<float> row) { benchmark::DoNotOptimize(ik::top_p_mask(row, cf.p, keys)); });
  });
  c.impl = "hf_processor";
#else
  c.impl = "itscale";
#endif
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    processor_loop(st, cf, b, itscale::top_p_filter(cf.p));
  });
#if defined(ITSCALE_BENCH_HAVE_LLAMA_CPP)
  c.impl = "llama_cpp";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    llama_sampler_ptr smpl(llama_sampler_init_top_p(static_cast<float>(cf.p), 1));
    llama_loop(st, cf, b, smpl.s);
  });
#endif
}

void reg_min_p(config c) {
  c.op = "min_p";
#if defined(ITSCALE_BENCH_HAVE_FILTER_KERNELS)
  c.impl = "itscale";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    const auto p = static_cast<float>(cf.p);
    inplace_loop(st, cf, b, [p](std::span<float> row) {
      benchmark::DoNotOptimize(ik::mask_below(row, ik::min_p_threshold(row, p)));
    });
  });
  c.impl = "hf_processor";
#else
  c.impl = "itscale";
#endif
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    processor_loop(st, cf, b, itscale::min_p_filter(static_cast<float>(cf.p)));
  });
#if defined(ITSCALE_BENCH_HAVE_LLAMA_CPP)
  c.impl = "llama_cpp";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    llama_sampler_ptr smpl(llama_sampler_init_min_p(static_cast<float>(cf.p), 1));
    llama_loop(st, cf, b, smpl.s);
  });
#endif
}

/// Drawing one token from the whole row: itscale's inverse CDF vs llama.cpp's `dist` (softmax +
/// sample).
void reg_sample(config c) {
  c.op = "sample";
  c.impl = "itscale";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    uniforms u;
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) benchmark::DoNotOptimize(ik::sample_inverse_cdf(b.row(r), u.next()));
  });
#if defined(ITSCALE_BENCH_HAVE_LLAMA_CPP)
  c.impl = "llama_cpp";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    llama_sampler_ptr smpl(llama_sampler_init_dist(1234));
    llama_loop(st, cf, b, smpl.s);
  });
#endif
}

/// llama.cpp's default chain: top-k 40, top-p 0.95, min-p 0.05, temperature 0.8, then a draw.
/// itscale: the runtime sampling_chain with those options (HF's warper order: temperature first)
/// on a copy of the row, then kernels::sample_inverse_cdf over the tokens it left (as the
/// decoders do).
void reg_chain(config c) {
  c.op = "chain";
  c.impl = "itscale";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    itscale::sampling_options o;
    o.do_sample = true;
    o.temperature = 0.8f;
    o.top_k = 40;
    o.top_p = 0.95;
    o.min_p = 0.05f;
    const itscale::sampling_chain chain(o);
    itscale::workspace ws;
    ws.reserve(cf.vocab);
    const itscale::step_context ctx{{}, 0, &ws};
    std::vector<float> work(cf.vocab);
    uniforms u;
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) {
        const auto row = b.row(r);
        std::copy(row.begin(), row.end(), work.begin());
        const itscale::live_set live = chain.apply_warpers(work, ctx);  // known: top_k is on
        benchmark::DoNotOptimize(ik::sample_inverse_cdf(work, live.ids, u.next()));
        benchmark::ClobberMemory();
      }
  });
#if defined(ITSCALE_BENCH_HAVE_FILTER_KERNELS)
  // The same chain in llama.cpp's order composed from the kernels: top_k(40) over the row, then
  // top-p, min-p, temperature and the draw on the 40 survivors (as llama.cpp does after top_k).
  c.impl = "itscale_kernels";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    constexpr std::size_t k = 40;
    std::vector<token_id> ids(k);
    std::vector<float> vals(k);
    std::vector<std::uint64_t> keys(k);
    uniforms u;
    for (auto _ : st)
      for (std::size_t r = 0; r < cf.rows; ++r) {
        ik::top_k(b.row(r), ids, vals);
        const std::span<float> v(vals);
        ik::top_p_mask(v, 0.95, keys);
        ik::mask_below(v, ik::min_p_threshold(v, 0.05f));
        for (float& x : v) x /= 0.8f;
        const std::size_t i = ik::sample_inverse_cdf(v, u.next());
        benchmark::DoNotOptimize(ids[i]);
        benchmark::ClobberMemory();
      }
  });
#endif
#if defined(ITSCALE_BENCH_HAVE_LLAMA_CPP)
  c.impl = "llama_cpp";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    llama_sampler_ptr smpl(llama_default_chain());
    llama_loop(st, cf, b, smpl.s);
  });
#endif
}

/// Beam selection: the best 2K of K rows of logits, each token scored beam_score[b] + log-prob,
/// including the normalisation (logsumexp per row). itscale: kernels::beam_select when it exists;
/// `lse_then_heap` (itscale before that kernel): kernels::logsumexp per row, then
/// itscale::select_beam_candidates (a heap) with the per-row offset score - lse, no log-prob
/// written. The peer `logprobs_then_select` is the write-out path (log_softmax of every row into
/// a K*V buffer, then the same selection).
void reg_beam_select(config c) {
  c.op = "beam_select";
#if defined(ITSCALE_BENCH_HAVE_BEAM_SELECT_KERNEL)
  // kernels::beam_select: logsumexps and the selection fused, no log-prob written.
  c.impl = "itscale";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    const std::size_t K = cf.beams;
    std::vector<std::span<const float>> rows(K);
    std::vector<float> score(K);
    for (std::size_t r = 0; r < K; ++r) {
      rows[r] = b.row(r);
      score[r] = -0.5f * static_cast<float>(r);
    }
    std::vector<ik::row_candidate> out(2 * K);
    for (auto _ : st) {
      benchmark::DoNotOptimize(ik::beam_select(rows, score, out));
      benchmark::ClobberMemory();
    }
  });
  c.impl = "lse_then_heap";  // the composition below, from before the kernel existed
#else
  c.impl = "itscale";
#endif
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    const std::size_t K = cf.beams;
    std::vector<std::span<const float>> rows(K);
    std::vector<float> score(K), base(K);
    for (std::size_t r = 0; r < K; ++r) {
      rows[r] = b.row(r);
      score[r] = -0.5f * static_cast<float>(r);
    }
    std::vector<itscale::beam_candidate> out;
    out.reserve(2 * K);
    for (auto _ : st) {
      for (std::size_t r = 0; r < K; ++r) base[r] = score[r] - ik::logsumexp(rows[r]);
      itscale::select_beam_candidates(rows, base, 2 * K, out);
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
    }
  });
  c.impl = "logprobs_then_select";
  add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
    const std::size_t K = cf.beams, V = cf.vocab;
    std::vector<float> lp(K * V);
    std::vector<std::span<const float>> rows(K);
    std::vector<float> score(K);
    for (std::size_t r = 0; r < K; ++r) {
      rows[r] = std::span<const float>(lp).subspan(r * V, V);
      score[r] = -0.5f * static_cast<float>(r);
    }
    std::vector<itscale::beam_candidate> out;
    out.reserve(2 * K);
    for (auto _ : st) {
      for (std::size_t r = 0; r < K; ++r) ik::log_softmax(b.row(r), std::span<float>(lp).subspan(r * V, V));
      itscale::select_beam_candidates(rows, score, 2 * K, out);
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
    }
  });
}

/// Gumbel-top-k (k samples without replacement; stochastic beam search), when the kernel exists.
void reg_gumbel_top_k([[maybe_unused]] config c) {
#if defined(ITSCALE_BENCH_HAVE_SIMD_KERNELS)
  using F = float;
  {
    c.op = "gumbel_topk";
    c.impl = "itscale";
    add(c, [](benchmark::State& st, const config& cf, const logits_block& b) {
      std::vector<token_id> ids(cf.k);
      std::vector<F> vals(cf.k), scratch(cf.vocab);
      const itscale::counter_rng rng(7, 0);
      std::uint32_t step = 0;
      for (auto _ : st)
        for (std::size_t r = 0; r < cf.rows; ++r) {
          ik::gumbel_top_k(std::span<const F>(b.row(r)), rng, step++, std::span<token_id>(ids), std::span<F>(vals),
                           std::span<F>(scratch));
          benchmark::DoNotOptimize(ids.data());
          benchmark::ClobberMemory();
        }
    });
  }
#endif
}

// ---------------------------------------------------------------------------------------------
// Sets

constexpr std::size_t vocabs[] = {32000, 32001, 50257, 128256, 151936, 262144};
constexpr std::size_t ks[] = {1, 8, 40, 64, 256, 1024};
constexpr std::size_t V0 = 128256;

config cfg(dist d, std::size_t vocab, std::size_t rows = 1) {
  config c;
  c.d = d;
  c.vocab = vocab;
  c.rows = rows;
  return c;
}
config with_k(config c, std::size_t k) { c.k = k; return c; }
config with_p(config c, double p) { c.p = p; return c; }
config with_beams(config c, std::size_t K) { c.beams = K; return c; }

/// What the goals of issue 3 compare: V = 128 256, normal σ = 1, one hot row.
void register_goals() {
  const config c = cfg(dist::normal1, V0);
  reg_max_pass(c);
  reg_topk(with_k(c, 40));
  reg_top_p(with_p(c, 0.9));
  reg_chain(c);
  reg_softmax(c);
  reg_beam_select(with_beams(c, 8));
  reg_logsumexp(with_beams(c, 8), false);
}

void register_default() {
  // Every vocabulary size, normal σ = 1, one hot row. Grouped by data (see `logits`).
  for (std::size_t V : vocabs) {
    const config c = cfg(dist::normal1, V);
    reg_max_pass(c);
    if (V == V0) reg_scans(c);
    reg_topk(with_k(c, 40));
    if (V == V0)
      for (std::size_t k : ks)
        if (k != 40) reg_topk(with_k(c, k));
    reg_softmax(c);
    if (V == V0) reg_log_softmax(c);
    reg_logsumexp(c);
    reg_top_p(with_p(c, 0.9));
    if (V == V0) reg_top_p(with_p(c, 0.95));
    reg_min_p(with_p(c, 0.05));
    if (V == V0) reg_sample(c);
    if (V == V0) reg_gumbel_top_k(with_k(c, 8));
    reg_chain(c);
  }
  // The other distributions at V = 128 256.
  for (dist d : all_dists) {
    if (d == dist::normal1) continue;
    const config c = cfg(d, V0);
    reg_max_pass(c, false);
    reg_topk(with_k(c, 40));
    reg_topk(with_k(c, 1024), peers::partial_sort);
    reg_softmax(c);
    reg_top_p(with_p(c, 0.9));
    reg_min_p(with_p(c, 0.05));
    reg_chain(c);
  }
  // Beam selection, K = 4 and 8 rows.
  for (std::size_t K : {std::size_t{4}, std::size_t{8}}) {
    const config c = with_beams(cfg(dist::normal1, V0), K);
    reg_beam_select(c);
    reg_logsumexp(c, false);
  }
  // Batches of distinct rows: 8 rows (4 MB, out of L2) and 256 rows (131 MB, larger than L3).
  for (std::size_t rows : {std::size_t{8}, std::size_t{256}}) {
    const config c = cfg(dist::normal1, V0, rows);
    reg_max_pass(c);
    reg_topk(with_k(c, 40));
    reg_softmax(c);
    reg_logsumexp(c, false);
    reg_chain(c);
  }
}

void register_full() {
  for (dist d : all_dists)
    for (std::size_t V : vocabs) {
      const config c = cfg(d, V);
      reg_max_pass(c);
      reg_scans(c);
      for (std::size_t k : ks) reg_topk(with_k(c, k));
      reg_softmax(c);
      reg_log_softmax(c);
      reg_logsumexp(c);
      for (double p : {0.9, 0.95}) reg_top_p(with_p(c, p));
      reg_min_p(with_p(c, 0.05));
      reg_sample(c);
      for (std::size_t k : {std::size_t{1}, std::size_t{8}, std::size_t{40}}) reg_gumbel_top_k(with_k(c, k));
      reg_chain(c);
    }
  for (std::size_t K : {std::size_t{4}, std::size_t{8}})
    for (std::size_t V : vocabs) {
      const config c = with_beams(cfg(dist::normal1, V), K);
      reg_beam_select(c);
      reg_logsumexp(c, false);
    }
  for (std::size_t rows : {std::size_t{8}, std::size_t{64}, std::size_t{256}}) {
    const config c = cfg(dist::normal1, V0, rows);
    reg_max_pass(c);
    for (std::size_t k : ks) reg_topk(with_k(c, k));
    reg_softmax(c);
    reg_logsumexp(c, false);
    reg_min_p(with_p(c, 0.05));
    reg_chain(c);
  }
}

std::string kernels_arch() {
#if defined(ITSCALE_BENCH_HAVE_SIMD_KERNELS)
  return ik::active_arch();
#else
  return "scalar kernels";
#endif
}

}  // namespace

int main(int argc, char** argv) {
  // Default --benchmark_min_time=0.25 (Google Benchmark's 0.5 s would take the default set with
  // 3 repetitions past 10 minutes); a --benchmark_min_time given on the command line wins.
  std::vector<char*> args(argv, argv + argc);
  std::string min_time = "--benchmark_min_time=0.25";
  bool has_min_time = false;
  for (int i = 1; i < argc; ++i) has_min_time |= std::strncmp(argv[i], "--benchmark_min_time", 20) == 0;
  if (!has_min_time) args.insert(args.begin() + 1, min_time.data());
  args.push_back(nullptr);
  argc = static_cast<int>(args.size()) - 1;
  argv = args.data();
  benchmark::Initialize(&argc, argv);  // removes the --benchmark_* flags it knows
  std::string set = "default";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--itscale_set=", 0) == 0) {
      set = a.substr(std::strlen("--itscale_set="));
    } else if (a == "--itscale_list_dists") {
      for (dist d : all_dists) std::printf("%s\n", dist_name(d));
      return 0;
    } else {
      std::fprintf(stderr, "itscale_bench_kernels: unknown argument %s\n"
                           "  --itscale_set=default|goals|full, --itscale_list_dists, --benchmark_*\n",
                   argv[i]);
      return 1;
    }
  }
  if (set == "default") register_default();
  else if (set == "goals") register_goals();
  else if (set == "full") register_full();
  else {
    std::fprintf(stderr, "itscale_bench_kernels: --itscale_set must be default, goals or full\n");
    return 1;
  }
#if defined(ITSCALE_BENCH_HAVE_LLAMA_CPP)
  benchmark::AddCustomContext("llama_cpp", "node-llama-cpp 3.21.1 prebuilt (linux-x64)");
#else
  benchmark::AddCustomContext("llama_cpp", "not built (configure with -DITSCALE_BENCH_LLAMA_CPP=ON)");
#endif
  benchmark::AddCustomContext("xsimd_arch", xsimd::default_arch::name());  // the SIMD max pass's
  benchmark::AddCustomContext("itscale_kernels_arch", kernels_arch());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
