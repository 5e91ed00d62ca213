"""What the watches saw, reduced to what a pass needs, and what this operator wrote since.

Three `Store`s (Onions, demand Leases, model Deployments) keep one small entry per object, built
by the `*_entry` functions here: filled by one paginated list of each kind at start, then kept by
a watch from that list (informer.py; the callbacks are in handlers.py), as a client-go informer
does. A pass reads an
`OnionView` from them and never lists from the API server. Right after a write the watch has
not shown it yet, so `Written` keeps the API's answer to each write until the watch catches up;
like client-go's `NewIntegerResourceVersionMutationCache`, it relies on resourceVersions being
etcd revisions (integers that grow), and trusts the watch when they are not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from onion_contract import names
from onion_operator import constants as c
from onion_operator.planner import Observed, lease_demand, observe_deployment

Obj = dict[str, Any]


def onion_key(namespace: str, name: str) -> str:
    """The one way per-Onion state (caches, queue, overlays) is keyed."""
    return f"{namespace}/{name}"


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = body.get("metadata") or {}
    return meta


def key_of_onion(body: Mapping[str, Any]) -> str:
    meta = _meta(body)
    return onion_key(meta.get("namespace", ""), meta.get("name", ""))


def key_of_child(body: Mapping[str, Any]) -> str:
    """The Onion a demand Lease or model Deployment belongs to (its label says which)."""
    meta = _meta(body)
    return onion_key(
        meta.get("namespace", ""), (meta.get("labels") or {}).get(names.LABEL_ONION, "")
    )


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
        return {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": meta}


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
        "layer": (meta.get("labels") or {}).get(names.LABEL_LAYER, ""),
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


E = TypeVar("E", CachedOnion, CachedDeployment, CachedLease)


class Store(Generic[E]):
    """One kind's entries by Onion key, then by object name: what the list and the watch saw.

    A list again (after a watch expired) and our own re-reads may deliver an object the store
    already holds; an older resourceVersion never replaces a newer one. Each update costs O(1):
    no scan of the store."""

    def __init__(
        self, entry: Callable[[Mapping[str, Any]], E], key: Callable[[Mapping[str, Any]], str]
    ) -> None:
        self._entry: Callable[[Mapping[str, Any]], E] = entry
        self._key: Callable[[Mapping[str, Any]], str] = key
        self._by_key: dict[str, dict[str, E]] = {}

    def put(self, body: Mapping[str, Any]) -> str:
        """Keep what `body` says (unless we hold a newer version of it); its Onion key."""
        return self.update(body)[0]

    def update(self, body: Mapping[str, Any]) -> tuple[str, bool]:
        """`put`, and whether it changed what the store holds (a version not held before)."""
        key, entry = self._key(body), self._entry(body)
        objects = self._by_key.setdefault(key, {})
        held = objects.get(entry.name)
        if held is not None and (
            held.resource_version == entry.resource_version
            or newer(held.resource_version, entry.resource_version)
        ):
            return key, False
        objects[entry.name] = entry
        return key, True

    def remove(self, body: Mapping[str, Any]) -> str:
        key = self._key(body)
        self.discard(key, _meta(body).get("name", ""))
        return key

    def discard(self, key: str, name: str) -> None:
        objects = self._by_key.get(key)
        if objects is not None:
            objects.pop(name, None)
            if not objects:
                del self._by_key[key]

    def replace(self, key: str, bodies: Iterable[Mapping[str, Any]]) -> None:
        """What a fresh list of one Onion's objects says, in place of what was held."""
        self._by_key.pop(key, None)
        for body in bodies:
            self.put(body)

    def get(self, key: str) -> list[E]:
        return list(self._by_key.get(key, {}).values())

    def __iter__(self) -> Iterator[str]:
        """The Onion keys held (a copy: callers may change the store meanwhile)."""
        return iter(list(self._by_key))

    def __len__(self) -> int:
        return len(self._by_key)


class Written:
    """The API's answers to this operator's writes, until the watch has shown them."""

    def __init__(self) -> None:
        self._onions: dict[str, CachedOnion] = {}
        self._deployments: dict[str, dict[str, CachedDeployment]] = {}
        self._leases: dict[str, dict[str, CachedLease]] = {}

    def saw(self, key: str, obj: Mapping[str, Any]) -> None:
        """Remember what a write returned (an Onion, a model Deployment or a demand Lease)."""
        kind = obj.get("kind")
        if kind == names.KIND:
            self._onions[key] = onion_entry(obj)
        elif kind == "Deployment" and _is(obj, names.COMPONENT_MODEL):
            entry = deployment_entry(obj)
            self._deployments.setdefault(key, {})[entry.layer] = entry
        elif kind == "Lease" and _is(obj, names.COMPONENT_DEMAND):
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
    return (_meta(obj).get("labels") or {}).get(names.LABEL_COMPONENT) == component


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
