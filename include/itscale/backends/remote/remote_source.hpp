#pragma once
/// \file remote_source.hpp
/// A model served by an OpenAI-compatible server (llama-server, vLLM, SGLang) as a `LogitSource`,
/// so every token-level algorithm (greedy, sampling, beam search, token-level MCTS) runs against
/// it unchanged. **Needs libcurl and nlohmann-json** (`http_client.hpp`).
///
/// How the concept maps onto `/v1/completions`:
/// - a handle is the token sequence itself (the server keeps no per-sequence state we could
///   name); `release` forgets it;
/// - a row is one request: `prompt` = the sequence's token ids, `max_tokens: 1`,
///   `temperature: 0`, `logprobs: top_k`; the row holds the returned top-k log-probs and every
///   other token is masked (`-inf`). The log-probs are the model's full-vocabulary ones, so the
///   row's probabilities sum to the top-k mass, below 1; processors renormalise as usual;
/// - `extend` sends its rows concurrently (`http_options.max_in_flight`) and relies on the
///   server's prefix cache (llama-server `cache_prompt`, vLLM's automatic prefix caching), so a
///   child costs the server one token when its parent's prefix is still cached.
///
/// How many log-probs an algorithm needs: sampling with top-k = k needs `top_k >= k` (top-p
/// needs enough to cover p); greedy 1; beam search with K beams 2K per row (HF selects 2K
/// candidates per beam); token-level MCTS its widening limit. llama-server returns up to its
/// vocabulary, vLLM up to `--max-logprobs` (20 by default).
///
/// The vocabulary size comes from the options or the server (`/v1/models`, llama-server's
/// `meta.n_vocab`). Every answer is checked: ids outside the vocabulary and NaN log-probs are
/// `backend_error`s; transport failures are `remote_error`s (see `http_client.hpp`). A failed call
/// creates no handle.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/backends/remote/completion_json.hpp"
#include "itscale/backends/remote/http_client.hpp"
#include "itscale/core/abi.hpp"
#include "itscale/core/detail/validate_tokens.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/logit_source.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE

/// What a row holds for the tokens outside the server's top-k.
enum class remote_rest : std::uint8_t {
  /// `-inf`: the row is the top-k alone; processors renormalise over it (sampling, greedy).
  masked,
  /// The rest of the probability mass (1 - the top-k's), shared evenly by the other tokens, so
  /// that log_softmax of the row gives back the server's log-probs of the top-k exactly: scores
  /// stay comparable across rows (beam search, rescoring).
  spread,
};

/// Options of `remote_source`.
struct remote_source_options {
  http_options http = {};
  std::size_t top_k = 20;         ///< log-probs per row, in [1, 100000]
  std::size_t vocab_size = 0;     ///< 0: asked from the server
  std::string model = {};              ///< the request's "model" (vLLM needs it); empty: not sent
  std::string path = "/v1/completions";
  remote_rest rest = remote_rest::masked;
  nlohmann::json extra = nlohmann::json::object();  ///< merged into every request (e.g. vLLM's return_tokens_as_token_ids)

  /// Throws `invalid_option` naming the broken rule.
  void validate() const {
    http.validate();
    if (top_k == 0 || top_k > 100000)
      throw invalid_option("itscale: remote_source_options.top_k = " + std::to_string(top_k) + " must be in [1, 100000]");
    if (!extra.is_object()) throw invalid_option("itscale: remote_source_options.extra must be a JSON object");
  }
};

/// What the server evaluated for a source, from its `usage` answers (measured, not estimated).
struct remote_usage {
  std::uint64_t requests = 0;
  std::uint64_t prompt_tokens = 0;  ///< sent as prompts
  std::uint64_t cached_tokens = 0;  ///< of those, served from the server's prefix cache
  std::uint64_t completion_tokens = 0;
};

/// Asks an OpenAI-compatible server for its vocabulary size (`/v1/models`: llama-server's
/// `data[0].meta.n_vocab`). Throws `backend_error` saying to give it when the server does not.
inline std::size_t remote_vocab_size(http_client& c) {
  const http_request r{"/v1/models", {}};
  const auto j = c.call(r);
  if (auto d = j.find("data"); d != j.end() && d->is_array() && !d->empty()) {
    const auto& m = (*d)[0];
    if (auto meta = m.find("meta"); meta != m.end() && meta->is_object())
      if (auto n = meta->find("n_vocab"); n != meta->end() && n->is_number_unsigned() && n->get<std::size_t>() > 0)
        return n->get<std::size_t>();
  }
  throw backend_error("itscale: " + c.what(r) + " does not give the vocabulary size (meta.n_vocab); set it in the options");
}

/// A remote model as a `LogitSource` (see the file comment). Not thread-safe.
class remote_source {
 public:
  using handle = std::uint32_t;

  explicit remote_source(remote_source_options o) : opts_((o.validate(), std::move(o))), http_(opts_.http) {
    vocab_ = opts_.vocab_size ? opts_.vocab_size : remote_vocab_size(http_);
  }

  [[nodiscard]] std::size_t vocab_size() const noexcept { return vocab_; }

  handle prefill(std::span<const token_id> prompt) {
    if (prompt.empty()) throw invalid_input("itscale: remote_source::prefill: the prompt is empty");
    detail::check_tokens(prompt, vocab_, "prompt");
    std::vector<token_id> seq(prompt.begin(), prompt.end());
    fetch(std::span<const std::vector<token_id>>(&seq, 1));
    return adopt(std::move(seq));
  }

  void extend(std::span<const handle> parents, std::span<const token_id> tokens, std::span<handle> children) {
    detail::check_extend_shape(parents.size(), tokens.size(), children.size());
    detail::check_tokens(tokens, vocab_, "tokens");
    std::vector<std::vector<token_id>> seqs(parents.size());
    for (std::size_t i = 0; i < parents.size(); ++i) {
      seqs[i] = sequence(parents[i]);
      seqs[i].push_back(tokens[i]);
    }
    fetch(seqs);
    seqs_.reserve(seqs_.size() + seqs.size());  // adopt cannot fail half-way
    live_.reserve(live_.size() + seqs.size());
    for (std::size_t i = 0; i < seqs.size(); ++i) children[i] = adopt(std::move(seqs[i]));
  }

  [[nodiscard]] logits_view logits() noexcept { return {rows_.data(), rows_count_, vocab_}; }

  void release(handle h) noexcept {
    if (h < live_.size() && live_[h]) {
      live_[h] = false;
      seqs_[h] = {};
      free_.push_back(h);
      --live_count_;
    }
  }

  [[nodiscard]] std::size_t live_handles() const noexcept { return live_count_; }
  /// The tokens of a live handle.
  [[nodiscard]] const std::vector<token_id>& sequence(handle h) const {
    if (h >= live_.size() || !live_[h]) throw invalid_input("itscale: remote_source: handle " + std::to_string(h) + " is not live");
    return seqs_[h];
  }
  [[nodiscard]] const remote_usage& usage() const noexcept { return usage_; }
  [[nodiscard]] http_client& client() noexcept { return http_; }

 private:
  [[nodiscard]] std::string body(const std::vector<token_id>& seq) const {
    nlohmann::json j = opts_.extra;
    j["prompt"] = seq;
    j["max_tokens"] = 1;
    j["temperature"] = 0;
    j["logprobs"] = opts_.top_k;
    j["cache_prompt"] = true;  // llama-server: keep the prefix for the children
    if (!opts_.model.empty()) j["model"] = opts_.model;
    return j.dump();
  }

  // One row per sequence, into rows_ (which changes only when every answer is usable).
  void fetch(std::span<const std::vector<token_id>> seqs) {
    std::vector<http_request> reqs;
    reqs.reserve(seqs.size());
    for (const auto& s : seqs) reqs.push_back({opts_.path, body(s)});
    const auto answers = http_.send(reqs);
    std::vector<float> rows(seqs.size() * vocab_, -std::numeric_limits<float>::infinity());
    remote_usage u;
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      const detail::completion_reader rd(vocab_, http_.what(reqs[i]));
      const auto j = http_.parse(reqs[i], answers[i]);
      const auto ch = rd.choices(j);
      if (ch[0].top.empty() || ch[0].top[0].empty()) rd.fail("the answer has no top log-probs for the next token");
      fill_row(ch[0].top[0], std::span<float>(rows.data() + i * vocab_, vocab_));
      const auto us = detail::completion_reader::usage(j);
      u.prompt_tokens += us.prompt_tokens;
      u.cached_tokens += us.cached_tokens;
      u.completion_tokens += us.completion_tokens;
    }
    rows_ = std::move(rows);
    rows_count_ = seqs.size();
    usage_.requests += seqs.size();
    usage_.prompt_tokens += u.prompt_tokens;
    usage_.cached_tokens += u.cached_tokens;
    usage_.completion_tokens += u.completion_tokens;
  }

  void fill_row(const std::vector<std::pair<token_id, double>>& top, std::span<float> row) const {
    double mass = 0;
    for (const auto& [id, lp] : top) {
      row[static_cast<std::size_t>(id)] = static_cast<float>(lp);
      mass += std::exp(lp);
    }
    const std::size_t others = vocab_ > top.size() ? vocab_ - top.size() : 0;
    if (opts_.rest != remote_rest::spread || others == 0 || !(mass < 1.0)) return;
    const auto each = static_cast<float>(std::log((1.0 - mass) / static_cast<double>(others)));
    for (float& x : row)
      if (x == -std::numeric_limits<float>::infinity()) x = each;
  }

  handle adopt(std::vector<token_id> seq) {
    handle h;
    if (!free_.empty()) {
      h = free_.back();
      free_.pop_back();
    } else {
      h = static_cast<handle>(seqs_.size());
      seqs_.emplace_back();
      live_.push_back(false);
    }
    seqs_[h] = std::move(seq);
    live_[h] = true;
    ++live_count_;
    return h;
  }

  remote_source_options opts_;
  http_client http_;
  std::size_t vocab_ = 0;
  std::vector<std::vector<token_id>> seqs_;
  std::vector<bool> live_;
  std::vector<handle> free_;
  std::size_t live_count_ = 0;
  std::vector<float> rows_;
  std::size_t rows_count_ = 0;
  remote_usage usage_;
};

static_assert(LogitSource<remote_source>);

ITSCALE_END_NAMESPACE
