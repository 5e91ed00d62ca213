"""The watch-driven operator on a real API server: passes at deadlines with no event at all, the
periodic repair finding what no watch reported (a missed event, an unwatched child), and the
caches listed at start, with a deletion they missed."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from onion_lab.cluster import Cluster
from onion_lab.operator import OperatorProcess, apply_crd
from onion_lab.waiting import wait_until
from onion_operator.cache import Written, deployment_entry, lease_entry, onion_entry, onion_key
from onion_operator.handlers import OperatorState, Tuning, fill, informers, run_pass
from onion_operator.kube import Kube
from onion_operator.metrics import OperatorMetrics
from onion_operator.reconciler import PassApi, reconcile
from tests.support.operator import (
    managed_layer,
    onion_yaml,
    renew_demand,
    replicas,
    running_operator,
    wait_for_phase,
)

pytestmark = pytest.mark.cluster


def renew_time(cluster: Cluster, ns: str, lease: str) -> datetime:
    spec = cluster.kubectl_json("-n", ns, "get", "lease", lease)["spec"]
    return datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00"))


def test_idle_sleep_and_wake_timeout_fall_due_without_any_event(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    mid = managed_layer("mid", idle="5s", delay="200ms")
    # A pod that never turns Ready (kwok waits an hour): Failed once wakeTimeout has passed.
    stuck = managed_layer("stuck", idle="1h", delay="1h", wakeTimeout="3s")
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [mid, stuck]))
    wait_for_phase(cluster, ns, "stuck", "Dormant", timeout=30, what="layers created")

    renew_demand(cluster, ns, "chat-mid-demand")
    renew_demand(cluster, ns, "chat-stuck-demand")
    wait_for_phase(cluster, ns, "mid", "Ready", timeout=10, what="mid Ready")
    wait_for_phase(cluster, ns, "stuck", "Waking", timeout=10, what="stuck Waking")
    demand_at = renew_time(cluster, ns, "chat-mid-demand")
    annotations = cluster.kubectl_json("-n", ns, "get", "deployment", "chat-stuck")["metadata"][
        "annotations"
    ]
    woken_at = datetime.fromisoformat(annotations["onion.dev/woken-at"].replace("Z", "+00:00"))
    # From here on nothing changes in the cluster: no demand, no pod, no spec. Both the sleep
    # and the failure come from deadlines the planner computed.
    failed = wait_for_phase(cluster, ns, "stuck", "Failed", timeout=10, what="wake timed out")
    assert "wakeTimeout" in failed["message"]
    assert datetime.now(UTC) - woken_at < timedelta(seconds=3 + 2)
    wait_until(lambda: replicas(cluster, ns, "chat-mid") == 0, timeout=10, what="mid asleep")
    slept = datetime.now(UTC)
    idle_over = demand_at + timedelta(seconds=5)
    assert idle_over <= slept < idle_over + timedelta(seconds=2), slept - idle_over


async def api_view(kube: Kube, ns: str, name: str) -> Any:
    """The view a pass gets from the watches, built here from fresh reads."""
    written = Written()
    onion = await kube.get("Onion", ns, name)
    assert onion is not None
    selector = {"onion.dev/onion": name}
    leases = await kube.list("Lease", ns, {**selector, "onion.dev/component": "demand"})
    deps = await kube.list("Deployment", ns, {**selector, "onion.dev/component": "model"})
    return written.view(
        onion_entry(onion),
        [deployment_entry(d) for d in deps],
        [lease_entry(lease) for lease in leases],
    )


async def test_a_missed_watch_event_is_found_by_the_periodic_repair(
    cluster: Cluster, namespace: str
) -> None:
    """A pass planned from a cache that missed the router's renewal: an ordinary pass cannot see
    it, the drift repair (a full pass) reads it from the API's answers and wakes the layer, and a
    sleep the stale cache asks for is checked against the Lease first."""
    ns = namespace
    apply_crd(cluster)
    cluster.kubectl(
        "-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [managed_layer("mid", idle="60s")])
    )
    kube = await Kube.connect(cluster.kubeconfig)
    try:

        def fresh() -> PassApi:  # a pass with nothing of its own written yet
            return PassApi(kube, Written(), onion_key(ns, "chat"))

        first = await reconcile(fresh(), await api_view(kube, ns, "chat"), datetime.now(UTC), True)
        assert first.full and replicas(cluster, ns, "chat-mid") == 0

        stale = await api_view(kube, ns, "chat")  # what the cache holds ...
        renew_demand(cluster, ns, "chat-mid-demand")  # ... when the router renews: missed

        quick = await reconcile(fresh(), stale, datetime.now(UTC), False)
        assert not quick.full and replicas(cluster, ns, "chat-mid") == 0  # blind to it

        repair = await reconcile(fresh(), stale, datetime.now(UTC), True)
        assert repair.full and replicas(cluster, ns, "chat-mid") == 1  # found and woken
        assert repair.next_deadline is not None and repair.next_deadline.reason == "idle timeout"

        # Two minutes on, the cache still holds that demand (past the 60 s idle timeout) and
        # missed a newer renewal: the pass would sleep the layer, but reads the Lease first.
        awake = await api_view(kube, ns, "chat")
        later = datetime.now(UTC) + timedelta(seconds=120)
        renew_demand(cluster, ns, "chat-mid-demand", when=later - timedelta(seconds=1))
        kept = await reconcile(fresh(), awake, later, False)
        assert replicas(cluster, ns, "chat-mid") == 1
        assert not any(e.reason == "Sleeping" for e in kept.events)
    finally:
        await kube.close()


def test_drift_no_watch_reports_is_repaired_within_a_resync_period(
    cluster: Cluster, namespace: str
) -> None:
    """The router's RoleBinding deleted (no watch at all) and its ConfigMap edited (watched for
    deletions only): the periodic repair puts both back without any event for them."""
    ns = namespace
    with running_operator(cluster, ns, "--resync-seconds", "4"):
        cluster.kubectl(
            "-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [managed_layer("mid")])
        )
        wait_for_phase(cluster, ns, "core", "Ready", timeout=30, what="core Ready")
        original = cluster.kubectl_json("-n", ns, "get", "configmap", "chat-router")["data"]
        cluster.kubectl("-n", ns, "delete", "rolebinding", "chat-router")
        edit = {"data": {"config.yaml": "edited: by hand\n"}}
        cluster.kubectl("-n", ns, "patch", "configmap", "chat-router", "-p", json.dumps(edit))
        start = time.monotonic()
        wait_until(
            lambda: cluster.exists("-n", ns, "rolebinding", "chat-router"),
            timeout=15,
            what="RoleBinding re-created",
        )
        wait_until(
            lambda: (
                cluster.kubectl_json("-n", ns, "get", "configmap", "chat-router")["data"]
                == original
            ),
            timeout=15,
            what="ConfigMap restored",
        )
        assert time.monotonic() - start < 4 * 1.5 + 3  # within one slot of the period


async def test_caches_are_listed_at_start_and_a_deletion_they_missed_is_repaired(
    cluster: Cluster, namespace: str
) -> None:
    """The list at start fills the caches a restarted operator plans from, each Onion queued once.
    An object the caches hold that the API no longer has (its deletion not seen: here the caches
    are listed with no watch after them) shows as a 404 on the first write to it: a child is
    then re-created by a full pass, a deleted Onion dropped."""
    ns, key = namespace, f"{namespace}/chat"
    apply_crd(cluster)
    layer = managed_layer("mid", idle="60s")
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [layer]))
    kube = await Kube.connect(cluster.kubeconfig)
    first = OperatorState(kube, Tuning(), OperatorMetrics())
    state = OperatorState(kube, Tuning(), OperatorMetrics())  # the same operator, restarted
    try:
        await fill(first, informers(first, kube, [ns]))
        await run_pass(first, key)  # a new generation: every child created
        assert replicas(cluster, ns, "chat-mid") == 0

        restarted = OperatorState(kube, Tuning(), OperatorMetrics())
        await fill(restarted, informers(restarted, kube, [ns]))
        assert sorted(d.layer for d in restarted.deployments.get(key)) == ["core", "mid"]
        assert [lease.layer for lease in restarted.leases.get(key)] == ["mid"]
        assert restarted.queue.depth() == 1 or key in restarted.repair_due  # queued once
        await restarted.queue.stop()
        for task in restarted.watches:
            task.cancel()

        for feed in informers(state, kube, [ns]):
            await feed.sync()  # listed, and no watch
        state.unlisted.clear()
        cluster.kubectl("-n", ns, "delete", "deployment", "chat-mid")  # the cache still has it
        renew_demand(cluster, ns, "chat-mid-demand")
        lease = await kube.get("Lease", ns, "chat-mid-demand")
        assert lease is not None
        state.leases.put(lease)  # the watch's event for the demand
        await run_pass(state, key)  # the wake: 404, and the Onion's children read again
        assert key in state.needs_full and replicas(cluster, ns, "chat-mid") is None
        assert [d.layer for d in state.deployments.get(key)] == ["core"]
        await run_pass(state, key)  # the retry: a full pass
        assert replicas(cluster, ns, "chat-mid") == 1  # re-created, and awake for the demand

        onion = await kube.get("Onion", ns, "chat")
        assert onion is not None
        cluster.kubectl("-n", ns, "delete", "onion", "chat", "--wait=false")
        onion["status"] = {}  # a pass has something to write: 404
        state.onions.put(onion)
        await run_pass(state, key)
        assert state.onions.get(key) == [] and key not in state.repair_due
    finally:
        for task in first.watches:
            task.cancel()
        await first.queue.stop()
        await state.queue.stop()
        await kube.close()
