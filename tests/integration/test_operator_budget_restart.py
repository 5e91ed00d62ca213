"""The GPU budget (maxAwakeLayers), restart safety (kill -9 mid-wake, during idle, while demand
arrives), single-leader behaviour and --all-namespaces, with the real operator against a real
API server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from onion_lab.cluster import Cluster
from onion_lab.operator import OperatorProcess, apply_crd
from onion_lab.waiting import wait_until
from onion_operator.planner import format_time
from tests.support.operator import (
    layer_status,
    managed_layer,
    onion_events,
    onion_yaml,
    renew_demand,
    replicas,
    running_operator,
    wait_for_phase,
)

pytestmark = pytest.mark.cluster


# Long enough that three demand renewals by kubectl on a loaded machine fall inside it (1 s did
# not: b's demand was no longer recent when a's arrived, and a took b's slot at once).
GRACE = 3


def layer(name: str, idle: str = "1h", delay: str = "200ms") -> dict[str, object]:
    return managed_layer(name, idle=idle, delay=delay)


def test_budget_sleeps_least_recently_used(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    spec = onion_yaml(
        "chat",
        [layer("a"), layer("b"), layer("c")],
        maxAwakeLayers=2,
        evictionGracePeriod=f"{GRACE}s",
    )
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=spec)
    wait_for_phase(cluster, ns, "c", "Dormant", timeout=30, what="layers created")
    renew_demand(cluster, ns, "chat-a-demand")
    wait_until(lambda: replicas(cluster, ns, "chat-a") == 1, timeout=5, what="a awake")
    b_used = renew_demand(cluster, ns, "chat-b-demand")
    wait_until(lambda: replicas(cluster, ns, "chat-b") == 1, timeout=5, what="b awake")
    # Neither is in use any more once the grace period has passed since b's last demand.
    wait_until(
        lambda: datetime.now(UTC) - b_used > timedelta(seconds=GRACE + 0.2),
        timeout=GRACE + 5,
        what="grace period over",
    )

    # c wants a slot: a (least recently used, not in use) is put to sleep, b stays.
    renew_demand(cluster, ns, "chat-c-demand")
    wait_until(lambda: replicas(cluster, ns, "chat-c") == 1, timeout=5, what="c awake")
    assert replicas(cluster, ns, "chat-a") == 0
    assert replicas(cluster, ns, "chat-b") == 1
    assert any(
        "layer a: least recently used; maxAwakeLayers=2" in e for e in onion_events(cluster, ns)
    )

    # Both awake layers in use: new demand for a is held, nothing is evicted.
    renew_demand(cluster, ns, "chat-b-demand")
    renew_demand(cluster, ns, "chat-c-demand")
    renew_demand(cluster, ns, "chat-a-demand")
    held = wait_until(
        lambda: (
            (s := layer_status(cluster, ns, "chat", "a"))
            .get("message", "")
            .startswith("demand waiting")
            and s
        ),
        timeout=5,
        what="a held",
    )
    assert held["phase"] == "Dormant" and "maxAwakeLayers=2 reached" in held["message"]
    assert replicas(cluster, ns, "chat-b") == replicas(cluster, ns, "chat-c") == 1

    # Once b and c are no longer in use (the grace period), a takes the older one's slot.
    def admitted_while_held() -> bool:
        renew_demand(cluster, ns, "chat-a-demand")  # the router renews a held request's demand
        return replicas(cluster, ns, "chat-a") == 1

    wait_until(admitted_while_held, timeout=GRACE + 10, interval=0.3, what="a admitted")
    awake = [n for n in "abc" if replicas(cluster, ns, f"chat-{n}") == 1]
    assert len(awake) == 2 and "a" in awake


def ready_while_renewing(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    """Like the router holding a request: renew the layer's demand until it is Ready."""

    def check() -> dict[str, Any] | None:
        renew_demand(cluster, ns, f"chat-{name}-demand")
        status = layer_status(cluster, ns, "chat", name)
        return status if status.get("phase") == "Ready" else None

    return wait_until(check, timeout=20, interval=0.5, what=f"{name} Ready")


def test_kill_mid_wake_idle_and_demand_while_down(cluster: Cluster, namespace: str) -> None:
    ns = namespace
    apply_crd(cluster)
    first = OperatorProcess(cluster, ns).start()
    procs = [first]
    try:
        spec = onion_yaml("chat", [layer("mid", idle="4s", delay="3s")])
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=spec)
        wait_for_phase(cluster, ns, "mid", "Dormant", timeout=30, what="mid created")

        # Mid-wake: scaled to 1, pod still loading (3s) when the operator dies.
        renew_demand(cluster, ns, "chat-mid-demand")
        wait_until(
            lambda: replicas(cluster, ns, "chat-mid") == 1, timeout=5, interval=0.02, what="woken"
        )
        first.kill()
        assert layer_status(cluster, ns, "chat", "mid")["phase"] == "Waking"
        second = OperatorProcess(cluster, ns).start()
        procs.append(second)
        # The successor waits up to the leader Lease (3s) for the dead one: like the router
        # holding a request, keep demand fresh meanwhile so the idle timeout (4s) cannot hit.
        ready = ready_while_renewing(cluster, ns, "mid")
        assert ready["wakeCount"] == 1  # the restart did not count (or redo) the wake
        assert 2.5 <= ready["lastWakeSeconds"] < 15

        # Down while the idle timeout passes: the successor does the missed sleep.
        second.kill()
        lease = cluster.kubectl_json("-n", ns, "get", "lease", "chat-mid-demand")
        demand_at = datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
        wait_until(
            lambda: datetime.now(UTC) - demand_at > timedelta(seconds=5),
            timeout=10,
            what="idle timeout passed while down",
        )
        assert replicas(cluster, ns, "chat-mid") == 1
        third = OperatorProcess(cluster, ns).start()
        procs.append(third)
        wait_until(
            lambda: replicas(cluster, ns, "chat-mid") == 0, timeout=15, what="missed sleep done"
        )

        # Demand recorded while no operator runs: the successor wakes the layer. The successor
        # may take longer to start and lead than the 4 s idle timeout on a busy machine, and the
        # demand must still be fresh when it looks, so this part gets a longer one.
        third.kill()
        longer = [{"op": "replace", "path": "/spec/layers/0/idleTimeout", "value": "60s"}]
        cluster.kubectl("-n", ns, "patch", "onion", "chat", "--type=json", "-p", json.dumps(longer))
        renew_demand(cluster, ns, "chat-mid-demand")
        fourth = OperatorProcess(cluster, ns).start()
        procs.append(fourth)
        wait_until(lambda: replicas(cluster, ns, "chat-mid") == 1, timeout=15, what="no lost wake")

        woken = ready_while_renewing(cluster, ns, "mid")
        assert woken["wakeCount"] == 2
    finally:
        for proc in procs:
            proc.stop()


def test_only_the_leader_acts(cluster: Cluster, namespace: str) -> None:
    ns = namespace
    apply_crd(cluster)
    leader = OperatorProcess(cluster, ns).start()
    standby = None
    try:
        wait_until(
            lambda: cluster.exists("-n", ns, "lease", "onion-operator-leader"),
            timeout=20,
            what="leader Lease",
        )
        standby = OperatorProcess(cluster, ns).start()
        wait_until(
            lambda: "waiting for leadership" in standby.logs(), timeout=20, what="standby waiting"
        )
        leader.stop()  # a graceful exit releases the Lease: the standby takes over at once
        wait_until(lambda: "leading as" in standby.logs(), timeout=10, what="standby leads")
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [layer("mid")]))
        wait_for_phase(cluster, ns, "mid", "Dormant", timeout=30, what="standby reconciles")

        # Someone else holds the Lease now: the operator stops acting (exits non-zero).
        usurper = {
            "holderIdentity": "usurper",
            "leaseDurationSeconds": 30,
            "renewTime": format_time(datetime.now(UTC)),
        }
        cluster.kubectl(
            "-n",
            ns,
            "patch",
            "lease",
            "onion-operator-leader",
            "--type=merge",
            "-p",
            json.dumps({"spec": usurper}),
        )
        assert standby.proc is not None
        assert standby.proc.wait(timeout=10) == 1
        assert "another instance took the leadership Lease" in standby.logs()
    finally:
        leader.stop()
        if standby is not None:
            standby.stop()


def test_all_namespaces(cluster: Cluster, namespace: str) -> None:
    with (
        cluster.new_namespace("t") as other,
        running_operator(cluster, namespace, "--all-namespaces", "--leader-namespace", namespace),
    ):
        for ns in (namespace, other):
            cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [layer("mid")]))
        for ns in (namespace, other):
            wait_for_phase(cluster, ns, "core", "Ready", timeout=30, what=f"core Ready in {ns}")
