# odr_namespace_lint: the namespace rules of include/itscale/core/abi.hpp, over every header.
#   cmake -DITSCALE_INCLUDE_DIR=<repo>/include -P namespace_lint.cmake
# - no header opens `namespace itscale` / `inline namespace v0` by hand: code goes between
#   ITSCALE_BEGIN_NAMESPACE / ITSCALE_END_NAMESPACE (arch-tagged), so a header added without
#   them cannot reopen the gap of issue #9 (python3 .ci/tag_namespaces.py rewrites such headers);
# - the untagged namespace (ITSCALE_BEGIN_UNTAGGED_NAMESPACE) only in the reviewed vocabulary
#   headers listed here: growing that list is a decision, not an accident;
# - no leftover inner `inline namespace ITSCALE_KERNEL_ABI`; every BEGIN has its END; a header
#   using the macros includes core/abi.hpp itself.
cmake_minimum_required(VERSION 3.25)
set(_untagged_allowed
    core/errors.hpp core/logit_source.hpp core/types.hpp kernels/dispatch.hpp kernels/kernel_types.hpp
    version.hpp)
set(_base "${ITSCALE_INCLUDE_DIR}/itscale")
file(GLOB_RECURSE _headers RELATIVE "${_base}" "${_base}/*.hpp")
set(_problems "")
# Whole-file regexes (file(STRINGS) would split C++ lines at `;` and trip on `[`).
function(_count_matches content regex out)
  string(REGEX MATCHALL "${regex}" _m "${content}")
  list(LENGTH _m _n)
  set(${out} ${_n} PARENT_SCOPE)
endfunction()
foreach(_h IN LISTS _headers)
  if(_h STREQUAL "core/abi.hpp")
    continue()
  endif()
  file(READ "${_base}/${_h}" _text)
  set(_text "\n${_text}")
  _count_matches("${_text}" "\n[ \t]*(inline[ \t]+)?namespace[ \t]+(itscale|v0)[ \t:{]" _n_literal)
  if(_n_literal GREATER 0)
    list(APPEND _problems "${_h}: opens namespace itscale / v0 by hand (use ITSCALE_BEGIN_NAMESPACE: python3 .ci/tag_namespaces.py)")
  endif()
  _count_matches("${_text}" "namespace[ \t]+ITSCALE_(KERNEL_ABI|ABI_TAG)" _n_inner)
  if(_n_inner GREATER 0)
    list(APPEND _problems "${_h}: an inner inline namespace ITSCALE_KERNEL_ABI (ITSCALE_BEGIN_NAMESPACE already tags everything)")
  endif()
  _count_matches("${_text}" "\nITSCALE_BEGIN_NAMESPACE" _n_begin)
  _count_matches("${_text}" "\nITSCALE_END_NAMESPACE" _n_end)
  _count_matches("${_text}" "\nITSCALE_BEGIN_UNTAGGED_NAMESPACE" _n_ubegin)
  _count_matches("${_text}" "\nITSCALE_END_UNTAGGED_NAMESPACE" _n_uend)
  if(NOT _n_begin EQUAL _n_end OR NOT _n_ubegin EQUAL _n_uend)
    list(APPEND _problems "${_h}: ${_n_begin}/${_n_ubegin} BEGIN but ${_n_end}/${_n_uend} END (tagged/untagged)")
  endif()
  if(_n_ubegin GREATER 0 AND NOT _h IN_LIST _untagged_allowed)
    list(APPEND _problems "${_h}: untagged namespace outside the vocabulary headers (see core/abi.hpp, then this list)")
  endif()
  string(FIND "${_text}" "\n#include \"itscale/core/abi.hpp\"" _inc)
  if((_n_begin GREATER 0 OR _n_ubegin GREATER 0) AND _inc EQUAL -1)
    list(APPEND _problems "${_h}: uses the namespace macros without #include \"itscale/core/abi.hpp\"")
  endif()
endforeach()
list(LENGTH _headers _count)
if(_problems)
  list(JOIN _problems "\n  " _text)
  message(FATAL_ERROR "odr_namespace_lint: ${_count} headers, problems:\n  ${_text}")
endif()
message(STATUS "odr_namespace_lint: ${_count} headers follow core/abi.hpp's namespace rules")
