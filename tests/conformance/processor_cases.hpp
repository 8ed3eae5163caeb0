#pragma once
// hf_processors.json: one HF processor applied to one row. The op and its HF constructor
// arguments are mapped onto the library's processor classes; unknown ops or parameters fail.

#include <functional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <itscale/search.hpp>
#include <nlohmann/json.hpp>

#include "report.hpp"
#include "rows.hpp"

namespace conformance {

using row_fn = std::function<void(std::span<float>, const itscale::step_context&)>;

/// The processor for `op` with HF's constructor arguments, or throws naming what is unsupported.
inline row_fn make_processor(const std::string& op, const nlohmann::json& params) {
  std::set<std::string> allowed;
  auto get_f = [&](const char* k) { allowed.insert(k); return params.at(k).get<float>(); };
  auto get_d = [&](const char* k) { allowed.insert(k); return params.at(k).get<double>(); };
  auto get_n = [&](const char* k) { allowed.insert(k); return params.at(k).get<std::size_t>(); };
  auto keep = [&] {
    allowed.insert("min_tokens_to_keep");
    return params.value("min_tokens_to_keep", std::size_t{1});
  };
  row_fn fn;
  auto wrap = [](auto p) { return row_fn([p](std::span<float> r, const itscale::step_context& c) { p.apply(r, c); }); };
  if (op == "temperature") fn = wrap(itscale::temperature(get_f("temperature")));
  else if (op == "top_k") fn = wrap(itscale::top_k_filter(get_n("top_k"), keep()));
  else if (op == "top_p") fn = wrap(itscale::top_p_filter(get_d("top_p"), keep()));
  else if (op == "min_p") fn = wrap(itscale::min_p_filter(get_f("min_p"), keep()));
  else if (op == "typical_p") fn = wrap(itscale::typical_filter(get_f("mass"), keep()));
  else if (op == "epsilon") fn = wrap(itscale::epsilon_filter(get_f("epsilon"), keep()));
  else if (op == "eta") fn = wrap(itscale::eta_filter(get_f("epsilon"), keep()));
  else if (op == "top_h") fn = wrap(itscale::top_h_filter(get_f("top_h")));
  else if (op == "repetition_penalty") fn = wrap(itscale::repetition_penalty(get_f("penalty")));
  else if (op == "no_repeat_ngram") fn = wrap(itscale::no_repeat_ngram(get_n("ngram_size")));
  else throw std::runtime_error("unsupported op '" + op + "'");
  for (auto it = params.begin(); it != params.end(); ++it)
    if (!allowed.count(it.key())) throw std::runtime_error("unsupported parameter '" + it.key() + "' for op " + op);
  return fn;
}

inline void run_processor_cases(const nlohmann::json& doc, const std::string& file, report& rep) {
  const auto& cases = doc.at("cases");
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const std::string id = file + "#" + std::to_string(i) + " (" + c.value("op", "?") + " " +
                           c.value("params", nlohmann::json::object()).dump() + " " + c.value("row", "") + ")";
    try {
      const auto fn = make_processor(c.at("op").get<std::string>(), c.at("params"));
      const auto input = read_row(c.at("scores"));
      const auto want = read_row(c.at("output"));
      const auto tokens = c.at("input_ids").get<std::vector<itscale::token_id>>();
      itscale::detail::check_tokens(tokens, input.size(), "input_ids");
      itscale::workspace ws;
      ws.reserve(input.size());
      auto got = input;
      fn(got, itscale::step_context{tokens, tokens.size(), &ws});
      const auto v = compare_rows(got, want, input);
      if (v.what == row_verdict::same) rep.pass();
      else if (v.what == row_verdict::tie_order) rep.tie_order(id, v.detail);
      else rep.fail(id, v.detail);
    } catch (const std::exception& e) {
      rep.fail(id, std::string("error: ") + e.what());
    }
  }
}

}  // namespace conformance
