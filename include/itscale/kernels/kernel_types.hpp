#pragma once
/// \file kernel_types.hpp
/// Types and constants shared by the scalar reference kernels, the SIMD kernels and their public
/// wrappers.

#include <cstddef>
#include <cstdint>

#include "itscale/core/types.hpp"

namespace itscale {
inline namespace v0 {
namespace kernels {

/// "No index": an empty or fully masked row.
inline constexpr std::size_t npos = static_cast<std::size_t>(-1);

/// One selected candidate of a multi-row selection (beam search): `score` of token `token` of
/// row `row`.
struct row_candidate {
  float score = 0;
  std::uint32_t row = 0;
  token_id token = 0;
};

}  // namespace kernels
}  // namespace v0
}  // namespace itscale
