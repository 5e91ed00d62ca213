"""What the operator's tests do with an Onion: build it (onion_yaml, managed_layer), act as the
router does (renew_demand), read what the operator made of it (status, events, children), and run
an operator for one test (running_operator; the process itself is onion_lab.operator's)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import yaml

from onion_lab.cluster import Cluster
from onion_lab.operator import OperatorProcess, apply_crd
from onion_lab.waiting import wait_until
from onion_operator.constants import KWOK_READY_DELAY_ANNOTATION
from onion_operator.planner import format_time


def renew_demand(
    cluster: Cluster, namespace: str, lease: str, when: datetime | None = None
) -> datetime:
    """What the router does: patch renewTime (and holderIdentity) of a demand Lease."""
    when = when or datetime.now(UTC)
    patch = json.dumps({"spec": {"renewTime": format_time(when), "holderIdentity": "test-router"}})
    cluster.kubectl("-n", namespace, "patch", "lease", lease, "--type=merge", "-p", patch)
    return when


def layer_status(cluster: Cluster, namespace: str, onion: str, layer: str) -> dict[str, Any]:
    status = cluster.kubectl_json("-n", namespace, "get", "onion", onion).get("status") or {}
    return next((e for e in status.get("layers") or [] if e["name"] == layer), {})


def wait_for_phase(
    cluster: Cluster, namespace: str, layer: str, phase: str, *, timeout: float, what: str
) -> dict[str, Any]:
    """Until the status of Onion `chat` shows `layer` in `phase`; returns that layer's status."""
    return wait_until(
        lambda: (s := layer_status(cluster, namespace, "chat", layer)).get("phase") == phase and s,
        timeout=timeout,
        what=what,
    )


def replicas(cluster: Cluster, namespace: str, name: str) -> int | None:
    out = cluster.kubectl(
        "-n", namespace, "get", "deployment", name, "-o", "jsonpath={.spec.replicas}", check=False
    )
    return int(out.stdout) if out.returncode == 0 and out.stdout else None


DELAY_ANNOTATION = KWOK_READY_DELAY_ANNOTATION


def assert_never_refused(logs: str) -> None:
    """No request of the operator was refused for lack of permission: no "Forbidden" (every 403
    it logs says "403 Forbidden: ...") and no " 403" (not "403" alone: that matched the
    milliseconds of a log timestamp, ",403]")."""
    assert "Forbidden" not in logs and " 403" not in logs, logs[-3000:]


def managed_layer(
    name: str, idle: str | None = None, delay: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A managed layer of model `org/<name>`: `idle` its idleTimeout, `delay` how long its kwok
    pod takes to turn Ready, `fields` any other layer fields."""
    layer: dict[str, Any] = {"name": name, "model": f"org/{name}"}
    if idle is not None:
        layer["idleTimeout"] = idle
    if delay is not None:
        layer["podAnnotations"] = {DELAY_ANNOTATION: delay}
    return {**layer, **fields}


def onion_yaml(
    name: str, layers: list[dict[str, Any]], core: dict[str, Any] | None = None, **spec: Any
) -> str:
    """An Onion with a small core (plus `core` fields) that turns Ready 0.5 s after scheduling
    on kwok."""
    body = {
        "apiVersion": "onion.dev/v1alpha1",
        "kind": "Onion",
        "metadata": {"name": name},
        "spec": {
            "core": {
                "model": "HuggingFaceTB/SmolLM2-360M-Instruct",
                "podAnnotations": {DELAY_ANNOTATION: "500ms"},
                **(core or {}),
            },
            "layers": layers,
            **spec,
        },
    }
    return yaml.safe_dump(body)


def owned_names(cluster: Cluster, namespace: str, kind: str, onion: str) -> set[str]:
    items = cluster.kubectl_json("-n", namespace, "get", kind, "-l", f"onion.dev/onion={onion}")
    return {item["metadata"]["name"] for item in items["items"]}


def onion_events(cluster: Cluster, namespace: str) -> list[str]:
    items = cluster.kubectl_json(
        "-n", namespace, "get", "events", "--field-selector", "involvedObject.kind=Onion"
    )["items"]
    return [f"{e['reason']}: {e['message']}" for e in items]


def condition(cluster: Cluster, namespace: str, onion: str, type_: str) -> dict[str, Any]:
    status = cluster.kubectl_json("-n", namespace, "get", "onion", onion).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


@contextlib.contextmanager
def running_operator(cluster: Cluster, namespace: str, *extra: str) -> Iterator[OperatorProcess]:
    """The CRD applied and an operator watching `namespace`; always stopped afterwards."""
    apply_crd(cluster)
    proc = OperatorProcess(cluster, namespace, *extra).start()
    try:
        yield proc
    finally:
        proc.stop()


def local_router_config(
    cluster: Cluster, ns: str, onion: str, urls: dict[str, str]
) -> dict[str, Any]:
    """The config the operator rendered, with layer URLs pointed at this machine's test servers
    (the pods on kwok nodes run nothing)."""

    def rendered() -> str:
        cm = cluster.kubectl(
            "-n",
            ns,
            "get",
            "configmap",
            f"{onion}-router",
            "-o",
            "jsonpath={.data.config\\.yaml}",
            check=False,
        )
        return cm.stdout if cm.returncode == 0 else ""

    config: dict[str, Any] = yaml.safe_load(wait_until(rendered, timeout=30, what="router config"))
    assert config["kubernetes"] == {"enabled": True, "namespace": ns, "onion": onion}
    for layer in config["layers"]:
        layer["url"] = urls[layer["name"]]
    return config
