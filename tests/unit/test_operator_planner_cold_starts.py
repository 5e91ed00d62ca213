"""The planner with idle policies and warm schedules: pre-warms, learned sleeps, schedules and
the budget, with an explicit clock; and the status that keeps what the policy learned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from onion_contract.spec import parse_spec
from onion_contract.status import OnionStatus
from onion_operator.idle import History
from onion_operator.planner import ADAPTIVE, SCHEDULE, Observed, Sleep, Wake, plan
from onion_operator.status import StatusInput, build_status, finished_wakes, learned

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)  # a Wednesday
UP = Observed(replicas=1, ready_replicas=1, current_replicas=1)
DOWN = Observed(replicas=0)
# A batch every 10 minutes (give or take 20 s), and a 45 s cold start: learned.
PERIODIC = History(tuple([580.0, 590.0, 600.0, 610.0, 620.0] * 4), (45.0,))


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def spec_of(*layers: dict[str, Any], **extra: Any) -> Any:
    return parse_spec("o", {"core": {"model": "small"}, "layers": list(layers), **extra})


ADAPTIVE_MID = {"name": "mid", "model": "m", "idleTimeout": "30m", "idlePolicy": "adaptive"}
ADAPTIVE_BIG = {**ADAPTIVE_MID, "name": "big"}


def test_adaptive_sleeps_before_idle_timeout_and_says_why() -> None:
    result = plan(spec_of(ADAPTIVE_MID), {"mid": UP}, {"mid": ago(60)}, NOW, {"mid": PERIODIC})
    assert result.replicas == {"mid": 0}
    (sleep,) = result.actions
    assert isinstance(sleep, Sleep) and sleep.cause == "idle"
    assert "adaptive keep-alive 9s" in sleep.reason and "20 idle gaps" in sleep.reason
    # Asleep, it comes back at the pre-warm: a deadline of its own.
    pre = [d for d in result.deadlines if d.reason == ADAPTIVE]
    assert pre and pre[0].at == ago(60) + timedelta(seconds=530.5)


def test_adaptive_pre_warms_before_the_expected_demand() -> None:
    spec = spec_of(ADAPTIVE_MID)
    early = plan(spec, {"mid": DOWN}, {"mid": ago(530)}, NOW, {"mid": PERIODIC})
    assert early.replicas == {"mid": 0} and early.actions == ()
    result = plan(spec, {"mid": DOWN}, {"mid": ago(531)}, NOW, {"mid": PERIODIC})
    assert result.replicas == {"mid": 1}
    (wake,) = result.actions
    assert isinstance(wake, Wake) and wake.cause == "prewarm"
    assert wake.reason.startswith("pre-warm: last demand 531s ago; awake 530.5-620s")
    # The window's end is the next deadline; past it the layer sleeps again, saying so.
    assert result.next_deadline() is not None
    assert result.next_deadline().at == ago(531) + timedelta(seconds=620)  # type: ignore[union-attr]
    late = plan(spec, {"mid": UP}, {"mid": ago(620)}, NOW, {"mid": PERIODIC})
    (sleep,) = late.actions
    assert isinstance(sleep, Sleep) and sleep.cause == "prewarm"
    assert "pre-warm window 530.5-620s ended without demand" in sleep.reason


def test_without_history_adaptive_is_the_fixed_policy() -> None:
    spec = spec_of(ADAPTIVE_MID)
    assert plan(spec, {"mid": UP}, {"mid": ago(1799)}, NOW).replicas == {"mid": 1}
    assert plan(spec, {"mid": UP}, {"mid": ago(1800)}, NOW).replicas == {"mid": 0}


def test_a_pre_warm_takes_only_a_free_slot_of_the_budget() -> None:
    spec = spec_of(ADAPTIVE_MID, ADAPTIVE_BIG, maxAwakeLayers=1)
    history = {"mid": PERIODIC, "big": History()}
    # big is awake (recent demand, not in use): mid's pre-warm does not evict it.
    result = plan(spec, {"mid": DOWN, "big": UP}, {"mid": ago(540), "big": ago(30)}, NOW, history)
    assert result.replicas == {"mid": 0, "big": 1} and result.actions == ()
    # With the slot free it wakes.
    free = plan(spec, {"mid": DOWN, "big": DOWN}, {"mid": ago(540), "big": ago(30)}, NOW, history)
    assert free.replicas == {"mid": 1, "big": 0}
    # And a real demand for big evicts the pre-warmed mid first.
    need = plan(spec, {"mid": UP, "big": DOWN}, {"mid": ago(540), "big": ago(1)}, NOW, history)
    assert need.replicas == {"mid": 0, "big": 1}
    assert any(isinstance(a, Sleep) and a.cause == "budget" for a in need.actions)


def test_a_warm_schedule_keeps_a_layer_awake_and_then_lets_it_sleep() -> None:
    layer = {
        "name": "mid",
        "model": "m",
        "idleTimeout": "60s",
        "warmSchedule": [{"cron": "0 11 * * 1-5", "duration": "2h"}],
    }
    spec = spec_of(layer)
    result = plan(spec, {"mid": DOWN}, {"mid": None}, NOW)
    assert result.replicas == {"mid": 1}
    (wake,) = result.actions
    assert isinstance(wake, Wake) and wake.cause == "schedule"
    assert "warm schedule '0 11 * * 1-5' for 7200s (UTC) until 2026-11-25 13:00 UTC" in wake.reason
    assert [(d.at, d.reason) for d in result.deadlines] == [
        (datetime(2026, 11, 25, 13, 0, tzinfo=UTC), SCHEDULE)
    ]
    # Old demand does not matter while it is scheduled; after the window it sleeps as usual.
    assert plan(spec, {"mid": UP}, {"mid": ago(3600)}, NOW).replicas == {"mid": 1}
    after = NOW + timedelta(hours=1, seconds=1)
    done = plan(spec, {"mid": UP}, {"mid": ago(3600)}, after)
    (sleep,) = done.actions
    assert isinstance(sleep, Sleep) and "outside its warm schedule" in sleep.reason
    # Tomorrow's window (11:00, less the measured cold start) is the next deadline.
    history = {"mid": History((), (100.0,))}
    asleep = plan(spec, {"mid": DOWN}, {"mid": ago(3600)}, after, history)
    assert asleep.next_deadline() is not None
    assert asleep.next_deadline().at == datetime(  # type: ignore[union-attr]
        2026, 11, 26, 11, 0, tzinfo=UTC
    ) - timedelta(seconds=110)


def status_after(spec: Any, previous: dict[str, Any], demand: Any, mid: Observed) -> Any:
    history = learned(spec, previous, demand)
    the_plan = plan(spec, {"mid": mid}, demand, NOW, history)
    observed = {"core": UP, "mid": mid}
    status = build_status(
        StatusInput(spec, "o", "ns", 1, observed, demand, the_plan, previous, NOW, history)
    )
    OnionStatus.model_validate(status)  # what the policy learned fits the CRD's status schema
    return status


def test_the_status_keeps_what_the_policy_learned_across_passes() -> None:
    spec = spec_of(ADAPTIVE_MID)
    first = status_after(spec, {}, {"mid": ago(400)}, DOWN)
    mid = first["layers"][1]
    assert mid["idle"]["gaps"] == [] and mid["idle"]["policy"] == "adaptive"
    assert mid["idle"]["keepAliveSeconds"] == 1800  # no history: the fixed idleTimeout
    # Demand comes back 400 s later: one gap learned, kept in the status for the next pass
    # (or the next operator).
    second = status_after(spec, first, {"mid": NOW}, DOWN)
    assert second["layers"][1]["idle"]["gaps"] == [400.0]
    # A renewal 3 s later is the same busy period: nothing more.
    third = status_after(spec, second, {"mid": NOW + timedelta(seconds=3)}, DOWN)
    assert third["layers"][1]["idle"]["gaps"] == [400.0]


def test_a_finished_wake_is_a_measured_cold_start_for_the_policy_and_the_histogram() -> None:
    spec = spec_of(ADAPTIVE_MID)
    woken = Observed(replicas=1, ready_replicas=1, current_replicas=1, woken_at=ago(41.5))
    before = status_after(spec, {}, {"mid": ago(42)}, Observed(replicas=1, woken_at=ago(41.5)))
    status = status_after(spec, before, {"mid": ago(42)}, woken)
    assert status["layers"][1]["idle"]["coldStarts"] == [41.5]
    assert finished_wakes(before, status) == [41.5]
    assert History.from_status(status["layers"][1]).cold_starts == (41.5,)
