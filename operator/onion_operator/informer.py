"""List once, then watch from that list: what feeds the operator's caches (client-go's reflector).

An `Informer` follows one kind (a label selector, one namespace or all). `sync()` lists it, 200
objects a page (a page is parsed at once: smaller pages let a wake's event run sooner), hands
each object to `on_event("LISTED", obj)` and remembers the list's resourceVersion; `run()` then
watches every change after it, forever: `ADDED`, `MODIFIED`, `DELETED`. Bookmarks keep the
resourceVersion fresh, so a quiet kind rarely has to list again; when the server no longer has it
(410 Gone), the informer lists again and reports as `DELETED` whatever the new list lacks, so no
deletion is ever lost. A kind followed only for its deletions (`changes_only`) is not listed at
all: one object is read to learn where the watch starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from onion_operator.kube import RETRYABLE, ApiError, Kube

log = logging.getLogger(__name__)

Obj = dict[str, Any]
OnEvent = Callable[[str, Obj], None]  # (LISTED | ADDED | MODIFIED | DELETED, the object)

Gone = 410
LISTED = "LISTED"


@dataclass(frozen=True)
class Source:
    """What an informer follows."""

    kind: str
    selector: str  # a label selector, `a=b,c` (c: present)
    namespace: str | None  # None: every namespace
    changes_only: bool = False  # no initial list: only what changes after the start

    def __str__(self) -> str:
        return f"{self.kind} ({self.selector}) in {self.namespace or 'all namespaces'}"


def _name(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def _stub(obj: Obj) -> Obj:
    """What is kept of an object to report its deletion: its name and labels (the caches key
    children by their Onion's label)."""
    meta = obj.get("metadata") or {}
    keep = {k: meta[k] for k in ("namespace", "name", "labels") if k in meta}
    return {"metadata": keep}


class Informer:
    def __init__(
        self,
        kube: Kube,
        source: Source,
        on_event: OnEvent,
        *,
        timeout_seconds: int = 300,
        page: int = 200,  # each page parsed holds the event loop: ~30 ms at 200 Deployments
        max_retry_seconds: float = 5.0,  # a wake waits for the watch: retry soon, it is one request
    ) -> None:
        self.kube = kube
        self.source = source
        self.on_event = on_event
        self.timeout_seconds = timeout_seconds
        self.page = page
        self.max_retry_seconds = max_retry_seconds
        self.resource_version = ""
        self.synced = False  # the last list is what the watch goes on from
        self.listed = asyncio.Event()  # set once the first list is handed over
        self._known: dict[tuple[str, str], Obj] = {}  # what a list again compares with

    async def sync(self) -> None:
        """List the kind (or, changes only, learn where to start) and hand over every object."""
        s = self.source
        if s.changes_only:
            self.resource_version = await self.kube.current_version(s.kind, s.namespace, s.selector)
            self.synced = True
            self.listed.set()
            return
        listed: dict[tuple[str, str], Obj] = {}
        pages = self.kube.list_in_pages(s.kind, s.namespace, s.selector, self.page)
        async for items, version in pages:
            for obj in items:
                listed[_name(obj)] = _stub(obj)
                self.on_event(LISTED, obj)
            self.resource_version = version
            await asyncio.sleep(0)  # a page at a time: events run in between, none waits long
        for gone in self._known.keys() - listed.keys():  # deleted while nobody watched
            self.on_event("DELETED", self._known[gone])
        self._known = listed
        self.synced = True
        self.listed.set()

    async def run(self) -> None:
        """List (until the API answers), then watch from the last list, forever (until
        cancelled); list again when it must. `listed` says when the first list is in."""
        delay = 0.5
        while True:
            try:
                if not self.synced:
                    await self.sync()
                await self._watch()
                delay = 0.5
            except RETRYABLE as e:
                if isinstance(e, ApiError) and e.status == Gone:
                    log.info("%s: resourceVersion expired, listing again", self.source)
                    self.synced = False
                    continue
                log.warning("watching %s failed (again in %.0fs): %s", self.source, delay, e)
                await asyncio.sleep(delay)
                delay = min(self.max_retry_seconds, delay * 2)

    async def _watch(self) -> None:
        """One watch request, until the server ends it."""
        s = self.source
        events = self.kube.watch(
            s.kind, s.namespace, s.selector, self.resource_version, self.timeout_seconds
        )
        async for event in events:
            kind, obj = event["type"], event["object"]  # (an ERROR event: Watch raises it)
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                self.resource_version = str(version)
            if kind == "BOOKMARK":
                continue
            if not s.changes_only:
                if kind == "DELETED":
                    self._known.pop(_name(obj), None)
                else:
                    self._known[_name(obj)] = _stub(obj)
            self.on_event(kind, obj)
