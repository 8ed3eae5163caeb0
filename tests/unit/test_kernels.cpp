// The row kernels against double-precision scalar references written here, over the row lengths
// that straddle SIMD widths (1, 7/8/9, 15/16/17) and a real vocabulary (32001), and the input
// shapes that break naive kernels (ties, a lone peak, masked tokens, large offsets, sorted input).

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "itscale/core/rng.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/reference/reduce.hpp"
#include "itscale/kernels/reference/sample.hpp"
#include "itscale/kernels/reference/softmax.hpp"
#include "itscale/kernels/reference/top_k.hpp"
#include "itscale/kernels/sample.hpp"
#include "itscale/kernels/softmax.hpp"
#include "itscale/kernels/top_k.hpp"

namespace kn = itscale::kernels;
using itscale::token_id;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float nan_f = std::numeric_limits<float>::quiet_NaN();
constexpr double feps = std::numeric_limits<float>::epsilon();

const std::size_t lengths[] = {1, 7, 8, 9, 15, 16, 17, 32001};

enum class shape { all_equal, one_peak, all_masked_but_one, shifted_by_50, ascending, random, two_peaks };
const shape shapes[] = {shape::all_equal,     shape::one_peak,  shape::all_masked_but_one,
                        shape::shifted_by_50, shape::ascending, shape::random,
                        shape::two_peaks};

const char* name(shape s) {
  switch (s) {
    case shape::all_equal: return "all_equal";
    case shape::one_peak: return "one_peak";
    case shape::all_masked_but_one: return "all_masked_but_one";
    case shape::shifted_by_50: return "shifted_by_50";
    case shape::ascending: return "ascending";
    case shape::random: return "random";
    case shape::two_peaks: return "two_peaks";
  }
  return "?";
}

// Deterministic pseudo-random floats in [-4, 4), different for every length.
float noise(std::size_t n, std::size_t i) {
  const itscale::counter_rng r(12345, n);
  return static_cast<float>(r.uniform(static_cast<std::uint32_t>(i)) * 8.0 - 4.0);
}

std::vector<float> make_row(shape s, std::size_t n) {
  std::vector<float> row(n);
  switch (s) {
    case shape::all_equal:
      std::fill(row.begin(), row.end(), 0.25f);
      break;
    case shape::one_peak:
      for (std::size_t i = 0; i < n; ++i) row[i] = noise(n, i) * 0.25f;
      row[n * 2 / 3] = 6.0f;
      break;
    case shape::all_masked_but_one:
      std::fill(row.begin(), row.end(), -inf);
      row[n / 2] = -3.5f;
      break;
    case shape::shifted_by_50:
      for (std::size_t i = 0; i < n; ++i) row[i] = noise(n, i) + 50.0f;
      break;
    case shape::ascending:
      for (std::size_t i = 0; i < n; ++i) row[i] = -5.0f + 10.0f * static_cast<float>(i) / static_cast<float>(n);
      break;
    case shape::random:
      for (std::size_t i = 0; i < n; ++i) row[i] = noise(n, i);
      break;
    case shape::two_peaks:  // exact tie at the top, the later one first in memory order checks
      for (std::size_t i = 0; i < n; ++i) row[i] = noise(n, i);
      row[n - 1] = 9.0f;
      row[n / 3] = 9.0f;
      break;
  }
  return row;
}

// ---- double-precision scalar references ------------------------------------------------------

double ref_max(std::span<const float> row) {
  double m = -INFINITY;
  for (float x : row) m = std::max(m, static_cast<double>(x));
  return m;
}

std::size_t ref_argmax(std::span<const float> row) {
  if (row.empty()) return kn::npos;
  const double m = ref_max(row);
  for (std::size_t i = 0; i < row.size(); ++i)
    if (static_cast<double>(row[i]) == m) return i;  // first occurrence = lowest index
  return kn::npos;
}

double ref_logsumexp(std::span<const float> row) {
  const double m = ref_max(row);
  if (m == -INFINITY) return m;
  long double s = 0;
  for (float x : row) s += std::exp(static_cast<long double>(x) - m);
  return m + static_cast<double>(std::log(s));
}

std::vector<double> ref_softmax(std::span<const float> row) {
  const double lse = ref_logsumexp(row);
  std::vector<double> p(row.size());
  for (std::size_t i = 0; i < row.size(); ++i) p[i] = std::exp(static_cast<double>(row[i]) - lse);
  return p;
}

// Indices ordered best first: larger value, then lower index (the library's one tie rule).
std::vector<token_id> ref_ranking(std::span<const float> row) {
  std::vector<token_id> ids(row.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](token_id a, token_id b) {
    return row[static_cast<std::size_t>(a)] > row[static_cast<std::size_t>(b)];
  });
  return ids;
}

// Tolerance for a float result whose exact value is `ref`: a few float ulps.
double tol(double ref) { return 8 * feps * std::max(1.0, std::fabs(ref)); }

}  // namespace

// Kernels are noexcept (house rule: they never throw and never allocate).
static_assert(noexcept(kn::max(std::span<const float>())));
static_assert(noexcept(kn::argmax(std::span<const float>())));
static_assert(noexcept(kn::logsumexp(std::span<const float>())));
static_assert(noexcept(kn::find_invalid(std::span<const float>())));
static_assert(noexcept(kn::count_unmasked(std::span<const float>())));
static_assert(noexcept(kn::softmax(std::span<float>())));
static_assert(noexcept(kn::softmax(std::span<const float>(), std::span<float>())));
static_assert(noexcept(kn::log_softmax(std::span<float>())));
static_assert(noexcept(kn::log_softmax(std::span<const float>(), std::span<float>())));
static_assert(noexcept(kn::top_k(std::span<const float>(), std::span<token_id>(), std::span<float>())));
static_assert(noexcept(kn::kth_largest(std::span<const float>(), 1, std::span<float>())));
static_assert(noexcept(kn::sample_inverse_cdf(std::span<const float>(), 0.5)));

TEST_CASE("max, argmax, logsumexp, count_unmasked match the scalar reference") {
  for (shape s : shapes) {
    for (std::size_t n : lengths) {
      CAPTURE(name(s));
      CAPTURE(n);
      const auto row = make_row(s, n);
      CHECK(static_cast<double>(kn::max(row)) == ref_max(row));
      CHECK(kn::argmax(row) == ref_argmax(row));
      const double lse = ref_logsumexp(row);
      CHECK(std::fabs(static_cast<double>(kn::logsumexp(row)) - lse) <= tol(lse));
      std::size_t unmasked = 0;
      for (float x : row) unmasked += x != -inf ? 1u : 0u;
      CHECK(kn::count_unmasked(row) == unmasked);
    }
  }
}

TEST_CASE("argmax: ties go to the lowest index") {
  const std::vector<float> all_equal(17, 1.0f);
  CHECK(kn::argmax(all_equal) == 0);
  const std::vector<float> late_tie = {0, 3, 1, 3, 3};
  CHECK(kn::argmax(late_tie) == 1);
  const std::vector<float> masked_first = {-inf, -inf, -2, -2};
  CHECK(kn::argmax(masked_first) == 2);
  // A single masked entry still has an argmax (the caller decides what a masked row means).
  const std::vector<float> one_masked = {-inf};
  CHECK(kn::argmax(one_masked) == 0);
}

TEST_CASE("reductions on empty and fully masked rows") {
  const std::span<const float> empty;
  CHECK(kn::max(empty) == -inf);
  CHECK(kn::argmax(empty) == kn::npos);
  CHECK(kn::logsumexp(empty) == -inf);
  CHECK(kn::count_unmasked(empty) == 0);
  CHECK(kn::find_invalid(empty) == kn::npos);
  const std::vector<float> masked(9, -inf);
  CHECK(kn::logsumexp(masked) == -inf);
  CHECK(kn::count_unmasked(masked) == 0);
}

TEST_CASE("logsumexp by hand") {
  // log(e^0 + e^0) = ln 2; log(3 e^100) = 100 + ln 3 (no overflow although e^100 > FLT_MAX).
  const std::vector<float> two = {0, 0};
  CHECK(kn::logsumexp(two) == doctest::Approx(std::log(2.0)).epsilon(1e-6));
  const std::vector<float> big = {100, 100, -inf, 100};
  CHECK(kn::logsumexp(big) == doctest::Approx(100 + std::log(3.0)).epsilon(1e-6));
}

TEST_CASE("softmax and log_softmax, in place and out of place, match the scalar reference") {
  for (shape s : shapes) {
    for (std::size_t n : lengths) {
      CAPTURE(name(s));
      CAPTURE(n);
      const auto row = make_row(s, n);
      const auto p = ref_softmax(row);
      const double lse = ref_logsumexp(row);

      std::vector<float> out(n, 123.0f);
      kn::softmax(row, out);
      std::vector<float> inplace = row;
      kn::softmax(std::span<float>(inplace));
      CHECK(inplace == out);  // one algorithm, whatever the aliasing

      std::size_t bad = 0;
      double sum = 0;
      for (std::size_t i = 0; i < n; ++i) {
        sum += out[i];
        if (row[i] == -inf) {
          bad += out[i] == 0.0f ? 0u : 1u;  // a masked token has probability exactly 0
        } else {
          // exp of a float difference: the difference itself may round by half an ulp of the
          // larger operand (<= 2^-18 near 50), hence the 1e-5 relative allowance.
          bad += std::fabs(out[i] - p[i]) <= 1e-5 * p[i] + 1e-12 ? 0u : 1u;
        }
      }
      CHECK(bad == 0);
      CHECK(sum == doctest::Approx(1.0).epsilon(1e-5));

      std::vector<float> lout(n, 123.0f);
      kn::log_softmax(row, lout);
      std::vector<float> linplace = row;
      kn::log_softmax(std::span<float>(linplace));
      CHECK(linplace == lout);
      bad = 0;
      for (std::size_t i = 0; i < n; ++i) {
        if (row[i] == -inf) {
          bad += lout[i] == -inf ? 0u : 1u;
        } else {
          const double ref = static_cast<double>(row[i]) - lse;
          bad += std::fabs(lout[i] - ref) <= 8 * feps * (std::fabs(lse) + std::fabs(ref) + 1) ? 0u : 1u;
        }
      }
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("softmax by hand") {
  // {ln 1, ln 3} -> {1/4, 3/4}; a masked entry gets exactly 0.
  const std::vector<float> row = {0.0f, static_cast<float>(std::log(3.0)), -inf};
  std::vector<float> out(3);
  kn::softmax(row, out);
  CHECK(out[0] == doctest::Approx(0.25).epsilon(1e-6));
  CHECK(out[1] == doctest::Approx(0.75).epsilon(1e-6));
  CHECK(out[2] == 0.0f);
  kn::log_softmax(row, out);
  CHECK(out[0] == doctest::Approx(std::log(0.25)).epsilon(1e-6));
  CHECK(out[2] == -inf);
  // Logits far above exp's float range: softmax is shift invariant, so no overflow.
  const std::vector<float> huge = {1000.0f, 1000.0f};
  std::vector<float> half(2);
  kn::softmax(huge, half);
  CHECK(half[0] == 0.5f);
  CHECK(half[1] == 0.5f);
}

TEST_CASE("top_k: sorted descending, ties to the lower index, k = 1 .. V") {
  for (shape s : shapes) {
    for (std::size_t n : lengths) {
      const auto row = make_row(s, n);
      const auto ranking = ref_ranking(row);
      std::vector<std::size_t> ks = {1, n, (n + 1) / 2, std::min<std::size_t>(n, 3)};
      if (n > 100) ks.push_back(50);
      for (std::size_t k : ks) {
        CAPTURE(name(s));
        CAPTURE(n);
        CAPTURE(k);
        std::vector<token_id> ids(k, -1);
        std::vector<float> vals(k, nan_f);
        kn::top_k(row, ids, vals);
        const std::vector<token_id> expect(ranking.begin(), ranking.begin() + static_cast<std::ptrdiff_t>(k));
        CHECK(ids == expect);
        std::size_t bad = 0;
        for (std::size_t i = 0; i < k; ++i) bad += vals[i] == row[static_cast<std::size_t>(expect[i])] ? 0u : 1u;
        CHECK(bad == 0);
      }
    }
  }
}

TEST_CASE("top_k by hand") {
  // Three-way tie at 2 around a 5: k = 3 takes the 5 and the two lowest-index 2s.
  const std::vector<float> row = {2, 1, 2, 5, 2, -inf};
  std::vector<token_id> ids(3);
  std::vector<float> vals(3);
  kn::top_k(row, ids, vals);
  CHECK(ids == std::vector<token_id>{3, 0, 2});
  CHECK(vals == std::vector<float>{5, 2, 2});
  // k = V reaches the masked token last.
  std::vector<token_id> all(6);
  std::vector<float> all_vals(6);
  kn::top_k(row, all, all_vals);
  CHECK(all == std::vector<token_id>{3, 0, 2, 4, 1, 5});
  CHECK(all_vals[5] == -inf);
}

TEST_CASE("kth_largest matches the sorted reference") {
  for (shape s : shapes) {
    for (std::size_t n : lengths) {
      const auto row = make_row(s, n);
      std::vector<float> sorted = row;
      std::sort(sorted.begin(), sorted.end(), [](float a, float b) { return a > b; });
      std::vector<float> scratch(n + 3);
      for (std::size_t k : {std::size_t{1}, (n + 1) / 2, n}) {
        CAPTURE(name(s));
        CAPTURE(n);
        CAPTURE(k);
        CHECK(kn::kth_largest(row, k, scratch) == sorted[k - 1]);
      }
    }
  }
  // Ties count with multiplicity: the 2nd and 3rd largest of {1, 4, 4, 2} are both 4.
  const std::vector<float> row = {1, 4, 4, 2};
  std::vector<float> scratch(4);
  CHECK(kn::kth_largest(row, 2, scratch) == 4);
  CHECK(kn::kth_largest(row, 3, scratch) == 2);
  CHECK(row == std::vector<float>{1, 4, 4, 2});  // the input is untouched
}

TEST_CASE("find_invalid: first NaN or +inf; -inf is a valid (masked) logit") {
  for (std::size_t n : lengths) {
    CAPTURE(n);
    auto row = make_row(shape::random, n);
    CHECK(kn::find_invalid(row) == kn::npos);
    row[0] = -inf;
    CHECK(kn::find_invalid(row) == kn::npos);
    row[n - 1] = inf;
    CHECK(kn::find_invalid(row) == n - 1);
    row[n / 2] = nan_f;
    CHECK(kn::find_invalid(row) == n / 2);
    row[0] = -nan_f;  // a NaN with the sign bit set is still NaN
    CHECK(kn::find_invalid(row) == 0);
  }
  const std::vector<float> masked(16, -inf);
  CHECK(kn::find_invalid(masked) == kn::npos);
}

namespace {
// Reference inverse CDF in long double: the token t with cdf(t-1) <= u*total < cdf(t).
std::size_t ref_sample(std::span<const float> row, double u) {
  const double m = ref_max(row);
  if (m == -INFINITY) return kn::npos;
  long double total = 0;
  for (float x : row) total += std::exp(static_cast<long double>(x) - m);
  const long double target = static_cast<long double>(u) * total;
  long double acc = 0;
  std::size_t last = kn::npos;
  for (std::size_t i = 0; i < row.size(); ++i) {
    if (row[i] == -inf) continue;
    acc += std::exp(static_cast<long double>(row[i]) - m);
    last = i;
    if (acc > target) return i;
  }
  return last;
}
}  // namespace

TEST_CASE("sample_inverse_cdf: u = 0 picks the first unmasked token with mass") {
  const std::vector<float> row = {-inf, -inf, 1.0f, 2.0f, -inf};
  CHECK(kn::sample_inverse_cdf(row, 0.0) == 2);
  // exp(-2000) underflows to 0 even in double: that token has no mass and is skipped.
  const std::vector<float> no_mass = {-inf, -2000.0f, 0.0f, 0.0f};
  CHECK(kn::sample_inverse_cdf(no_mass, 0.0) == 2);
}

TEST_CASE("sample_inverse_cdf: masked tokens are never picked") {
  const std::vector<float> row = {-inf, 0.5f, -inf, 0.5f, -inf, -inf};
  // The largest double below 1 still lands on the last unmasked token, not on the masked tail.
  const double just_below_one = std::nextafter(1.0, 0.0);
  CHECK(kn::sample_inverse_cdf(row, just_below_one) == 3);
  CHECK(kn::sample_inverse_cdf(row, 0.49) == 1);
  CHECK(kn::sample_inverse_cdf(row, 0.51) == 3);
  const itscale::counter_rng r(1, 2);
  std::size_t bad = 0;
  for (std::uint32_t i = 0; i < 10000; ++i) {
    const std::size_t t = kn::sample_inverse_cdf(row, r.uniform(i));
    bad += (t == 1 || t == 3) ? 0u : 1u;
  }
  CHECK(bad == 0);
}

TEST_CASE("sample_inverse_cdf: all-masked or empty row -> npos") {
  const std::vector<float> masked(17, -inf);
  CHECK(kn::sample_inverse_cdf(masked, 0.0) == kn::npos);
  CHECK(kn::sample_inverse_cdf(masked, 0.7) == kn::npos);
  CHECK(kn::sample_inverse_cdf(std::span<const float>(), 0.3) == kn::npos);
}

TEST_CASE("sample_inverse_cdf agrees with a long-double inverse CDF") {
  for (shape s : shapes) {
    for (std::size_t n : lengths) {
      CAPTURE(name(s));
      CAPTURE(n);
      const auto row = make_row(s, n);
      const itscale::counter_rng r(99, n);
      std::size_t bad = 0;
      const std::uint32_t draws = n > 1000 ? 64 : 512;
      for (std::uint32_t i = 0; i < draws; ++i) {
        const double u = r.uniform(i);
        bad += kn::sample_inverse_cdf(row, u) == ref_sample(row, u) ? 0u : 1u;
      }
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("sample_inverse_cdf: empirical frequencies match softmax") {
  // 200000 counter-based draws; each frequency within 5 standard errors of softmax(row).
  const std::vector<float> row = {1.0f, -inf, 0.0f, 2.5f, -1.0f, 2.5f, -inf, 0.3f, -3.0f};
  const auto p = ref_softmax(row);
  constexpr std::uint32_t n = 200000;
  std::vector<std::size_t> count(row.size());
  const itscale::counter_rng r(7, 11);
  std::size_t invalid = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::size_t t = kn::sample_inverse_cdf(row, r.uniform(i / 16, i % 16));
    if (t < row.size()) ++count[t];
    else ++invalid;
  }
  CHECK(invalid == 0);
  for (std::size_t t = 0; t < row.size(); ++t) {
    CAPTURE(t);
    const double f = static_cast<double>(count[t]) / n;
    if (row[t] == -inf) {
      CHECK(count[t] == 0);
    } else {
      CHECK(std::fabs(f - p[t]) <= 5 * std::sqrt(p[t] * (1 - p[t]) / n));
    }
  }
}

// The kernels above are the SIMD ones (xsimd::default_arch of this build); the scalar reference
// they replaced stays in kernels::reference and must agree with them too, on a full vocabulary.
TEST_CASE("kernels::reference and the SIMD kernels agree on a 128 256-entry row") {
  namespace ref = itscale::kernels::reference;
  const std::size_t n = 128256;
  for (shape s : shapes) {
    CAPTURE(name(s));
    const auto row = make_row(s, n);
    CHECK(ref::max(row) == kn::max(row));
    CHECK(ref::argmax(row) == kn::argmax(row));
    CHECK(ref::count_unmasked(row) == kn::count_unmasked(row));
    CHECK(ref::find_invalid(row) == kn::find_invalid(row));
    CHECK(std::fabs(ref::logsumexp(row) - kn::logsumexp(row)) <= 1e-6f + 4e-7f * std::fabs(ref::logsumexp(row)));
    for (std::size_t k : {std::size_t{1}, std::size_t{40}, std::size_t{2000}, n}) {
      CAPTURE(k);
      std::vector<token_id> a(k), b(k);
      std::vector<float> va(k), vb(k);
      ref::top_k(row, a, va);
      kn::top_k(row, b, vb);
      CHECK(a == b);
      CHECK(va == vb);
      std::vector<float> scratch(n);
      CHECK(ref::kth_largest(row, k, scratch) == kn::kth_largest(row, k));
    }
    std::vector<float> p(n), q(n);
    ref::softmax(row, p);
    kn::softmax(row, q);
    float worst = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (p[i] > 1e-30f) worst = std::max(worst, std::fabs(p[i] - q[i]) / p[i]);
    CHECK(worst < 3e-6f);
    for (double u : {0.0, 0.3, 0.7, 0.999}) {
      const std::size_t t_ref = ref::sample_inverse_cdf(row, u), t = kn::sample_inverse_cdf(row, u);
      // The float exps may move the draw only across a CDF step within ~1e-6 of u.
      if (t != t_ref) {
        const double d = std::fabs(static_cast<double>(t) - static_cast<double>(t_ref));
        CHECK(d <= 2);
      }
    }
  }
}
