#pragma once
/// \file completion_json.hpp
/// Reading `/v1/completions` answers as token ids. Two shapes carry ids:
/// - llama-server: `choices[i].logprobs.content[j] = {"id", "logprob", "top_logprobs": [{"id",
///   "logprob"}, ...]}`;
/// - OpenAI's legacy shape with vLLM's `return_tokens_as_token_ids`: `choices[i].logprobs` =
///   `{"tokens": ["token_id:N", ...], "token_logprobs": [...], "top_logprobs": [{"token_id:N":
///   lp, ...}, ...]}`.
/// A server that returns token strings only cannot drive a token-level search; that is an error
/// saying so. Every id is checked against the vocabulary and every log-prob for NaN / +inf.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE

namespace detail {

/// One choice of a completion, as ids.
struct completion_choice {
  std::vector<token_id> ids;                                  ///< generated tokens (those with log-probs)
  std::vector<double> logprobs;                               ///< the model's log-prob of each
  std::vector<std::vector<std::pair<token_id, double>>> top;  ///< top alternatives at each position
  std::string finish_reason;                                  ///< "stop", "length", ...
  std::string stop_reason;                                    ///< the matched stop string, where the server says it (vLLM)
};

/// Token accounting of one answer (`usage`): what the server evaluated.
struct completion_usage {
  std::uint64_t prompt_tokens = 0;
  std::uint64_t cached_tokens = 0;  ///< of the prompt, served from the server's prefix cache
  std::uint64_t completion_tokens = 0;
};

class completion_reader {
 public:
  completion_reader(std::size_t vocab, std::string where) : vocab_(vocab), where_(std::move(where)) {}

  [[nodiscard]] std::vector<completion_choice> choices(const nlohmann::json& j) const {
    const auto c = j.find("choices");
    if (c == j.end() || !c->is_array() || c->empty()) fail("the answer has no choices: " + excerpt(j));
    std::vector<completion_choice> out(c->size());
    for (std::size_t i = 0; i < c->size(); ++i) {
      const auto& ch = (*c)[i];
      std::size_t at = i;
      if (auto ix = ch.find("index"); ix != ch.end() && ix->is_number_unsigned() && ix->get<std::size_t>() < out.size())
        at = ix->get<std::size_t>();
      out[at] = choice(ch);
    }
    return out;
  }

  /// llama-server's native `/completion` answer (one object, or an array for `n` > 1): ids from
  /// `tokens` (`return_tokens`; every generated token, the stop string's and EOS included),
  /// log-probs from `completion_probabilities` (llama-server leaves the stop string's out),
  /// `stop_type` as the finish reason ("eos", "word", "limit"), usage added into `u`.
  [[nodiscard]] std::vector<completion_choice> native(const nlohmann::json& j, completion_usage& u) const {
    std::vector<completion_choice> out;
    const auto one = [&](const nlohmann::json& r) {
      if (!r.is_object()) fail("an answer is not an object: " + excerpt(r));
      completion_choice c;
      const auto toks = r.find("tokens");
      if (toks == r.end() || !toks->is_array()) fail("the answer has no \"tokens\" (ask with \"return_tokens\": true): " + excerpt(r));
      for (const auto& t : *toks) c.ids.push_back(id_of(t));
      if (auto ps = r.find("completion_probabilities"); ps != r.end() && ps->is_array())
        for (const auto& e : *ps) c.logprobs.push_back(logprob_of(e.value("logprob", nlohmann::json())));
      c.finish_reason = r.value("stop_type", std::string());
      c.stop_reason = r.value("stopping_word", std::string());
      u.prompt_tokens += r.value("tokens_evaluated", std::uint64_t{0});
      u.completion_tokens += r.value("tokens_predicted", std::uint64_t{0});
      if (auto tm = r.find("timings"); tm != r.end() && tm->is_object()) u.cached_tokens += tm->value("cache_n", std::uint64_t{0});
      out.push_back(std::move(c));
    };
    if (j.is_array()) {
      if (j.empty()) fail("the answer is an empty array");
      for (const auto& r : j) one(r);
    } else {
      one(j);
    }
    return out;
  }

  [[nodiscard]] static completion_usage usage(const nlohmann::json& j) {
    completion_usage u;
    const auto us = j.find("usage");
    if (us == j.end() || !us->is_object()) return u;
    u.prompt_tokens = us->value("prompt_tokens", std::uint64_t{0});
    u.completion_tokens = us->value("completion_tokens", std::uint64_t{0});
    if (auto d = us->find("prompt_tokens_details"); d != us->end() && d->is_object())
      u.cached_tokens = d->value("cached_tokens", std::uint64_t{0});
    return u;
  }

  [[noreturn]] void fail(const std::string& why) const { throw backend_error("itscale: " + where_ + ": " + why); }

 private:
  [[nodiscard]] completion_choice choice(const nlohmann::json& ch) const {
    completion_choice c;
    if (auto f = ch.find("finish_reason"); f != ch.end() && f->is_string()) c.finish_reason = f->get<std::string>();
    if (auto s = ch.find("stop_reason"); s != ch.end() && s->is_string()) c.stop_reason = s->get<std::string>();
    const auto lp = ch.find("logprobs");
    if (lp == ch.end() || lp->is_null()) fail("the answer has no logprobs (ask with \"logprobs\"): " + excerpt(ch));
    if (auto content = lp->find("content"); content != lp->end() && content->is_array()) {
      for (const auto& e : *content) {
        c.ids.push_back(id_of(e.value("id", nlohmann::json())));
        c.logprobs.push_back(logprob_of(e.value("logprob", nlohmann::json())));
        auto& top = c.top.emplace_back();
        if (auto t = e.find("top_logprobs"); t != e.end() && t->is_array())
          for (const auto& a : *t) top.emplace_back(id_of(a.value("id", nlohmann::json())), logprob_of(a.value("logprob", nlohmann::json())));
      }
      return c;
    }
    legacy(*lp, c);
    return c;
  }

  // OpenAI's legacy shape; ids only as vLLM's "token_id:N" strings.
  void legacy(const nlohmann::json& lp, completion_choice& c) const {
    const auto toks = lp.find("tokens");
    if (toks == lp.end() || !toks->is_array()) fail("the logprobs have neither \"content\" nor \"tokens\": " + excerpt(lp));
    const auto lps = lp.find("token_logprobs");
    const auto tops = lp.find("top_logprobs");
    for (std::size_t j = 0; j < toks->size(); ++j) {
      c.ids.push_back(id_of_string((*toks)[j]));
      c.logprobs.push_back(lps != lp.end() && lps->is_array() && j < lps->size() ? logprob_of((*lps)[j]) : 0.0);
      auto& top = c.top.emplace_back();
      if (tops != lp.end() && tops->is_array() && j < tops->size() && (*tops)[j].is_object())
        for (const auto& [k, v] : (*tops)[j].items()) top.emplace_back(id_of_string(k), logprob_of(v));
    }
  }

  [[nodiscard]] token_id id_of(const nlohmann::json& v) const {
    if (!v.is_number_integer()) fail("a log-prob entry has no integer \"id\" (this server returns token strings only)");
    const auto id = v.get<std::int64_t>();
    if (id < 0 || static_cast<std::uint64_t>(id) >= vocab_)
      fail("token " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(vocab_) + ")");
    return static_cast<token_id>(id);
  }

  [[nodiscard]] token_id id_of_string(const nlohmann::json& v) const {
    constexpr std::string_view prefix = "token_id:";
    if (!v.is_string() || !v.get_ref<const std::string&>().starts_with(prefix))
      fail("a token is given as text, not as an id (vLLM: set return_tokens_as_token_ids): " + excerpt(v));
    const std::string& s = v.get_ref<const std::string&>();
    std::int64_t id = -1;
    const auto r = std::from_chars(s.data() + prefix.size(), s.data() + s.size(), id);
    if (r.ec != std::errc() || r.ptr != s.data() + s.size()) fail("unreadable token id '" + s + "'");
    return id_of(nlohmann::json(id));
  }

  [[nodiscard]] double logprob_of(const nlohmann::json& v) const {
    if (v.is_null()) return -std::numeric_limits<double>::infinity();  // JSON has no -inf; servers send null
    if (!v.is_number()) fail("a log-prob is not a number: " + excerpt(v));
    const double x = v.get<double>();
    if (std::isnan(x) || x > 1e-3) fail("the server returned log-prob " + std::to_string(x) + " (NaN or above 0)");
    return std::min(x, 0.0);
  }

  [[nodiscard]] static std::string excerpt(const nlohmann::json& j) {
    std::string s = j.dump();
    if (s.size() > 200) s = s.substr(0, 200) + "...";
    return s;
  }

  std::size_t vocab_;
  std::string where_;
};

}  // namespace detail

ITSCALE_END_NAMESPACE
