"""What the watches saw, reduced to what a pass needs, and what this operator wrote since.

The watch streams (kopf indexes, see handlers.py) keep one entry per Onion, demand Lease and
model Deployment, built by the `*_entry` functions here. A pass reads an `OnionView` from them
and never lists from the API server. Right after a write the watch has not shown it yet, so
`Written` keeps the API's answer to each write until the watch catches up; like client-go's
`NewIntegerResourceVersionMutationCache`, it relies on resourceVersions being etcd revisions
(integers that grow), and trusts the watch when they are not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from onion_operator import constants as c
from onion_operator.planner import Observed, lease_demand, observe_deployment

Obj = dict[str, Any]


def onion_key(namespace: str, name: str) -> str:
    """The one way per-Onion state (caches, queue, overlays) is keyed."""
    return f"{namespace}/{name}"


@dataclass(frozen=True)
class CachedOnion:
    name: str
    namespace: str
    uid: str
    generation: int
    resource_version: str
    deleting: bool
    spec: Mapping[str, Any]
    status: Mapping[str, Any]

    @property
    def key(self) -> str:
        return onion_key(self.namespace, self.name)

    def ref(self) -> Obj:
        """Enough of the Onion to post an Event about it."""
        meta = {"name": self.name, "namespace": self.namespace, "uid": self.uid}
        return {"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": meta}


@dataclass(frozen=True)
class CachedDeployment:
    layer: str  # "core" or a layer name
    name: str
    resource_version: str
    observed: Observed
    apply_owns_replicas: bool  # the operator's apply manager owns spec.replicas


@dataclass(frozen=True)
class CachedLease:
    layer: str
    name: str
    resource_version: str
    demand: datetime | None


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = body.get("metadata") or {}
    return meta


def onion_entry(body: Mapping[str, Any]) -> CachedOnion:
    meta = _meta(body)
    return CachedOnion(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        resource_version=str(meta.get("resourceVersion", "")),
        deleting=bool(meta.get("deletionTimestamp")),
        spec=body.get("spec") or {},
        status=body.get("status") or {},
    )


def owns_field(
    body: Mapping[str, Any], manager: str, operation: str, path: tuple[str, ...]
) -> bool:
    """Whether `manager`'s `operation` entry in managedFields holds the field at `path`."""
    for entry in _meta(body).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != operation:
            continue
        if entry.get("subresource"):
            continue
        fields: Any = entry.get("fieldsV1") or {}
        for part in path:
            fields = fields.get(f"f:{part}") if isinstance(fields, Mapping) else None
        if fields is not None:
            return True
    return False


def _child(body: Mapping[str, Any]) -> dict[str, str]:
    meta = _meta(body)
    return {
        "layer": (meta.get("labels") or {}).get(c.LABEL_LAYER, ""),
        "name": meta.get("name", ""),
        "resource_version": str(meta.get("resourceVersion", "")),
    }


def deployment_entry(body: Mapping[str, Any]) -> CachedDeployment:
    owns = owns_field(body, c.FIELD_MANAGER, "Apply", ("spec", "replicas"))
    return CachedDeployment(
        **_child(body), observed=observe_deployment(body), apply_owns_replicas=owns
    )


def lease_entry(body: Mapping[str, Any]) -> CachedLease:
    return CachedLease(**_child(body), demand=lease_demand(body))


@dataclass(frozen=True)
class OnionView:
    """One Onion and its demand Leases and model Deployments (by part), as last seen."""

    onion: CachedOnion
    deployments: Mapping[str, CachedDeployment] = field(default_factory=dict)
    leases: Mapping[str, CachedLease] = field(default_factory=dict)

    def observed(self) -> dict[str, Observed]:
        return {part: d.observed for part, d in self.deployments.items()}

    def demand(self) -> dict[str, datetime | None]:
        return {part: lease.demand for part, lease in self.leases.items()}

    def missing(self, parts: Iterable[str], layers: Iterable[str]) -> bool:
        """Whether a model Deployment (of `parts`) or a demand Lease (of `layers`) is absent."""
        return any(p not in self.deployments for p in parts) or any(
            n not in self.leases for n in layers
        )


def newer(candidate: str, than: str) -> bool:
    """Whether resourceVersion `candidate` is later than `than` (False if not integers)."""
    try:
        return int(candidate) > int(than)
    except ValueError:
        return False


class Written:
    """The API's answers to this operator's writes, until the watch has shown them."""

    def __init__(self) -> None:
        self._onions: dict[str, CachedOnion] = {}
        self._deployments: dict[str, dict[str, CachedDeployment]] = {}
        self._leases: dict[str, dict[str, CachedLease]] = {}

    def saw(self, key: str, obj: Mapping[str, Any]) -> None:
        """Remember what a write returned (an Onion, a model Deployment or a demand Lease)."""
        kind = obj.get("kind")
        if kind == c.KIND:
            self._onions[key] = onion_entry(obj)
        elif kind == "Deployment" and _is(obj, c.COMPONENT_MODEL):
            entry = deployment_entry(obj)
            self._deployments.setdefault(key, {})[entry.layer] = entry
        elif kind == "Lease" and _is(obj, c.COMPONENT_DEMAND):
            lease = lease_entry(obj)
            self._leases.setdefault(key, {})[lease.layer] = lease

    def forget(self, key: str) -> None:
        self._onions.pop(key, None)
        self.forget_children(key)

    def forget_children(self, key: str) -> None:
        """After a child was deleted: what we wrote of it may be all that still says it exists."""
        self._deployments.pop(key, None)
        self._leases.pop(key, None)

    def __len__(self) -> int:
        return (
            len(self._onions)
            + sum(map(len, self._deployments.values()))
            + sum(map(len, self._leases.values()))
        )

    def view(
        self,
        onion: CachedOnion,
        deployments: Iterable[CachedDeployment],
        leases: Iterable[CachedLease],
    ) -> OnionView:
        """The freshest of the watch's entries and our own writes; stale overlays are dropped."""
        key = onion.key
        mine = self._onions.pop(key, None)
        fresher = mine is not None and newer(mine.resource_version, onion.resource_version)
        if mine is not None and fresher and mine.uid == onion.uid:
            self._onions[key] = onion = mine
        return OnionView(
            onion=onion,
            deployments=_merge(self._deployments, key, {d.layer: d for d in deployments}),
            leases=_merge(self._leases, key, {lease.layer: lease for lease in leases}),
        )


def _is(obj: Mapping[str, Any], component: str) -> bool:
    return (_meta(obj).get("labels") or {}).get(c.LABEL_COMPONENT) == component


def _merge(overlays: dict[str, dict[str, Any]], key: str, seen: dict[str, Any]) -> dict[str, Any]:
    mine = overlays.get(key)
    if not mine:
        return seen
    for part, entry in list(mine.items()):
        current = seen.get(part)
        if current is None or newer(entry.resource_version, current.resource_version):
            seen[part] = entry
        else:
            del mine[part]
    if not mine:
        overlays.pop(key, None)
    return seen
