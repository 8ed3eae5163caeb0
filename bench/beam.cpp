// itscale_bench_beam: beam search's own overhead over a LogitSource, one thread.
//
//   beam/itscale/K:{4,8,16}/V:{32000,128256}   one prompt, K beams, 8 new tokens, no EOS (every
//                                              search runs all 8 steps), hash LM source
//
// Per benchmark (thread CPU times per beam step, i.e. per batched extend + selection):
//   steps_per_s      beam steps per second, source included
//   source_us        time inside the source (prefill / extend / logits / release), measured by a
//                    timing wrapper around hash_lm
//   select_us        select_beam_candidates (top 2K over K rows, scores (d - lse) + beam score)
//                    alone on K rows of the same model, median of repeated runs
//   logsoftmax_us    beam search's normalisation of the step's rows (detail::shift_to_max: max,
//                    d = x - max stored, logsumexp of d — PyTorch's association, HF-exact); with no
//                    value-changing processor, as here, the log-probs themselves are never written
//   validity_us      the API-boundary scan of the source's rows for NaN / +inf (kernels::find_invalid)
//   bookkeeping_us   total - source - select - logsoftmax - validity: everything else the search
//                    does (including cache misses on rows the isolated timings find hot)
//   bookkeeping_per_select   bookkeeping / select  (issue 4's goal: <= 1)
//   rest_per_select  (total - source - select) / select: as above with the log-softmax counted as
//                    overhead
//   kernel_beam_select_us    kernels::beam_select (fused logsumexp + top 2K) on the K raw rows
//   bookkeeping_per_kernel   bookkeeping / kernel_beam_select
//
//   beam_length/itscale/K:{4,16}/V:{512,32000}/L:{16,64,256,1024}
//                                              one prompt, K beams, L new tokens, no EOS and no
//                                              processor (every search runs all L steps), hash LM
//   steps_per_s      beam steps per second of thread CPU time, source included, averaged over
//                    the L steps of a search (if a step's cost grew with the length, as copying
//                    each beam's tokens to its children did, the average would grow with L)
//   us_per_step      its inverse, in microseconds
//   vs_L16, vs_L64   steps_per_s / steps_per_s of the same K and V at L = 16 / 64 (when that ran
//                    first): the long/short ratios, 1 when a step's cost does not depend on
//                    length. The first tens of steps of any search are cheaper for a reason that
//                    is not the length: the selection kernel's threshold filter keeps fewer
//                    survivors while the beams' running scores are young (perf, K = 4, V = 512:
//                    top_k filter 11% of the time at L = 16, 26% at L = 1024; source time per step
//                    constant), so at small V vs_L16 is below 1 while vs_L64 is ~1
// Flags: Google Benchmark's (e.g. --benchmark_filter=REGEX, --benchmark_repetitions=N).

#include <benchmark/benchmark.h>
#include <time.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <tuple>
#include <string>
#include <vector>

// GCC 12 reports -W(maybe-)uninitialized inside its own avx512fintrin.h once the selection
// kernels' AVX-512 intrinsics are inlined (GCC bug 105593, fixed in 13), as in kernels.cpp.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "itscale/search/beam_search.hpp"
#include "itscale/kernels/beam_select.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/search/beam_rows.hpp"
#include "itscale/search/beam_select.hpp"
#include "itscale/backends/hash_lm.hpp"

namespace {

using itscale::token_id;

// Thread CPU time, not wall time: the benchmark machines are shared, and wall time would count
// the time this thread waits for a core as overhead.
double cpu_now() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// hash_lm with the time spent inside it accumulated.
class timed_source {
 public:
  using handle = itscale::hash_lm::handle;
  explicit timed_source(itscale::hash_lm lm) : lm_(std::move(lm)) {}

  [[nodiscard]] std::size_t vocab_size() const { return lm_.vocab_size(); }
  handle prefill(std::span<const token_id> p) {
    const double t0 = cpu_now();
    const handle h = lm_.prefill(p);
    inside += cpu_now() - t0;
    return h;
  }
  void extend(std::span<const handle> parents, std::span<const token_id> t, std::span<handle> children) {
    const double t0 = cpu_now();
    lm_.extend(parents, t, children);
    inside += cpu_now() - t0;
  }
  [[nodiscard]] itscale::logits_view logits() { return lm_.logits(); }  // a pointer copy: not timed
  void release(handle h) noexcept {
    const double t0 = cpu_now();
    lm_.release(h);
    inside += cpu_now() - t0;
  }

  double inside = 0;  ///< seconds of thread CPU time

 private:
  itscale::hash_lm lm_;
};
static_assert(itscale::LogitSource<timed_source>);

constexpr std::size_t new_tokens = 8;

template <class F>
double median_seconds(F&& f, int reps) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const double t0 = cpu_now();
    f();
    t.push_back(cpu_now() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void bench_beam(benchmark::State& st, std::size_t k, std::size_t vocab) {
  const std::uint64_t model_seed = 1234;
  const std::vector<token_id> prompt{1, 2, 3};

  // K distinct rows of the same model (states after different first tokens) as the search
  // leaves them for selection (shifted by their max, with their log-sums), and running scores of
  // a mid-search size, for the selection and normalisation timings.
  const itscale::hash_lm lm(vocab, model_seed);
  std::vector<std::vector<float>> rows(k, std::vector<float>(vocab));
  std::vector<float> base(k), lse(k);
  for (std::size_t b = 0; b < k; ++b) {
    auto prefix = prompt;
    prefix.push_back(static_cast<token_id>(b + 5));
    lm.fill(lm.state_of(prefix), rows[b]);
    lse[b] = itscale::detail::shift_to_max(rows[b]);
    base[b] = -10.0f - 0.25f * static_cast<float>(b);
  }
  std::vector<std::span<const float>> views(rows.begin(), rows.end());
  // The fused kernel (logsumexp + selection in three reads per row) on the raw logits: what the
  // log-softmax + selection of a step would cost through it.
  std::vector<std::vector<float>> raw(k, std::vector<float>(vocab));
  for (std::size_t b = 0; b < k; ++b) {
    auto prefix = prompt;
    prefix.push_back(static_cast<token_id>(b + 5));
    lm.fill(lm.state_of(prefix), raw[b]);
  }
  std::vector<std::span<const float>> raw_views(raw.begin(), raw.end());
  std::vector<itscale::kernels::row_candidate> kout(2 * k);
  const double kernel_s = median_seconds(
      [&] {
        benchmark::DoNotOptimize(itscale::kernels::beam_select(raw_views, base, kout));
        benchmark::DoNotOptimize(kout.data());
      },
      51);
  std::vector<itscale::beam_candidate> out;
  const double select_s = median_seconds(
      [&] {
        itscale::select_beam_candidates(views, lse, base, 2 * k, out);
        benchmark::DoNotOptimize(out.data());
      },
      201);
  // The normalisation and the validity scan on K distinct raw rows (each restored from a pristine
  // copy first; the copy's own time is measured and subtracted), as the search runs them per step.
  std::vector<std::vector<float>> work = raw;
  const double copy_s = median_seconds(
      [&] {
        for (std::size_t b = 0; b < k; ++b) std::copy(raw[b].begin(), raw[b].end(), work[b].begin());
        benchmark::DoNotOptimize(work.data());
      },
      51);
  const double logsoftmax_s = median_seconds(
      [&] {
        for (std::size_t b = 0; b < k; ++b) {
          std::copy(raw[b].begin(), raw[b].end(), work[b].begin());
          benchmark::DoNotOptimize(itscale::detail::shift_to_max(work[b]));
        }
        benchmark::DoNotOptimize(work.data());
      },
      51);
  const double logsoftmax_per_row = std::max(0.0, logsoftmax_s - copy_s) / static_cast<double>(k);
  const double validity_per_row = median_seconds(
      [&] {
        for (std::size_t b = 0; b < k; ++b) benchmark::DoNotOptimize(itscale::kernels::find_invalid(raw[b]));
      },
      51) / static_cast<double>(k);

  const itscale::beam_options o{.num_beams = k, .stop = {.max_new_tokens = new_tokens}};
  timed_source src(itscale::hash_lm(vocab, model_seed));
  std::size_t steps = 0;
  const double t0 = cpu_now();
  for (auto _ : st) {
    auto r = itscale::beam_search(src, std::span<const token_id>(prompt), o);
    steps += r.prompts[0].steps;
    benchmark::DoNotOptimize(r.sequences.data());
  }
  const double total = cpu_now() - t0;
  const double iters = static_cast<double>(st.iterations());
  const double n_steps = static_cast<double>(steps);
  // Rows through the log-softmax per search: the prompt's row, then K per later step.
  const double ls_rows_per_search = 1.0 + static_cast<double>(k) * static_cast<double>(new_tokens - 1);

  const double per_step_total = total / n_steps;
  const double per_step_source = src.inside / n_steps;
  const double per_step_ls = logsoftmax_per_row * ls_rows_per_search * iters / n_steps;
  // Rows the source returns per search: the prompt's, then K per later step (the last step's
  // candidates need no logits).
  const double per_step_valid = validity_per_row * ls_rows_per_search * iters / n_steps;
  const double bookkeeping = per_step_total - per_step_source - select_s - per_step_ls - per_step_valid;
  st.counters["steps_per_s"] = benchmark::Counter(n_steps, benchmark::Counter::kIsRate);
  st.counters["source_us"] = per_step_source * 1e6;
  st.counters["select_us"] = select_s * 1e6;
  st.counters["logsoftmax_us"] = per_step_ls * 1e6;
  st.counters["validity_us"] = per_step_valid * 1e6;
  st.counters["bookkeeping_us"] = bookkeeping * 1e6;
  st.counters["bookkeeping_per_select"] = bookkeeping / select_s;
  st.counters["rest_per_select"] = (per_step_total - per_step_source - select_s) / select_s;
  st.counters["kernel_beam_select_us"] = kernel_s * 1e6;
  st.counters["bookkeeping_per_kernel"] = bookkeeping / kernel_s;
}

// steps_per_s of each (K, V, L) run so far, for the long/short ratio.
std::map<std::tuple<std::size_t, std::size_t, std::size_t>, double>& length_rates() {
  static std::map<std::tuple<std::size_t, std::size_t, std::size_t>, double> rates;
  return rates;
}

void bench_length(benchmark::State& st, std::size_t k, std::size_t vocab, std::size_t length) {
  const std::vector<token_id> prompt{1, 2, 3};
  const itscale::beam_options o{.num_beams = k, .num_return_sequences = k, .stop = {.max_new_tokens = length}};
  itscale::hash_lm lm(vocab, 1234);
  std::size_t steps = 0;
  const double t0 = cpu_now();
  for (auto _ : st) {
    auto r = itscale::beam_search(lm, std::span<const token_id>(prompt), o);
    steps += r.prompts[0].steps;
    benchmark::DoNotOptimize(r.sequences.data());
  }
  const double per_step = (cpu_now() - t0) / static_cast<double>(steps);
  const double rate = 1.0 / per_step;
  length_rates()[{k, vocab, length}] = rate;
  st.counters["steps_per_s"] = rate;
  st.counters["us_per_step"] = per_step * 1e6;
  for (const std::size_t shorter : {std::size_t{16}, std::size_t{64}}) {
    const auto base = length_rates().find({k, vocab, shorter});
    if (base != length_rates().end()) st.counters["vs_L" + std::to_string(shorter)] = rate / base->second;
  }
}

}  // namespace

int main(int argc, char** argv) {
  for (const std::size_t v : {std::size_t{32000}, std::size_t{128256}})
    for (const std::size_t k : {std::size_t{4}, std::size_t{8}, std::size_t{16}})
      benchmark::RegisterBenchmark(("beam/itscale/K:" + std::to_string(k) + "/V:" + std::to_string(v)).c_str(),
                                   [k, v](benchmark::State& st) { bench_beam(st, k, v); })
          ->Unit(benchmark::kMillisecond)
          ->MinTime(0.5);
  for (const std::size_t v : {std::size_t{512}, std::size_t{32000}})
    for (const std::size_t k : {std::size_t{4}, std::size_t{16}})
      for (const std::size_t len : {std::size_t{16}, std::size_t{64}, std::size_t{256}, std::size_t{1024}})
        benchmark::RegisterBenchmark(("beam_length/itscale/K:" + std::to_string(k) + "/V:" + std::to_string(v) +
                                      "/L:" + std::to_string(len))
                                         .c_str(),
                                     [k, v, len](benchmark::State& st) { bench_length(st, k, v, len); })
            ->Unit(benchmark::kMillisecond)
            ->MinTime(0.5);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
