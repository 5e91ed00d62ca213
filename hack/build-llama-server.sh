#!/usr/bin/env bash
# Build llama.cpp's own C++ OpenAI-compatible server (`llama-server`) from the llama.cpp source
# vendored in the pinned llama-cpp-python sdist, once, into a cache outside the repo keyed by the
# version and the build flags. Prints the binary's path. Usage: hack/build-llama-server.sh PYTHON
#
# This is the engine the `llamacpp` engine image (ghcr.io/ggml-org/llama.cpp:server) runs in pods;
# tests, the demo and `make bench-quality` run it on loopback. It computes token logprobs in C++,
# where llama-cpp-python's server did it in Python over the whole vocabulary.
# `hack/build-llama-server.sh --check` only prints the path of a built binary (or fails saying so).
set -euo pipefail
check=false
if [ "${1:-}" = "--check" ]; then check=true; shift; fi
py="${1:-python3}"
LLAMA_CPP_PYTHON_VERSION=0.3.36
# A native build targets instructions this VM does not enable (AMX) and dies with "illegal
# instruction"; pin a portable AVX2 build. No web UI (nothing here uses it; its assets would come
# from a hub), no OpenSSL (loopback and in-cluster plain HTTP only), static, server only.
FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DCMAKE_BUILD_TYPE=Release)
cache_root="${ONION_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/onion-of-experts}"
key="$(printf '%s\n' "$LLAMA_CPP_PYTHON_VERSION" "${FLAGS[@]}" | sha256sum | cut -c1-12)"
prefix="$cache_root/llama-server-$LLAMA_CPP_PYTHON_VERSION-$key"
binary="$prefix/bin/llama-server"
log() { echo "[build-llama-server] $*" >&2; }

if [ -n "${ONION_LLAMA_SERVER:-}" ]; then  # a llama-server of the user's own
  echo "$ONION_LLAMA_SERVER"
  exit 0
fi
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
if $check; then
  log "llama-server is not built; run \`make engine\` (builds it once into $prefix)"
  exit 1
fi
for tool in cmake c++; do
  command -v "$tool" >/dev/null || { log "needs $tool (apt-get install cmake g++)"; exit 1; }
done
sdists="$cache_root/sdist"
mkdir -p "$sdists"
sdist="$sdists/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
if [ ! -f "$sdist" ]; then
  "$py" -m pip download -q --no-deps --no-binary :all: -d "$sdists" \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
fi
work="$(mktemp -d "$cache_root/.llama-server-build-XXXXXX")"
trap 'rm -rf "$work"' EXIT
log "building llama-server from llama-cpp-python $LLAMA_CPP_PYTHON_VERSION's vendored llama.cpp (a few minutes, once)"
tar -xzf "$sdist" -C "$work" "llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
src="$work/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$src" -B "$work/build" "${generator[@]}" "${FLAGS[@]}" > "$work/configure.log" 2>&1 \
  || { tail -40 "$work/configure.log" >&2; log "cmake configure failed"; exit 1; }
cmake --build "$work/build" --target llama-server -j "$(nproc)" > "$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log" >&2; log "build failed"; exit 1; }
mkdir -p "$work/out/bin"
cp "$work/build/bin/llama-server" "$work/out/bin/llama-server"
"$work/out/bin/llama-server" --version >&2 || { log "the built llama-server does not run"; exit 1; }
rm -rf "$prefix"
mv "$work/out" "$prefix"
log "cached at $prefix"
echo "$binary"
