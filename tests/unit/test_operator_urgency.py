"""What a restarted operator serves first: an Onion whose caches say more than its status."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from onion_contract.spec import parse_spec
from onion_operator.cache import CachedDeployment, CachedLease, CachedOnion, OnionView
from onion_operator.planner import Observed, plan
from onion_operator.status import StatusInput, build_status
from onion_operator.urgency import waiting, waiting_by_status

NOW = datetime(2026, 12, 7, 18, 0, 0, tzinfo=UTC)
RAW_SPEC: dict[str, Any] = {
    "core": {"model": "s"},
    "layers": [
        {"name": "mid", "model": "m", "idleTimeout": "10m"},
        {"name": "remote", "endpoint": "https://x.example/v1"},
    ],
}
SPEC = parse_spec("chat", RAW_SPEC)
CORE = Observed(replicas=1, ready_replicas=1, current_replicas=1)
ASLEEP = Observed(replicas=0)
DEMAND = NOW - timedelta(minutes=30)  # long past: mid asleep


def deployment(part: str, observed: Observed) -> CachedDeployment:
    return CachedDeployment(part, f"chat-{part}", "1", observed, apply_owns_replicas=True)


def settled(observed_mid: Observed = ASLEEP, demand: datetime | None = DEMAND) -> OnionView:
    """An Onion as a pass left it: its status written from exactly these caches."""
    observed = {"core": CORE, "mid": observed_mid}
    the_plan = plan(SPEC, observed, {"mid": demand}, NOW)
    status = build_status(
        StatusInput(SPEC, "chat", "ns", 3, observed, {"mid": demand}, the_plan, {}, NOW)
    )
    onion = CachedOnion("chat", "ns", "u1", 3, "10", False, RAW_SPEC, status)
    return OnionView(
        onion,
        {part: deployment(part, obs) for part, obs in observed.items()},
        {"mid": CachedLease("mid", "chat-mid-demand", "5", demand)},
    )


def test_an_onion_as_its_last_pass_left_it_is_routine() -> None:
    assert waiting(settled()) is None
    assert waiting(settled(demand=None)) is None  # never used
    awake = Observed(replicas=1, ready_replicas=1, current_replicas=1)
    assert waiting(settled(awake, NOW - timedelta(seconds=5))) is None


def with_lease(view: OnionView, demand: datetime | None) -> OnionView:
    return replace(view, leases={"mid": CachedLease("mid", "chat-mid-demand", "6", demand)})


def with_mid(view: OnionView, observed: Observed) -> OnionView:
    return replace(view, deployments={**view.deployments, "mid": deployment("mid", observed)})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # The router asked for mid while no operator ran: a request is held for its wake.
        (lambda v: with_lease(v, NOW - timedelta(seconds=2)), "mid: demand since"),
        (lambda v: with_lease(settled(demand=None), NOW), "mid: demand since"),
        # Woken before the crash, its pod Ready since: held requests wait for the status.
        (
            lambda v: with_mid(v, Observed(replicas=1, ready_replicas=1, current_replicas=1)),
            "mid: replicas or readiness",
        ),
        (lambda v: with_mid(v, Observed(replicas=1)), "mid: replicas or readiness"),
        # The core lost its pod while nobody watched.
        (
            lambda v: replace(v, deployments={**v.deployments, "core": deployment("core", ASLEEP)}),
            "core: replicas or readiness",
        ),
        # Children deleted while down.
        (lambda v: replace(v, leases={}), "mid: no demand Lease"),
        (lambda v: replace(v, deployments={"core": v.deployments["core"]}), "mid: no Deployment"),
        # A user's `kubectl apply` not reconciled yet (or an Onion never reconciled).
        (
            lambda v: replace(v, onion=replace(v.onion, generation=4)),
            "generation 4 not reconciled",
        ),
        (
            lambda v: replace(v, onion=replace(v.onion, status={})),
            "generation 3 not reconciled",
        ),
    ],
)
def test_what_changed_while_no_operator_watched_comes_first(change: Any, reason: str) -> None:
    found = waiting(change(settled()))
    assert found is not None and found.startswith(reason)


def test_an_older_demand_or_a_deleting_onion_is_routine() -> None:
    view = settled(demand=NOW - timedelta(minutes=1))
    assert waiting(with_lease(view, NOW - timedelta(minutes=2))) is None  # not newer
    deleting = replace(view.onion, deleting=True, generation=9)
    assert waiting(replace(view, onion=deleting)) is None


def test_before_the_deployments_are_listed_only_demand_and_spec_can_tell() -> None:
    """What a restart can judge from the Onions and Leases alone (their lists come first)."""
    listed = replace(settled(), deployments={})  # no Deployment listed yet
    assert waiting_by_status(listed) is None
    demand = with_lease(listed, NOW - timedelta(seconds=2))
    assert (waiting_by_status(demand) or "").startswith("mid: demand since")
    spec = replace(listed, onion=replace(listed.onion, generation=4))
    assert (waiting_by_status(spec) or "").startswith("generation 4")
    ready = with_mid(settled(), Observed(replicas=1, ready_replicas=1, current_replicas=1))
    assert waiting_by_status(ready) is None and waiting(ready) is not None  # needs the Deployments
    # Woken before the crash: held requests wait for its Ready, whatever the Deployment says now.
    waking = settled(Observed(replicas=1, woken_at=NOW - timedelta(seconds=5)), NOW)
    assert (waiting_by_status(replace(waking, deployments={})) or "").startswith("mid: Waking")
