"""The wake simulator shared by the idle-policy replay and the bargain: trips through layers that
the operator's planner wakes and puts to sleep, on hand-made timelines."""

from __future__ import annotations

import pytest

from onion_contract.spec import parse_spec
from onion_lab import wake_sim

SPEC = {
    "core": {"model": "core"},
    "layers": [
        {"name": "mid", "model": "mid", "idleTimeout": "5m"},
        {"name": "big", "model": "big", "idleTimeout": "5m"},
    ],
}
COLD = {"mid": 60.0, "big": 200.0}


def run(trips: list[wake_sim.Trip], horizon: float = 2000) -> wake_sim.Outcome:
    return wake_sim.run(parse_spec("t", SPEC), trips, COLD, horizon)


def test_a_request_to_a_sleeping_layer_waits_for_its_cold_start_and_it_sleeps_after() -> None:
    out = run([wake_sim.Trip(10.0, (("big", 20.0),))])
    assert out.waits == [pytest.approx(200.0)]  # woken at once, ready 200 s later
    assert out.latencies == [pytest.approx(220.0)]
    big = out.layers["big"]
    assert big.wakes == 1
    # Awake from the wake (10 s) to idleTimeout after the last renewal (the answer's end, 230 s).
    assert big.up_seconds == pytest.approx(230 + 300 - 10, abs=2)
    assert out.layers["mid"].up_seconds == 0


def test_an_escalation_reaches_the_next_layer_after_the_core_and_the_wait_adds_up() -> None:
    out = run([wake_sim.Trip(0.0, (("core", 5.0), ("mid", 10.0), ("big", 10.0)))])
    # mid is asked at 5 s, woken at 5, ready at 65; big asked at 75, ready at 275.
    assert out.waits == [pytest.approx(60.0 + 200.0, abs=1.0)]
    assert out.latencies[0] == pytest.approx(285.0, abs=1.0)


def test_an_early_wake_starts_the_cold_start_while_the_core_answers() -> None:
    late = run([wake_sim.Trip(0.0, (("core", 30.0), ("mid", 10.0)))])
    early = run([wake_sim.Trip(0.0, (("core", 30.0), ("mid", 10.0)), early="mid")])
    assert late.waits[0] == pytest.approx(60.0, abs=1.0)
    assert early.waits[0] == pytest.approx(30.0, abs=1.0)


def test_a_warm_layer_serves_at_once_and_demand_keeps_it_awake() -> None:
    trips = [wake_sim.Trip(float(t), (("mid", 5.0),)) for t in range(0, 600, 60)]
    out = run(trips, horizon=1200)
    assert out.waits[0] > 0 and all(w == 0 for w in out.waits[1:])
    assert out.layers["mid"].wakes == 1
