"""A work queue of Onion keys, as controller-runtime's: events add a key, passes run it.

A key is queued once however often it is added, and never handled by two workers at once (an add
while its pass runs queues one more pass after it). `add_at` gives each key one timer, for the
next deadline its plan named or its next drift repair; setting it again replaces it. No I/O here:
`handle` is the operator's pass; `waited` (optional) hears how long each key waited for a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


def spread(key: str, period: float) -> float:
    """A stable offset in [0, period) for `key`, so periodic work on many keys is spread out."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * period


def next_repair(key: str, after: float, period: float) -> float:
    """The key's next drift repair: the first time at least half a period after `after` that
    falls in the key's own slot of the period, so repairs stay spread however the keys came."""
    slot = spread(key, period)
    earliest = after + period / 2
    return earliest + (slot - earliest) % period


class WorkQueue:
    def __init__(
        self,
        handle: Callable[[str], Awaitable[None]],
        workers: int = 16,
        waited: Callable[[float], None] | None = None,
    ) -> None:
        self._handle = handle
        self._workers = workers
        self._waited = waited
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._queued: dict[str, float] = {}  # in _ready, not yet taken: loop time queued
        self._active: set[str] = set()  # a worker runs its pass now
        self._again: set[str] = set()  # added while active: one more pass afterwards
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, key: str) -> None:
        """Run a pass for `key` as soon as a worker is free."""
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued[key] = asyncio.get_running_loop().time()
            self._ready.put_nowait(key)

    def add_at(self, key: str, when: float) -> None:
        """Run a pass for `key` at loop time `when` (replacing the key's earlier timer)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        if when <= loop.time():
            self.add(key)
            return

        def fire() -> None:
            self._timers.pop(key, None)
            self.add(key)

        self._timers[key] = loop.call_at(when, fire)

    def forget(self, key: str) -> None:
        """Drop the key's timer and any pass not yet started (a running pass finishes)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._again.discard(key)
        self._queued.pop(key, None)  # its entry in _ready is skipped when taken

    def timers(self) -> int:
        return len(self._timers)

    def depth(self) -> int:
        """Keys waiting for a worker now."""
        return len(self._queued)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            if key not in self._queued:
                continue  # forgotten while queued
            since = self._queued.pop(key)
            if self._waited is not None:
                self._waited(asyncio.get_running_loop().time() - since)
            self._active.add(key)
            try:
                await self._handle(key)
            except Exception:  # a pass must never stop a worker; it logs and retries itself
                log.exception("pass for %s failed", key)
            finally:
                self._active.discard(key)
            if key in self._again:
                self._again.discard(key)
                self.add(key)
