"""Names shared by the CRD, the operator and the router: API group, labels, annotations, leases."""

from __future__ import annotations

GROUP = "onion.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Onion"
PLURAL = "onions"
CRD = f"{PLURAL}.{GROUP}"  # the CustomResourceDefinition's name
SINGULAR = "onion"
SHORT_NAMES = ("on",)

FIELD_MANAGER = "onion-operator"
# Holds `spec.replicas` of an autoscaled Deployment for a moment, so that the operator's own apply
# can drop the field without it being reset to the default (the handover in "Transferring
# ownership" of the Kubernetes server-side apply docs); the HPA or a wake/sleep takes it next.
HANDOVER_FIELD_MANAGER = "onion-operator-handover"

# Labels on every child object.
LABEL_ONION = f"{GROUP}/onion"
LABEL_LAYER = f"{GROUP}/layer"  # "core", a layer name, or "router"
LABEL_COMPONENT = f"{GROUP}/component"  # "model", "router", "demand"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "onion-operator"

CORE = "core"
ROUTER = "router"

# kwok's annotation for simulated model load time on the local test cluster; harmless elsewhere.
KWOK_READY_DELAY_ANNOTATION = "pod-ready.stage.kwok.x-k8s.io/delay"


def child_name(onion: str, part: str) -> str:
    """Name of a Deployment/Service for the core, a layer or the router."""
    return f"{onion}-{part}"


def lease_name(onion: str, layer: str) -> str:
    """The demand Lease the router renews and the operator watches, one per managed layer."""
    return f"{onion}-{layer}-demand"


COMPONENT_MODEL = "model"
COMPONENT_ROUTER = "router"
COMPONENT_DEMAND = "demand"
COMPONENT_CACHE = "model-cache"
COMPONENT_AUTOSCALER = "autoscaler"
COMPONENT_PREPULL = "prepull"  # a layer's image pre-pull DaemonSet
COMPONENT_PREFETCH = "prefetch"  # a layer's weights prefetch Job
# The DaemonSets' main container: it only keeps the pod (whose init container pulled the engine
# image) alive, so that the image stays in use and the kubelet's image GC keeps it.
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"

# The router's gauge of queued + in-flight requests per tier (labels onion, layer, state): the
# load signal of the HPAs the operator creates, as an External metric through an adapter.
LAYER_REQUESTS_METRIC = "onion_router_layer_requests"

# Set on a layer Deployment in the same write that wakes it, so the wake time and count
# survive an operator restart (the status is derived from them).
ANNOTATION_WOKEN_AT = f"{GROUP}/woken-at"
ANNOTATION_WAKE_COUNT = f"{GROUP}/wake-count"
# Checksum of the router config on the router pod template: a config change rolls the router.
ANNOTATION_CONFIG_HASH = f"{GROUP}/config-hash"

# Layer phases published in status.layers[].phase; the router forwards only on READY.
PHASE_DORMANT = "Dormant"
PHASE_WAKING = "Waking"
PHASE_READY = "Ready"
PHASE_DRAINING = "Draining"
PHASE_FAILED = "Failed"

# Condition types on the Onion.
COND_READY = "Ready"
COND_INVALID_SPEC = "InvalidSpec"

ROUTER_CONFIG_KEY = "config.yaml"
ROUTER_CONFIG_DIR = "/etc/onion"
ROUTER_AUTH_DIR = "/etc/onion/auth"
# An endpoint layer's Secrets are mounted in the router at <dir>/<layer>/{api-key,ca.crt}.
ROUTER_LAYERS_DIR = "/etc/onion/layers"
API_KEY_FILE = "api-key"
CA_FILE = "ca.crt"
ROUTER_PORT = 8080
SERVICE_PORT = 80
# The router renews a layer's demand Lease this often while it is used (at most a third of the
# shortest idleTimeout).
DEMAND_RENEW_SECONDS = 3.0
DEFAULT_OPERATOR_IMAGE = "ghcr.io/onion-of-experts/onion:0.1.0"

# The router's optional HTTPRoute (Gateway API, standard channel).
HTTPROUTE_API_VERSION = "gateway.networking.k8s.io/v1"

# One active operator: a coordination.k8s.io Lease held by the leader.
LEADER_LEASE = "onion-operator-leader"


def prepull_name(onion: str, layer: str) -> str:
    """The image pre-pull DaemonSet of a layer (no longer than the layer's demand Lease name)."""
    return f"{onion}-{layer}-pull"


def router_config_name(onion: str) -> str:
    """The ConfigMap holding the router's config.yaml."""
    return f"{onion}-router"


def model_cache_pvc_name(onion: str) -> str:
    """The PersistentVolumeClaim the operator creates when modelCache.size is given."""
    return f"{onion}-model-cache"


def service_url(onion: str, part: str, namespace: str) -> str:
    """In-cluster URL of the Service in front of the core or a layer."""
    return f"http://{child_name(onion, part)}.{namespace}.svc:{SERVICE_PORT}"


def layer_secret_path(layer: str, file: str) -> str:
    """Where the router reads an endpoint layer's API key or CA (a mounted Secret key)."""
    return f"{ROUTER_LAYERS_DIR}/{layer}/{file}"
