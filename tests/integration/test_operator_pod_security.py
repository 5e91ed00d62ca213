"""The router pods the operator creates pass Pod Security `restricted` (model pods need
`baseline`: engine images run as root; see README Limits)."""

from __future__ import annotations

import pytest

from tests.support.cluster import Cluster
from tests.support.operator import onion_yaml, running_operator
from tests.support.waiting import wait_until

pytestmark = pytest.mark.cluster


def test_router_pods_are_admitted_where_restricted_is_enforced(
    cluster: Cluster, namespace: str
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    with running_operator(cluster, namespace):
        cluster.kubectl("-n", namespace, "apply", "-f", "-", input=onion_yaml("sec", []))

        def router_ready() -> int:
            dep = cluster.kubectl_json("-n", namespace, "get", "deployment", "sec-router")
            return int((dep.get("status") or {}).get("readyReplicas") or 0)

        def rejected() -> str:
            events = cluster.kubectl_json("-n", namespace, "get", "events")["items"]
            return "; ".join(
                e["message"]
                for e in events
                if "sec-router" in e["involvedObject"]["name"] and e["reason"] == "FailedCreate"
            )

        wait_until(
            lambda: cluster.exists("-n", namespace, "deployment", "sec-router"),
            timeout=30,
            what="router Deployment",
        )
        wait_until(lambda: router_ready() or rejected(), timeout=60, what="router pod admitted")
        assert rejected() == ""
        assert router_ready() == 1
