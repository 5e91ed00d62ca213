"""The operator runs with exactly the permissions in operator/rbac.yaml (a ServiceAccount token,
not the admin): the reference RBAC the Helm chart installs is enough and nothing more is used."""

from __future__ import annotations

import pytest

from onion_lab.cluster import Cluster
from onion_lab.operator import OperatorProcess, apply_crd
from onion_lab.waiting import wait_until
from tests.support.operator import (
    assert_never_refused,
    managed_layer,
    onion_yaml,
    renew_demand,
    replicas,
    wait_for_phase,
)

pytestmark = pytest.mark.cluster


def test_operator_works_with_the_reference_rbac(
    cluster: Cluster, namespace: str, restricted: Cluster
) -> None:
    ns = namespace
    apply_crd(cluster)
    denied = restricted.kubectl("-n", "default", "get", "deployments", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr  # really restricted
    proc = OperatorProcess(restricted, ns).start()
    try:
        layer = managed_layer("mid", idle="2s", delay="200ms")
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [layer]))
        wait_for_phase(cluster, ns, "core", "Ready", timeout=30, what="core Ready")
        renew_demand(cluster, ns, "chat-mid-demand")
        wait_for_phase(cluster, ns, "mid", "Ready", timeout=15, what="mid Ready")
        wait_until(lambda: replicas(cluster, ns, "chat-mid") == 0, timeout=15, what="mid asleep")
        events = cluster.kubectl_json("-n", ns, "get", "events")["items"]
        assert {"Waking", "Sleeping"} <= {e["reason"] for e in events}
        assert_never_refused(proc.logs())
    finally:
        proc.stop()
