"""The adaptive idle policy: learn a layer's idle gaps and cold starts, choose its awake windows.

Pure and clock-free: the planner passes ages (seconds since the layer's last demand). What is
learned lives in the Onion's status (`status.layers[].idle`), so an operator restart loses
nothing, and it is written only in passes that write the status anyway (a gap is learned when
demand comes back, which also moves `lastDemandTime`).

An idle gap is the time from the end of one busy period (the last demand renewal before a pause)
to the next demand. The router renews a used layer's Lease every `demandRenewSeconds`, so a pause
between two recorded demands longer than `busy_gap` (three renewals) is a gap; shorter ones are
the same busy period. Gaps do not depend on the policy: demand is recorded whether the layer is
awake or asleep.

The decision (docs/cold-starts.md), after the hybrid histogram policy of Shahrad et al.
("Serverless in the Wild", ATC 2020) with a cost-aware keep-alive:

- a cold start costs `C + coldStartCost * (1 + C / mean gap)` GPU-seconds: the GPU time of the
  wake itself (C, the median measured cold start) plus `coldStartCost` for each request that
  waits for it: the one that woke it and those expected while it loads (demand resumes at one
  per mean gap);
- until a cold start is measured and `minSamples` gaps are learned, the layer stays awake for
  `idleTimeout` (the fixed policy it falls back to, so that it is never worse than it where its
  history is thin);
- otherwise the keep-alive is the one, among the learned gaps and `idleTimeout`, that minimises
  the expected cost of a gap: idle GPU time until the next demand or the sleep, plus the cost of
  a cold start if the demand comes after the sleep. It is doubled (KEEP_MARGIN), at least
  `busy_gap` and at most `idleTimeout`;
- among the gaps longer than that keep-alive, a pre-warm window from the head to the tail of
  their distribution (a few percentile pairs are tried) wakes the layer early enough (the
  longest measured cold start plus 10%) to be Ready when the head of the next demand is
  expected; it is used only if it costs less than taking those cold starts.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from onion_contract.spec import AdaptiveIdle

# A learned keep-alive is doubled: the next gap is longer than every one of n seen before with
# probability 1/(n+1), and on a busy layer each such gap costs several waiting requests (on the
# trace bench, a 10% margin had adaptive dominated by fixed timeouts; docs/cold-starts.md).
KEEP_MARGIN = 1.0
MARGIN = 0.1  # added to the pre-warm lead time (the longest measured cold start)
# Percentile pairs (head, tail) of the long gaps tried as pre-warm windows.
PREWARM_WINDOWS = tuple((h, t) for h in (0.05, 0.1, 0.25) for t in (0.75, 0.9, 0.99))


@dataclass(frozen=True)
class Params:
    """The adaptive policy's parameters (the layer's `adaptive` field)."""

    cold_start_cost: float = 60.0
    min_samples: int = 16
    history: int = 64
    prewarm: bool = True

    @classmethod
    def of(cls, adaptive: AdaptiveIdle) -> Params:
        return cls(
            adaptive.cold_start_cost, adaptive.min_samples, adaptive.history, adaptive.prewarm
        )


@dataclass(frozen=True)
class History:
    """What a layer's traffic taught so far, oldest first, each bounded by `Params.history`."""

    gaps: tuple[float, ...] = ()  # idle gaps, seconds
    cold_starts: tuple[float, ...] = ()  # measured wake-to-Ready seconds

    def with_gap(self, seconds: float, keep: int) -> History:
        return History((*self.gaps, round(seconds, 1))[-keep:], self.cold_starts)

    def with_cold_start(self, seconds: float, keep: int) -> History:
        cold = (*self.cold_starts, round(seconds, 1))[-max(1, keep // 8) :]
        return History(self.gaps, cold)

    def lead(self) -> float:
        """How long before a predicted demand to start a wake: the longest cold start + 10%."""
        return max(self.cold_starts) * (1 + MARGIN) if self.cold_starts else 0.0

    def to_status(self) -> dict[str, Any]:
        return {"gaps": list(self.gaps), "coldStarts": list(self.cold_starts)}

    @classmethod
    def from_status(cls, entry: Mapping[str, Any] | None) -> History:
        """Read back what `to_status` wrote; anything malformed is dropped, not fatal."""
        idle = (entry or {}).get("idle") or {}

        def numbers(key: str) -> tuple[float, ...]:
            values = idle.get(key) or []
            ok = isinstance(values, list)
            return tuple(float(v) for v in values if ok and isinstance(v, int | float) and v >= 0)

        return cls(numbers("gaps"), numbers("coldStarts"))


def busy_gap(demand_renew_seconds: float) -> float:
    """Pauses between recorded demands up to this long belong to one busy period."""
    return 3 * demand_renew_seconds


def learn_gap(
    history: History, previous: float | None, latest: float | None, busy: float, keep: int
) -> History:
    """`history` plus the gap between two recorded demands (epoch seconds), if it is one."""
    if previous is None or latest is None or latest - previous <= busy:
        return history
    return history.with_gap(latest - previous, keep)


@dataclass(frozen=True)
class Window:
    """When an idle layer is awake, in seconds since its last demand."""

    keep_alive: float  # asleep once the last demand is this old...
    prewarm_from: float | None = None  # ...and awake again from this age...
    prewarm_until: float | None = None  # ...until this one (None: no pre-warm)
    basis: str = ""  # why, for the Events

    def awake(self, age: float) -> bool:
        """Whether the layer should be awake `age` seconds after its last demand."""
        return age < self.keep_alive or self.prewarming(age)

    def prewarming(self, age: float) -> bool:
        return (
            self.prewarm_from is not None
            and self.prewarm_until is not None
            and self.prewarm_from <= age < self.prewarm_until
        )

    def changes(self) -> tuple[float, ...]:
        """The ages at which `awake` flips."""
        ages = [self.keep_alive]
        if self.prewarm_from is not None and self.prewarm_until is not None:
            ages += [self.prewarm_from, self.prewarm_until]
        return tuple(ages)


def _quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _keep_alive_cost(gaps: Sequence[float], keep: float, penalty: float) -> float:
    """Expected GPU-seconds per gap of sleeping `keep` seconds after the last demand."""
    return sum(g if g <= keep else keep + penalty for g in gaps)


def _prewarm_cost(
    gaps: Sequence[float], start: float, end: float, cold: float, penalty: float
) -> float:
    """GPU-seconds (waits costed) of waking at age `start` and sleeping again at `end`, over
    the gaps that come after the keep-alive."""
    total = 0.0
    for g in gaps:
        if g < start + cold:  # came while asleep or still loading: it waits
            total += penalty
        elif g <= end:  # came while pre-warmed: the GPU was up since `start`
            total += g - start
        else:  # the window ended first: its GPU time, then a cold start
            total += end - start + penalty
    return total


@functools.lru_cache(maxsize=4096)
def decide(history: History, params: Params, idle_timeout: float, busy: float) -> Window:
    """The awake windows of an idle layer with this history (see the module docstring)."""
    n = len(history.gaps)
    if not history.cold_starts or n < params.min_samples:
        # Until the history can be trusted, the layer's own fixed timeout: adaptive is then
        # never worse than the fixed policy it falls back to. (A break-even keep-alive here, the
        # ski-rental rule, slept a busy layer through its pauses while it learned: on the code
        # trace it made 3.6 times as many requests wait as a fixed 5 minutes, for more GPU time;
        # docs/cold-starts.md.)
        why = "no cold start measured yet" if not history.cold_starts else f"{n} idle gaps"
        return Window(idle_timeout, basis=f"idleTimeout: {why} (trusted from {params.min_samples})")
    cold = statistics.median(history.cold_starts)
    # Requests that wait for one cold start: the one that woke it, and those that come while it
    # loads, at the rate demand resumes after idle gaps.
    waiting = 1 + cold / statistics.fmean(history.gaps)
    penalty = cold + params.cold_start_cost * waiting
    gaps = sorted(history.gaps)
    candidates = [0.0, *(g for g in gaps if g < idle_timeout), idle_timeout]
    # The cheapest keep-alive; among equals the shortest (past the longest gap seen, a longer
    # one only costs: the history has no gap that it would catch).
    best = min(candidates, key=lambda t: (_keep_alive_cost(gaps, t, penalty), t))
    keep = max(busy, min(idle_timeout, best * (1 + KEEP_MARGIN)))
    basis = f"{n} idle gaps, cold start {cold:g}s, coldStartCost {params.cold_start_cost:g}s"
    window = Window(keep, basis=basis)
    slept = [g for g in gaps if g >= keep]
    if not params.prewarm or len(slept) < max(2, params.min_samples // 2):
        return window
    lead = history.lead()
    no_prewarm = len(slept) * penalty
    best_cost, best_window = no_prewarm, window
    for head, tail in PREWARM_WINDOWS:
        start = max(keep, _quantile(slept, head) - lead)
        end = min(max(_quantile(slept, tail), start + lead), start + idle_timeout)
        if start <= keep + 1e-9:
            continue  # no sleep between keep-alive and pre-warm: nothing to gain
        cost = _prewarm_cost(slept, start, end, cold, penalty)
        if cost < best_cost:
            best_cost = cost
            basis_pw = f"{basis}; pre-warm at p{head * 100:g} of {len(slept)} longer gaps"
            best_window = Window(keep, round(start, 1), round(end, 1), basis_pw)
    return best_window
