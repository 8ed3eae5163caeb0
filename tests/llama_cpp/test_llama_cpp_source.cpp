// llama_cpp_source (itscale/backends/llama_cpp_source.hpp) against llama.cpp's own decoding and
// against the Eigen backend on the same weights (aidreams260K as GGUF and as llama2.c file):
// greedy, logits at every position, beam search, real forking in the KV cache, llama.cpp's limits
// as exceptions, and the concept suite. Case names start with their ctest group ("[greedy] ...").

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include <itscale/backends/llama2c_model.hpp>
#include <itscale/backends/llama_cpp_source.hpp>
#include <itscale/core/scoring.hpp>
#include <itscale/decode/generate.hpp>
#include <itscale/search/beam_search.hpp>
#include <itscale/testing/source_suite.hpp>

#include "support.hpp"

using namespace llama_cpp_test;
using itscale::llama_cpp_source;
using itscale::llama_cpp_source_options;
using H = llama_cpp_source::handle;

namespace {

/// llama.cpp's own greedy loop: a plain context (one sequence, llama.cpp's defaults), the prompt
/// decoded with llama_batch_get_one, then llama_sampler_init_greedy one token at a time.
std::vector<token_id> llama_cpp_greedy(const std::vector<token_id>& prompt, std::size_t n) {
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 256;
  cp.n_threads = cp.n_threads_batch = 1;
  llama_context* ctx = llama_init_from_model(gguf("aidreams260K.gguf").get(), cp);
  REQUIRE(ctx != nullptr);
  llama_sampler* smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
  llama_sampler_chain_add(smpl, llama_sampler_init_greedy());
  std::vector<llama_token> toks(prompt.begin(), prompt.end());
  std::vector<token_id> out;
  llama_batch b = llama_batch_get_one(toks.data(), static_cast<std::int32_t>(toks.size()));
  for (std::size_t i = 0; i < n; ++i) {
    REQUIRE(llama_decode(ctx, b) == 0);
    llama_token t = llama_sampler_sample(smpl, ctx, -1);
    out.push_back(t);
    toks.assign(1, t);
    b = llama_batch_get_one(toks.data(), 1);
  }
  llama_sampler_free(smpl);
  llama_free(ctx);
  return out;
}

/// Largest |a - b| over two rows.
float max_diff(std::span<const float> a, std::span<const float> b) {
  float m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

}  // namespace

TEST_CASE("[greedy] itscale's greedy decoding over llama.cpp (1 and 2 threads) = llama.cpp's own greedy sampler loop, 100 tokens") {
  for (const char* text : {"I dreamed", "Once upon a time", "The sky"}) {
    CAPTURE(text);
    const auto prompt = prompt_of(text);
    const auto want = llama_cpp_greedy(prompt, 100);
    // llama.cpp's worker threads split a product's rows, not its sums: 2 threads must give the
    // same tokens as llama.cpp's single-threaded loop.
    for (std::size_t threads : {1u, 2u}) {
      CAPTURE(threads);
      auto src = aidreams({.threads = threads});
      // No EOS: 100 tokens on both sides, whatever the model writes.
      const auto got = itscale::generate(src, std::span<const token_id>(prompt), {.stop = {.max_new_tokens = 100}});
      REQUIRE(got.size() == 1);
      CHECK(got[0].tokens == want);
      CHECK(all_released(src));
    }
  }
}

TEST_CASE("[logits] llama.cpp and the Eigen backend agree within 1e-2 at every position of a 100-token sequence") {
  auto eigen = aidreams_eigen();
  auto src = aidreams();
  // The sequence: BOS + "I dreamed" continued greedily by the Eigen backend, 100 tokens in all.
  const auto prompt = prompt_of("I dreamed");
  auto g = itscale::generate(eigen, std::span<const token_id>(prompt), {.stop = {.max_new_tokens = 100 - prompt.size()}});
  std::vector<token_id> seq = prompt;
  seq.insert(seq.end(), g[0].tokens.begin(), g[0].tokens.end());
  REQUIRE(seq.size() == 100);
  const std::span<const token_id> rest = std::span<const token_id>(seq).subspan(1);

  // Position 0 from prefill, positions 1..99 from one extend_span (teacher forcing), on both.
  float worst = 0;
  std::size_t worst_pos = 0;
  const auto compare = [&](std::size_t pos, std::span<const float> a, std::span<const float> b) {
    const float d = max_diff(a, b);
    if (d > worst) worst = d, worst_pos = pos;
  };
  const H lh = src.prefill(std::span<const token_id>(seq).first(1));
  const std::vector<float> l0(src.logits().row(0).begin(), src.logits().row(0).end());
  const auto eh = eigen.prefill(std::span<const token_id>(seq).first(1));
  compare(0, l0, eigen.logits().row(0));
  const auto eh2 = eigen.extend_span(eh, rest);
  const H lh2 = src.extend_span(lh, rest);
  REQUIRE(src.logits().rows == 99);
  REQUIRE(eigen.logits().rows == 99);
  for (std::size_t i = 0; i < 99; ++i) compare(i + 1, src.logits().row(i), eigen.logits().row(i));
  MESSAGE("llama.cpp vs Eigen, extend_span over 100 positions: largest |difference| " << worst << " at position "
                                                                                      << worst_pos);
  CHECK(worst <= 1e-2f);

  // The same positions one extend at a time (the decoding path), against the Eigen rows above.
  std::vector<std::vector<float>> eigen_rows;
  for (std::size_t i = 0; i < 99; ++i) eigen_rows.emplace_back(eigen.logits().row(i).begin(), eigen.logits().row(i).end());
  float worst_step = 0;
  H cur = lh;
  bool own = false;
  for (std::size_t i = 0; i < 99; ++i) {
    H next{};
    src.extend(std::span<const H>(&cur, 1), rest.subspan(i, 1), std::span<H>(&next, 1));
    if (own) src.release(cur);
    cur = next;
    own = true;
    worst_step = std::max(worst_step, max_diff(src.logits().row(0), eigen_rows[i]));
  }
  src.release(cur);
  MESSAGE("llama.cpp vs Eigen, 99 single-token extends: largest |difference| " << worst_step);
  CHECK(worst_step <= 1e-2f);
  src.release(lh);
  src.release(lh2);
  eigen.release(eh);
  eigen.release(eh2);
  CHECK(all_released(src));
}

TEST_CASE("[beam] beam search K=4 over llama.cpp returns the Eigen backend's hypotheses (near-ties reported)") {
  auto eigen = aidreams_eigen();
  auto src = aidreams();
  const itscale::beam_options opts{.num_beams = 4, .num_return_sequences = 4, .stop = {.max_new_tokens = 60, .eos_token_id = {2}}};
  std::size_t same = 0, flips = 0, total = 0;
  for (const char* text : {"I dreamed", "Once upon a time", "The sky", "My friend", "We went to"}) {
    CAPTURE(text);
    const auto prompt = prompt_of(text);
    const auto e = itscale::beam_search(eigen, std::span<const token_id>(prompt), opts);
    const auto l = itscale::beam_search(src, std::span<const token_id>(prompt), opts);
    REQUIRE(e.size() == 4);
    REQUIRE(l.size() == 4);
    CHECK(all_released(src));
    for (std::size_t i = 0; i < 4; ++i) {
      ++total;
      if (l[i].tokens == e[i].tokens) {
        ++same;
        CHECK(std::fabs(l[i].score - e[i].score) <= 1e-3f);
        continue;
      }
      // A flip is accepted only as a near-tie: the Eigen backend itself scores llama.cpp's
      // hypothesis within 1e-2 (the logit tolerance) per token of its own.
      const auto& lt = l[i].tokens;
      const auto& et = e[i].tokens;
      std::size_t pos = 0;
      while (pos < lt.size() && pos < et.size() && lt[pos] == et[pos]) ++pos;
      const auto h = eigen.prefill(prompt);
      const std::vector<float> row(eigen.logits().row(0).begin(), eigen.logits().row(0).end());
      const auto lp = itscale::sequence_logprobs(eigen, h, row, lt);
      eigen.release(h);
      double sum = 0;
      for (float x : lp) sum += x;
      const double eigen_score_of_llama = sum / static_cast<double>(lt.size());  // length_penalty 1
      const double margin = static_cast<double>(e[i].score) - eigen_score_of_llama;
      MESSAGE("near-tie flip: prompt '" << text << "' hypothesis " << i << " differs from generated position " << pos
                                        << "; Eigen scores its own " << e[i].score << " and llama.cpp's "
                                        << eigen_score_of_llama << " (margin " << margin << ")");
      ++flips;
      CHECK(std::fabs(margin) <= 1e-2);
    }
  }
  MESSAGE("beam search K=4, 5 prompts x 4 hypotheses: " << same << "/" << total << " identical, " << flips
                                                        << " near-tie flips");
  CHECK(eigen.live_handles() == 0);
}

TEST_CASE("[fork] K beams sharing a prompt hold its KV cells once") {
  // 256 cells (llama.cpp's minimum after rounding): one 100-token prompt fits, four copies of it
  // would not. Each of 4 beams still holds every prompt position (llama.cpp's own memory API).
  // (Positions past the model's 128-token training context are fine for the cache; the logits
  // there are not looked at.)
  auto src = aidreams({.n_seq_max = 16, .n_ctx = 256, .max_context = 256});
  REQUIRE(src.n_ctx() == 256);
  llama_memory_t mem = llama_get_memory(src.context());
  std::vector<token_id> prompt = prompt_of("I dreamed");
  while (prompt.size() < 100) prompt.push_back(static_cast<token_id>(300 + prompt.size()));
  const H p = src.prefill(prompt);
  std::vector<H> beams(4);
  src.extend(std::vector<H>{p, p, p, p}, std::vector<token_id>{400, 401, 402, 403}, beams);
  src.release(p);
  // 30 more steps, each beam extended by its own token (as beam search's running beams).
  for (int step = 0; step < 30; ++step) {
    std::vector<H> next(4);
    src.extend(beams, std::vector<token_id>{410, 411, 412, 413}, next);
    for (H b : beams) src.release(b);
    beams = next;
  }
  std::size_t held = 0;
  for (H b : beams) {
    CHECK(llama_memory_seq_pos_min(mem, b) == 0);
    CHECK(llama_memory_seq_pos_max(mem, b) == 130);
    held += static_cast<std::size_t>(llama_memory_seq_pos_max(mem, b) - llama_memory_seq_pos_min(mem, b) + 1);
  }
  MESSAGE("4 beams hold " << held << " positions in all (100-token shared prompt + 31 own each) in a KV cache of "
                          << src.n_ctx() << " cells");
  CHECK(held > src.n_ctx());  // impossible unless the prompt's cells are shared
  for (H b : beams) src.release(b);
  CHECK(all_released(src));

  // Without sharing it does not fit: three separate prefills of the prompt fill the cache, and
  // llama.cpp's "no KV slot" (llama_decode returning 1) is an exception naming n_ctx.
  std::vector<H> copies;
  bool full = false;
  for (int i = 0; i < 3 && !full; ++i) {
    try {
      copies.push_back(src.prefill(prompt));
    } catch (const itscale::backend_error& e) {
      full = true;
      const std::string what = e.what();
      CAPTURE(what);
      CHECK(what.find("KV cache is full") != std::string::npos);
      CHECK(what.find("n_ctx = 256") != std::string::npos);
      CHECK(what.find("raise llama_cpp_source_options::n_ctx") != std::string::npos);
    }
  }
  CHECK(full);
  CHECK(copies.size() == 2);
  CHECK(src.live_handles() == copies.size());  // the failed prefill left nothing behind
  for (H c : copies) src.release(c);
  CHECK(all_released(src));
}

TEST_CASE("[limits] sequence ids, context length and bad arguments are exceptions that leave nothing behind") {
  auto src = aidreams({.n_seq_max = 4});
  CHECK(src.capacity().max_live_sequences == 4);
  CHECK(src.capacity().max_context == 128);  // aidreams260K's training context
  const auto prompt = prompt_of("I dreamed");
  const H p = src.prefill(prompt);
  std::vector<H> kids(3);
  src.extend(std::vector<H>{p, p, p}, std::vector<token_id>{5, 6, 7}, kids);
  // All 4 ids in use: one more is backend_error naming n_seq_max and how to raise it.
  try {
    (void)src.prefill(prompt);
    FAIL("prefill past n_seq_max did not throw");
  } catch (const itscale::backend_error& e) {
    const std::string what = e.what();
    CAPTURE(what);
    CHECK(what.find("out of sequence ids") != std::string::npos);
    CHECK(what.find("n_seq_max = 4") != std::string::npos);
    CHECK(what.find("raise llama_cpp_source_options::n_seq_max") != std::string::npos);
  }
  src.release(kids[2]);
  std::vector<H> two(2);
  CHECK_THROWS_AS(src.extend(std::vector<H>{p, p}, std::vector<token_id>{5, 6}, two), itscale::backend_error);
  CHECK(src.live_handles() == 3);
  for (H h : {kids[0], kids[1]}) src.release(h);
  // Context: a sequence of max_context tokens is fine, one more is invalid_input naming the limit.
  std::vector<token_id> full(128, 5);
  const H f = src.prefill(full);
  H kid{};
  try {
    src.extend(std::span<const H>(&f, 1), std::vector<token_id>{6}, std::span<H>(&kid, 1));
    FAIL("extend past max_context did not throw");
  } catch (const itscale::invalid_input& e) {
    const std::string what = e.what();
    CAPTURE(what);
    CHECK(what.find("max_context") != std::string::npos);
  }
  CHECK_THROWS_AS((void)src.extend_span(p, std::vector<token_id>(128, 5)), itscale::invalid_input);
  // Dead handles and bad options.
  src.release(f);
  CHECK_THROWS_AS(src.extend(std::span<const H>(&f, 1), std::vector<token_id>{6}, std::span<H>(&kid, 1)),
                  itscale::invalid_input);
  CHECK_THROWS_AS((void)src.extend_span(-1, std::vector<token_id>{6}), itscale::invalid_input);
  src.release(p);
  src.release(p);  // twice: ignored
  CHECK(all_released(src));
  CHECK_THROWS_AS((void)aidreams({.n_seq_max = 0}), itscale::invalid_option);
  CHECK_THROWS_AS((void)aidreams({.n_seq_max = 257}), itscale::invalid_option);
  CHECK_THROWS_AS((void)aidreams({.n_ctx = 256, .max_context = 512}), itscale::invalid_option);
  CHECK_THROWS_AS((void)aidreams({.threads = 0}), itscale::invalid_option);
  CHECK_THROWS_AS((void)llama_cpp_source(nullptr), itscale::invalid_input);
  CHECK_THROWS_AS((void)itscale::load_llama_cpp_model("/nonexistent/model.gguf"), itscale::format_error);
  CHECK_THROWS_AS((void)itscale::load_llama_cpp_model(model_file("aidreams260K.bin")), itscale::format_error);
}

TEST_CASE("[suite] llama_cpp_source passes the concept suite") {
  // Rows differ from a fresh prefill by batch rounding only (llama.cpp's kernels split work by
  // batch size); the suite's own limits (n_seq_max 64, max_context 128) are exercised fully.
  itscale::testing::check_logit_source([] { return aidreams(); }, {.tolerance = 5e-3f});
}
