"""A restarted operator serves wakes first, on a real API server: demand recorded while no
operator ran goes ahead of the start-up backlog, and a demand event is served before the Onions
and Deployments are even listed (its pass reads its own). The whole restart at scale, with a
`kill -9`, is `make bench-scale` (tests/e2e/test_bench_scale_short.py runs it short)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from onion_lab.cluster import Cluster
from onion_lab.operator import apply_crd
from onion_lab.waiting import wait_until
from onion_operator.handlers import OperatorState, Tuning, fill, informers, run_pass
from onion_operator.kube import Kube
from onion_operator.metrics import OperatorMetrics
from onion_operator.workqueue import Priority
from tests.support.operator import (
    layer_status,
    managed_layer,
    onion_yaml,
    renew_demand,
    replicas,
)

pytestmark = pytest.mark.cluster


async def settled(cluster: Cluster, ns: str, kube: Kube, names: list[str]) -> None:
    """Onions with a dormant layer each, reconciled by an operator that then went away."""
    for name in names:
        layer = managed_layer("mid", idle="60s")
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml(name, [layer]))
    first = OperatorState(kube, Tuning(), OperatorMetrics())
    try:
        await fill(first, informers(first, kube, [ns]))
        for name in names:
            await run_pass(first, f"{ns}/{name}")  # a new generation: every child created
            assert replicas(cluster, ns, f"{name}-mid") == 0

        def core_ready_in_status() -> bool:  # the core pods' readiness published: all settled
            return all(
                layer_status(cluster, ns, name, "core").get("readyReplicas") == 1 for name in names
            )

        await asyncio.to_thread(wait_until, core_ready_in_status, timeout=30, what="settled")
    finally:
        await stop(first)


async def stop(state: OperatorState) -> None:
    for task in state.watches:
        task.cancel()
    await state.queue.stop()


@contextlib.asynccontextmanager
async def restarted(
    cluster: Cluster, ns: str, names: list[str]
) -> AsyncIterator[tuple[Kube, OperatorState]]:
    """Onions settled by an operator that went away, and the next operator's state (its caches
    empty, nothing started); both stopped afterwards."""
    apply_crd(cluster)
    kube = await Kube.connect(cluster.kubeconfig)
    state = OperatorState(kube, Tuning(), OperatorMetrics())
    try:
        await settled(cluster, ns, kube, names)
        yield kube, state
    finally:
        await stop(state)
        await kube.close()


async def test_demand_recorded_while_down_is_served_before_the_backlog(
    cluster: Cluster, namespace: str
) -> None:
    ns = namespace
    async with restarted(cluster, ns, ["a", "b", "c"]) as (kube, state):
        renew_demand(cluster, ns, "b-mid-demand")  # a request held while no operator runs
        await fill(state, informers(state, kube, [ns]))
        # b was queued first (and may have run already); the rest wait as backlog, once each.
        assert state.queue.queued(f"{ns}/b") in (Priority.EVENT, None)
        assert state.queue.queued(f"{ns}/a") == state.queue.queued(f"{ns}/c") == Priority.BACKLOG
        assert state.queue.depth(Priority.BACKLOG) == 2
        await asyncio.to_thread(
            wait_until, lambda: replicas(cluster, ns, "b-mid") == 1, timeout=15, what="b woken"
        )
        assert replicas(cluster, ns, "a-mid") == replicas(cluster, ns, "c-mid") == 0


async def test_an_event_is_served_before_the_onions_and_deployments_are_listed(
    cluster: Cluster, namespace: str
) -> None:
    ns = namespace
    async with restarted(cluster, ns, ["chat"]) as (kube, state):
        # As right after the start: the demand Leases listed, nothing else yet.
        leases = [f for f in informers(state, kube, [ns]) if f.source.kind == "Lease"]
        for feed in leases:
            await feed.sync()
        state.unlisted -= {"Lease"}
        assert state.onions.get(f"{ns}/chat") == [] and state.deployments.get(f"{ns}/chat") == []
        renew_demand(cluster, ns, "chat-mid-demand")
        lease = await kube.get("Lease", ns, "chat-mid-demand")
        assert lease is not None
        state.leases.put(lease)  # the watch's event
        await run_pass(state, f"{ns}/chat")  # reads the Onion and its Deployments itself
        assert replicas(cluster, ns, "chat-mid") == 1
        assert sorted(d.layer for d in state.deployments.get(f"{ns}/chat")) == ["core", "mid"]
        view = state.view(f"{ns}/chat")  # the Onion as read, and the status the pass wrote
        assert view is not None
        mid = next(e for e in view.onion.status["layers"] if e["name"] == "mid")
        assert mid["phase"] == "Waking"
