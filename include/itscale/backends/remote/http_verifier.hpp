#pragma once
/// \file http_verifier.hpp
/// A `Verifier` on another server: a process or outcome reward model behind an HTTP endpoint.
/// One `verify` is one POST (split into `max_batch`-item requests sent concurrently). **Needs
/// libcurl and nlohmann-json.**
///
/// The wire format (JSON), for a server to implement:
///
///     POST {base_url}{path}
///     {"items": [{"prompt": "...", "response": "...",          // texts, when `text` is given
///                 "prompt_ids": [1, 5, ...], "response_ids": [...],
///                 "complete": true}, ...]}
///     -> 200 {"scores": [0.93, ...]}                           // one number per item, in order
///
/// `complete` says whether the response is finished (outcome) or a prefix of steps (process).
/// Scores must lie in `range`; `verify()` (verifier.hpp) rejects NaN, out-of-range scores and a
/// wrong count as `backend_error`s naming the verifier; a missing or non-numeric `scores` is a
/// `backend_error` here, transport failures `remote_error`s.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "itscale/backends/remote/http_client.hpp"
#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/steps/verifier.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Options of `http_verifier`.
struct http_verifier_options {
  http_options http = {};
  std::string path = "/score";
  std::string name = "http_verifier";
  score_range range = {0, 1};
  std::size_t max_batch = 64;  ///< items per request, >= 1
  /// Detokenizer: when set, the items carry "prompt" and "response" texts besides the ids.
  std::function<std::string(std::span<const token_id>)> text = {};

  void validate() const {
    http.validate();
    if (max_batch == 0) throw invalid_option("itscale: http_verifier_options.max_batch must be >= 1, got 0");
    if (!(range.lo <= range.hi) || !std::isfinite(range.lo) || !std::isfinite(range.hi))
      throw invalid_option("itscale: http_verifier_options.range must be finite with lo <= hi");
  }
};

/// A reward model over HTTP (see the file comment). Satisfies `Verifier`. Not thread-safe.
class http_verifier {
 public:
  explicit http_verifier(http_verifier_options o) : opts_((o.validate(), std::move(o))), http_(opts_.http) {}

  std::vector<double> verify(std::span<const verify_item> batch) {
    std::vector<http_request> reqs;
    for (std::size_t at = 0; at < batch.size(); at += opts_.max_batch)
      reqs.push_back({opts_.path, body(batch.subspan(at, std::min(opts_.max_batch, batch.size() - at)))});
    const auto answers = http_.send(reqs);
    std::vector<double> scores;
    scores.reserve(batch.size());
    for (std::size_t r = 0; r < reqs.size(); ++r)
      read(reqs[r], answers[r], std::min(opts_.max_batch, batch.size() - r * opts_.max_batch), scores);
    return scores;
  }

  [[nodiscard]] score_range range() const noexcept { return opts_.range; }
  [[nodiscard]] std::string_view name() const noexcept { return opts_.name; }
  [[nodiscard]] http_client& client() noexcept { return http_; }

 private:
  [[nodiscard]] std::string body(std::span<const verify_item> items) const {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& it : items) {
      nlohmann::json e = {{"prompt_ids", std::vector<token_id>(it.prompt.begin(), it.prompt.end())},
                          {"response_ids", std::vector<token_id>(it.sequence.begin(), it.sequence.end())},
                          {"complete", it.complete}};
      if (opts_.text) {
        e["prompt"] = opts_.text(it.prompt);
        e["response"] = opts_.text(it.sequence);
      }
      arr.push_back(std::move(e));
    }
    return nlohmann::json{{"items", std::move(arr)}}.dump();
  }

  void read(const http_request& r, const std::string& answer, std::size_t expected, std::vector<double>& scores) {
    const auto j = http_.parse(r, answer);
    const auto who = "itscale: verifier '" + opts_.name + "' (" + http_.what(r) + ")";
    const auto s = j.find("scores");
    if (!j.is_object() || s == j.end() || !s->is_array()) throw backend_error(who + ": the answer has no \"scores\" array");
    if (s->size() != expected)
      throw backend_error(who + " returned " + std::to_string(s->size()) + " scores for a batch of " + std::to_string(expected));
    for (const auto& v : *s) {
      if (!v.is_number()) throw backend_error(who + ": a score is not a number: " + v.dump());
      scores.push_back(v.get<double>());
    }
  }

  http_verifier_options opts_;
  http_client http_;
};

static_assert(Verifier<http_verifier>);

ITSCALE_END_NAMESPACE
