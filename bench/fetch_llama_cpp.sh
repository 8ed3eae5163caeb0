#!/usr/bin/env bash
# Obtains llama.cpp's prebuilt CPU libraries and the matching headers, for the llama.cpp peers of
# bench/kernels.cpp and the llama.cpp backend's tests, example and benchmark (CMake options
# ITSCALE_BENCH_LLAMA_CPP=ON / ITSCALE_LLAMA_CPP=ON run this at configure time, from
# cmake/itscale_llama_cpp.cmake):
#
#   fetch_llama_cpp.sh DEST      (DEST: a directory in the build tree, never the source tree)
#
# Afterwards:
#   DEST/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/   libllama.v*.so, libggml*.so
#   DEST/src/include, DEST/src/ggml/include                        llama.h, ggml*.h of that build
# The headers come from the git bundle shipped inside node-llama-cpp (llama/gitRelease.bundle),
# the source of exactly those prebuilt libraries. Nothing is compiled; no install scripts run.
# Idempotent: a DEST already fetched for this version (DEST/.fetched) is left as it is.
set -euo pipefail
version=3.21.1
dest=${1:?usage: fetch_llama_cpp.sh DEST}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
stamp="$dest/.fetched"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then exit 0; fi
rm -f "$stamp"

for tool in npm git; do
  command -v "$tool" >/dev/null || { echo "fetch_llama_cpp.sh: $tool not found (needed for ITSCALE_LLAMA_CPP / ITSCALE_BENCH_LLAMA_CPP)" >&2; exit 1; }
done

cd "$dest"
echo '{"name":"itscale-bench-llama-cpp","private":true}' > package.json
# --ignore-scripts: no postinstall (node-llama-cpp's would download or build llama.cpp itself).
# --omit=optional: skip the other platforms' and CUDA binaries node-llama-cpp lists as optional
# (80 MB instead of 730 MB); the linux-x64 package is named explicitly, so it is still installed.
npm install --no-audit --no-fund --ignore-scripts --omit=optional --loglevel=error \
  "node-llama-cpp@${version}" "@node-llama-cpp/linux-x64@${version}"

bundle="$dest/node_modules/node-llama-cpp/llama/gitRelease.bundle"
[[ -f "$bundle" ]] || { echo "fetch_llama_cpp.sh: $bundle is missing" >&2; exit 1; }
rm -rf "$dest/src"
git -c advice.detachedHead=false clone --quiet "$bundle" "$dest/src"
for h in include/llama.h ggml/include/ggml.h; do
  [[ -f "$dest/src/$h" ]] || { echo "fetch_llama_cpp.sh: $h not in the bundle" >&2; exit 1; }
done
ls "$dest"/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libllama.*.so >/dev/null
echo "$version" > "$stamp"
