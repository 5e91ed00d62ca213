"""The adaptive idle policy (idle.py): what it learns and the windows it decides, no clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from onion_operator.idle import History, Params, Window, busy_gap, decide, learn_gap

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


def test_with_a_thin_history_it_stays_awake_for_twice_the_break_even_time() -> None:
    # 3 gaps of 40 s mean: a 45 s cold start makes 1 + 45/40 requests wait, each worth 60 s;
    # doubled, as a learned keep-alive is.
    window = decide(history([30.0, 40.0, 50.0]), Params(), IDLE_TIMEOUT, BUSY)
    assert window.keep_alive == pytest.approx(2 * (45 + 60 * (1 + 45 / 40)))
    assert "break-even" in window.basis
    capped = decide(history([30.0, 40.0, 50.0]), Params(), 60.0, BUSY)
    assert capped.keep_alive == 60.0  # never longer than idleTimeout


def replay_gaps(gaps: list[float], keep_alive: Callable[[History], float]) -> int:
    """Cold starts of one layer over these idle gaps, learning them one by one."""
    h, colds = history([]), 0
    for gap in gaps:
        colds += gap >= keep_alive(h)
        h = h.with_gap(gap, keep=64)
    return colds


def test_where_its_history_is_thin_it_is_no_worse_than_its_fallback_timeout() -> None:
    # The code trace's pattern while a layer learns: pauses of 2-4 minutes between bursts. The
    # plain break-even of a 45 s cold start (105-150 s here) slept through most of them;
    # adaptive now takes fewer cold starts than a fixed timeout of that break-even.
    gaps = [120.0, 200.0, 150.0, 230.0, 180.0, 210.0, 130.0, 190.0]
    params = Params()

    def adaptive(h: History) -> float:
        return decide(h, params, IDLE_TIMEOUT, BUSY).keep_alive

    first = history(gaps[:1])
    break_even = 45 + 60 * (1 + 45 / gaps[0])
    assert decide(first, params, IDLE_TIMEOUT, BUSY).keep_alive >= break_even
    assert replay_gaps(gaps, adaptive) < replay_gaps(gaps, lambda _: break_even)
    assert replay_gaps(gaps, adaptive) <= replay_gaps(gaps, lambda _: 300.0)


def test_short_gaps_keep_the_layer_awake_past_the_longest_one() -> None:
    gaps = [10.0, 20.0, 30.0, 40.0] * 5  # sleeping through any of them never pays
    window = decide(history(gaps), Params(), IDLE_TIMEOUT, BUSY)
    assert window.keep_alive == pytest.approx(80.0)  # the longest gap, doubled
    assert window.awake(79.0) and not window.awake(80.0)


def test_gaps_much_longer_than_a_cold_start_put_the_layer_to_sleep_at_once() -> None:
    # Bursts 3 h apart: an idle GPU for 3 h costs far more than one 45 s cold start.
    gaps = [10800.0] * 20
    window = decide(history(gaps), Params(prewarm=False), IDLE_TIMEOUT, BUSY)
    assert window.keep_alive == BUSY  # never less than three renewals


def test_a_higher_cold_start_cost_keeps_the_layer_awake_longer() -> None:
    gaps = [20.0] * 10 + [300.0] * 6
    cheap = decide(history(gaps), Params(cold_start_cost=5), IDLE_TIMEOUT, BUSY)
    dear = decide(history(gaps), Params(cold_start_cost=600), IDLE_TIMEOUT, BUSY)
    assert cheap.keep_alive == pytest.approx(40.0)  # sleeps through the 300 s gaps
    assert dear.keep_alive == pytest.approx(600.0)  # waits for them


def test_periodic_demand_is_pre_warmed_before_it_comes() -> None:
    # A batch every 10 minutes, give or take 20 s; a 45 s cold start.
    gaps = [580.0, 590.0, 600.0, 610.0, 620.0] * 4
    window = decide(history(gaps), Params(), IDLE_TIMEOUT, BUSY)
    assert window.keep_alive < 100  # asleep in between...
    assert window.prewarm_from is not None and window.prewarm_until is not None
    assert window.prewarm_from <= 580 - 45  # ...Ready before the earliest one...
    assert window.prewarm_until >= 610  # ...and awake until (nearly) the last
    assert not window.awake(300.0) and window.awake(560.0)
    assert "pre-warm" in window.basis
    plain = decide(history(gaps), Params(prewarm=False), IDLE_TIMEOUT, BUSY)
    assert plain.prewarm_from is None


def test_no_pre_warm_when_the_next_demand_is_not_predictable() -> None:
    gaps = [100.0 * (i + 1) for i in range(20)]  # 100 s to 2000 s, evenly
    window = decide(history(gaps), Params(), IDLE_TIMEOUT, BUSY)
    assert window.prewarm_from is None


def test_window_changes_lists_every_age_where_awake_flips() -> None:
    assert Window(60.0).changes() == (60.0,)
    assert Window(60.0, 500.0, 700.0).changes() == (60.0, 500.0, 700.0)
