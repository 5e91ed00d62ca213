"""Requests through layers that wake and sleep by the operator's own pure planner
(`onion_operator.planner.plan`), a simulated second at a time, with the adaptive idle policy
learning from the same functions the operator uses (`onion_operator.idle`). Shared by the idle
policy replay (onion_lab.idle_replay) and the bargain's simulator (onion_lab.bargain).

A trip is a request's path: the layers it visits in order, each with its service time. At a
managed layer it records demand when it arrives and holds until the layer is Ready, renewing
demand every `renew` seconds while it waits or runs there, as the router does; a layer that is
not managed (the core) is always ready.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from onion_contract.spec import OnionSpec
from onion_operator.idle import History, busy_gap, learn_gap
from onion_operator.planner import Observed, Plan, plan

T0 = datetime(2023, 11, 16, 18, 15, tzinfo=UTC)  # the Azure traces' first hour


@dataclass(frozen=True)
class Trip:
    arrival: float  # seconds from the start
    visits: tuple[tuple[str, float], ...]  # (layer, service seconds), in order
    early: str | None = None  # a layer whose demand is recorded at arrival (early wake)
    # Early wakes after the arrival: (layer, seconds after it), recorded as the router does, only
    # when that layer is not Ready then (the router's first-token and prompt-model wakes).
    wakes: tuple[tuple[str, float], ...] = ()


@dataclass
class LayerSim:
    replicas: int = 0
    ready_at: float | None = None  # when the current wake finishes loading
    up_seconds: float = 0.0
    wakes: int = 0
    prewarms: int = 0  # wakes with no request waiting (the adaptive policy's pre-warms)
    renewals: list[float] = field(default_factory=list)  # sorted demand times
    history: History = field(default_factory=History)  # what the adaptive policy learned
    seen_demand: float | None = None  # the last demand the planner saw (status.lastDemandTime)


@dataclass
class _State:
    trip: Trip
    index: int
    stage: int = 0
    at: float = 0.0  # when it reached its current stage (or started it, once started)
    started: bool = False
    recorded: bool = False  # its demand at the current stage's layer is recorded
    waited: float = 0.0
    done: float | None = None


@dataclass(frozen=True)
class Outcome:
    layers: Mapping[str, LayerSim]
    waits: Sequence[float]  # per finished trip (in arrival order): seconds held for cold starts
    latencies: Sequence[float]  # per finished trip: arrival to answer
    unfinished: int


def run(
    spec: OnionSpec,
    trips: Sequence[Trip],
    cold_start: Mapping[str, float],
    horizon: float,
    renew: float | None = None,
) -> Outcome:
    renew = renew or spec.demand_renew_seconds
    managed = [layer.name for layer in spec.managed_layers]
    busy = busy_gap(spec.demand_renew_seconds)
    keep = {layer.name: layer.adaptive.history for layer in spec.managed_layers}
    sims = {name: LayerSim() for name in managed}
    # Steady state before the trace: what the planner keeps up with no demand (warm minimum).
    for name, want in plan(spec, {}, dict.fromkeys(managed), T0).replicas.items():
        sims[name].replicas, sims[name].ready_at = want, (0.0 if want else None)
    pending = sorted(range(len(trips)), key=lambda i: trips[i].arrival)
    active: list[_State] = []
    finished: list[_State] = []
    next_arrival = 0
    last: tuple[tuple[object, ...], Plan, datetime | None] | None = None
    for second in range(int(horizon) + 1):
        now = float(second)
        # Arrivals in (now-1, now]: demand is recorded at once.
        while next_arrival < len(pending) and trips[pending[next_arrival]].arrival <= now:
            index = pending[next_arrival]
            next_arrival += 1
            trip = trips[index]
            active.append(_State(trip, index, at=trip.arrival))
            if trip.early in sims:
                bisect.insort(sims[trip.early].renewals, trip.arrival)
            for layer, offset in trip.wakes:
                if layer in sims and not _ready(sims[layer], now):
                    bisect.insort(sims[layer].renewals, trip.arrival + offset)
        waiting: set[str] = set()
        still = []
        for state in active:
            _advance(state, sims, now, renew)
            if state.done is None:
                still.append(state)
                layer = state.trip.visits[state.stage][0]
                if layer in sims and not state.started:
                    waiting.add(layer)
            else:
                finished.append(state)
        active = still
        # The operator's decision, from recorded demand only (renewals up to now), with what
        # it learned: idle gaps as demand comes back, cold starts as wakes finish.
        demand = {}
        for name, sim in sims.items():
            k = bisect.bisect_right(sim.renewals, now)
            latest = sim.renewals[k - 1] if k else None
            sim.history = learn_gap(sim.history, sim.seen_demand, latest, busy, keep[name])
            sim.seen_demand = latest
            demand[name] = T0 + timedelta(seconds=latest) if latest is not None else None
            if sim.replicas and sim.ready_at == now:
                sim.history = sim.history.with_cold_start(cold_start[name], keep[name])
        history = {n: s.history for n, s in sims.items()}
        when = T0 + timedelta(seconds=now)
        # As the watch-driven operator does: plan again when something it reads changed or a
        # deadline of the last plan fell due; otherwise the last plan stands.
        key = (tuple(s.replicas for s in sims.values()), tuple(demand.values()), *history.values())
        due = last is None or key != last[0] or (last[2] is not None and when >= last[2])
        if due:
            observed = {n: Observed(replicas=s.replicas) for n, s in sims.items()}
            decision = plan(spec, observed, demand, when, history)
            deadline = decision.next_deadline()
            last = (key, decision, deadline.at if deadline else None)
        else:
            assert last is not None
            decision = last[1]
        for name, want in decision.replicas.items():
            sim = sims[name]
            if want and not sim.replicas:
                sim.wakes += 1
                sim.prewarms += name not in waiting
                sim.ready_at = now + cold_start[name]
            if not want:
                sim.ready_at = None
            sim.replicas = want
            sim.up_seconds += want
    done = sorted(finished, key=lambda s: (s.trip.arrival, s.index))
    return Outcome(
        layers=sims,
        waits=[s.waited for s in done],
        latencies=[(s.done or 0.0) - s.trip.arrival for s in done],
        unfinished=len(active) + len(pending) - next_arrival,
    )


def _ready(sim: LayerSim, now: float) -> bool:
    return bool(sim.replicas) and sim.ready_at is not None and sim.ready_at <= now


def _advance(state: _State, sims: Mapping[str, LayerSim], now: float, renew: float) -> None:
    """Move a trip along its visits as far as it gets by `now`."""
    while state.done is None:
        layer, service = state.trip.visits[state.stage]
        sim = sims.get(layer)
        if sim is not None and not state.started:
            if not state.recorded:  # demand on arrival at the layer
                bisect.insort(sim.renewals, state.at)
                state.recorded = True
            if not _ready(sim, now):
                # Held requests are demand too: the router renews for them as for in-flight.
                if now - sim.renewals[-1] >= renew:
                    bisect.insort(sim.renewals, now)
                return
            assert sim.ready_at is not None
            start = max(state.at, sim.ready_at)
            state.waited += start - state.at
            state.started = True
            t = start
            while t < start + service:  # demand renewed while in flight
                t = min(start + service, t + renew)
                bisect.insort(sim.renewals, t)
            state.at = start
        end = state.at + service
        if end > now:
            return
        state.stage += 1
        state.started = state.recorded = False
        state.at = end
        if state.stage == len(state.trip.visits):
            state.done = end
