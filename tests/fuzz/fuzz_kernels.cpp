// itscale_fuzz_kernels: every public kernel of include/itscale/kernels on arbitrary rows (NaN,
// +-inf, denormals, +-0, huge and tiny values, rows masked entirely or but a few), against the
// scalar references of kernels/reference and the kernels' documented contracts. Built with runtime
// dispatch: ITSCALE_ARCH=sse2|avx2|avx512 picks the arch under test.
//
// Kernels whose precondition excludes NaN (or +inf) get the row with those entries replaced;
// the kernels documented for arbitrary values (find_invalid, count_unmasked, mask_below*,
// collect_unmasked, top_k_rows, beam_select) get the raw row. Rows are capped at 512 floats (and
// the O(n * m) reference selection at small products) so that 10^6 inputs take minutes under
// ASan; 512 is 8 blocks of four AVX-512 batches, past every kernel's block and tail handling
// (the thresholds that start at 4096 entries are covered by tests/kernels at real sizes).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

#include "fuzz_support.hpp"
#include "itscale/core/rng.hpp"
#include "itscale/kernels/beam_select.hpp"
#include "itscale/kernels/filters.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/reference/filters.hpp"
#include "itscale/kernels/reference/reduce.hpp"
#include "itscale/kernels/reference/sample.hpp"
#include "itscale/kernels/reference/softmax.hpp"
#include "itscale/kernels/reference/top_k.hpp"
#include "itscale/kernels/sample.hpp"
#include "itscale/kernels/softmax.hpp"
#include "itscale/kernels/sparse.hpp"
#include "itscale/kernels/top_k.hpp"

namespace kn = itscale::kernels;
namespace ref = itscale::kernels::reference;
using itscale::token_id;
using fuzz::check;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();
constexpr std::size_t max_row = 512;

// NaN -> a finite value from the input; with `no_plus_inf`, +inf -> FLT_MAX too.
std::vector<float> cleaned(const std::vector<float>& row, float nan_to, bool no_plus_inf) {
  std::vector<float> c(row);
  for (float& x : c) {
    if (std::isnan(x)) x = nan_to;
    if (no_plus_inf && x == inf) x = std::numeric_limits<float>::max();
  }
  return c;
}

bool any_unmasked(const std::vector<float>& row) {
  return std::any_of(row.begin(), row.end(), [](float x) { return x > -inf; });
}

void check_reductions(const std::vector<float>& raw, const std::vector<float>& clean) {
  check(kn::find_invalid(raw) == ref::find_invalid(raw), "find_invalid == reference");
  check(kn::count_unmasked(raw) == ref::count_unmasked(raw), "count_unmasked == reference");
  check(fuzz::same(kn::max(clean), ref::max(clean)), "max == reference");
  check(kn::argmax(clean) == ref::argmax(clean), "argmax == reference (lowest index on ties)");
  const float lse = kn::logsumexp(clean), want = ref::logsumexp(clean);
  if (std::isinf(want) || std::isnan(want))
    check(fuzz::same(lse, want), "logsumexp: +-inf exactly as the reference");
  else
    check(std::fabs(double{lse} - double{want}) <= 1e-5 + 1e-6 * std::fabs(double{want}), "logsumexp within 1e-5 of float64");
}

void check_softmax(const std::vector<float>& row) {  // no NaN or +inf, some entry > -inf
  const std::size_t n = row.size();
  double m = -INFINITY;
  for (float x : row) m = std::max(m, double{x});
  double s = 0;
  for (float x : row) s += std::exp(double{x} - m);
  std::vector<float> p(n), lp(n);
  kn::softmax(row, p);
  kn::log_softmax(row, lp);
  for (std::size_t i = 0; i < n; ++i) {
    const double want = std::exp(double{row[i]} - m) / s;
    check(p[i] >= 0.0f && p[i] <= 1.0f, "softmax in [0, 1]");
    check(std::fabs(double{p[i]} - want) <= 2e-5 * want + 1e-37, "softmax within 2e-5 relative of float64");
    check(!std::isnan(lp[i]) && lp[i] <= 1e-5f, "log_softmax is no NaN and <= 0");
    if (row[i] == -inf) check(p[i] == 0.0f && lp[i] == -inf, "masked entries: p = 0, log p = -inf");
  }
}

// The top-k contract checked exactly in O(n + k): k in-range indices in strictly decreasing rank
// (value, then the lower index: reference::ranks_above), each value its entry, and exactly k - 1
// entries of the row ranking above the last one. Under that strict total order the k best are
// unique and so is their order, so this holds exactly when the output equals reference::top_k.
// Long rows use it alone: the reference's heap of k ~ 40000 under coverage instrumentation took
// 60 % of the target's time once the fuzzer favoured long rows.
void check_top_k_contract(const std::vector<float>& row, std::span<const token_id> idx, std::span<const float> val) {
  const std::size_t n = row.size(), k = idx.size();
  for (std::size_t j = 0; j < k; ++j) {
    check(idx[j] >= 0 && static_cast<std::size_t>(idx[j]) < n, "top_k index inside the row");
    check(fuzz::same(val[j], row[static_cast<std::size_t>(idx[j])]), "top_k value is its entry");
    if (j > 0) check(ref::ranks_above(row, idx[j - 1], idx[j]), "top_k sorted by rank (ties to the lower index), distinct");
  }
  std::size_t above_last = 0;
  for (std::size_t i = 0; i < n; ++i) above_last += ref::ranks_above(row, static_cast<token_id>(i), idx[k - 1]) ? 1 : 0;
  check(above_last == k - 1, "top_k: exactly k - 1 entries rank above the last one kept");
}

void check_top_k(const std::vector<float>& row, FuzzedDataProvider& in, bool long_row) {  // no NaN
  const std::size_t n = row.size();
  const std::size_t k = in.ConsumeIntegralInRange<std::size_t>(1, n);
  std::vector<token_id> idx(k);
  std::vector<float> val(k);
  if (in.ConsumeBool()) {
    std::vector<std::uint64_t> scratch(2 * k + 64);
    kn::top_k(row, idx, val, scratch);
  } else {
    kn::top_k(row, idx, val);
  }
  check_top_k_contract(row, idx, val);
  if (!long_row) {
    std::vector<token_id> want_idx(k);
    std::vector<float> want_val(k);
    ref::top_k(row, want_idx, want_val);
    check(idx == want_idx, "top_k indices == reference (sorted, ties to the lower index)");
    for (std::size_t j = 0; j < k; ++j) check(fuzz::same(val[j], want_val[j]), "top_k values == reference");
  }
  check(kn::kth_largest(row, k) == val[k - 1] || (val[k - 1] == -inf), "kth_largest == k-th top_k value");
}

// Splits `raw` into rows and checks top_k_rows and beam_select against the reference.
void check_select(const std::vector<float>& raw, FuzzedDataProvider& in) {
  const std::size_t n = raw.size();
  const std::size_t rows_n = in.ConsumeIntegralInRange<std::size_t>(1, 8);
  std::vector<std::span<const float>> rows;
  std::size_t at = 0;
  for (std::size_t r = 0; r < rows_n; ++r) {
    const std::size_t len = r + 1 == rows_n ? n - at : in.ConsumeIntegralInRange<std::size_t>(0, n - at);
    rows.emplace_back(raw.data() + at, len);
    at += len;
  }
  std::vector<float> sub(rows_n), add(rows_n);
  for (std::size_t r = 0; r < rows_n; ++r) {
    // Finite shifts (the precondition); any finite value, huge ones included.
    sub[r] = fuzz::any_float(in);
    add[r] = fuzz::any_float(in);
    if (!std::isfinite(sub[r])) sub[r] = 1.0f;
    if (!std::isfinite(add[r])) add[r] = -2.0f;
  }
  // The reference is O(n * m): wide selections (the heap path above 1024) only on short rows.
  const std::size_t m_max = n <= 128 ? 1100 : 64;
  const std::size_t m = in.ConsumeIntegralInRange<std::size_t>(0, m_max);
  std::vector<kn::row_candidate> out(m), want(m);
  const auto same_as_reference = [&](std::size_t got, std::size_t want_n, std::span<const float> sh) {
    check(got == want_n, "top_k_rows / beam_select count == reference");
    for (std::size_t j = 0; j < got; ++j) {
      check(out[j].score == want[j].score && out[j].row == want[j].row && out[j].token == want[j].token,
            "top_k_rows / beam_select candidate == reference");
      check(out[j].row < rows_n && static_cast<std::size_t>(out[j].token) < rows[out[j].row].size(),
            "candidate indices inside the block");
      check(out[j].score > -inf && !std::isnan(out[j].score), "no -inf or NaN candidate selected");
      const float x = rows[out[j].row][static_cast<std::size_t>(out[j].token)];
      check(out[j].score == (x - sh[out[j].row]) + add[out[j].row], "candidate score is its formula");
    }
  };
  same_as_reference(kn::top_k_rows(rows, sub, add, out), ref::top_k_rows(rows, sub, add, want), sub);
  std::vector<float> lse(rows_n);
  for (std::size_t r = 0; r < rows_n; ++r) lse[r] = kn::logsumexp(rows[r]);
  // A row's lse is +-inf or NaN only with +inf / NaN entries or when fully masked: every score of
  // it is then NaN or -inf, which neither side selects.
  same_as_reference(kn::beam_select(rows, add, out), ref::top_k_rows(rows, lse, add, want), lse);
}

void check_filters(const std::vector<float>& raw, const std::vector<float>& clean, FuzzedDataProvider& in) {
  const std::size_t n = raw.size();
  // mask_below / mask_below_collect / collect_unmasked take any values (NaN stays, is not listed).
  const float thr = fuzz::any_float(in);
  auto a = raw, b = raw, c = raw;
  std::vector<token_id> got(n), want(n);
  const std::size_t want_n = ref::mask_below_collect(a, thr, want);
  const std::size_t got_n = kn::mask_below_collect(b, thr, got);
  if (got_n != want_n && std::getenv("ITSCALE_FUZZ_DEBUG") != nullptr) {
    std::fprintf(stderr, "mask_below_collect: n %zu thr %.9g got %zu want %zu\n", n, static_cast<double>(thr), got_n, want_n);
    for (std::size_t i = 0; i < n; ++i)
      std::fprintf(stderr, "  %zu: raw %.9g ref %.9g kernel %.9g\n", i, static_cast<double>(raw[i]), static_cast<double>(a[i]),
                   static_cast<double>(b[i]));
    for (std::size_t j = 0; j < std::max(got_n, want_n); ++j) std::fprintf(stderr, "  [%zu] got %d want %d\n", j, j < got_n ? got[j] : -1, j < want_n ? want[j] : -1);
  }
  check(got_n == want_n, "mask_below_collect count == reference");
  check(std::equal(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(want_n), want.begin()),
        "mask_below_collect ids == reference");
  check(std::memcmp(a.data(), b.data(), n * sizeof(float)) == 0, "mask_below_collect row == reference");
  check(kn::mask_below(c, thr) == want_n, "mask_below count == reference");
  check(std::memcmp(a.data(), c.data(), n * sizeof(float)) == 0, "mask_below row == reference");
  std::vector<token_id> ids(n);
  check(kn::collect_unmasked(raw, ids) == ref::collect_unmasked(raw, got), "collect_unmasked count == reference");
  check(std::equal(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(ref::count_unmasked(raw)), got.begin()),
        "collect_unmasked ids == reference");
  // min_p_threshold: p in [0, 1], no NaN.
  const float p = static_cast<float>(in.ConsumeIntegralInRange<int>(0, 1000)) / 1000.0f;
  check(fuzz::same(kn::min_p_threshold(clean, p), ref::min_p_threshold(clean, p)), "min_p_threshold == reference");
}

// top_p_mask: a rank prefix holding p of the mass (float64), up to rounding at the cut and ties.
void check_top_p(const std::vector<float>& orig, FuzzedDataProvider& in) {  // no NaN/+inf, some > -inf
  const std::size_t n = orig.size();
  const double p = static_cast<double>(in.ConsumeIntegralInRange<int>(1, 1000)) / 1000.0;
  auto row = orig, ref_row = orig;
  if (p == 1.0) {
    // The filter is off at p = 1 (the chain never builds it): every unmasked token stays, also
    // those whose float64 mass underflows to 0, which the reference's prefix rule would drop.
    std::vector<std::uint64_t> keys(orig.size());
    check(kn::top_p_mask(row, p, keys) == ref::count_unmasked(orig), "top_p_mask(p = 1) keeps every unmasked token");
    return;
  }
  std::vector<token_id> order(n);
  const std::size_t want = ref::top_p_mask(ref_row, p, order);
  std::vector<std::uint64_t> keys(n);
  const std::size_t kept = kn::top_p_mask(row, p, keys);
  check(kept >= 1 && kept <= n, "top_p_mask keeps at least one token");
  check(kept == ref::count_unmasked(row), "top_p_mask returns the number left unmasked");
  for (std::size_t j = 0; j < n; ++j) {
    const bool keep = row[static_cast<std::size_t>(order[j])] > -inf;
    check(keep == (j < kept), "top_p_mask keeps a prefix of the ranking");
    if (keep) check(row[static_cast<std::size_t>(order[j])] == orig[static_cast<std::size_t>(order[j])], "kept values unchanged");
  }
  if (kept != want) {
    const double m = static_cast<double>(*std::max_element(orig.begin(), orig.end()));
    std::vector<double> mass(n + 1, 0.0);
    for (std::size_t j = 0; j < n; ++j)
      mass[j + 1] = mass[j] + std::exp(static_cast<double>(orig[static_cast<std::size_t>(order[j])]) - m);
    const std::size_t lo = std::min(kept, want), hi = std::max(kept, want);
    check(std::fabs(mass[lo] - p * mass[n]) <= 1e-5 * mass[n] + 1e-12, "top_p_mask cut within rounding of p");
    const float at = orig[static_cast<std::size_t>(order[lo])];
    if (std::getenv("ITSCALE_FUZZ_DEBUG") != nullptr) {
      std::fprintf(stderr, "top_p: n %zu p %.17g kept %zu want %zu max %.9g total %.17g\n", n, p, kept, want, m, mass[n]);
      for (std::size_t j = lo; j <= hi && j < n; ++j)
        std::fprintf(stderr, "  rank %zu: token %d value %.9g mass-before %.17g\n", j, order[j],
                     static_cast<double>(orig[static_cast<std::size_t>(order[j])]), mass[j]);
    }
    check(hi - lo <= 1 + static_cast<std::size_t>(std::count(orig.begin(), orig.end(), at)), "top_p_mask off only by ties");
  }
}

// Sampling: lands on an unmasked token, inside the float64 CDF interval of u (up to rounding).
void check_sampling(const std::vector<float>& row, FuzzedDataProvider& in) {  // no NaN/+inf, some > -inf
  const std::size_t n = row.size();
  const double u = static_cast<double>(in.ConsumeIntegral<std::uint32_t>()) * 0x1.0p-32;
  const std::size_t t = kn::sample_inverse_cdf(row, u);
  check(t < n && row[t] > -inf, "sample_inverse_cdf returns an unmasked token");
  double m = -INFINITY;
  for (float x : row) m = std::max(m, double{x});
  double total = 0, below = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double e = std::exp(double{row[i]} - m);
    if (i < t) below += e;
    total += e;
  }
  const double target = u * total, tol = 1e-5 * total;
  check(below <= target + tol && below + std::exp(double{row[t]} - m) >= target - tol,
        "sample_inverse_cdf inside the float64 CDF interval of u");
  check(ref::sample_inverse_cdf(row, u) < n, "reference sample_inverse_cdf returns a token");
  // The sparse kernels over the listed unmasked tokens.
  std::vector<token_id> ids(n);
  const std::size_t live = kn::collect_unmasked(row, ids);
  const std::span<const token_id> listed(ids.data(), live);
  const std::size_t ts = kn::sample_inverse_cdf(row, listed, u);
  check(ts < n && row[ts] > -inf, "sparse sample_inverse_cdf returns a listed token");
  const float lse = kn::logsumexp(row, listed), dense = ref::logsumexp(row);
  check(std::fabs(double{lse} - double{dense}) <= 1e-5 + 1e-6 * std::fabs(double{dense}), "sparse logsumexp == dense");
  // Gumbel: a pure function of the key; an unmasked token, or npos for none.
  const itscale::counter_rng rng(in.ConsumeIntegral<std::uint64_t>(), 0);
  std::vector<float> scratch(n);
  const std::size_t g = kn::gumbel_max(row, rng, 1, scratch);
  check(g < n && row[g] > -inf, "gumbel_max returns an unmasked token");
  check(kn::gumbel_max(row, rng, 1, scratch) == g, "gumbel_max is deterministic");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  if (in.ConsumeIntegralInRange<int>(0, 127) == 0) {
    // Rarely, a long row for the selection paths that only start at 8192 entries (the last-block
    // head start) and 32768 (the sampled threshold for large k): top-k only, so it stays cheap.
    const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(8193, 40000);
    const std::vector<float> raw = fuzz::any_row(in, n);
    check_top_k(cleaned(raw, -1.0f, false), in, true);
    return 0;
  }
  const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(1, max_row);
  const std::vector<float> raw = fuzz::any_row(in, n);
  const float nan_to = [&] {
    const float f = fuzz::any_float(in);
    return std::isnan(f) ? -1.0f : f;
  }();
  const std::vector<float> no_nan = cleaned(raw, nan_to, false);
  const std::vector<float> finite_top = cleaned(raw, nan_to, true);  // no NaN, no +inf

  check_reductions(raw, no_nan);
  check_top_k(no_nan, in, false);
  check_select(raw, in);
  check_filters(raw, no_nan, in);
  if (any_unmasked(finite_top)) {
    check_softmax(finite_top);
    check_top_p(finite_top, in);
    check_sampling(finite_top, in);
  } else {
    // Every entry masked: the samplers report it, the reductions give -inf.
    check(kn::sample_inverse_cdf(finite_top, 0.5) == kn::npos, "sample_inverse_cdf on a masked row is npos");
    check(kn::logsumexp(finite_top) == -inf, "logsumexp of a masked row is -inf");
    std::vector<float> scratch(n);
    check(kn::gumbel_max(finite_top, itscale::counter_rng(1, 2), 0, scratch) == kn::npos, "gumbel_max on a masked row is npos");
  }
  // Batched logsumexp equals the per-row kernel bit for bit.
  const std::size_t vocab = in.ConsumeIntegralInRange<std::size_t>(1, n);
  const std::size_t rows_n = n / vocab;
  std::vector<float> lses(rows_n);
  kn::logsumexp(std::span<const float>(no_nan.data(), rows_n * vocab), vocab, lses);
  for (std::size_t r = 0; r < rows_n; ++r)
    check(fuzz::same(lses[r], kn::logsumexp(std::span<const float>(no_nan.data() + r * vocab, vocab))),
          "batched logsumexp == per-row logsumexp");
  return 0;
}
