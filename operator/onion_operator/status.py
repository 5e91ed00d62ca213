"""Pure construction of the Onion's `status`: per-layer phases and conditions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from onion_contract import names
from onion_contract.spec import Layer, OnionSpec
from onion_operator import constants as c
from onion_operator.idle import History, busy_gap, learn_gap
from onion_operator.manifests import layer_url
from onion_operator.planner import (
    Observed,
    Plan,
    format_time,
    idle_window,
    parse_time,
    timestamp,
    wake_deadline,
)

Obj = dict[str, Any]


def layer_phase(obs: Observed | None, wake_timeout: float | None, now: datetime) -> tuple[str, str]:
    """Phase of a model Deployment and a one-line reason."""
    if obs is None or obs.replicas is None:
        return names.PHASE_DORMANT, "not created yet"
    if obs.replicas == 0:
        if obs.current_replicas > 0:
            return names.PHASE_DRAINING, f"{obs.current_replicas} pod(s) stopping"
        return names.PHASE_DORMANT, "0 replicas"
    if obs.ready_replicas >= 1:
        return names.PHASE_READY, f"{obs.ready_replicas}/{obs.replicas} replicas ready"
    if obs.failure:
        return names.PHASE_FAILED, obs.failure
    failing_at = wake_deadline(obs, wake_timeout)
    if failing_at is not None and now >= failing_at:  # the planner schedules a pass for then
        return names.PHASE_FAILED, f"not Ready {wake_timeout:g}s (wakeTimeout) after waking"
    return names.PHASE_WAKING, "waiting for a Ready pod"


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Obj]:
    """Conditions with `type_` set; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    out: list[Obj] = []
    old = next((cond for cond in conditions if cond.get("type") == type_), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == value else None
    new = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since or format_time(now).split(".")[0] + "Z",
    }
    out = [dict(cond) for cond in conditions if cond.get("type") != type_]
    out.append(new)
    return sorted(out, key=lambda cond: str(cond.get("type")))


def _previous_layers(previous: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {entry.get("name", ""): entry for entry in previous.get("layers") or []}


def learned(
    spec: OnionSpec, previous: Mapping[str, Any], demand: Mapping[str, datetime | None]
) -> dict[str, History]:
    """Each managed layer's idle history from the last published status, plus the idle gap that
    ends now if its demand came back after a pause (the status's lastDemandTime is the demand
    the previous pass saw)."""
    prev_layers = _previous_layers(previous)
    busy = busy_gap(spec.demand_renew_seconds)
    out: dict[str, History] = {}
    for layer in spec.managed_layers:
        prev = prev_layers.get(layer.name)
        seen = timestamp(parse_time((prev or {}).get("lastDemandTime")))
        latest = timestamp(demand.get(layer.name))
        history = History.from_status(prev)
        out[layer.name] = learn_gap(history, seen, latest, busy, layer.adaptive.history)
    return out


@dataclass(frozen=True)
class StatusInput:
    """What a pass knows when it writes the Onion's status."""

    spec: OnionSpec
    onion: str
    namespace: str
    generation: int
    observed: Mapping[str, Observed]  # the core's and each managed layer's Deployment
    demand: Mapping[str, datetime | None]  # each managed layer's last demand
    plan: Plan
    previous: Mapping[str, Any]  # the status as the Onion has it now
    now: datetime
    # What each layer's idle policy learned before this pass (see `learned`); none: read back
    # from `previous`.
    history: Mapping[str, History] = field(default_factory=dict)


def build_status(inp: StatusInput) -> Obj:
    """The whole status: the core first, then each layer inside -> out, and conditions."""
    core, core_phase, core_msg = _core_entry(inp)
    held = {hold.layer: hold.reason for hold in inp.plan.holds()}
    prev_layers = _previous_layers(inp.previous)
    layers = [core]
    for layer in inp.spec.layers:
        layers.append(_layer_entry(inp, layer, prev_layers.get(layer.name, {}), held))
    core_ready = core_phase == names.PHASE_READY
    failed = [e["name"] for e in layers if e["phase"] == names.PHASE_FAILED]
    if not core_ready:
        reason, message = "CoreNotReady", f"core: {core_msg}"
    elif failed:
        reason, message = "LayerFailed", f"failed layer(s): {', '.join(failed)}"
    else:
        reason, message = "CoreReady", "core is Ready; outer layers wake on demand"
    conditions = set_condition(
        inp.previous.get("conditions") or [],
        names.COND_INVALID_SPEC,
        False,
        "Valid",
        "spec accepted",
        inp.generation,
        inp.now,
    )
    conditions = set_condition(
        conditions,
        names.COND_READY,
        core_ready and not failed,
        reason,
        message,
        inp.generation,
        inp.now,
    )
    managed = [e for e in layers[1:] if e["managed"]]
    return {
        "observedGeneration": inp.generation,
        "layers": layers,
        "layerCount": len(inp.spec.layers),
        "awakeLayers": sum(1 for e in managed if e["replicas"] > 0),
        "readyLayers": sum(1 for e in managed if e["phase"] == names.PHASE_READY),
        "conditions": conditions,
    }


def _core_entry(inp: StatusInput) -> tuple[Obj, str, str]:
    """The core's entry, its phase and the reason for it."""
    obs = inp.observed.get(names.CORE)
    phase, message = layer_phase(obs, None, inp.now)
    if phase == names.PHASE_DORMANT and obs is not None and obs.replicas:
        phase = names.PHASE_WAKING
    entry = {
        "name": names.CORE,
        "phase": phase,
        "managed": False,
        "replicas": obs.replicas or 0 if obs else 0,
        "readyReplicas": obs.ready_replicas if obs else 0,
        "endpoint": c.service_url(inp.onion, names.CORE, inp.namespace),
        "message": message,
    }
    return entry, phase, message


def _layer_entry(
    inp: StatusInput, layer: Layer, prev: Mapping[str, Any], held: Mapping[str, str]
) -> Obj:
    """A layer's entry: an endpoint's is fixed; a managed one's says its phase, its demand, its
    wakes (a cold start measured when it turns Ready) and what its idle policy learned."""
    entry: Obj = {
        "name": layer.name,
        "managed": layer.managed,
        "endpoint": layer_url(layer, inp.onion, inp.namespace),
    }
    if not layer.managed:
        entry.update(
            phase=names.PHASE_READY,
            replicas=0,
            readyReplicas=0,
            message="external endpoint, assumed awake",
        )
        return entry
    obs = inp.observed.get(layer.name)
    phase, message = layer_phase(obs, layer.wake_timeout, inp.now)
    if layer.name in held and phase == names.PHASE_DORMANT:
        message = f"demand waiting: {held[layer.name]}"
    entry.update(
        phase=phase,
        message=message,
        replicas=obs.replicas or 0 if obs else 0,
        readyReplicas=obs.ready_replicas if obs else 0,
        wakeCount=obs.wake_count if obs else 0,
    )
    last_demand = inp.demand.get(layer.name)
    if last_demand is not None:
        entry["lastDemandTime"] = format_time(last_demand)
    woken_at = format_time(obs.woken_at) if obs and obs.woken_at else None
    if prev.get("lastWakeSeconds") is not None:
        entry["lastWakeSeconds"] = prev["lastWakeSeconds"]
    if prev.get("wokenAt"):
        entry["wokenAt"] = prev["wokenAt"]
    # A wake finished since we last looked: its cold-start time is now - woken-at.
    learned_here = inp.history.get(layer.name) or History.from_status(prev)
    if phase == names.PHASE_READY and obs and obs.woken_at and prev.get("wokenAt") != woken_at:
        entry["lastWakeSeconds"] = round((inp.now - obs.woken_at).total_seconds(), 3)
        entry["wokenAt"] = woken_at
        learned_here = learned_here.with_cold_start(
            entry["lastWakeSeconds"], layer.adaptive.history
        )
    entry["idle"] = _idle_entry(inp.spec, layer.name, learned_here)
    return entry


def _idle_entry(spec: OnionSpec, name: str, history: History) -> Obj:
    """What the layer's idle policy learned and what it decides from that, for people and for
    the next pass (the history is read back by `learned`)."""
    layer = spec.layer(name)
    assert layer is not None
    out: Obj = {"policy": layer.idle_policy, **history.to_status()}
    window = idle_window(layer, history, spec.demand_renew_seconds)
    out["keepAliveSeconds"] = round(window.keep_alive, 1)
    if window.prewarm_from is not None and window.prewarm_until is not None:
        out["prewarmFromSeconds"] = window.prewarm_from
        out["prewarmUntilSeconds"] = window.prewarm_until
    if window.basis:
        out["basis"] = window.basis
    return out


def invalid_status(
    previous: Mapping[str, Any], generation: int, message: str, now: datetime
) -> Obj:
    """The previous status with InvalidSpec=True: the cluster is left as it was."""
    conditions = set_condition(
        previous.get("conditions") or [],
        names.COND_INVALID_SPEC,
        True,
        "InvalidSpec",
        message,
        generation,
        now,
    )
    conditions = set_condition(
        conditions,
        names.COND_READY,
        False,
        "InvalidSpec",
        f"spec rejected: {message}",
        generation,
        now,
    )
    out = {k: v for k, v in previous.items() if k != "conditions"}
    out["conditions"] = conditions
    return out


def phase_changes(
    previous: Mapping[str, Any], status: Mapping[str, Any]
) -> list[tuple[str, str, str]]:
    """Events (type, reason, message) for layers that just became Ready or Failed."""
    before = {e.get("name"): e.get("phase") for e in previous.get("layers") or []}
    out: list[tuple[str, str, str]] = []
    for entry in status.get("layers") or []:
        name, phase = entry["name"], entry["phase"]
        if before.get(name) == phase or not entry.get("managed"):
            continue
        if phase == names.PHASE_READY and entry.get("lastWakeSeconds") is not None:
            out.append(
                (
                    "Normal",
                    "LayerReady",
                    f"layer {name}: Ready after {entry['lastWakeSeconds']:g}s cold start",
                )
            )
        elif phase == names.PHASE_FAILED:
            out.append(("Warning", "WakeFailed", f"layer {name}: {entry['message']}"))
    return out


def finished_wakes(previous: Mapping[str, Any], status: Mapping[str, Any]) -> list[float]:
    """Cold starts (seconds, wake to first Ready pod) of the wakes that finished since `previous`:
    each once, by its `wokenAt`."""
    before = {e.get("name"): e.get("wokenAt") for e in previous.get("layers") or []}
    return [
        float(entry["lastWakeSeconds"])
        for entry in status.get("layers") or []
        if entry.get("wokenAt")
        and entry.get("lastWakeSeconds") is not None
        and before.get(entry["name"]) != entry["wokenAt"]
    ]
