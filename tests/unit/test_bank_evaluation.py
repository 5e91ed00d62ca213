"""The bargain's statistics (onion_lab.evaluation) on small hand-made cases: curves, APGR and its
tie, intervals, permutation tests, cuts that split ties, the cascade."""

from __future__ import annotations

import numpy as np
import pytest

from onion_lab import evaluation as ev


def _a(values: list[float]) -> np.ndarray:
    return np.array(values, dtype=float)


def test_a_perfect_signal_recovers_most_of_the_gap_and_a_flat_one_half() -> None:
    weak, strong = _a([1, 0, 0, 0]), _a([1, 1, 1, 0])
    perfect = ev.curve(weak, strong, _a([0.9, 0.1, 0.2, 0.8]))
    assert perfect.round(2).tolist() == [0.25, 0.5, 0.75, 0.75, 0.75]
    assert ev.apgr(weak, strong, _a([0.9, 0.1, 0.2, 0.8])) == pytest.approx(0.75)
    # A signal that knows nothing (all equal) is random escalation: APGR 0.5 exactly.
    assert ev.apgr(weak, strong, _a([0.5] * 4)) == pytest.approx(0.5)
    # No score at all sorts last and ties with itself: the same.
    assert ev.apgr(weak, strong, _a([np.nan] * 4)) == pytest.approx(0.5)


def test_apgr_is_undefined_when_the_layers_tie_even_in_floating_point() -> None:
    weak = _a([1, 0, 1])
    strong = weak + 1e-15  # equal but for rounding: no gap to recover
    assert ev.apgr(weak, strong, _a([0.1, 0.2, 0.3])) is None
    assert ev.apgr(_a([1, 0]), _a([1, 0]), _a([0.1, 0.2])) is None


def test_random_signals_average_to_one_half_and_are_not_significant() -> None:
    rng = np.random.default_rng(3)
    weak = (rng.random(300) < 0.2).astype(float)
    strong = (rng.random(300) < 0.6).astype(float)
    values = [ev.apgr(weak, strong, rng.random(300)) for _ in range(30)]
    assert np.mean(values) == pytest.approx(0.5, abs=0.03)
    p = ev.permutation_p(weak, strong, rng.random(300), samples=300)
    assert p is not None and p > 0.05


def test_an_informative_signal_is_significant_with_an_interval_above_one_half() -> None:
    rng = np.random.default_rng(4)
    n = 200
    weak = (rng.random(n) < 0.3).astype(float)
    strong = np.maximum(weak, (rng.random(n) < 0.7).astype(float))
    scores = weak + rng.normal(0, 0.3, n)  # right answers score higher, noisily
    assert ev.apgr(weak, strong, scores) > 0.55
    interval = ev.bootstrap(ev.apgr, [weak, strong, scores], samples=400)
    assert interval is not None and interval.low > 0.5
    p = ev.permutation_p(weak, strong, scores, samples=400)
    assert p is not None and p < 0.01


def test_a_cut_holds_its_rate_when_scores_tie() -> None:
    # 40% of the scores tie at the value where a 20% cut falls.
    scores = _a([0.1] * 10 + [0.5] * 40 + list(np.linspace(0.6, 1.0, 50)))
    cut = ev.cut_for_rate(scores, 0.2)
    assert cut.threshold == 0.5
    assert cut.escalation(scores).mean() == pytest.approx(0.2)
    assert cut.tie_share == pytest.approx(0.25)
    # No score: never escalated, and a rate of zero escalates nothing.
    assert ev.cut_for_rate(_a([np.nan, 0.3]), 0.5).escalation(_a([np.nan, 0.3])).tolist() == [0, 1]
    assert ev.cut_for_rate(scores, 0.0).escalation(scores).sum() == 0


def test_the_cascade_escalates_each_layers_own_traffic() -> None:
    core = _a([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    mid = _a([0.9, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    cuts = ev.cascade_cuts([core, mid], 0.2)
    answering, visited = ev.cascade_answering([core, mid], cuts)
    assert answering.sum(axis=0).tolist() == pytest.approx([1.0] * 10)
    assert answering[0].sum() == pytest.approx(8)  # the core keeps 80%
    assert visited[1].sum() == pytest.approx(2)  # mid sees the two it escalated
    # mid sends on 20% of its two, from its lowest score: 0.4 of question 1, in expectation
    assert answering[2].tolist()[:2] == pytest.approx([0.0, 0.4])
    assert answering[2].sum() == pytest.approx(0.4)
