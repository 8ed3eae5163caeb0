# itscale_enable_runtime_dispatch(<target>)
#
# Opt-in runtime dispatch of the itscale SIMD kernels (see include/itscale/kernels/dispatch.hpp).
# Adds to <target> one translation unit per x86-64 arch, each compiled with its own flags
#   sse2:   -march=x86-64 -mno-avx        (baseline; a consumer's -march cannot lift it)
#   avx2:   -march=x86-64-v3 -mno-avx512f (AVX2, FMA, BMI1/2, LZCNT, POPCNT, MOVBE, F16C)
#   avx512: -march=x86-64-v4              (v3 + AVX-512 F/BW/CD/DQ/VL)
# (compilers without the x86-64-vN levels, GCC < 11 / Clang < 12, get the same ISA as -m flags).
# The levels matter beyond the vector ISA: the kernels count and locate survivor lanes with
# __builtin_popcount / __builtin_ctz, which without -mpopcnt / -mbmi compile to a libgcc call and
# a bsf; a consumer's own -march is overridden (the last -march wins), so these units never
# inherit extensions the dispatcher does not check. Tuning is generic (-mtune follows -march).
# They instantiate the arch-templated kernels into function tables, plus one baseline unit that
# chooses a table on the first kernel call from the CPU's features, or from the environment
# variable ITSCALE_ARCH=sse2|avx2|avx512 (aborts with a message if the CPU lacks it). Defines
# ITSCALE_RUNTIME_DISPATCH on <target> (PRIVATE: every itscale-using source of the target sees it;
# link the target's kernels into one program only once). The rest of the program may be built
# for baseline x86-64 and still run the AVX-512 kernels where the CPU has them.
#
# Installed with itscale and loaded by find_package(itscale); also available after
# add_subdirectory(itscale).
include_guard(GLOBAL)

set(ITSCALE_DISPATCH_SOURCE_DIR "${CMAKE_CURRENT_LIST_DIR}/dispatch" CACHE INTERNAL
    "Sources of the itscale runtime-dispatch translation units")

function(itscale_enable_runtime_dispatch target)
  if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i[3-6]86)$")
    message(FATAL_ERROR "itscale_enable_runtime_dispatch: x86 only (CMAKE_SYSTEM_PROCESSOR is ${CMAKE_SYSTEM_PROCESSOR}); "
                        "other targets use static dispatch (-march)")
  endif()
  if(MSVC)
    message(FATAL_ERROR "itscale_enable_runtime_dispatch: GCC or Clang flags only")
  endif()
  set(_dir "${CMAKE_CURRENT_BINARY_DIR}/itscale_dispatch/${target}")
  include(CheckCXXCompilerFlag)
  check_cxx_compiler_flag(-march=x86-64-v4 ITSCALE_HAVE_MARCH_X86_64_V4)
  set(_flags_sse2 -march=x86-64 -mno-avx)
  if(ITSCALE_HAVE_MARCH_X86_64_V4)
    set(_flags_avx2 -march=x86-64-v3 -mno-avx512f)
    set(_flags_avx512 -march=x86-64-v4)
  else()
    set(_v3 -mavx2 -mfma -mbmi -mbmi2 -mlzcnt -mpopcnt -mmovbe -mf16c)
    set(_flags_avx2 ${_v3} -mno-avx512f)
    set(_flags_avx512 ${_v3} -mavx512f -mavx512bw -mavx512cd -mavx512dq -mavx512vl)
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    # GCC 12 warns about the intentionally undefined `__Y = __Y` inside its own AVX-512
    # intrinsics once inlined (GCC bug 105593, fixed in 13).
    list(APPEND _flags_avx512 -Wno-uninitialized -Wno-maybe-uninitialized)
  endif()
  set(_xsimd_sse2 "xsimd::sse2")
  set(_xsimd_avx2 "xsimd::fma3<xsimd::avx2>")
  set(_xsimd_avx512 "xsimd::avx512bw")
  set(_sources "")
  foreach(_arch sse2 avx2 avx512)
    set(ITSCALE_DISPATCH_ARCH ${_arch})
    set(ITSCALE_DISPATCH_XSIMD_ARCH "${_xsimd_${_arch}}")
    set(_src "${_dir}/itscale_kernels_${_arch}.cpp")
    configure_file("${ITSCALE_DISPATCH_SOURCE_DIR}/itscale_kernels_arch.cpp.in" "${_src}" @ONLY)
    set_source_files_properties("${_src}" TARGET_DIRECTORY ${target} PROPERTIES COMPILE_OPTIONS "${_flags_${_arch}}")
    list(APPEND _sources "${_src}")
  endforeach()
  target_sources(${target} PRIVATE ${_sources} "${ITSCALE_DISPATCH_SOURCE_DIR}/itscale_kernels_dispatch.cpp")
  target_compile_definitions(${target} PRIVATE ITSCALE_RUNTIME_DISPATCH)
endfunction()
