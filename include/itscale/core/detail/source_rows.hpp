#pragma once
/// \file source_rows.hpp
/// Internal: checks every decoder and search applies to what a source returns.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/types.hpp"
#include "itscale/kernels/reduce.hpp"

ITSCALE_BEGIN_NAMESPACE

namespace detail {

/// Throws `backend_error` if the source's view does not have `rows` rows of `vocab` finite-or-
/// -inf logits.
inline void check_source_rows(const logits_view& v, std::size_t rows, std::size_t vocab, std::size_t step) {
  if (v.rows != rows || v.vocab != vocab || (rows > 0 && v.data == nullptr))
    throw backend_error("itscale: the source returned a " + std::to_string(v.rows) + " x " +
                        std::to_string(v.vocab) + " logits view at step " + std::to_string(step) +
                        ", expected " + std::to_string(rows) + " x " + std::to_string(vocab));
  for (std::size_t r = 0; r < rows; ++r) {
    const auto row = v.row(r);
    const std::size_t bad = kernels::find_invalid(row);
    if (bad != kernels::npos)
      throw backend_error("itscale: the source returned " + std::string(std::isnan(row[bad]) ? "NaN" : "+inf") +
                          " for token " + std::to_string(bad) + " in row " + std::to_string(r) + " at step " +
                          std::to_string(step));
  }
}

/// True when `tokens` ends with `suffix`.
inline bool ends_with(std::span<const token_id> tokens, std::span<const token_id> suffix) noexcept {
  return suffix.size() <= tokens.size() && std::equal(suffix.begin(), suffix.end(), tokens.end() - static_cast<std::ptrdiff_t>(suffix.size()));
}

}  // namespace detail

ITSCALE_END_NAMESPACE
