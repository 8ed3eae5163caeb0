#pragma once
// hf_beam_hash.json and hf_beam_hash_large.json: HF `generate(do_sample=False)` on the hash LM.
// num_beams = 1 is greedy decoding (as in HF) and runs through `itscale::generate`; num_beams > 1
// runs `itscale::beam_search` on all prompts of a case at once and compares every returned
// hypothesis: tokens exactly (HF's padding stripped), scores to 1e-4.

#include <algorithm>
#include <cmath>
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

/// `beam_options` from an HF generation config; throws on an option it does not know.
inline itscale::beam_options beam_options_from_hf(const nlohmann::json& cfg) {
  itscale::beam_options o;
  for (auto it = cfg.begin(); it != cfg.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = it.value();
    if (k == "V" || k == "seed" || k == "prompt" || k == "prompts") continue;
    if (k == "num_beams") o.num_beams = v.get<std::size_t>();
    else if (k == "length_penalty") o.length_penalty = v.get<double>();
    else if (k == "early_stopping") {
      if (v.is_boolean())
        o.early_stopping = v.get<bool>() ? itscale::early_stopping_mode::when_full : itscale::early_stopping_mode::heuristic;
      else if (v == "never") o.early_stopping = itscale::early_stopping_mode::never;
      else throw std::runtime_error("unsupported early_stopping " + v.dump());
    }
    else if (k == "num_return_sequences") o.num_return_sequences = v.get<std::size_t>();
    else if (k == "max_new_tokens") o.stop.max_new_tokens = v.get<std::size_t>();
    else if (k == "min_new_tokens") o.stop.min_new_tokens = v.get<std::size_t>();
    else if (k == "eos_token_id") o.stop.eos_token_id = v.get<std::vector<itscale::token_id>>();
    else if (k == "no_repeat_ngram_size") o.no_repeat_ngram_size = v.get<std::size_t>();
    else if (k == "repetition_penalty") o.repetition_penalty = v.get<float>();
    else throw std::runtime_error("unsupported generation option '" + k + "'");
  }
  // HF accepts what `validate()` rejects but means the same: a minimum beyond the maximum masks
  // EOS at every step (as min = max does), and with no EOS id the minimum does nothing.
  if (o.stop.min_new_tokens > o.stop.max_new_tokens) o.stop.min_new_tokens = o.stop.max_new_tokens;
  if (o.stop.eos_token_id.empty()) o.stop.min_new_tokens = 0;
  return o;
}

inline std::vector<std::vector<itscale::token_id>> prompts_of(const nlohmann::json& cfg) {
  std::vector<std::vector<itscale::token_id>> prompts;
  if (cfg.contains("prompts")) prompts = cfg.at("prompts").get<std::vector<std::vector<itscale::token_id>>>();
  else prompts.push_back(cfg.at("prompt").get<std::vector<itscale::token_id>>());
  return prompts;
}

/// Beam search over all prompts at once; every prompt's hypotheses must equal HF's.
inline void run_hash_beam_search(const nlohmann::json& cfg, const std::vector<nlohmann::json>& expected,
                                 const std::string& id, report& rep) {
  const auto vocab = cfg.at("V").get<std::size_t>();
  itscale::hash_lm lm(vocab, cfg.at("seed").get<std::uint64_t>());
  const auto opts = beam_options_from_hf(cfg);
  const auto prompts = prompts_of(cfg);
  if (prompts.size() != expected.size()) throw std::runtime_error("prompts and results differ in number");
  const auto got = itscale::beam_search(lm, prompts, opts);
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    const auto& seqs = expected[p].at("sequences");
    const auto& scores = expected[p].at("sequences_scores");
    const std::string where = "prompt " + std::to_string(p) + ", hypothesis ";
    if (seqs.size() != scores.size()) throw std::runtime_error("sequences and sequences_scores differ in number");
    const auto hyps = got.hypotheses(p);
    if (hyps.size() != seqs.size()) {
      rep.fail(id, "prompt " + std::to_string(p) + ": expected " + std::to_string(seqs.size()) + " hypotheses, got " +
                       std::to_string(hyps.size()));
      return;
    }
    for (std::size_t j = 0; j < seqs.size(); ++j) {
      const auto& h = hyps[j];
      const auto want = strip_padding(seqs[j].get<std::vector<itscale::token_id>>(), opts.stop.eos_token_id);
      if (h.tokens != want) {
        rep.fail(id, where + std::to_string(j) + ": expected " + join(want) + ", got " + join(h.tokens));
        return;
      }
      const double w = scores[j].get<double>();
      if (!(std::abs(h.score - w) <= 1e-4)) {
        rep.fail(id, where + std::to_string(j) + ": expected score " + std::to_string(w) + ", got " +
                         std::to_string(h.score));
        return;
      }
    }
  }
  if (lm.live_handles() != 0) {
    rep.fail(id, std::to_string(lm.live_handles()) + " handles leaked");
    return;
  }
  rep.pass();
}

/// Runs one configuration over its prompts; `expected[i]` is {sequences, sequences_scores} of prompt i.
inline void run_hash_generation(const nlohmann::json& cfg, const std::vector<nlohmann::json>& expected,
                                const std::string& id, report& rep) {
  const auto beams = cfg.at("num_beams").get<std::size_t>();
  if (beams != 1) return run_hash_beam_search(cfg, expected, id, rep);
  const auto vocab = cfg.at("V").get<std::size_t>();
  itscale::hash_lm lm(vocab, cfg.at("seed").get<std::uint64_t>());
  // Greedy ignores length_penalty and early_stopping, as in HF.
  auto opts = options_from_hf(cfg, {"V", "seed", "prompt", "prompts", "num_beams", "length_penalty", "early_stopping",
                                    "num_return_sequences"});
  opts.do_sample = false;
  opts.num_return_sequences = cfg.value("num_return_sequences", std::size_t{1});
  const auto prompts = prompts_of(cfg);
  if (prompts.size() != expected.size()) throw std::runtime_error("prompts and results differ in number");
  const auto got = itscale::generate(lm, prompts, opts);
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    const auto& seqs = expected[p].at("sequences");
    if (seqs.size() != 1) throw std::runtime_error("greedy case with " + std::to_string(seqs.size()) + " sequences");
    const auto want = strip_padding(seqs[0].get<std::vector<itscale::token_id>>(), opts.stop.eos_token_id);
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
