"""Fixtures for tests against the API server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from onion_lab.cluster import Cluster
from onion_lab.operator import OperatorProcess
from onion_lab.paths import REPO
from tests.support.operator import running_operator


@pytest.fixture
def operator(cluster: Cluster, namespace: str) -> Iterator[OperatorProcess]:
    """An `onion-operator` process watching the test's namespace, stopped afterwards."""
    with running_operator(cluster, namespace) as proc:
        yield proc


RBAC = REPO / "operator" / "rbac.yaml"


@pytest.fixture
def restricted(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Cluster]:
    """A kubeconfig whose user is a ServiceAccount bound to the reference ClusterRoles."""
    ns = namespace
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(RBAC))
    cluster.kubectl("-n", ns, "create", "serviceaccount", "onion-operator")
    cluster.kubectl(
        "-n",
        ns,
        "create",
        "rolebinding",
        "onion-operator",
        "--clusterrole=onion-operator",
        f"--serviceaccount={ns}:onion-operator",
    )
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        f"onion-operator-{ns}",
        "--clusterrole=onion-operator-discovery",
        f"--serviceaccount={ns}:onion-operator",
    )
    token = cluster.kubectl("-n", ns, "create", "token", "onion-operator").stdout.strip()
    config = json.loads(Path(cluster.kubeconfig).read_text())
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    for ctx in config["contexts"]:
        ctx["context"]["user"] = "operator"
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    try:
        yield Cluster(str(path), cluster.bin_dir, local=cluster.local)
    finally:
        cluster.kubectl("delete", "clusterrolebinding", f"onion-operator-{ns}", check=False)
