// Logits processors: option validation (the exception names the option), behaviour on small rows
// derived by hand, and brute-force double-precision references on many random rows with ties and
// masked tokens. Hugging Face's own outputs are checked separately by the conformance runner.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "itscale/core/errors.hpp"
#include "itscale/core/rng.hpp"
#include "itscale/processors/chain.hpp"
#include "itscale/processors/epsilon_eta.hpp"
#include "itscale/processors/min_p.hpp"
#include "itscale/processors/no_repeat_ngram.hpp"
#include "itscale/processors/penalties.hpp"
#include "itscale/processors/processor.hpp"
#include "itscale/processors/sampling_chain.hpp"
#include "itscale/processors/sampling_options.hpp"
#include "itscale/processors/temperature.hpp"
#include "itscale/processors/token_rules.hpp"
#include "itscale/processors/top_h.hpp"
#include "itscale/processors/top_k.hpp"
#include "itscale/processors/top_p.hpp"
#include "itscale/processors/typical.hpp"

using itscale::token_id;
using row_t = std::vector<float>;
using ids_t = std::vector<token_id>;
using seqs_t = std::vector<ids_t>;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float nan_f = std::numeric_limits<float>::quiet_NaN();

static_assert(std::is_base_of_v<std::invalid_argument, itscale::invalid_option>);
static_assert(itscale::LogitsProcessor<itscale::temperature>);
static_assert(itscale::LogitsProcessor<itscale::top_k_filter>);
static_assert(itscale::LogitsProcessor<itscale::top_p_filter>);
static_assert(itscale::LogitsProcessor<itscale::min_p_filter>);
static_assert(itscale::LogitsProcessor<itscale::typical_filter>);
static_assert(itscale::LogitsProcessor<itscale::epsilon_filter>);
static_assert(itscale::LogitsProcessor<itscale::eta_filter>);
static_assert(itscale::LogitsProcessor<itscale::top_h_filter>);
static_assert(itscale::LogitsProcessor<itscale::repetition_penalty>);
static_assert(itscale::LogitsProcessor<itscale::presence_frequency_penalty>);
static_assert(itscale::LogitsProcessor<itscale::no_repeat_ngram>);
static_assert(itscale::LogitsProcessor<itscale::min_new_tokens_rule>);
static_assert(itscale::LogitsProcessor<itscale::logit_bias>);
static_assert(itscale::LogitsProcessor<itscale::bad_words>);
static_assert(itscale::LogitsProcessor<itscale::allowed_tokens>);

/// A workspace full of garbage: processors must not depend on what a previous step left in it.
itscale::workspace dirty_workspace(std::size_t vocab) {
  itscale::workspace ws;
  ws.reserve(vocab);
  std::fill(ws.values.begin(), ws.values.end(), nan_f);
  std::fill(ws.values2.begin(), ws.values2.end(), -inf);
  std::fill(ws.ids.begin(), ws.ids.end(), token_id{0});
  std::fill(ws.bits.begin(), ws.bits.end(), 0xA5A5A5A5u);
  return ws;
}

/// Applies `p` to a copy of `row` with the sequence `tokens` (the first `prompt_length` are the
/// prompt) and returns the processed row. `extra` oversizes the workspace, as when one workspace
/// serves several vocabularies.
template <class P>
row_t run(const P& p, row_t row, const ids_t& tokens = {}, std::size_t prompt_length = 0,
          std::size_t extra = 0) {
  auto ws = dirty_workspace(row.size() + extra);
  const itscale::step_context ctx{tokens, prompt_length, &ws};
  p.apply(row, ctx);
  return row;
}

/// The row with every token not in `keep` masked.
row_t masked_except(const row_t& row, const std::vector<bool>& keep) {
  row_t out = row;
  for (std::size_t i = 0; i < out.size(); ++i)
    if (!keep[i]) out[i] = itscale::masked_logit;
  return out;
}

/// The ids that are not masked.
ids_t kept(const row_t& row) {
  ids_t out;
  for (std::size_t i = 0; i < row.size(); ++i)
    if (row[i] != -inf) out.push_back(static_cast<token_id>(i));
  return out;
}

/// Logits whose softmax is exactly proportional to `p` (up to float rounding of the log).
row_t logits_of(std::initializer_list<double> p) {
  row_t out;
  for (double x : p) out.push_back(x > 0 ? static_cast<float>(std::log(x)) : -inf);
  return out;
}

/// `make()` must throw invalid_option whose message names `option`.
template <class F>
void check_invalid_option(F make, const std::string& option) {
  CAPTURE(option);
  bool thrown = false;
  try {
    make();
  } catch (const itscale::invalid_option& e) {
    thrown = true;
    const std::string what = e.what();
    CAPTURE(what);
    CHECK(what.find(option) != std::string::npos);
  }
  CHECK_MESSAGE(thrown, "no invalid_option thrown");
}

// ---- double-precision references -----------------------------------------------------------------

std::vector<double> ref_probs(const row_t& row) {
  double m = -INFINITY;
  for (float x : row) m = std::max(m, static_cast<double>(x));
  double s = 0;
  for (float x : row) s += std::exp(static_cast<double>(x) - m);
  std::vector<double> p(row.size());
  for (std::size_t i = 0; i < row.size(); ++i) p[i] = std::exp(static_cast<double>(row[i]) - m) / s;
  return p;
}

double ref_entropy(const std::vector<double>& p) {
  double h = 0;
  for (double x : p)
    if (x > 0) h -= x * std::log(x);
  return h;
}

/// Token ids best first: larger logit, then lower id (the library's tie rule).
ids_t ref_rank(const row_t& row) {
  ids_t ids(row.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](token_id a, token_id b) {
    return row[static_cast<std::size_t>(a)] > row[static_cast<std::size_t>(b)];
  });
  return ids;
}

/// Random rows on a coarse grid of 13 values (many exact ties), some tokens masked.
row_t random_row(std::uint64_t id, std::size_t n, bool masks = true) {
  const itscale::counter_rng r(31337, id);
  row_t row(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::uint32_t>(i);
    row[i] = static_cast<float>(std::floor(r.uniform(k, 0) * 13) / 4 - 1.5);
    if (masks && r.uniform(k, 1) < 0.1) row[i] = -inf;
  }
  row[static_cast<std::size_t>(r.uniform(0, 2) * static_cast<double>(n))] = 0.5f;  // one finite entry at least
  return row;
}

const std::size_t random_sizes[] = {1, 2, 3, 5, 8, 13, 40, 130};

}  // namespace

// =====================================================================================================
// temperature

TEST_CASE("temperature: validation") {
  for (float t : {0.0f, -0.0f, -1.0f, nan_f, inf, -inf})
    check_invalid_option([t] { itscale::temperature p(t); }, "temperature");
  CHECK(itscale::temperature(0.01f).value() == 0.01f);
}

TEST_CASE("temperature divides every logit") {
  CHECK(run(itscale::temperature(0.5f), {1, -2, 0.5f, -inf}) == row_t{2, -4, 1, -inf});
  CHECK(run(itscale::temperature(4.0f), {8, -2, 0}) == row_t{2, -0.5f, 0});
  // Division, not multiplication by 1/t: the two differ in the last bit for many inputs, and HF
  // divides. 0.7f has no exact reciprocal.
  const float t = 0.7f;
  row_t row;
  for (int i = -50; i <= 50; ++i) row.push_back(static_cast<float>(i) * 0.173f);
  const row_t out = run(itscale::temperature(t), row);
  std::size_t bad = 0, reciprocal_differs = 0;
  for (std::size_t i = 0; i < row.size(); ++i) {
    // The quotient rounded once to float (double division then rounding to float is exact here).
    const auto quotient = static_cast<float>(static_cast<double>(row[i]) / static_cast<double>(t));
    bad += out[i] == quotient ? 0u : 1u;
    reciprocal_differs += row[i] * (1.0f / t) != quotient ? 1u : 0u;
  }
  CHECK(bad == 0);
  CHECK(reciprocal_differs > 0);  // the inputs do tell division from multiplication
}

// =====================================================================================================
// top-k

TEST_CASE("top_k_filter: validation") {
  check_invalid_option([] { itscale::top_k_filter p(0); }, "top_k");
  check_invalid_option([] { itscale::top_k_filter p(3, 0); }, "min_tokens_to_keep");
  CHECK(itscale::top_k_filter(2, 5).k() == 5);  // min_tokens_to_keep raises k
}

TEST_CASE("top_k_filter by hand: ties at the k-th value are all kept") {
  const row_t row = {1, 3, 3, 2, 3, 0};
  // k = 1 and k = 2: the k-th largest is 3, and all three 3s survive.
  CHECK(kept(run(itscale::top_k_filter(1), row)) == ids_t{1, 2, 4});
  CHECK(kept(run(itscale::top_k_filter(2), row)) == ids_t{1, 2, 4});
  CHECK(kept(run(itscale::top_k_filter(4), row)) == ids_t{1, 2, 3, 4});
  // Survivors keep their values.
  CHECK(run(itscale::top_k_filter(4), row) == row_t{-inf, 3, 3, 2, 3, -inf});
  // k >= V changes nothing.
  CHECK(run(itscale::top_k_filter(6), row) == row);
  CHECK(run(itscale::top_k_filter(100), row) == row);
  // min_tokens_to_keep wins over a smaller k.
  CHECK(kept(run(itscale::top_k_filter(1, 3), {5, 4, 3, 2, 1})) == ids_t{0, 1, 2});
  // More k than unmasked tokens: the k-th largest is -inf, nothing else is masked.
  CHECK(run(itscale::top_k_filter(3), {-inf, 2, -inf, 1}) == row_t{-inf, 2, -inf, 1});
}

TEST_CASE("top_k_filter against a sorted reference") {
  std::uint64_t id = 0;
  for (std::size_t n : random_sizes) {
    for (std::size_t k : {std::size_t{1}, std::size_t{2}, std::size_t{5}, std::size_t{50}}) {
      for (std::size_t keep : {std::size_t{1}, std::size_t{3}}) {
        const row_t row = random_row(++id, n);
        row_t sorted = row;
        std::sort(sorted.begin(), sorted.end(), std::greater<>());
        const float kth = sorted[std::min(std::max(k, keep), n) - 1];
        std::vector<bool> keep_mask(n);
        for (std::size_t i = 0; i < n; ++i) keep_mask[i] = row[i] >= kth;
        CAPTURE(n);
        CAPTURE(k);
        CAPTURE(keep);
        CHECK(run(itscale::top_k_filter(k, keep), row, {}, 0, id % 2 ? std::size_t{77} : std::size_t{0}) == masked_except(row, keep_mask));
      }
    }
  }
}

// =====================================================================================================
// top-p

TEST_CASE("top_p_filter: validation") {
  for (float p : {0.0f, -0.1f, 1.5f, nan_f, inf})
    check_invalid_option([p] { itscale::top_p_filter f(p); }, "top_p");
  check_invalid_option([] { itscale::top_p_filter f(0.5, 0); }, "min_tokens_to_keep");
  itscale::top_p_filter one(1.0);  // 1 is valid (keeps everything)
  CHECK(run(one, {1, 2, 3}) == row_t{1, 2, 3});
}

TEST_CASE("top_p_filter by hand") {
  // p = {0.5, 0.3, 0.2}. Ascending cumulative: 0.2, 0.5, 1.0.
  const row_t row = logits_of({0.5, 0.3, 0.2});
  CHECK(kept(run(itscale::top_p_filter(0.75), row)) == ids_t{0, 1});    // 0.2 <= 0.25: removed
  CHECK(kept(run(itscale::top_p_filter(0.9), row)) == ids_t{0, 1, 2});   // 0.2 > 0.1: kept
  CHECK(kept(run(itscale::top_p_filter(0.4), row)) == ids_t{0});         // 0.5 <= 0.6: removed
  CHECK(kept(run(itscale::top_p_filter(0.4, 2), row)) == ids_t{0, 1});   // min_tokens_to_keep = 2
  // The smallest top_p still keeps the best token.
  CHECK(kept(run(itscale::top_p_filter(1e-6), row)) == ids_t{0});
}

TEST_CASE("top_p_filter ties: among equal logits the lower token id ranks higher") {
  const row_t four(4, 1.0f);  // each 0.25; ascending rank order is 3, 2, 1, 0
  // top_p = 0.5: cumulative 0.25 (id 3), 0.5 (id 2) are <= 0.5 and go; 0, 1 stay.
  CHECK(kept(run(itscale::top_p_filter(0.5), four)) == ids_t{0, 1});
  // top_p = 0.6: only 0.25 <= 0.4 goes.
  CHECK(kept(run(itscale::top_p_filter(0.6), four)) == ids_t{0, 1, 2});
  // top_p = 0.1: everything but the best goes; min_tokens_to_keep = 3 saves the 3 lowest ids.
  CHECK(kept(run(itscale::top_p_filter(0.1), four)) == ids_t{0});
  CHECK(kept(run(itscale::top_p_filter(0.1, 3), four)) == ids_t{0, 1, 2});
  // Masked tokens have probability 0 and stay masked.
  CHECK(kept(run(itscale::top_p_filter(0.5), {-inf, 0, 0, -inf})) == ids_t{1});
}

TEST_CASE("top_p_filter against a double-precision reference") {
  std::uint64_t id = 1000;
  std::size_t checked = 0;
  for (std::size_t n : random_sizes) {
    for (double top_p : {0.3, 0.5, 0.8, 0.95}) {
      for (std::size_t keep : {std::size_t{1}, std::size_t{2}, std::size_t{4}}) {
        const row_t row = random_row(++id, n);
        const auto p = ref_probs(row);
        const ids_t rank = ref_rank(row);
        const double cut = 1.0 - top_p;
        std::vector<bool> keep_mask(n, true);
        double cum = 0;
        bool ambiguous = false;
        for (std::size_t j = n; j-- > 0;) {  // ascending: from the worst-ranked token
          const auto t = static_cast<std::size_t>(rank[j]);
          cum += p[t];
          ambiguous |= std::fabs(cum - cut) < 1e-5;
          if (cum <= cut && j >= keep) keep_mask[t] = false;
        }
        if (ambiguous) continue;  // float and double may land on different sides
        ++checked;
        CAPTURE(n);
        CAPTURE(top_p);
        CAPTURE(keep);
        CHECK(run(itscale::top_p_filter(top_p, keep), row, {}, 0, id % 2 ? std::size_t{5} : std::size_t{0}) == masked_except(row, keep_mask));
      }
    }
  }
  CHECK(checked > 85);  // the reference ran on most rows (96 at the time of writing)
}

// =====================================================================================================
// min-p

TEST_CASE("min_p_filter: validation") {
  for (float p : {-0.1f, 1.1f, nan_f, -inf})
    check_invalid_option([p] { itscale::min_p_filter f(p); }, "min_p");
  check_invalid_option([] { itscale::min_p_filter f(0.1f, 0); }, "min_tokens_to_keep");
}

TEST_CASE("min_p_filter by hand") {
  // Relative probabilities 1, 0.5, 0.1, 0.05.
  const row_t row = logits_of({0.4, 0.2, 0.04, 0.02});
  CHECK(kept(run(itscale::min_p_filter(0.2f), row)) == ids_t{0, 1});
  CHECK(kept(run(itscale::min_p_filter(0.2f, 3), row)) == ids_t{0, 1, 2});
  CHECK(kept(run(itscale::min_p_filter(0.0f), row)) == ids_t{0, 1, 2, 3});
  // min_p = 1 keeps exactly the tokens tied at the top.
  CHECK(kept(run(itscale::min_p_filter(1.0f), {2, 1, 2, -inf})) == ids_t{0, 2});
  // min_tokens_to_keep among ties: the lower ids are saved.
  CHECK(kept(run(itscale::min_p_filter(0.5f, 2), {0, -5, -5, -5})) == ids_t{0, 1});
  CHECK(kept(run(itscale::min_p_filter(0.5f, 3), {-5, -5, 0, -5})) == ids_t{0, 1, 2});
  // Kept values are unchanged.
  CHECK(run(itscale::min_p_filter(0.2f), row) == row_t{row[0], row[1], -inf, -inf});
}

TEST_CASE("min_p_filter against a double-precision reference") {
  std::uint64_t id = 2000;
  std::size_t checked = 0;
  for (std::size_t n : random_sizes) {
    for (float min_p : {0.05f, 0.3f, 0.7f}) {
      for (std::size_t keep : {std::size_t{1}, std::size_t{3}}) {
        const row_t row = random_row(++id, n);
        const auto p = ref_probs(row);
        const double threshold = static_cast<double>(min_p) * *std::max_element(p.begin(), p.end());
        const ids_t rank = ref_rank(row);
        std::vector<bool> keep_mask(n);
        bool ambiguous = false;
        for (std::size_t i = 0; i < n; ++i) {
          keep_mask[i] = p[i] >= threshold;
          ambiguous |= p[i] != threshold && std::fabs(p[i] - threshold) < 1e-5 * threshold;
        }
        for (std::size_t j = 0; j < std::min(keep, n); ++j) keep_mask[static_cast<std::size_t>(rank[j])] = true;
        if (ambiguous) continue;
        ++checked;
        CAPTURE(n);
        CAPTURE(min_p);
        CAPTURE(keep);
        CHECK(run(itscale::min_p_filter(min_p, keep), row) == masked_except(row, keep_mask));
      }
    }
  }
  CHECK(checked > 40);
}

// =====================================================================================================
// typical

namespace {
/// HF's TypicalLogitsWarper in double, with the library's tie rule (equal distances: lower id
/// first). Sets `ambiguous` when float rounding could decide differently.
std::vector<bool> ref_typical(const row_t& row, double mass, std::size_t min_keep, bool& ambiguous) {
  const std::size_t n = row.size();
  const auto p = ref_probs(row);
  const double h = ref_entropy(p);
  std::vector<double> d(n);
  for (std::size_t i = 0; i < n; ++i) d[i] = p[i] > 0 ? std::fabs(-std::log(p[i]) - h) : INFINITY;
  ids_t order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](token_id a, token_id b) {
    return d[static_cast<std::size_t>(a)] < d[static_cast<std::size_t>(b)];
  });
  ambiguous = false;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j)
      ambiguous |= row[i] != row[j] && std::fabs(d[i] - d[j]) < 1e-5;
  std::size_t last = 0;
  double cum = 0;
  for (std::size_t j = 0; j < n; ++j) {
    cum += p[static_cast<std::size_t>(order[j])];
    ambiguous |= std::fabs(cum - mass) < 1e-5;
    if (cum < mass) ++last;
  }
  last = std::min(last, n - 1);
  const double limit = d[static_cast<std::size_t>(order[last])];
  std::vector<bool> keep(n, true);
  for (std::size_t j = min_keep; j < n; ++j) {
    const auto t = static_cast<std::size_t>(order[j]);
    if (d[t] > limit) keep[t] = false;
  }
  return keep;
}
}  // namespace

TEST_CASE("typical_filter: validation") {
  for (float m : {0.0f, 1.0f, -0.5f, 1.5f, nan_f})
    check_invalid_option([m] { itscale::typical_filter f(m); }, "typical_p");
  check_invalid_option([] { itscale::typical_filter f(0.5f, 0); }, "min_tokens_to_keep");
}

TEST_CASE("typical_filter by hand") {
  // p = {0.7, 0.2, 0.1}: entropy 0.8018; |surprisal - entropy| = 0.445, 0.808, 1.501, so the
  // typicality order is 0, 1, 2 with cumulative mass 0.7, 0.9, 1.0.
  const row_t a = logits_of({0.7, 0.2, 0.1});
  CHECK(kept(run(itscale::typical_filter(0.5f), a)) == ids_t{0});
  CHECK(kept(run(itscale::typical_filter(0.8f), a)) == ids_t{0, 1});
  CHECK(kept(run(itscale::typical_filter(0.95f), a)) == ids_t{0, 1, 2});
  // p = {0.5, 0.3, 0.2}: entropy 1.0297; distances 0.337, 0.174, 0.580: order 1, 0, 2. The most
  // likely token is not the most typical one and is dropped at small mass.
  const row_t b = logits_of({0.5, 0.3, 0.2});
  CHECK(kept(run(itscale::typical_filter(0.25f), b)) == ids_t{1});
  CHECK(kept(run(itscale::typical_filter(0.7f), b)) == ids_t{0, 1});
  CHECK(kept(run(itscale::typical_filter(0.25f, 2), b)) == ids_t{0, 1});  // min_tokens_to_keep
  // Equal logits: every distance is 0, nothing goes.
  CHECK(kept(run(itscale::typical_filter(0.2f), row_t(5, 1.0f))) == ids_t{0, 1, 2, 3, 4});
  // A masked token is infinitely far and stays masked.
  CHECK(kept(run(itscale::typical_filter(0.95f), logits_of({0.7, 0.2, 0, 0.1}))) == ids_t{0, 1, 3});
}

TEST_CASE("typical_filter against a double-precision reference") {
  std::uint64_t id = 3000;
  std::size_t checked = 0;
  for (std::size_t n : random_sizes) {
    for (float mass : {0.2f, 0.5f, 0.9f}) {
      for (std::size_t keep : {std::size_t{1}, std::size_t{3}}) {
        const row_t row = random_row(++id, n);
        bool ambiguous = false;
        const auto keep_mask = ref_typical(row, static_cast<double>(mass), keep, ambiguous);
        if (ambiguous) continue;
        ++checked;
        CAPTURE(n);
        CAPTURE(mass);
        CAPTURE(keep);
        CHECK(run(itscale::typical_filter(mass, keep), row) == masked_except(row, keep_mask));
      }
    }
  }
  CHECK(checked > 40);
}

// =====================================================================================================
// epsilon and eta

TEST_CASE("epsilon_filter and eta_filter: validation") {
  for (float e : {0.0f, 1.0f, -0.1f, 2.0f, nan_f}) {
    check_invalid_option([e] { itscale::epsilon_filter f(e); }, "epsilon_cutoff");
    check_invalid_option([e] { itscale::eta_filter f(e); }, "eta_cutoff");
  }
  check_invalid_option([] { itscale::epsilon_filter f(0.1f, 0); }, "min_tokens_to_keep");
  check_invalid_option([] { itscale::eta_filter f(0.1f, 0); }, "min_tokens_to_keep");
}

TEST_CASE("epsilon_filter by hand") {
  const row_t row = logits_of({0.7, 0.2, 0.1});
  CHECK(kept(run(itscale::epsilon_filter(0.15f), row)) == ids_t{0, 1});
  CHECK(kept(run(itscale::epsilon_filter(0.05f), row)) == ids_t{0, 1, 2});
  // Every token under the cutoff: the min_tokens_to_keep best survive.
  const row_t flat = logits_of({0.3, 0.25, 0.2, 0.15, 0.1});
  CHECK(kept(run(itscale::epsilon_filter(0.5f), flat)) == ids_t{0});
  CHECK(kept(run(itscale::epsilon_filter(0.5f, 3), flat)) == ids_t{0, 1, 2});
  // Ties at the k-th value survive together (HF: scores < topk(scores, k)[-1]).
  CHECK(kept(run(itscale::epsilon_filter(0.9f, 2), {1, 2, 1, 1, 0})) == ids_t{0, 1, 2, 3});
}

TEST_CASE("eta_filter by hand") {
  // p = {0.4, 0.3, 0.2, 0.1}: entropy 1.2799, exp(-H) = 0.2781.
  const row_t row = logits_of({0.4, 0.3, 0.2, 0.1});
  // epsilon 0.2: sqrt(0.2) * 0.2781 = 0.1244 < 0.2 is the cutoff; 0.1 goes.
  CHECK(kept(run(itscale::eta_filter(0.2f), row)) == ids_t{0, 1, 2});
  // epsilon 0.05: 0.05 < sqrt(0.05) * 0.2781 = 0.0622 is the cutoff; nothing goes.
  CHECK(kept(run(itscale::eta_filter(0.05f), row)) == ids_t{0, 1, 2, 3});
  // epsilon 0.9: cutoff 0.949 * 0.2781 = 0.264; 0.2 and 0.1 go, unless kept by min_tokens_to_keep.
  CHECK(kept(run(itscale::eta_filter(0.9f), row)) == ids_t{0, 1});
  CHECK(kept(run(itscale::eta_filter(0.9f, 3), row)) == ids_t{0, 1, 2});
}

TEST_CASE("epsilon_filter and eta_filter against a double-precision reference") {
  std::uint64_t id = 4000;
  std::size_t checked = 0;
  for (std::size_t n : random_sizes) {
    for (float eps : {0.001f, 0.02f, 0.2f}) {
      for (std::size_t keep : {std::size_t{1}, std::size_t{3}}) {
        for (bool eta : {false, true}) {
          const row_t row = random_row(++id, n);
          const auto p = ref_probs(row);
          const double e = static_cast<double>(eps);
          const double cutoff = eta ? std::min(e, std::sqrt(e) * std::exp(-ref_entropy(p))) : e;
          row_t sorted = row;
          std::sort(sorted.begin(), sorted.end(), std::greater<>());
          const float guard = sorted[std::min(keep, n) - 1];
          std::vector<bool> keep_mask(n);
          bool ambiguous = false;
          for (std::size_t i = 0; i < n; ++i) {
            keep_mask[i] = !(p[i] < cutoff && row[i] < guard);
            ambiguous |= std::fabs(p[i] - cutoff) < 1e-5 * cutoff;
          }
          if (ambiguous) continue;
          ++checked;
          CAPTURE(n);
          CAPTURE(eps);
          CAPTURE(keep);
          CAPTURE(eta);
          const row_t got = eta ? run(itscale::eta_filter(eps, keep), row) : run(itscale::epsilon_filter(eps, keep), row);
          CHECK(got == masked_except(row, keep_mask));
        }
      }
    }
  }
  CHECK(checked > 85);
}

// =====================================================================================================
// top-h

TEST_CASE("top_h_filter: validation") {
  for (float h : {0.0f, -0.1f, 1.1f, nan_f, inf})
    check_invalid_option([h] { itscale::top_h_filter f(h); }, "top_h");
  itscale::top_h_filter one(1.0f);
  (void)one;
}

TEST_CASE("top_h_filter by hand") {
  // p = {0.5, 0.25, 0.25}: terms -p ln p = 0.3466 each, entropy 1.0397.
  const row_t row = logits_of({0.5, 0.25, 0.25});
  // top_h 0.5: tau 0.520; 0.347 fits, 0.693 does not.
  CHECK(kept(run(itscale::top_h_filter(0.5f), row)) == ids_t{0});
  // top_h 0.7: tau 0.728; two terms fit. Ids 1 and 2 tie: the lower id ranks first.
  CHECK(kept(run(itscale::top_h_filter(0.7f), row)) == ids_t{0, 1});
  // The best token is kept even when its own term exceeds tau.
  CHECK(kept(run(itscale::top_h_filter(0.01f), row)) == ids_t{0});
  // Masked tokens stay masked.
  CHECK(kept(run(itscale::top_h_filter(0.7f), {-inf, -inf, 0.0f, -inf})) == ids_t{2});
  // Only the 100 most likely tokens are candidates: with 150 equal logits the renormalised terms
  // are ln(100)/100 each, so top_h = 0.555 keeps 55 of them (the lowest ids), and ids >= 100 never.
  const row_t flat(150, 0.0f);
  ids_t first55(55);
  std::iota(first55.begin(), first55.end(), 0);
  CHECK(kept(run(itscale::top_h_filter(0.555f), flat)) == first55);
}

TEST_CASE("top_h_filter against a double-precision reference") {
  std::uint64_t id = 5000;
  std::size_t checked = 0;
  for (std::size_t n : random_sizes) {
    for (float top_h : {0.2f, 0.5f, 0.8f}) {
      const row_t row = random_row(++id, n);
      const ids_t rank = ref_rank(row);
      const std::size_t m = std::min<std::size_t>(n, 100);
      // Renormalise over the m best.
      row_t top(m);
      for (std::size_t j = 0; j < m; ++j) top[j] = row[static_cast<std::size_t>(rank[j])];
      const auto q = ref_probs(top);
      const double tau = ref_entropy(q) * static_cast<double>(top_h);
      std::vector<bool> keep_mask(n, false);
      keep_mask[static_cast<std::size_t>(rank[0])] = true;
      double cum = 0;
      bool ambiguous = false;
      for (std::size_t j = 0; j < m && q[j] > 0; ++j) {
        cum -= q[j] * std::log(q[j]);
        ambiguous |= std::fabs(cum - tau) < 1e-5;
        if (cum <= tau) keep_mask[static_cast<std::size_t>(rank[j])] = true;
      }
      if (ambiguous) continue;
      ++checked;
      CAPTURE(n);
      CAPTURE(top_h);
      CHECK(run(itscale::top_h_filter(top_h), row) == masked_except(row, keep_mask));
    }
  }
  CHECK(checked > 15);
}

// =====================================================================================================
// penalties

TEST_CASE("repetition_penalty: validation") {
  for (float p : {0.0f, -1.0f, nan_f, inf})
    check_invalid_option([p] { itscale::repetition_penalty r(p); }, "repetition_penalty");
}

TEST_CASE("repetition_penalty: once per distinct token, prompt included, divide positive / multiply negative") {
  const row_t row = {2, -2, 3, -4, 5, 0, -inf};
  // Prompt {0, 1}, generated {1, 3, 0, 5, 6}: tokens 0 and 1 repeat but are penalised once.
  const ids_t tokens = {0, 1, 1, 3, 0, 5, 6};
  CHECK(run(itscale::repetition_penalty(2.0f), row, tokens, 2) == row_t{1, -4, 3, -8, 5, 0, -inf});
  // The prompt counts as much as the generated tokens.
  CHECK(run(itscale::repetition_penalty(2.0f), row, {4}, 1) == row_t{2, -2, 3, -4, 2.5f, 0, -inf});
  // A penalty below 1 rewards repetition: positive logits grow, negative ones shrink toward 0.
  CHECK(run(itscale::repetition_penalty(0.5f), row, {0, 1}, 2) == row_t{4, -1, 3, -4, 5, 0, -inf});
  // Penalty 1 changes nothing; no tokens change nothing.
  CHECK(run(itscale::repetition_penalty(1.0f), row, tokens, 2) == row);
  CHECK(run(itscale::repetition_penalty(3.0f), row, {}, 0) == row);
}

TEST_CASE("repetition_penalty against a reference, many sequences") {
  // Reference: the set of distinct tokens; each gets x < 0 ? x * p : x / p exactly once.
  for (std::uint64_t id = 0; id < 50; ++id) {
    const itscale::counter_rng r(5, id);
    const std::size_t n = 40;
    row_t row = random_row(id + 6000, n);
    ids_t tokens(20);
    for (std::size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = static_cast<token_id>(r.uniform(static_cast<std::uint32_t>(i)) * 12);  // many repeats
    const float pen = 1.3f;
    row_t expect = row;
    std::vector<bool> seen(n, false);
    for (token_id t : tokens) seen[static_cast<std::size_t>(t)] = true;
    for (std::size_t v = 0; v < n; ++v)
      if (seen[v]) expect[v] = expect[v] < 0 ? expect[v] * pen : expect[v] / pen;
    CAPTURE(id);
    CHECK(run(itscale::repetition_penalty(pen), row, tokens, 7, id % 3 == 0 ? std::size_t{100} : std::size_t{0}) == expect);
  }
}

TEST_CASE("presence_frequency_penalty: validation") {
  check_invalid_option([] { itscale::presence_frequency_penalty p(nan_f, 0); }, "presence_penalty");
  check_invalid_option([] { itscale::presence_frequency_penalty p(inf, 0); }, "presence_penalty");
  check_invalid_option([] { itscale::presence_frequency_penalty p(0, nan_f); }, "frequency_penalty");
  check_invalid_option([] { itscale::presence_frequency_penalty p(0, -inf); }, "frequency_penalty");
}

TEST_CASE("presence_frequency_penalty: only generated tokens count") {
  const row_t row(5, 0.0f);
  // Prompt {1, 2, 1}, generated {2, 2, 3}: token 2 seen twice, 3 once; 1 only in the prompt.
  const ids_t tokens = {1, 2, 1, 2, 2, 3};
  // logit -= frequency * count + presence * (count > 0)
  CHECK(run(itscale::presence_frequency_penalty(0.5f, 0.25f), row, tokens, 3) == row_t{0, 0, -1.0f, -0.75f, 0});
  CHECK(run(itscale::presence_frequency_penalty(0.5f, 0.0f), row, tokens, 3) == row_t{0, 0, -0.5f, -0.5f, 0});
  CHECK(run(itscale::presence_frequency_penalty(0.0f, 1.0f), row, tokens, 3) == row_t{0, 0, -2, -1, 0});
  // Negative penalties encourage.
  CHECK(run(itscale::presence_frequency_penalty(-1.0f, 0.0f), row, tokens, 3) == row_t{0, 0, 1, 1, 0});
  // Nothing generated yet: nothing changes, whatever the prompt.
  CHECK(run(itscale::presence_frequency_penalty(2.0f, 2.0f), row, tokens, 6) == row);
}

// =====================================================================================================
// no-repeat-ngram

namespace {
/// HF's formulation: a map from every (n-1)-gram of the sequence to the tokens that followed it;
/// the banned tokens are those that followed the last n-1 tokens.
std::vector<bool> ref_ngram_banned(const ids_t& seq, std::size_t n, std::size_t vocab) {
  std::vector<bool> banned(vocab, false);
  if (seq.size() + 1 < n) return banned;
  std::map<ids_t, std::vector<token_id>> next;
  for (std::size_t i = 0; i + n <= seq.size(); ++i)
    next[ids_t(seq.begin() + static_cast<std::ptrdiff_t>(i), seq.begin() + static_cast<std::ptrdiff_t>(i + n - 1))]
        .push_back(seq[i + n - 1]);
  const ids_t key(seq.end() - static_cast<std::ptrdiff_t>(n - 1), seq.end());
  if (auto it = next.find(key); it != next.end())
    for (token_id t : it->second) banned[static_cast<std::size_t>(t)] = true;
  return banned;
}
}  // namespace

TEST_CASE("no_repeat_ngram: validation") {
  check_invalid_option([] { itscale::no_repeat_ngram p(0); }, "no_repeat_ngram_size");
}

TEST_CASE("no_repeat_ngram by hand") {
  const row_t row(10, 1.0f);
  // (1 2 3) exists; the sequence ends with 1 2: 3 would repeat it.
  CHECK(kept(run(itscale::no_repeat_ngram(3), row, {1, 2, 3, 1, 2}, 5)) == ids_t{0, 1, 2, 4, 5, 6, 7, 8, 9});
  // Bigrams starting with 2: (2 3) only.
  CHECK(kept(run(itscale::no_repeat_ngram(2), row, {1, 2, 3, 1, 2}, 5)) == ids_t{0, 1, 2, 4, 5, 6, 7, 8, 9});
  // Two earlier continuations of (1 2): both banned.
  CHECK(kept(run(itscale::no_repeat_ngram(3), row, {1, 2, 3, 1, 2, 4, 1, 2}, 2)) == ids_t{0, 1, 2, 5, 6, 7, 8, 9});
  // Across the prompt: prompt (5 6), generated (7 5): the bigram (5 6) of the prompt bans 6.
  CHECK(kept(run(itscale::no_repeat_ngram(2), row, {5, 6, 7, 5}, 2)) == ids_t{0, 1, 2, 3, 4, 5, 7, 8, 9});
  // n = 1: every token already in the sequence is banned.
  CHECK(kept(run(itscale::no_repeat_ngram(1), row, {5, 6, 7, 5}, 2)) == ids_t{0, 1, 2, 3, 4, 8, 9});
  // Self-overlap: (4 4) exists in 4 4 4, so 4 is banned after 4.
  CHECK(kept(run(itscale::no_repeat_ngram(2), row, {4, 4, 4}, 1)) == ids_t{0, 1, 2, 3, 5, 6, 7, 8, 9});
  // Too short to hold a complete n-gram: nothing is banned.
  CHECK(run(itscale::no_repeat_ngram(3), row, {1}, 1) == row);
  CHECK(run(itscale::no_repeat_ngram(3), row, {1, 2}, 1) == row);
  CHECK(run(itscale::no_repeat_ngram(4), row, {1, 2, 1, 2}, 1) == row);
  CHECK(run(itscale::no_repeat_ngram(2), row, {}, 0) == row);
}

TEST_CASE("no_repeat_ngram against HF's n-gram map") {
  for (std::uint64_t id = 0; id < 200; ++id) {
    const itscale::counter_rng r(8, id);
    const std::size_t vocab = 6;
    const auto len = static_cast<std::size_t>(r.uniform(0, 0) * 25);
    ids_t seq(len);
    for (std::size_t i = 0; i < len; ++i) seq[i] = static_cast<token_id>(r.uniform(1, static_cast<std::uint32_t>(i)) * 4);  // small alphabet: many repeats
    for (std::size_t n = 1; n <= 4; ++n) {
      const row_t row(vocab, 0.5f);
      const auto banned = ref_ngram_banned(seq, n, vocab);
      std::vector<bool> keep(vocab);
      for (std::size_t v = 0; v < vocab; ++v) keep[v] = !banned[v];
      CAPTURE(id);
      CAPTURE(n);
      CHECK(run(itscale::no_repeat_ngram(n), row, seq, len / 2) == masked_except(row, keep));
    }
  }
}

// =====================================================================================================
// token rules

TEST_CASE("min_new_tokens_rule: validation") {
  check_invalid_option([] { itscale::min_new_tokens_rule r(3, {}); }, "min_new_tokens");
  itscale::min_new_tokens_rule zero(0, {});  // nothing to suppress is fine when the rule is off
  CHECK(run(zero, {1, 2}) == row_t{1, 2});
}

TEST_CASE("min_new_tokens_rule masks every EOS id until enough tokens are generated") {
  const itscale::min_new_tokens_rule rule(3, {2, 5, 99});  // 99 is outside this vocabulary: ignored
  const row_t row = {0, 1, 2, 3, 4, 5};
  const ids_t prompt_and_gen = {7, 7, 1, 1, 1};
  // prompt_length 5: 0 generated; 3: 2 generated (still masked); 2: 3 generated (released).
  CHECK(run(rule, row, prompt_and_gen, 5) == row_t{0, 1, -inf, 3, 4, -inf});
  CHECK(run(rule, row, prompt_and_gen, 3) == row_t{0, 1, -inf, 3, 4, -inf});
  CHECK(run(rule, row, prompt_and_gen, 2) == row);
  CHECK(run(rule, row, prompt_and_gen, 0) == row);
}

TEST_CASE("logit_bias: validation and behaviour") {
  check_invalid_option([] { itscale::logit_bias b({{-1, 1.0f}}); }, "logit_bias");
  check_invalid_option([] { itscale::logit_bias b({{2, nan_f}}); }, "logit_bias");
  check_invalid_option([] { itscale::logit_bias b({{2, inf}}); }, "logit_bias");
  // Additive; -inf bans; ids outside the vocabulary are ignored.
  const itscale::logit_bias b({{1, 2.5f}, {3, -inf}, {0, -0.5f}, {50, 1.0f}});
  CHECK(run(b, {1, 1, 1, 1, 1}) == row_t{0.5f, 3.5f, 1, -inf, 1});
}

TEST_CASE("bad_words: validation") {
  check_invalid_option([] { itscale::bad_words b(seqs_t{{1, 2}, {}}); }, "bad_words_ids");
  check_invalid_option([] { itscale::bad_words b(seqs_t{{1, -2}}); }, "bad_words_ids");
}

TEST_CASE("bad_words: sequences of length 1 and longer") {
  const row_t row(10, 1.0f);
  const itscale::bad_words single(seqs_t{{4}});
  // A one-token sequence is banned always, even before anything is generated.
  CHECK(kept(run(single, row, {1}, 1)) == ids_t{0, 1, 2, 3, 5, 6, 7, 8, 9});
  CHECK(kept(run(single, row, {}, 0)) == ids_t{0, 1, 2, 3, 5, 6, 7, 8, 9});

  const itscale::bad_words multi(seqs_t{{1, 2, 3}, {7, 8}, {9, 9, 9, 9}});
  // Ends with 1 2: 3 is banned. Ends with 7: 8 is banned. Both at once when the ends overlap.
  CHECK(kept(run(multi, row, {5, 1, 2}, 1)) == ids_t{0, 1, 2, 4, 5, 6, 7, 8, 9});
  CHECK(kept(run(multi, row, {5, 7}, 1)) == ids_t{0, 1, 2, 3, 4, 5, 6, 7, 9});
  // The prefix may start in the prompt (HF looks at the whole sequence).
  CHECK(kept(run(multi, row, {0, 1, 2}, 2)) == ids_t{0, 1, 2, 4, 5, 6, 7, 8, 9});
  // Only the end of the sequence matters: an earlier 1 2 does not ban 3.
  CHECK(run(multi, row, {1, 2, 5}, 3) == row);
  // A partial prefix (2 without 1) does not ban.
  CHECK(run(multi, row, {5, 2}, 1) == row);
  // A banned sequence longer than the history cannot match.
  CHECK(run(multi, row, {9, 9}, 1) == row);
  CHECK(kept(run(multi, row, {9, 9, 9}, 1)) == ids_t{0, 1, 2, 3, 4, 5, 6, 7, 8});
  // Banned ids outside the vocabulary are ignored.
  CHECK(run(itscale::bad_words(seqs_t{{3, 40}}), row, {3}, 1) == row);
}

TEST_CASE("allowed_tokens: validation") {
  check_invalid_option([] { itscale::allowed_tokens a(itscale::allowed_tokens_fn{}); }, "allowed_tokens");
}

TEST_CASE("allowed_tokens: the hook's bitmask (bit t of word t / 32) masks the rest") {
  const std::size_t vocab = 70;  // three words, the last one partial
  std::size_t calls = 0;
  bool all_set_on_entry = true;
  const itscale::allowed_tokens rule([&](std::span<const token_id> tokens, std::size_t prompt_length,
                                         std::span<std::uint32_t> allowed) {
    ++calls;
    CHECK(tokens.size() == 3);
    CHECK(prompt_length == 2);
    CHECK(allowed.size() == 3);
    for (std::uint32_t w : allowed) all_set_on_entry &= w == ~std::uint32_t{0};
    // Allow even tokens only, plus token 69 (the last bit of the partial word).
    for (auto& w : allowed) w = 0x55555555u;
    allowed[2] |= std::uint32_t{1} << (69 % 32);
  });
  const row_t row(vocab, 0.0f);
  const row_t out = run(rule, row, {1, 2, 3}, 2);  // the dirty workspace has random bits set
  CHECK(calls == 1);
  CHECK(all_set_on_entry);
  ids_t expect;
  for (token_id t = 0; t < 70; t += 2) expect.push_back(t);
  expect.push_back(69);
  CHECK(kept(out) == expect);
}

TEST_CASE("allowed_tokens: exceptions from the hook propagate") {
  const itscale::allowed_tokens rule([](std::span<const token_id>, std::size_t, std::span<std::uint32_t>) {
    throw std::runtime_error("grammar failed");
  });
  row_t row(4, 0.0f);
  itscale::workspace ws;
  ws.reserve(4);
  const ids_t none;
  CHECK_THROWS_WITH_AS(rule.apply(row, {none, 0, &ws}), "grammar failed", std::runtime_error);
}

// =====================================================================================================
// sampling_options::validate

namespace {
itscale::sampling_options valid_sampling() {
  return {.stop = {.max_new_tokens = 10,
          .min_new_tokens = 2,
          .eos_token_id = {0, 3},
          .stop_sequences = {{4, 5}}},
          .do_sample = true,
          .seed = 1,
          .num_return_sequences = 4,
          .logit_bias = {{1, -2.0f}},
          .repetition_penalty = 1.2f,
          .presence_penalty = 0.5f,
          .frequency_penalty = 0.5f,
          .no_repeat_ngram_size = 3,
          .bad_words_ids = {{6}, {7, 8}},
          .temperature = 0.7f,
          .top_h = 0.5f,
          .top_k = 10,
          .top_p = 0.9,
          .min_p = 0.05f,
          .typical_p = 0.95f,
          .epsilon_cutoff = 0.001f,
          .eta_cutoff = 0.001f,
          .min_tokens_to_keep = 2};
}

/// `change` breaks one rule of an otherwise valid configuration; validate (with or without the
/// vocabulary) must name `option`.
template <class Change>
void check_rule(Change change, const std::string& option, bool needs_vocab = false) {
  auto o = valid_sampling();
  change(o);
  if (!needs_vocab) check_invalid_option([&] { o.validate(); }, option);
  check_invalid_option([&] { o.validate(20); }, option);
}
}  // namespace

TEST_CASE("sampling_options::validate accepts valid configurations") {
  CHECK_NOTHROW(itscale::sampling_options{}.validate());
  CHECK_NOTHROW(itscale::sampling_options{}.validate(1));
  CHECK_NOTHROW(valid_sampling().validate());
  CHECK_NOTHROW(valid_sampling().validate(20));
  // Boundary values that are in the domain.
  auto o = valid_sampling();
  o.top_p = 1.0;
  o.typical_p = 1.0f;
  o.min_p = 1.0f;
  o.top_h = 1.0f;
  o.top_k = 20;  // == vocab
  o.stop.min_new_tokens = o.stop.max_new_tokens;
  o.presence_penalty = -2.0f;
  CHECK_NOTHROW(o.validate(20));
  // Greedy decoding ignores the warpers, as HF does: a temperature of 0 is not an error there.
  itscale::sampling_options greedy{.temperature = 0.0f, .top_p = 7.0};
  CHECK_NOTHROW(greedy.validate(5));
}

TEST_CASE("sampling_options::validate names the broken option") {
  using so = itscale::sampling_options;
  check_rule([](so& o) { o.stop.max_new_tokens = 0; }, "max_new_tokens");
  check_rule([](so& o) { o.stop.min_new_tokens = 11; }, "min_new_tokens");
  check_rule([](so& o) { o.stop.eos_token_id.clear(); }, "min_new_tokens");  // min_new_tokens = 2 without EOS
  check_rule([](so& o) { o.stop.eos_token_id = {-1}; }, "eos_token_id");
  check_rule([](so& o) { o.stop.eos_token_id = {20}; }, "eos_token_id", true);
  check_rule([](so& o) { o.stop.stop_sequences = {{1}, {}}; }, "stop_sequences");
  check_rule([](so& o) { o.stop.stop_sequences = {{1, -4}}; }, "stop_sequences");
  check_rule([](so& o) { o.stop.stop_sequences = {{1, 25}}; }, "stop_sequences", true);
  check_rule([](so& o) { o.num_return_sequences = 0; }, "num_return_sequences");
  check_rule([](so& o) { o.do_sample = false; }, "num_return_sequences");  // 4 sequences, greedy
  for (float p : {0.0f, -1.0f, nan_f, inf})
    check_rule([p](so& o) { o.repetition_penalty = p; }, "repetition_penalty");
  check_rule([](so& o) { o.presence_penalty = nan_f; }, "presence_penalty");
  check_rule([](so& o) { o.frequency_penalty = inf; }, "frequency_penalty");
  for (float t : {0.0f, -0.5f, nan_f, inf}) check_rule([t](so& o) { o.temperature = t; }, "temperature");
  for (float h : {-0.1f, 1.5f, nan_f}) check_rule([h](so& o) { o.top_h = h; }, "top_h");
  for (double p : {0.0, -0.1, 1.01, std::numeric_limits<double>::quiet_NaN()})
    check_rule([p](so& o) { o.top_p = p; }, "top_p");
  for (float p : {-0.1f, 1.01f, nan_f}) check_rule([p](so& o) { o.min_p = p; }, "min_p");
  for (float p : {0.0f, 1.01f, nan_f}) check_rule([p](so& o) { o.typical_p = p; }, "typical_p");
  for (float e : {-0.1f, 1.0f, nan_f}) check_rule([e](so& o) { o.epsilon_cutoff = e; }, "epsilon_cutoff");
  for (float e : {-0.1f, 1.0f, nan_f}) check_rule([e](so& o) { o.eta_cutoff = e; }, "eta_cutoff");
  check_rule([](so& o) { o.min_tokens_to_keep = 0; }, "min_tokens_to_keep");
  check_rule([](so& o) { o.top_k = 21; }, "top_k", true);
  check_rule([](so& o) { o.logit_bias = {{20, 1.0f}}; }, "logit_bias", true);
  check_rule([](so& o) { o.bad_words_ids = {{3, 20}}; }, "bad_words_ids", true);
  // Rules that need no vocabulary are caught by validate() alone, before any processor exists.
  check_rule([](so& o) { o.logit_bias = {{-1, 1.0f}}; }, "logit_bias");
  check_rule([](so& o) { o.logit_bias = {{1, nan_f}}; }, "logit_bias");
  check_rule([](so& o) { o.bad_words_ids = {{1}, {}}; }, "bad_words_ids");
  check_rule([](so& o) { o.bad_words_ids = {{-3}}; }, "bad_words_ids");
}

// top_p is a double, as HF's (a Python float): a float does not compile, since 0.95f would move
// HF's cut (see the next test). The options type is a parameter so that an ill-formed expression
// is a false requirement rather than an error here.
namespace {
template <class O>
concept top_p_takes_float_literal = requires { O{.top_p = 0.95f}; };
template <class O>
concept top_p_assigns_float = requires(O& o, float f) { o.top_p = f; };
template <class O>
concept top_p_takes_double_literal = requires(O& o) {
  O{.top_p = 0.95};
  o.top_p = 0.95;
  o.top_p = 1;
};
}  // namespace
static_assert(!top_p_takes_float_literal<itscale::sampling_options>);
static_assert(!top_p_assigns_float<itscale::sampling_options>);
static_assert(top_p_takes_double_literal<itscale::sampling_options>);
static_assert(!std::is_constructible_v<itscale::top_p_value, float>);
static_assert(!std::is_convertible_v<float, itscale::top_p_value>);
static_assert(std::is_convertible_v<double, itscale::top_p_value>);
static_assert(std::is_convertible_v<itscale::top_p_value, double>);
static_assert(static_cast<double>(itscale::top_p_value{0.95}) == 0.95);  // kept exactly

TEST_CASE("sampling_options::top_p = 0.95 makes HF's cut; 0.95f would not") {
  // HF removes the tokens whose float32 cumulative probability (ascending) is <= 1 - top_p, that
  // difference computed in double (Python) and rounded to float32: 0.0500000007f for 0.95. With 60
  // equal logits every probability is float(1/60) and the cumulative sums are its multiples rounded
  // to float: 1/60 and 2/60 are below the cut, 3/60 rounds to 0.0500000045f, one float step above
  // it. So HF removes 2 tokens. From 0.95f (0.949999988) the cut is 0.0500000119f, three steps up,
  // and 3/60 would go too.
  const float cut = static_cast<float>(1.0 - 0.95);
  const float cut_from_float = static_cast<float>(1.0 - double{0.95f});
  const float third = static_cast<float>(3.0 * double{1.0f / 60.0f});
  REQUIRE(cut < third);  // the row separates the two cuts
  REQUIRE(third <= cut_from_float);

  const row_t flat(60, 0.0f);
  ids_t want(58);
  std::iota(want.begin(), want.end(), token_id{0});  // ties: the two highest ids rank lowest
  const itscale::sampling_options o{.do_sample = true, .top_p = 0.95};
  CHECK(static_cast<double>(o.top_p) == 0.95);
  CHECK(kept(run(itscale::sampling_chain(o), flat)) == want);
  CHECK(kept(run(itscale::top_p_filter(o.top_p), flat)) == want);
  // What a float would have done: one more token removed.
  CHECK(kept(run(itscale::top_p_filter(double{0.95f}), flat)).size() == 57);
}

TEST_CASE("sampling_chain: validates, and runs warpers only when sampling") {
  check_invalid_option([] { itscale::sampling_chain c({.stop = {.max_new_tokens = 0}}); }, "max_new_tokens");
  const row_t row = {2, 1, 0, -1};
  // Greedy: temperature and top_k are ignored; the repetition penalty still applies.
  const itscale::sampling_chain greedy({.repetition_penalty = 2.0f, .temperature = 0.5f, .top_k = 1});
  CHECK(run(greedy, row, {0}, 1) == row_t{1, 1, 0, -1});
  // Sampling: penalty, then temperature (doubles), then top_k = 2 keeps the tie 1 at ids 0, 1.
  const itscale::sampling_chain sample(
      {.do_sample = true, .repetition_penalty = 2.0f, .temperature = 0.5f, .top_k = 2});
  CHECK(run(sample, row, {0}, 1) == row_t{2, 2, -inf, -inf});
}

// =====================================================================================================
// processor_chain

namespace {
/// Stateless: appends its tag to a log, so the order of application is visible.
struct tagger {
  int tag;
  std::vector<int>* log;
  void apply(std::span<float>, const itscale::step_context&) const { log->push_back(tag); }
};

/// Stateful: bans every token it has been told about through advance(); start() remembers the
/// prompt length and counts starts.
struct ban_advanced {
  struct state_type {
    std::size_t prompt_length = 0;
    ids_t seen;
  };
  int* starts;
  state_type start(std::span<const token_id> prompt) const {
    ++*starts;
    return {prompt.size(), {}};
  }
  void advance(state_type& s, token_id t) const { s.seen.push_back(t); }
  void apply(std::span<float> row, const itscale::step_context&, const state_type& s) const {
    for (token_id t : s.seen) row[static_cast<std::size_t>(t)] = itscale::masked_logit;
  }
};
static_assert(itscale::StatefulLogitsProcessor<ban_advanced>);

template <class Chain>
row_t run_chain(const Chain& c, row_t row, const typename Chain::state_type& st) {
  auto ws = dirty_workspace(row.size());
  const ids_t none;
  c.apply(row, {none, 0, &ws}, st);
  return row;
}
}  // namespace

TEST_CASE("processor_chain applies its members left to right") {
  std::vector<int> log;
  const auto c = itscale::make_chain(tagger{1, &log}, tagger{2, &log}, tagger{3, &log});
  const auto st = c.start(ids_t{1});
  (void)run_chain(c, row_t(3, 0.0f), st);
  CHECK(log == std::vector<int>{1, 2, 3});
  // Order matters with real processors: bias then top-1 keeps the boosted token; top-1 then bias
  // has already masked it (and -inf + 5 stays -inf).
  const row_t row = {1, 0};
  const auto bias_then_top = itscale::make_chain(itscale::logit_bias({{1, 5.0f}}), itscale::top_k_filter(1));
  const auto top_then_bias = itscale::make_chain(itscale::top_k_filter(1), itscale::logit_bias({{1, 5.0f}}));
  CHECK(run_chain(bias_then_top, row, bias_then_top.start(ids_t{0})) == row_t{-inf, 5});
  CHECK(run_chain(top_then_bias, row, top_then_bias.start(ids_t{0})) == row_t{1, -inf});
  CHECK(bias_then_top.get<1>().k() == 1);
}

TEST_CASE("processor_chain: stateful members get start/advance, and states fork independently") {
  int starts = 0;
  const ban_advanced ban{&starts};
  const itscale::temperature half(0.5f);
  // lvalue members (copied in), stateless and stateful mixed.
  const auto c = itscale::make_chain(half, ban, itscale::top_k_filter(3));
  static_assert(itscale::StatefulLogitsProcessor<std::remove_cvref_t<decltype(c)>>);

  auto st = c.start(ids_t{9, 9, 9});
  CHECK(starts == 1);
  CHECK(std::get<1>(st).prompt_length == 3);
  c.advance(st, 1);
  auto fork = st;  // a sequence forks: its state is copied
  c.advance(fork, 2);
  c.advance(st, 4);
  CHECK(std::get<1>(st).seen == ids_t{1, 4});
  CHECK(std::get<1>(fork).seen == ids_t{1, 2});

  const row_t row = {5, 4, 3, 2, 1, 0};
  // temperature doubles, ban masks the advanced tokens, top-3 keeps the 3 best of the rest.
  CHECK(run_chain(c, row, st) == row_t{10, -inf, 6, 4, -inf, -inf});
  CHECK(run_chain(c, row, fork) == row_t{10, -inf, -inf, 4, 2, -inf});

  // A chain nests in a chain: the inner state is carried inside the outer one.
  const auto outer = itscale::make_chain(c, itscale::logit_bias({{0, -20.0f}}));
  auto ost = outer.start(ids_t{1});
  CHECK(starts == 2);
  outer.advance(ost, 0);
  CHECK(run_chain(outer, row, ost) == row_t{-inf, 8, 6, 4, -inf, -inf});
}
