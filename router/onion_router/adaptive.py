"""Thresholds that tune themselves, pure: a rolling window of one layer's scores, and the
threshold that escalates about `targetRate` of them (`escalation.targetRate`)."""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

from onion_router.config import Escalation


@dataclass(frozen=True)
class Live:
    """What /status and the metrics show of one judged layer."""

    threshold: float
    escalation_rate: float | None  # over the window; None before any judgement
    samples: int
    adapting: bool  # False while it still holds the configured threshold (or it is fixed)


class Threshold:
    """One layer's threshold: fixed, or the `targetRate` quantile of the last `window` scores.

    Escalate when score < threshold. The quantile is taken so that about `targetRate` of the
    window lies strictly below it; until `minSamples` scores were seen it is the configured
    `threshold`. Each router replica keeps its own window: replicas on the same traffic see the
    same distribution, so they settle near the same value without sharing anything."""

    def __init__(self, escalation: Escalation) -> None:
        self._escalation = escalation
        self._target = escalation.target_rate
        self._window = escalation.window
        self._order: deque[float] = deque()
        self._sorted: list[float] = []
        self._verdicts: deque[bool] = deque(maxlen=escalation.window)
        self._escalated = 0
        self._current = escalation.threshold

    @property
    def value(self) -> float:
        return self._current

    def observe(self, score: float | None, escalated: bool) -> None:
        """Record one judged answer: its score (None when it had none) and the verdict."""
        if len(self._verdicts) == self._verdicts.maxlen and self._verdicts[0]:
            self._escalated -= 1
        self._verdicts.append(escalated)
        self._escalated += escalated
        if self._target is None or score is None or not math.isfinite(score):
            return
        self._order.append(score)
        bisect.insort(self._sorted, score)
        if len(self._order) > self._window:
            old = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        if len(self._sorted) >= self._escalation.min_samples:
            self._current = self._bounded(quantile(self._sorted, self._target))

    def _bounded(self, value: float) -> float:
        lo, hi = self._escalation.min_threshold, self._escalation.max_threshold
        if lo is not None:
            value = max(lo, value)
        if hi is not None:
            value = min(hi, value)
        return value

    def live(self) -> Live:
        rate = self._escalated / len(self._verdicts) if self._verdicts else None
        adapting = self._target is not None and len(self._sorted) >= self._escalation.min_samples
        return Live(self._current, rate, len(self._sorted), adapting)


def quantile(ordered: list[float], rate: float) -> float:
    """The threshold below which about `rate` of the sorted scores lie (strictly).

    Halfway between the two scores around the cut, so a replayed score is never exactly on it."""
    n = len(ordered)
    cut = min(n - 1, max(0, round(rate * n)))
    if cut == 0:
        return ordered[0]  # nothing strictly below: escalate none of these
    return (ordered[cut - 1] + ordered[cut]) / 2


def distribution(scores: list[float], rate: float) -> dict[str, float | int]:
    """What `onion-router calibrate` prints of one layer's scores: count, percentiles, and the
    threshold that escalates about `rate` of them."""
    ordered = sorted(scores)
    n = len(ordered)
    summary: dict[str, float | int] = {"count": n}
    if not n:
        return summary
    for name, q in (("min", 0.0), ("p10", 0.1), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75)):
        summary[name] = ordered[min(n - 1, int(q * n))]
    summary["p90"] = ordered[min(n - 1, int(0.9 * n))]
    summary["max"] = ordered[-1]
    summary["threshold"] = quantile(ordered, rate)
    summary["escalated"] = sum(1 for s in ordered if s < summary["threshold"]) / n
    return summary
