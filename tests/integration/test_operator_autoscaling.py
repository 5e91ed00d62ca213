"""Autoscaling with the real HPA controller of kube-controller-manager: the operator owns
0 <-> 1, the HPA the count above it, and neither undoes the other.

There is no metrics pipeline here (no metrics-server, no adapter), so the HPA cannot compute a
metric; it still enforces minReplicas before it looks at metrics (replicas below the minimum are
raised to it, a target at 0 replicas means autoscaling is off), which is what scales a woken
layer from 1 to 2 here."""

from __future__ import annotations

import time
from typing import Any

import pytest

from onion_lab.cluster import Cluster
from onion_lab.waiting import wait_until
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


def replicas_owners(cluster: Cluster, ns: str, name: str) -> list[str]:
    """Who owns spec.replicas of a Deployment: manager/operation[/subresource]."""
    dep = cluster.kubectl_json("-n", ns, "get", "deployment", name, "--show-managed-fields")
    return [
        "/".join(filter(None, (e["manager"], e["operation"], e.get("subresource"))))
        for e in dep["metadata"].get("managedFields") or []
        if "f:replicas" in (e.get("fieldsV1") or {}).get("f:spec", {})
    ]


def generation(cluster: Cluster, ns: str, name: str) -> int:
    meta = cluster.kubectl_json("-n", ns, "get", "deployment", name)["metadata"]
    return int(meta["generation"])


def hpa_condition(cluster: Cluster, ns: str, name: str, type_: str) -> dict[str, Any]:
    hpa = cluster.kubectl_json("-n", ns, "get", "hpa", name)
    return next(
        (c for c in (hpa.get("status") or {}).get("conditions") or [] if c["type"] == type_), {}
    )


def steady(
    cluster: Cluster, ns: str, name: str, value: int, seconds: float, renew: str | None
) -> None:
    """`name` stays at `value` replicas for `seconds` (renewing demand like the router)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if renew is not None:
            renew_demand(cluster, ns, renew)
        assert replicas(cluster, ns, name) == value
        time.sleep(0.4)


def renewing_until(cluster: Cluster, ns: str, layer: str, value: int, what: str) -> None:
    """Renew the layer's demand, as the router does for requests in use, until it has `value`."""

    def check() -> bool:
        renew_demand(cluster, ns, f"chat-{layer}-demand")
        return replicas(cluster, ns, f"chat-{layer}") == value

    wait_until(check, timeout=20, interval=0.5, what=what)


def test_hpa_scales_an_awake_layer_and_the_operator_leaves_it_then_sleeps_it(
    cluster: Cluster, namespace: str
) -> None:
    ns = namespace
    mid = managed_layer(
        "mid", idle="4s", delay="200ms", autoscaling={"minReplicas": 2, "maxReplicas": 3}
    )
    # The core too: created at the HPA's minimum, never pushed back to one by the operator.
    spec = onion_yaml("chat", [mid], core={"autoscaling": {"minReplicas": 2, "maxReplicas": 2}})
    # Full repairs every 2 s: the operator re-applies everything while the HPA holds 2 replicas.
    with running_operator(cluster, ns, "--resync-seconds", "2"):
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=spec)
        wait_for_phase(cluster, ns, "mid", "Dormant", timeout=30, what="layers created")
        assert cluster.exists("-n", ns, "hpa", "chat-mid")
        assert cluster.exists("-n", ns, "hpa", "chat-core")
        wait_until(lambda: replicas(cluster, ns, "chat-core") == 2, timeout=10, what="core at 2")

        # Asleep: the HPA does not wake it (a target at 0 replicas turns autoscaling off).
        wait_until(
            lambda: (
                hpa_condition(cluster, ns, "chat-mid", "ScalingActive").get("reason")
                == "ScalingDisabled"
            ),
            timeout=20,
            what="HPA sees the sleeping layer",
        )
        steady(cluster, ns, "chat-mid", 0, 3, renew=None)
        # Several full repairs have applied both Deployments, leaving spec.replicas out: had the
        # field been dropped rather than handed over, it would have been reset to 1 (a wake of
        # mid, a core shrunk below its minimum) and each change would have bumped a generation.
        for name in ("chat-mid", "chat-core"):
            assert generation(cluster, ns, name) == 1, name
            assert replicas_owners(cluster, ns, name) == ["onion-operator-handover/Apply"]

        # Wake: the operator scales 0 -> 1, the HPA 1 -> 2 (below its minimum).
        renew_demand(cluster, ns, "chat-mid-demand")
        wait_until(lambda: replicas(cluster, ns, "chat-mid") in (1, 2), timeout=5, what="woken")
        renewing_until(cluster, ns, "mid", 2, what="the HPA scaled the awake layer to 2")
        assert "kube-controller-manager/Update/scale" in replicas_owners(cluster, ns, "chat-mid")
        # In use for a while: several full repairs pass, nobody moves it back to 1.
        steady(cluster, ns, "chat-mid", 2, 7, renew="chat-mid-demand")
        steady(cluster, ns, "chat-core", 2, 0.1, renew=None)
        status = wait_for_phase(cluster, ns, "mid", "Ready", timeout=10, what="mid Ready")
        assert status["replicas"] == 2
        assert "kube-controller-manager/Update/scale" in replicas_owners(cluster, ns, "chat-mid")

        # Idle: the operator puts it to sleep (2 -> 0) and the HPA leaves it there.
        wait_until(lambda: replicas(cluster, ns, "chat-mid") == 0, timeout=4 + 4, what="asleep")
        assert any(e.startswith("Sleeping: layer mid: idle") for e in onion_events(cluster, ns))
        steady(cluster, ns, "chat-mid", 0, 5, renew=None)  # two HPA periods and more
        assert layer_status(cluster, ns, "chat", "mid")["phase"] in ("Draining", "Dormant")
        assert replicas(cluster, ns, "chat-core") == 2

        # And again: wakes to 1, the HPA takes it to 2.
        renewing_until(cluster, ns, "mid", 2, what="scaled to 2 again")


def test_removing_autoscaling_deletes_the_hpa_and_the_operator_owns_replicas_again(
    cluster: Cluster, namespace: str
) -> None:
    ns = namespace
    mid = {"name": "mid", "model": "org/mid", "autoscaling": {"minReplicas": 1, "maxReplicas": 2}}
    with running_operator(cluster, ns):
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [mid]))
        wait_until(lambda: cluster.exists("-n", ns, "hpa", "chat-mid"), timeout=30, what="HPA")
        assert replicas(cluster, ns, "chat-mid") == 0
        plain = {k: v for k, v in mid.items() if k != "autoscaling"}
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [plain]))
        wait_until(
            lambda: not cluster.exists("-n", ns, "hpa", "chat-mid"), timeout=15, what="HPA deleted"
        )
        assert replicas(cluster, ns, "chat-mid") == 0  # still asleep: no reset to the default 1
