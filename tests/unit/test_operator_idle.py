"""The adaptive idle policy (idle.py): what it learns and the windows it decides, no clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from onion_operator.idle import History, Params, busy_gap, decide, learn_gap

BUSY = busy_gap(3.0)
IDLE_TIMEOUT = 1800.0


def history(gaps: list[float], cold: float | None = 45.0) -> History:
    return History(tuple(gaps), () if cold is None else (cold,))


@pytest.mark.parametrize(
    ("previous", "latest", "gaps"),
    [
        (None, 100.0, ()),  # first demand ever: no gap yet
        (100.0, 100.0, ()),  # nothing new
        (100.0, 103.0, ()),  # a renewal of the same busy period
        (100.0, 100.0 + BUSY, ()),  # exactly three renewals apart: still busy
        (100.0, 160.0, (60.0,)),  # demand came back after a minute's pause
        (100.0, None, ()),  # the Lease lost its renewTime
    ],
)
def test_a_gap_is_learned_only_when_demand_comes_back_after_a_pause(
    previous: float | None, latest: float | None, gaps: tuple[float, ...]
) -> None:
    assert learn_gap(History(), previous, latest, BUSY, keep=64).gaps == gaps


def test_history_keeps_only_the_newest_gaps_and_cold_starts() -> None:
    h = History()
    for i in range(100):
        h = h.with_gap(float(i + 10), keep=64).with_cold_start(float(i), keep=64)
    assert len(h.gaps) == 64 and h.gaps[-1] == 109.0 and h.gaps[0] == 46.0
    assert h.cold_starts == tuple(float(i) for i in range(92, 100))  # history // 8


def test_history_round_trips_through_status_and_drops_what_is_malformed() -> None:
    h = History((12.5, 300.0), (41.2,))
    assert History.from_status({"idle": h.to_status()}) == h
    bad = {"idle": {"gaps": [1.0, "x", -3, None, 2], "coldStarts": "oops"}}
    assert History.from_status(bad) == History((1.0, 2.0), ())
    assert History.from_status(None) == History()


def test_without_a_measured_cold_start_it_is_the_fixed_policy() -> None:
    window = decide(history([30.0] * 40, cold=None), Params(), IDLE_TIMEOUT, BUSY)
    assert window.keep_alive == IDLE_TIMEOUT and window.prewarm_from is None
    assert "no cold start measured" in window.basis


def test_with_a_thin_history_it_is_its_fixed_fallback_timeout() -> None:
    window = decide(history([30.0, 40.0, 50.0]), Params(), IDLE_TIMEOUT, BUSY)
    assert window.keep_alive == IDLE_TIMEOUT and window.prewarm_from is None
    assert "3 idle gaps" in window.basis
    five = decide(history([30.0, 40.0, 50.0]), Params(), 300.0, BUSY)
    assert five.keep_alive == 300.0


def replay_gaps(gaps: list[float], keep_alive: Callable[[History], float]) -> int:
    """Cold starts of one layer over these idle gaps, learning them one by one."""
    h, colds = history([]), 0
    for gap in gaps:
        colds += gap >= keep_alive(h)
        h = h.with_gap(gap, keep=64)
    return colds


def test_where_its_history_is_thin_it_is_no_worse_than_its_fallback_timeout() -> None:
    # The code trace's pattern while a layer learns: pauses of 2-4 minutes between bursts. The
    # break-even keep-alive of a 45 s cold start (105-150 s here) slept through most of them;
    # adaptive with idleTimeout 5m now takes exactly the cold starts of a fixed 5 minutes
    # until it has learned minSamples gaps, and no more than the break-even would have.
    gaps = [120.0, 200.0, 150.0, 230.0, 180.0, 210.0, 130.0, 190.0, 320.0, 100.0]
    params = Params()

    def adaptive(h: History) -> float:
        return decide(h, params, 300.0, BUSY).keep_alive

    def break_even(h: History) -> float:
        waiting = 1 + 45 / (sum(h.gaps) / len(h.gaps)) if h.gaps else 1.0
        return 45 + 60 * waiting

    assert replay_gaps(gaps, adaptive) == replay_gaps(gaps, lambda _: 300.0) == 1
    assert replay_gaps(gaps, break_even) == 9
