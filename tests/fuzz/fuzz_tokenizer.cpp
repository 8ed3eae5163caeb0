// itscale_fuzz_tokenizer: the llama2.c tokenizer (backends/llama2c_tokenizer.hpp) on arbitrary
// bytes: the loader must throw format_error or give a usable tokenizer; encode on arbitrary text
// (invalid UTF-8 included) must give ids inside the vocabulary or throw invalid_input (a byte with
// no byte-fallback token, BOS of a one-token vocabulary); decode of those ids must not throw, and
// decode of arbitrary ids throws invalid_input exactly when one is outside the vocabulary.
//
// Input layout: two bytes give the length of the tokenizer file, which follows; the rest is text
// (at most 256 bytes: encode is quadratic in the code points, as llama2.c's).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "itscale/backends/llama2c_tokenizer.hpp"
#include "itscale/core/errors.hpp"

using fuzz::check;
using itscale::token_id;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const std::size_t flags = data[2];
  std::size_t tok_len = std::size_t{data[0]} | std::size_t{data[1]} << 8;
  data += 3;
  size -= 3;
  if (tok_len > size) tok_len = size;
  const std::span<const std::byte> tok_bytes(reinterpret_cast<const std::byte*>(data), tok_len);
  std::string_view text(reinterpret_cast<const char*>(data + tok_len), size - tok_len);
  if (text.size() > 256) text = text.substr(0, 256);
  itscale::llama2c_tokenizer_limits lim;
  if ((flags & 1u) != 0) lim.max_token_length = 16;  // small caps take their own failure paths
  if ((flags & 2u) != 0) lim.max_vocab = 300;
  try {
    const auto tok = itscale::llama2c_tokenizer::parse(tok_bytes, "fuzz", lim);
    const std::size_t vocab = tok.vocab_size();
    check(vocab >= 1, "a loaded tokenizer has tokens");
    try {
      const auto ids = tok.encode(text, (flags & 4u) != 0);
      for (token_id t : ids) check(t >= 0 && static_cast<std::size_t>(t) < vocab, "encoded id inside the vocabulary");
      if (!text.empty() || (flags & 4u) != 0) check(!ids.empty(), "non-empty text or BOS encodes to tokens");
      (void)tok.decode(ids);
      for (token_id t : ids) {
        (void)tok.piece(t);
        (void)tok.score(t);
      }
    } catch (const itscale::invalid_input&) {
    }
    // Arbitrary ids: valid ones decode, one outside the vocabulary is an invalid_input.
    std::vector<token_id> any;
    bool outside = false;
    for (std::size_t i = 0; i + 1 < text.size() && any.size() < 16; i += 2) {
      const auto t = static_cast<token_id>(static_cast<std::int16_t>(static_cast<unsigned>(static_cast<unsigned char>(text[i])) |
                                                                       static_cast<unsigned>(static_cast<unsigned char>(text[i + 1])) << 8));
      outside = outside || t < 0 || static_cast<std::size_t>(t) >= vocab;
      any.push_back(t);
    }
    try {
      (void)tok.decode(any);
      check(!outside, "decode accepted an id outside the vocabulary");
    } catch (const itscale::invalid_input&) {
      check(outside, "decode rejected ids inside the vocabulary");
    }
    (void)tok.lookup(text);
  } catch (const itscale::format_error&) {
  }
  return 0;
}
