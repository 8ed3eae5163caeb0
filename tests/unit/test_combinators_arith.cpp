// The combinators on the real chain-arithmetic checkpoints (tests/data/models/README.md): the
// concept suite with llama2c members, and the identities that must hold on any model (an
// ensemble of a model with itself, contrastive decoding at alpha 0, guidance at gamma 1 decode
// greedily as the model alone). What contrastive decoding and the ensemble do to accuracy is
// measured by bench/combinators.cpp; here the figures on the README's sample problems are only
// printed, never asserted.

#include <doctest/doctest.h>

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <itscale/backends/cfg_source.hpp>
#include <itscale/backends/contrastive_source.hpp>
#include <itscale/backends/ensemble_source.hpp>
#include <itscale/backends/llama2c_checkpoint.hpp>
#include <itscale/backends/llama2c_model.hpp>
#include <itscale/backends/llama2c_tokenizer.hpp>
#include <itscale/decode/generate.hpp>

#include <itscale/testing/source_suite.hpp>

using itscale::token_id;
namespace fs = std::filesystem;

namespace {

const fs::path models_dir = fs::path(ITSCALE_DATA_DIR) / "models";

std::shared_ptr<const itscale::llama2c_weights> weights(const char* name) {
  const fs::path f = models_dir / name;
  REQUIRE_MESSAGE(fs::exists(f), f.string() << " not found (ITSCALE_DATA_DIR = " << ITSCALE_DATA_DIR << ")");
  return std::make_shared<const itscale::llama2c_weights>(itscale::load_llama2c_checkpoint(f));
}

// The README's sample problems and their answers.
struct sample {
  const char* prompt;
  long answer;
};
const sample samples[] = {
    {"91+45+23=", 159},          {"85+13+74-93=", 79},          {"38+45-30+29+6=", 88},
    {"21+55-15+58-90+18=", 47},  {"94+47-2-91+55+99+31=", 233}, {"30+44+17=", 91},
    {"14+61+82-73=", 84},        {"92+43-81+64-27=", 91},       {"21+24+97-59-69+1=", 15},
    {"97-5+65+43-23+74+30=", 281}, {"86+12+5=", 103},           {"17+82+72+9=", 180},
};

const itscale::sampling_options greedy{.stop = {.max_new_tokens = 100, .eos_token_id = {2}}};

long answer_of(const std::string& text) {
  const auto hash = text.rfind('#');
  if (hash == std::string::npos) return -1;
  long v = 0;
  std::size_t i = hash + 1;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9' && i < hash + 8; ++i) v = v * 10 + (text[i] - '0');
  return i == hash + 1 ? -1 : v;
}

}  // namespace

TEST_CASE("combinators: llama2c members pass the LogitSource concept suite") {
  const auto w1750 = weights("arith-1750.bin");
  const auto w750 = weights("arith-750.bin");
  const auto w2500 = weights("arith-2500.bin");
  // Batched and single-row products round differently (llama2c_model.hpp): a tolerance.
  const itscale::testing::source_suite_options o{.prompt = {1, 259, 271, 263}, .tolerance = 2e-4f};
  itscale::testing::check_logit_source(
      [&] { return itscale::make_contrastive(itscale::llama2c_model(w1750), itscale::llama2c_model(w750)); }, o);
  itscale::testing::check_logit_source(
      [&] {
        return itscale::make_ensemble({.mode = itscale::ensemble_mode::mixture}, itscale::llama2c_model(w1750),
                                      itscale::llama2c_model(w2500));
      },
      o);
}

TEST_CASE("combinators: on arith-1750, the identities decode greedily as the model alone") {
  const auto tok = itscale::llama2c_tokenizer::load(models_dir / "arith-tok.bin");
  itscale::llama2c_model m1750(weights("arith-1750.bin")), m750(weights("arith-750.bin"));
  std::vector<std::vector<token_id>> prompts;
  for (const sample& s : samples) prompts.push_back(tok.encode(s.prompt, true));

  const auto ref = itscale::generate(m1750, prompts, greedy);
  auto twice = itscale::make_ensemble(m1750, m1750);
  auto cd0 = itscale::make_contrastive(m1750, m750, {.alpha = 0.0, .beta = 0.1});
  auto g1 = itscale::make_cfg(m1750, {.gamma = 1.0, .unconditional_prompt = {1}});
  const auto a = itscale::generate(twice, prompts, greedy);
  const auto b = itscale::generate(cd0, prompts, greedy);
  const auto c = itscale::generate(g1, prompts, greedy);
  std::size_t right = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    CAPTURE(samples[i].prompt);
    CHECK(a[i].tokens == ref[i].tokens);
    CHECK(b[i].tokens == ref[i].tokens);
    CHECK(c[i].tokens == ref[i].tokens);
    right += answer_of(tok.decode(ref[i].tokens)) == samples[i].answer ? 1u : 0u;
  }
  CHECK(right == 11);  // the README's table: every sample but one (a copied operand)
  CHECK(m1750.live_handles() == 0);
  CHECK(m750.live_handles() == 0);
}

TEST_CASE("combinators: contrastive decoding and the ensemble on the README's sample problems (printed)") {
  const auto tok = itscale::llama2c_tokenizer::load(models_dir / "arith-tok.bin");
  itscale::llama2c_model m750(weights("arith-750.bin")), m1750(weights("arith-1750.bin")),
      m2500(weights("arith-2500.bin"));
  std::vector<std::vector<token_id>> prompts;
  for (const sample& s : samples) prompts.push_back(tok.encode(s.prompt, true));
  const auto score = [&](auto& source) {
    const auto out = itscale::generate(source, prompts, greedy);
    std::size_t right = 0;
    for (std::size_t i = 0; i < out.size(); ++i)
      right += answer_of(tok.decode(out[i].tokens)) == samples[i].answer ? 1u : 0u;
    return right;
  };
  std::string report = "README samples right of 12: arith-1750 " + std::to_string(score(m1750));
  for (const double alpha : {0.1, 0.5, 1.0}) {
    auto cd = itscale::make_contrastive(m1750, m750, {.alpha = alpha, .beta = 0.1});
    report += ", CD(alpha " + std::to_string(alpha).substr(0, 3) + ", beta 0.1) " + std::to_string(score(cd));
  }
  auto poe = itscale::make_ensemble(m1750, m2500);
  auto mix = itscale::make_ensemble({.mode = itscale::ensemble_mode::mixture}, m1750, m2500);
  report += ", PoE(1750, 2500) " + std::to_string(score(poe)) + ", mixture(1750, 2500) " + std::to_string(score(mix));
  MESSAGE(report);
  CHECK(m750.live_handles() + m1750.live_handles() + m2500.live_handles() == 0);
}
