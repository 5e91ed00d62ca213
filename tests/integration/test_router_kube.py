"""Kubernetes mode against the real local API server, without the operator: the test plays the
operator (creates the Onion and its demand Lease, then sets the layer Ready) and sees the router
renew the Lease and answer the held request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from onion_lab.cluster import Cluster
from onion_lab.operator import wait_established
from onion_lab.waiting import wait_until
from tests.support.fake_tgi import FakeTGI, Script
from tests.support.router_server import RouterServer, router_layer

pytestmark = pytest.mark.cluster

CRD = Path(__file__).resolve().parents[2] / "crds" / "onion.dev_onions.yaml"
HOLDER = "router-under-test-0"


@pytest.fixture
def onion(cluster: Cluster, namespace: str) -> str:
    cluster.kubectl("apply", "--server-side", "-f", str(CRD))
    wait_established(cluster)
    manifest = {
        "apiVersion": "onion.dev/v1alpha1",
        "kind": "Onion",
        "metadata": {"name": "assistant", "namespace": namespace},
        "spec": {
            "core": {"model": "core-model"},
            "layers": [
                {"name": "mid", "model": "mid-model"},
                {"name": "big", "model": "big-model"},
            ],
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    set_phases(cluster, namespace, {"mid": "Dormant", "big": "Dormant"})
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "assistant-mid-demand", "namespace": namespace},
        "spec": {},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(lease))  # no Lease for "big"
    return "assistant"


def set_phases(cluster: Cluster, namespace: str, phases: dict[str, str]) -> None:
    status = {"status": {"layers": [{"name": n, "phase": p} for n, p in phases.items()]}}
    cluster.kubectl(
        "patch",
        "onion",
        "assistant",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )


@pytest.fixture
def fakes() -> Iterator[tuple[FakeTGI, FakeTGI]]:
    with (
        FakeTGI(Script(tokens=["core"]), name="core") as core,
        FakeTGI(Script(tokens=["mid", " here"]), name="mid") as mid,
    ):
        yield core, mid


def test_demand_lease_and_readiness_watch(
    cluster: Cluster,
    namespace: str,
    onion: str,
    fakes: tuple[FakeTGI, FakeTGI],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core, mid = fakes
    monkeypatch.setenv("KUBECONFIG", cluster.kubeconfig)
    monkeypatch.setenv("POD_NAME", HOLDER)
    config = {
        "kubernetes": {"enabled": True, "namespace": namespace, "onion": onion},
        "layers": [
            router_layer("core", core.url),
            router_layer(
                "mid", mid.url, managed=True, lease="assistant-mid-demand", wakeTimeoutSeconds=60
            ),
            router_layer(
                "big", mid.url, managed=True, lease="assistant-big-demand", wakeTimeoutSeconds=60
            ),
        ],
    }
    with RouterServer(config) as router, ThreadPoolExecutor(1) as pool:
        api = router.openai()
        # The core is not managed: answered at once, no Lease touched.
        assert (
            api.chat.completions.create(model="onion", messages=[{"role": "user", "content": "hi"}])
            .choices[0]
            .message.content
            == "core"
        )

        held = pool.submit(
            api.chat.completions.with_raw_response.create,
            model="onion/mid",
            messages=[{"role": "user", "content": "hi"}],
        )

        def renewed() -> dict | None:
            spec = cluster.kubectl_json("get", "lease", "assistant-mid-demand", "-n", namespace)[
                "spec"
            ]
            return spec if spec.get("renewTime") else None

        spec = wait_until(renewed, timeout=20, what="the router to renew the demand Lease")
        assert spec["holderIdentity"] == HOLDER
        assert spec["renewTime"].endswith("Z") and "." in spec["renewTime"]  # MicroTime
        assert not held.done()
        set_phases(cluster, namespace, {"mid": "Waking"})
        assert not held.done()
        set_phases(cluster, namespace, {"mid": "Ready"})
        raw = held.result(timeout=30)
        assert raw.headers["x-onion-layer"] == "mid"
        assert raw.parse().choices[0].message.content == "mid here"

        # A layer whose Lease the operator never made: a clear 503, not a hang.
        with pytest.raises(openai.APIStatusError) as err:
            api.chat.completions.create(
                model="onion/big", messages=[{"role": "user", "content": "hi"}]
            )
        assert err.value.status_code == 503
        assert f"{namespace}/assistant-big-demand does not exist" in err.value.message


def test_a_new_replica_starts_from_the_threshold_the_others_reached(
    cluster: Cluster,
    namespace: str,
    onion: str,
    fakes: tuple[FakeTGI, FakeTGI],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """targetRate: a replica publishes its live cut on the thresholds Lease; one started later
    begins from it instead of the configured threshold (here -5, which escalates nothing)."""
    core, mid = fakes
    core.script = Script(tokens=["a", "b"], logprob=-0.4)
    monkeypatch.setenv("KUBECONFIG", cluster.kubeconfig)
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "assistant-thresholds", "namespace": namespace},
        "spec": {},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(lease))
    set_phases(cluster, namespace, {"mid": "Ready", "big": "Ready"})
    escalation = {
        "policy": "confidence",
        "threshold": -5.0,
        "targetRate": 0.5,
        "window": 20,
        "minSamples": 10,
    }
    config = {
        "kubernetes": {"enabled": True, "namespace": namespace, "onion": onion},
        "thresholdsLease": "assistant-thresholds",
        "layers": [
            router_layer("core", core.url, escalation=escalation),
            router_layer(
                "mid", mid.url, managed=True, lease="assistant-mid-demand", wakeTimeoutSeconds=60
            ),
        ],
    }
    with RouterServer(config) as first:
        api = first.openai()
        for _ in range(12):  # all score -0.4: the cut settles there, half of the tie escalated
            api.chat.completions.create(model="onion", messages=[{"role": "user", "content": "q"}])
    # Stopping publishes what it reached.
    annotations = cluster.kubectl_json("get", "lease", "assistant-thresholds", "-n", namespace)[
        "metadata"
    ]["annotations"]
    published = json.loads(annotations["onion.dev/threshold.core"])
    assert published["threshold"] == pytest.approx(-0.4)
    assert 0 < published["tieShare"] < 1
    with RouterServer(config) as second:
        status = httpx.get(f"{second.url}/status").json()
        live = next(layer for layer in status["layers"] if layer["name"] == "core")
        assert live["threshold"] == pytest.approx(-0.4), live  # not the configured -5
