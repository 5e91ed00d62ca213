"""Bad input: the schema rejects what it can at apply time with a readable message; semantic
errors become an InvalidSpec condition and an Event and leave the cluster as it was.
The examples pass server-side validation and are acted on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from onion_lab.cluster import Cluster
from onion_lab.operator import OperatorProcess, apply_crd
from onion_lab.paths import REPO
from onion_lab.waiting import wait_until
from tests.support.operator import (
    condition,
    onion_events,
    onion_yaml,
    owned_names,
    running_operator,
)

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.fixture
def operator(cluster: Cluster, namespace: str) -> Iterator[OperatorProcess]:
    with running_operator(cluster, namespace) as proc:
        yield proc


LAYER = {"name": "mid", "model": "m"}


@pytest.mark.parametrize(
    ("layers", "spec", "message"),
    [
        ([{"name": "mid"}], {}, "a layer has exactly one of model"),
        (
            [{"name": "mid", "model": "m", "endpoint": "https://x.example"}],
            {},
            "a layer has exactly one of model",
        ),
        ([{**LAYER, "idleTimeout": "0s"}], {}, "must be a positive duration"),
        ([{**LAYER, "wakeTimeout": "ten minutes"}], {}, "spec.layers[0].wakeTimeout"),
        ([LAYER, LAYER], {}, "Duplicate value"),
        ([{**LAYER, "name": "core"}], {}, '"core" and "router" are reserved names'),
        ([{**LAYER, "minReplicas": 2}], {}, "should be less than or equal to 1"),
        ([{**LAYER, "engine": "ollama"}], {}, 'supported values: "tgi", "vllm", "llamacpp"'),
        (
            [{**LAYER, "escalation": {"policy": "self", "via": "smoke"}}],
            {},
            'supported values: "sentinel", "toolCall"',
        ),
        (
            [{**LAYER, "escalation": {"policy": "self", "toolName": "ask an expert"}}],
            {},
            "spec.layers[0].escalation.toolName",
        ),
        (
            [{**LAYER, "rules": [{"regex": "a", "keywords": ["b"]}]}],
            {},
            "a rule has exactly one of regex, keywords, minPromptTokens",
        ),
        (
            [LAYER],
            {"modelCache": {"pvcName": "a", "size": "1Gi"}},
            "modelCache needs exactly one of pvcName",
        ),
        ([], {"maxAwakeLayers": 0}, "spec.maxAwakeLayers"),
        (
            [{**LAYER, "apiKeySecretRef": {"name": "s", "key": "k"}}],
            {},
            "apiKeySecretRef, caSecretRef and headers apply only to an endpoint layer",
        ),
        (
            [{"name": "x", "endpoint": "https://x.example", "caSecretRef": {"name": "s"}}],
            {},
            "spec.layers[0].caSecretRef.key: Required value",
        ),
        (
            [{**LAYER, "escalation": {"policy": "verify", "targetRate": 1}}],
            {},
            "spec.layers[0].escalation.targetRate in body should be less than 1",
        ),
        (
            [{**LAYER, "escalation": {"policy": "confidence", "targetRate": 0}}],
            {},
            "spec.layers[0].escalation.targetRate in body should be greater than 0",
        ),
        (
            [{**LAYER, "escalation": {"policy": "self", "targetRate": 0.2}}],
            {},
            "targetRate needs policy confidence, verify or learned",
        ),
        (
            [{**LAYER, "escalation": {"targetRate": 0.2, "window": 10, "minSamples": 20}}],
            {},
            "minSamples must not exceed window",
        ),
        (
            [{**LAYER, "escalation": {"policy": "learned", "threshold": 0.5}}],
            {},
            "policy learned needs model",
        ),
        (
            [{**LAYER, "escalation": {"policy": "learned", "model": {"key": "m.json"}}}],
            {},
            "a learned model in an Onion names its configMap",
        ),
        (
            [
                {
                    **LAYER,
                    "escalation": {"earlyWake": {"model": {"configMap": "p"}, "probability": 2}},
                }
            ],
            {},
            "escalation.earlyWake.probability in body should be less than or equal to 1",
        ),
    ],
)
def test_schema_rejects_with_a_readable_message(
    cluster: Cluster,
    namespace: str,
    layers: list[dict[str, Any]],
    spec: dict[str, Any],
    message: str,
) -> None:
    apply_crd(cluster)
    out = cluster.kubectl(
        "-n", namespace, "apply", "-f", "-", input=onion_yaml("bad", layers, **spec), check=False
    )
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


def test_core_replicas_must_be_positive(cluster: Cluster, namespace: str) -> None:
    apply_crd(cluster)
    body = yaml.safe_load(onion_yaml("bad", []))
    body["spec"]["core"]["replicas"] = 0
    out = cluster.kubectl(
        "-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(body), check=False
    )
    assert "spec.core.replicas: Invalid value: 0" in out.stderr, out.stderr


def test_semantic_error_is_a_condition_and_changes_nothing(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    bad = [{"name": "mid", "model": "m", "rules": [{"regex": "(?i)prove|(unclosed"}]}]
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", bad))
    cond = wait_until(
        lambda: (c := condition(cluster, ns, "chat", "InvalidSpec")).get("status") == "True" and c,
        timeout=20,
        what="InvalidSpec",
    )
    assert (
        "spec.layers[0].rules[0]: regex '(?i)prove|(unclosed' does not compile" in (cond["message"])
    )
    assert cond["observedGeneration"] == 1
    assert condition(cluster, ns, "chat", "Ready")["status"] == "False"
    wait_until(
        lambda: any(
            e.startswith("InvalidSpec: spec.layers[0].rules[0]") for e in onion_events(cluster, ns)
        ),
        timeout=10,
        what="Event",
    )
    assert owned_names(cluster, ns, "deployments", "chat") == set()

    # A working spec, then a semantic error: the running children stay exactly as they were.
    good = [{"name": "mid", "model": "m", "rules": [{"regex": "(?i)prove"}]}]
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", good))
    wait_until(
        lambda: condition(cluster, ns, "chat", "InvalidSpec").get("status") == "False",
        timeout=20,
        what="valid again",
    )
    wait_until(
        lambda: "chat-mid" in owned_names(cluster, ns, "deployments", "chat"),
        timeout=20,
        what="children",
    )
    before = cluster.kubectl_json("-n", ns, "get", "configmap", "chat-router")["data"]
    too_many_warm = [
        {"name": "a", "model": "m", "minReplicas": 1},
        {"name": "b", "model": "m", "minReplicas": 1},
    ]
    cluster.kubectl(
        "-n", ns, "apply", "-f", "-", input=onion_yaml("chat", too_many_warm, maxAwakeLayers=1)
    )
    cond = wait_until(
        lambda: (c := condition(cluster, ns, "chat", "InvalidSpec")).get("status") == "True" and c,
        timeout=20,
        what="InvalidSpec again",
    )
    assert "maxAwakeLayers=1 is smaller than the number of warm layers" in cond["message"]
    assert cond["observedGeneration"] == 3
    assert owned_names(cluster, ns, "deployments", "chat") == {
        "chat-core",
        "chat-mid",
        "chat-router",
    }
    assert cluster.kubectl_json("-n", ns, "get", "configmap", "chat-router")["data"] == before


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: Path(p).name)
def test_examples_pass_server_side_validation(
    cluster: Cluster, namespace: str, example: Path
) -> None:
    apply_crd(cluster)
    out = cluster.kubectl("-n", namespace, "apply", "--dry-run=server", "-f", str(example))
    assert "created (server dry run)" in out.stdout


def test_example_is_acted_on(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    example = REPO / "examples" / "gpu-tgi.yaml"
    cluster.kubectl("-n", namespace, "apply", "-f", str(example))
    wait_until(
        lambda: (
            owned_names(cluster, namespace, "deployments", "assistant")
            == {"assistant-core", "assistant-mid", "assistant-big", "assistant-router"}
        ),
        timeout=30,
        what="children of the example",
    )
    dep = cluster.kubectl_json("-n", namespace, "get", "deployment", "assistant-big")
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "ghcr.io/huggingface/text-generation-inference:3.3.4"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "assistant-model-cache"
    assert dep["spec"]["replicas"] == 0
    assert owned_names(cluster, namespace, "persistentvolumeclaims", "assistant") == {
        "assistant-model-cache"
    }
    # coldStart: a pre-pull DaemonSet per layer and a prefetch Job per layer model, accepted.
    wait_until(
        lambda: (
            owned_names(cluster, namespace, "daemonsets", "assistant")
            == {"assistant-mid-pull", "assistant-big-pull"}
            and len(owned_names(cluster, namespace, "jobs", "assistant")) == 2
        ),
        timeout=30,
        what="the example's pre-pull DaemonSets and prefetch Jobs",
    )
