"""The bargain's statistics, pure (numpy): escalation curves, APGR, bootstrap intervals,
permutation tests against random escalation, cuts chosen on one split and applied to another, and
the cascade through all layers.

A score is oriented so that higher means more trust in the answer: a policy escalates the lowest
first. NaN is "no score" (never escalated by a threshold). Ties share their mean outcome: a
threshold cannot split them, so any order among them is equally likely (and the router splits a
tie at a cut at random, see onion_router/adaptive.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
TOLERANCE = 1e-9  # two accuracies this close are equal (APGR undefined: no gap to recover)
B_DEFAULT = 2000


def _sort_key(scores: Array) -> Array:
    return np.where(np.isnan(scores), np.inf, scores)


def ordered_gains(scores: Array, gain: Array) -> Array:
    """Each question's gain from escalating it, in the order a threshold escalates them (lowest
    score first), equal scores sharing their mean gain; no score sorts last."""
    key = _sort_key(scores)
    order = np.argsort(key, kind="stable")
    ranked, g = key[order], gain[order]
    _, start, counts = np.unique(ranked, return_index=True, return_counts=True)
    sums = np.add.reduceat(g, start)
    return np.repeat(sums / counts, counts)


def curve(weak_ok: Array, strong_ok: Array, scores: Array) -> Array:
    """Accuracy with the k lowest-scored answers escalated to the strong layer, k = 0..n."""
    n = len(weak_ok)
    gains = ordered_gains(scores, strong_ok - weak_ok)
    return float(weak_ok.mean()) + np.concatenate([[0.0], np.cumsum(gains)]) / n


def apgr_of_curve(points: Array) -> float | None:
    """RouteLLM's average performance gap recovered, the area under (acc - weak) / (strong -
    weak) over escalation rates 0..1; random escalation is 0.5 exactly. None (undefined) when
    the strong layer is not better than the weak one by more than TOLERANCE."""
    weak, strong = float(points[0]), float(points[-1])
    if strong - weak <= TOLERANCE:
        return None
    rates = np.linspace(0.0, 1.0, len(points))
    return float(np.trapezoid((points - weak) / (strong - weak), rates))


def apgr(weak_ok: Array, strong_ok: Array, scores: Array) -> float | None:
    return apgr_of_curve(curve(weak_ok, strong_ok, scores))


def at_rate(points: Array, rate: float) -> float:
    """The curve at `rate`, linear between its points."""
    return float(np.interp(rate, np.linspace(0.0, 1.0, len(points)), points))


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    samples: int  # bootstrap samples in which the statistic was defined

    def pair(self) -> list[float]:
        return [round(self.low, 4), round(self.high, 4)]


def bootstrap(
    statistic: Callable[..., float | None],
    arrays: Sequence[Array],
    samples: int = B_DEFAULT,
    seed: int = 0,
) -> Interval | None:
    """95% percentile interval of `statistic` over resamplings of the questions (the rows of
    every array together). None when it is undefined in most resamplings."""
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    values = []
    for _ in range(samples):
        index = rng.integers(0, n, n)
        value = statistic(*(a[index] for a in arrays))
        if value is not None:
            values.append(value)
    if len(values) < samples / 2:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return Interval(float(low), float(high), len(values))


def permutation_p(
    weak_ok: Array, strong_ok: Array, scores: Array, samples: int = B_DEFAULT, seed: int = 1
) -> float | None:
    """One-sided p-value of the signal's APGR against random escalation: the share of random
    reorderings of the scores (which know nothing) that recover at least as much."""
    observed = apgr(weak_ok, strong_ok, scores)
    if observed is None:
        return None
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(samples):
        value = apgr(weak_ok, strong_ok, rng.permutation(scores))
        hits += value is not None and value >= observed - TOLERANCE
    return (1 + hits) / (1 + samples)


# --- cuts: a threshold chosen on train, applied to test ---------------------------------------


@dataclass(frozen=True)
class Cut:
    """Escalate scores below `threshold`, and `tie_share` of those equal to it (at random)."""

    threshold: float
    tie_share: float

    def escalation(self, scores: Array) -> Array:
        """Each answer's probability of being escalated."""
        below = np.where(np.isnan(scores), False, scores < self.threshold)
        equal = np.where(np.isnan(scores), False, scores == self.threshold)
        return below + self.tie_share * equal


NEVER = Cut(float("-inf"), 0.0)


def cut_for_rate(scores: Array, rate: float, weights: Array | None = None) -> Cut:
    """The cut that escalates `rate` of the (weighted) answers, lowest scores first, splitting
    the tie at the cut; what `targetRate` holds. No score is never escalated."""
    w = np.ones(len(scores)) if weights is None else weights
    known = ~np.isnan(scores)
    total = float(w.sum())
    want = rate * total
    if want <= 0 or not known.any():
        return NEVER
    values = np.unique(scores[known])
    below = 0.0
    for value in values:
        equal = float(w[known & (scores == value)].sum())
        if below + equal >= want - TOLERANCE:
            share = (want - below) / equal if equal > 0 else 0.0
            return Cut(float(value), min(1.0, max(0.0, share)))
        below += equal
    return Cut(float("inf"), 0.0)  # even every scored answer is fewer than the rate


# --- a cascade through every layer -----------------------------------------------------------


def cascade_answering(scores: Sequence[Array], cuts: Sequence[Cut]) -> tuple[Array, Array]:
    """For each question, the probability that each layer answers it and that each layer is
    asked at all, when each judged layer escalates by its cut: (answering, visited), each of
    shape (layers, questions). `scores` and `cuts` are the judged layers' (all but the last)."""
    n = len(scores[0])
    layers = len(scores) + 1
    answering = np.zeros((layers, n))
    visited = np.zeros((layers, n))
    reach = np.ones(n)
    for layer, (score, cut) in enumerate(zip(scores, cuts, strict=True)):
        visited[layer] = reach
        up = cut.escalation(score)
        answering[layer] = reach * (1 - up)
        reach = reach * up
    visited[-1] = reach
    answering[-1] = reach
    return answering, visited


def cascade_cuts(scores: Sequence[Array], rate: float, weights: Array | None = None) -> list[Cut]:
    """Cuts for each judged layer that escalate `rate` of the traffic that layer sees (the core
    sees every question, each with its weight; mid what the core escalated, with its
    probability)."""
    cuts: list[Cut] = []
    reach = np.ones(len(scores[0])) if weights is None else weights.astype(float)
    for score in scores:
        cut = cut_for_rate(score, rate, reach)
        cuts.append(cut)
        reach = reach * cut.escalation(score)
    return cuts
