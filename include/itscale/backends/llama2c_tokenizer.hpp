#pragma once
/// \file llama2c_tokenizer.hpp
/// llama2.c's `tokenizer.bin` and its BPE: int32 max_token_length, then per token float32 score,
/// int32 length, the bytes. The file has no count: tokens run to the end of the data, and the
/// count must equal the model's vocabulary (`check_vocab_match`). Token 1 is BOS, 2 is EOS, and
/// 3..258 are the byte-fallback tokens `<0x00>`..`<0xFF>`.
///
/// `encode` reproduces llama2.c's `encode` (run.c): optional BOS, a dummy " " prefix for non-empty
/// text, one token per UTF-8 code point (its vocabulary entry, else its bytes as byte tokens), then
/// repeatedly merge the adjacent pair whose concatenation is the best-scoring vocabulary entry
/// (first pair on equal scores). `decode` follows llama2.c's `decode`: byte tokens become their
/// byte, and a piece right after BOS loses its leading space.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/types.hpp"
#include "itscale/backends/support/binary_reader.hpp"
#include "itscale/core/detail/validate_tokens.hpp"

ITSCALE_BEGIN_NAMESPACE

/// Caps on a tokenizer file's values (a corrupt length must not allocate gigabytes).
struct llama2c_tokenizer_limits {
  std::size_t max_token_length = 1024;
  std::size_t max_vocab = std::size_t{1} << 22;

  /// Throws `invalid_option` for a zero cap.
  void validate() const {
    if (max_token_length == 0 || max_vocab == 0)
      throw invalid_option("itscale: llama2c_tokenizer_limits: caps must be positive");
  }
};

/// A llama2.c tokenizer. See the file comment.
class llama2c_tokenizer {
 public:
  static constexpr token_id bos = 1;
  static constexpr token_id eos = 2;
  static constexpr token_id first_byte_token = 3;  ///< `<0x00>`; byte b is token 3 + b

  /// Loads `tokenizer.bin`. Throws `format_error` naming the file and the problem (missing,
  /// truncated entry, negative or oversized length, length above max_token_length, non-finite
  /// score, no tokens).
  [[nodiscard]] static llama2c_tokenizer load(const std::filesystem::path& path,
                                              const llama2c_tokenizer_limits& limits = {}) {
    auto in = detail::binary_reader::open(path);
    return read(in, limits);
  }

  /// Parses a tokenizer held in memory; `name` appears in error messages.
  [[nodiscard]] static llama2c_tokenizer parse(std::span<const std::byte> bytes, std::string_view name = "<memory>",
                                               const llama2c_tokenizer_limits& limits = {}) {
    detail::binary_reader in(bytes, std::string(name));
    return read(in, limits);
  }

  [[nodiscard]] std::size_t vocab_size() const noexcept { return pieces_.size(); }
  [[nodiscard]] std::size_t max_token_length() const noexcept { return max_token_length_; }
  /// The vocabulary string of token `t` (`invalid_input` unless `0 <= t < vocab_size()`).
  [[nodiscard]] const std::string& piece(token_id t) const {
    detail::check_tokens(std::span<const token_id>(&t, 1), vocab_size(), "token");
    return pieces_[static_cast<std::size_t>(t)];
  }
  /// The merge score of token `t` (`invalid_input` unless `0 <= t < vocab_size()`).
  [[nodiscard]] float score(token_id t) const {
    detail::check_tokens(std::span<const token_id>(&t, 1), vocab_size(), "token");
    return scores_[static_cast<std::size_t>(t)];
  }

  /// The id of the vocabulary entry equal to `s`, or -1 (lowest id if the vocabulary repeats it).
  [[nodiscard]] token_id lookup(std::string_view s) const {
    const auto it = index_.find(std::string(s));
    return it == index_.end() ? -1 : it->second;
  }

  /// Tokenizes `text` as llama2.c does (see the file comment), with BOS first when `add_bos`.
  /// Throws `invalid_input` if a byte must fall back to a byte token and the vocabulary has none
  /// (fewer than 259 entries), or BOS is asked of a one-token vocabulary. Cost: quadratic in the number of code points (llama2.c's scan).
  [[nodiscard]] std::vector<token_id> encode(std::string_view text, bool add_bos = true) const {
    std::vector<token_id> out;
    if (add_bos) {
      if (static_cast<std::size_t>(bos) >= vocab_size())
        throw invalid_input("itscale: llama2c_tokenizer: BOS (token 1) requested, but the vocabulary has " +
                            std::to_string(vocab_size()) + " token(s)");
      out.push_back(bos);
    }
    if (!text.empty()) {
      // llama2.c looks " " up and would push -1 if it were missing; we fall back to its byte.
      const token_id space = lookup(" ");
      out.push_back(space >= 0 ? space : byte_token(' '));
    }
    // One entry per code point: a lead byte and at most three continuation bytes (as llama2.c).
    const auto is_cont = [](char c) { return (static_cast<unsigned char>(c) & 0xC0u) == 0x80u; };
    std::size_t i = 0;
    while (i < text.size()) {
      std::size_t n = 1;
      while (i + n < text.size() && is_cont(text[i + n]) && n < 4) ++n;
      const std::string_view cp = text.substr(i, n);
      const token_id id = lookup(cp);
      if (id >= 0)
        out.push_back(id);
      else
        for (char c : cp) out.push_back(byte_token(static_cast<unsigned char>(c)));
      i += n;
    }
    // Merge the best-scoring adjacent pair until none is in the vocabulary (BOS takes part, as in
    // llama2.c; its piece never forms a vocabulary entry with a neighbour in practice).
    std::string pair;
    for (;;) {
      float best = -1e10f;  // llama2.c's floor: pairs scoring below it are never merged
      token_id best_id = -1;
      std::size_t best_at = 0;
      for (std::size_t k = 0; k + 1 < out.size(); ++k) {
        pair.assign(pieces_[static_cast<std::size_t>(out[k])]);
        pair += pieces_[static_cast<std::size_t>(out[k + 1])];
        const token_id id = lookup(pair);
        if (id >= 0 && scores_[static_cast<std::size_t>(id)] > best) {
          best = scores_[static_cast<std::size_t>(id)];
          best_id = id;
          best_at = k;
        }
      }
      if (best_id < 0) break;
      out[best_at] = best_id;
      out.erase(out.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
    }
    return out;
  }

  /// The text of `t` when it follows `prev` (-1: nothing before): byte tokens `<0xXX>` give their
  /// byte, and the leading space of a piece right after BOS is dropped (SentencePiece's rule).
  [[nodiscard]] std::string decode(token_id prev, token_id t) const {
    detail::check_tokens(std::span<const token_id>(&t, 1), vocab_size(), "token");
    std::string_view p = pieces_[static_cast<std::size_t>(t)];
    if (prev == bos && !p.empty() && p.front() == ' ') p.remove_prefix(1);
    int byte = 0;
    if (parse_byte_piece(p, byte)) return std::string(1, static_cast<char>(byte));
    return std::string(p);
  }

  /// The text of a token sequence, as llama2.c prints it: BOS and EOS are not text (llama2.c never
  /// prints them), every other token is `decode(previous, token)`.
  [[nodiscard]] std::string decode(std::span<const token_id> tokens) const {
    detail::check_tokens(tokens, vocab_size(), "tokens");
    std::string s;
    token_id prev = -1;
    for (token_id t : tokens) {
      if (t != bos && t != eos) s += decode(prev, t);
      prev = t;
    }
    return s;
  }

 private:
  llama2c_tokenizer() = default;

  token_id byte_token(unsigned char b) const {
    const std::size_t id = static_cast<std::size_t>(first_byte_token) + b;
    if (id >= vocab_size())
      throw invalid_input("itscale: llama2c_tokenizer: byte 0x" + hex(b) + " needs byte-fallback token " +
                          std::to_string(id) + ", but the vocabulary has " + std::to_string(vocab_size()) +
                          " tokens");
    return static_cast<token_id>(id);
  }

  static std::string hex(unsigned b) {
    const char* digits = "0123456789ABCDEF";
    return {digits[(b >> 4) & 15u], digits[b & 15u]};
  }

  /// True for exactly "<0xHH>" (two hex digits, either case): the pieces of byte tokens.
  static bool parse_byte_piece(std::string_view p, int& byte) {
    if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return false;
    const auto val = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int hi = val(p[3]), lo = val(p[4]);
    if (hi < 0 || lo < 0) return false;
    byte = hi * 16 + lo;
    return true;
  }

  static llama2c_tokenizer read(detail::binary_reader& in, const llama2c_tokenizer_limits& lim) {
    lim.validate();
    llama2c_tokenizer t;
    const std::int32_t mtl = in.read_i32("header max_token_length");
    if (mtl <= 0 || static_cast<std::size_t>(mtl) > lim.max_token_length)
      in.fail("bad header: max_token_length = " + std::to_string(mtl) + " must be in [1, " +
              std::to_string(lim.max_token_length) + "]");
    t.max_token_length_ = static_cast<std::size_t>(mtl);
    while (in.remaining() > 0) {
      const std::size_t id = t.pieces_.size();
      if (id >= lim.max_vocab)
        in.fail("more than " + std::to_string(lim.max_vocab) + " tokens (the limit)");
      const std::string what = "token " + std::to_string(id);
      const float score = in.read_f32(what + " score");
      if (!std::isfinite(score)) in.fail(what + " has a non-finite score (" + detail::num(score) + ")");
      const std::int32_t len = in.read_i32(what + " length");
      if (len < 0 || len > mtl)
        in.fail(what + " has length " + std::to_string(len) + ", outside [0, max_token_length = " +
                std::to_string(mtl) + "]");
      std::string s(static_cast<std::size_t>(len), '\0');
      in.read_bytes(s.data(), s.size(), what + " bytes");
      t.index_.try_emplace(s, static_cast<token_id>(id));  // keeps the lowest id of a repeated piece
      t.pieces_.push_back(std::move(s));
      t.scores_.push_back(score);
    }
    if (t.pieces_.empty()) in.fail("no tokens after the header");
    return t;
  }

  std::size_t max_token_length_ = 0;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, token_id> index_;
};

/// Throws `invalid_input` unless the tokenizer and the model have the same vocabulary size.
inline void check_vocab_match(const llama2c_tokenizer& tok, std::size_t model_vocab) {
  if (tok.vocab_size() != model_vocab)
    throw invalid_input("itscale: the tokenizer has " + std::to_string(tok.vocab_size()) +
                        " tokens but the model's vocabulary is " + std::to_string(model_vocab));
}

ITSCALE_END_NAMESPACE
