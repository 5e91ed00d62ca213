"""The Helm chart with the real helm binary against a real API server: lint, server-side
validation of the rendered manifests, install / upgrade / uninstall, the values schema, and the
operator running on exactly the RBAC the chart grants (its ServiceAccount's token)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from onion_lab.cluster import Cluster, LocalClusterProcess
from onion_lab.operator import OperatorProcess, wait_established
from onion_lab.paths import REPO
from onion_lab.waiting import wait_until
from tests.support.operator import assert_never_refused, renew_demand, replicas
from tests.support.published_crds import install_published_crds

pytestmark = pytest.mark.cluster

CHART = REPO / "charts" / "onion-of-experts"
CRD_NAME = "onions.onion.dev"
RELEASE_LABEL = "app.kubernetes.io/instance"
DISCOVERY_ONLY = [["customresourcedefinitions"], ["namespaces"]]


@pytest.fixture(scope="module")
def fresh() -> Iterator[Cluster]:
    """A cluster of this module's own where the CRD does not exist yet (helm installs it)."""
    if os.environ.get("ONION_TEST_CLUSTER") == "external":
        pytest.skip("needs a private local cluster to install and keep the CRD")
    with LocalClusterProcess() as local:
        yield local


@pytest.fixture
def ns(fresh: Cluster) -> Iterator[str]:
    with fresh.new_namespace("h") as name:
        yield name


def helm(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [cluster.tool("helm"), *args],
        capture_output=True,
        text=True,
        env=cluster.env(),
        timeout=180,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def server_version(cluster: Cluster) -> str:
    info = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    return str(info["serverVersion"]["gitVersion"])


def release_objects(cluster: Cluster, kinds: str, release: str, *scope: str) -> set[str]:
    items = cluster.kubectl_json("get", kinds, *scope, "-l", f"{RELEASE_LABEL}={release}")["items"]
    return {
        f"{i['kind']}/{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" for i in items
    }


def test_lint_default_and_scoped_values(cluster: Cluster) -> None:
    helm(cluster, "lint", "--strict", str(CHART))
    helm(
        cluster,
        *("lint", "--strict", str(CHART)),
        *("--set", "operator.watchNamespaces={a,b}", "--set", "exampleOnion.enabled=true"),
    )
    # Monitors of a port that is not served would scrape nothing: refused with the reason.
    done = helm(
        cluster,
        *("template", "rel", str(CHART), "--kube-version", server_version(cluster)),
        *("--set", "monitoring.serviceMonitor.enabled=true"),
        *("--set", "operator.metrics.enabled=false"),
        check=False,
    )
    assert done.returncode != 0
    assert "monitoring.serviceMonitor.enabled needs operator.metrics.enabled" in done.stderr


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "exampleOnion.enabled=true", "--set", "operator.leaderElection.enabled=false"],
        ["--set", "operator.watchNamespaces={NS}", "--set", "exampleOnion.enabled=true"],
        [
            *("--set", "monitoring.serviceMonitor.enabled=true"),
            *("--set", "monitoring.grafanaDashboard.enabled=true"),
        ],
    ],
    ids=["all-namespaces", "example-no-leader", "scoped", "monitoring"],
)
def test_rendered_manifests_pass_server_side_validation(
    cluster: Cluster, namespace: str, values: list[str]
) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    wait_established(cluster, CRD_NAME)
    monitoring = any(v.startswith("monitoring.") for v in values)
    if monitoring:  # prometheus-operator's CRDs, as published
        install_published_crds(cluster, "prometheus-operator")
    values = [v.replace("NS", namespace) for v in values]
    rendered = helm(
        cluster,
        *("template", "rel", str(CHART), "--namespace", namespace),
        *("--kube-version", server_version(cluster), *values),
    ).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered) if d]
    done = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(server dry run)") == len(kinds)
    if "--set" in values and any("watchNamespaces" in v for v in values):
        assert kinds.count("Role") == 2  # the Onion rules + the leader Lease
        cluster_roles = [
            d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ClusterRole"
        ]
        assert [r["resources"] for r in cluster_roles[0]["rules"]] == DISCOVERY_ONLY
    elif not values:
        assert {"ClusterRole", "ClusterRoleBinding"} <= set(kinds)
    if any("exampleOnion.enabled=true" in v for v in values):
        assert "Onion" in kinds
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    operator = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = operator["containers"][0]
    assert "--metrics-bind-address=:8080" in container["args"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    if monitoring:
        assert {"ServiceMonitor", "PodMonitor"} <= set(kinds)
        board = next(
            d for d in docs if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]
        )
        assert json.loads(board["data"]["onion-of-experts.json"])["uid"] == "onion-of-experts"


def test_install_upgrade_uninstall(fresh: Cluster, ns: str) -> None:
    assert fresh.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0
    # Pod Security "restricted" admission: the operator pod must be admitted there.
    fresh.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    release = "onion-of-experts"  # the usual name: objects are called just that
    helm(
        fresh,
        *("install", release, str(CHART), "--namespace", ns, "--wait", "--timeout", "90s"),
        *("--set", f"operator.watchNamespaces={{{ns}}}", "--set", "exampleOnion.enabled=true"),
    )
    # The CRD came from the chart's crds/ directory; the example Onion was accepted by it.
    fresh.kubectl("get", "crd", CRD_NAME)
    assert fresh.kubectl_json("-n", ns, "get", "onion", "example")["spec"]["core"]["model"]
    deploy = fresh.kubectl_json("-n", ns, "get", "deployment", "onion-of-experts")
    # On a kwok node: objects and readiness (and admission by Pod Security "restricted").
    assert deploy["status"].get("readyReplicas") == 1
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/onion-of-experts/onion:0.1.0"
    assert container["command"] == ["onion-operator"]
    assert container["args"] == [
        f"--namespace={ns}",
        "--leader-lease-seconds=15",
        "--metrics-bind-address=:8080",
    ]
    assert pod["serviceAccountName"] == "onion-of-experts"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    objects = release_objects(
        fresh, "serviceaccounts,roles,rolebindings,deployments", release, "-n", ns
    )
    assert objects == {
        f"ServiceAccount/{ns}/onion-of-experts",
        f"Role/{ns}/onion-of-experts",
        f"Role/{ns}/onion-of-experts-leader",
        f"RoleBinding/{ns}/onion-of-experts",
        f"RoleBinding/{ns}/onion-of-experts-leader",
        f"Deployment/{ns}/onion-of-experts",
    }
    # Cluster-wide only kopf's read-only discovery of CRDs and namespaces.
    assert release_objects(fresh, "clusterroles,clusterrolebindings", release) == {
        f"ClusterRole//{ns}-onion-of-experts",
        f"ClusterRoleBinding//{ns}-onion-of-experts",
    }
    rules = fresh.kubectl_json("get", "clusterrole", f"{ns}-onion-of-experts")["rules"]
    assert [r["resources"] for r in rules] == DISCOVERY_ONLY
    assert all(set(r["verbs"]) == {"list", "watch"} for r in rules)
    notes = helm(fresh, "get", "notes", release, "--namespace", ns).stdout
    assert f"It manages Onions in: {ns}." in notes and "kubectl get onions" in notes

    helm(
        fresh,
        *("upgrade", release, str(CHART), "--namespace", ns, "--reuse-values"),
        *("--set", "operator.verbose=true", "--wait", "--timeout", "90s"),
    )
    deploy = fresh.kubectl_json("-n", ns, "get", "deployment", "onion-of-experts")
    assert "--verbose" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deploy["status"].get("readyReplicas") == 1
    assert deploy["status"].get("updatedReplicas") == 1
    history = json.loads(helm(fresh, "history", release, "-n", ns, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2]
    assert history[-1]["status"] == "deployed"

    crd_uid = fresh.kubectl_json("get", "crd", CRD_NAME)["metadata"]["uid"]
    helm(fresh, "uninstall", release, "--namespace", ns, "--wait", "--timeout", "60s")
    assert (
        release_objects(fresh, "serviceaccounts,roles,rolebindings,deployments", release, "-n", ns)
        == set()
    )
    assert release_objects(fresh, "clusterroles,clusterrolebindings", release) == set()
    # The CRD (and with it every Onion in the cluster) stays.
    assert fresh.kubectl_json("get", "crd", CRD_NAME)["metadata"]["uid"] == crd_uid


def test_all_namespaces_install_uses_a_cluster_role(fresh: Cluster, ns: str) -> None:
    helm(fresh, "install", "cw", str(CHART), "--namespace", ns, "--wait", "--timeout", "90s")
    try:
        deploy = fresh.kubectl_json("-n", ns, "get", "deployment", "cw-onion-of-experts")
        assert deploy["spec"]["template"]["spec"]["containers"][0]["args"][0] == "--all-namespaces"
        assert deploy["status"].get("readyReplicas") == 1
        assert release_objects(fresh, "clusterroles,clusterrolebindings", "cw") == {
            f"ClusterRole//{ns}-cw-onion-of-experts",
            f"ClusterRoleBinding//{ns}-cw-onion-of-experts",
        }
    finally:
        helm(fresh, "uninstall", "cw", "--namespace", ns, "--wait", check=False)
    assert release_objects(fresh, "clusterroles,clusterrolebindings", "cw") == set()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("operator.watchNamespace={a}", "additional properties 'watchNamespace' not allowed"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("operator.replicas=-1", "/operator/replicas"),
        ("operator.watchNamespaces={Bad_Name}", "/operator/watchNamespaces/0"),
    ],
)
def test_bad_values_fail_with_a_schema_message(
    fresh: Cluster, ns: str, setting: str, message: str
) -> None:
    done = helm(fresh, "install", "bad", str(CHART), "-n", ns, "--set", setting, check=False)
    assert done.returncode != 0
    assert "don't meet the specifications of the schema" in done.stderr
    assert message in done.stderr
    assert json.loads(helm(fresh, "list", "-n", ns, "-o", "json").stdout) == []


def token_kubeconfig(cluster: Cluster, namespace: str, sa: str, path: Path) -> Cluster:
    """A kubeconfig that authenticates as the ServiceAccount, so only its RBAC applies."""
    token = cluster.kubectl("-n", namespace, "create", "token", sa, "--duration=1h").stdout.strip()
    admin = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    server = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": server}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [
            {"name": "c", "context": {"cluster": "c", "user": sa, "namespace": namespace}}
        ],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    return Cluster(str(path), cluster.bin_dir, cluster.local)


def test_operator_works_with_exactly_the_chart_rbac(
    fresh: Cluster, ns: str, tmp_path: Path
) -> None:
    """The chart's Role is enough for a full reconcile and a wake, and grants nothing more."""
    helm(
        fresh,
        *("install", "rb", str(CHART), "--namespace", ns),
        *("--set", f"operator.watchNamespaces={{{ns}}}"),
    )
    sa = "rb-onion-of-experts"
    as_sa = ["--as", f"system:serviceaccount:{ns}:{sa}"]

    def can(*args: str) -> bool:
        out = fresh.kubectl("auth", "can-i", *args, *as_sa, check=False).stdout.strip()
        return out == "yes"

    assert can("patch", "onions.onion.dev", "--subresource=status", "-n", ns)
    assert not can("patch", "onions.onion.dev", "-n", ns)  # spec belongs to the user
    assert not can("get", "secrets", "-n", ns)
    assert not can("create", "deployments", "-n", "default")
    assert not can("list", "onions.onion.dev", "--all-namespaces")
    assert not can("escalate", "roles", "-n", ns) and not can("bind", "roles", "-n", ns)

    sa_cluster = token_kubeconfig(fresh, ns, sa, tmp_path / "sa.kubeconfig")
    operator = OperatorProcess(sa_cluster, ns).start()
    try:
        fresh.kubectl("-n", ns, "apply", "-f", str(REPO / "examples" / "demo-local.yaml"))

        def reconciled() -> bool:
            status = fresh.kubectl_json("-n", ns, "get", "onion", "demo").get("status") or {}
            return any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in status.get("conditions") or []
            )

        wait_until(reconciled, timeout=60, what="the Onion reconciled by the SA-bound operator")
        # The router's Role and RoleBinding: created without escalate/bind.
        fresh.kubectl("-n", ns, "get", "role/demo-router", "rolebinding/demo-router")
        fresh.kubectl("-n", ns, "get", "configmap/demo-router", "lease/demo-mid-demand")
        renew_demand(fresh, ns, "demo-mid-demand")
        wait_until(lambda: replicas(fresh, ns, "demo-mid") == 1, timeout=30, what="mid woken")
        leader = fresh.kubectl_json("-n", ns, "get", "lease", "onion-operator-leader")
        assert leader["spec"]["holderIdentity"]
    finally:
        operator.stop()
        helm(fresh, "uninstall", "rb", "--namespace", ns, check=False)
    assert_never_refused(operator.logs())
