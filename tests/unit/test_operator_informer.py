"""The informer's way through a 410 Gone: list again, report what the new list lacks as deleted,
watch on from the new list. The API server here never answers 410 on cue (its watch cache serves
even versions etcd compacted), so `ExpiringApi`, a test double of the two calls an informer makes,
answers it; tests/integration/test_operator_informer.py runs the informer on the real one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from onion_operator.informer import LISTED, Informer, Source
from onion_operator.kube import ApiError


def obj(name: str, rv: str) -> dict[str, Any]:
    labels = {"onion.dev/onion": "chat"}
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv, "labels": labels}}


class ExpiringApi:
    """Lists `objects`; its first watch answers 410 Gone, the next one an event, then ends."""

    def __init__(self) -> None:
        self.objects = [obj("a", "5"), obj("b", "6")]
        self.lists = 0
        self.watched_from: list[str] = []

    async def list_in_pages(
        self, kind: str, namespace: str | None, selector: str, page: int = 500
    ) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        self.lists += 1
        for one in self.objects:  # a page of one
            yield [one], str(10 * self.lists)

    async def watch(
        self, kind: str, namespace: str | None, selector: str, resource_version: str, _: int = 300
    ) -> AsyncIterator[dict[str, Any]]:
        self.watched_from.append(resource_version)
        if len(self.watched_from) == 1:
            raise ApiError(status=410, reason="Expired: too old resource version")
        yield {"type": "BOOKMARK", "object": obj("", "25")}
        yield {"type": "MODIFIED", "object": obj("a", "26")}
        await asyncio.sleep(3600)


async def test_a_410_lists_again_and_reports_what_was_deleted_meanwhile() -> None:
    api = ExpiringApi()
    seen: list[tuple[str, str]] = []
    deleted: list[dict[str, Any]] = []
    modified = asyncio.Event()

    def on_event(type_: str, o: dict[str, Any]) -> None:
        seen.append((type_, o["metadata"]["name"]))
        if type_ == "DELETED":
            deleted.append(o)
        if type_ == "MODIFIED":
            modified.set()

    feed = Informer(api, Source("ConfigMap", "x", "ns"), on_event)  # type: ignore[arg-type]
    await feed.sync()
    assert seen == [(LISTED, "a"), (LISTED, "b")]
    api.objects = [obj("a", "7")]  # b deleted while the watch was away
    task = asyncio.create_task(feed.run())
    await asyncio.wait_for(modified.wait(), 5)
    task.cancel()
    assert seen[2:] == [(LISTED, "a"), ("DELETED", "b"), ("MODIFIED", "a")]
    assert api.watched_from == ["10", "20"]  # from the first list, then from the second
    assert feed.resource_version == "26"
    # The deletion names the object and keeps its labels: the caches key children by them.
    assert deleted == [
        {"metadata": {"namespace": "ns", "name": "b", "labels": obj("b", "")["metadata"]["labels"]}}
    ]
