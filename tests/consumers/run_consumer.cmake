# Driver for the consumer tests: cmake -DMODE=<install|find_package|add_subdirectory|pkg_config> ... -P
cmake_minimum_required(VERSION 3.25)

function(run)
  list(JOIN ARGN " " cmd)
  message(STATUS "[${MODE}] ${cmd}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "[${MODE}] failed (${rc}): ${cmd}")
  endif()
endfunction()

# The consumer binary must run and print exactly our version.
function(run_consumer exe)
  execute_process(COMMAND "${exe}" RESULT_VARIABLE rc OUTPUT_VARIABLE out OUTPUT_STRIP_TRAILING_WHITESPACE)
  message(STATUS "[${MODE}] consumer printed: ${out}")
  if(NOT rc EQUAL 0 OR NOT out STREQUAL "itscale ${EXPECTED_VERSION}")
    message(FATAL_ERROR "[${MODE}] expected 'itscale ${EXPECTED_VERSION}' and exit 0, got '${out}' (${rc})")
  endif()
endfunction()

set(src "${CMAKE_CURRENT_LIST_DIR}/${MODE}")
set(bin "${CONSUMERS_WORK_DIR}/${MODE}")
if(NOT MODE STREQUAL "install")
  file(REMOVE_RECURSE "${bin}")  # always a fresh consumer: no stale cache hides a breakage
  file(MAKE_DIRECTORY "${bin}")
endif()
set(configure "${CMAKE_COMMAND}" -S "${src}" -B "${bin}" -G "${GENERATOR}"
    "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}" "-DCMAKE_CXX_COMPILER=${CXX}" -DCMAKE_BUILD_TYPE=Release)

if(MODE STREQUAL "install")
  file(REMOVE_RECURSE "${PREFIX}")
  run("${CMAKE_COMMAND}" --install "${ITSCALE_BINARY_DIR}" --config "${CONFIG}" --prefix "${PREFIX}")

elseif(MODE STREQUAL "find_package")
  # No package registry: the only way to find itscale must be the private prefix.
  run(${configure} "-DCMAKE_PREFIX_PATH=${PREFIX}" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
  file(STRINGS "${bin}/CMakeCache.txt" found REGEX "^itscale_DIR:")
  string(FIND "${found}" "${PREFIX}/" at)
  if(NOT at GREATER 0)
    message(FATAL_ERROR "[find_package] itscale found outside ${PREFIX}: ${found}")
  endif()
  run("${CMAKE_COMMAND}" --build "${bin}")
  run_consumer("${bin}/consumer")

elseif(MODE STREQUAL "add_subdirectory")
  run(${configure} "-DITSCALE_SOURCE_DIR=${ITSCALE_SOURCE_DIR}")
  run("${CMAKE_COMMAND}" --build "${bin}")
  run_consumer("${bin}/consumer")

elseif(MODE STREQUAL "pkg_config")
  execute_process(COMMAND "${CMAKE_COMMAND}" -E env "PKG_CONFIG_PATH=${PKG_CONFIG_DIR}"
                          "${PKG_CONFIG}" --cflags itscale
                  RESULT_VARIABLE rc OUTPUT_VARIABLE cflags OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "[pkg_config] pkg-config --cflags itscale failed (${rc})")
  endif()
  message(STATUS "[pkg_config] cflags: ${cflags}")
  separate_arguments(cflags UNIX_COMMAND "${cflags}")
  # The standard is the consumer's to choose (the .pc file says so); itscale needs C++20.
  run("${CXX}" -std=c++20 ${cflags} "${src}/main.cpp" -o "${bin}/consumer")
  run_consumer("${bin}/consumer")

else()
  message(FATAL_ERROR "unknown MODE '${MODE}'")
endif()
