#!/usr/bin/env bash
# The operator and router in a kind cluster with the real image: build, load, helm install,
# apply an example Onion. Needs docker, kind, kubectl and helm; the build machines of this
# project have no Docker engine, so this script is not run by the tests (make demo is).
# Usage: hack/kind-demo.sh [up|down]
set -euo pipefail
cd "$(dirname "$0")/.."
cluster="${KIND_CLUSTER:-onion-demo}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
image="ghcr.io/onion-of-experts/onion:$version"
ns_system=onion-system
ns_demo=onion-demo

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-demo: $tool is not installed" >&2; exit 2; }
done

if [[ "${1:-up}" == down ]]; then
  kind delete cluster --name "$cluster"
  exit 0
fi

CONTAINER_ENGINE=docker bash hack/build-image.sh "$image" >/dev/null
kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster" --wait 120s
kubectl config use-context "kind-$cluster" >/dev/null
# The router Deployments the operator renders use the same image (IfNotPresent: no pull).
kind load docker-image "$image" --name "$cluster"

helm upgrade --install onion-of-experts charts/onion-of-experts \
  --namespace "$ns_system" --create-namespace \
  --set "operator.watchNamespaces={$ns_demo}" --wait --timeout 180s
kubectl create namespace "$ns_demo" --dry-run=client -o yaml | kubectl apply -f -
# The demo Onion: llama.cpp pods pull their GGUF models from Hugging Face (needs internet).
kubectl -n "$ns_demo" apply -f examples/demo-local.yaml
kubectl -n "$ns_demo" rollout status deployment/demo-router --timeout=180s
kubectl -n "$ns_demo" get onions

cat <<MSG

kind-demo is up. Send a request through the router (the core answers; "prove ..." wakes mid):
  kubectl -n $ns_demo port-forward svc/demo-router 8080:8080 &
  curl -s localhost:8080/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"onion","messages":[{"role":"user","content":"Prove that 2 is prime."}]}'
  kubectl -n $ns_demo get onions -w
Tear down: hack/kind-demo.sh down
MSG
