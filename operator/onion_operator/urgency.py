"""Whether someone may be waiting on an Onion: what a (re)started operator serves first.

While the operator is away (a rolling upgrade, a crash) the router keeps recording demand and pods
keep turning Ready. The watch events that would have said so are gone, so after the start the
operator compares what the caches hold with what the Onion's status last said: a demand newer than
the status's `lastDemandTime` (a request may be held for a wake), a Deployment's replicas or ready
replicas other than the status says (a held request waits for `Ready`), a spec generation not yet
reconciled (a user's `kubectl apply`), a layer the status calls Waking, a layer whose Deployment or
Lease is missing. Such an Onion's first pass is an event; every other Onion's is backlog. Pure: no
I/O, a few dict reads per Onion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onion_contract import names
from onion_operator.cache import OnionView
from onion_operator.planner import parse_time


def _managed_layers(spec: Mapping[str, Any]) -> list[str]:
    layers = spec.get("layers") or []
    return [
        str(layer.get("name"))
        for layer in layers
        if isinstance(layer, Mapping) and not layer.get("endpoint")
    ]


def waiting_by_status(view: OnionView) -> str | None:
    """What the Onion and its Leases alone tell (before the Deployments are listed): a spec not
    reconciled, demand newer than the status has seen (a request may be held for a wake), or a
    layer the status calls Waking (held requests wait for its Ready, which may have come while
    no operator watched). None: nothing of that."""
    onion = view.onion
    if onion.deleting:
        return None  # its children go by owner references: nothing to hurry
    status = onion.status
    if status.get("observedGeneration") != onion.generation:
        return f"generation {onion.generation} not reconciled yet"
    published = _published(status)
    for layer in _managed_layers(onion.spec):
        lease = view.leases.get(layer)
        seen = parse_time((published.get(layer) or {}).get("lastDemandTime"))
        if lease is not None and lease.demand is not None and (seen is None or lease.demand > seen):
            return f"{layer}: demand since the status was written"
        if (published.get(layer) or {}).get("phase") == names.PHASE_WAKING:
            return f"{layer}: Waking when the status was written"
    return None


def waiting(view: OnionView) -> str | None:
    """Why a request or a user may be waiting on this Onion now; None: nothing but routine."""
    reason = waiting_by_status(view)
    if reason is not None or view.onion.deleting:
        return reason
    published = _published(view.onion.status)
    managed = _managed_layers(view.onion.spec)
    for part in (names.CORE, *managed):
        deployment = view.deployments.get(part)
        if deployment is None:
            return f"{part}: no Deployment"
        entry = published.get(part) or {}
        observed = deployment.observed
        now = (observed.replicas or 0, observed.ready_replicas)
        if now != (entry.get("replicas", 0), entry.get("readyReplicas", 0)):
            return f"{part}: replicas or readiness changed since the status was written"
    for layer in managed:
        if layer not in view.leases:
            return f"{layer}: no demand Lease"
    return None


def _published(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {e.get("name", ""): e for e in status.get("layers") or [] if isinstance(e, Mapping)}
