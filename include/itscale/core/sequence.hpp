#pragma once
/// \file sequence.hpp
/// The vocabulary every decoder and search shares: how a request is stated (`request`), when a
/// sequence stops (`stopping`, `stop_reason`), what a generated sequence is (`generation`), and
/// the streaming event.
///
/// One floating type per quantity: a token's log-prob is `float` (what the kernels compute), a
/// sum of log-probs and a search score are `double`.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/detail/validate_tokens.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE

/// When a sequence stops; used by every entry point. Designated initialisers:
///
///     itscale::stopping{.max_new_tokens = 64, .eos_token_id = {2}, .stop_sequences = {{13, 13}}}
struct stopping {
  std::size_t max_new_tokens = 20;                         ///< >= 1
  std::size_t min_new_tokens = 0;                          ///< EOS masked until this many; <= max_new_tokens
  std::vector<token_id> eos_token_id = {};                 ///< any of them ends a sequence (kept in the output)
  std::vector<std::vector<token_id>> stop_sequences = {};  ///< generated tokens ending with one stop (kept)

  /// Rules that do not depend on the vocabulary; `owner` names the options struct in messages.
  void validate(const char* owner = "stopping") const {
    const auto fail = [owner](const std::string& what) {
      throw invalid_option(std::string("itscale: ") + owner + "." + what);
    };
    if (max_new_tokens == 0) fail("max_new_tokens must be >= 1, got 0");
    if (min_new_tokens > max_new_tokens)
      fail("min_new_tokens (" + std::to_string(min_new_tokens) + ") must be <= max_new_tokens (" +
           std::to_string(max_new_tokens) + ")");
    if (min_new_tokens > 0 && eos_token_id.empty()) fail("min_new_tokens > 0 needs at least one eos_token_id");
    for (token_id e : eos_token_id)
      if (e < 0) fail("eos_token_id must be >= 0, got " + std::to_string(e));
    for (std::size_t i = 0; i < stop_sequences.size(); ++i) {
      if (stop_sequences[i].empty()) fail("stop_sequences[" + std::to_string(i) + "] is empty");
      for (token_id t : stop_sequences[i])
        if (t < 0) fail("stop_sequences[" + std::to_string(i) + "] has a negative token id");
    }
  }

  /// `validate(owner)` plus: every token id is inside the vocabulary.
  void validate(std::size_t vocab, const char* owner = "stopping") const {
    validate(owner);
    const auto fail = [owner, vocab](const std::string& what) {
      throw invalid_option(std::string("itscale: ") + owner + "." + what + " is outside the vocabulary (vocab size " +
                           std::to_string(vocab) + ")");
    };
    for (token_id e : eos_token_id)
      if (static_cast<std::size_t>(e) >= vocab) fail("eos_token_id " + std::to_string(e));
    for (const auto& s : stop_sequences)
      for (token_id t : s)
        if (static_cast<std::size_t>(t) >= vocab) fail("stop_sequences token " + std::to_string(t));
  }

  /// True if `t` is one of the EOS ids.
  [[nodiscard]] bool is_eos(token_id t) const noexcept {
    return std::find(eos_token_id.begin(), eos_token_id.end(), t) != eos_token_id.end();
  }

  /// True if `generated` ends with one of the stop sequences.
  [[nodiscard]] bool ends_with_stop(std::span<const token_id> generated) const noexcept {
    return std::any_of(stop_sequences.begin(), stop_sequences.end(), [&](const auto& s) {
      return s.size() <= generated.size() && std::equal(s.begin(), s.end(), generated.end() - static_cast<std::ptrdiff_t>(s.size()));
    });
  }
};

/// Why a sequence ended.
enum class stop_reason : std::uint8_t {
  eos,             ///< produced one of `eos_token_id` (kept as the last token)
  stop_sequence,   ///< the generated tokens end with one of `stop_sequences` (kept)
  max_new_tokens,  ///< reached `max_new_tokens`
  budget,          ///< cut by a `compute_budget` limit
  cancelled,       ///< cut by the budget's `stop_token`
};

/// Names a stop reason for messages and tables.
[[nodiscard]] constexpr const char* to_string(stop_reason r) noexcept {
  switch (r) {
    case stop_reason::eos: return "eos";
    case stop_reason::stop_sequence: return "stop_sequence";
    case stop_reason::max_new_tokens: return "max_new_tokens";
    case stop_reason::budget: return "budget";
    case stop_reason::cancelled: return "cancelled";
  }
  return "?";
}

/// One prompt to decode or search from.
///
/// Randomness: sample j of a request draws from the counter-based stream
/// (seed, stream << 32 | (first_sample + j), step), so
/// - no two samples of one call share a stream: the requests of one call must have distinct
///   `stream` values (checked: `invalid_input` otherwise);
/// - a request's samples do not depend on what else is in the batch (batch-invariance);
/// - more samples of the same request are drawn later, continuing the same sequence of streams,
///   by calling again with `first_sample` = the number already drawn.
struct request {
  std::span<const token_id> prompt;
  std::uint32_t stream = 0;
  std::uint32_t first_sample = 0;
};

/// One generated sequence, the result type of every decoder and search.
struct generation {
  std::size_t request = 0;            ///< index of its request in the call
  std::size_t sample = 0;             ///< sample index (`first_sample` + j), or rank among a search's results
  std::vector<token_id> tokens;       ///< generated tokens (prompt excluded)
  std::vector<float> logprobs;        ///< each token's log-prob under the processed distribution (empty if not asked)
  std::vector<float> model_logprobs;  ///< each token's log-prob under the source's raw logits (empty if not asked; -inf for a token the source masked)
  double logprob_sum = 0;             ///< sum of the processed log-probs
  double score = 0;                   ///< what the method ranks by (`logprob_sum` unless the method says otherwise)
  stop_reason stop = stop_reason::max_new_tokens;
};

/// Passed to the streaming callback after each chosen token.
struct token_event {
  std::size_t request = 0;
  std::size_t sample = 0;
  std::size_t step = 0;  ///< 0 for the first generated token
  token_id token = 0;
  float logprob = 0;     ///< under the processed distribution (0 if log-probs are not computed)
};

using token_callback = std::function<void(const token_event&)>;

namespace detail {

/// The 64-bit stream id of sample `sample` of a request (see `request`).
[[nodiscard]] constexpr std::uint64_t sample_stream(std::uint32_t stream, std::uint64_t sample) noexcept {
  return (std::uint64_t{stream} << 32) | (sample & 0xFFFFFFFFull);
}

/// Throws `invalid_input` when two requests of one call share a stream or a sample range
/// overflows 32 bits.
inline void check_streams(std::span<const std::uint32_t> streams, std::span<const std::uint32_t> first_samples,
                          std::size_t samples) {
  std::vector<std::uint32_t> sorted(streams.begin(), streams.end());
  std::sort(sorted.begin(), sorted.end());
  const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  if (dup != sorted.end())
    throw invalid_input("itscale: two requests share stream " + std::to_string(*dup) +
                        ": give each request of a call its own `stream` so their samples draw different randomness");
  for (std::size_t i = 0; i < first_samples.size(); ++i)
    if (std::uint64_t{first_samples[i]} + samples > 0x100000000ull)
      throw invalid_input("itscale: request " + std::to_string(i) + ": first_sample + samples exceeds 2^32");
}


/// Throws `invalid_input` for a call `who` over `requests` with `samples` samples each that cannot
/// run: no request, an empty prompt, a prompt token outside [0, vocab), two requests sharing a
/// stream, a sample range past 2^32.
inline void check_requests(std::span<const request> requests, std::size_t vocab, std::size_t samples, const char* who) {
  if (requests.empty()) throw invalid_input(std::string("itscale: ") + who + " needs at least one request");
  std::vector<std::uint32_t> streams, firsts;
  for (std::size_t r = 0; r < requests.size(); ++r) {
    if (requests[r].prompt.empty()) throw invalid_input("itscale: request " + std::to_string(r) + " has an empty prompt");
    check_tokens(requests[r].prompt, vocab, "prompt");
    streams.push_back(requests[r].stream);
    firsts.push_back(requests[r].first_sample);
  }
  check_streams(streams, firsts, samples);
}

}  // namespace detail

ITSCALE_END_NAMESPACE
