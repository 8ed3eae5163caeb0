// llama2c_tokenizer on small vocabularies built in memory (no files needed): the merge order of
// llama2.c's encode (best score first, leftmost on ties), byte fallback, the dummy prefix, decode,
// and the errors of vocabularies too small for BOS or byte fallback. The real tokenizer file is
// tested in test_llama2c.cpp.

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <itscale/backends/llama2c_tokenizer.hpp>

using itscale::token_id;

namespace {

/// tokenizer.bin bytes for `entries` (piece, score).
std::vector<std::byte> tokenizer_bytes(const std::vector<std::pair<std::string, float>>& entries) {
  std::vector<std::byte> b;
  const auto put = [&](const void* p, std::size_t n) {
    const auto* c = static_cast<const std::byte*>(p);
    // resize + memcpy: GCC 12 at -O3 reports a false -Wstringop-overflow on vector::insert here.
    const std::size_t at = b.size();
    b.resize(at + n);
    std::memcpy(b.data() + at, c, n);
  };
  std::int32_t mtl = 0;
  for (const auto& e : entries) mtl = std::max(mtl, static_cast<std::int32_t>(e.first.size()));
  put(&mtl, 4);
  for (const auto& [piece, score] : entries) {
    const auto len = static_cast<std::int32_t>(piece.size());
    put(&score, 4);
    put(&len, 4);
    put(piece.data(), piece.size());
  }
  return b;
}

/// <unk>, BOS, EOS, the 256 byte tokens, then `extra`.
itscale::llama2c_tokenizer with_bytes(const std::vector<std::pair<std::string, float>>& extra) {
  std::vector<std::pair<std::string, float>> v = {{"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}};
  const char* hex = "0123456789ABCDEF";
  for (int i = 0; i < 256; ++i) v.push_back({std::string("<0x") + hex[i / 16] + hex[i % 16] + ">", 0});
  v.insert(v.end(), extra.begin(), extra.end());
  const auto bytes = tokenizer_bytes(v);
  return itscale::llama2c_tokenizer::parse(bytes, "synthetic");
}

}  // namespace

TEST_CASE("llama2c_tokenizer: merges the best-scoring pair first, the leftmost on ties") {
  // 259 " ", 260 "a", 261 "b", 262 "ab", 263 " a"
  const auto a_first = with_bytes({{" ", -1}, {"a", -1}, {"b", -1}, {"ab", 1}, {" a", 2}});
  // " a" (2) beats "ab" (1): [" ", "a", "b"] -> [" a", "b"]; " ab" is not an entry.
  CHECK(a_first.encode("ab") == std::vector<token_id>{1, 263, 261});
  const auto ab_first = with_bytes({{" ", -1}, {"a", -1}, {"b", -1}, {"ab", 3}, {" a", 2}});
  CHECK(ab_first.encode("ab") == std::vector<token_id>{1, 259, 262});
  const auto tie = with_bytes({{" ", -1}, {"a", -1}, {"b", -1}, {"ab", 2}, {" a", 2}});
  CHECK(tie.encode("ab") == std::vector<token_id>{1, 263, 261});
  // Merges chain: with " ab" present, both orders end in one token.
  const auto chain = with_bytes({{" ", -1}, {"a", -1}, {"b", -1}, {"ab", 1}, {" a", 2}, {" ab", 0.5f}});
  CHECK(chain.encode("ab") == std::vector<token_id>{1, 264});
  CHECK(chain.encode("ab", false) == std::vector<token_id>{264});
  // decode: after BOS the dummy space goes; elsewhere it stays.
  CHECK(chain.decode(std::vector<token_id>{1, 264}) == "ab");
  CHECK(chain.decode(std::vector<token_id>{264}) == " ab");
  CHECK(chain.decode(std::vector<token_id>{1, 264, 2}) == "ab");  // EOS is not text
}

TEST_CASE("llama2c_tokenizer: byte fallback per code point, merges across byte tokens") {
  const auto t = with_bytes({{" ", -1}, {"a", -1}, {"é", -1}});
  // "c" is unknown: byte 0x63 -> token 3 + 0x63; "é" is an entry; "ü" (C3 BC) falls back per byte.
  CHECK(t.encode("cé", false) == std::vector<token_id>{259, 3 + 0x63, 261});
  CHECK(t.encode("ü", false) == std::vector<token_id>{259, 3 + 0xC3, 3 + 0xBC});
  CHECK(t.decode(std::vector<token_id>{1, 259, 3 + 0xC3, 3 + 0xBC}) == "ü");
  CHECK(t.decode(std::vector<token_id>{1, 259, 3 + 0x63, 261}) == "cé");
  // A byte-token pair is merged when its concatenated text is an entry (as llama2.c does).
  const auto m = with_bytes({{" ", -1}, {"<0xC3><0xBC>", 5}});
  CHECK(m.encode("ü", false) == std::vector<token_id>{259, 260});
  // Empty text: no dummy prefix.
  CHECK(t.encode("", true) == std::vector<token_id>{1});
  CHECK(t.encode("", false).empty());
}

TEST_CASE("llama2c_tokenizer: vocabularies too small for BOS or byte fallback are errors, not reads out of bounds") {
  const auto one = itscale::llama2c_tokenizer::parse(tokenizer_bytes({{"a", 0}}), "one");
  CHECK(one.vocab_size() == 1);
  CHECK_THROWS_AS((void)one.encode("a", true), itscale::invalid_input);   // BOS is token 1
  CHECK_THROWS_AS((void)one.encode("a", false), itscale::invalid_input);  // " " needs byte token 35
  CHECK_THROWS_AS((void)one.piece(1), itscale::invalid_input);
  CHECK_THROWS_AS((void)one.piece(-1), itscale::invalid_input);
  CHECK_THROWS_AS((void)one.decode(-1, 1), itscale::invalid_input);
  // " " and "a" known, no byte tokens: only unknown bytes fail.
  const auto small = itscale::llama2c_tokenizer::parse(
      tokenizer_bytes({{"<unk>", 0}, {"<s>", 0}, {"</s>", 0}, {" ", 0}, {"a", 0}}), "small");
  CHECK(small.encode("aa") == std::vector<token_id>{1, 3, 4, 4});
  CHECK_THROWS_AS((void)small.encode("b"), itscale::invalid_input);
  // A repeated piece resolves to its lowest id.
  const auto dup = itscale::llama2c_tokenizer::parse(tokenizer_bytes({{"x", 0}, {"x", 0}}), "dup");
  CHECK(dup.lookup("x") == 0);
  CHECK(dup.lookup("y") == -1);
}
