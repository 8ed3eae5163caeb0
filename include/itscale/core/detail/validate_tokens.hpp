#pragma once
/// \file validate_tokens.hpp
/// Internal: the token-range checks every shipped source and decoder performs at its boundary.

#include <cstddef>
#include <span>
#include <string>

#include "itscale/core/abi.hpp"
#include "itscale/core/errors.hpp"
#include "itscale/core/types.hpp"

ITSCALE_BEGIN_NAMESPACE
namespace detail {

/// Throws `invalid_input` naming `what` when a token is negative or `>= vocab`.
inline void check_tokens(std::span<const token_id> tokens, std::size_t vocab, const char* what) {
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const token_id t = tokens[i];
    if (t < 0 || static_cast<std::size_t>(t) >= vocab)
      throw invalid_input(std::string("itscale: ") + what + "[" + std::to_string(i) + "] = " +
                          std::to_string(t) + " is outside the vocabulary [0, " +
                          std::to_string(vocab) + ")");
  }
}

/// Throws `invalid_input` unless the three spans of an `extend` call have one common, non-zero
/// length.
inline void check_extend_shape(std::size_t parents, std::size_t tokens, std::size_t children) {
  if (parents == 0 || parents != tokens || parents != children)
    throw invalid_input("itscale: extend needs parents, tokens and children of one non-zero length; got " +
                        std::to_string(parents) + ", " + std::to_string(tokens) + ", " +
                        std::to_string(children));
}

}  // namespace detail
ITSCALE_END_NAMESPACE
