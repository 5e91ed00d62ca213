#!/usr/bin/env bash
# Published CRDs the tests install, at pinned versions, from the Go module proxy (the projects'
# modules carry their release's CRD YAML), cached outside the repo. Prints the directory holding
# the CRD files.
#
#   hack/fetch-crds.sh gateway-api           # Gateway API, standard channel (HTTPRoute test)
#   hack/fetch-crds.sh prometheus-operator   # ServiceMonitor and PodMonitor (the chart's)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache_root="${ONION_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/onion-of-experts}"
sums=()
case "${1:-}" in
  gateway-api)
    module=sigs.k8s.io/gateway-api version=$GATEWAY_API_VERSION
    files=(config/crd/standard/*.yaml)
    ;;
  prometheus-operator)
    module=github.com/prometheus-operator/prometheus-operator version=$PROMETHEUS_OPERATOR_VERSION
    files=(example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,podmonitors}.yaml)
    # sum.golang.org has no record of this module's go.mod (its lookup answers 404), so the Go
    # checksum database cannot vouch for it: the files are checked against these instead.
    sums=("$PROMETHEUS_OPERATOR_SERVICEMONITOR_SHA256" "$PROMETHEUS_OPERATOR_PODMONITOR_SHA256")
    export GONOSUMDB=$module
    ;;
  *)
    echo "usage: $0 gateway-api | prometheus-operator" >&2
    exit 2
    ;;
esac
dir="$cache_root/crds/$1/$version"
if [[ ! -f "$dir/.ok" ]]; then
  echo "[fetch-crds] $module $version: downloading" >&2
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && go mod download -json "$module@$version" > module.json)
  src="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Dir"])' "$work/module.json")"
  mkdir -p "$work/out"
  for pattern in "${files[@]}"; do
    cp "$src"/$pattern "$work/out/"
  done
  if ((${#sums[@]})); then
    i=0
    for pattern in "${files[@]}"; do
      file="$work/out/$(basename "$pattern")"
      got="$(sha256sum "$file" | cut -d' ' -f1)"
      if [[ "$got" != "${sums[$i]}" ]]; then
        echo "[fetch-crds] $(basename "$file"): sha256 $got, expected ${sums[$i]}" >&2
        exit 1
      fi
      i=$((i + 1))
    done
  fi
  mkdir -p "$dir"
  cp "$work"/out/*.yaml "$dir/"
  chmod 644 "$dir"/*.yaml
  touch "$dir/.ok"
fi
echo "$dir"
