#pragma once
/// \file token_rules.hpp
/// Rules about specific tokens:
/// - `min_new_tokens_rule` (HF `MinNewTokensLengthLogitsProcessor`): EOS ids are masked until
///   `min_new_tokens` tokens have been generated.
/// - `logit_bias` (OpenAI `logit_bias`): a fixed additive bias per token.
/// - `bad_words` (HF `NoBadWordsLogitsProcessor`): banned token sequences; the last token of a
///   banned sequence is masked whenever the sequence ends with the rest of it.
/// - `allowed_tokens` : the hook a grammar or constrained-decoding engine plugs into; it writes a
///   bitmask of allowed tokens (bit t of word t/32, xgrammar's layout) and every other token is
///   masked.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/processors/processor.hpp"

ITSCALE_BEGIN_NAMESPACE

class min_new_tokens_rule {
 public:
  /// Throws `invalid_option` when `min_new_tokens > 0` and `eos` is empty (nothing to suppress).
  min_new_tokens_rule(std::size_t min_new_tokens, std::vector<token_id> eos)
      : min_(min_new_tokens), eos_(std::move(eos)) {
    if (min_ > 0 && eos_.empty())
      throw invalid_option("itscale: min_new_tokens > 0 needs at least one eos_token_id");
  }

  void apply(std::span<float> row, const step_context& ctx) const noexcept {
    if (ctx.generated() >= min_) return;
    for (token_id e : eos_)
      if (static_cast<std::size_t>(e) < row.size()) row[static_cast<std::size_t>(e)] = masked_logit;
  }

 private:
  std::size_t min_;
  std::vector<token_id> eos_;
};

class logit_bias {
 public:
  /// Throws `invalid_option` for a negative token id or a NaN bias (`-inf` bans the token).
  explicit logit_bias(std::vector<std::pair<token_id, float>> bias) : bias_(std::move(bias)) {
    for (const auto& [t, b] : bias_) {
      if (t < 0) throw invalid_option("itscale: logit_bias token id must be >= 0, got " + std::to_string(t));
      if (std::isnan(b) || b == INFINITY)
        throw invalid_option("itscale: logit_bias for token " + std::to_string(t) + " must not be NaN or +inf");
    }
  }

  void apply(std::span<float> row, const step_context&) const noexcept {
    for (const auto& [t, b] : bias_)
      if (static_cast<std::size_t>(t) < row.size()) row[static_cast<std::size_t>(t)] += b;
  }

 private:
  std::vector<std::pair<token_id, float>> bias_;
};

class bad_words {
 public:
  /// Throws `invalid_option` for an empty sequence or a negative token id.
  explicit bad_words(std::vector<std::vector<token_id>> sequences) : seqs_(std::move(sequences)) {
    for (std::size_t i = 0; i < seqs_.size(); ++i) {
      if (seqs_[i].empty()) throw invalid_option("itscale: bad_words_ids[" + std::to_string(i) + "] is empty");
      for (token_id t : seqs_[i])
        if (t < 0)
          throw invalid_option("itscale: bad_words_ids[" + std::to_string(i) + "] has a negative token id " +
                               std::to_string(t));
    }
  }

  void apply(std::span<float> row, const step_context& ctx) const noexcept {
    const auto seq = ctx.tokens;
    for (const auto& banned : seqs_) {
      const std::size_t m = banned.size() - 1;  // the prefix that must already be present
      if (m > seq.size()) continue;
      if (std::equal(banned.begin(), banned.begin() + static_cast<std::ptrdiff_t>(m), seq.end() - static_cast<std::ptrdiff_t>(m)) &&
          static_cast<std::size_t>(banned.back()) < row.size())
        row[static_cast<std::size_t>(banned.back())] = masked_logit;
    }
  }

 private:
  std::vector<std::vector<token_id>> seqs_;
};

/// Signature of the allowed-token hook: given the sequence so far (prompt + generated) and the
/// prompt length, clear the bits of forbidden tokens in `allowed` (all bits start set).
using allowed_tokens_fn =
    std::function<void(std::span<const token_id> tokens, std::size_t prompt_length, std::span<std::uint32_t> allowed)>;

class allowed_tokens {
 public:
  /// Throws `invalid_option` for an empty function.
  explicit allowed_tokens(allowed_tokens_fn fn) : fn_(std::move(fn)) {
    if (!fn_) throw invalid_option("itscale: allowed_tokens hook is empty");
  }

  /// Not noexcept: the hook is user code and its exceptions propagate to the caller.
  void apply(std::span<float> row, const step_context& ctx) const {
    const std::size_t words = (row.size() + 31) / 32;
    auto bits = std::span(ctx.ws->bits).first(words);
    std::fill(bits.begin(), bits.end(), ~std::uint32_t{0});
    fn_(ctx.tokens, ctx.prompt_length, bits);
    for (std::size_t i = 0; i < row.size(); ++i)
      if (!detail::test_bit(bits, i)) row[i] = masked_logit;
  }

 private:
  allowed_tokens_fn fn_;
};

ITSCALE_END_NAMESPACE
