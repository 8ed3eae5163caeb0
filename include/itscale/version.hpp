#pragma once
/// \file version.hpp
/// Library version; bumped with every release (the CMake project version must agree).

#define ITSCALE_VERSION_MAJOR 0
#define ITSCALE_VERSION_MINOR 1
#define ITSCALE_VERSION_PATCH 0

#include "itscale/core/abi.hpp"

// Untagged (core/abi.hpp): no code.
ITSCALE_BEGIN_UNTAGGED_NAMESPACE

/// The version as "MAJOR.MINOR.PATCH".
inline constexpr const char* version_string = "0.1.0";

ITSCALE_END_UNTAGGED_NAMESPACE
