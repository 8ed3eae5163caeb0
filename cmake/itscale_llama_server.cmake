# llama.cpp's llama-server (an OpenAI-compatible HTTP server) for the remote backends' tests
# (ITSCALE_REMOTE=ON). Runs tests/remote/build_llama_server.sh at configure time: it fetches the
# llama.cpp sources of node-llama-cpp 3.21.1 (npm + git, the release whose prebuilt libraries
# ITSCALE_LLAMA_CPP uses) and builds llama-server from them, portable (baseline x86-64, static
# libllama/libggml), in a cache outside the build tree:
#   ITSCALE_LLAMA_SERVER_CACHE_DIR, default ${ITSCALE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/itscale}/llama-server-3.21.1
# The first configure takes 8-20 minutes on 2 cores (8 idle, 19.5 with other builds running);
# later ones (cached binary) a fraction of a second.
# Defines the cache variable
#   ITSCALE_LLAMA_SERVER_EXE    the llama-server binary (set it to another binary to skip the build)
include_guard(GLOBAL)
set(ITSCALE_LLAMA_SERVER_CACHE_DIR "" CACHE PATH
    "Where tests/remote/build_llama_server.sh builds llama-server (empty: its default under ~/.cache/itscale)")
set(ITSCALE_LLAMA_SERVER_EXE "" CACHE FILEPATH
    "llama-server for the remote backends' tests (empty: built by tests/remote/build_llama_server.sh)")
if(ITSCALE_LLAMA_SERVER_EXE AND NOT ITSCALE_LLAMA_SERVER_EXE STREQUAL ITSCALE_LLAMA_SERVER_EXE_BUILT_BY_SCRIPT)
  # Set by the user: used as it is.
  if(NOT EXISTS "${ITSCALE_LLAMA_SERVER_EXE}")
    message(FATAL_ERROR "itscale: ITSCALE_LLAMA_SERVER_EXE (${ITSCALE_LLAMA_SERVER_EXE}) does not exist")
  endif()
  message(STATUS "itscale: llama-server for the remote tests: ${ITSCALE_LLAMA_SERVER_EXE} (given)")
else()
  set(_args)
  if(ITSCALE_LLAMA_SERVER_CACHE_DIR)
    list(APPEND _args "${ITSCALE_LLAMA_SERVER_CACHE_DIR}")
  endif()
  message(STATUS "itscale: llama-server (llama.cpp of node-llama-cpp 3.21.1) for the remote tests: "
                 "building it if not cached yet; the first time takes 8-20 minutes on 2 cores")
  string(TIMESTAMP _t0 "%s")
  # Without the caller's compiler flags in the environment: the server is built plain (no sanitizer).
  execute_process(
    COMMAND "${CMAKE_COMMAND}" -E env --unset=CFLAGS --unset=CXXFLAGS --unset=LDFLAGS --unset=CMAKE_GENERATOR
            bash "${PROJECT_SOURCE_DIR}/tests/remote/build_llama_server.sh" ${_args}
    OUTPUT_VARIABLE _out
    RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "itscale: tests/remote/build_llama_server.sh failed (${_rc}); it needs npm, git, cmake "
                        "and a C++ compiler (bash .ci/install-deps)")
  endif()
  string(STRIP "${_out}" _out)
  string(REGEX REPLACE "^.*\n" "" _exe "${_out}")   # the last line is the binary's path
  if(NOT EXISTS "${_exe}")
    message(FATAL_ERROR "itscale: build_llama_server.sh did not give a binary (last line: '${_exe}')")
  endif()
  string(TIMESTAMP _t1 "%s")
  math(EXPR _dt "${_t1} - ${_t0}")
  message(STATUS "itscale: llama-server: ${_exe} (${_dt} s)")
  set(ITSCALE_LLAMA_SERVER_EXE "${_exe}" CACHE FILEPATH
      "llama-server for the remote backends' tests (empty: built by tests/remote/build_llama_server.sh)" FORCE)
  set(ITSCALE_LLAMA_SERVER_EXE_BUILT_BY_SCRIPT "${_exe}" CACHE INTERNAL "")
endif()
