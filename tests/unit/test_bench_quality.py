"""The bargain's arithmetic in `make bench-quality` (curves, random line, APGR, cascade) and its
graders, on small hand-made cases."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


curves = _load("quality_curves")
data = _load("quality_data")


def test_a_perfect_signal_recovers_most_of_the_gap_and_random_half() -> None:
    weak = [True, False, False, False]
    strong = [True, True, True, False]
    cost_w, cost_s = [1.0] * 4, [10.0] * 4
    perfect = curves.pair_curve(weak, strong, cost_w, cost_s, [0.9, 0.1, 0.2, 0.8])
    assert [round(p.accuracy, 2) for p in perfect] == [0.25, 0.5, 0.75, 0.75, 0.75]
    assert curves.apgr(perfect) == pytest.approx(0.75)  # trapezoids of PGR 0, .5, 1, 1, 1
    # A signal that knows nothing (all equal) is random escalation: APGR 0.5 exactly.
    flat = curves.pair_curve(weak, strong, cost_w, cost_s, [0.5] * 4)
    assert curves.apgr(flat) == pytest.approx(0.5)
    assert curves.at(flat, 0.5).accuracy == pytest.approx(curves.random_line(flat, 0.5).accuracy)
    # Cost: escalated answers pay for both layers, relative to always-strong.
    assert perfect[0].cost == pytest.approx(0.1) and perfect[-1].cost == pytest.approx(1.1)


def test_random_signals_average_to_the_random_line() -> None:
    rng = random.Random(3)
    weak = [rng.random() < 0.2 for _ in range(400)]
    strong = [rng.random() < 0.6 for _ in range(400)]
    ones = [1.0] * 400
    values = [
        curves.apgr(curves.pair_curve(weak, strong, ones, ones, [rng.random() for _ in weak]))
        for _ in range(20)
    ]
    assert sum(values) / len(values) == pytest.approx(0.5, abs=0.03)


def test_no_gap_no_apgr_and_the_goal_figures() -> None:
    same = curves.pair_curve([True, False], [True, False], [1, 1], [1, 1], [0.1, 0.2])
    assert curves.apgr(same) is None
    weak, strong = [False] * 10, [True] * 3 + [False] * 7
    good = curves.pair_curve(weak, strong, [1] * 10, [1] * 10, [0, 0, 0.1, *[1] * 7])
    figures = curves.goals(good, 0.3)
    assert figures["beatsRandomFrom10To50"] and figures["within5PointsOfStrongAtOrBelow30"]
    assert figures["itsRate"] == pytest.approx(0.3)


def test_self_is_one_point_joined_to_both_ends() -> None:
    points = curves.binary_curve([False, True], [True, True], [1, 1], [2, 2], [True, False])
    assert [(p.rate, p.accuracy) for p in points] == [(0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]


def test_cascade_escalates_its_rate_at_each_layer() -> None:
    ok = [[True, False, False, False], [True, True, False, False], [True, True, True, True]]
    cost = [[1.0] * 4, [2.0] * 4, [4.0] * 4]
    scores = [[0.9, 0.1, 0.2, 0.3], [0.9, 0.9, 0.1, 0.2], [None] * 4]
    accuracy, spent, answered = curves.cascade(ok, cost, scores, 0.5)
    # The core escalates its two lowest (q1, q2); mid escalates one of those two (q2).
    assert answered == [0, 1, 2, 0]
    assert accuracy == pytest.approx(0.75)
    assert spent == pytest.approx((4 * 1 + 2 * 2 + 1 * 4) / 16)


@pytest.mark.parametrize(
    ("text", "gold", "right"),
    [
        ("3 * 6 = 18\nAnswer: 18", "18", True),
        ("Answer: 1,234.", "1234", True),
        ("It is 7 or maybe 9", "9", True),
        ("Answer: 17 apples, not 18", "18", False),
        ("no idea", "18", False),
    ],
)
def test_gsm8k_grades_the_final_number(text: str, gold: str, right: bool) -> None:
    item = data.Item("q", "?", gold, {"gold": gold})
    assert data.gsm8k_grade(item, text) is right


def test_humaneval_runs_the_tests_in_a_subprocess_with_a_timeout() -> None:
    item = data.Item(
        "HumanEval-x",
        "",
        "",
        {
            "prompt": 'def add(a, b):\n    """Add."""\n',
            "test": "def check(f):\n    assert f(2, 3) == 5\n",
            "entry_point": "add",
        },
    )
    assert data.humaneval_grade(item, "```python\ndef add(a, b):\n    return a + b\n```")
    assert data.humaneval_grade(item, "    return a + b\n")  # a body only
    assert not data.humaneval_grade(item, "```python\ndef add(a, b):\n    return a - b\n```")
    assert not data.humaneval_grade(
        item, "```python\ndef add(a, b):\n    while True: pass\n```", timeout=1
    )


def test_boolq_reads_the_first_word() -> None:
    item = data.Item("b", "?", "yes", {"gold": "yes"})
    assert data.boolq_grade(item, "Yes.") and not data.boolq_grade(item, "No, yes")
