"""Pods the operator creates where Pod Security `restricted` is enforced: the router's always
pass; model pods pass when the Onion gives them `securityContext` / `podSecurityContext` for an
engine image that runs as non-root, and are refused without (engine defaults run as root)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from onion_lab.cluster import Cluster
from onion_lab.waiting import wait_until
from tests.support.operator import DELAY_ANNOTATION, onion_yaml, renew_demand, running_operator

pytestmark = pytest.mark.cluster

RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
RESTRICTED_POD = {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}}


def _ready(cluster: Cluster, namespace: str, deployment: str) -> int:
    dep = cluster.kubectl_json("-n", namespace, "get", "deployment", deployment)
    return int((dep.get("status") or {}).get("readyReplicas") or 0)


def _refused(cluster: Cluster, namespace: str, deployment: str) -> str:
    events = cluster.kubectl_json("-n", namespace, "get", "events")["items"]
    return "; ".join(
        e["message"]
        for e in events
        if e["involvedObject"]["name"].startswith(deployment) and e["reason"] == "FailedCreate"
    )


def _admitted(cluster: Cluster, namespace: str, deployment: str) -> tuple[int, str]:
    wait_until(
        lambda: cluster.exists("-n", namespace, "deployment", deployment),
        timeout=30,
        what=f"Deployment {deployment}",
    )
    wait_until(
        lambda: _ready(cluster, namespace, deployment) or _refused(cluster, namespace, deployment),
        timeout=60,
        what=f"{deployment} pod admitted or refused",
    )
    return _ready(cluster, namespace, deployment), _refused(cluster, namespace, deployment)


def _restricted(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )


def test_router_and_hardened_model_pods_are_admitted_where_restricted_is_enforced(
    cluster: Cluster, namespace: str
) -> None:
    _restricted(cluster, namespace)
    hardened: dict[str, Any] = {
        "securityContext": RESTRICTED_CONTAINER,
        "podSecurityContext": RESTRICTED_POD,
    }
    layer = {"name": "mid", "model": "m", "podAnnotations": {DELAY_ANNOTATION: "200ms"}, **hardened}
    body = yaml.safe_load(onion_yaml("sec", [layer]))
    body["spec"]["core"].update(hardened)
    with running_operator(cluster, namespace):
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(body))
        assert _admitted(cluster, namespace, "sec-router") == (1, "")
        assert _admitted(cluster, namespace, "sec-core") == (1, "")
        renew_demand(cluster, namespace, "sec-mid-demand")  # wake the layer
        assert _admitted(cluster, namespace, "sec-mid") == (1, "")
        pod = cluster.kubectl_json("-n", namespace, "get", "pods", "-l", "onion.dev/layer=mid")
        spec = pod["items"][0]["spec"]
        assert spec["securityContext"] == RESTRICTED_POD
        assert spec["containers"][0]["securityContext"] == RESTRICTED_CONTAINER


def test_model_pods_without_a_security_context_are_refused_there(
    cluster: Cluster, namespace: str
) -> None:
    _restricted(cluster, namespace)
    with running_operator(cluster, namespace):
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=onion_yaml("plain", []))
        ready, refused = _admitted(cluster, namespace, "plain-core")
        assert ready == 0
        assert "violates PodSecurity" in refused and "runAsNonRoot" in refused
