// The library's searches end to end over llama.cpp (arith-1750 as GGUF) against the same searches
// over the Eigen backend (arith-1750.bin, the same weights), with the calculator verifier of the
// chain-arithmetic task; and searches that throw give every sequence id back.

#include <doctest/doctest.h>

#include <cstdio>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <itscale/backends/llama2c_model.hpp>
#include <itscale/backends/llama2c_tokenizer.hpp>
#include <itscale/backends/llama_cpp_source.hpp>
#include <itscale/decode/generate.hpp>
#include <itscale/search/beam_search.hpp>
#include <itscale/select/self_consistency.hpp>
#include <itscale/steps/sampling_proposer.hpp>
#include <itscale/steps/step_beam_search.hpp>
#include <itscale/tree/mcts.hpp>

#include "arith/arith_task.hpp"
#include "support.hpp"

using namespace llama_cpp_test;
using itscale::llama_cpp_source;
using H = llama_cpp_source::handle;

namespace {

struct arith_pair {
  itscale::llama2c_tokenizer tok = itscale::llama2c_tokenizer::load(model_file("arith-tok.bin"));
  itscale::llama2c_model eigen = itscale::llama2c_model::load(model_file("arith-1750.bin"));
  llama_cpp_source llama{gguf("arith-1750.gguf")};
  arith::calculator_verifier calc{tok};
  token_id semi = tok.lookup(";");

  itscale::sampling_proposer_options proposer(std::uint64_t seed) const {
    return {.sampling = {.do_sample = true, .seed = seed, .temperature = 0.7f},
            .delimiters = {{semi}},
            .eos_token_id = {itscale::llama2c_tokenizer::eos},
            .max_step_tokens = 24,
            .max_sequence_tokens = 128};
  }
  std::optional<long> answer(std::span<const token_id> t) const { return arith::extract_answer(calc.text(t)); }
};

/// Counts agreements of the two backends and the problems each solved.
struct agreement {
  std::size_t same = 0, total = 0, solved_llama = 0, solved_eigen = 0;
  void add(bool equal, bool llama_ok, bool eigen_ok) {
    ++total;
    same += equal ? 1u : 0u;
    solved_llama += llama_ok ? 1u : 0u;
    solved_eigen += eigen_ok ? 1u : 0u;
  }
  std::string str() const {
    return std::to_string(same) + "/" + std::to_string(total) + " identical; solved llama.cpp " +
           std::to_string(solved_llama) + ", Eigen " + std::to_string(solved_eigen);
  }
};

}  // namespace

TEST_CASE("[searches] sampling, self-consistency, step beam search and MCTS over llama.cpp = over the Eigen backend") {
  arith_pair s;
  REQUIRE(s.semi > 0);
  const auto problems = arith::make_problems(2024, 8, 2, 5);
  agreement sampled, voted, stepped, tree;
  for (std::size_t i = 0; i < problems.size(); ++i) {
    const auto& p = problems[i];
    CAPTURE(p.prompt());
    const auto prompt = arith::encode_prompt(s.tok, p.prompt());
    const std::span<const token_id> ps(prompt);
    const auto right = [&](std::span<const token_id> t) { return s.answer(t) == p.answer(); };

    // Sampling: 8 seeded samples at T = 0.7 (the same random stream on both backends).
    const itscale::sampling_options so{.stop = {.max_new_tokens = 90, .eos_token_id = {2}},
                                       .do_sample = true, .seed = 11 + i, .num_return_sequences = 8,
                                       .temperature = 0.7f};
    const auto gl = itscale::generate(s.llama, ps, so);
    const auto ge = itscale::generate(s.eigen, ps, so);
    REQUIRE(gl.size() == 8);
    for (std::size_t k = 0; k < 8; ++k) sampled.add(gl[k].tokens == ge[k].tokens, right(gl[k].tokens), right(ge[k].tokens));
    CHECK(all_released(s.llama));

    // Self-consistency: 8 samples, majority vote.
    const itscale::self_consistency_options co{.samples = 8,
                                               .sampling = {.stop = {.max_new_tokens = 90, .eos_token_id = {2}},
                                                            .do_sample = true, .seed = 23 + i, .temperature = 0.7f}};
    const auto extract = [&](std::span<const token_id> t) { return s.answer(t); };
    const auto cl = itscale::self_consistency(s.llama, ps, extract, co);
    const auto ce = itscale::self_consistency(s.eigen, ps, extract, co);
    voted.add(cl[0].vote.answer == ce[0].vote.answer, cl[0].vote.answer == p.answer(), ce[0].vote.answer == p.answer());
    CHECK(all_released(s.llama));

    // Step beam search with the calculator: N = 8 candidates, 4 expansions each, steps until ';'.
    const itscale::step_beam_options bo{.num_candidates = 8, .expansions = 4, .max_steps = 10, .stop_at_score = 1};
    itscale::sampling_proposer pl(s.llama, s.proposer(7 + i));
    itscale::sampling_proposer pe(s.eigen, s.proposer(7 + i));
    const auto bl = itscale::step_beam_search(pl, s.calc, prompt, bo);
    const auto be = itscale::step_beam_search(pe, s.calc, prompt, bo);
    REQUIRE(!bl.empty());
    REQUIRE(!be.empty());
    stepped.add(bl[0].tokens == be[0].tokens, right(bl[0].tokens), right(be[0].tokens));
    CHECK(all_released(s.llama));

    // MCTS (PUCT with the model's step priors, the calculator as value), 32 simulations.
    const itscale::mcts_options mo{.simulations = 32, .leaves_per_round = 4, .samples_per_expansion = 4};
    itscale::sampling_proposer ml(s.llama, s.proposer(31 + i));
    itscale::sampling_proposer me(s.eigen, s.proposer(31 + i));
    const auto tl = itscale::mcts_search(ml, s.calc, prompt, mo);
    const auto te = itscale::mcts_search(me, s.calc, prompt, mo);
    REQUIRE(!tl.sequences.empty());
    REQUIRE(!te.sequences.empty());
    tree.add(tl.sequences[0].tokens == te.sequences[0].tokens, right(tl.sequences[0].tokens), right(te.sequences[0].tokens));
    CHECK(all_released(s.llama));
  }
  MESSAGE("arith-1750, 8 problems, llama.cpp vs Eigen backend -- samples (8 each): " << sampled.str()
          << " | self-consistency@8: " << voted.str() << " | step beam N=8 M=4: " << stepped.str()
          << " | MCTS 32 sims: " << tree.str());
  // Logits agree to ~5e-3, so a seeded sample or a search differs only where that flips a choice:
  // rare, never the rule.
  CHECK(sampled.same * 10 >= sampled.total * 9);
  CHECK(voted.same * 10 >= voted.total * 9);
  CHECK(stepped.same * 10 >= stepped.total * 8);
  CHECK(tree.same * 10 >= tree.total * 8);
  // And the searches do their job on llama.cpp: as many problems solved as on the Eigen backend,
  // give or take one.
  CHECK(stepped.solved_llama + 1 >= stepped.solved_eigen);
  CHECK(tree.solved_llama + 1 >= tree.solved_eigen);
  CHECK(s.eigen.live_handles() == 0);
}

TEST_CASE("[searches] a search that throws gives every sequence id back") {
  arith_pair s;
  const auto prompt = arith::encode_prompt(s.tok, "37+45-18+9=");
  const std::span<const token_id> ps(prompt);

  // A verifier that fails on its third call, inside step beam search.
  int calls = 0;
  auto failing = itscale::make_verifier("failing", {0, 1}, [&](std::span<const token_id>, std::span<const token_id>, bool) {
    if (++calls == 3) throw std::runtime_error("verifier down");
    return 0.5;
  });
  itscale::sampling_proposer prop(s.llama, s.proposer(1));
  CHECK_THROWS_WITH_AS((void)itscale::step_beam_search(prop, failing, prompt, {.num_candidates = 8, .expansions = 4, .max_steps = 10}),
                       "verifier down", std::runtime_error);
  CHECK(calls == 3);
  CHECK(all_released(s.llama));

  // Beam search wider than the context's sequence slots: llama.cpp's n_seq_max, mid-search.
  llama_cpp_source few(gguf("arith-1750.gguf"), {.n_seq_max = 6});
  CHECK_THROWS_AS((void)itscale::beam_search(few, ps, {.num_beams = 8, .stop = {.max_new_tokens = 20}}), itscale::backend_error);
  CHECK(all_released(few));

  // Sampling that outgrows the KV cache (256 cells for 16 diverging samples of up to 60 tokens):
  // llama_decode's "no KV slot", mid-search.
  llama_cpp_source small(gguf("arith-1750.gguf"), {.n_ctx = 256});
  const itscale::sampling_options so{.stop = {.max_new_tokens = 60}, .do_sample = true, .seed = 3,
                                     .num_return_sequences = 16, .temperature = 1.5f};
  CHECK_THROWS_AS((void)itscale::generate(small, ps, so), itscale::backend_error);
  CHECK(all_released(small));
  // The source still works afterwards.
  const auto g = itscale::generate(small, ps, {.stop = {.max_new_tokens = 30, .eos_token_id = {2}}});
  CHECK(s.calc.text(g[0].tokens) == "37+45=82;82-18=64;64+9=73;#73");
  CHECK(all_released(small));
}

TEST_CASE("[searches] with a handle budget, MCTS fits a context with a fixed number of sequence slots") {
  arith_pair s;
  const auto prompt = arith::encode_prompt(s.tok, "21+24+97-59-69+1=");
  // Progressive widening keeps nodes expandable, so they keep their handles (states).
  const itscale::mcts_options unbounded{.simulations = 64, .leaves_per_round = 2, .samples_per_expansion = 4,
                                        .widening = {.c = 2, .alpha = 0.5}};
  // How many sequence slots the unbounded search needs (64 slots are plenty here).
  itscale::sampling_proposer wide(s.llama, s.proposer(5));
  const auto r0 = itscale::mcts_search(wide, s.calc, prompt, unbounded);
  const std::size_t peak = r0.compute.peak_live_handles;
  // A bounded round holds its L kept states plus the proposer's samples: B = 2 leaves x 4 samples,
  // and for one extend both the old and the new 8 rows -- L + 16 slots.
  const std::size_t slots = 20;
  MESSAGE("MCTS, 64 simulations: peak " << peak << " live handles unbounded; llama.cpp context with n_seq_max = " << slots);
  REQUIRE(peak > slots);
  {
    llama_cpp_source few(gguf("arith-1750.gguf"), {.n_seq_max = slots});
    itscale::sampling_proposer p(few, s.proposer(5));
    CHECK_THROWS_AS((void)itscale::mcts_search(p, s.calc, prompt, unbounded), itscale::backend_error);
    CHECK(all_released(few));
    auto bounded = unbounded;
    bounded.max_live_handles = 4;
    const auto r = itscale::mcts_search(p, s.calc, prompt, bounded);
    CHECK(r.compute.peak_live_handles <= slots);
    CHECK(r.compute.reprefills > 0);  // cold nodes gave their slots back and were rebuilt
    REQUIRE(!r.sequences.empty());
    MESSAGE("with max_live_handles = 4: peak " << r.compute.peak_live_handles << ", " << r.compute.reprefills
                                               << " re-prefills; best answer " << s.calc.text(r.sequences[0].tokens)
                                               << " (unbounded: " << s.calc.text(r0.sequences[0].tokens) << ")");
    // 21+24+97-59-69+1 = 15, which greedy decoding gets wrong (tests/data/models/README.md).
    CHECK(s.answer(r.sequences[0].tokens) == 15);
    CHECK(s.answer(r0.sequences[0].tokens) == 15);
    CHECK(all_released(few));
  }
}
