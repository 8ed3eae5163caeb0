#pragma once
/// \file kernel_types.hpp
/// Types and constants shared by the scalar reference kernels, the SIMD kernels and their public
/// wrappers.

#include <cstddef>
#include <cstdint>

#include "itscale/core/abi.hpp"
#include "itscale/core/types.hpp"

// Untagged (core/abi.hpp): the runtime-dispatch tables, shared by units built for every arch,
// pass these.
ITSCALE_BEGIN_UNTAGGED_NAMESPACE
namespace kernel_abi {

/// One selected candidate of a multi-row selection (beam search): `score` of token `token` of
/// row `row`. Used as `itscale::kernels::row_candidate`.
struct row_candidate {
  float score = 0;
  std::uint32_t row = 0;
  token_id token = 0;
};

}  // namespace kernel_abi
ITSCALE_END_UNTAGGED_NAMESPACE

ITSCALE_BEGIN_NAMESPACE
namespace kernels {

/// "No index": an empty or fully masked row.
inline constexpr std::size_t npos = static_cast<std::size_t>(-1);

using kernel_abi::row_candidate;

}  // namespace kernels
ITSCALE_END_NAMESPACE
