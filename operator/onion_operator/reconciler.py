"""One reconcile pass for one Onion: read the API, plan, write, publish status.

`ensure` (on spec changes, start-up and periodically) also applies every child and deletes
what a removed layer left; `refresh` (on demand, Deployment changes and the idle timer) only
wakes, sleeps and publishes status, which keeps the wake path to a handful of API calls.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from onion_operator import constants as c
from onion_operator.kube import LAYER_KINDS, Kube
from onion_operator.manifests import Owner, build_children
from onion_operator.planner import Observed, Plan, format_time, lease_demand, observe_deployment
from onion_operator.planner import plan as make_plan
from onion_operator.spec import InvalidSpec, OnionSpec, parse_spec
from onion_operator.status import build_status, invalid_status, phase_changes

Obj = dict[str, Any]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the Onion (the handlers post it)."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    onion: Obj | None  # the Onion as read at the start, for posting events
    events: tuple[Event, ...] = ()


async def _observe(
    kube: Kube, namespace: str, name: str
) -> tuple[dict[str, Observed], dict[str, datetime | None], list[Obj], list[Obj]]:
    selector = {c.LABEL_ONION: name}
    leases = await kube.list("Lease", namespace, {**selector, c.LABEL_COMPONENT: "demand"})
    deployments = await kube.list("Deployment", namespace, {**selector, c.LABEL_COMPONENT: "model"})
    observed = {
        d["metadata"]["labels"].get(c.LABEL_LAYER, ""): observe_deployment(d) for d in deployments
    }
    demand = {
        lease["metadata"]["labels"].get(c.LABEL_LAYER, ""): lease_demand(lease) for lease in leases
    }
    return observed, demand, leases, deployments


async def _wake_and_sleep(
    kube: Kube,
    namespace: str,
    name: str,
    the_plan: Plan,
    observed: dict[str, Observed],
    now: datetime,
) -> tuple[dict[str, Observed], list[Event]]:
    """Scale the layers the plan changes; record wake time and count on the Deployment."""
    events: list[Event] = []
    after = dict(observed)
    # Sleeps first: a budget eviction frees its GPU before the newcomer asks for one.
    for sleep in the_plan.sleeps():
        obs = observed.get(sleep.layer)
        if obs is None or obs.replicas is None:
            continue
        await kube.merge_patch(
            "Deployment", namespace, c.child_name(name, sleep.layer), {"spec": {"replicas": 0}}
        )
        after[sleep.layer] = dataclasses.replace(obs, replicas=0)
        events.append(Event("Normal", "Sleeping", f"layer {sleep.layer}: {sleep.reason}"))
    for wake in the_plan.wakes():
        obs = observed.get(wake.layer)
        if obs is None or obs.replicas is None:
            continue  # created by ensure() at the planned replicas
        count = obs.wake_count + 1
        annotations = {c.ANNOTATION_WOKEN_AT: format_time(now), c.ANNOTATION_WAKE_COUNT: str(count)}
        await kube.merge_patch(
            "Deployment",
            namespace,
            c.child_name(name, wake.layer),
            {"metadata": {"annotations": annotations}, "spec": {"replicas": 1}},
        )
        after[wake.layer] = dataclasses.replace(obs, replicas=1, woken_at=now, wake_count=count)
        events.append(
            Event("Normal", "Waking", f"layer {wake.layer}: {wake.reason} (wake #{count})")
        )
    return after, events


async def _ensure_children(
    kube: Kube, owner: Owner, spec: OnionSpec, the_plan: Plan, existing: list[list[Obj]]
) -> list[Event]:
    """Apply every child; delete the objects of layers no longer in the spec."""
    for obj in build_children(owner, spec, the_plan.replicas):
        await kube.apply(obj)
    keep = {c.CORE, c.ROUTER, *(layer.name for layer in spec.managed_layers)}
    events: list[Event] = []
    removed: set[str] = set()
    for objs in existing:
        for obj in objs:
            layer = obj["metadata"]["labels"].get(c.LABEL_LAYER, "")
            if layer not in keep:
                await kube.delete(obj["kind"], owner.namespace, obj["metadata"]["name"])
                removed.add(layer)
    for layer in sorted(removed):
        events.append(Event("Normal", "LayerRemoved", f"layer {layer}: objects deleted"))
    return events


async def reconcile(kube: Kube, namespace: str, name: str, now: datetime, full: bool) -> Outcome:
    """Bring one Onion's layers (and, if `full`, all its children) to the desired state."""
    onion = await kube.get(c.KIND, namespace, name)
    if onion is None or onion["metadata"].get("deletionTimestamp"):
        return Outcome(None)
    generation = int(onion["metadata"].get("generation", 0))
    previous: Obj = onion.get("status") or {}
    try:
        spec = parse_spec(name, onion.get("spec") or {})
    except InvalidSpec as e:
        status = invalid_status(previous, generation, str(e), now)
        if status == previous:  # already reported for this generation
            return Outcome(onion)
        await kube.merge_patch(c.KIND, namespace, name, {"status": status}, sub="status")
        return Outcome(onion, (Event("Warning", "InvalidSpec", str(e)),))

    # A generation not yet seen (a spec change, or never reconciled): apply every child.
    full = full or previous.get("observedGeneration") != generation
    observed, demand, leases, deployments = await _observe(kube, namespace, name)
    the_plan = make_plan(spec, observed, demand, now)
    events: list[Event] = []
    if full:
        owner = Owner(name, namespace, onion["metadata"]["uid"])
        services = await kube.list("Service", namespace, {c.LABEL_ONION: name})
        for objs, kind in zip((leases, deployments, services), LAYER_KINDS, strict=True):
            for item in objs:
                item["kind"] = kind
        events += await _ensure_children(
            kube, owner, spec, the_plan, [leases, deployments, services]
        )
    observed, wake_events = await _wake_and_sleep(kube, namespace, name, the_plan, observed, now)
    events += wake_events
    if full:
        observed = {k: v for k, v in observed.items() if k == c.CORE or spec.layer(k) is not None}
    status = build_status(
        spec, name, namespace, generation, observed, demand, the_plan, previous, now
    )
    if status != previous:
        await kube.merge_patch(c.KIND, namespace, name, {"status": status}, sub="status")
        events += [Event(*change) for change in phase_changes(previous, status)]
    return Outcome(onion, tuple(events))
