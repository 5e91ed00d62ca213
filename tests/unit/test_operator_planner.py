"""The planner: wake, sleep, warm minimum and GPU budget, with an explicit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from onion_contract.spec import parse_spec
from onion_operator.planner import (
    Hold,
    Observed,
    Sleep,
    Wake,
    lease_demand,
    observe_deployment,
    plan,
    wake_deadline,
)

NOW = datetime(2026, 11, 28, 18, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def spec_of(*layers: dict[str, Any], **extra: Any) -> Any:
    return parse_spec("o", {"core": {"model": "small"}, "layers": list(layers), **extra})


MID = {"name": "mid", "model": "m", "idleTimeout": "60s"}
BIG = {"name": "big", "model": "b", "idleTimeout": "60s"}
REMOTE = {"name": "remote", "endpoint": "https://example.com/v1"}
UP = Observed(replicas=1, ready_replicas=1, current_replicas=1)
DOWN = Observed(replicas=0)


@pytest.mark.parametrize(
    ("name", "observed", "demand", "replicas", "actions"),
    [
        ("no demand stays dormant", {"mid": DOWN}, {"mid": None}, 0, []),
        (
            "fresh demand wakes",
            {"mid": DOWN},
            {"mid": ago(0.2)},
            1,
            [Wake("mid", "demand recorded")],
        ),
        ("demand just inside idleTimeout still counts", {"mid": UP}, {"mid": ago(59.999)}, 1, []),
        (
            "demand exactly idleTimeout old has run out",
            {"mid": UP},
            {"mid": ago(60)},
            0,
            [Sleep("mid", "idle: last demand 60s ago, idleTimeout 60s")],
        ),
        (
            "stale demand sleeps",
            {"mid": UP},
            {"mid": ago(61)},
            0,
            [Sleep("mid", "idle: last demand 61s ago, idleTimeout 60s")],
        ),
        (
            "never any demand sleeps",
            {"mid": UP},
            {},
            0,
            [Sleep("mid", "idle: last demand never, idleTimeout 60s")],
        ),
        ("old demand does not wake a dormant layer", {"mid": DOWN}, {"mid": ago(3600)}, 0, []),
        ("deployment not yet created", {}, {"mid": ago(1)}, 1, [Wake("mid", "demand recorded")]),
    ],
)
def test_idle_and_wake(name: str, observed: Any, demand: Any, replicas: int, actions: Any) -> None:
    result = plan(spec_of(MID), observed, demand, NOW)
    assert result.replicas == {"mid": replicas}, name
    assert list(result.actions) == actions, name


def test_warm_minimum_keeps_a_layer_awake_without_demand() -> None:
    result = plan(spec_of({**MID, "minReplicas": 1}), {"mid": DOWN}, {}, NOW)
    assert result.replicas == {"mid": 1}
    assert result.wakes() == (Wake("mid", "warm minimum", "warm"),)
    assert (
        plan(spec_of({**MID, "minReplicas": 1}), {"mid": UP}, {"mid": ago(9999)}, NOW).actions == ()
    )


def test_external_layers_are_never_planned() -> None:
    result = plan(spec_of(MID, REMOTE), {"mid": DOWN}, {"remote": ago(1)}, NOW)
    assert result.replicas == {"mid": 0}
    assert result.actions == ()


BUDGET = {"maxAwakeLayers": 1, "evictionGracePeriod": "5s"}


def test_budget_evicts_least_recently_used_idle_layer() -> None:
    result = plan(
        spec_of(MID, BIG, **BUDGET),
        {"mid": UP, "big": DOWN},
        {"mid": ago(30), "big": ago(0.1)},
        NOW,
    )
    assert result.replicas == {"mid": 0, "big": 1}
    assert set(result.actions) == {
        Wake("big", "demand recorded"),
        Sleep("mid", "least recently used; maxAwakeLayers=1", "budget"),
    }


def test_budget_never_evicts_a_layer_in_use() -> None:
    result = plan(
        spec_of(MID, BIG, **BUDGET), {"mid": UP, "big": DOWN}, {"mid": ago(2), "big": ago(0.1)}, NOW
    )
    assert result.replicas == {"mid": 1, "big": 0}
    assert result.holds() == (Hold("big", "maxAwakeLayers=1 reached; all awake layers are in use"),)
    assert result.wakes() == () and result.sleeps() == ()


def test_budget_picks_the_oldest_demand_among_several() -> None:
    third = {"name": "third", "model": "t", "idleTimeout": "60s"}
    spec = spec_of(MID, BIG, third, maxAwakeLayers=2, evictionGracePeriod="5s")
    result = plan(
        spec,
        {"mid": UP, "big": UP, "third": DOWN},
        {"mid": ago(20), "big": ago(40), "third": ago(0)},
        NOW,
    )
    assert result.replicas == {"mid": 1, "big": 0, "third": 1}


def test_budget_most_recent_newcomer_first_when_two_want_one_slot() -> None:
    result = plan(
        spec_of(MID, BIG, **BUDGET), {"mid": DOWN, "big": DOWN}, {"mid": ago(2), "big": ago(1)}, NOW
    )
    assert result.replicas == {"mid": 0, "big": 1}
    assert [type(a) for a in result.actions] == [Wake, Hold]


def test_lowered_budget_sleeps_lru_but_keeps_warm() -> None:
    spec = spec_of({**MID, "minReplicas": 1}, BIG, {"name": "c", "model": "c"}, **BUDGET)
    result = plan(
        spec, {"mid": UP, "big": UP, "c": UP}, {"mid": ago(50), "big": ago(30), "c": ago(20)}, NOW
    )
    assert result.replicas == {"mid": 1, "big": 0, "c": 0}


def test_idle_sleep_frees_a_slot_for_a_newcomer() -> None:
    result = plan(
        spec_of(MID, BIG, **BUDGET), {"mid": UP, "big": DOWN}, {"mid": ago(120), "big": ago(0)}, NOW
    )
    assert result.replicas == {"mid": 0, "big": 1}
    assert Sleep("mid", "idle: last demand 120s ago, idleTimeout 60s") in result.actions


def test_observe_deployment_and_lease() -> None:
    obs = observe_deployment(
        {
            "metadata": {
                "annotations": {
                    "onion.dev/woken-at": "2026-11-28T17:59:58.500000Z",
                    "onion.dev/wake-count": "3",
                }
            },
            "spec": {"replicas": 1},
            "status": {
                "replicas": 1,
                "readyReplicas": 1,
                "conditions": [
                    {
                        "type": "ReplicaFailure",
                        "status": "True",
                        "reason": "FailedCreate",
                        "message": "quota",
                    }
                ],
            },
        }
    )
    assert obs == Observed(
        replicas=1,
        ready_replicas=1,
        current_replicas=1,
        woken_at=ago(1.5),
        wake_count=3,
        failure="FailedCreate: quota",
    )
    assert lease_demand({"spec": {"renewTime": "2026-11-28T17:59:59.000000Z"}}) == ago(1)
    assert lease_demand({"spec": {}}) is None
    assert lease_demand({"spec": {"renewTime": "garbage"}}) is None


def test_budget_does_not_rewake_an_evicted_layer_without_new_demand() -> None:
    """Two layers with demand inside their idle timeout but nobody waiting must not evict each
    other on every pass (found by bench/idle_policy.py replaying a real trace)."""
    spec = spec_of(MID, BIG, **BUDGET)
    demand = {"mid": ago(30), "big": ago(40)}
    observed = {"mid": UP, "big": DOWN}
    for second in range(5):
        result = plan(spec, observed, demand, NOW + timedelta(seconds=second))
        assert result.replicas == {"mid": 1, "big": 0}
        assert result.wakes() == () and result.sleeps() == ()


def test_budget_is_stable_under_replay_and_serves_held_requests() -> None:
    """Replaying the plan with its own output: a newcomer with a held request gets the slot once."""
    spec = spec_of(MID, BIG, **BUDGET)
    observed = {"mid": UP, "big": DOWN}
    wakes = 0
    for second in range(30):
        now = NOW + timedelta(seconds=second)
        # A request for big is held and renewed every 3 s; mid was last used 40 s before NOW.
        demand = {"mid": ago(40), "big": now - timedelta(seconds=second % 3)}
        result = plan(spec, observed, demand, now)
        wakes += len(result.wakes())
        observed = {n: Observed(replicas=r) for n, r in result.replicas.items()}
    assert observed["big"].replicas == 1 and observed["mid"].replicas == 0
    assert wakes == 1


WAKING = Observed(replicas=1, woken_at=ago(10))  # no Ready pod yet; wakeTimeout 600s by default
WARM = {**MID, "minReplicas": 1}


@pytest.mark.parametrize(
    ("name", "layers", "extra", "observed", "demand", "deadlines"),
    [
        ("asleep without demand: only events", [MID], {}, {"mid": DOWN}, {}, []),
        ("asleep, old demand: nothing falls due", [MID], {}, {"mid": DOWN}, {"mid": ago(600)}, []),
        (
            "awake: sleeps when the idle timeout runs out",
            [MID],
            {},
            {"mid": UP},
            {"mid": ago(20)},
            [(40, "mid", "idle timeout")],
        ),
        (
            "woken this pass: its idle timeout counts from the demand",
            [MID],
            {},
            {"mid": DOWN},
            {"mid": ago(0.5)},
            [(59.5, "mid", "idle timeout")],
        ),
        ("warm: never falls asleep", [WARM], {}, {"mid": UP}, {"mid": ago(20)}, []),
        (
            "waking: fails at wakeTimeout, sleeps at idleTimeout",
            [{**MID, "idleTimeout": "20m"}],
            {},
            {"mid": WAKING},
            {"mid": ago(10)},
            [(590, "mid", "wake timeout"), (1190, "mid", "idle timeout")],
        ),
        (
            "two layers: each its own, earliest first",
            [MID, BIG],
            {},
            {"mid": UP, "big": UP},
            {"mid": ago(50), "big": ago(5)},
            [(10, "mid", "idle timeout"), (55, "big", "idle timeout")],
        ),
        (
            "budget without anyone waiting: no grace deadlines",
            [MID, BIG],
            BUDGET,
            {"mid": UP, "big": DOWN},
            {"mid": ago(2)},
            [(58, "mid", "idle timeout")],
        ),
        (
            "held for the budget: plan again when the awake layer is no longer in use",
            [MID, BIG],
            BUDGET,
            {"mid": UP, "big": DOWN},
            {"mid": ago(2), "big": ago(1)},
            [
                (3, "mid", "eviction grace period"),
                (4, "big", "eviction grace period"),
                (58, "mid", "idle timeout"),
            ],
        ),
    ],
)
def test_deadlines(
    name: str, layers: Any, extra: Any, observed: Any, demand: Any, deadlines: Any
) -> None:
    result = plan(spec_of(*layers, **extra), observed, demand, NOW)
    got = [(round((d.at - NOW).total_seconds(), 3), d.layer, d.reason) for d in result.deadlines]
    assert got == deadlines, name
    first = result.next_deadline()
    assert (first.at if first else None) == (result.deadlines[0].at if deadlines else None)


def test_at_its_deadline_the_plan_has_changed() -> None:
    """Planning again exactly at the next deadline acts; there is no second pass a hair later."""
    spec = spec_of(MID)
    first = plan(spec, {"mid": UP}, {"mid": ago(20)}, NOW)
    deadline = first.next_deadline()
    assert deadline is not None
    again = plan(spec, {"mid": UP}, {"mid": ago(20)}, deadline.at)
    assert again.sleeps() and again.next_deadline() is None


def test_a_wake_timing_out_is_a_deadline_of_the_status_too() -> None:
    spec = spec_of(MID)
    deadlines = plan(spec, {"mid": WAKING}, {"mid": ago(10)}, NOW).deadlines
    assert [d.at for d in deadlines if d.reason == "wake timeout"] == [wake_deadline(WAKING, 600)]
    assert wake_deadline(UP, 600) is None  # Ready: nothing to time out
    assert wake_deadline(DOWN, 600) is None
