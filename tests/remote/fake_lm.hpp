#pragma once
// The model behind the mock server: `hash_lm`'s rows served the way llama-server serves
// /v1/completions (token ids in logprobs.content, top_logprobs, usage), so the remote backends
// can be checked against the same model in process. A request with max_tokens 1 and temperature
// 0 gets the top-k of the next row; any other gets `n` samples (seed + j for the j-th, as
// llama-server does), each until the delimiter (left out of the answer), EOS (kept) or max_tokens;
// the samples favour the delimiter and EOS (`step_bias`) so that steps and sequences end.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include <itscale/backends/hash_lm.hpp>
#include <itscale/core/rng.hpp>

#include "mock_server.hpp"

namespace remote_test {

using json = nlohmann::json;
using itscale::token_id;

struct fake_lm {
  itscale::hash_lm lm{64, 5};
  token_id delimiter = 3;  // ";"
  token_id eos = 2;
  double step_bias = 2.5;  // added to the delimiter's and EOS's log-probs when sampling, so steps end


  // log_softmax of the row after `prefix`, in double.
  [[nodiscard]] std::vector<double> logprobs(const std::vector<token_id>& prefix) const {
    std::vector<float> row(lm.vocab_size());
    lm.fill(lm.state_of(prefix), row);
    const double mx = *std::max_element(row.begin(), row.end());
    double sum = 0;
    for (float x : row) sum += std::exp(x - mx);
    std::vector<double> out(row.size());
    for (std::size_t v = 0; v < row.size(); ++v) out[v] = row[v] - mx - std::log(sum);
    return out;
  }

  [[nodiscard]] static json entry(token_id id, double lp) { return {{"id", id}, {"token", "t"}, {"logprob", lp}}; }

  [[nodiscard]] json top(const std::vector<double>& lp, std::size_t k) const {
    std::vector<token_id> ids(lp.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::stable_sort(ids.begin(), ids.end(), [&](token_id a, token_id b) { return lp[static_cast<std::size_t>(a)] > lp[static_cast<std::size_t>(b)]; });
    json t = json::array();
    for (std::size_t i = 0; i < std::min(k, ids.size()); ++i) t.push_back(entry(ids[i], lp[static_cast<std::size_t>(ids[i])]));
    return t;
  }

  // One sample: tokens drawn from softmax(logprobs / T) with the (seed, 0) stream.
  [[nodiscard]] json sample(std::vector<token_id> seq, std::uint64_t seed, double temperature, std::size_t max_tokens,
                            std::size_t& generated, bool native) const {
    const itscale::counter_rng rng(seed, 0);
    json content = json::array();
    std::vector<token_id> ids;
    std::string finish = "length", stop_type = "limit";
    for (std::uint32_t step = 0; step < max_tokens; ++step) {
      const auto lp = logprobs(seq);  // reported: the model's own
      auto biased = lp;
      biased[static_cast<std::size_t>(delimiter)] += step_bias;
      biased[static_cast<std::size_t>(eos)] += step_bias;
      double total = 0;
      for (double x : biased) total += std::exp(x / temperature);
      double u = rng.uniform(step) * total;
      token_id t = 0;
      for (std::size_t v = 0; v < biased.size(); ++v) {
        u -= std::exp(biased[v] / temperature);
        t = static_cast<token_id>(v);
        if (u <= 0) break;
      }
      ++generated;
      seq.push_back(t);
      ids.push_back(t);
      if (t == delimiter) {  // the server leaves the stop string out of the log-probs
        finish = "stop";
        stop_type = "word";
        break;
      }
      content.push_back(entry(t, lp[static_cast<std::size_t>(t)]));
      if (t == eos) {
        finish = "stop";
        stop_type = "eos";
        break;
      }
    }
    if (native)  // llama-server's /completion with return_tokens
      return {{"content", ""}, {"tokens", ids}, {"completion_probabilities", content}, {"stop_type", stop_type},
              {"stopping_word", stop_type == "word" ? ";" : ""}, {"tokens_predicted", ids.size()}};
    return {{"text", ""}, {"logprobs", {{"content", content}}}, {"finish_reason", finish}};
  }

  mock_reply operator()(const mock_request& r) const {
    if (r.path == "/v1/models") return {200, json{{"data", {{{"id", "fake"}, {"meta", {{"n_vocab", lm.vocab_size()}}}}}}}.dump()};
    const bool native = r.path == "/completion";
    if (r.path != "/v1/completions" && !native) return {404, R"({"error":{"code":404,"message":"File Not Found"}})"};
    const json j = json::parse(r.body);
    const auto prompt = j.at("prompt").get<std::vector<token_id>>();
    const auto max_tokens = j.value(native ? "n_predict" : "max_tokens", std::size_t{16});
    const double temperature = j.value("temperature", 1.0);
    json choices = json::array();
    std::size_t generated = 0;
    if (max_tokens == 1 && temperature == 0) {
      const auto lp = logprobs(prompt);
      const auto best = static_cast<token_id>(std::max_element(lp.begin(), lp.end()) - lp.begin());
      json e = entry(best, lp[static_cast<std::size_t>(best)]);
      e["top_logprobs"] = top(lp, j.value("logprobs", std::size_t{0}));
      choices.push_back({{"index", 0}, {"text", ""}, {"logprobs", {{"content", json::array({e})}}}, {"finish_reason", "length"}});
      generated = 1;
    } else {
      const auto seed = j.value("seed", std::uint64_t{0});
      for (std::size_t c = 0; c < j.value("n", std::size_t{1}); ++c) {
        json ch = sample(prompt, seed + c, temperature, max_tokens, generated, native);
        ch[native ? "tokens_evaluated" : "index"] = native ? prompt.size() : c;
        choices.push_back(std::move(ch));
      }
      if (native) return {200, (choices.size() == 1 ? choices[0] : choices).dump()};
    }
    const json usage = {{"prompt_tokens", prompt.size()},
                        {"completion_tokens", generated},
                        {"prompt_tokens_details", {{"cached_tokens", 0}}}};
    return {200, json{{"choices", choices}, {"usage", usage}}.dump()};
  }
};

}  // namespace remote_test
