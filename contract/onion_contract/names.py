"""Names the CRD, the operator and the router share: API group, labels, annotations, children,
Leases, phases and conditions."""

from __future__ import annotations

GROUP = "onion.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Onion"
LIST_KIND = f"{KIND}List"
PLURAL = "onions"
CRD = f"{PLURAL}.{GROUP}"  # the CustomResourceDefinition's name
SINGULAR = "onion"
SHORT_NAMES = ("on",)
CATEGORIES = ("all",)

# Labels on every child object.
LABEL_ONION = f"{GROUP}/onion"
LABEL_LAYER = f"{GROUP}/layer"  # "core", a layer name, or "router"
LABEL_COMPONENT = f"{GROUP}/component"  # "model", "router", "demand"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "onion-operator"

CORE = "core"
ROUTER = "router"

COMPONENT_MODEL = "model"
COMPONENT_ROUTER = "router"
COMPONENT_DEMAND = "demand"
COMPONENT_CACHE = "model-cache"
COMPONENT_AUTOSCALER = "autoscaler"
COMPONENT_PREPULL = "prepull"  # a layer's image pre-pull DaemonSet
COMPONENT_PREFETCH = "prefetch"  # a layer's weights prefetch Job

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
PHASES = (PHASE_DORMANT, PHASE_WAKING, PHASE_READY, PHASE_DRAINING, PHASE_FAILED)

# Condition types on the Onion.
COND_READY = "Ready"
COND_INVALID_SPEC = "InvalidSpec"

# The router's gauge of queued + in-flight requests per layer (labels onion, layer, state): the
# load signal of the HPAs the operator creates, as an External metric through an adapter.
LAYER_REQUESTS_METRIC = "onion_router_layer_requests"

# The router renews a layer's demand Lease this often while it is used (at most a third of the
# shortest idleTimeout).
DEMAND_RENEW_SECONDS = 3.0
# The image of the operator and of the routers it creates (`spec.router.image` defaults to it).
DEFAULT_OPERATOR_IMAGE = "ghcr.io/onion-of-experts/onion:0.1.0"

# One active operator: a coordination.k8s.io Lease held by the leader.
LEADER_LEASE = "onion-operator-leader"
# On the thresholds Lease: one annotation per judged layer, its live cut as JSON.
ANNOTATION_THRESHOLD_PREFIX = f"{GROUP}/threshold."


def child_name(onion: str, part: str) -> str:
    """Name of a Deployment/Service for the core, a layer or the router."""
    return f"{onion}-{part}"


def lease_name(onion: str, layer: str) -> str:
    """The demand Lease the router renews and the operator watches, one per managed layer."""
    return f"{onion}-{layer}-demand"


def thresholds_lease_name(onion: str) -> str:
    """The Lease on which the routers publish their live targetRate thresholds (annotations),
    so a restarted or added replica starts from them; not watched by the operator."""
    return f"{onion}-thresholds"


def prepull_name(onion: str, layer: str) -> str:
    """The image pre-pull DaemonSet of a layer (no longer than the layer's demand Lease name)."""
    return f"{onion}-{layer}-pull"


def router_config_name(onion: str) -> str:
    """The ConfigMap holding the router's config.yaml."""
    return f"{onion}-router"


def model_cache_pvc_name(onion: str) -> str:
    """The PersistentVolumeClaim the operator creates when modelCache.size is given."""
    return f"{onion}-model-cache"
