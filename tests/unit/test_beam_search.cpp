// Beam search: exactness against brute-force enumeration of every sequence (search error zero
// with a wide enough beam), processors, batching invariance, patience, forking and handle
// hygiene under failures, and rejection of bad options and input.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <itscale/search.hpp>

#include "instrumented_source.hpp"
#include "same_search.hpp"

using itscale::token_id;
using tokens = std::vector<token_id>;

namespace {

std::string what_of(auto&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// Independent reference: the processed log-probs of the next token, in double, as HF defines
// beam search's processors (on log-probs): repetition penalty, no-repeat-n-gram, min-new-tokens.
struct reference_model {
  const itscale::hash_lm& lm;
  const itscale::beam_options& o;
  std::size_t prompt_length;

  std::vector<double> logprobs(const tokens& prefix) const {
    std::vector<float> row(lm.vocab_size());
    lm.fill(lm.state_of(prefix), row);
    double m = -INFINITY;
    for (float x : row) m = std::max(m, double{x});
    double s = 0;
    for (float x : row) s += std::exp(double{x} - m);
    std::vector<double> lp(row.size());
    for (std::size_t i = 0; i < row.size(); ++i) lp[i] = double{row[i]} - m - std::log(s);
    std::set<token_id> seen(prefix.begin(), prefix.end());
    for (token_id t : seen) {
      double& x = lp[static_cast<std::size_t>(t)];
      x = x < 0 ? x * o.repetition_penalty : x / o.repetition_penalty;
    }
    const std::size_t n = o.no_repeat_ngram_size;
    if (n > 0 && prefix.size() + 1 >= n)
      for (std::size_t i = 0; i + n <= prefix.size(); ++i)
        if (std::equal(prefix.end() - static_cast<std::ptrdiff_t>(n - 1), prefix.end(),
                       prefix.begin() + static_cast<std::ptrdiff_t>(i)))
          lp[static_cast<std::size_t>(prefix[i + n - 1])] = -INFINITY;
    if (prefix.size() - prompt_length < o.stop.min_new_tokens)
      for (token_id e : o.stop.eos_token_id) lp[static_cast<std::size_t>(e)] = -INFINITY;
    return lp;
  }

  bool is_eos(token_id t) const {
    return std::find(o.stop.eos_token_id.begin(), o.stop.eos_token_id.end(), t) != o.stop.eos_token_id.end();
  }

  // Every complete sequence (ending in EOS, or of max_new_tokens tokens) with a finite score.
  void enumerate(tokens& prefix, double sum, std::map<tokens, double>& out) const {
    const auto lp = logprobs(prefix);
    const std::size_t len = prefix.size() - prompt_length + 1;
    for (std::size_t t = 0; t < lp.size(); ++t) {
      if (lp[t] == -INFINITY) continue;
      prefix.push_back(static_cast<token_id>(t));
      const double s = sum + lp[t];
      if (is_eos(static_cast<token_id>(t)) || len == o.stop.max_new_tokens)
        out[tokens(prefix.begin() + static_cast<std::ptrdiff_t>(prompt_length), prefix.end())] =
            s / std::pow(double(len), o.length_penalty);
      else
        enumerate(prefix, s, out);
      prefix.pop_back();
    }
  }
};

std::map<tokens, double> all_sequences(const itscale::hash_lm& lm, const itscale::beam_options& o, const tokens& prompt) {
  std::map<tokens, double> out;
  tokens prefix = prompt;
  reference_model{lm, o, prompt.size()}.enumerate(prefix, 0.0, out);
  return out;
}

std::pair<tokens, double> best_of(const std::map<tokens, double>& all) {
  auto best = all.begin();
  for (auto it = all.begin(); it != all.end(); ++it)
    if (it->second > best->second) best = it;
  return *best;
}

bool has_repeated_parent(const std::vector<std::vector<std::uint32_t>>& calls) {
  for (const auto& parents : calls) {
    std::set<std::uint32_t> distinct(parents.begin(), parents.end());
    if (distinct.size() < parents.size()) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("a beam wide enough to keep everything returns every sequence, ranked exactly (zero search error)") {
  // V = 4, 4 new tokens, EOS 0: 3^3 * 4 + 13 = 121 complete sequences; 128 beams never prune, so
  // the search must return all of them with the enumerated scores, the exact best first.
  // "never" with any length penalty is an exact stopping rule (log-probs are <= 0).
  for (const double lp : {0.0, 1.0, 2.0, -0.5}) {
    for (const std::uint64_t seed : {1u, 2u, 3u}) {
      CAPTURE(lp);
      CAPTURE(seed);
      const itscale::hash_lm lm(4, seed);
      const tokens prompt{1, 2};
      itscale::beam_options o{.num_beams = 128, .length_penalty = lp,
                              .early_stopping = itscale::early_stopping_mode::never,
                              .stop = {.max_new_tokens = 4, .eos_token_id = {0}}};
      const auto all = all_sequences(lm, o, prompt);
      REQUIRE(all.size() == 121);
      o.num_return_sequences = all.size();
      itscale::hash_lm src(4, seed);
      const auto r = itscale::beam_search(src, std::span<const token_id>(prompt), o);
      REQUIRE(r.hypotheses(0).size() == all.size());
      std::set<tokens> returned;
      for (const auto& h : r.hypotheses(0)) {
        REQUIRE(all.count(h.tokens) == 1);
        CHECK(h.score == doctest::Approx(all.at(h.tokens)).epsilon(1e-5));
        double sum = 0;
        for (float x : h.logprobs) sum += x;
        CHECK(h.logprob_sum == doctest::Approx(sum).epsilon(1e-5));
        CHECK(h.logprobs.size() == h.tokens.size());
        CHECK(h.stop == (h.tokens.back() == 0 ? itscale::stop_reason::eos : itscale::stop_reason::max_new_tokens));
        returned.insert(h.tokens);
      }
      CHECK(returned.size() == all.size());
      CHECK(r.hypotheses(0).front().tokens == best_of(all).first);
      for (std::size_t i = 1; i < r.size(); ++i) CHECK(r[i - 1].score >= r[i].score);
      CHECK(src.live_handles() == 0);
    }
  }
}

TEST_CASE("beam search error: a moderate beam finds the exact best sequence; a narrow one sometimes does not") {
  // V = 6, 5 new tokens, two EOS ids: thousands of sequences, enumerated exactly.
  std::size_t narrow_misses = 0;
  for (std::uint64_t seed = 1; seed <= 12; ++seed) {
    CAPTURE(seed);
    const tokens prompt{3};
    itscale::beam_options o{.num_beams = 64, .length_penalty = 1.0,
                            .early_stopping = itscale::early_stopping_mode::never,
                            .stop = {.max_new_tokens = 5, .eos_token_id = {0, 1}}};
    const itscale::hash_lm lm(6, seed);
    const auto [best, best_score] = best_of(all_sequences(lm, o, prompt));
    itscale::hash_lm src(6, seed);
    const auto wide = itscale::beam_search(src, std::span<const token_id>(prompt), o);
    CHECK(wide.hypotheses(0).front().tokens == best);
    CHECK(wide.hypotheses(0).front().score == doctest::Approx(best_score).epsilon(1e-5));
    o.num_beams = 1;
    const auto narrow = itscale::beam_search(src, std::span<const token_id>(prompt), o);
    CHECK(narrow.hypotheses(0).front().score <= best_score + 1e-5);
    narrow_misses += narrow.hypotheses(0).front().tokens != best;
  }
  CHECK(narrow_misses > 0);  // otherwise this test could not tell a search from a lucky greedy pass
}

TEST_CASE("beam search processors act on log-probs as in HF: exhaustive search equals enumeration under them") {
  struct setup {
    float repetition_penalty;
    std::size_t no_repeat_ngram_size, min_new_tokens;
  };
  for (const setup& p : {setup{1.5f, 0, 0}, setup{1.0f, 2, 0}, setup{1.0f, 0, 2}, setup{2.0f, 2, 1}}) {
    CAPTURE(p.repetition_penalty);
    CAPTURE(p.no_repeat_ngram_size);
    CAPTURE(p.min_new_tokens);
    const tokens prompt{1, 2, 1};
    itscale::beam_options o{.num_beams = 128, .length_penalty = 1.0,
                            .early_stopping = itscale::early_stopping_mode::never,
                            .stop = {.max_new_tokens = 4, .min_new_tokens = p.min_new_tokens, .eos_token_id = {0}},
                            .no_repeat_ngram_size = p.no_repeat_ngram_size, .repetition_penalty = p.repetition_penalty};
    const itscale::hash_lm lm(4, 7);
    const auto all = all_sequences(lm, o, prompt);
    REQUIRE(all.size() <= 128);
    o.num_return_sequences = all.size();
    itscale::hash_lm src(4, 7);
    const auto r = itscale::beam_search(src, std::span<const token_id>(prompt), o);
    REQUIRE(r.hypotheses(0).size() == all.size());
    for (const auto& h : r.hypotheses(0)) {
      REQUIRE(all.count(h.tokens) == 1);
      CHECK(h.score == doctest::Approx(all.at(h.tokens)).epsilon(1e-5));
      CHECK(h.tokens.size() >= std::min<std::size_t>(p.min_new_tokens + 1, o.stop.max_new_tokens));
    }
    CHECK(r.hypotheses(0).front().tokens == best_of(all).first);
  }
}

TEST_CASE("beam search: several prompts in one search equal searching each alone") {
  // Different prompt lengths and stopping times, so prompts leave the batch at different steps.
  const std::vector<tokens> prompts{{4, 5, 6}, {7}, {10, 11, 12, 13, 14}, {4, 5, 6}};
  for (const auto mode : {itscale::early_stopping_mode::heuristic, itscale::early_stopping_mode::when_full,
                          itscale::early_stopping_mode::never}) {
    const itscale::beam_options o{.num_beams = 5, .length_penalty = 0.7, .early_stopping = mode,
                                  .num_return_sequences = 3, .stop = {.max_new_tokens = 12, .eos_token_id = {0, 3}},
                                  .record_trace = true};
    itscale::hash_lm lm(60, 41);
    const auto together = itscale::beam_search(lm, prompts, o);
    REQUIRE(together.prompts.size() == prompts.size());
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      const auto alone = itscale::beam_search(lm, std::span<const token_id>(prompts[p]), o);
      REQUIRE(alone.hypotheses(0).size() == together.hypotheses(p).size());
      CHECK(alone.prompts[0].steps == together.prompts[p].steps);
      CHECK(alone.prompts[0].trace.size() == together.prompts[p].trace.size());
      for (std::size_t j = 0; j < alone.hypotheses(0).size(); ++j) {
        CHECK(alone.hypotheses(0)[j].tokens == together.hypotheses(p)[j].tokens);
        CHECK(alone.hypotheses(0)[j].score == together.hypotheses(p)[j].score);  // bit-identical
        CHECK(alone.hypotheses(0)[j].logprobs == together.hypotheses(p)[j].logprobs);
      }
    }
    CHECK(lm.live_handles() == 0);
  }
}

// A processor that changes nothing but is not the archetype: the search cannot know that, so it
// writes every log-prob row before the processors instead of selecting on the shifted logits.
struct opaque_identity {
  void apply(std::span<float>, const itscale::step_context&) const noexcept {}
};

TEST_CASE("beam search: selection on the shifted logits equals selection on written log-probs, bit for bit") {
  // The masking processors (no-repeat-n-gram, min-new-tokens) act on the shifted row on the first
  // path, on the log-probs on the second; vocabularies wide enough for the SIMD main loops.
  const std::vector<tokens> prompts{{4, 5, 6}, {7}, {10, 11, 12, 13, 14}};
  for (const std::size_t vocab : {std::size_t{37}, std::size_t{1000}, std::size_t{4099}})
    for (const std::size_t k : {1u, 4u, 8u}) {
      CAPTURE(vocab);
      CAPTURE(k);
      const itscale::beam_options o{.num_beams = k, .length_penalty = 0.7, .num_return_sequences = k,
                                    .stop = {.max_new_tokens = 10, .min_new_tokens = 3, .eos_token_id = {0, 3}},
                                    .no_repeat_ngram_size = 2, .record_trace = true};
      itscale::hash_lm lm(vocab, 23);
      const std::vector<std::span<const token_id>> spans(prompts.begin(), prompts.end());
      const auto fused = itscale::beam_search(lm, spans, o);
      const auto written = itscale::beam_search(lm, spans, o, opaque_identity{});
      itscale_test::check_same_search(fused, written);
      for (std::size_t p = 0; p < fused.prompts.size(); ++p) CHECK(fused.prompts[p].steps == written.prompts[p].steps);
      CHECK(lm.live_handles() == 0);
    }
}

TEST_CASE("beam search: the trace lists each step's candidates best first, with what became of them") {
  itscale::hash_lm lm(30, 5);
  const tokens prompt{2, 3};
  const itscale::beam_options o{.num_beams = 4, .num_return_sequences = 4,
                                .stop = {.max_new_tokens = 8, .eos_token_id = {0, 1}}, .record_trace = true};
  const auto r = itscale::beam_search(lm, std::span<const token_id>(prompt), o);
  REQUIRE(r.prompts[0].trace.size() == r.prompts[0].steps);
  for (const auto& st : r.prompts[0].trace) {
    CHECK(st.candidates.size() == 12);  // max(2, 1 + 2 EOS ids) * 4
    std::size_t running = 0;
    for (std::size_t i = 0; i < st.candidates.size(); ++i) {
      const auto& c = st.candidates[i];
      if (i > 0) CHECK(st.candidates[i - 1].score >= c.score);
      CHECK(c.beam < st.running_beams);
      running += c.kept_running;
      CHECK_FALSE((c.kept_running && c.finishes));
      CHECK_FALSE((c.kept_finished && (!c.finishes || i >= 4)));  // only the first K ranks may finish
    }
    CHECK(running <= 4);
  }
  CHECK(itscale::beam_search(lm, std::span<const token_id>(prompt), {.stop = {.max_new_tokens = 8}})
            .prompts[0].trace.empty());
}

TEST_CASE("beam search: patience > 1 never returns a worse best hypothesis, and sometimes a better one") {
  std::size_t better = 0;
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    CAPTURE(seed);
    const tokens prompt{5, 6};
    itscale::beam_options o{.num_beams = 3, .length_penalty = 1.0,
                            .early_stopping = itscale::early_stopping_mode::when_full,
                            .stop = {.max_new_tokens = 12, .eos_token_id = {0, 1, 2}}};
    itscale::hash_lm lm(20, seed);
    const auto base = itscale::beam_search(lm, std::span<const token_id>(prompt), o);
    o.patience = 3.0;
    const auto patient = itscale::beam_search(lm, std::span<const token_id>(prompt), o);
    CHECK(patient.hypotheses(0).front().score >= base.hypotheses(0).front().score);
    CHECK(patient.prompts[0].steps >= base.prompts[0].steps);
    better += patient.hypotheses(0).front().score > base.hypotheses(0).front().score;
  }
  CHECK(better > 0);
}

TEST_CASE("beams fork through repeated parents; at most 2K live handles per prompt; none left at the end") {
  const std::vector<tokens> prompts{{1, 2}, {3}, {4, 5, 6}};
  const std::size_t k = 6;
  test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(40, 9));
  const itscale::beam_options o{.num_beams = k, .num_return_sequences = 2,
                                .stop = {.max_new_tokens = 10, .eos_token_id = {0}}};
  const auto r = itscale::beam_search(src, prompts, o);
  REQUIRE(r.prompts.size() == 3);
  CHECK(src.prefills == 3);
  std::size_t longest = 0;
  for (const auto& x : r.prompts) longest = std::max(longest, x.steps);
  CHECK(src.extends == longest - 1);  // one batched extend per step; the last step needs no logits
  CHECK(has_repeated_parent(src.extend_parents));
  CHECK(src.peak_live <= static_cast<std::ptrdiff_t>(prompts.size() * 2 * k));
  CHECK(src.live == 0);
}

namespace {

// Records, at each extend, how many handles are live and how many distinct parents it forks.
struct extend_census {
  using handle = itscale::hash_lm::handle;
  itscale::hash_lm lm;
  std::vector<std::pair<std::size_t, std::size_t>> at_extend;  // (live, distinct parents)

  [[nodiscard]] std::size_t vocab_size() const { return lm.vocab_size(); }
  handle prefill(std::span<const token_id> p) { return lm.prefill(p); }
  void extend(std::span<const handle> parents, std::span<const token_id> t, std::span<handle> children) {
    at_extend.emplace_back(lm.live_handles(), std::set<handle>(parents.begin(), parents.end()).size());
    lm.extend(parents, t, children);
  }
  [[nodiscard]] itscale::logits_view logits() { return lm.logits(); }
  void release(handle h) noexcept { lm.release(h); }
};

}  // namespace

TEST_CASE("dead beams are released before the extend: only the parents it forks are live then") {
  const std::vector<tokens> prompts{{1, 2}, {3}, {4, 5, 6}};
  extend_census src{itscale::hash_lm(40, 9), {}};
  (void)itscale::beam_search(src, prompts, {.num_beams = 6, .stop = {.max_new_tokens = 10, .eos_token_id = {0}}});
  REQUIRE(!src.at_extend.empty());
  for (const auto& [live, parents] : src.at_extend) CHECK(live == parents);
  CHECK(src.lm.live_handles() == 0);
}

TEST_CASE("beam search: a backend that throws at any call: the exception propagates and every handle is released") {
  const std::vector<tokens> prompts{{1, 2}, {3}};
  const itscale::beam_options o{.num_beams = 4, .num_return_sequences = 2,
                                .stop = {.max_new_tokens = 9, .eos_token_id = {0}}};
  test_support::instrumented_source<itscale::hash_lm> probe(itscale::hash_lm(25, 3));
  (void)itscale::beam_search(probe, prompts, o);
  const std::size_t calls = probe.prefills + probe.extends;
  REQUIRE(calls > 3);
  for (std::size_t fail_at = 0; fail_at < calls; ++fail_at) {
    CAPTURE(fail_at);
    test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(25, 3));
    src.throw_on_call = fail_at;
    CHECK_THROWS_WITH((void)itscale::beam_search(src, prompts, o), "instrumented_source: injected backend failure");
    CHECK(src.live == 0);
  }
}

TEST_CASE("beam search: bad backend output (NaN, +inf, a wholly masked row) is an error and leaks nothing") {
  const tokens prompt{1, 2};
  const itscale::beam_options o{.num_beams = 3, .stop = {.max_new_tokens = 6}};
  for (const float bad : {NAN, INFINITY}) {
    for (std::size_t call = 0; call < 4; ++call) {
      test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(20, 1));
      src.corrupt_on_call = call;
      src.corrupt_value = bad;
      src.corrupt_token = 7;
      CHECK_THROWS_AS((void)itscale::beam_search(src, std::span<const token_id>(prompt), o), itscale::backend_error);
      CHECK(src.live == 0);
    }
  }
  // A source that masks everything: a search_error, not NaN scores.
  auto dead = itscale::from_function(5, [](std::span<const token_id>, std::span<float> row) {
    std::fill(row.begin(), row.end(), itscale::masked_logit);
  });
  CHECK_THROWS_AS((void)itscale::beam_search(dead, std::span<const token_id>(prompt), o), itscale::search_error);
}

TEST_CASE("beam search: a user processor runs on log-probs after the built-in ones; a throwing one leaks nothing") {
  const tokens prompt{1, 2};
  const itscale::beam_options o{.num_beams = 4, .num_return_sequences = 4,
                                .stop = {.max_new_tokens = 8, .eos_token_id = {0}}};
  struct ban_odd {
    void apply(std::span<float> row, const itscale::step_context&) const {
      for (std::size_t t = 1; t < row.size(); t += 2) row[t] = itscale::masked_logit;
    }
  };
  test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(30, 4));
  const std::span<const token_id> one(prompt);
  const auto r = itscale::beam_search(src, std::span<const std::span<const token_id>>(&one, 1), o, ban_odd{});
  for (const auto& h : r.hypotheses(0))
    for (token_id t : h.tokens) CHECK(t % 2 == 0);
  CHECK(src.live == 0);

  // A stateful processor forks with its beam: its state counts the beam's own generated tokens.
  struct cap_length {
    using state_type = std::size_t;
    state_type start(std::span<const token_id>) const { return 0; }
    void advance(state_type& n, token_id) const { ++n; }
    void apply(std::span<float> row, const itscale::step_context& ctx, const state_type& n) const {
      if (n != ctx.generated()) throw std::logic_error("state not forked with its beam");
      if (n == 3)  // force an EOS as the fourth token
        for (std::size_t t = 1; t < row.size(); ++t) row[t] = itscale::masked_logit;
    }
  };
  const auto capped = itscale::beam_search(src, std::span<const std::span<const token_id>>(&one, 1), o, cap_length{});
  for (const auto& h : capped.hypotheses(0)) CHECK(h.tokens.size() <= 4);
  CHECK(src.live == 0);

  struct thrower {
    void apply(std::span<float>, const itscale::step_context& ctx) const {
      if (ctx.generated() == 2) throw std::runtime_error("processor failed");
    }
  };
  CHECK_THROWS_WITH((void)itscale::beam_search(src, std::span<const std::span<const token_id>>(&one, 1), o, thrower{}),
                    "processor failed");
  CHECK(src.live == 0);
}

TEST_CASE("more beams than the vocabulary holds: HF's placeholder beams, no crash, no leak") {
  itscale::hash_lm lm(3, 2);
  const tokens prompt{1};
  const auto r = itscale::beam_search(lm, std::span<const token_id>(prompt),
                                      {.num_beams = 8, .num_return_sequences = 8,
                                       .stop = {.max_new_tokens = 3, .eos_token_id = {0}}});
  CHECK(r.hypotheses(0).size() == 8);
  CHECK(r.hypotheses(0).front().score > -100.0f);  // the best are real sequences, not placeholders
  CHECK(lm.live_handles() == 0);
}

TEST_CASE("beam search: bad options and input each throw a message naming the problem, before the source is touched") {
  test_support::instrumented_source<itscale::hash_lm> src(itscale::hash_lm(10, 1));
  const tokens prompt{1, 2};
  const std::span<const token_id> p(prompt);
  auto msg = [&](const itscale::beam_options& o) {
    return what_of([&] { (void)itscale::beam_search(src, p, o); });
  };
  auto throws_option = [&](const itscale::beam_options& o, const std::string& name) {
    CAPTURE(name);
    CHECK_THROWS_AS((void)itscale::beam_search(src, p, o), itscale::invalid_option);
    CHECK(msg(o).find(name) != std::string::npos);
  };
  throws_option({.num_beams = 0}, "num_beams");
  throws_option({.num_beams = 2, .num_return_sequences = 3}, "num_return_sequences");
  throws_option({.num_return_sequences = 0}, "num_return_sequences");
  throws_option({.stop = {.max_new_tokens = 0}}, "max_new_tokens");
  throws_option({.stop = {.max_new_tokens = 0, .min_new_tokens = 2, .eos_token_id = {0}}}, "max_new_tokens");
  throws_option({.stop = {.max_new_tokens = 3, .min_new_tokens = 4, .eos_token_id = {0}}}, "min_new_tokens");
  throws_option({.stop = {.min_new_tokens = 2}}, "min_new_tokens");
  throws_option({.stop = {.eos_token_id = {-1}}}, "eos_token_id");
  throws_option({.stop = {.eos_token_id = {10}}}, "eos_token_id");
  throws_option({.repetition_penalty = 0.0f}, "repetition_penalty");
  throws_option({.repetition_penalty = NAN}, "repetition_penalty");
  throws_option({.length_penalty = INFINITY}, "length_penalty");
  throws_option({.patience = 0.0}, "patience");
  throws_option({.patience = -1.0}, "patience");
  throws_option({.patience = NAN}, "patience");
  throws_option({.num_beams = 4, .num_return_sequences = 4, .patience = 0.5}, "patience");
  throws_option({.early_stopping = static_cast<itscale::early_stopping_mode>(7)}, "early_stopping");
  // Findings c and d (tests/fuzz/README.md): a huge patience overflowed the conversion of
  // round(num_beams * patience) to size_t (or asked for that many hypotheses); a huge
  // length_penalty made L^length_penalty overflow float, so every finished score was ±0 or ±inf.
  throws_option({.patience = 1e300}, "round(num_beams * patience) must be <= 1048576");
  throws_option({.num_beams = 2, .patience = 524288.5}, "round(num_beams * patience) must be <= 1048576");
  throws_option({.length_penalty = 1e6}, "|length_penalty| * ln(max_new_tokens) must be <= 80");
  throws_option({.length_penalty = -30.0, .stop = {.max_new_tokens = 20}}, "|length_penalty| * ln(max_new_tokens)");

  const tokens empty;
  CHECK_THROWS_AS((void)itscale::beam_search(src, std::span<const token_id>(empty), {}), itscale::invalid_input);
  const tokens outside{1, 10};
  CHECK(what_of([&] { (void)itscale::beam_search(src, std::span<const token_id>(outside), {}); }).find("prompt") !=
        std::string::npos);
  CHECK_THROWS_AS((void)itscale::beam_search(src, std::vector<tokens>{}, {}), itscale::invalid_input);
  CHECK(src.calls == 0);
  CHECK(src.live == 0);
}

// Compile-time checks, nothing to run: beam_search uses nothing beyond the concepts. The concept
// checks that every overload resolves with the archetypes; it sees only declarations (the return
// types are not deduced), so the explicit instantiations compile beam_search's body with them.
namespace {
template <class S, class P>
concept beam_search_accepts = requires(S& s, std::span<const token_id> prompt, const std::vector<tokens>& prompts,
                                       std::span<const std::span<const token_id>> spans,
                                       std::span<const itscale::live_request<S>> live, const itscale::prefilled<S>& start,
                                       const itscale::beam_options& o, const P& user, const itscale::run_options& run) {
  { itscale::beam_search(s, prompt, o) } -> std::same_as<itscale::beam_search_result>;
  { itscale::beam_search(s, prompts, o) } -> std::same_as<itscale::beam_search_result>;
  { itscale::beam_search(s, spans, o, run) } -> std::same_as<itscale::beam_search_result>;
  { itscale::beam_search(s, spans, o, user, run) } -> std::same_as<itscale::beam_search_result>;
  { itscale::beam_search(s, live, o, user, run) } -> std::same_as<itscale::beam_search_result>;
  { itscale::beam_search(s, start, o) } -> std::same_as<itscale::beam_search_result>;
};
}  // namespace
static_assert(beam_search_accepts<itscale::logit_source_archetype, itscale::logits_processor_archetype>);
static_assert(beam_search_accepts<itscale::logit_source_archetype, itscale::stateful_logits_processor_archetype>);
template itscale::beam_search_result itscale::beam_search(
    itscale::logit_source_archetype&, std::span<const std::span<const token_id>>, const itscale::beam_options&,
    const itscale::logits_processor_archetype&, const itscale::run_options&);
template itscale::beam_search_result itscale::beam_search(
    itscale::logit_source_archetype&, std::span<const std::span<const token_id>>, const itscale::beam_options&,
    const itscale::stateful_logits_processor_archetype&, const itscale::run_options&);

TEST_CASE("beam search: early_stopping never with a positive length penalty searches at least as long as the "
          "heuristic") {
  // Same running beams, a looser stopping bound: never a worse best hypothesis, sometimes better.
  std::size_t better = 0;
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    CAPTURE(seed);
    const tokens prompt{5, 6};
    itscale::beam_options o{.num_beams = 2, .length_penalty = 2.0,
                            .early_stopping = itscale::early_stopping_mode::heuristic,
                            .stop = {.max_new_tokens = 12, .eos_token_id = {0, 1}}};
    itscale::hash_lm lm(10, seed);
    const auto heuristic = itscale::beam_search(lm, std::span<const token_id>(prompt), o);
    o.early_stopping = itscale::early_stopping_mode::never;
    const auto never = itscale::beam_search(lm, std::span<const token_id>(prompt), o);
    CHECK(never.hypotheses(0).front().score >= heuristic.hypotheses(0).front().score);
    CHECK(never.prompts[0].steps >= heuristic.prompts[0].steps);
    better += never.hypotheses(0).front().score > heuristic.hypotheses(0).front().score;
  }
  CHECK(better > 0);
}

TEST_CASE("patience and length_penalty at their caps are accepted (findings c and d)") {
  itscale::hash_lm lm(10, 4);
  const tokens prompt{1, 2};
  const std::span<const token_id> p(prompt);
  // 2 * 524288 = 2^20 finished hypotheses is the cap itself: valid (validation only; not run).
  CHECK_NOTHROW(itscale::beam_options{.num_beams = 2, .patience = 524288.0}.validate());
  CHECK(itscale::beam_options{.num_beams = 2, .patience = 1e300}.finished_capacity() ==
        itscale::max_finished_hypotheses + 1);
  // ln(1) = 0: with one new token any finite length_penalty is fine.
  CHECK_NOTHROW((void)itscale::beam_search(lm, p, {.length_penalty = 1e6, .stop = {.max_new_tokens = 1}}));
  // 26 * ln 20 = 77.9 <= 80: runs, and every returned score is finite.
  const auto r = itscale::beam_search(lm, p, {.length_penalty = 26.0, .stop = {.max_new_tokens = 20}});
  for (const auto& h : r.sequences) CHECK(std::isfinite(h.score));
}
