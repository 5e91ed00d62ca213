"""The watch-fed cache: entries from objects, field ownership, and our own writes on top."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from onion_operator.cache import (
    OnionView,
    Store,
    Written,
    deployment_entry,
    key_of_child,
    key_of_onion,
    lease_entry,
    newer,
    onion_entry,
    owns_field,
)
from onion_operator.planner import Observed

MANAGED = [
    {
        "manager": "onion-operator",
        "operation": "Apply",
        "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}},
    },
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "subresource": "scale",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    },
]


def deployment(rv: str, replicas: int, managed: list[Any] | None = None) -> dict[str, Any]:
    labels = {"onion.dev/onion": "chat", "onion.dev/layer": "mid", "onion.dev/component": "model"}
    return {
        "kind": "Deployment",
        "metadata": {
            "name": "chat-mid",
            "resourceVersion": rv,
            "labels": labels,
            "managedFields": managed or [],
        },
        "spec": {"replicas": replicas},
        "status": {},
    }


def onion(rv: str, status: dict[str, Any], uid: str = "u1") -> dict[str, Any]:
    meta = {"name": "chat", "namespace": "ns", "uid": uid, "generation": 2, "resourceVersion": rv}
    return {"kind": "Onion", "metadata": meta, "spec": {"core": {}}, "status": status}


@pytest.mark.parametrize(
    ("manager", "operation", "path", "owns"),
    [
        ("onion-operator", "Apply", ("spec", "replicas"), True),
        ("onion-operator", "Apply", ("spec", "selector"), False),
        ("onion-operator", "Update", ("spec", "replicas"), False),
        # The HPA scales through the scale subresource: not an entry of the Deployment's own fields.
        ("kube-controller-manager", "Update", ("spec", "replicas"), False),
    ],
)
def test_owns_field(manager: str, operation: str, path: tuple[str, ...], owns: bool) -> None:
    body = {"metadata": {"managedFields": MANAGED}}
    assert owns_field(body, manager, operation, path) is owns


def test_entries() -> None:
    dep = deployment_entry(deployment("7", 2, MANAGED))
    assert (dep.layer, dep.name, dep.resource_version) == ("mid", "chat-mid", "7")
    assert dep.observed == Observed(replicas=2) and dep.apply_owns_replicas
    lease = lease_entry(
        {
            "metadata": {"name": "chat-mid-demand", "labels": {"onion.dev/layer": "mid"}},
            "spec": {"renewTime": "2026-11-28T18:00:00.000000Z"},
        }
    )
    assert lease.layer == "mid" and lease.demand == datetime(2026, 11, 28, 18, tzinfo=UTC)
    cached = onion_entry(onion("5", {"observedGeneration": 2}))
    assert (cached.key, cached.generation, cached.deleting) == ("ns/chat", 2, False)
    assert cached.ref()["metadata"] == {"name": "chat", "namespace": "ns", "uid": "u1"}


@pytest.mark.parametrize(
    ("a", "b", "result"),
    [("11", "9", True), ("9", "11", False), ("9", "9", False), ("x", "1", False)],
)
def test_newer_compares_resource_versions_as_integers(a: str, b: str, result: bool) -> None:
    assert newer(a, b) is result


def view_with(written: Written, dep_rv: str | None, onion_rv: str = "5") -> OnionView:
    deps = [] if dep_rv is None else [deployment_entry(deployment(dep_rv, 0))]
    return written.view(onion_entry(onion(onion_rv, {"seen": "watch"})), deps, [])


def test_our_writes_show_until_the_watch_catches_up() -> None:
    written = Written()
    written.saw("ns/chat", deployment("10", 1))  # the answer to our wake
    written.saw("ns/chat", onion("11", {"seen": "ours"}))  # and to our status patch
    view = view_with(written, "9")  # the watch is still behind both
    assert view.deployments["mid"].observed.replicas == 1
    assert view.onion.status == {"seen": "ours"}
    assert len(written) == 2
    view = view_with(written, "12", onion_rv="12")  # the watch has shown them (and more)
    assert view.deployments["mid"].observed.replicas == 0
    assert view.onion.status == {"seen": "watch"}
    assert len(written) == 0  # dropped once stale


def test_a_created_child_shows_before_its_first_watch_event() -> None:
    written = Written()
    written.saw("ns/chat", deployment("10", 0))
    assert view_with(written, None).deployments["mid"].observed.replicas == 0
    written.forget_children("ns/chat")  # it was deleted: only the watch knows now
    assert "mid" not in view_with(written, None).deployments


def test_a_recreated_onion_does_not_inherit_our_old_status() -> None:
    written = Written()
    written.saw("ns/chat", onion("11", {"seen": "ours"}, uid="old"))
    assert view_with(written, None).onion.status == {"seen": "watch"}


def test_a_store_keeps_the_newest_version_of_each_object_by_onion() -> None:
    deployments = Store(deployment_entry, key_of_child)
    assert deployments.put(deployment("10", 1)) == "/chat"  # the list at start
    deployments.put(deployment("9", 0))  # an older version, later (the watch's own listing)
    assert [d.observed.replicas for d in deployments.get("/chat")] == [1]
    deployments.put(deployment("11", 0))
    assert [d.observed.replicas for d in deployments.get("/chat")] == [0]
    other = deployment("12", 1)
    other["metadata"]["name"] = "chat-big"
    deployments.put(other)
    assert sorted(d.name for d in deployments.get("/chat")) == ["chat-big", "chat-mid"]
    assert list(deployments) == ["/chat"] and len(deployments) == 1
    deployments.remove(deployment("13", 0))
    deployments.remove(other)
    assert deployments.get("/chat") == [] and len(deployments) == 0
    deployments.remove(other)  # a deletion seen twice is no error
    deployments.put(other)
    deployments.replace("/chat", [deployment("14", 1)])  # a fresh list: chat-big is gone
    assert [d.name for d in deployments.get("/chat")] == ["chat-mid"]
    deployments.replace("/chat", [])
    assert len(deployments) == 0


def test_a_recreated_onion_replaces_the_deleted_one() -> None:
    onions = Store(onion_entry, key_of_onion)
    onions.put(onion("5", {}, uid="old"))
    onions.remove(onion("6", {}, uid="old"))
    assert onions.put(onion("7", {}, uid="new")) == "ns/chat"
    assert [o.uid for o in onions.get("ns/chat")] == ["new"]
