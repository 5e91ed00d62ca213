"""Status: layer phases, wake bookkeeping and conditions with observedGeneration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from onion_contract.spec import parse_spec
from onion_contract.status import OnionStatus
from onion_operator.planner import Observed, plan
from onion_operator.status import (
    StatusInput,
    build_status,
    invalid_status,
    layer_phase,
    phase_changes,
)

NOW = datetime(2026, 11, 28, 18, 0, 0, tzinfo=UTC)
SPEC = parse_spec(
    "chat",
    {
        "core": {"model": "s"},
        "layers": [
            {"name": "mid", "model": "m", "wakeTimeout": "60s"},
            {"name": "remote", "endpoint": "https://x.example/v1"},
        ],
    },
)
CORE_UP = Observed(replicas=1, ready_replicas=1, current_replicas=1)


@pytest.mark.parametrize(
    ("obs", "phase"),
    [
        (None, "Dormant"),
        (Observed(replicas=0), "Dormant"),
        (Observed(replicas=0, current_replicas=1), "Draining"),
        (Observed(replicas=1, woken_at=NOW - timedelta(seconds=10)), "Waking"),
        (Observed(replicas=1, woken_at=NOW - timedelta(seconds=59.999)), "Waking"),
        (Observed(replicas=1, woken_at=NOW - timedelta(seconds=60)), "Failed"),  # its deadline
        (Observed(replicas=2, ready_replicas=2, current_replicas=2), "Ready"),  # an HPA's 2
        (Observed(replicas=1, ready_replicas=1, current_replicas=1), "Ready"),
        (Observed(replicas=1, woken_at=NOW - timedelta(seconds=61)), "Failed"),
        (Observed(replicas=1, failure="FailedCreate: quota"), "Failed"),
    ],
)
def test_layer_phase(obs: Observed | None, phase: str) -> None:
    assert layer_phase(obs, 60, NOW)[0] == phase


def status_at(mid: Observed, previous: dict[str, object], now: datetime = NOW) -> dict[str, object]:
    observed = {"core": CORE_UP, "mid": mid}
    demand = {"mid": NOW - timedelta(seconds=5)}
    the_plan = plan(SPEC, observed, demand, now)
    return build_status(
        StatusInput(SPEC, "chat", "ns1", 4, observed, demand, the_plan, previous, now)
    )


def test_status_layers_and_wake_seconds() -> None:
    woken = NOW - timedelta(seconds=3)
    waking = status_at(Observed(replicas=1, woken_at=woken, wake_count=2), {})
    layers = {e["name"]: e for e in waking["layers"]}  # type: ignore[attr-defined]
    assert [e["name"] for e in waking["layers"]] == ["core", "mid", "remote"]  # type: ignore[attr-defined]
    assert layers["mid"]["phase"] == "Waking" and layers["mid"]["wakeCount"] == 2
    assert layers["mid"]["lastDemandTime"] == "2026-11-28T17:59:55.000000Z"
    assert layers["mid"]["endpoint"] == "http://chat-mid.ns1.svc:80"
    assert layers["remote"]["phase"] == "Ready" and layers["remote"]["managed"] is False
    assert "lastWakeSeconds" not in layers["mid"]
    ready_obs = Observed(
        replicas=1, ready_replicas=1, current_replicas=1, woken_at=woken, wake_count=2
    )
    ready = status_at(ready_obs, waking)
    mid = ready["layers"][1]  # type: ignore[index]
    assert mid["phase"] == "Ready" and mid["lastWakeSeconds"] == 3.0
    # Seen again later: the recorded cold start does not grow.
    again = status_at(ready_obs, ready, NOW + timedelta(seconds=30))
    assert again["layers"][1]["lastWakeSeconds"] == 3.0  # type: ignore[index]
    assert (ready["awakeLayers"], ready["readyLayers"], ready["layerCount"]) == (1, 1, 2)


def test_conditions_carry_generation_and_keep_transition_time() -> None:
    first = status_at(Observed(replicas=0), {})
    conds = {c["type"]: c for c in first["conditions"]}  # type: ignore[attr-defined]
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["observedGeneration"] == 4
    assert conds["InvalidSpec"]["status"] == "False"
    later = status_at(Observed(replicas=0), first, NOW + timedelta(minutes=5))
    assert later["conditions"] == first["conditions"]
    assert first["observedGeneration"] == 4


def test_invalid_status_keeps_layers_and_flags_the_spec() -> None:
    good = status_at(Observed(replicas=0), {})
    bad = invalid_status(good, 5, "spec.layers[0].idleTimeout: bad", NOW)
    conds = {c["type"]: c for c in bad["conditions"]}
    assert conds["InvalidSpec"]["status"] == "True"
    assert conds["InvalidSpec"]["message"] == "spec.layers[0].idleTimeout: bad"
    assert conds["InvalidSpec"]["observedGeneration"] == 5
    assert conds["Ready"]["status"] == "False"
    assert bad["layers"] == good["layers"] and bad["observedGeneration"] == 4


def test_every_status_fits_the_crds_status_schema() -> None:
    """A key the schema lacks would be pruned by the API server (and lost across a restart)."""
    woken = NOW - timedelta(seconds=3)
    waking = status_at(Observed(replicas=1, woken_at=woken, wake_count=2), {})
    ready = status_at(Observed(replicas=1, ready_replicas=1, woken_at=woken, wake_count=2), waking)
    for status in (waking, ready, invalid_status(ready, 5, "bad", NOW)):
        OnionStatus.model_validate(status)


def test_phase_changes_become_events() -> None:
    waking = status_at(Observed(replicas=1, woken_at=NOW - timedelta(seconds=3)), {})
    ready = status_at(
        Observed(
            replicas=1, ready_replicas=1, current_replicas=1, woken_at=NOW - timedelta(seconds=3)
        ),
        waking,
    )
    assert phase_changes(waking, ready) == [
        ("Normal", "LayerReady", "layer mid: Ready after 3s cold start")
    ]
    assert phase_changes(ready, ready) == []
    failed = status_at(Observed(replicas=1, woken_at=NOW - timedelta(seconds=90)), waking)
    assert phase_changes(waking, failed) == [
        ("Warning", "WakeFailed", "layer mid: not Ready 60s (wakeTimeout) after waking")
    ]
