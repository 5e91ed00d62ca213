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

`plan` is its phases in order: what each layer's policies say now (`_situation`), the layers
wanted awake (`_wanted`) and pre-warmed (`_prewarms`), those that fit the budget (`_fit_budget`),
the wakes and sleeps that get there (`_wakes_and_sleeps`) and when the answer changes
(`_deadlines`).
"""

from __future__ import annotations

import math
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


def timestamp(value: datetime | None) -> float | None:
    """POSIX seconds of a time; None stays None (never)."""
    return None if value is None else value.timestamp()


def _age(demand: datetime | None, now: datetime) -> float | None:
    return None if demand is None else (now - demand).total_seconds()


def idle_window(layer: Layer, history: History | None, renew_seconds: float) -> Window:
    """How long `layer` stays awake after its last demand, by its idle policy."""
    if layer.idle_policy == "adaptive":
        busy = busy_gap(renew_seconds)
        return decide(history or History(), Params.of(layer.adaptive), layer.idle_timeout, busy)
    return Window(layer.idle_timeout)


@dataclass(frozen=True)
class _Situation:
    """What a plan decides from, for each managed layer, read once."""

    spec: OnionSpec
    observed: Mapping[str, Observed]
    demand: Mapping[str, datetime | None]
    now: datetime
    awake: dict[str, int]  # replicas now (0: asleep or not created)
    windows: dict[str, Window]  # how long its idle policy keeps it awake after a demand
    schedules: dict[str, Scheduled]  # what its warm schedule says now
    minimum: frozenset[str]  # minReplicas: 1
    warm: frozenset[str]  # the minimum, and the layers their schedule holds awake

    @property
    def layers(self) -> tuple[Layer, ...]:
        return self.spec.managed_layers

    def fresh(self, name: str, window: float) -> bool:
        """Whether the layer's last demand is less than `window` seconds old."""
        age = _age(self.demand.get(name), self.now)
        return age is not None and age < window

    def prewarming(self, name: str) -> bool:
        age = _age(self.demand.get(name), self.now)
        return age is not None and name not in self.warm and self.windows[name].prewarming(age)

    def last_used(self, name: str) -> float:
        """The last demand's time as a sort key; a layer never used sorts before every other."""
        stamp = timestamp(self.demand.get(name))
        return -math.inf if stamp is None else stamp


def _situation(
    spec: OnionSpec,
    observed: Mapping[str, Observed],
    demand: Mapping[str, datetime | None],
    now: datetime,
    learned: Mapping[str, History],
) -> _Situation:
    """Each managed layer's replicas, idle window and warm schedule, read once for the plan."""
    layers = spec.managed_layers
    schedules = {
        lay.name: scheduled(windows_of(lay), now, (learned.get(lay.name) or History()).lead())
        for lay in layers
    }
    minimum = frozenset(lay.name for lay in layers if lay.min_replicas >= 1)
    return _Situation(
        spec=spec,
        observed=observed,
        demand=demand,
        now=now,
        awake={lay.name: (observed.get(lay.name) or Observed()).replicas or 0 for lay in layers},
        windows={
            lay.name: idle_window(lay, learned.get(lay.name), spec.demand_renew_seconds)
            for lay in layers
        },
        schedules=schedules,
        minimum=minimum,
        warm=minimum | {name for name, sched in schedules.items() if sched.awake},
    )


def _wanted(s: _Situation) -> set[str]:
    """The layers that should be awake: warm ones, and those with demand inside their keep-alive."""
    return {
        lay.name
        for lay in s.layers
        if lay.name in s.warm or s.fresh(lay.name, s.windows[lay.name].keep_alive)
    }


def _prewarms(s: _Situation, wanted: set[str]) -> set[str]:
    """The layers the adaptive policy wakes before the demand it expects (none is wanted)."""
    return {lay.name for lay in s.layers if lay.name not in wanted and s.prewarming(lay.name)}


@dataclass(frozen=True)
class _Budgeted:
    """The layers awake within maxAwakeLayers, who waits for a slot, and who was evicted."""

    desired: set[str]
    holds: tuple[Hold, ...] = ()
    evicted: frozenset[str] = frozenset()


def _fit_budget(s: _Situation, wanted: set[str], prewarms: set[str]) -> _Budgeted:
    """Admit wanted layers into maxAwakeLayers slots, evicting the least recently used awake
    layer that is not in use; a pre-warm takes only a free slot and never evicts."""
    budget = s.spec.max_awake_layers
    if budget is None:
        return _Budgeted(wanted | prewarms)
    grace = s.spec.eviction_grace_period
    names = [lay.name for lay in s.layers]
    keep = [n for n in names if (n in wanted or n in prewarms) and s.awake[n] > 0]
    # An asleep layer competes for a slot only while someone waits for it: the router renews
    # demand for held requests, so their demand stays within the grace period. Older demand
    # (for example of a layer the budget just evicted) must not wake it again, or two layers
    # with demand inside their idle timeout evict each other on every pass.
    newcomers = [
        n for n in names if n in wanted and s.awake[n] == 0 and (n in s.warm or s.fresh(n, grace))
    ]
    # Warm layers first, then the most recent demand first.
    newcomers.sort(key=lambda n: (n not in s.warm, -s.last_used(n)))
    admitted: list[str] = []
    holds: list[Hold] = []
    evicted: set[str] = set()

    def evictable() -> list[str]:
        # In use = renewed within the grace period: never put to sleep for the budget.
        cands = [n for n in keep if n not in s.warm and not s.fresh(n, grace)]
        # Pre-warmed layers first (no demand at all), then the least recently used.
        return sorted(cands, key=lambda n: (n not in prewarms, s.last_used(n)))

    for name in newcomers:
        if len(keep) + len(admitted) < budget:
            admitted.append(name)
            continue
        victims = evictable()
        if victims:
            keep.remove(victims[0])
            evicted.add(victims[0])
            admitted.append(name)
        else:
            holds.append(
                Hold(name, f"maxAwakeLayers={budget} reached; all awake layers are in use")
            )
    for name in sorted(prewarms - set(keep), key=lambda n: -s.last_used(n)):
        if s.awake[name] == 0 and len(keep) + len(admitted) < budget:
            admitted.append(name)
    # A lowered budget: put the least recently used awake layers to sleep.
    while len(keep) + len(admitted) > budget and evictable():
        victim = evictable()[0]
        keep.remove(victim)
        evicted.add(victim)
    return _Budgeted(set(keep) | set(admitted), tuple(holds), frozenset(evicted))


def _wakes_and_sleeps(s: _Situation, budgeted: _Budgeted) -> list[Action]:
    """What changes the layers' replicas to the desired ones, each with its reason."""
    actions: list[Action] = []
    for lay in s.layers:
        name = lay.name
        if name in budgeted.desired and not s.awake[name]:
            actions.append(Wake(name, *_wake_reason(s, name)))
        elif name not in budgeted.desired and s.awake[name]:
            if name in budgeted.evicted:
                reason = f"least recently used; maxAwakeLayers={s.spec.max_awake_layers}"
                actions.append(Sleep(name, reason, BUDGET))
            else:
                actions.append(Sleep(name, *_sleep_reason(s, lay)))
    return actions


def _deadlines(s: _Situation, budgeted: _Budgeted) -> tuple[Deadline, ...]:
    """The future times at which this plan changes by itself, earliest first."""
    deadlines: list[Deadline] = []
    for lay in s.layers:
        name, last = lay.name, s.demand.get(lay.name)
        want = name in budgeted.desired
        schedule = s.schedules[name]
        if schedule.changes_at is not None and name not in s.minimum:
            deadlines.append(Deadline(schedule.changes_at, name, SCHEDULE))
        if name not in s.warm and last is not None:
            why = ADAPTIVE if lay.idle_policy == "adaptive" else IDLE_TIMEOUT
            # Only the ages still to come: a fixed layer awake until idleTimeout, an adaptive one
            # also asleep until its pre-warm (which wakes it) and awake until that ends.
            for age in s.windows[name].changes() if (want or why == ADAPTIVE) else ():
                deadlines.append(Deadline(last + timedelta(seconds=age), name, why))
        # While a layer waits for a slot, the plan changes when an awake layer stops being in use
        # (it becomes evictable) or when the waiting layer's own demand stops being recent.
        if budgeted.holds and last is not None:
            grace = timedelta(seconds=s.spec.eviction_grace_period)
            deadlines.append(Deadline(last + grace, name, GRACE_PERIOD))
        failing_at = wake_deadline(s.observed.get(name), lay.wake_timeout)
        if want and failing_at is not None:
            deadlines.append(Deadline(failing_at, name, WAKE_TIMEOUT))
    return tuple(sorted(d for d in deadlines if d.at > s.now))


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
    s = _situation(spec, observed, demand, now, history or {})
    wanted = _wanted(s)
    budgeted = _fit_budget(s, wanted, _prewarms(s, wanted))
    return Plan(
        replicas={lay.name: int(lay.name in budgeted.desired) for lay in s.layers},
        actions=(*_wakes_and_sleeps(s, budgeted), *budgeted.holds),
        deadlines=_deadlines(s, budgeted),
    )


def _wake_reason(s: _Situation, name: str) -> tuple[str, str]:
    """The Event's sentence and the metrics' cause of a wake."""
    window, schedule = s.windows[name], s.schedules[name]
    if name in s.minimum:
        return "warm minimum", WARM
    age = _age(s.demand.get(name), s.now)
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


def _sleep_reason(s: _Situation, layer: Layer) -> tuple[str, str]:
    """The Event's sentence and the metrics' cause of a sleep that the budget did not force."""
    window, schedule = s.windows[layer.name], s.schedules[layer.name]
    age = _age(s.demand.get(layer.name), s.now)
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
