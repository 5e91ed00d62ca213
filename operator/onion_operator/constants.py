"""Names shared by the CRD, the operator and the router: API group, labels, annotations, leases."""

from __future__ import annotations

GROUP = "onion.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Onion"
PLURAL = "onions"
SINGULAR = "onion"
SHORT_NAMES = ("on",)

FIELD_MANAGER = "onion-operator"

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
