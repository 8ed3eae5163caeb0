#pragma once
/// \file version.hpp
/// Library version; bumped with every release (the CMake project version must agree).

#define ITSCALE_VERSION_MAJOR 0
#define ITSCALE_VERSION_MINOR 1
#define ITSCALE_VERSION_PATCH 0

namespace itscale {
inline namespace v0 {

/// The version as "MAJOR.MINOR.PATCH".
inline constexpr const char* version_string = "0.1.0";

}  // namespace v0
}  // namespace itscale
