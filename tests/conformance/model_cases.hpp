#pragma once
// hf_models.json: HF (and a float64 NumPy forward) on real llama2.c checkpoints, run against the
// in-tree llama2c_model. The checkpoints are found beside the JSON file, at
// <dir of the json>/../models/<name>.bin; a missing one fails its parts (never skipped).
//
// Parts per model: teacher_forced_logits (every position through prefill + one extend per token,
// max |diff| <= 2e-4 against the float64 reference; the largest difference is printed),
// greedy_from_bos (itscale::generate, exact), beam[i] (itscale::beam_search, tokens exact,
// scores within 1e-4).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <itscale/search.hpp>
#include <nlohmann/json.hpp>

#include "beam_hash_cases.hpp"
#include "report.hpp"

namespace conformance {

namespace model_detail {

using weights_ptr = std::shared_ptr<const itscale::llama2c_weights>;

/// Fails unless the loaded header equals the JSON's `config` (a wrong file would fail confusingly).
inline std::string config_mismatch(const itscale::llama2c_config& c, const nlohmann::json& want) {
  const std::pair<const char*, std::size_t> got[] = {{"dim", c.dim},         {"hid", c.hidden_dim},
                                                     {"nl", c.n_layers},     {"nh", c.n_heads},
                                                     {"nkv", c.n_kv_heads},  {"vocab", c.vocab_size},
                                                     {"seq", c.seq_len}};
  for (const auto& [key, v] : got)
    if (want.contains(key) && want.at(key).get<std::size_t>() != v)
      return std::string("checkpoint ") + key + " = " + std::to_string(v) + ", the JSON says " + want.at(key).dump();
  return "";
}

inline void teacher_forced(const weights_ptr& w, const nlohmann::json& m, const std::string& id, report& rep) {
  const auto toks = m.at("teacher_forced_tokens").get<std::vector<itscale::token_id>>();
  const auto& ref = m.at("teacher_forced_logits_numpy_f64");
  if (toks.empty() || ref.size() != toks.size()) throw std::runtime_error("tokens and logits rows differ in number");
  itscale::llama2c_model model(w);
  double worst = 0;
  std::size_t worst_pos = 0, worst_tok = 0;
  const auto compare = [&](std::size_t pos) {
    const auto row = model.logits().row(0);
    const auto& want = ref[pos];
    if (want.size() != row.size()) throw std::runtime_error("reference row " + std::to_string(pos) + " has the wrong size");
    for (std::size_t v = 0; v < row.size(); ++v) {
      const double d = std::fabs(double{row[v]} - want[v].get<double>());
      if (!(d <= worst)) {  // also catches NaN
        worst = std::isnan(d) ? INFINITY : d;
        worst_pos = pos;
        worst_tok = v;
      }
    }
  };
  auto h = model.prefill(std::span<const itscale::token_id>(toks.data(), 1));
  compare(0);
  for (std::size_t i = 1; i < toks.size(); ++i) {
    itscale::llama2c_model::handle c{};
    try {
      model.extend(std::span(&h, 1), std::span(&toks[i], 1), std::span(&c, 1));
    } catch (...) {
      model.release(h);
      throw;
    }
    model.release(h);
    h = c;
    compare(i);
  }
  model.release(h);
  std::printf("INFO %s: largest |logit - float64 reference| = %.3g (position %zu, token %zu) over %zu positions\n",
              id.c_str(), worst, worst_pos, worst_tok, toks.size());
  if (worst <= 2e-4) rep.pass();
  else rep.fail(id, "largest difference " + std::to_string(worst) + " > 2e-4 at position " + std::to_string(worst_pos) +
                        ", token " + std::to_string(worst_tok));
}

inline void greedy(const weights_ptr& w, const nlohmann::json& m, const std::string& id, report& rep) {
  const auto want = m.at("greedy_from_bos").get<std::vector<itscale::token_id>>();
  if (want.size() < 2 || want[0] != 1) throw std::runtime_error("greedy_from_bos must start with BOS and continue");
  itscale::llama2c_model model(w);
  const std::vector<itscale::token_id> bos{1};
  const auto out = itscale::generate(model, std::span<const itscale::token_id>(bos),
                                     {.stop = {.max_new_tokens = want.size() - 1}});
  std::vector<itscale::token_id> got = bos;
  got.insert(got.end(), out.sequences.at(0).tokens.begin(), out.sequences.at(0).tokens.end());
  if (got != want) return rep.fail(id, "expected " + join(want) + ", got " + join(got));
  if (model.live_handles() != 0) return rep.fail(id, std::to_string(model.live_handles()) + " handles leaked");
  rep.pass();
}

inline void beam(const weights_ptr& w, const nlohmann::json& b, const std::string& id, report& rep) {
  nlohmann::json cfg;
  for (const char* k : {"num_beams", "length_penalty", "early_stopping", "max_new_tokens", "eos_token_id",
                        "num_return_sequences", "min_new_tokens", "no_repeat_ngram_size", "repetition_penalty"})
    if (b.contains(k)) cfg[k] = b.at(k);
  const auto& seqs = b.at("sequences");
  const auto& scores = b.at("sequences_scores");
  // The file records every hypothesis HF returned (num_return_sequences = num_beams when absent).
  if (!cfg.contains("num_return_sequences")) cfg["num_return_sequences"] = seqs.size();
  const auto opts = beam_options_from_hf(cfg);
  const auto prompt = b.at("prompt").get<std::vector<itscale::token_id>>();
  if (seqs.size() != scores.size()) throw std::runtime_error("sequences and sequences_scores differ in number");
  itscale::llama2c_model model(w);
  const auto got = itscale::beam_search(model, std::span<const itscale::token_id>(prompt), opts);
  if (got.size() != seqs.size())
    return rep.fail(id, "expected " + std::to_string(seqs.size()) + " hypotheses, got " + std::to_string(got.size()));
  for (std::size_t j = 0; j < seqs.size(); ++j) {
    const auto& h = got[j];
    // HF pads finished hypotheses (pad 0 here) after their EOS.
    const auto want = strip_padding(seqs[j].get<std::vector<itscale::token_id>>(), opts.stop.eos_token_id);
    if (h.tokens != want)
      return rep.fail(id, "hypothesis " + std::to_string(j) + ": expected " + join(want) + ", got " + join(h.tokens));
    const double ws = scores[j].get<double>();
    if (!(std::fabs(h.score - ws) <= 1e-4))
      return rep.fail(id, "hypothesis " + std::to_string(j) + ": expected score " + std::to_string(ws) + ", got " +
                              std::to_string(h.score));
  }
  if (model.live_handles() != 0) return rep.fail(id, std::to_string(model.live_handles()) + " handles leaked");
  rep.pass();
}

}  // namespace model_detail

/// `json_path` locates the checkpoints (<dir>/../models/<name>.bin); `file` names the cases.
inline void run_model_cases(const nlohmann::json& doc, const std::string& file, const std::string& json_path,
                            report& rep) {
  namespace fs = std::filesystem;
  const fs::path models = fs::path(json_path).parent_path() / ".." / "models";
  for (auto it = doc.at("models").begin(); it != doc.at("models").end(); ++it) {
    const std::string id = file + "#" + it.key();
    const auto& m = it.value();
    // Every part this model has, so a load failure fails each of them.
    std::vector<std::string> parts;
    if (m.contains("teacher_forced_logits_numpy_f64")) parts.push_back("teacher_forced_logits");
    if (m.contains("greedy_from_bos")) parts.push_back("greedy_from_bos");
    if (m.contains("beam"))
      for (std::size_t b = 0; b < m.at("beam").size(); ++b) parts.push_back("beam[" + std::to_string(b) + "]");

    model_detail::weights_ptr w;
    std::string why;
    try {
      w = std::make_shared<const itscale::llama2c_weights>(
          itscale::load_llama2c_checkpoint((models / (it.key() + ".bin")).lexically_normal()));
      if (m.contains("config")) why = model_detail::config_mismatch(w->config, m.at("config"));
    } catch (const std::exception& e) {
      why = std::string("cannot load the checkpoint: ") + e.what();
    }
    if (!why.empty()) {
      for (const auto& p : parts) rep.fail(id + " " + p, why);
      continue;
    }
    for (const auto& p : parts) {
      const std::string pid = id + " " + p;
      try {
        if (p == "teacher_forced_logits") model_detail::teacher_forced(w, m, pid, rep);
        else if (p == "greedy_from_bos") model_detail::greedy(w, m, pid, rep);
        else model_detail::beam(w, m.at("beam").at(std::stoul(p.substr(5))), pid, rep);
      } catch (const std::exception& e) {
        rep.fail(pid, std::string("error: ") + e.what());
      }
    }
  }
}

}  // namespace conformance
