// itscale_bench_mbr: MBR decoding's N x N utility matrix, one thread.
//
//   mbr/<utility>/N:{64,256}      the whole itscale::mbr call (prepare + N (N + 1) / 2 pairs + ranking)
//   pairs/<utility>/N:{64,256}    the hot loop alone: every pair (i <= j) after one prepare
//   mbr_pruned/<utility>/N:256    with confidence-based pruning (default schedule, alpha 0.99,
//                                 500 bootstrap resamples)
//
// Utilities: answer_match, token_f1, rouge_l (bit-parallel LCS), chrf (sacreBLEU chrF on decoded
// text), and rouge_l_dp — ROUGE-L through function_utility with the textbook O(|a| |b|) dynamic
// program, the baseline the bit-parallel LCS replaces.
//
// Candidates imitate N samples of one prompt: noisy copies of a base sequence over a 32 000-token
// vocabulary, 32-64 tokens long (each token replaced with probability 0.3, dropped or duplicated
// with probability 0.05 each). chrF's detokenizer maps a token to a 2-7 letter piece, 70 % of
// them with a leading space (SentencePiece-like), so a candidate decodes to ~150-250 characters.
//
// Counters: pairs_per_s (unordered pairs, i.e. utility evaluations of both directions, per second)
// and, for mbr_pruned, pairs (evaluated) against the full N (N + 1) / 2.
// Flags: Google Benchmark's (e.g. --benchmark_filter=REGEX, --benchmark_repetitions=N).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <itscale/core/rng.hpp>
#include <itscale/select/mbr.hpp>
#include <itscale/select/mbr_utility.hpp>

namespace {

using itscale::token_id;
constexpr std::size_t vocab = 32000;

std::vector<std::vector<token_id>> make_candidates(std::size_t n, std::uint64_t seed) {
  const itscale::counter_rng rng(seed, 0);
  std::uint32_t k = 0;
  const auto u = [&] { return rng.uniform(0, k++); };
  std::vector<token_id> base(48);
  for (auto& t : base) t = static_cast<token_id>(u() * vocab);
  std::vector<std::vector<token_id>> out(n);
  for (auto& c : out) {
    for (token_id t : base) {
      const double r = u();
      if (r < 0.05) continue;                                       // dropped
      c.push_back(r < 0.35 ? static_cast<token_id>(u() * vocab) : t);  // replaced or kept
      if (u() < 0.05) c.push_back(c.back());                        // duplicated
    }
    const auto len = 32 + static_cast<std::size_t>(u() * 33);  // 32..64
    while (c.size() < len) c.push_back(static_cast<token_id>(u() * vocab));
    c.resize(len);
  }
  return out;
}

// A token's text: 2-7 letters from a hash of its id, a leading space for 70 % of the ids.
std::string piece(token_id t) {
  std::uint64_t h = (static_cast<std::uint64_t>(t) + 1) * 0x9E3779B97F4A7C15ull;
  h ^= h >> 29;
  std::string s;
  if (h % 10 < 7) s.push_back(' ');
  const std::size_t len = 2 + (h >> 8) % 6;
  for (std::size_t i = 0; i < len; ++i) s.push_back(static_cast<char>('a' + (h >> (12 + 3 * i)) % 26));
  return s;
}

struct detokenizer {
  std::string operator()(std::span<const token_id> t) const {
    std::string s;
    for (token_id x : t) s += piece(x);
    return s;
  }
};

std::optional<int> last_token_answer(std::span<const token_id> t) {
  if (t.empty()) return std::nullopt;
  return static_cast<int>(t.back() % 10);
}

double lcs_f1_dp(std::span<const token_id> a, std::span<const token_id> b) {
  if (a.empty() && b.empty()) return 1;
  thread_local std::vector<std::size_t> prev, cur;
  prev.assign(b.size() + 1, 0);
  cur.assign(b.size() + 1, 0);
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return 2.0 * static_cast<double>(prev[b.size()]) / static_cast<double>(a.size() + b.size());
}

template <class MakeUtility>
void run_mbr(benchmark::State& state, MakeUtility make, bool pruned) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto cands = make_candidates(n, 42);
  const std::vector<std::span<const token_id>> spans(cands.begin(), cands.end());
  auto u = make();
  itscale::mbr_options o;
  o.pruning.enabled = pruned;
  std::uint64_t pairs = 0;
  for (auto _ : state) {
    const auto r = itscale::mbr(std::span<const std::span<const token_id>>(spans), u, o);
    benchmark::DoNotOptimize(r.best);
    pairs += r.pairs;
  }
  state.counters["pairs_per_s"] = benchmark::Counter(static_cast<double>(pairs), benchmark::Counter::kIsRate);
  state.counters["pairs"] = static_cast<double>(pairs) / static_cast<double>(state.iterations());
  state.counters["full_pairs"] = static_cast<double>(n * (n + 1) / 2);
}

template <class MakeUtility>
void run_pairs(benchmark::State& state, MakeUtility make) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto cands = make_candidates(n, 42);
  const std::vector<std::span<const token_id>> spans(cands.begin(), cands.end());
  auto u = make();
  u.prepare(std::span<const std::span<const token_id>>(spans));
  std::uint64_t pairs = 0;
  for (auto _ : state) {
    double sum = 0;
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = i; j < n; ++j) {
        const auto p = u.pair(i, j);
        sum += p.forward + p.backward;
      }
    benchmark::DoNotOptimize(sum);
    pairs += n * (n + 1) / 2;
  }
  state.counters["pairs_per_s"] = benchmark::Counter(static_cast<double>(pairs), benchmark::Counter::kIsRate);
}

auto answer_match() { return itscale::make_answer_match(last_token_answer); }
auto token_f1() { return itscale::token_f1{}; }
auto rouge_l() { return itscale::rouge_l{}; }
auto chrf() { return itscale::make_chrf(detokenizer{}); }
auto rouge_l_dp() { return itscale::make_utility(lcs_f1_dp, true, "rouge_l_dp"); }

#define ITSCALE_MBR_BENCH(name)                                                                       \
  void mbr_##name(benchmark::State& s) { run_mbr(s, name, false); }                                   \
  void pairs_##name(benchmark::State& s) { run_pairs(s, name); }                                      \
  BENCHMARK(mbr_##name)->Name("mbr/" #name)->ArgName("N")->Arg(64)->Arg(256)->Unit(benchmark::kMicrosecond); \
  BENCHMARK(pairs_##name)->Name("pairs/" #name)->ArgName("N")->Arg(64)->Arg(256)->Unit(benchmark::kMicrosecond)

ITSCALE_MBR_BENCH(answer_match);
ITSCALE_MBR_BENCH(token_f1);
ITSCALE_MBR_BENCH(rouge_l);
ITSCALE_MBR_BENCH(chrf);
ITSCALE_MBR_BENCH(rouge_l_dp);

void pruned_rouge_l(benchmark::State& s) { run_mbr(s, rouge_l, true); }
void pruned_chrf(benchmark::State& s) { run_mbr(s, chrf, true); }
BENCHMARK(pruned_rouge_l)->Name("mbr_pruned/rouge_l")->ArgName("N")->Arg(256)->Unit(benchmark::kMicrosecond);
BENCHMARK(pruned_chrf)->Name("mbr_pruned/chrf")->ArgName("N")->Arg(256)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
