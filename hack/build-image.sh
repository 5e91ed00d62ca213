#!/usr/bin/env bash
# Build the onion image (operator + router) with docker or podman, whichever has a running
# engine; $CONTAINER_ENGINE picks one. Usage: hack/build-image.sh [IMAGE]
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
image="${1:-ghcr.io/onion-of-experts/onion:$version}"

engine="${CONTAINER_ENGINE:-}"
if [[ -z "$engine" ]]; then
  for candidate in docker podman; do
    # A client binary is not enough: `info` needs a reachable engine (daemon or rootless).
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" info >/dev/null 2>&1; then
      engine=$candidate
      break
    fi
  done
fi
if [[ -z "$engine" ]]; then
  echo "make image: this machine has no usable container engine (no running docker daemon," >&2
  echo "no podman), so the image cannot be built here. Build it where one exists:" >&2
  echo "  docker build -t $image ." >&2
  echo "make demo needs no image: it runs the operator and router as local processes." >&2
  exit 2
fi
echo "[build-image] $engine build -t $image" >&2
"$engine" build --build-arg "VERSION=$version" -t "$image" .
echo "$image"
