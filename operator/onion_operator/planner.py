"""Pure wake/sleep decisions: `plan(spec, observed, demand, now) -> Plan`.

Level-based: the desired replicas of every managed layer are recomputed from recorded demand
(the Leases' renewTime) and what the Deployments say now, so a restart at any point converges.
A plan also names its deadlines: the times at which it would change with no event at all (an
idle timeout running out, an eviction grace period ending, a wake timing out). The operator plans
again at the earliest one instead of re-planning on a timer; demand counts for the half-open
window [renewTime, renewTime + idleTimeout), so at a deadline the plan has already changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from onion_operator import constants as c
from onion_operator.spec import OnionSpec


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
        wake_count = int(annotations.get(c.ANNOTATION_WAKE_COUNT, "0"))
    except ValueError:
        wake_count = 0
    return Observed(
        replicas=int(spec.get("replicas", 1)),
        ready_replicas=int(status.get("readyReplicas") or 0),
        current_replicas=int(status.get("replicas") or 0),
        woken_at=parse_time(annotations.get(c.ANNOTATION_WOKEN_AT)),
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

# Why a deadline exists; issue-specific policies (pre-warm, ...) add their own reasons.
IDLE_TIMEOUT = "idle timeout"
GRACE_PERIOD = "eviction grace period"
WAKE_TIMEOUT = "wake timeout"


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


def plan(
    spec: OnionSpec,
    observed: Mapping[str, Observed],
    demand: Mapping[str, datetime | None],
    now: datetime,
) -> Plan:
    """Desired replicas per managed layer, the wakes, sleeps and holds that get there, and the
    deadlines at which this answer changes by itself."""
    layers = spec.managed_layers
    awake_now = {lay.name: (observed.get(lay.name) or Observed()).replicas or 0 for lay in layers}
    warm = {lay.name for lay in layers if lay.min_replicas >= 1}

    def fresh(name: str, window: float) -> bool:
        age = _age(demand.get(name), now)
        return age is not None and age < window

    wanted = {lay.name for lay in layers if lay.name in warm or fresh(lay.name, lay.idle_timeout)}
    desired = set(wanted)
    holds: list[Hold] = []
    budget_sleeps: set[str] = set()

    if spec.max_awake_layers is not None:
        budget = spec.max_awake_layers
        keep = [n for n in (lay.name for lay in layers) if n in wanted and awake_now[n] > 0]
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
            return sorted(cands, key=lambda n: _stamp(demand.get(n)))

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
        if want and not awake_now[name]:
            if name in warm:
                actions.append(Wake(name, "warm minimum", WARM))
            else:
                actions.append(Wake(name, "demand recorded", DEMAND))
        elif not want and awake_now[name]:
            if name in budget_sleeps:
                reason = f"least recently used; maxAwakeLayers={spec.max_awake_layers}"
                actions.append(Sleep(name, reason, BUDGET))
            else:
                age = _age(demand.get(name), now)
                idle = "never" if age is None else f"{age:.0f}s ago"
                reason = f"idle: last demand {idle}, idleTimeout {lay.idle_timeout:g}s"
                actions.append(Sleep(name, reason, IDLE))
        last = demand.get(name)
        if want and name not in warm and last is not None:
            idle_at = last + timedelta(seconds=lay.idle_timeout)
            deadlines.append(Deadline(idle_at, name, IDLE_TIMEOUT))
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
