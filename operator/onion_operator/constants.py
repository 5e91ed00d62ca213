"""The operator's own constants: field managers, the router's files and ports, helper images.

Names the router and the CRD share with the operator (API group, labels, annotations, children,
Leases, phases) are the contract's: `onion_contract.names`.
"""

from __future__ import annotations

from onion_contract.names import child_name

FIELD_MANAGER = "onion-operator"
# Holds `spec.replicas` of an autoscaled Deployment for a moment, so that the operator's own apply
# can drop the field without it being reset to the default (the handover in "Transferring
# ownership" of the Kubernetes server-side apply docs); the HPA or a wake/sleep takes it next.
HANDOVER_FIELD_MANAGER = "onion-operator-handover"

# kwok's annotation for simulated model load time on the local test cluster; harmless elsewhere.
KWOK_READY_DELAY_ANNOTATION = "pod-ready.stage.kwok.x-k8s.io/delay"

# The DaemonSets' main container: it only keeps the pod (whose init container pulled the engine
# image) alive, so that the image stays in use and the kubelet's image GC keeps it.
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"

ROUTER_CONFIG_KEY = "config.yaml"
ROUTER_CONFIG_DIR = "/etc/onion"
ROUTER_AUTH_DIR = "/etc/onion/auth"
# An endpoint layer's Secrets are mounted in the router at <dir>/<layer>/{api-key,ca.crt}.
ROUTER_LAYERS_DIR = "/etc/onion/layers"
# A learned policy's model ConfigMaps are mounted in the router at <dir>/<configmap>/<key>.
ROUTER_LEARNED_DIR = "/etc/onion/learned"
API_KEY_FILE = "api-key"
CA_FILE = "ca.crt"
ROUTER_PORT = 8080
SERVICE_PORT = 80

# The router's optional HTTPRoute (Gateway API, standard channel).
HTTPROUTE_API_VERSION = "gateway.networking.k8s.io/v1"


def service_url(onion: str, part: str, namespace: str) -> str:
    """In-cluster URL of the Service in front of the core or a layer."""
    return f"http://{child_name(onion, part)}.{namespace}.svc:{SERVICE_PORT}"


def learned_model_path(config_map: str, key: str) -> str:
    """Where the router reads a learned policy's model (a mounted ConfigMap key)."""
    return f"{ROUTER_LEARNED_DIR}/{config_map}/{key}"


def layer_secret_path(layer: str, file: str) -> str:
    """Where the router reads an endpoint layer's API key or CA (a mounted Secret key)."""
    return f"{ROUTER_LAYERS_DIR}/{layer}/{file}"
