"""Thresholds that tune themselves, pure: a rolling window of one layer's scores, and the
threshold that escalates about `targetRate` of them (`escalation.targetRate`)."""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from dataclasses import dataclass

from onion_contract.router_config import Escalation


@dataclass(frozen=True)
class Live:
    """What /status and the metrics show of one judged layer."""

    threshold: float
    escalation_rate: float | None  # over the window; None before any judgement
    samples: int
    adapting: bool  # False while it still holds the configured threshold (or it is fixed)


@dataclass(frozen=True)
class Cut:
    """Escalate a score below `threshold`; of the scores equal to it, `tie_share` (at random).

    The share is what holds a target rate when many scores tie (a yes/no probe, short answers
    with the same logprobs): a plain threshold can only escalate all of a tie or none of it."""

    threshold: float
    tie_share: float = 0.0

    def escalates(self, score: float, draw: float) -> bool:
        """`draw` is uniform in [0, 1): the coin for a score on the cut."""
        return score < self.threshold or (score == self.threshold and draw < self.tie_share)


class Threshold:
    """One layer's threshold: fixed, or the `targetRate` cut of the last `window` scores.

    Escalate when score < threshold, and a share of the scores equal to it (`Cut`). The cut is
    taken so that about `targetRate` of the window is escalated; until `minSamples` scores were
    seen it is the configured `threshold`. Each router replica keeps its own window: replicas on
    the same traffic see the same distribution, so they settle near the same value."""

    def __init__(self, escalation: Escalation) -> None:
        self._escalation = escalation
        self._target = escalation.target_rate
        self._window = escalation.window
        self._order: deque[float] = deque()
        self._sorted: list[float] = []
        self._verdicts: deque[bool] = deque(maxlen=escalation.window)
        self._escalated = 0
        self._cut = Cut(escalation.threshold)
        self._coin = random.Random()

    @property
    def value(self) -> float:
        return self._cut.threshold

    @property
    def tie_share(self) -> float:
        return self._cut.tie_share

    def draw(self) -> float:
        """The coin for a score exactly on the cut."""
        return self._coin.random()

    @property
    def target_rate(self) -> float | None:
        return self._target

    @property
    def adapting(self) -> bool:
        return self._target is not None and len(self._sorted) >= self._escalation.min_samples

    def seed(self, threshold: float, tie_share: float = 0.0) -> None:
        """Start from a cut other replicas reached (published on the thresholds Lease) instead
        of the configured threshold, until this replica has minSamples scores of its own."""
        if self._target is not None and not self.adapting and math.isfinite(threshold):
            self._cut = self._bounded(Cut(threshold, min(1.0, max(0.0, tie_share))))

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
            self._cut = self._bounded(rate_cut(self._sorted, self._target))

    def _bounded(self, cut: Cut) -> Cut:
        lo, hi = self._escalation.min_threshold, self._escalation.max_threshold
        value = cut.threshold
        if lo is not None:
            value = max(lo, value)
        if hi is not None:
            value = min(hi, value)
        return cut if value == cut.threshold else Cut(value)

    def live(self) -> Live:
        rate = self._escalated / len(self._verdicts) if self._verdicts else None
        return Live(self.value, rate, len(self._sorted), self.adapting)


def quantile(ordered: list[float], rate: float) -> float:
    """The threshold below which about `rate` of the sorted scores lie (strictly).

    Halfway between the two scores around the cut, so a replayed score is never exactly on it."""
    n = len(ordered)
    cut = min(n - 1, max(0, round(rate * n)))
    if cut == 0:
        return ordered[0]  # nothing strictly below: escalate none of these
    return (ordered[cut - 1] + ordered[cut]) / 2


def rate_cut(ordered: list[float], rate: float) -> Cut:
    """The cut that escalates `rate` of the sorted scores: `quantile` where no tie straddles
    it; where one does, the tied value with the share of it that makes up the rate."""
    n = len(ordered)
    index = min(n - 1, max(0, round(rate * n)))
    if index == 0 or ordered[index - 1] < ordered[index]:
        return Cut(quantile(ordered, rate))
    tied = ordered[index]
    below = bisect.bisect_left(ordered, tied)
    equal = bisect.bisect_right(ordered, tied) - below
    return Cut(tied, min(1.0, max(0.0, (rate * n - below) / equal)))


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
