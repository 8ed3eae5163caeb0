// The warpers touch only the unmasked tokens (live_set.hpp). Their results must be the floats of
// Hugging Face's algorithm run over the whole row: here each warper is written out as HF does it
// (sort or softmax the whole row, torch's 16-lane float sum over all V positions) and compared
// bit for bit with the library, alone and as sampling_chain, on rows from dense to almost fully
// masked, with ties, for several min_tokens_to_keep.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

#include "itscale/core/rng.hpp"
#include "itscale/kernels/filters.hpp"
#include "itscale/kernels/sparse.hpp"
#include "itscale/processors/epsilon_eta.hpp"
#include "itscale/processors/min_p.hpp"
#include "itscale/processors/probabilities.hpp"
#include "itscale/processors/sampling_chain.hpp"
#include "itscale/processors/top_k.hpp"
#include "itscale/processors/top_p.hpp"
#include "itscale/processors/typical.hpp"

using itscale::token_id;
using row_t = std::vector<float>;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

/// HF's warpers over the whole row, transcribed from transformers' logits_process.py with torch's
/// float32 reductions (itscale::detail::torch_lane_sum over every position).
namespace whole_row {

std::vector<float> softmax(std::span<const float> x) {
  float m = -inf;
  for (float v : x) m = std::max(m, v);
  std::vector<float> e(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) e[i] = std::exp(x[i] - m);
  const float inv = 1.0f / itscale::detail::torch_lane_sum(e, [](float v) { return v; });
  for (float& v : e) v *= inv;
  return e;
}

std::vector<float> log_softmax(std::span<const float> x) {
  float m = -inf;
  for (float v : x) m = std::max(m, v);
  const float log_sum = std::log(itscale::detail::torch_lane_sum(x, [m](float v) { return std::exp(v - m); }));
  std::vector<float> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = (x[i] - m) - log_sum;
  return out;
}

/// Ranks ascending: lower logit first, equal logits the higher id first (library tie rule).
std::vector<token_id> ascending(std::span<const float> row) {
  std::vector<token_id> ids(row.size());
  std::iota(ids.begin(), ids.end(), token_id{0});
  std::sort(ids.begin(), ids.end(), [row](token_id a, token_id b) {
    const float va = row[static_cast<std::size_t>(a)], vb = row[static_cast<std::size_t>(b)];
    return va < vb || (va == vb && a > b);
  });
  return ids;
}

float kth_largest(std::span<const float> row, std::size_t k) {
  std::vector<float> v(row.begin(), row.end());
  std::sort(v.begin(), v.end(), std::greater<float>());
  return v[k - 1];
}

/// float32 cumulative sums of `probs` (torch's CPU cumsum accumulates in double).
std::vector<float> cumsum(const std::vector<float>& probs) {
  std::vector<float> out(probs.size());
  double cum = 0;
  for (std::size_t j = 0; j < probs.size(); ++j) out[j] = static_cast<float>(cum += probs[j]);
  return out;
}

std::vector<float> top_p_cumsum(const row_t& row) {
  const auto ids = ascending(row);
  std::vector<float> sorted(row.size());
  for (std::size_t j = 0; j < row.size(); ++j) sorted[j] = row[static_cast<std::size_t>(ids[j])];
  return cumsum(softmax(sorted));
}

void top_p(row_t& row, double p, std::size_t keep) {
  const std::size_t n = row.size();
  const auto ids = ascending(row);
  const auto cum = top_p_cumsum(row);
  const auto cut = static_cast<float>(1.0 - p);
  for (std::size_t j = 0; j + keep < n; ++j)
    if (cum[j] <= cut) row[static_cast<std::size_t>(ids[j])] = -inf;
}

void min_p(row_t& row, float mp, std::size_t keep) {
  const std::size_t n = row.size();
  const auto probs = softmax(row);
  const float top = *std::max_element(probs.begin(), probs.end());
  auto ids = ascending(row);
  std::reverse(ids.begin(), ids.end());
  std::vector<bool> best(n, false);
  for (std::size_t j = 0; j < std::min(keep, n); ++j) best[static_cast<std::size_t>(ids[j])] = true;
  for (std::size_t i = 0; i < n; ++i)
    if (probs[i] < mp * top && !best[i]) row[i] = -inf;
}

struct typical_order {
  std::vector<float> shifted;
  std::vector<token_id> ids;
  std::vector<float> cum;
};

typical_order typical_sorted(const row_t& row) {
  const std::size_t n = row.size();
  const auto logp = log_softmax(row);
  double ent = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (row[i] != -inf) ent -= static_cast<double>(logp[i] * std::exp(logp[i]));
  const auto entropy = static_cast<float>(ent);
  std::vector<float> shifted(n);
  for (std::size_t i = 0; i < n; ++i) shifted[i] = row[i] == -inf ? inf : std::fabs(-logp[i] - entropy);
  std::vector<token_id> ids(n);
  std::iota(ids.begin(), ids.end(), token_id{0});
  std::stable_sort(ids.begin(), ids.end(), [&](token_id a, token_id b) {
    return shifted[static_cast<std::size_t>(a)] < shifted[static_cast<std::size_t>(b)];
  });
  std::vector<float> sorted(n);
  for (std::size_t j = 0; j < n; ++j) sorted[j] = row[static_cast<std::size_t>(ids[j])];
  return {shifted, ids, cumsum(softmax(sorted))};
}

void typical(row_t& row, float mass, std::size_t keep) {
  const std::size_t n = row.size();
  const auto [shifted, ids, cum] = typical_sorted(row);
  std::size_t last = 0;
  for (float c : cum) last += c < mass;  // (cumulative_probs < mass).sum()
  last = std::min(last, n - 1);
  const float limit = shifted[static_cast<std::size_t>(ids[last])];
  for (std::size_t j = std::min(keep, n); j < n; ++j)
    if (shifted[static_cast<std::size_t>(ids[j])] > limit) row[static_cast<std::size_t>(ids[j])] = -inf;
}

void below_probability(row_t& row, const std::vector<float>& probs, float cutoff, std::size_t keep) {
  const float guard = kth_largest(row, std::min(keep, row.size()));
  for (std::size_t i = 0; i < row.size(); ++i)
    if (probs[i] < cutoff && row[i] < guard) row[i] = -inf;
}

void epsilon(row_t& row, float eps, std::size_t keep) { below_probability(row, softmax(row), eps, keep); }

void eta(row_t& row, float eps, std::size_t keep) {
  // torch.distributions.Categorical(logits=row).entropy(): logits - logsumexp, softmax probs.
  float m = -inf;
  for (float v : row) m = std::max(m, v);
  double s = 0;
  for (float v : row) s += std::exp(static_cast<double>(v - m));
  const float lse = m + static_cast<float>(std::log(s));
  const auto probs = softmax(row);
  double h = 0;
  for (std::size_t i = 0; i < row.size(); ++i)
    if (row[i] != -inf) h -= static_cast<double>((row[i] - lse) * probs[i]);
  const auto entropy = static_cast<float>(h);
  below_probability(row, probs, std::fmin(eps, std::sqrt(eps) * std::exp(-entropy)), keep);
}

void top_k(row_t& row, std::size_t k) {
  if (k >= row.size()) return;
  const float kth = kth_largest(row, k);
  for (float& v : row)
    if (v < kth) v = -inf;
}

}  // namespace whole_row

/// Rows from dense to almost fully masked; `levels` > 0 quantises the logits to force ties.
row_t make_row(std::size_t n, double masked_share, int levels, std::uint64_t seed) {
  const itscale::counter_rng rng(seed, 7);
  row_t row(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto t = static_cast<std::uint32_t>(i);
    float v = static_cast<float>(6.0 * rng.uniform(0, t) - 3.0);
    if (levels > 0) v = std::round(v * static_cast<float>(levels)) / static_cast<float>(levels);
    row[i] = rng.uniform(1, t) < masked_share ? -inf : v;
  }
  row[static_cast<std::size_t>(seed % n)] = 1.5f;  // at least one token is unmasked
  return row;
}

std::vector<token_id> unmasked(const row_t& r) {
  std::vector<token_id> ids;
  for (std::size_t i = 0; i < r.size(); ++i)
    if (r[i] != -inf) ids.push_back(static_cast<token_id>(i));
  return ids;
}

bool same_bits(const row_t& a, const row_t& b) { return std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0; }

struct row_case {
  std::size_t n;
  double masked;
  int levels;
  std::uint64_t seed;
};

std::vector<row_case> cases() {
  std::vector<row_case> out;
  std::uint64_t seed = 1;
  for (std::size_t n : {1u, 5u, 16u, 17u, 100u, 1000u, 5003u})
    for (double masked : {0.0, 0.5, 0.99})
      for (int levels : {0, 4}) out.push_back({n, masked, levels, seed++});
  return out;
}

}  // namespace

TEST_CASE("torch_lane_sum_at over the nonzero terms equals torch_lane_sum over every position") {
  for (std::size_t n : {1u, 15u, 16u, 17u, 31u, 100u, 5003u})
    for (double nonzero : {1.0, 0.3, 0.01}) {
      CAPTURE(n);
      CAPTURE(nonzero);
      const itscale::counter_rng rng(n, 3);
      std::vector<float> dense(n, 0.0f), terms;
      std::vector<std::size_t> pos;
      for (std::size_t i = 0; i < n; ++i)
        if (rng.uniform(0, static_cast<std::uint32_t>(i)) < nonzero) {
          dense[i] = static_cast<float>(rng.uniform(1, static_cast<std::uint32_t>(i)) * 1000.0);
          terms.push_back(dense[i]);
          pos.push_back(i);
        }
      const float want = itscale::detail::torch_lane_sum(dense, [](float v) { return v; });
      const float got = itscale::detail::torch_lane_sum_at(
          terms.size(), [&](std::size_t j) { return pos[j]; }, [&](std::size_t j) { return terms[j]; });
      CHECK(std::memcmp(&got, &want, sizeof got) == 0);
    }
}

TEST_CASE("warpers on the unmasked tokens only equal HF's whole-row algorithm bit for bit") {
  itscale::workspace ws;
  ws.reserve(5003);
  const itscale::step_context ctx{{}, 0, &ws};
  for (const row_case& c : cases())
    for (std::size_t keep : {1u, 3u}) {
      CAPTURE(c.n);
      CAPTURE(c.masked);
      CAPTURE(c.levels);
      CAPTURE(keep);
      const row_t row = make_row(c.n, c.masked, c.levels, c.seed);
      const auto check = [&](auto&& lib, auto&& ref) {
        row_t got = row, want = row;
        lib(got);
        ref(want);
        CHECK(same_bits(got, want));
      };
      for (double p : {0.3, 0.9, 0.999})
        check([&](row_t& r) { itscale::top_p_filter(p, keep).apply(r, ctx); },
              [&](row_t& r) { whole_row::top_p(r, p, keep); });
      for (float mp : {0.05f, 0.5f})
        check([&](row_t& r) { itscale::min_p_filter(mp, keep).apply(r, ctx); },
              [&](row_t& r) { whole_row::min_p(r, mp, keep); });
      for (float mass : {0.2f, 0.9f, 0.99999994f})
        check([&](row_t& r) { itscale::typical_filter(mass, keep).apply(r, ctx); },
              [&](row_t& r) { whole_row::typical(r, mass, keep); });
      for (float eps : {3e-4f, 0.05f}) {
        check([&](row_t& r) { itscale::epsilon_filter(eps, keep).apply(r, ctx); },
              [&](row_t& r) { whole_row::epsilon(r, eps, keep); });
        check([&](row_t& r) { itscale::eta_filter(eps, keep).apply(r, ctx); },
              [&](row_t& r) { whole_row::eta(r, eps, keep); });
      }
    }
}

TEST_CASE("top-p and typical with the threshold exactly on a cumulative sum (one rounding flips them)") {
  // With p = 1 - cum[j] (top-p) or mass = cum[j] (typical), a sum one float step off moves the
  // cut: only the exact lane order of torch's reductions passes.
  itscale::workspace ws;
  ws.reserve(5003);
  const itscale::step_context ctx{{}, 0, &ws};
  std::size_t below_one = 0;
  for (const row_case& c : cases()) {
    CAPTURE(c.n);
    CAPTURE(c.masked);
    CAPTURE(c.levels);
    const row_t row = make_row(c.n, c.masked, c.levels, c.seed);
    const auto pc = whole_row::top_p_cumsum(row);
    const auto tc = whole_row::typical_sorted(row).cum;
    // Past the last token when the total mass rounds below 1 - 1 ulp: every token is kept.
    if (const float total = tc.back(); total < std::nextafter(1.0f, 0.0f)) {
      ++below_one;
      row_t got = row, want = row;
      itscale::typical_filter(std::nextafter(total, 1.0f), 1).apply(got, ctx);
      whole_row::typical(want, std::nextafter(total, 1.0f), 1);
      CHECK(same_bits(got, want));
    }
    for (std::size_t step = 1; step <= 8; ++step) {
      const std::size_t j = (row.size() - 1) * step / 8;
      const double p = 1.0 - static_cast<double>(pc[j]);
      if (p > 0 && p <= 1) {
        row_t got = row, want = row;
        itscale::top_p_filter(p, 1).apply(got, ctx);
        whole_row::top_p(want, p, 1);
        CHECK(same_bits(got, want));
      }
      const float mass = tc[j];
      if (mass > 0 && mass < 1) {
        row_t got = row, want = row;
        itscale::typical_filter(mass, 1).apply(got, ctx);
        whole_row::typical(want, mass, 1);
        CHECK(same_bits(got, want));
      }
    }
  }
  MESSAGE("rows whose typical-order mass rounds below 1 - 1 ulp: ", below_one);
}

TEST_CASE("each warper returns exactly the tokens it left unmasked, given a known set or not") {
  itscale::workspace ws;
  ws.reserve(5003);
  const itscale::step_context ctx{{}, 0, &ws};
  for (const row_case& c : cases()) {
    CAPTURE(c.n);
    CAPTURE(c.masked);
    row_t row = make_row(c.n, c.masked, c.levels, c.seed);
    const auto same = [&](itscale::live_set s, const row_t& r) {
      REQUIRE(s.known);
      CHECK(std::vector<token_id>(s.ids.begin(), s.ids.end()) == unmasked(r));
    };
    // Unknown set in, then the set each filter returns handed to the next one.
    itscale::live_set live = itscale::top_k_filter(std::max<std::size_t>(1, c.n / 3)).apply(row, ctx, {});
    same(live, row);
    live = itscale::top_p_filter(0.95).apply(row, ctx, live);
    same(live, row);
    live = itscale::min_p_filter(0.02f).apply(row, ctx, live);
    same(live, row);
    live = itscale::typical_filter(0.95f).apply(row, ctx, live);
    same(live, row);
    live = itscale::epsilon_filter(1e-4f).apply(row, ctx, live);
    same(live, row);
    live = itscale::eta_filter(1e-4f).apply(row, ctx, live);
    same(live, row);
    live = itscale::top_k_filter(2).apply(row, ctx, live);
    same(live, row);
  }
}

TEST_CASE("sampling_chain (filters after top-k see only the survivors) equals HF's chain over whole rows") {
  itscale::workspace ws;
  ws.reserve(5003);
  const itscale::step_context ctx{{}, 0, &ws};
  for (const row_case& c : cases()) {
    CAPTURE(c.n);
    CAPTURE(c.masked);
    CAPTURE(c.levels);
    itscale::sampling_options o;
    o.do_sample = true;
    o.temperature = 0.7f;
    o.top_k = std::min<std::size_t>(40, c.n);
    o.top_p = 0.9;
    o.min_p = 0.05f;
    o.typical_p = 0.95f;
    o.epsilon_cutoff = 1e-3f;
    o.eta_cutoff = 1e-3f;
    const itscale::sampling_chain chain(o);
    row_t got = make_row(c.n, c.masked, c.levels, c.seed), want = got;
    chain.apply_warpers(got, ctx);
    for (float& v : want) v /= 0.7f;
    whole_row::top_k(want, o.top_k);
    whole_row::top_p(want, 0.9, 1);
    whole_row::min_p(want, 0.05f, 1);
    whole_row::typical(want, 0.95f, 1);
    whole_row::epsilon(want, 1e-3f, 1);
    whole_row::eta(want, 1e-3f, 1);
    CHECK(same_bits(got, want));
  }
}

TEST_CASE("top_k_filter::apply_after(temperature) equals temperature then top-k, ties made by the division included") {
  itscale::workspace ws;
  ws.reserve(5003);
  const itscale::step_context ctx{{}, 0, &ws};
  std::size_t collisions = 0;
  for (const row_case& c : cases())
    for (float t : {1e-30f, 0.01f, 0.7f, 1.0f, 3.0f, 1e30f})
      for (std::size_t k : {1u, 2u, 40u}) {
        CAPTURE(c.n);
        CAPTURE(c.masked);
        CAPTURE(t);
        CAPTURE(k);
        row_t row = make_row(c.n, c.masked, c.levels, c.seed);
        // Neighbours one and two float steps below the k-th value, which a division can round
        // onto it, and huge logits whose quotients overflow.
        const float kth = whole_row::kth_largest(row, std::min(k, row.size()));
        if (row.size() > 4 && kth > -inf) {
          row[1] = std::nextafter(kth, -inf);
          row[2] = std::nextafter(row[1], -inf);
        }
        if (c.seed % 5 == 0 && row.size() > 4) row[3] = 3e38f;
        row_t got = row, want = row;
        const itscale::live_set live = itscale::top_k_filter(k).apply_after(itscale::temperature(t), got, ctx);
        for (float& v : want) v /= t;
        whole_row::top_k(want, k);
        CHECK(same_bits(got, want));
        CHECK(std::vector<token_id>(live.ids.begin(), live.ids.end()) == unmasked(got));
        if (row.size() > 4 && want[1] != -inf && row[1] < kth) ++collisions;
      }
  MESSAGE("rows where a logit below the k-th value survives by rounding onto it: ", collisions);
  CHECK(collisions > 0);
}

TEST_CASE("sparse sample_inverse_cdf and logsumexp over the listed tokens match the float64 row") {
  for (const row_case& c : cases()) {
    CAPTURE(c.n);
    CAPTURE(c.masked);
    const row_t row = make_row(c.n, c.masked, c.levels, c.seed);
    std::vector<token_id> ids(row.size());
    ids.resize(itscale::kernels::collect_unmasked(row, ids));
    double m = -inf, total = 0;
    for (float v : row) m = std::max(m, static_cast<double>(v));
    for (float v : row) total += std::exp(static_cast<double>(v) - m);
    CHECK(itscale::kernels::logsumexp(row, ids) == doctest::Approx(m + std::log(total)).epsilon(1e-6));
    for (double u : {0.0, 0.1, 0.5, 0.9, 0.999999}) {
      const std::size_t t = itscale::kernels::sample_inverse_cdf(row, ids, u);
      REQUIRE(t < row.size());
      CHECK(row[t] != -inf);
      // t closes the first CDF step above u (float64 over the whole row, in token order).
      double below = 0;
      for (std::size_t i = 0; i < t; ++i) below += std::exp(static_cast<double>(row[i]) - m);
      const double upto = below + std::exp(static_cast<double>(row[t]) - m);
      CHECK(below / total <= u + 1e-12);
      CHECK(upto / total > u - 1e-12);
    }
  }
  const row_t masked(7, -inf);
  CHECK(itscale::kernels::sample_inverse_cdf(masked, std::span<const token_id>(), 0.5) == itscale::kernels::npos);
  CHECK(itscale::kernels::logsumexp(masked, std::span<const token_id>()) == -inf);
}
