#pragma once
/// \file generation.hpp
/// What the token-level decoders take and return.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "itscale/core/types.hpp"

namespace itscale {
inline namespace v0 {

/// One prompt to decode from. Sample j of this request draws its randomness from the stream
/// (seed, sequence_id + j, step), so the same request gives the same samples whatever else is in
/// the batch, and samples can be drawn one at a time by advancing `sequence_id`.
struct decode_request {
  std::span<const token_id> prompt;
  std::uint64_t sequence_id = 0;
};

/// Why a sequence ended.
enum class stop_reason : std::uint8_t {
  eos,             ///< produced one of `eos_token_id` (kept as the last token)
  stop_sequence,   ///< the generated tokens end with one of `stop_sequences` (kept)
  max_new_tokens,  ///< reached `max_new_tokens`
};

/// One decoded sequence.
struct generation {
  std::size_t request = 0;               ///< index of its request
  std::size_t sample = 0;                ///< index among the request's `num_return_sequences`
  std::vector<token_id> tokens;          ///< generated tokens (prompt excluded)
  std::vector<float> logprobs;           ///< log-prob of each token under the processed distribution
  std::vector<float> model_logprobs;     ///< log-prob of each token under the source's raw logits
  double logprob_sum = 0;                ///< sum of `logprobs`
  stop_reason stop = stop_reason::max_new_tokens;
};

/// Passed to the streaming callback after each chosen token.
struct token_event {
  std::size_t request = 0;
  std::size_t sample = 0;
  std::size_t step = 0;  ///< 0 for the first generated token
  token_id token = 0;
  float logprob = 0;     ///< under the processed distribution
};

using token_callback = std::function<void(const token_event&)>;

}  // namespace v0
}  // namespace itscale
