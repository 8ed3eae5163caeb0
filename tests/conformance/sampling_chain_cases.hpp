#pragma once
// hf_sampling_chain.json: HF's whole sampling configuration on the hash LM. Each step's prefix is
// replayed through the runtime chain built from `sampling_options` with the same option names;
// the processed row must equal the one HF sampled from.

#include <set>
#include <string>
#include <vector>

#include <itscale/search.hpp>
#include <nlohmann/json.hpp>

#include "report.hpp"
#include "rows.hpp"

namespace conformance {

/// `sampling_options` from an HF generation config; throws on an option it does not know.
inline itscale::sampling_options options_from_hf(const nlohmann::json& cfg, const std::set<std::string>& ignore) {
  itscale::sampling_options o;
  o.do_sample = true;
  for (auto it = cfg.begin(); it != cfg.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = it.value();
    if (ignore.count(k)) continue;
    if (k == "eos_token_id") o.stop.eos_token_id = v.get<std::vector<itscale::token_id>>();
    else if (k == "temperature") o.temperature = v.get<float>();
    else if (k == "top_k") o.top_k = v.get<std::size_t>();
    else if (k == "top_p") o.top_p = v.get<double>();
    else if (k == "min_p") o.min_p = v.get<float>();
    else if (k == "typical_p") o.typical_p = v.get<float>();
    else if (k == "epsilon_cutoff") o.epsilon_cutoff = v.get<float>();
    else if (k == "eta_cutoff") o.eta_cutoff = v.get<float>();
    else if (k == "top_h") o.top_h = v.get<float>();
    else if (k == "repetition_penalty") o.repetition_penalty = v.get<float>();
    else if (k == "no_repeat_ngram_size") o.no_repeat_ngram_size = v.get<std::size_t>();
    else if (k == "min_new_tokens") o.stop.min_new_tokens = v.get<std::size_t>();
    else if (k == "max_new_tokens") o.stop.max_new_tokens = v.get<std::size_t>();
    else if (k == "min_tokens_to_keep") o.min_tokens_to_keep = v.get<std::size_t>();
    else throw std::runtime_error("unsupported generation option '" + k + "'");
  }
  if (o.stop.max_new_tokens < o.stop.min_new_tokens) o.stop.max_new_tokens = o.stop.min_new_tokens;
  return o;
}

inline void run_sampling_chain_cases(const nlohmann::json& doc, const std::string& file, report& rep) {
  const auto& cases = doc.at("cases");
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const auto& cfg = c.at("config");
    std::string id = file + "#" + std::to_string(i) + " " + cfg.dump();
    try {
      const auto vocab = cfg.at("V").get<std::size_t>();
      const auto seed = cfg.at("seed").get<std::uint64_t>();
      const auto prompt = cfg.at("prompt").get<std::vector<itscale::token_id>>();
      const auto generated = c.at("generated").get<std::vector<itscale::token_id>>();
      const auto opts = options_from_hf(cfg, {"V", "seed", "prompt"});
      opts.validate(vocab);
      const itscale::sampling_chain chain(opts);
      const itscale::hash_lm lm(vocab, seed);
      itscale::detail::check_tokens(prompt, vocab, "prompt");
      itscale::detail::check_tokens(generated, vocab, "generated");
      const bool sparse = c.contains("sparse_scores");
      const auto& rows = sparse ? c.at("sparse_scores") : c.at("scores");
      if (rows.size() > generated.size()) throw std::runtime_error("more score rows than generated tokens");
      itscale::workspace ws;
      ws.reserve(vocab);
      std::vector<itscale::token_id> prefix = prompt;
      std::string why;
      bool tie = false;
      for (std::size_t t = 0; t < rows.size() && why.empty(); ++t) {
        std::vector<float> row(vocab);
        lm.fill(lm.state_of(prefix), row);
        const itscale::step_context ctx{prefix, prompt.size(), &ws};
        chain.apply_processors(row, ctx);
        const auto before_warpers = row;
        chain.apply_warpers(row, ctx);
        const auto want = sparse ? read_sparse_row(rows[t], vocab) : read_row(rows[t]);
        const auto v = compare_rows(row, want, before_warpers);
        if (v.what == row_verdict::differ) why = "step " + std::to_string(t) + ": " + v.detail;
        if (v.what == row_verdict::tie_order) tie = true;
        prefix.push_back(generated[t]);
      }
      if (!why.empty()) rep.fail(id, why);
      else if (tie) rep.tie_order(id, "a step differs only in the order of equal logits");
      else rep.pass();
    } catch (const std::exception& e) {
      rep.fail(id, std::string("error: ") + e.what());
    }
  }
}

}  // namespace conformance
