#!/usr/bin/env bash
# Builds llama.cpp's llama-server (the OpenAI-compatible HTTP server) for the remote-backend tests,
# cached outside the clone:
#
#   build_llama_server.sh [CACHE_DIR]
#
# CACHE_DIR defaults to ${ITSCALE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/itscale}/llama-server-3.21.1.
# The sources are the git bundle inside node-llama-cpp@3.21.1 (the same llama.cpp as the prebuilt
# libraries of the llama.cpp backend), fetched with bench/fetch_llama_cpp.sh into CACHE_DIR/fetch.
# The build is portable (GGML_NATIVE=OFF and no SSE4.2/AVX/AVX2/FMA/F16C/BMI2: baseline x86-64,
# which GGML_NATIVE=OFF alone is not: it would enable AVX2), static, without
# tests/examples/web UI/OpenSSL, and builds only the target llama-server: 330 steps, 8 minutes on
# 2 idle cores, 19.5 with other builds on them (-j2; set ITSCALE_BUILD_JOBS). Under `nice -n 10`.
# A no-op when CACHE_DIR already holds the binary built for this version (CACHE_DIR/.built);
# concurrent runs on one CACHE_DIR wait for each other (flock CACHE_DIR/.lock).
# The last line printed is the binary's absolute path.
set -euo pipefail
version=3.21.1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${1:-${ITSCALE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/itscale}/llama-server-$version}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
exe="$cache/build/bin/llama-server"
stamp="$cache/.built"
built() { [[ -x "$exe" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; }
if built; then
  echo "$exe"
  exit 0
fi
# One build at a time per cache dir (two configures at once wait for each other).
if command -v flock >/dev/null; then
  exec 9>"$cache/.lock"
  flock 9
  if built; then
    echo "$exe"
    exit 0
  fi
fi
rm -f "$stamp"

for tool in cmake c++; do
  command -v "$tool" >/dev/null || { echo "build_llama_server.sh: $tool not found" >&2; exit 1; }
done

echo "build_llama_server.sh: fetching llama.cpp sources (node-llama-cpp@$version) into $cache/fetch" >&2
bash "$repo/bench/fetch_llama_cpp.sh" "$cache/fetch" >&2

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ -f "$cache/build/CMakeCache.txt" ]] && ! grep -q "^CMAKE_HOME_DIRECTORY:INTERNAL=$cache/fetch/src\$" "$cache/build/CMakeCache.txt"; then
  rm -rf "$cache/build"
fi
echo "build_llama_server.sh: building llama-server in $cache/build (8-20 min on 2 cores)" >&2
start=$(date +%s)
# LLAMA_USE_PREBUILT_UI=OFF / LLAMA_BUILD_UI=OFF: no web UI (the prebuilt one would be downloaded).
# LLAMA_OPENSSL=OFF: no HTTPS client (nothing is downloaded); LLAMA_CURL is gone in this version.
cmake -S "$cache/fetch/src" -B "$cache/build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DGGML_SSE42=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_BMI2=OFF \
  -DGGML_FMA=OFF -DGGML_F16C=OFF \
  -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_OPENSSL=OFF >&2
nice -n 10 cmake --build "$cache/build" --target llama-server -j "${ITSCALE_BUILD_JOBS:-2}" >&2
[[ -x "$exe" ]] || { echo "build_llama_server.sh: $exe was not built" >&2; exit 1; }
"$exe" --version >&2 || true
echo "build_llama_server.sh: built in $(( $(date +%s) - start )) s" >&2
echo "$version" > "$stamp"
echo "$exe"
