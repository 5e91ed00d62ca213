"""The operator on a real API server: create, wake on demand, Ready, idle sleep, update,
layer removal, delete with garbage collection."""

from __future__ import annotations

import time

import pytest
import yaml

from onion_lab.cluster import Cluster
from onion_lab.operator import OperatorProcess
from onion_lab.waiting import WaitTimeout, wait_until
from tests.support.operator import (
    DELAY_ANNOTATION,
    layer_status,
    onion_events,
    onion_yaml,
    owned_names,
    renew_demand,
    replicas,
    wait_for_phase,
)

pytestmark = pytest.mark.cluster


def test_full_lifecycle(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    ns = namespace

    def names(kind: str) -> set[str]:
        return owned_names(cluster, ns, kind, "chat")

    mid = {
        "name": "mid",
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "idleTimeout": "3s",
        "podAnnotations": {DELAY_ANNOTATION: "2s"},
    }
    big = {"name": "big", "model": "Qwen/Qwen2.5-72B-Instruct", "idleTimeout": "1h"}
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [mid, big]))

    # Create: every child exists, outer layers dormant, the core Ready.
    wait_until(
        lambda: names("deployments") == {"chat-core", "chat-mid", "chat-big", "chat-router"},
        timeout=30,
        what="deployments",
    )
    assert names("services") == {"chat-core", "chat-mid", "chat-big", "chat-router"}
    assert names("leases") == {"chat-mid-demand", "chat-big-demand"}
    assert names("configmaps") == {"chat-router"}
    assert names("roles") == names("rolebindings") == names("serviceaccounts") == {"chat-router"}
    assert replicas(cluster, ns, "chat-mid") == 0 and replicas(cluster, ns, "chat-big") == 0
    wait_for_phase(cluster, ns, "core", "Ready", timeout=30, what="core Ready")
    assert layer_status(cluster, ns, "chat", "mid")["phase"] == "Dormant"
    printed = cluster.kubectl("-n", ns, "get", "on", "chat").stdout
    assert "CORE" in printed and "AWAKE" in printed and "True" in printed

    # Wake: demand recorded -> replicas 1 within a second; Ready after the kwok delay.
    renew_demand(cluster, ns, "chat-mid-demand")
    woke = time.monotonic()
    wait_until(
        lambda: replicas(cluster, ns, "chat-mid") == 1, timeout=5, interval=0.02, what="mid woken"
    )
    assert time.monotonic() - woke < 1.0
    ready = wait_for_phase(cluster, ns, "mid", "Ready", timeout=15, what="mid Ready")
    assert ready["wakeCount"] == 1
    assert 1.5 <= ready["lastWakeSeconds"] < 5
    assert ready["endpoint"] == f"http://chat-mid.{ns}.svc:80"
    assert ready["lastDemandTime"].endswith("Z")
    assert replicas(cluster, ns, "chat-big") == 0  # demand for mid wakes only mid
    wait_until(
        lambda: any(
            e.startswith("LayerReady: layer mid: Ready after") for e in onion_events(cluster, ns)
        ),
        timeout=5,
        what="LayerReady event",
    )

    # Idle sleep after idleTimeout (3s) without demand.
    wait_until(lambda: replicas(cluster, ns, "chat-mid") == 0, timeout=10, what="mid asleep")
    wait_for_phase(cluster, ns, "mid", "Dormant", timeout=10, what="mid Dormant")
    wait_until(
        lambda: any(e.startswith("Sleeping: layer mid: idle") for e in onion_events(cluster, ns)),
        timeout=5,
        what="Sleeping event",
    )
    assert any(
        e.startswith("Waking: layer mid: demand recorded") for e in onion_events(cluster, ns)
    )

    # Update: a new image for the dormant mid layer rolls its template but never wakes it.
    def generations() -> dict[str, int]:
        items = cluster.kubectl_json("-n", ns, "get", "deployments", "-l", "onion.dev/onion=chat")
        return {d["metadata"]["name"]: d["metadata"]["generation"] for d in items["items"]}

    before = generations()
    mid_updated = {**mid, "image": "ghcr.io/huggingface/text-generation-inference:3.3.5"}
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [mid_updated, big]))

    def mid_image() -> str:
        dep = cluster.kubectl_json("-n", ns, "get", "deployment", "chat-mid")
        return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])

    wait_until(lambda: mid_image().endswith(":3.3.5"), timeout=10, what="mid image updated")
    assert replicas(cluster, ns, "chat-mid") == 0
    after = generations()  # only what changed rolled: mid; not the core, big or the router
    assert after == {**before, "chat-mid": before["chat-mid"] + 1}
    lease = cluster.kubectl_json("-n", ns, "get", "lease", "chat-mid-demand")
    assert lease["spec"]["renewTime"] == ready["lastDemandTime"]  # the router's field survives

    # A child deleted by hand comes back.
    cluster.kubectl("-n", ns, "delete", "service", "chat-mid")
    wait_until(lambda: "chat-mid" in names("services"), timeout=10, what="service re-created")

    # Layer removal: big's Deployment, Service and Lease go; the router config follows.
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [mid_updated]))
    wait_until(lambda: "chat-big" not in names("deployments"), timeout=10, what="big deleted")
    assert "chat-big" not in names("services")
    assert names("leases") == {"chat-mid-demand"}
    config = cluster.kubectl_json("-n", ns, "get", "configmap", "chat-router")["data"]
    assert [t["name"] for t in yaml.safe_load(config["config.yaml"])["layers"]] == ["core", "mid"]
    status = wait_until(
        lambda: (
            (s := cluster.kubectl_json("-n", ns, "get", "onion", "chat")["status"])[
                "observedGeneration"
            ]
            == 3
            and s
        ),
        timeout=10,
        what="generation 3 observed",
    )
    assert [e["name"] for e in status["layers"]] == ["core", "mid"]

    # Delete: everything the Onion owned is garbage-collected.
    cluster.kubectl("-n", ns, "delete", "onion", "chat", "--wait=true")

    def leftovers() -> list[str]:
        kinds = ("deployments", "leases", "services", "configmaps", "roles", "rolebindings")
        return sorted(f"{kind}/{n}" for kind in kinds for n in names(kind))

    seen: list[list[str]] = []

    def gone() -> bool:
        seen.append(leftovers())
        return not seen[-1]

    # The garbage collector notices a new CRD's owners only after its next discovery resync
    # (about 30s in kube-controller-manager), so a fresh cluster can take that long.
    try:
        wait_until(gone, timeout=90, interval=0.5, what="children garbage-collected")
    except WaitTimeout:
        pytest.fail(f"not garbage-collected after 90s: {seen[-1]}")
