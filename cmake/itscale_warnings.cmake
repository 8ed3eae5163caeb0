# Warning flags for itscale's own tests, examples and benches -- never for itscale::itscale,
# whose consumers pick their own. Eigen, xsimd, doctest and benchmark come in as imported
# targets, so their include directories are SYSTEM and their headers do not trip these.
include_guard(GLOBAL)

function(itscale_target_warnings target)
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4 /permissive-)
  else()
    # -Wshadow/-Wconversion/-Wsign-conversion catch the index and float<->int slips that
    # matter in kernels; the virtual-related two catch broken backend interfaces.
    target_compile_options(${target} PRIVATE
      -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion
      -Wnon-virtual-dtor -Woverloaded-virtual)
    # GCC 12 at -O3 reports -Wrestrict inside libstdc++'s own `"literal" + std::string`
    # (GCC bugs 105329, 105651): a false positive we cannot fix in our code.
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
      # GCC 12's AVX-512 intrinsics (used by Eigen under -march=native) also trip false
      # -Wmaybe-uninitialized reports (GCC bug 105593).
      target_compile_options(${target} PRIVATE -Wno-restrict -Wno-maybe-uninitialized)
    endif()
  endif()
  # Strict ISO (-std=c++20, not gnu++20): what the pkg-config consumers compile with.
  set_target_properties(${target} PROPERTIES CXX_EXTENSIONS OFF)
  # COMPILE_WARNING_AS_ERROR (not a raw -Werror) so `cmake --compile-no-warning-as-error`
  # can still switch it off from the command line.
  set_target_properties(${target} PROPERTIES COMPILE_WARNING_AS_ERROR ${ITSCALE_WARNINGS_AS_ERRORS})
endfunction()
