#pragma once
// Test helpers of the selection methods (tests/unit/test_select*.cpp): a synthetic "answer"
// source whose first generated token is the answer, drawn with probabilities the test sets.

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include <itscale/backends/function_source.hpp>
#include <itscale/core/types.hpp>

namespace select_support {

using itscale::token_id;

/// Vocabulary of the answer source: tokens 0..4 are answers, 5 is "no answer", 6 is EOS, 15
/// starts every prompt; prompts are [15, a, b] with a, b < 15, naming problem a * 15 + b.
inline constexpr std::size_t vocab = 16;
inline constexpr token_id no_answer = 5;
inline constexpr token_id eos = 6;
inline constexpr std::size_t answers = 5;
inline constexpr std::size_t problems = 225;

/// The answer distribution of problem `id` (answers 0..4 then "no answer"): the mode is answer
/// id % 5 with probability q in [0.35, 0.9) (spread by a hash of id), 5 % go to "no answer",
/// and the rest is split 4:3:2:1 over the other answers — always less than q, so the mode is
/// the right answer.
inline std::array<double, 6> distribution(std::size_t id) {
  const std::uint64_t h = (id + 1) * 0x9E3779B97F4A7C15ull;
  const double q = 0.35 + 0.55 * static_cast<double>(h >> 11) * 0x1.0p-53;
  std::array<double, 6> p{};
  const std::size_t mode = id % answers;
  p[mode] = q;
  p[5] = 0.05;
  const double rest = 1 - q - 0.05;
  const double share[] = {0.4, 0.3, 0.2, 0.1};
  std::size_t k = 0;
  for (std::size_t a = 0; a < answers; ++a)
    if (a != mode) p[a] = rest * share[k++];
  return p;
}

inline std::vector<token_id> prompt_of(std::size_t id) {
  return {15, static_cast<token_id>(id / 15), static_cast<token_id>(id % 15)};
}

/// The source: after a 3-token prompt, the logits are log p of the problem's distribution;
/// after the answer, EOS is the only token.
inline auto answer_source() {
  return itscale::from_function(vocab, [](std::span<const token_id> prefix, std::span<float> row) {
    for (auto& x : row) x = itscale::masked_logit;
    if (prefix.size() == 3) {
      const auto p = distribution(static_cast<std::size_t>(prefix[1]) * 15 + static_cast<std::size_t>(prefix[2]));
      for (std::size_t t = 0; t < p.size(); ++t) row[t] = static_cast<float>(std::log(p[t]));
    } else {
      row[eos] = 0;
    }
  });
}

/// Sampling options for the answer source: one answer token then EOS.
inline itscale::sampling_options answer_sampling(std::uint64_t seed = 1) {
  return {.stop = {.max_new_tokens = 2, .eos_token_id = {eos}}, .do_sample = true, .seed = seed};
}

/// The extractor: the first token, if it is an answer.
inline std::optional<int> extract_answer(std::span<const token_id> t) {
  if (t.empty() || t[0] >= static_cast<token_id>(answers)) return std::nullopt;
  return static_cast<int>(t[0]);
}

}  // namespace select_support
