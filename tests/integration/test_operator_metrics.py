"""The operator you can monitor: `--metrics-bind-address` serves Prometheus metrics, `/healthz`
and `/readyz`, for a leader and for a standby, against a real API server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from onion_lab.cluster import Cluster
from onion_lab.operator import apply_crd
from onion_lab.sockets import free_port
from onion_lab.waiting import wait_until
from tests.support.operator import (
    condition,
    managed_layer,
    onion_yaml,
    renew_demand,
    replicas,
    running_operator,
    wait_for_phase,
)

pytestmark = pytest.mark.cluster

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Summed over the labels not given."""
    return sum(
        v
        for (n, got), v in samples.items()
        if n == name and all((k, want) in got for k, want in labels.items())
    )


def readyz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        answer = httpx.get(f"{url}/readyz", timeout=5)
    except httpx.TransportError:
        return 0, {}
    body: dict[str, Any] = answer.json()
    return answer.status_code, body


def test_leader_and_standby_serve_probes_and_the_leader_counts_what_it_does(
    cluster: Cluster, namespace: str
) -> None:
    ns = namespace
    apply_crd(cluster)
    leader_url = f"http://127.0.0.1:{free_port()}"
    standby_url = f"http://127.0.0.1:{free_port()}"
    bind = leader_url.removeprefix("http://")
    with running_operator(cluster, ns, "--metrics-bind-address", bind):
        _, body = wait_until(
            lambda: (r := readyz(leader_url))[0] == 200 and r[1].get("cachesSynced") and r,
            timeout=30,
            what="the leader ready",
        )
        assert body == {"ready": True, "role": "leader", "cachesSynced": True}
        assert httpx.get(f"{leader_url}/healthz", timeout=5).json() == {"alive": True}
        assert value(scrape(leader_url), "onion_operator_leader") == 1

        # A second instance waits for the leader Lease: alive and ready, as a standby.
        standby_bind = standby_url.removeprefix("http://")
        with running_operator(cluster, ns, "--metrics-bind-address", standby_bind):
            wait_until(lambda: readyz(standby_url)[0] == 200, timeout=30, what="standby up")
            assert readyz(standby_url)[1] == {
                "ready": True,
                "role": "standby",
                "cachesSynced": False,
            }
            assert value(scrape(standby_url), "onion_operator_leader") == 0

        mid = managed_layer("mid", idle="3s", delay="300ms")
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [mid]))
        wait_for_phase(cluster, ns, "mid", "Dormant", timeout=30, what="mid created")
        renew_demand(cluster, ns, "chat-mid-demand")
        wait_for_phase(cluster, ns, "mid", "Ready", timeout=15, what="mid awake")
        wait_until(lambda: replicas(cluster, ns, "chat-mid") == 0, timeout=15, what="mid asleep")

        # An Onion the API server admits but the operator cannot serve: InvalidSpec, counted.
        broken = "b" * 56  # its layer's Lease name would pass 63 characters
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml(broken, [{**mid}]))
        wait_until(
            lambda: condition(cluster, ns, broken, "InvalidSpec").get("status") == "True",
            timeout=15,
            what="the long-named Onion marked InvalidSpec",
        )

        def counted() -> Samples | None:
            s = scrape(leader_url)
            return s if value(s, "onion_operator_errors_total", kind="invalid_spec") else None

        s = wait_until(counted, timeout=10, what="the invalid spec counted")
        assert value(s, "onion_operator_wakes_total", reason="demand") == 1
        assert value(s, "onion_operator_sleeps_total", reason="idle") == 1
        assert value(s, "onion_layer_cold_start_seconds_count") == 1
        assert value(s, "onion_layer_cold_start_seconds_sum") >= 0.3  # the pod's ready delay
        assert value(s, "onion_operator_reconcile_total", kind="full", result="ok") >= 1
        assert value(s, "onion_operator_reconcile_duration_seconds_count", kind="refresh") >= 1
        assert value(s, "onion_operator_onions") == 2
        assert value(s, "onion_operator_workqueue_depth") == 0
        assert total(s, "onion_operator_workqueue_queue_duration_seconds_count") >= 3
        # Every write the operator made is counted: the wake and the sleep are merge patches of
        # the layer's Deployment, the leader Lease is read and replaced.
        assert total(s, "onion_operator_api_requests_total", verb="PATCH", resource="deployments")
        assert total(s, "onion_operator_api_requests_total", verb="PUT", resource="leases")
        assert total(s, "onion_operator_api_requests_total", verb="POST", resource="events")
        assert total(s, "onion_operator_api_requests_total", resource="onions/status", code="200")
    # Stopped: nothing listens there any more.
    assert readyz(leader_url)[0] == 0
