#pragma once
/// \file remote_proposer.hpp
/// A `StepProposer` over an OpenAI-compatible server: the efficient way to run self-consistency,
/// best-of-N, step beam search, DVTS, REBASE and MCTS over a remote model. A node's samples are
/// one `/v1/completions` request (`n` samples, `stop` = the step delimiters, `max_tokens` = the
/// step limit, `temperature` / `top_p` / `top_k`, a `seed`, `logprobs: 1` for the token ids); the
/// requests of a batch are sent concurrently and the server batches them. **Needs libcurl and
/// nlohmann-json.**
///
/// A state is the token sequence (prompt and steps); it holds nothing on the server, so it is
/// always "live" and `drop` / `restore` do nothing (the server's prefix cache plays the part of a
/// kept handle).
///
/// Two APIs (`remote_api`): OpenAI's `/v1/completions` and llama-server's native `/completion`.
/// Steps: over `/v1/completions` the server leaves the stop string out of its answer, so a step
/// that ended on `delimiters[i]` gets `delimiter_tokens[i]` appended (its tokens as the model
/// writes them); llama-server's `/completion` returns every token's id, the delimiter's too. A
/// step whose last token is an EOS id is terminal; one cut at `max_tokens` is not (a long step
/// continues); reaching `max_sequence_tokens` or `ends_sequence` is terminal. With several
/// delimiters the server must say which one matched (vLLM's `stop_reason`); llama-server does not,
/// so use one delimiter there. `model_logprob` is the sum of the model's log-probs of the step's
/// tokens as the server returns them (full-vocabulary, before temperature; the appended delimiter
/// is not included); `logprob` is the same number (one request gives one of the two).
///
/// Randomness: the request for node `id`'s samples `drawn ...` carries the seed
/// `counter_rng(seed, id).bits(drawn)`, so a node's samples do not depend on the batch
/// (llama-server derives seed + j for the j-th of `n`). Identical steps are merged (`count`).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/backends/remote/completion_json.hpp"
#include "itscale/backends/remote/http_client.hpp"
#include "itscale/backends/remote/remote_source.hpp"
#include "itscale/core/abi.hpp"
#include "itscale/core/compute.hpp"
#include "itscale/core/detail/validate_tokens.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/rng.hpp"
#include "itscale/core/sequence.hpp"
#include "itscale/steps/detail/source_proposer.hpp"
#include "itscale/steps/step_proposer.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Which completion API a `remote_proposer` speaks.
enum class remote_api : std::uint8_t {
  /// OpenAI's `/v1/completions` (vLLM, SGLang, llama-server): token ids from the log-probs
  /// (llama-server's `logprobs.content[].id`, vLLM's `return_tokens_as_token_ids`); the stop string
  /// is left out of the answer and `delimiter_tokens` are appended.
  openai,
  /// llama-server's native `/completion` with `return_tokens`: every generated token comes back as
  /// an id, the delimiter's included, with `stop_type` (eos / word / limit) and per-sample usage.
  /// Use it with llama-server: its `/v1/completions` drops one log-prob too many after a stop
  /// string when the tokenizer adds a dummy-space prefix (the arith model's does), and counts the
  /// usage of the first of `n` samples only.
  llama_server,
};

/// Options of `remote_proposer`.
struct remote_proposer_options {
  http_options http = {};
  std::size_t vocab_size = 0;  ///< 0: asked from the server
  std::string model = {};           ///< the request's "model" (vLLM needs it); empty: not sent
  remote_api api = remote_api::openai;
  std::string path = {};            ///< empty: /v1/completions (openai) or /completion (llama_server)
  std::vector<std::string> delimiters = {};                  ///< stop strings; non-empty
  std::vector<std::vector<token_id>> delimiter_tokens = {};  ///< one id sequence per delimiter
  std::vector<token_id> eos_token_id = {};                   ///< a step ending with one is terminal
  float temperature = 1.0f;                                  ///< >= 0 and finite
  float top_p = 1.0f;                                        ///< in (0, 1]
  std::size_t top_k = 0;                                     ///< 0: off
  std::uint64_t seed = 0;
  std::size_t max_step_tokens = 64;      ///< >= 1
  std::size_t max_sequence_tokens = 0;   ///< prompt included; reaching it is terminal; 0 = none
  std::size_t max_samples_per_request = 16;  ///< the server's limit on `n` (llama-server: --parallel)
  sequence_predicate ends_sequence = {};
  nlohmann::json extra = nlohmann::json::object();  ///< merged into every request

  /// Throws `invalid_option` naming the broken rule.
  void validate() const {
    const auto fail = [](const std::string& w) { throw invalid_option("itscale: remote_proposer_options." + w); };
    http.validate();
    if (delimiters.empty()) fail("delimiters is empty: give at least one step delimiter (e.g. \";\")");
    if (api == remote_api::openai && delimiter_tokens.size() != delimiters.size())
      fail("delimiter_tokens must give the token ids of each delimiter (" + std::to_string(delimiters.size()) + " delimiters, " +
           std::to_string(delimiter_tokens.size()) + " id lists)");
    for (std::size_t i = 0; i < delimiters.size(); ++i)
      if (delimiters[i].empty() || (i < delimiter_tokens.size() && delimiter_tokens[i].empty()))
        fail("delimiters[" + std::to_string(i) + "] or its tokens are empty");
    if (!(temperature >= 0.0f) || !std::isfinite(temperature)) fail("temperature must be finite and >= 0");
    if (!(top_p > 0.0f && top_p <= 1.0f)) fail("top_p must be in (0, 1]");
    if (max_step_tokens == 0) fail("max_step_tokens must be >= 1, got 0");
    if (max_samples_per_request == 0) fail("max_samples_per_request must be >= 1, got 0");
    if (!extra.is_object()) fail("extra must be a JSON object");
  }
};

/// The remote step proposer (see the file comment). Satisfies `StepProposer`. Not thread-safe.
class remote_proposer {
 public:
  using state = std::vector<token_id>;
  using candidate = step_candidate<state>;

  explicit remote_proposer(remote_proposer_options o) : opts_((o.validate(), std::move(o))), http_(opts_.http) {
    if (opts_.path.empty()) opts_.path = opts_.api == remote_api::openai ? "/v1/completions" : "/completion";
    vocab_ = opts_.vocab_size ? opts_.vocab_size : remote_vocab_size(http_);
    for (const auto& d : opts_.delimiter_tokens) detail::check_tokens(d, vocab_, "delimiter_tokens");
    detail::check_tokens(opts_.eos_token_id, vocab_, "eos_token_id");
  }

  [[nodiscard]] std::size_t vocab_size() const noexcept { return vocab_; }

  state root(std::span<const token_id> prompt) {
    if (prompt.empty()) throw invalid_input("itscale: remote_proposer::root: the prompt is empty");
    detail::check_tokens(prompt, vocab_, "prompt");
    return {prompt.begin(), prompt.end()};
  }

  /// For each item, `samples` (or `n`) sampled steps of its node, identical ones merged, in sample
  /// order. Throws `invalid_input` for a bad batch, `remote_error` / `backend_error` for a failed
  /// or unusable answer (after every request of the call has ended).
  std::vector<std::vector<candidate>> propose(std::span<const propose_item<state>> batch, std::size_t n) {
    check(batch, n);
    std::vector<http_request> reqs;
    std::vector<std::size_t> owner;  // the batch item of each request
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const std::size_t k = batch[i].samples == 0 ? n : batch[i].samples;
      for (std::size_t done = 0; done < k; done += opts_.max_samples_per_request) {
        const std::size_t m = std::min(opts_.max_samples_per_request, k - done);
        reqs.push_back({opts_.path, body(batch[i], done, m)});
        owner.push_back(i);
      }
    }
    std::vector<std::string> answers;
    {
      const detail::scoped_seconds timing(stats_.source_seconds);
      answers = http_.send(reqs);
    }
    std::vector<std::vector<candidate>> out(batch.size());
    for (std::size_t r = 0; r < reqs.size(); ++r) read(reqs[r], answers[r], *batch[owner[r]].node, out[owner[r]]);
    return out;
  }

  [[nodiscard]] std::span<const token_id> tokens_of(const state& s) const noexcept { return s; }
  [[nodiscard]] bool is_live(const state&) const noexcept { return true; }
  void drop(state&) noexcept {}
  void restore(state&) {}
  /// Requests as prefill calls (prompt tokens the server evaluated, i.e. not served from its
  /// prefix cache, as `prefill_tokens`), generated tokens as `extend_rows`, time in the calls.
  compute_stats& stats() noexcept { return stats_; }
  [[nodiscard]] const remote_usage& usage() const noexcept { return usage_; }
  [[nodiscard]] http_client& client() noexcept { return http_; }

 private:
  void check(std::span<const propose_item<state>> batch, std::size_t n) const {
    std::vector<std::uint32_t> ids;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto& it = batch[i];
      const std::string at = "itscale: remote_proposer::propose: batch item " + std::to_string(i);
      if (it.node == nullptr || it.node->empty()) throw invalid_input(at + " has no node or an empty one");
      if ((it.samples == 0 ? n : it.samples) == 0) throw invalid_input(at + " asks for 0 candidates");
      if (opts_.max_sequence_tokens != 0 && it.node->size() >= opts_.max_sequence_tokens)
        throw invalid_input(at + ": the node already holds max_sequence_tokens tokens (it is terminal)");
      ids.push_back(it.id);
    }
    std::sort(ids.begin(), ids.end());
    if (std::adjacent_find(ids.begin(), ids.end()) != ids.end())
      throw invalid_input("itscale: remote_proposer::propose: two batch items share an id (an id keys a node's random streams)");
  }

  [[nodiscard]] std::string body(const propose_item<state>& it, std::size_t done, std::size_t m) const {
    std::size_t limit = opts_.max_step_tokens;
    if (opts_.max_sequence_tokens != 0) limit = std::min(limit, opts_.max_sequence_tokens - it.node->size());
    nlohmann::json j = opts_.extra;
    j["prompt"] = *it.node;
    j["n"] = m;
    j[opts_.api == remote_api::openai ? "max_tokens" : "n_predict"] = limit;
    j["stop"] = opts_.delimiters;
    j["temperature"] = opts_.temperature;
    j["top_p"] = opts_.top_p;
    // Every filter is sent, off ones too: llama-server's defaults (top_k 40, top_p 0.95, min_p
    // 0.05) would otherwise shape the samples.
    j["top_k"] = opts_.top_k;
    j["min_p"] = 0;
    const auto bits = counter_rng(opts_.seed, it.id).bits(static_cast<std::uint32_t>(it.drawn + done), 0);
    j["seed"] = bits[0] >> 1;  // a non-negative 31-bit seed: every server accepts it
    if (opts_.api == remote_api::openai) {
      j["logprobs"] = 1;  // the ids of the sampled tokens (and their log-probs)
    } else {
      j["return_tokens"] = true;
      j["n_probs"] = 1;
    }
    j["cache_prompt"] = true;
    if (!opts_.model.empty()) j["model"] = opts_.model;
    return j.dump();
  }

  void read(const http_request& r, const std::string& answer, const state& node, std::vector<candidate>& cands) {
    const detail::completion_reader rd(vocab_, http_.what(r));
    const auto j = http_.parse(r, answer);
    detail::completion_usage us;
    auto choices = opts_.api == remote_api::openai ? rd.choices(j) : rd.native(j, us);
    if (opts_.api == remote_api::openai) us = detail::completion_reader::usage(j);
    usage_.requests += 1;
    usage_.prompt_tokens += us.prompt_tokens;
    usage_.cached_tokens += us.cached_tokens;
    usage_.completion_tokens += us.completion_tokens;
    stats_.prefill_calls += 1;
    stats_.prefill_tokens += us.prompt_tokens - std::min(us.cached_tokens, us.prompt_tokens);
    stats_.extend_rows += us.completion_tokens;
    for (auto& ch : choices) add(step_of(rd, ch, node), cands);
  }

  [[nodiscard]] candidate step_of(const detail::completion_reader& rd, detail::completion_choice& ch, const state& node) const {
    candidate c;
    for (double lp : ch.logprobs) c.model_logprob += lp;
    c.logprob = c.model_logprob;
    c.tokens = std::move(ch.ids);
    const bool eos = !c.tokens.empty() && std::find(opts_.eos_token_id.begin(), opts_.eos_token_id.end(), c.tokens.back()) !=
                                              opts_.eos_token_id.end();
    if (eos) {
      c.stop = stop_reason::eos;
    } else if (ch.finish_reason == "word") {  // llama_server: the delimiter's tokens are in the answer
      c.stop = stop_reason::stop_sequence;
    } else if (ch.finish_reason == "stop") {
      const auto& d = opts_.delimiter_tokens[delimiter_of(rd, ch)];
      c.tokens.insert(c.tokens.end(), d.begin(), d.end());
      c.stop = stop_reason::stop_sequence;
    } else {
      c.stop = stop_reason::max_new_tokens;
    }
    if (c.tokens.empty()) rd.fail("a sample has no tokens and did not end on a delimiter");
    c.state = node;
    c.state.insert(c.state.end(), c.tokens.begin(), c.tokens.end());
    c.terminal = eos || (opts_.max_sequence_tokens != 0 && c.state.size() >= opts_.max_sequence_tokens) ||
                 (opts_.ends_sequence && opts_.ends_sequence(c.state));
    return c;
  }

  [[nodiscard]] std::size_t delimiter_of(const detail::completion_reader& rd, const detail::completion_choice& ch) const {
    if (opts_.delimiters.size() == 1) return 0;
    for (std::size_t i = 0; i < opts_.delimiters.size(); ++i)
      if (ch.stop_reason == opts_.delimiters[i]) return i;
    rd.fail("the server did not say which stop string ended the step (stop_reason); with this server use one delimiter");
  }

  static void add(candidate c, std::vector<candidate>& cands) {
    for (auto& o : cands)
      if (o.tokens == c.tokens) {
        o.count += 1;
        return;
      }
    cands.push_back(std::move(c));
  }

  remote_proposer_options opts_;
  http_client http_;
  std::size_t vocab_ = 0;
  compute_stats stats_;
  remote_usage usage_;
};

static_assert(StepProposer<remote_proposer>);

ITSCALE_END_NAMESPACE
