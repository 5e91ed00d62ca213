"""The informer on a real API server: one list, then every change after it; a watch the server
ends is taken up where it stopped; a list again reports what was deleted meanwhile; a kind
followed for its deletions is never listed. (A 410 Gone cannot be had on cue here: the API
server's watch cache serves even versions etcd compacted. tests/unit/test_operator_informer.py
answers one.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from onion_lab.cluster import Cluster
from onion_operator.informer import LISTED, Informer, Source
from onion_operator.kube import Kube

pytestmark = pytest.mark.cluster


def configmap(cluster: Cluster, ns: str, name: str, value: str, *, label: str = "x") -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": {"test/informer": label}},
        "data": {"v": value},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))


class Seen:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []  # (type, name, data v)
        self.new = asyncio.Event()

    def __call__(self, type_: str, obj: dict[str, Any]) -> None:
        value = (obj.get("data") or {}).get("v", "")
        self.events.append((type_, obj["metadata"]["name"], value))
        self.new.set()

    async def until(self, wanted: tuple[str, str, str]) -> None:
        async with asyncio.timeout(15):
            while wanted not in self.events:
                self.new.clear()
                await self.new.wait()


async def test_one_list_then_every_change_even_across_reconnects(
    cluster: Cluster, namespace: str
) -> None:
    ns = namespace
    configmap(cluster, ns, "a", "1")
    configmap(cluster, ns, "b", "1")
    configmap(cluster, ns, "other", "1", label="y")  # not selected
    kube = await Kube.connect(cluster.kubeconfig)
    seen = Seen()
    # A 2 s server timeout: the stream ends and is opened again several times in this test.
    feed = Informer(kube, Source("ConfigMap", "test/informer=x", ns), seen, timeout_seconds=2)
    try:
        await feed.sync()
        assert sorted(seen.events) == [(LISTED, "a", "1"), (LISTED, "b", "1")]
        listed_at = feed.resource_version
        task = asyncio.create_task(feed.run())
        configmap(cluster, ns, "a", "2")
        await seen.until(("MODIFIED", "a", "2"))
        await asyncio.sleep(3)  # past the server's timeout: a new watch from where it stopped
        configmap(cluster, ns, "c", "1")
        cluster.kubectl("-n", ns, "delete", "configmap", "b")
        await seen.until(("DELETED", "b", "1"))
        await seen.until(("ADDED", "c", "1"))
        assert int(feed.resource_version) > int(listed_at)
        task.cancel()
        # One list: no object was delivered twice, nothing unselected at all.
        assert [e for e in seen.events if e[0] == LISTED] == [
            (LISTED, "a", "1"),
            (LISTED, "b", "1"),
        ]
        assert not any(name == "other" for _, name, _ in seen.events)

        # The watch could not be resumed (410 Gone, as after a long disconnect): the next list
        # reports as deleted what it lacks, even though no watch event said so.
        cluster.kubectl("-n", ns, "delete", "configmap", "c")
        feed.synced = False
        seen.events.clear()
        await feed.sync()
        assert sorted(seen.events) == [("DELETED", "c", ""), (LISTED, "a", "2")]
    finally:
        await kube.close()


async def test_a_kind_followed_for_deletions_is_not_listed(
    cluster: Cluster, namespace: str
) -> None:
    ns = namespace
    configmap(cluster, ns, "a", "1")
    kube = await Kube.connect(cluster.kubeconfig)
    seen = Seen()
    feed = Informer(kube, Source("ConfigMap", "test/informer=x", ns, changes_only=True), seen)
    try:
        await feed.sync()
        assert seen.events == [] and feed.resource_version
        task = asyncio.create_task(feed.run())
        await asyncio.sleep(0.5)
        cluster.kubectl("-n", ns, "delete", "configmap", "a")
        await seen.until(("DELETED", "a", "1"))
        task.cancel()
    finally:
        await kube.close()
