"""The local cluster is real: CRDs, the controller-manager, the scheduler, kwok and the GC work."""

from __future__ import annotations

import json

import pytest

from onion_lab.cluster import Cluster
from onion_lab.sockets import is_loopback, listening_addresses
from onion_lab.waiting import wait_until

pytestmark = pytest.mark.cluster

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.test}
spec:
  group: smoke.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
"""


def deployment(name: str, delay: str) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {
                        "labels": {"app": name},
                        "annotations": {"pod-ready.stage.kwok.x-k8s.io/delay": delay},
                    },
                    "spec": {
                        "containers": [
                            {
                                "name": "c",
                                "image": "example.invalid/model:1",
                                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                            }
                        ]
                    },
                },
            },
        }
    )


def test_crd_objects_can_be_created_validated_and_listed(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    wait_until(
        lambda: (
            "Established"
            in cluster.kubectl(
                "get",
                "crd",
                "widgets.smoke.test",
                "-o",
                "jsonpath={.status.conditions[?(@.status=='True')].type}",
            ).stdout
        ),
        what="CRD established",
    )
    good = (
        '{"apiVersion":"smoke.test/v1","kind":"Widget","metadata":{"name":"a"},"spec":{"size":2}}'
    )
    wait_until(
        lambda: (
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=good, check=False).returncode
            == 0
        ),
        what="widget created",
    )
    bad = good.replace('"a"', '"b"').replace('"size":2', '"size":0')
    rejected = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert rejected.returncode != 0
    assert "spec.size" in rejected.stderr
    names = [
        i["metadata"]["name"]
        for i in cluster.kubectl_json("get", "widgets", "-n", namespace)["items"]
    ]
    assert names == ["a"]


def test_deployment_gets_ready_pod_on_kwok_node_after_delay(
    cluster: Cluster, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("model", "2s"))

    def ready_replicas() -> int:
        status = cluster.kubectl_json("get", "deployment", "model", "-n", namespace).get(
            "status", {}
        )
        return int(status.get("readyReplicas", 0))

    wait_until(ready_replicas, timeout=60, what="readyReplicas 1")
    pod = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "app=model")["items"][0]
    assert pod["spec"]["nodeName"].startswith("kwok-node-")
    scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert pod["metadata"]["creationTimestamp"] <= scheduled["lastTransitionTime"]


def test_deleting_owner_garbage_collects_children(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("owner", "0s"))
    wait_until(
        lambda: cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "app=owner")["items"],
        timeout=60,
        what="pod created",
    )
    owner_uid = cluster.kubectl_json("get", "deployment", "owner", "-n", namespace)["metadata"][
        "uid"
    ]
    child = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": "owner",
                        "uid": owner_uid,
                    }
                ],
            },
        }
    )
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=child)
    cluster.kubectl("delete", "deployment", "owner", "-n", namespace, "--wait=false")

    def all_gone() -> bool:
        left = cluster.kubectl(
            "get", "replicasets,pods", "-n", namespace, "-l", "app=owner", "-o", "name"
        ).stdout.strip()
        child_left = cluster.exists("configmap", "child", "-n", namespace)
        return not left and not child_left

    wait_until(all_gone, timeout=60, what="children garbage-collected")


def test_control_plane_listens_on_loopback_only(cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip("only the local cluster's processes can be inspected")
    state_dir = cluster.kubeconfig.rsplit("/", 1)[0]
    with open(f"{state_dir}/state.json") as f:
        pids = list(json.load(f)["pids"].values())
    addresses = listening_addresses(pids)
    assert addresses, "expected the control plane to listen somewhere"
    assert [a for a in addresses if not is_loopback(a)] == []
