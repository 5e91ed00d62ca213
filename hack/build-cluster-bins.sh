#!/usr/bin/env bash
# Build the local control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd, kwok, helm) from Go modules at pinned versions into a cache directory outside
# the repo. Re-running is cheap: a stamp file per version set skips finished builds.
# Prints the bin directory on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${ONION_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/onion-of-experts}"
key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
bin="$cache_root/bin/$key"
work="$cache_root/build"
mkdir -p "$bin" "$work"
export GOFLAGS="-buildvcs=false"
export CGO_ENABLED=0

log() { echo "[build-cluster-bins] $*" >&2; }

have() { [[ -x "$bin/$1" && -f "$bin/.$1.ok" ]]; }
mark() { touch "$bin/.$1.ok"; }

build_kubernetes() {
  local wanted=(kube-apiserver kube-controller-manager kube-scheduler kubectl) missing=()
  for b in "${wanted[@]}"; do have "$b" || missing+=("$b"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging="v0.${K8S_VERSION#v1.}"
  local dir="$work/kubernetes-$K8S_VERSION"
  mkdir -p "$dir"
  log "kubernetes $K8S_VERSION: resolving module (staging modules at $staging)"
  (cd "$dir"
   # `go install k8s.io/kubernetes/...@v` fails on its ./staging replace directives, so a small
   # wrapper module requires it and points each staging module at its published version.
   cat > go.mod <<MOD
module onion.local/clusterbins

go 1.24.0

require k8s.io/kubernetes $K8S_VERSION
MOD
   go mod download -json "k8s.io/kubernetes@$K8S_VERSION" > kube.json
   gomod="$(python3 -c 'import json,sys; print(json.load(open("kube.json"))["GoMod"])')"
   grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" \
     | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}' >> go.mod
   ldflags="-s -w"
   for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
     ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
     ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
   done
   for b in "${missing[@]}"; do
     log "kubernetes $K8S_VERSION: building $b (first build takes several minutes)"
     go build -mod=mod -ldflags "$ldflags" -o "$bin/$b" "k8s.io/kubernetes/cmd/$b"
     mark "$b"
   done)
}

build_etcd() {
  have etcd && return 0
  local dir="$work/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  log "etcd $ETCD_VERSION: building"
  (cd "$dir"
   cat > go.mod <<MOD
module onion.local/etcdbin

go 1.24.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
   go build -mod=mod -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
  mark etcd
}

build_simple() {  # name module-path version [extra ldflags]
  have "$1" && return 0
  log "$1 $3: building"
  GOBIN="$bin" go install -ldflags "-s -w ${4:-}" "$2@$3"
  mark "$1"
}

build_etcd
build_simple kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"
build_simple helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
build_kubernetes
log "all binaries ready"
echo "$bin"
