// The public SIMD kernels against float64 scalar references, built with runtime dispatch so the
// same binary runs every arch: ctest runs it once per ITSCALE_ARCH value (sse2, avx2, avx512) and
// it exits 77 (skipped) when the CPU lacks the requested arch. Lengths straddle every lane count
// (1, 3, 5, 7, 9, 15, 17) up to real vocabularies (32 001, 128 256); shapes are the ones that
// break naive kernels (ties, a lone peak, all masked but one, +-inf, +50 offsets, sorted input).

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "itscale/core/rng.hpp"
#include "itscale/kernels/beam_select.hpp"
#include "itscale/kernels/filters.hpp"
#include "itscale/kernels/reference/filters.hpp"
#include "itscale/kernels/reduce.hpp"
#include "itscale/kernels/sample.hpp"
#include "itscale/kernels/softmax.hpp"
#include "itscale/kernels/top_k.hpp"
#include "itscale/processors/sampling_options.hpp"

namespace kn = itscale::kernels;
using itscale::token_id;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

const std::size_t lengths[] = {1, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100, 32001, 128256};

enum class shape { all_equal, one_peak, all_masked_but_one, shifted_by_50, ascending, descending, random, masked_half, plus_inf };
const shape finite_shapes[] = {shape::all_equal, shape::one_peak, shape::all_masked_but_one, shape::shifted_by_50,
                               shape::ascending, shape::descending, shape::random, shape::masked_half};

const char* name(shape s) {
  switch (s) {
    case shape::all_equal: return "all_equal";
    case shape::one_peak: return "one_peak";
    case shape::all_masked_but_one: return "all_masked_but_one";
    case shape::shifted_by_50: return "shifted_by_50";
    case shape::ascending: return "ascending";
    case shape::descending: return "descending";
    case shape::random: return "random";
    case shape::masked_half: return "masked_half";
    case shape::plus_inf: return "plus_inf";
  }
  return "?";
}

// Deterministic normal-ish logits (sum of uniforms), sigma ~ 2.
float noise(std::size_t n, std::size_t i) {
  const itscale::counter_rng r(777, n);
  double s = 0;
  for (std::uint32_t j = 0; j < 3; ++j) s += r.uniform(static_cast<std::uint32_t>(i), j);
  return static_cast<float>((s - 1.5) * 4.0);
}

std::vector<float> make_row(shape s, std::size_t n) {
  std::vector<float> row(n);
  switch (s) {
    case shape::all_equal: std::fill(row.begin(), row.end(), -1.25f); break;
    case shape::one_peak:
      for (std::size_t i = 0; i < n; ++i) row[i] = noise(n, i) * 0.25f;
      row[n * 2 / 3] = 9.0f;
      break;
    case shape::all_masked_but_one:
      std::fill(row.begin(), row.end(), -inf);
      row[n / 2] = -3.5f;
      break;
    case shape::shifted_by_50:
      for (std::size_t i = 0; i < n; ++i) row[i] = noise(n, i) + 50.0f;
      break;
    case shape::ascending:
      for (std::size_t i = 0; i < n; ++i) row[i] = -8.0f + 16.0f * static_cast<float>(i) / static_cast<float>(n);
      break;
    case shape::descending:
      for (std::size_t i = 0; i < n; ++i) row[i] = 8.0f - 16.0f * static_cast<float>(i) / static_cast<float>(n);
      break;
    case shape::random:
      for (std::size_t i = 0; i < n; ++i) row[i] = noise(n, i);
      break;
    case shape::masked_half:
      for (std::size_t i = 0; i < n; ++i) row[i] = i % 2 == 1 ? -inf : std::round(noise(n, i) * 4.0f) / 4.0f;  // many ties
      break;
    case shape::plus_inf:
      for (std::size_t i = 0; i < n; ++i) row[i] = noise(n, i);
      row[n / 3] = inf;
      break;
  }
  return row;
}

// --- float64 references ----------------------------------------------------------------------

double ref_max(std::span<const float> r) {
  double m = -inf;
  for (float x : r) m = std::max(m, static_cast<double>(x));
  return m;
}
double ref_lse(std::span<const float> r) {
  const double m = ref_max(r);
  if (std::isinf(m)) return m;
  double s = 0;
  for (float x : r) s += std::exp(static_cast<double>(x) - m);
  return m + std::log(s);
}
// Indices ordered by the library's rank (value desc, index asc).
std::vector<token_id> ref_ranking(std::span<const float> r) {
  std::vector<token_id> ids(r.size());
  std::iota(ids.begin(), ids.end(), token_id{0});
  std::stable_sort(ids.begin(), ids.end(), [&](token_id a, token_id b) {
    return r[static_cast<std::size_t>(a)] > r[static_cast<std::size_t>(b)];
  });
  return ids;
}

std::size_t ulp_distance(float a, float b) {
  const auto key = [](float v) {
    const auto u = std::bit_cast<std::int32_t>(v);
    return u < 0 ? static_cast<std::int64_t>(std::numeric_limits<std::int32_t>::min()) - u : static_cast<std::int64_t>(u);
  };
  const std::int64_t d = key(a) - key(b);
  return static_cast<std::size_t>(d < 0 ? -d : d);
}

}  // namespace

TEST_CASE("the kernels run the requested arch") {
  const char* forced = std::getenv("ITSCALE_ARCH");
  const std::string active = kn::active_arch();
  MESSAGE("kernels arch: " << active);
  if (forced != nullptr && std::strcmp(forced, "avx512") == 0) CHECK(active == "avx512bw");
  if (forced != nullptr && std::strcmp(forced, "avx2") == 0) CHECK(active == "fma3+avx2");
  if (forced != nullptr && std::strcmp(forced, "sse2") == 0) CHECK(active == "sse2");
}

TEST_CASE("max, argmax, logsumexp, count_unmasked, find_invalid against float64") {
  for (shape s : finite_shapes)
    for (std::size_t n : lengths) {
      CAPTURE(name(s));
      CAPTURE(n);
      const auto row = make_row(s, n);
      CHECK(static_cast<double>(kn::max(row)) == ref_max(row));
      CHECK(kn::argmax(row) == static_cast<std::size_t>(ref_ranking(row)[0]));
      const double lse = ref_lse(row);
      // One float rounding of the result plus the float exps and sums: a few ULP of |lse| + 1e-6.
      CHECK(std::fabs(static_cast<double>(kn::logsumexp(row)) - lse) <= 4e-7 * std::fabs(lse) + 1e-6);
      CHECK(kn::count_unmasked(row) ==
            static_cast<std::size_t>(std::count_if(row.begin(), row.end(), [](float x) { return x > -inf; })));
      CHECK(kn::find_invalid(row) == kn::npos);
    }
}

TEST_CASE("+-inf: max/argmax see +inf, logsumexp is +inf, find_invalid finds the first NaN or +inf") {
  for (std::size_t n : lengths) {
    CAPTURE(n);
    auto row = make_row(shape::plus_inf, n);
    CHECK(kn::max(row) == inf);
    CHECK(kn::argmax(row) == n / 3);
    CHECK(kn::logsumexp(row) == inf);
    CHECK(kn::find_invalid(row) == n / 3);
    row[n / 3] = 0.0f;
    CHECK(kn::find_invalid(row) == kn::npos);
    row[n - 1] = std::numeric_limits<float>::quiet_NaN();
    CHECK(kn::find_invalid(row) == n - 1);
    std::vector<float> masked(n, -inf);
    CHECK(kn::max(masked) == -inf);
    CHECK(kn::argmax(masked) == 0);
    CHECK(kn::logsumexp(masked) == -inf);
    CHECK(kn::count_unmasked(masked) == 0);
  }
  CHECK(kn::argmax(std::span<const float>{}) == kn::npos);
  CHECK(kn::max(std::span<const float>{}) == -inf);
}

TEST_CASE("batched logsumexp equals the per-row kernel") {
  for (std::size_t n : {std::size_t{1}, std::size_t{17}, std::size_t{32001}}) {
    std::vector<float> rows;
    for (std::size_t r = 0; r < 5; ++r) {
      const auto row = make_row(finite_shapes[r], n);
      rows.insert(rows.end(), row.begin(), row.end());
    }
    std::vector<float> out(5);
    kn::logsumexp(rows, n, out);
    for (std::size_t r = 0; r < 5; ++r) CHECK(out[r] == kn::logsumexp(std::span(rows).subspan(r * n, n)));
  }
}

TEST_CASE("softmax and log_softmax against float64: relative error of each probability") {
  double worst = 0;
  for (shape s : finite_shapes)
    for (std::size_t n : lengths) {
      CAPTURE(name(s));
      CAPTURE(n);
      const auto row = make_row(s, n);
      const double m = ref_max(row), lse = ref_lse(row);
      std::vector<float> p(n), lp(n), inplace = row;
      kn::softmax(row, p);
      kn::softmax(inplace);
      CHECK(p == inplace);
      kn::log_softmax(row, lp);
      double sum = 0;
      for (std::size_t i = 0; i < n; ++i) {
        const double want = std::exp(static_cast<double>(row[i]) - lse);
        sum += p[i];
        if (row[i] == -inf) {
          if (p[i] != 0.0f || lp[i] != -inf) CHECK((p[i] == 0.0f && lp[i] == -inf));
          continue;
        }
        if (want >= 1e-30) {
          // x - max is rounded to float before exp: its error grows with |x - max| (2^-24 per unit).
          const double rel = std::fabs(static_cast<double>(p[i]) - want) / want;
          const double allowed = 1e-6 + (m - static_cast<double>(row[i])) * 6e-8;
          if (!(rel <= allowed)) CHECK(rel <= allowed);
          worst = std::max(worst, rel / allowed * 1e-6);
        }
        const double lwant = static_cast<double>(row[i]) - lse;
        if (!(std::fabs(static_cast<double>(lp[i]) - lwant) <= 4e-7 * std::fabs(lwant) + 2e-6 + 6e-8 * std::fabs(lse)))
          CHECK(std::fabs(static_cast<double>(lp[i]) - lwant) <= 4e-7 * std::fabs(lwant) + 2e-6 + 6e-8 * std::fabs(lse));
      }
      CHECK(std::fabs(sum - 1.0) < 1e-5);
    }
  MESSAGE("softmax: largest relative error, scaled to the 1e-6 budget: " << worst);
}

TEST_CASE("softmax relative error on rows within 20 of the max (figure for the docs)") {
  double worst = 0;
  for (std::size_t n : {std::size_t{32001}, std::size_t{128256}}) {
    std::vector<float> row(n);
    for (std::size_t i = 0; i < n; ++i) row[i] = noise(n, i) * 1.5f;  // span ~ 36: most within 20
    const double lse = ref_lse(row), m = ref_max(row);
    std::vector<float> p(n);
    kn::softmax(row, p);
    for (std::size_t i = 0; i < n; ++i) {
      if (m - static_cast<double>(row[i]) > 20) continue;
      const double want = std::exp(static_cast<double>(row[i]) - lse);
      worst = std::max(worst, std::fabs(static_cast<double>(p[i]) - want) / want);
    }
  }
  MESSAGE("softmax max relative error vs float64 (entries within 20 of the max): " << worst);
  CHECK(worst < 3e-6);
}

TEST_CASE("softmax / logsumexp: the max rising from chunk to chunk (one-pass max, per-chunk references)") {
  // The kernels take the max chunk by chunk (<= 64 chunks, >= 2048 entries each on avx512) and
  // exp each chunk against the running max: rows whose max jumps late, by a little or by more
  // than the float exp range, with a -inf prefix, and ending in a partial chunk.
  for (std::size_t n : {std::size_t{4097}, std::size_t{32001}, std::size_t{128256}, std::size_t{300007}}) {
    for (float jump : {0.5f, 30.0f, 200.0f}) {
      CAPTURE(n);
      CAPTURE(jump);
      std::vector<float> row(n);
      for (std::size_t i = 0; i < n; ++i)
        row[i] = noise(n, i) * 0.5f + jump * static_cast<float>(i * 8 / n);  // 8 steps up
      for (std::size_t i = 0; i < n / 10; ++i) row[i] = -inf;
      row[n - 1] = 8.0f * jump + 3.0f;  // the max in the last (partial) chunk
      const double m = ref_max(row), lse = ref_lse(row);
      CHECK(std::fabs(static_cast<double>(kn::logsumexp(row)) - lse) <= 4e-7 * std::fabs(lse) + 1e-6);
      std::vector<float> p(n), inplace = row;
      kn::softmax(row, p);
      kn::softmax(inplace);
      CHECK(p == inplace);
      double sum = 0;
      for (std::size_t i = 0; i < n; ++i) {
        sum += p[i];
        const double want = std::exp(static_cast<double>(row[i]) - lse);
        if (row[i] == -inf && p[i] != 0.0f) CHECK(p[i] == 0.0f);
        if (want < 1e-30) continue;
        const double rel = std::fabs(static_cast<double>(p[i]) - want) / want;
        const double allowed = 1e-6 + (m - static_cast<double>(row[i])) * 6e-8;
        if (!(rel <= allowed)) CHECK(rel <= allowed);
      }
      CHECK(std::fabs(sum - 1.0) < 1e-5);
    }
  }
}

TEST_CASE("the dispatched exp, read through softmax({0, x}), is within 1 ULP on [-87, -18]") {
  // For x <= -18, 1 + exp(x) rounds to 1, so softmax({0, x})[1] is the kernel's exp(x) itself.
  // The full sweep of [-87, 0] per arch is tests/kernels/exp_accuracy.cpp.
  std::size_t worst = 0;
  float at = 0;
  for (float x = -87.0f; x <= -18.0f; x = std::nextafter(x, 0.0f) + 1.0f / 4096.0f) {
    const float pair[2] = {0.0f, x};
    float out[2];
    kn::softmax(pair, out);
    const std::size_t d = ulp_distance(out[1], static_cast<float>(std::exp(static_cast<double>(x))));
    if (d > worst) {
      worst = d;
      at = x;
    }
  }
  MESSAGE("exp through softmax: largest error " << worst << " ULP (at x = " << at << ")");
  CHECK(worst <= 1);
}

TEST_CASE("top_k: sorted, ties to the lower index, k = 1 .. V, against the float64 ranking") {
  for (shape s : finite_shapes)
    for (std::size_t n : lengths) {
      CAPTURE(name(s));
      CAPTURE(n);
      const auto row = make_row(s, n);
      const auto rank = ref_ranking(row);
      for (std::size_t k : {std::size_t{1}, std::size_t{2}, std::size_t{40}, std::size_t{1024}, std::size_t{1025},
                            std::size_t{5000}, n / 2, n - 1, n}) {
        if (k < 1 || k > n) continue;
        CAPTURE(k);
        std::vector<token_id> idx(k);
        std::vector<float> val(k);
        kn::top_k(row, idx, val);
        bool same = std::equal(idx.begin(), idx.end(), rank.begin());
        CHECK(same);
        for (std::size_t j = 0; j < k; ++j) {
          if (val[j] != row[static_cast<std::size_t>(idx[j])]) {
            CHECK(val[j] == row[static_cast<std::size_t>(idx[j])]);
            break;
          }
        }
        // The caller-scratch path (threshold filter at any k).
        std::vector<std::uint64_t> scratch(2 * k + 64);
        std::vector<token_id> idx2(k);
        std::vector<float> val2(k);
        kn::top_k(row, idx2, val2, scratch);
        CHECK(idx2 == idx);
        const float kth = kn::kth_largest(row, k);
        CHECK(kth == row[static_cast<std::size_t>(rank[k - 1])]);
      }
    }
}

TEST_CASE("top_k beyond the vocabulary is an error at the API boundary (sampling_options)") {
  itscale::sampling_options o;
  o.do_sample = true;
  o.top_k = 33;
  CHECK_THROWS_AS(o.validate(32), std::invalid_argument);
  o.top_k = 32;
  CHECK_NOTHROW(o.validate(32));
}

TEST_CASE("top_k_rows and beam_select: the best m of K rows without materialising the scores") {
  for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{17}, std::size_t{32001}}) {
    for (std::size_t rows_n : {std::size_t{1}, std::size_t{4}, std::size_t{8}}) {
      CAPTURE(n);
      CAPTURE(rows_n);
      std::vector<std::vector<float>> data;
      for (std::size_t r = 0; r < rows_n; ++r) data.push_back(make_row(finite_shapes[(r * 3) % 8], n));
      std::vector<std::span<const float>> rows(data.begin(), data.end());
      std::vector<float> sub(rows_n), add(rows_n), lse(rows_n);
      for (std::size_t r = 0; r < rows_n; ++r) {
        sub[r] = static_cast<float>(r) * 0.5f;
        add[r] = -static_cast<float>(r) * 1.25f;
        lse[r] = kn::logsumexp(rows[r]);
      }
      for (std::size_t m : {std::size_t{1}, std::size_t{2 * rows_n}, std::size_t{16}, std::size_t{2000}}) {
        CAPTURE(m);
        std::vector<kn::row_candidate> out(m), want(m);
        // The scalar reference forms every score in float exactly as the kernel does.
        const std::size_t want_n = itscale::kernels::reference::top_k_rows(rows, sub, add, want);
        const std::size_t got = kn::top_k_rows(rows, sub, add, out);
        REQUIRE(got == want_n);
        for (std::size_t j = 0; j < got; ++j) {
          CHECK(out[j].score == want[j].score);
          CHECK(out[j].row == want[j].row);
          CHECK(out[j].token == want[j].token);
        }
        const std::size_t want_beam = itscale::kernels::reference::top_k_rows(rows, lse, add, want);
        const std::size_t got_beam = kn::beam_select(rows, add, out);
        REQUIRE(got_beam == want_beam);
        for (std::size_t j = 0; j < got_beam; ++j) {
          CHECK(out[j].score == want[j].score);
          CHECK(out[j].row == want[j].row);
          CHECK(out[j].token == want[j].token);
        }
      }
    }
  }
}

// Finding b (tests/fuzz/README.md): the filters test a block of four batches at once on their
// lane-wise max, and x86's max returns its second operand when either is NaN, so a NaN in one
// batch hid the entries of the same lane in the other batches of the block (and a first fix that
// only compared that max as "greater or unordered" still lost them: max(NaN, finite) drops the
// NaN). The one entry that matters sits at w; NaN at one other index w + d of the same lane for
// 4, 8 and 16 lanes (d a multiple of 4), or at every such index; every position w.
TEST_CASE("NaN lanes: top_k_rows, beam_select and mask_below_collect lose no entry sharing a lane with a NaN") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (std::size_t n : {std::size_t{16}, std::size_t{64}, std::size_t{67}, std::size_t{200}}) {
    for (std::size_t w = 0; w < n; ++w) {
      for (std::size_t d : {std::size_t{0}, std::size_t{4}, std::size_t{8}, std::size_t{12}, std::size_t{16},
                            std::size_t{32}, std::size_t{48}}) {
        CAPTURE(n);
        CAPTURE(w);
        CAPTURE(d);
        // d = 0: NaN at every index of w's residue mod 4 but w; else at w + d only (if in range).
        const auto place_nans = [&](std::vector<float>& r) {
          if (d == 0) {
            for (std::size_t i = w % 4; i < n; i += 4)
              if (i != w) r[i] = nan;
          } else if (w + d < n) {
            r[w + d] = nan;
          }
        };
        // top_k_rows / beam_select: the winner 5 among -1s; every candidate is finite but the NaNs.
        std::vector<float> row(n, -1.0f);
        place_nans(row);
        row[w] = 5.0f;
        const std::vector<std::span<const float>> rows{std::span<const float>(row), std::span<const float>(row)};
        const std::vector<float> sub{0.0f, 0.5f}, add{0.0f, -2.0f};
        std::vector<kn::row_candidate> out(3), want(3);
        const std::size_t want_n = itscale::kernels::reference::top_k_rows(rows, sub, add, want);
        REQUIRE(kn::top_k_rows(rows, sub, add, out) == want_n);
        for (std::size_t j = 0; j < want_n; ++j) {
          CHECK(out[j].score == want[j].score);
          CHECK(out[j].row == want[j].row);
          CHECK(out[j].token == want[j].token);
        }
        // beam_select is top_k_rows with sub = the row's logsumexp (whatever a NaN makes of it).
        const float lse = kn::logsumexp(row);
        const std::vector<float> lses{lse, lse};
        const std::size_t want_beam = itscale::kernels::reference::top_k_rows(rows, lses, add, want);
        REQUIRE(kn::beam_select(rows, add, out) == want_beam);
        for (std::size_t j = 0; j < want_beam; ++j) {
          CHECK(out[j].score == want[j].score);
          CHECK(out[j].token == want[j].token);
        }
        // mask_below_collect: everything else masked, the kept entry must be listed; NaN is not
        // `> -inf`, so it is never listed (and, not being `< threshold`, stays in the row).
        std::vector<float> masked(n, -inf);
        place_nans(masked);
        masked[w] = 5.0f;
        auto ref_masked = masked;
        std::vector<token_id> got(n), want_ids(n);
        REQUIRE(itscale::kernels::reference::mask_below_collect(ref_masked, 0.0f, want_ids) == 1);
        REQUIRE(kn::mask_below_collect(masked, 0.0f, got) == 1);
        CHECK(got[0] == static_cast<token_id>(w));
      }
    }
  }
}

TEST_CASE("sample_inverse_cdf lands in the float64 CDF interval of u") {
  for (shape s : finite_shapes)
    for (std::size_t n : lengths) {
      CAPTURE(name(s));
      CAPTURE(n);
      const auto row = make_row(s, n);
      const double m = ref_max(row);
      std::vector<double> cdf(n + 1, 0.0);
      for (std::size_t i = 0; i < n; ++i) cdf[i + 1] = cdf[i] + std::exp(static_cast<double>(row[i]) - m);
      const double total = cdf[n];
      for (double u : {0.0, 1e-9, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999999, 1.0 - 0x1p-53}) {
        CAPTURE(u);
        const std::size_t t = kn::sample_inverse_cdf(row, u);
        REQUIRE(t < n);
        CHECK(row[t] > -inf);
        CHECK(cdf[t] / total <= u + 1e-6);
        CHECK(cdf[t + 1] / total >= u - 1e-6);
      }
    }
  std::vector<float> masked(9, -inf);
  CHECK(kn::sample_inverse_cdf(masked, 0.5) == kn::npos);
}

TEST_CASE("min_p_threshold and mask_below keep exactly the tokens with p >= min_p * p_max (float64)") {
  for (shape s : finite_shapes)
    for (std::size_t n : lengths)
      for (float mp : {0.0f, 0.05f, 0.5f, 1.0f}) {
        CAPTURE(name(s));
        CAPTURE(n);
        CAPTURE(mp);
        auto row = make_row(s, n);
        const double m = ref_max(row);
        const float thr = kn::min_p_threshold(row, mp);
        const auto orig = row;
        const std::size_t kept = kn::mask_below(row, thr);
        std::size_t want_kept = 0;
        for (std::size_t i = 0; i < n; ++i) {
          const double ratio = std::exp(static_cast<double>(orig[i]) - m);
          const bool keep = row[i] > -inf;
          want_kept += keep;
          // Away from the boundary (one float rounding of max + ln p) the float64 rule decides.
          if (orig[i] > -inf && std::fabs(ratio - mp) > 1e-5 * (mp + 1e-30) && keep != (ratio >= mp))
            CHECK(keep == (ratio >= mp));
          if (keep && row[i] != orig[i]) CHECK(row[i] == orig[i]);
        }
        CHECK(kept == want_kept);
        CHECK(kept >= 1);
      }
}

TEST_CASE("collect_unmasked and mask_below_collect list exactly the entries > -inf, in order") {
  for (shape s : finite_shapes)
    for (std::size_t n : lengths)
      for (float q : {0.0f, 0.5f, 0.999f}) {
        CAPTURE(name(s));
        CAPTURE(n);
        CAPTURE(q);
        auto row = make_row(s, n);
        // A threshold at quantile q of the row (masked entries included), so the kept share varies.
        auto sorted = row;
        std::sort(sorted.begin(), sorted.end());
        const float thr = sorted[static_cast<std::size_t>(q * static_cast<float>(n - 1))];
        std::vector<token_id> got(n), want(n);
        auto ref_row = row;
        const std::size_t want_n = itscale::kernels::reference::mask_below_collect(ref_row, thr, want);
        const std::size_t got_n = kn::mask_below_collect(row, thr, got);
        REQUIRE(got_n == want_n);
        CHECK(std::equal(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(got_n), want.begin()));
        CHECK(std::memcmp(row.data(), ref_row.data(), n * sizeof(float)) == 0);
        std::fill(got.begin(), got.end(), -1);
        REQUIRE(kn::collect_unmasked(row, got) == want_n);
        CHECK(std::equal(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(want_n), want.begin()));
        for (std::size_t j = 0; j < want_n; ++j) CHECK(row[static_cast<std::size_t>(want[j])] > -inf);
      }
  std::vector<float> masked(17, -inf);
  std::vector<token_id> ids(17);
  CHECK(kn::collect_unmasked(masked, ids) == 0);
}

// Checks top_p_mask on `orig` against the float64 rank-prefix rule of the scalar reference.
void check_top_p(const std::vector<float>& orig, double p) {
  const std::size_t n = orig.size();
  auto row = orig, ref_row = orig;
  std::vector<token_id> order(n);
  const std::size_t want = itscale::kernels::reference::top_p_mask(ref_row, p, order);
  std::vector<std::uint64_t> keys(n);
  const std::size_t kept = kn::top_p_mask(row, p, keys);
  // Exactly a rank prefix of length `kept` (`order` is the reference's ranking).
  for (std::size_t j = 0; j < n; ++j) {
    const bool keep = row[static_cast<std::size_t>(order[j])] > -inf;
    if (keep != (j < kept)) {
      CHECK(keep == (j < kept));
      break;
    }
  }
  // Equal to the float64 count unless p of the mass sits within rounding of a prefix mass.
  if (kept != want) {
    const double m = ref_max(orig);
    std::vector<double> mass(n + 1, 0.0);  // mass of the top j
    for (std::size_t j = 0; j < n; ++j)
      mass[j + 1] = mass[j] + std::exp(static_cast<double>(orig[static_cast<std::size_t>(order[j])]) - m);
    const std::size_t a = std::min(kept, want), b = std::max(kept, want);
    CHECK(std::fabs(mass[a] - p * mass[n]) <= 1e-5 * mass[n] + 1e-12);
    CHECK(b - a <= 1 + static_cast<std::size_t>(std::count(orig.begin(), orig.end(), orig[static_cast<std::size_t>(order[a])])));
  }
}

TEST_CASE("top_p_mask keeps the smallest rank prefix reaching p of the mass (float64)") {
  for (shape s : finite_shapes)
    for (std::size_t n : lengths)
      for (double p : {0.1, 0.5, 0.9, 0.95, 0.999, 1.0}) {
        CAPTURE(name(s));
        CAPTURE(n);
        CAPTURE(p);
        check_top_p(make_row(s, n), p);
      }
}

// The sampled cuts of top_p_mask only decide where it looks: rows where the sample's crossing is
// off (wide or narrow logits, many seeds), lands in a run of equal logits, or misses a lone peak.
TEST_CASE("top_p_mask: sampled cuts, runs of equal logits and a lone peak") {
  for (std::uint32_t seed = 0; seed < 6; ++seed)
    for (float sigma : {0.3f, 1.0f, 3.0f, 8.0f})
      for (double p : {0.05, 0.5, 0.9, 0.97}) {
        CAPTURE(seed);
        CAPTURE(sigma);
        CAPTURE(p);
        const itscale::counter_rng r(seed, 11);
        std::vector<float> row(128256);
        for (std::size_t i = 0; i < row.size(); ++i) {
          double s = 0;
          for (std::uint32_t j = 0; j < 6; ++j) s += r.uniform(static_cast<std::uint32_t>(i), j);
          row[i] = static_cast<float>((s - 3.0) * 1.41) * sigma;
        }
        check_top_p(row, p);
        auto runs = row;  // few distinct values: the crossing is inside a run of ties
        for (float& x : runs) x = std::round(x * 2.0f / sigma) / 2.0f;
        check_top_p(runs, p);
        row[seed * 1000 + 17] = 30.0f * sigma;  // a lone peak holding most of the mass
        check_top_p(row, p);
      }
}

TEST_CASE("Gumbel-max and Gumbel-top-k: pure functions of (seed, stream, step, token)") {
  const auto row = make_row(shape::random, 32001);
  const itscale::counter_rng rng(42, 7);
  std::vector<float> scratch(row.size()), perturbed(row.size());
  for (std::size_t t = 0; t < row.size(); ++t) {
    const double u = rng.uniform(3, static_cast<std::uint32_t>(t));
    perturbed[t] = row[t] + static_cast<float>(-std::log(-std::log(u)));
  }
  const auto rank = ref_ranking(perturbed);
  CHECK(kn::gumbel_max(row, rng, 3, scratch) == static_cast<std::size_t>(rank[0]));
  std::vector<token_id> idx(8);
  std::vector<float> val(8);
  kn::gumbel_top_k(row, rng, 3, idx, val, scratch);
  CHECK(std::equal(idx.begin(), idx.end(), rank.begin()));
  // Same key, same draw, whatever else is in the batch.
  CHECK(kn::gumbel_max(std::span(row).first(16001), rng, 3, scratch) ==
        static_cast<std::size_t>(ref_ranking(std::span(perturbed).first(16001))[0]));
  // Frequencies follow softmax on a small row.
  const std::vector<float> small = {0.0f, 1.0f, -1.0f, -inf};
  std::vector<int> counts(4, 0);
  std::vector<float> sc(4);
  for (std::uint32_t step = 0; step < 20000; ++step) ++counts[kn::gumbel_max(small, rng, step, sc)];
  CHECK(counts[3] == 0);
  const double z = 1 + std::exp(1.0) + std::exp(-1.0);
  CHECK(std::fabs(counts[1] / 20000.0 - std::exp(1.0) / z) < 0.02);
}

int main(int argc, char** argv) {
  // A forced arch the CPU lacks: report "skipped" to ctest rather than abort in the dispatcher.
  if (const char* forced = std::getenv("ITSCALE_ARCH"); forced != nullptr) {
    const auto cpu = xsimd::available_architectures();
    const bool ok = std::strcmp(forced, "sse2") == 0     ? cpu.sse2 != 0
                    : std::strcmp(forced, "avx2") == 0   ? (cpu.avx2 && cpu.fma3_avx2)
                    : std::strcmp(forced, "avx512") == 0 ? (cpu.avx512f && cpu.avx512bw && cpu.avx512dq && cpu.fma3_avx2)
                                                         : true;
    if (!ok) {
      std::printf("SKIPPED: this CPU cannot run ITSCALE_ARCH=%s\n", forced);
      return 77;
    }
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
