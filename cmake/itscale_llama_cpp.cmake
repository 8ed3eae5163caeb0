# llama.cpp for itscale's own tests, examples and benchmarks (ITSCALE_LLAMA_CPP for the
# llama_cpp_source backend, ITSCALE_BENCH_LLAMA_CPP for the sampler peers of bench/kernels.cpp):
# the prebuilt linux-x64 libraries of the npm package @node-llama-cpp/linux-x64 and the headers of
# the same release, fetched into the build tree by bench/fetch_llama_cpp.sh (npm + git). Defines:
#   itscale_llama_cpp           imported libllama (+ libggml, libggml-base), headers as SYSTEM
#   ITSCALE_LLAMA_CPP_BINS      the directory of the libraries, where the CPU backends
#                               libggml-cpu-*.so are loaded from at run time (rpath, tests)
# itscale::itscale itself never links llama.cpp: a consumer who includes
# itscale/backends/llama_cpp_source.hpp brings their own.
include_guard(GLOBAL)
if(NOT (CMAKE_SYSTEM_NAME STREQUAL "Linux" AND CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$"))
  message(FATAL_ERROR "ITSCALE_LLAMA_CPP / ITSCALE_BENCH_LLAMA_CPP: the prebuilt libraries used are for linux-x64 only")
endif()
set(_llama_dir "${PROJECT_BINARY_DIR}/llama_cpp")
message(STATUS "itscale: fetching llama.cpp (node-llama-cpp 3.21.1) into ${_llama_dir}")
execute_process(
  COMMAND bash "${PROJECT_SOURCE_DIR}/bench/fetch_llama_cpp.sh" "${_llama_dir}"
  RESULT_VARIABLE _llama_rc)
if(NOT _llama_rc EQUAL 0)
  message(FATAL_ERROR "itscale: bench/fetch_llama_cpp.sh failed (${_llama_rc}); it needs npm and git and the npm registry")
endif()
set(ITSCALE_LLAMA_CPP_BINS "${_llama_dir}/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64")
file(GLOB _llama_lib "${ITSCALE_LLAMA_CPP_BINS}/libllama.*.so")   # libllama.v0.4.0.so, not libllama-common
file(GLOB _ggml_lib "${ITSCALE_LLAMA_CPP_BINS}/libggml.*.so")     # libggml.v0.4.0.so, not libggml-*.so
set(_ggml_base_lib "${ITSCALE_LLAMA_CPP_BINS}/libggml-base.so")
list(LENGTH _llama_lib _n_llama)
list(LENGTH _ggml_lib _n_ggml)
if(NOT _n_llama EQUAL 1 OR NOT _n_ggml EQUAL 1 OR NOT EXISTS "${_ggml_base_lib}")
  message(FATAL_ERROR "itscale: unexpected layout in ${ITSCALE_LLAMA_CPP_BINS}")
endif()
add_library(itscale_llama_cpp_ggml_base SHARED IMPORTED)
set_target_properties(itscale_llama_cpp_ggml_base PROPERTIES IMPORTED_LOCATION "${_ggml_base_lib}")
add_library(itscale_llama_cpp_ggml SHARED IMPORTED)
set_target_properties(itscale_llama_cpp_ggml PROPERTIES IMPORTED_LOCATION "${_ggml_lib}"
  INTERFACE_LINK_LIBRARIES itscale_llama_cpp_ggml_base)
add_library(itscale_llama_cpp SHARED IMPORTED)
# Imported include directories are SYSTEM: llama.h does not trip our warning flags.
set_target_properties(itscale_llama_cpp PROPERTIES IMPORTED_LOCATION "${_llama_lib}"
  INTERFACE_INCLUDE_DIRECTORIES "${_llama_dir}/src/include;${_llama_dir}/src/ggml/include"
  INTERFACE_LINK_LIBRARIES itscale_llama_cpp_ggml)

# itscale_link_llama_cpp(<target>): links llama.cpp, finds the libraries where npm put them (build
# tree rpath) and tells the code where the CPU backends are (ITSCALE_LLAMA_CPP_BACKEND_DIR).
function(itscale_link_llama_cpp target)
  target_link_libraries(${target} PRIVATE itscale_llama_cpp)
  target_compile_definitions(${target} PRIVATE ITSCALE_LLAMA_CPP_BACKEND_DIR="${ITSCALE_LLAMA_CPP_BINS}")
  set_target_properties(${target} PROPERTIES BUILD_RPATH "${ITSCALE_LLAMA_CPP_BINS}")
endfunction()
