#pragma once
// hf_beam_hash.json and hf_beam_hash_large.json: HF `generate(do_sample=False)` on the hash LM.
// num_beams = 1 is greedy decoding and runs through `itscale::generate`; beam search cases are
// reported as failed with the reason until the beam search lands.

#include <algorithm>
#include <string>
#include <vector>

#include <itscale/search.hpp>
#include <nlohmann/json.hpp>

#include "report.hpp"
#include "sampling_chain_cases.hpp"

namespace conformance {

/// HF pads finished sequences with V-1: keep everything up to and including the first EOS.
inline std::vector<itscale::token_id> strip_padding(std::vector<itscale::token_id> seq,
                                                    const std::vector<itscale::token_id>& eos) {
  const auto it = std::find_first_of(seq.begin(), seq.end(), eos.begin(), eos.end());
  if (it != seq.end()) seq.erase(it + 1, seq.end());
  return seq;
}

inline std::string join(const std::vector<itscale::token_id>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

/// Runs one configuration over its prompts; `expected[i]` is {sequences, sequences_scores} of prompt i.
inline void run_hash_generation(const nlohmann::json& cfg, const std::vector<nlohmann::json>& expected,
                                const std::string& id, report& rep) {
  const auto beams = cfg.at("num_beams").get<std::size_t>();
  if (beams != 1) {
    rep.fail(id, "beam search (num_beams = " + std::to_string(beams) + ") is not implemented yet (issue #4)");
    return;
  }
  const auto vocab = cfg.at("V").get<std::size_t>();
  itscale::hash_lm lm(vocab, cfg.at("seed").get<std::uint64_t>());
  // Greedy ignores length_penalty and early_stopping, as in HF.
  auto opts = options_from_hf(cfg, {"V", "seed", "prompt", "prompts", "num_beams", "length_penalty", "early_stopping",
                                    "num_return_sequences"});
  opts.do_sample = false;
  opts.num_return_sequences = cfg.value("num_return_sequences", std::size_t{1});
  std::vector<std::vector<itscale::token_id>> prompts;
  if (cfg.contains("prompts")) prompts = cfg.at("prompts").get<std::vector<std::vector<itscale::token_id>>>();
  else prompts.push_back(cfg.at("prompt").get<std::vector<itscale::token_id>>());
  if (prompts.size() != expected.size()) throw std::runtime_error("prompts and results differ in number");
  const auto got = itscale::generate(lm, prompts, opts);
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    const auto& seqs = expected[p].at("sequences");
    if (seqs.size() != 1) throw std::runtime_error("greedy case with " + std::to_string(seqs.size()) + " sequences");
    const auto want = strip_padding(seqs[0].get<std::vector<itscale::token_id>>(), opts.eos_token_id);
    if (got[p].tokens != want) {
      rep.fail(id, "prompt " + std::to_string(p) + ": expected " + join(want) + ", got " + join(got[p].tokens));
      return;
    }
  }
  if (lm.live_handles() != 0) {
    rep.fail(id, std::to_string(lm.live_handles()) + " handles leaked");
    return;
  }
  rep.pass();
}

inline void run_beam_hash_cases(const nlohmann::json& doc, const std::string& file, report& rep) {
  const auto& cases = doc.at("cases");
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const std::string id = file + "#" + std::to_string(i) + " " + c.at("config").dump();
    try {
      std::vector<nlohmann::json> expected;
      if (c.contains("results"))
        for (const auto& r : c.at("results")) expected.push_back(r);
      else
        expected.push_back(c);
      run_hash_generation(c.at("config"), expected, id, rep);
    } catch (const std::exception& e) {
      rep.fail(id, std::string("error: ") + e.what());
    }
  }
}

}  // namespace conformance
