#pragma once
/// \file types.hpp
/// Vocabulary types shared by every part of the library.

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include "itscale/core/abi.hpp"

// Untagged (core/abi.hpp): the vocabulary of the LogitSource contract, the same type for a
// backend and for searches built with other flags.
ITSCALE_BEGIN_UNTAGGED_NAMESPACE

/// A token id. Signed 32-bit like llama.cpp's `llama_token`, so backends can pass theirs through.
using token_id = std::int32_t;

/// The logit of a masked (forbidden) token. Every processor masks with exactly this value.
inline constexpr float masked_logit = -std::numeric_limits<float>::infinity();

/// A row-major `[rows x vocab]` block of next-token logits owned by a source.
///
/// The caller may modify the rows in place (processors do): a source must not read them back.
/// Validity is the source's rule: see `LogitSource` (until the next prefill or extend).
struct logits_view {
  float* data = nullptr;
  std::size_t rows = 0;
  std::size_t vocab = 0;

  /// Row `i` (precondition: `i < rows`).
  [[nodiscard]] std::span<float> row(std::size_t i) const noexcept {
    assert(i < rows);
    return {data + i * vocab, vocab};
  }
};

ITSCALE_END_UNTAGGED_NAMESPACE
