# Install rules: headers, the exported target, CMake package files and a pkg-config file.
# A header-only library is architecture independent, so package files go under share/.
include(CMakePackageConfigHelpers)

set(ITSCALE_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/itscale" CACHE STRING
    "Where itscaleConfig.cmake is installed (relative to the prefix)")
set(ITSCALE_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_DATADIR}/pkgconfig" CACHE STRING
    "Where itscale.pc is installed (relative to the prefix)")

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/itscale" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(TARGETS itscale EXPORT itscaleTargets)
install(EXPORT itscaleTargets NAMESPACE itscale:: DESTINATION "${ITSCALE_INSTALL_CMAKEDIR}")

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/itscaleConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/itscaleConfig.cmake"
  INSTALL_DESTINATION "${ITSCALE_INSTALL_CMAKEDIR}")
# SameMinorVersion: below 1.0 a minor bump may break the API (semver 0.x), so asking for
# 0.1 must not accept 0.2. Revisit (SameMajorVersion) at 1.0.
# ARCH_INDEPENDENT: header-only, so a 32-bit consumer may use a package found by a 64-bit one.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/itscaleConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion
  ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/itscaleConfig.cmake" "${PROJECT_BINARY_DIR}/itscaleConfigVersion.cmake"
              "${PROJECT_SOURCE_DIR}/cmake/itscale_xsimd_fixup.cmake"
              "${PROJECT_SOURCE_DIR}/cmake/itscale_dispatch.cmake"
        DESTINATION "${ITSCALE_INSTALL_CMAKEDIR}")
# The sources itscale_enable_runtime_dispatch() adds to a consumer's target.
install(DIRECTORY "${PROJECT_SOURCE_DIR}/cmake/dispatch" DESTINATION "${ITSCALE_INSTALL_CMAKEDIR}")

# pkg-config: prefix is derived from the .pc file's own location (${pcfiledir}), so the
# installed tree stays relocatable (`cmake --install --prefix` at install time just works).
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(ITSCALE_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(ITSCALE_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
if(IS_ABSOLUTE "${ITSCALE_INSTALL_PKGCONFIGDIR}")
  set(ITSCALE_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  # Walk up from the .pc directory to the prefix: one ".." per path component.
  set(ITSCALE_PC_PREFIX "\${pcfiledir}")
  string(REPLACE "/" ";" _parts "${ITSCALE_INSTALL_PKGCONFIGDIR}")
  foreach(_p IN LISTS _parts)
    if(_p)
      string(APPEND ITSCALE_PC_PREFIX "/..")
    endif()
  endforeach()
endif()
configure_file("${PROJECT_SOURCE_DIR}/cmake/itscale.pc.in" "${PROJECT_BINARY_DIR}/itscale.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/itscale.pc" DESTINATION "${ITSCALE_INSTALL_PKGCONFIGDIR}")
