"""One pass for one Onion: plan from the cached view, write only what differs, publish status.

A pass lists nothing from the API server: the Onion, its demand Leases and model Deployments
come from the watches (`cache.OnionView`). It writes a wake or a sleep when the plan has one, the
status when it changed, and, on a `full` pass (a new generation, a child missing or deleted, or
the periodic drift repair), applies every child with server-side apply. Reads remain only where
a stale cache would cost most: a full pass applies the demand Leases first and plans with the
router's renewTime from the API's answers (so a missed watch event cannot hide demand), and a
sleep is confirmed by reading the layer's Lease first (so it cannot put a layer in use to sleep).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from onion_contract import names
from onion_contract.spec import Core, InvalidSpec, Layer, OnionSpec, parse_spec
from onion_operator import constants as c
from onion_operator.cache import (
    CachedDeployment,
    CachedLease,
    CachedOnion,
    OnionView,
    Written,
    deployment_entry,
)
from onion_operator.kube import LISTED_LAYER_KINDS, ApiError, Conflict, Forbidden, Kube
from onion_operator.manifests import (
    Owner,
    applied_replicas,
    build_children,
    build_leases,
    build_replicas_claim,
    planned_core_replicas,
)
from onion_operator.planner import (
    Deadline,
    Observed,
    Plan,
    Sleep,
    Wake,
    format_time,
    lease_demand,
)
from onion_operator.planner import plan as make_plan
from onion_operator.status import (
    StatusInput,
    build_status,
    finished_wakes,
    invalid_status,
    learned,
    phase_changes,
)

Obj = dict[str, Any]
Demand = dict[str, datetime | None]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the Onion (the handlers post it)."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    onion: CachedOnion | None  # None: the Onion is gone or going
    events: tuple[Event, ...] = ()
    full: bool = False  # every child was applied (counts as a drift repair)
    next_deadline: Deadline | None = None  # plan again then, if nothing happens before
    done: tuple[Wake | Sleep, ...] = ()  # the wakes and sleeps this pass wrote
    cold_starts: tuple[float, ...] = ()  # seconds, of the wakes that finished (a Ready pod)


@dataclass(frozen=True)
class PassApi:
    """The API as one pass for one Onion uses it: requests go to `kube`, and what the API
    answers to a write (or to a Lease read again) is kept in `written` under the Onion's `key`,
    so that the next pass plans from it even before the watch has shown it."""

    kube: Kube
    written: Written
    key: str  # the Onion's (cache.onion_key)

    async def apply(self, obj: Obj) -> Obj:
        answer = await self.kube.apply(obj)
        self.written.saw(self.key, answer)
        return answer

    async def merge_patch(
        self, kind: str, namespace: str, name: str, body: Obj, sub: str | None = None
    ) -> Obj:
        answer = await self.kube.merge_patch(kind, namespace, name, body, sub=sub)
        self.written.saw(self.key, answer)
        return answer

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        found = await self.kube.get(kind, namespace, name)
        if found is not None:
            self.written.saw(self.key, found)
        return found


def _workloads(spec: OnionSpec) -> list[tuple[str, Core | Layer]]:
    return [(names.CORE, spec.core), *((layer.name, layer) for layer in spec.managed_layers)]


async def _confirm_idle(
    api: PassApi, onion: CachedOnion, demand: Demand, the_plan: Plan
) -> tuple[Demand, bool]:
    """Read the Lease of every layer the plan puts to sleep; True if any showed newer demand."""
    changed = False
    for sleep in the_plan.sleeps():
        lease = await api.get("Lease", onion.namespace, names.lease_name(onion.name, sleep.layer))
        if lease is None:
            continue
        seen = lease_demand(lease)
        if seen != demand.get(sleep.layer):
            demand[sleep.layer] = seen
            changed = True
    return demand, changed


async def _wake_and_sleep(
    api: PassApi,
    onion: CachedOnion,
    the_plan: Plan,
    deployments: dict[str, CachedDeployment],
    now: datetime,
) -> tuple[list[Event], list[Wake | Sleep]]:
    """Scale the layers the plan changes; record wake time and count on the Deployment."""
    events: list[Event] = []
    done: list[Wake | Sleep] = []

    async def patch(layer: str, body: Obj) -> None:
        name = names.child_name(onion.name, layer)
        answer = await api.merge_patch("Deployment", onion.namespace, name, body)
        deployments[layer] = deployment_entry(answer)

    # Sleeps first: a budget eviction frees its GPU before the newcomer asks for one.
    for sleep in the_plan.sleeps():
        if sleep.layer not in deployments:
            continue
        await patch(sleep.layer, {"spec": {"replicas": 0}})
        done.append(sleep)
        events.append(Event("Normal", "Sleeping", f"layer {sleep.layer}: {sleep.reason}"))
    for wake in the_plan.wakes():
        current = deployments.get(wake.layer)
        if current is None:
            continue  # created by the full pass at the planned replicas
        count = current.observed.wake_count + 1
        annotations = {
            names.ANNOTATION_WOKEN_AT: format_time(now),
            names.ANNOTATION_WAKE_COUNT: str(count),
        }
        await patch(wake.layer, {"metadata": {"annotations": annotations}, "spec": {"replicas": 1}})
        done.append(wake)
        events.append(
            Event("Normal", "Waking", f"layer {wake.layer}: {wake.reason} (wake #{count})")
        )
    return events, done


async def _hand_over_replicas(kube: Kube, namespace: str, name: str, replicas: int) -> None:
    """Let a second manager hold `spec.replicas` so the operator's apply can drop it."""
    claim = build_replicas_claim(namespace, name, replicas)
    try:
        await kube.apply(claim, manager=c.HANDOVER_FIELD_MANAGER, force=False)
    except ApiError as e:
        if e.status != Conflict:  # a conflict: the HPA owns the field already, as wanted
            raise


async def _ensure_children(
    api: PassApi,
    owner: Owner,
    spec: OnionSpec,
    the_plan: Plan,
    deployments: dict[str, CachedDeployment],
) -> None:
    """Apply every child but the Leases (applied before planning). An autoscaled Deployment's
    `spec.replicas` is handed over before the first apply that leaves it out."""
    replicas: dict[str, int | None] = {}
    for part, work in _workloads(spec):
        planned = (
            planned_core_replicas(spec.core) if part == names.CORE else the_plan.replicas[part]
        )
        current = deployments.get(part)
        replicas[part] = applied_replicas(work, planned, exists=current is not None)
        if work.autoscaling is not None and current is not None and current.apply_owns_replicas:
            name = names.child_name(owner.name, part)
            replicas_now = current.observed.replicas or 0
            await _hand_over_replicas(api.kube, owner.namespace, name, replicas_now)
    autoscaled = {part for part, work in _workloads(spec) if work.autoscaling is not None}

    # One after another: creating 1,000 Onions is bound by the API server (measured: applying
    # an Onion's children at once made no difference), and a short queue there keeps wakes fast.
    for obj in build_children(owner, spec, replicas):
        answer = await api.apply(obj)
        if (
            obj["kind"] != "Deployment"
            or answer["metadata"]["labels"].get(names.LABEL_COMPONENT) != names.COMPONENT_MODEL
        ):
            continue
        entry = deployment_entry(answer)
        deployments[entry.layer] = entry
        if entry.layer in autoscaled and entry.apply_owns_replicas:  # just created
            replicas_now = entry.observed.replicas or 0
            await _hand_over_replicas(api.kube, owner.namespace, entry.name, replicas_now)


async def _prune(kube: Kube, owner: Owner, spec: OnionSpec, view: OnionView) -> list[Event]:
    """Delete what removed layers (or removed autoscaling, pre-pulls, prefetches) left behind."""
    keep = {names.CORE, names.ROUTER, *(layer.name for layer in spec.managed_layers)}
    expected = {(o["kind"], o["metadata"]["name"]) for o in build_children(owner, spec, {})}
    cached: list[tuple[str, CachedDeployment | CachedLease]] = [
        *(("Lease", e) for e in view.leases.values()),
        *(("Deployment", e) for e in view.deployments.values()),
    ]
    doomed = [(kind, e.name, e.layer) for kind, e in cached if e.layer not in keep]
    for kind in LISTED_LAYER_KINDS:
        for obj in await kube.list(kind, owner.namespace, {names.LABEL_ONION: owner.name}):
            layer = obj["metadata"]["labels"].get(names.LABEL_LAYER, "")
            if (kind, obj["metadata"]["name"]) not in expected:
                doomed.append((kind, obj["metadata"]["name"], layer))
    removed: set[str] = set()
    for kind, name, layer in doomed:
        await kube.delete(kind, owner.namespace, name)
        if layer not in keep:
            removed.add(layer)
    if spec.router.http_route is None:  # perhaps removed: its HTTPRoute goes too
        try:
            await kube.delete(
                "HTTPRoute", owner.namespace, names.child_name(owner.name, names.ROUTER)
            )
        except ApiError as e:  # no Gateway API installed (404 is ignored), or no RBAC for it
            if e.status != Forbidden:
                raise
    return [
        Event("Normal", "LayerRemoved", f"layer {layer}: objects deleted")
        for layer in sorted(removed)
    ]


async def _publish(api: PassApi, onion: CachedOnion, status: Mapping[str, Any]) -> None:
    body = {"status": dict(status)}
    await api.merge_patch(names.KIND, onion.namespace, onion.name, body, sub="status")


async def reconcile(api: PassApi, view: OnionView, now: datetime, full: bool) -> Outcome:
    """Bring one Onion's layers (and, if `full`, all its children) to the desired state."""
    onion = view.onion
    if onion.deleting:
        return Outcome(None)
    generation = onion.generation
    previous: Obj = dict(onion.status)
    try:
        spec = parse_spec(onion.name, onion.spec)
    except InvalidSpec as e:
        status = invalid_status(previous, generation, str(e), now)
        if status == previous:  # already reported for this generation
            return Outcome(onion)
        await _publish(api, onion, status)
        return Outcome(onion, (Event("Warning", "InvalidSpec", str(e)),))

    # A generation not yet seen (a spec change, or never reconciled): apply every child.
    new_generation = previous.get("observedGeneration") != generation
    managed = [layer.name for layer in spec.managed_layers]
    full = full or new_generation or view.missing([names.CORE, *managed], managed)
    owner = Owner(onion.name, onion.namespace, onion.uid)
    demand = view.demand()
    deployments = dict(view.deployments)
    events: list[Event] = []
    if full:
        for lease in build_leases(owner, spec):
            answer = await api.apply(lease)
            demand[lease["metadata"]["labels"][names.LABEL_LAYER]] = lease_demand(answer)

    history = learned(spec, previous, demand)

    def planned() -> Plan:
        observed = {p: d.observed for p, d in deployments.items()}
        return make_plan(spec, observed, demand, now, history)

    the_plan = planned()
    if the_plan.sleeps():
        demand, changed = await _confirm_idle(api, onion, demand, the_plan)
        if changed:
            history = learned(spec, previous, demand)
            the_plan = planned()
    scaled, done = await _wake_and_sleep(api, onion, the_plan, deployments, now)
    events += scaled
    if full:
        await _ensure_children(api, owner, spec, the_plan, deployments)
        # Only a spec changed since it was last reconciled leaves objects behind (a new Onion has
        # none; the listing costs two requests), or a layer's Lease or Deployment still there.
        known = {names.CORE, *managed}
        stray = not known.issuperset(view.leases) or not known.issuperset(view.deployments)
        if stray or (new_generation and previous.get("observedGeneration") is not None):
            events += await _prune(api.kube, owner, spec, view)
    observed: dict[str, Observed] = {
        part: entry.observed
        for part, entry in deployments.items()
        if part == names.CORE or spec.layer(part) is not None
    }
    status = build_status(
        StatusInput(
            spec=spec,
            onion=onion.name,
            namespace=onion.namespace,
            generation=generation,
            observed=observed,
            demand=demand,
            plan=the_plan,
            previous=previous,
            now=now,
            history=history,
        )
    )
    cold_starts: list[float] = []
    if status != previous:
        await _publish(api, onion, status)
        events += [Event(*change) for change in phase_changes(previous, status)]
        cold_starts = finished_wakes(previous, status)
    return Outcome(
        onion, tuple(events), full, the_plan.next_deadline(), tuple(done), tuple(cold_starts)
    )
