"""Pure wake/sleep decisions: `plan(spec, observed, demand, now) -> Plan`.

Level-based: the desired replicas of every managed layer are recomputed from recorded demand
(the Leases' renewTime) and what the Deployments say now, so a restart at any point converges.
A plan also names its deadlines: the times at which it would change with no event at all (an
idle timeout running out, an eviction grace period ending, a wake timing out). The operator plans
again at the earliest one instead of re-planning on a timer; demand counts for the half-open
window [renewTime, renewTime + idleTimeout), so at a deadline the plan has already changed.

A layer's idle policy says how long it stays awake after its last demand: `idleTimeout`
(fixed), or the windows the adaptive policy learned from its history (idle.py), which may put it
to sleep sooner and wake it again before the demand it expects (a pre-warm). A warm schedule
(schedule.py) holds a layer awake in its windows. Pre-warms take only free slots of the
maxAwakeLayers budget and never evict; scheduled layers are served like warm ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from onion_contract import names
from onion_contract.spec import Layer, OnionSpec
from onion_operator.idle import History, Params, Window, busy_gap, decide
from onion_operator.schedule import Scheduled, scheduled
from onion_operator.schedule import windows as windows_of


@dataclass(frozen=True)
class Observed:
    """What a model Deployment says now (None replicas: it does not exist yet)."""

    replicas: int | None = None
    ready_replicas: int = 0
    current_replicas: int = 0  # pods that still exist, including terminating-soon ones
    woken_at: datetime | None = None
    wake_count: int = 0
    failure: str | None = None  # a Deployment condition that says it cannot progress


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time (Kubernetes Time or MicroTime) as an aware datetime."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    """MicroTime as Kubernetes writes it: 2026-11-28T18:00:00.000000Z."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def observe_deployment(obj: Mapping[str, Any]) -> Observed:
    """The parts of a Deployment the planner and the status need."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    failure = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            failure = f"{cond.get('reason')}: {cond.get('message')}"
        if (
            cond.get("type") == "Progressing"
            and cond.get("status") == "False"
            and cond.get("reason") == "ProgressDeadlineExceeded"
        ):
            failure = f"ProgressDeadlineExceeded: {cond.get('message')}"
    try:
        wake_count = int(annotations.get(names.ANNOTATION_WAKE_COUNT, "0"))
    except ValueError:
        wake_count = 0
    return Observed(
        replicas=int(spec.get("replicas", 1)),
        ready_replicas=int(status.get("readyReplicas") or 0),
        current_replicas=int(status.get("replicas") or 0),
        woken_at=parse_time(annotations.get(names.ANNOTATION_WOKEN_AT)),
        wake_count=wake_count,
        failure=failure,
    )


def lease_demand(obj: Mapping[str, Any]) -> datetime | None:
    """The last demand the router recorded on a layer's Lease (None: never)."""
    return parse_time((obj.get("spec") or {}).get("renewTime"))


def wake_deadline(obs: Observed | None, wake_timeout: float | None) -> datetime | None:
    """When a woken layer that has no Ready pod yet counts as Failed (None: not waking)."""
    if obs is None or not obs.replicas or obs.ready_replicas or obs.failure or not wake_timeout:
        return None
    if obs.woken_at is None:
        return None
    return obs.woken_at + timedelta(seconds=wake_timeout)


# Why a layer wakes or sleeps, in one word (the operator's metrics count by it; `reason` is the
# sentence for the Event).
DEMAND, WARM = "demand", "warm"
IDLE, BUDGET = "idle", "budget"
PREWARM, SCHEDULE_CAUSE = "prewarm", "schedule"  # a pre-warm (or its end); a warm schedule


@dataclass(frozen=True)
class Wake:
    layer: str
    reason: str
    cause: str = DEMAND


@dataclass(frozen=True)
class Sleep:
    layer: str
    reason: str
    cause: str = IDLE


@dataclass(frozen=True)
class Hold:
    """A layer has demand but waits for a slot in the maxAwakeLayers budget."""

    layer: str
    reason: str


Action = Wake | Sleep | Hold

# Why a deadline exists.
IDLE_TIMEOUT = "idle timeout"
GRACE_PERIOD = "eviction grace period"
WAKE_TIMEOUT = "wake timeout"
ADAPTIVE = "adaptive window"  # a learned keep-alive ends, or a pre-warm starts or ends
SCHEDULE = "warm schedule"  # a window of the warm schedule opens or closes


@dataclass(frozen=True, order=True)
class Deadline:
    """A time at which the plan (or the status) changes without any event: plan again then."""

    at: datetime
    layer: str
    reason: str


@dataclass(frozen=True)
class Plan:
    replicas: dict[str, int]  # desired replicas of every managed layer
    actions: tuple[Action, ...] = field(default=())
    deadlines: tuple[Deadline, ...] = field(default=())  # all in the future, earliest first

    def wakes(self) -> tuple[Wake, ...]:
        return tuple(a for a in self.actions if isinstance(a, Wake))

    def sleeps(self) -> tuple[Sleep, ...]:
        return tuple(a for a in self.actions if isinstance(a, Sleep))

    def holds(self) -> tuple[Hold, ...]:
        return tuple(a for a in self.actions if isinstance(a, Hold))

    def next_deadline(self) -> Deadline | None:
        """The earliest time to plan again if nothing happens before (None: only on events)."""
        return self.deadlines[0] if self.deadlines else None


def _age(demand: datetime | None, now: datetime) -> float | None:
    return None if demand is None else (now - demand).total_seconds()


def _stamp(demand: datetime | None) -> float:
    return demand.timestamp() if demand is not None else 0.0


def idle_window(layer: Layer, history: History | None, renew_seconds: float) -> Window:
    """How long `layer` stays awake after its last demand, by its idle policy."""
    if layer.idle_policy == "adaptive":
        busy = busy_gap(renew_seconds)
        return decide(history or History(), Params.of(layer.adaptive), layer.idle_timeout, busy)
    return Window(layer.idle_timeout)


def plan(
    spec: OnionSpec,
    observed: Mapping[str, Observed],
    demand: Mapping[str, datetime | None],
    now: datetime,
    history: Mapping[str, History] | None = None,
) -> Plan:
    """Desired replicas per managed layer, the wakes, sleeps and holds that get there, and the
    deadlines at which this answer changes by itself. `history` is what each layer's idle
    policy learned (idle.py); without it an adaptive layer falls back to its idleTimeout."""
    layers = spec.managed_layers
    learned = history or {}
    awake_now = {lay.name: (observed.get(lay.name) or Observed()).replicas or 0 for lay in layers}
    windows = {
        lay.name: idle_window(lay, learned.get(lay.name), spec.demand_renew_seconds)
        for lay in layers
    }
    schedules: dict[str, Scheduled] = {
        lay.name: scheduled(windows_of(lay), now, (learned.get(lay.name) or History()).lead())
        for lay in layers
    }
    minimum = {lay.name for lay in layers if lay.min_replicas >= 1}
    warm = minimum | {name for name, s in schedules.items() if s.awake}

    def fresh(name: str, window: float) -> bool:
        age = _age(demand.get(name), now)
        return age is not None and age < window

    def prewarming(name: str) -> bool:
        age = _age(demand.get(name), now)
        return age is not None and name not in warm and windows[name].prewarming(age)

    wanted = {
        lay.name
        for lay in layers
        if lay.name in warm or fresh(lay.name, windows[lay.name].keep_alive)
    }
    # A pre-warm is not demand: it takes only a free slot of the budget, and never evicts.
    prewarms = {lay.name for lay in layers if lay.name not in wanted and prewarming(lay.name)}
    desired = wanted | prewarms
    holds: list[Hold] = []
    budget_sleeps: set[str] = set()

    if spec.max_awake_layers is not None:
        budget = spec.max_awake_layers
        keep = [
            n
            for n in (lay.name for lay in layers)
            if (n in wanted or n in prewarms) and awake_now[n] > 0
        ]
        # An asleep layer competes for a slot only while someone waits for it: the router renews
        # demand for held requests, so their demand stays within the grace period. Older demand
        # (for example of a layer the budget just evicted) must not wake it again, or two layers
        # with demand inside their idle timeout evict each other on every pass.
        newcomers = [
            n
            for n in (lay.name for lay in layers)
            if n in wanted
            and awake_now[n] == 0
            and (n in warm or fresh(n, spec.eviction_grace_period))
        ]
        # Warm layers first, then the most recent demand first.
        newcomers.sort(key=lambda n: (n not in warm, -_stamp(demand.get(n))))
        admitted: list[str] = []

        def evictable() -> list[str]:
            # In use = renewed within the grace period: never put to sleep for the budget.
            cands = [n for n in keep if n not in warm and not fresh(n, spec.eviction_grace_period)]
            # Pre-warmed layers first (no demand at all), then the least recently used.
            return sorted(cands, key=lambda n: (n not in prewarms, _stamp(demand.get(n))))

        for name in newcomers:
            if len(keep) + len(admitted) < budget:
                admitted.append(name)
                continue
            victims = evictable()
            if victims:
                keep.remove(victims[0])
                budget_sleeps.add(victims[0])
                admitted.append(name)
            else:
                holds.append(
                    Hold(name, f"maxAwakeLayers={budget} reached; all awake layers are in use")
                )
        for name in sorted(prewarms - set(keep), key=lambda n: -_stamp(demand.get(n))):
            if awake_now[name] == 0 and len(keep) + len(admitted) < budget:
                admitted.append(name)
        # A lowered budget: put the least recently used awake layers to sleep.
        while len(keep) + len(admitted) > budget and evictable():
            victim = evictable()[0]
            keep.remove(victim)
            budget_sleeps.add(victim)
        desired = set(keep) | set(admitted)

    actions: list[Action] = []
    replicas: dict[str, int] = {}
    deadlines: list[Deadline] = []
    for lay in layers:
        name = lay.name
        want = 1 if name in desired else 0
        replicas[name] = want
        window, schedule = windows[name], schedules[name]
        last = demand.get(name)
        if want and not awake_now[name]:
            actions.append(Wake(name, *_wake_reason(name, minimum, schedule, window, last, now)))
        elif not want and awake_now[name]:
            if name in budget_sleeps:
                reason = f"least recently used; maxAwakeLayers={spec.max_awake_layers}"
                actions.append(Sleep(name, reason, BUDGET))
            else:
                actions.append(Sleep(name, *_sleep_reason(lay, window, schedule, last, now)))
        if schedule.changes_at is not None and name not in minimum:
            deadlines.append(Deadline(schedule.changes_at, name, SCHEDULE))
        if name not in warm and last is not None:
            why = ADAPTIVE if lay.idle_policy == "adaptive" else IDLE_TIMEOUT
            # Only the ages still to come: a fixed layer awake until idleTimeout, an adaptive one
            # also asleep until its pre-warm (which wakes it) and awake until that ends.
            for age in window.changes() if (want or why == ADAPTIVE) else ():
                deadlines.append(Deadline(last + timedelta(seconds=age), name, why))
        # While a layer waits for a slot, the plan changes when an awake layer stops being in use
        # (it becomes evictable) or when the waiting layer's own demand stops being recent.
        if holds and last is not None:
            deadlines.append(
                Deadline(last + timedelta(seconds=spec.eviction_grace_period), name, GRACE_PERIOD)
            )
        failing_at = wake_deadline(observed.get(name), lay.wake_timeout)
        if want and failing_at is not None:
            deadlines.append(Deadline(failing_at, name, WAKE_TIMEOUT))
    actions.extend(holds)
    future = sorted(d for d in deadlines if d.at > now)
    return Plan(replicas=replicas, actions=tuple(actions), deadlines=tuple(future))


def _wake_reason(
    name: str,
    minimum: set[str],
    schedule: Scheduled,
    window: Window,
    last: datetime | None,
    now: datetime,
) -> tuple[str, str]:
    """The Event's sentence and the metrics' cause of a wake."""
    if name in minimum:
        return "warm minimum", WARM
    age = _age(last, now)
    if age is not None and age < window.keep_alive:
        return "demand recorded", DEMAND
    if schedule.awake:
        return schedule.reason, SCHEDULE_CAUSE
    return (
        f"pre-warm: last demand {age or 0:.0f}s ago; awake {window.prewarm_from:g}-"
        f"{window.prewarm_until:g}s after a demand, Ready before the next one is expected "
        f"({window.basis})",
        PREWARM,
    )


def _sleep_reason(
    layer: Layer, window: Window, schedule: Scheduled, last: datetime | None, now: datetime
) -> tuple[str, str]:
    """The Event's sentence and the metrics' cause of a sleep that the budget did not force."""
    age = _age(last, now)
    idle = "never" if age is None else f"{age:.0f}s ago"
    cause = IDLE
    if layer.idle_policy == "fixed":
        reason = f"idle: last demand {idle}, idleTimeout {layer.idle_timeout:g}s"
    elif window.prewarm_until is not None and age is not None and age >= window.prewarm_until:
        reason = (
            f"pre-warm window {window.prewarm_from:g}-{window.prewarm_until:g}s ended without "
            f"demand (last demand {idle}; {window.basis})"
        )
        cause = PREWARM
    else:
        reason = (
            f"idle: last demand {idle}, adaptive keep-alive {window.keep_alive:g}s ({window.basis})"
        )
    if layer.warm_schedule and not schedule.awake:
        reason += "; outside its warm schedule"
    return reason, cause
