#pragma once
/// \file no_repeat_ngram.hpp
/// No-repeat-n-gram (HF `NoRepeatNGramLogitsProcessor`): masks every token that would complete an
/// n-gram already present in the sequence (prompt included). Scans the history each step
/// (O(length * n)), so it needs no state and forks for free.

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/processors/processor.hpp"

ITSCALE_BEGIN_NAMESPACE

class no_repeat_ngram {
 public:
  /// Throws `invalid_option` for n = 0.
  explicit no_repeat_ngram(std::size_t n) : n_(n) {
    if (n == 0) throw invalid_option("itscale: no_repeat_ngram_size must be >= 1 (0 means off in sampling_options), got 0");
  }

  void apply(std::span<float> row, const step_context& ctx) const noexcept {
    const auto seq = ctx.tokens;
    const std::size_t len = seq.size();
    if (len + 1 < n_) return;
    const auto key = seq.subspan(len + 1 - n_, n_ - 1);  // the n-1 most recent tokens
    for (std::size_t i = 0; i + n_ <= len; ++i)
      if (std::equal(key.begin(), key.end(), seq.begin() + static_cast<std::ptrdiff_t>(i)))
        row[static_cast<std::size_t>(seq[i + n_ - 1])] = masked_logit;
  }

 private:
  std::size_t n_;
};

ITSCALE_END_NAMESPACE
