#!/usr/bin/env bash
# The Gateway API CRDs (standard channel) at the pinned version, from the Go module proxy
# (sigs.k8s.io/gateway-api carries the release's CRD YAML), cached outside the repo.
# Prints the directory holding the CRD files.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache_root="${ONION_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/onion-of-experts}"
dir="$cache_root/gateway-api/$GATEWAY_API_VERSION"
if [[ ! -f "$dir/.ok" ]]; then
  echo "[fetch-gateway-api] sigs.k8s.io/gateway-api $GATEWAY_API_VERSION: downloading" >&2
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" > module.json)
  src="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Dir"])' "$work/module.json")"
  mkdir -p "$dir"
  cp "$src"/config/crd/standard/*.yaml "$dir/"
  chmod 644 "$dir"/*.yaml
  touch "$dir/.ok"
fi
echo "$dir"
