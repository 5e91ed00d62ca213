"""The bargain's arithmetic, pure: escalation curves from per-question records, the random line,
APGR (RouteLLM's average performance gap recovered; random = 0.5), and a cascade through all
layers. A record per question holds, per layer, whether its answer was right, its cost, and the
scores each policy sees."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

RATES = tuple(round(0.05 * i, 2) for i in range(21))  # 0.0, 0.05, ..., 1.0
GOAL_RATES = (0.1, 0.2, 0.3, 0.4, 0.5)


@dataclass(frozen=True)
class Point:
    rate: float  # fraction of requests escalated out of the first layer
    accuracy: float
    cost: float  # relative to always asking the strongest layer


def _gains(scores: Sequence[float | None], gain: Sequence[float]) -> list[float]:
    """Each question's gain from escalating it, in the order a threshold escalates them (lowest
    score first); questions with equal scores share their mean gain (a threshold cannot split
    them, so any order among them is equally likely). No score sorts last (never escalated
    before a scored one)."""
    order = sorted(range(len(gain)), key=lambda i: (scores[i] is None, scores[i] or 0.0))
    out: list[float] = []
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and scores[order[end]] == scores[order[start]]:
            end += 1
        group = [gain[i] for i in order[start:end]]
        out.extend([sum(group) / len(group)] * len(group))
        start = end
    return out


def pair_curve(
    weak_ok: Sequence[bool],
    strong_ok: Sequence[bool],
    weak_cost: Sequence[float],
    strong_cost: Sequence[float],
    scores: Sequence[float | None],
) -> list[Point]:
    """Escalate the k lowest-scored answers of the weak layer to the strong one, k = 0..n.
    Cost: an escalated question pays for both answers. Normalised by always-strong."""
    n = len(weak_ok)
    full = sum(strong_cost) or 1.0
    acc_gain = _gains(
        scores, [float(s) - float(w) for w, s in zip(weak_ok, strong_ok, strict=True)]
    )
    cost_gain = _gains(scores, list(strong_cost))
    acc, cost = sum(weak_ok) / n, sum(weak_cost) / full
    points = [Point(0.0, acc, cost)]
    for k in range(n):
        acc += acc_gain[k] / n
        cost += cost_gain[k] / full
        points.append(Point((k + 1) / n, acc, cost))
    return points


def binary_curve(
    weak_ok: Sequence[bool],
    strong_ok: Sequence[bool],
    weak_cost: Sequence[float],
    strong_cost: Sequence[float],
    asked: Sequence[bool],
) -> list[Point]:
    """A yes/no signal (the `self` policy) is one point; mixing it with random escalation joins
    it to both ends, which is the curve such a policy can reach."""
    n, full = len(weak_ok), sum(strong_cost) or 1.0
    k = sum(asked)
    acc = sum(s if a else w for w, s, a in zip(weak_ok, strong_ok, asked, strict=True)) / n
    cost = (sum(weak_cost) + sum(c for c, a in zip(strong_cost, asked, strict=True) if a)) / full
    ends = (Point(0.0, sum(weak_ok) / n, sum(weak_cost) / full),)
    top = Point(1.0, sum(strong_ok) / n, (sum(weak_cost) + sum(strong_cost)) / full)
    return [*ends, Point(k / n, acc, cost), top] if 0 < k < n else [*ends, top]


def at(points: Sequence[Point], rate: float) -> Point:
    """The curve at `rate`, linear between its points."""
    for a, b in itertools.pairwise(points):
        if a.rate <= rate <= b.rate:
            t = 0.0 if b.rate == a.rate else (rate - a.rate) / (b.rate - a.rate)
            return Point(
                rate, a.accuracy + t * (b.accuracy - a.accuracy), a.cost + t * (b.cost - a.cost)
            )
    return points[-1]


def random_line(points: Sequence[Point], rate: float) -> Point:
    """Random escalation at `rate`: the straight line between never and always escalating."""
    lo, hi = points[0], points[-1]
    return Point(
        rate,
        lo.accuracy + rate * (hi.accuracy - lo.accuracy),
        lo.cost + rate * (hi.cost - lo.cost),
    )


def apgr(points: Sequence[Point]) -> float | None:
    """Average performance gap recovered over escalation rates 0..1 (trapezoids); random = 0.5.
    None when the strong layer is no better than the weak one (no gap to recover)."""
    weak, strong = points[0].accuracy, points[-1].accuracy
    if strong <= weak:
        return None
    area = 0.0
    for a, b in itertools.pairwise(points):
        area += (b.rate - a.rate) * ((a.accuracy + b.accuracy) / 2 - weak)
    return area / (strong - weak)


def cascade(
    ok: Sequence[Sequence[bool]],
    cost: Sequence[Sequence[float]],
    scores: Sequence[Sequence[float | None]],
    rate: float,
) -> tuple[float, float, list[int]]:
    """All layers in a row, each escalating about `rate` of the answers it sees (its lowest
    scores), as `targetRate` does: (accuracy, cost relative to always-last, answering layer of
    each question). `ok[layer][q]`; the last layer's scores are unused."""
    n, last = len(ok[0]), len(ok) - 1
    full = sum(cost[last]) or 1.0
    seeing = list(range(n))
    answered = [last] * n
    for layer in range(last):
        order = sorted(seeing, key=lambda q: (scores[layer][q] is None, scores[layer][q] or 0.0))
        up = set(order[: round(rate * len(seeing))])
        for q in seeing:
            if q not in up:
                answered[q] = layer
        seeing = [q for q in seeing if q in up]
    accuracy = sum(ok[answered[q]][q] for q in range(n)) / n
    spent = sum(cost[layer][q] for q in range(n) for layer in range(answered[q] + 1))
    return accuracy, spent / full, answered


def goals(points: Sequence[Point], strong: float) -> dict[str, object]:
    """The issue's goal figures for one curve."""
    beats = {
        f"{r:.1f}": at(points, r).accuracy - random_line(points, r).accuracy for r in GOAL_RATES
    }
    best_low = max((p for p in points if p.rate <= 0.3 + 1e-9), key=lambda p: p.accuracy)
    return {
        "apgr": apgr(points),
        "gainOverRandomAt": beats,
        "beatsRandomFrom10To50": all(v > 0 for v in beats.values()),
        "bestAccuracyAtOrBelow30": best_low.accuracy,
        "itsRate": best_low.rate,
        "within5PointsOfStrongAtOrBelow30": best_low.accuracy >= strong - 0.05,
    }
