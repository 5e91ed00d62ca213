"""A work queue of Onion keys, as controller-runtime's, with two priorities.

Events add a key, workers run its pass. A key is queued once however often it is added, and never
handled by two workers at once (an add while its pass runs queues one more pass after it). An
`EVENT` (a change of demand, readiness or spec; a deadline a plan named) is always taken before the
`BACKLOG` (the pass every Onion gets after a start, the periodic drift repair), so a restarted
operator serves a wake while thousands of start-up passes still wait. A key added again at a higher
priority moves up; never down. `add_at` gives each key one timer, for the next deadline its plan
named or its next drift repair; setting it again replaces it.

`Pending` is the pure part (which keys wait, in which order); `WorkQueue` adds the timers and the
workers. `handle` is the operator's pass; `waited` (optional) hears how long each key waited.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from enum import IntEnum

log = logging.getLogger(__name__)


class Priority(IntEnum):
    """Lower runs first."""

    EVENT = 0  # something changed, or a deadline fell due: a request or a user may be waiting
    BACKLOG = 1  # routine: the start-up pass of every Onion, the drift repair

    @property
    def label(self) -> str:
        return self.name.lower()


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


class Pending:
    """The keys waiting for a worker: first in, first out within a priority, every `EVENT` before
    any `BACKLOG`. Each key is held once, at the highest priority it was added with."""

    def __init__(self) -> None:
        self._lanes: tuple[deque[str], ...] = tuple(deque() for _ in Priority)
        self._held: dict[str, tuple[Priority, float]] = {}  # key -> (priority, first added at)

    def add(self, key: str, priority: Priority, now: float) -> bool:
        """Hold `key` at `priority` (or keep its higher one); True if it was not held before."""
        held = self._held.get(key)
        if held is not None and held[0] <= priority:
            return False
        self._held[key] = (priority, now if held is None else held[1])
        # A key that moves up leaves its old lane's entry behind: `pop` skips it.
        self._lanes[priority].append(key)
        return held is None

    def pop(self) -> tuple[str, Priority, float] | None:
        """The next key, its priority and when it was first added; None when nothing waits."""
        for priority, lane in zip(Priority, self._lanes, strict=True):
            while lane:
                key = lane.popleft()
                held = self._held.get(key)
                if held is not None and held[0] == priority:
                    del self._held[key]
                    return key, priority, held[1]
        return None

    def discard(self, key: str) -> None:
        self._held.pop(key, None)

    def priority_of(self, key: str) -> Priority | None:
        held = self._held.get(key)
        return None if held is None else held[0]

    def count(self, priority: Priority | None = None) -> int:
        if priority is None:
            return len(self._held)
        return sum(1 for held, _ in self._held.values() if held == priority)

    def __contains__(self, key: str) -> bool:
        return key in self._held


Handle = Callable[[str, Priority], Awaitable[None]]


class WorkQueue:
    def __init__(
        self,
        handle: Handle,
        workers: int = 16,
        waited: Callable[[float, Priority], None] | None = None,
    ) -> None:
        self._handle = handle
        self._workers = workers
        self._waited = waited
        self._pending = Pending()
        self._work_ready = asyncio.Event()
        self._active: set[str] = set()  # a worker runs its pass now
        self._again: dict[str, Priority] = {}  # added while active: one more pass afterwards
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, key: str, priority: Priority = Priority.EVENT) -> None:
        """Run a pass for `key` as soon as a worker is free (and no more urgent key waits)."""
        if key in self._active:
            self._again[key] = min(priority, self._again.get(key, priority))
            return
        self._pending.add(key, priority, asyncio.get_running_loop().time())
        self._work_ready.set()

    def add_at(self, key: str, when: float, priority: Priority = Priority.EVENT) -> None:
        """Run a pass for `key` at loop time `when` (replacing the key's earlier timer)."""
        self._cancel_timer(key)
        loop = asyncio.get_running_loop()
        if when <= loop.time():
            self.add(key, priority)
            return

        def fire() -> None:
            self._timers.pop(key, None)
            self.add(key, priority)

        self._timers[key] = loop.call_at(when, fire)

    def _cancel_timer(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def forget(self, key: str) -> None:
        """Drop the key's timer and any pass not yet started (a running pass finishes)."""
        self._cancel_timer(key)
        self._again.pop(key, None)
        self._pending.discard(key)

    def timers(self) -> int:
        return len(self._timers)

    def depth(self, priority: Priority | None = None) -> int:
        """Keys waiting for a worker now (of one priority, or all)."""
        return self._pending.count(priority)

    def queued(self, key: str) -> Priority | None:
        """The priority `key` waits at, or None if it does not wait."""
        return self._pending.priority_of(key)

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
            taken = self._pending.pop()
            if taken is None:
                self._work_ready.clear()
                await self._work_ready.wait()
                continue
            key, priority, since = taken
            if self._waited is not None:
                self._waited(asyncio.get_running_loop().time() - since, priority)
            self._active.add(key)
            try:
                await self._handle(key, priority)
            except Exception:  # a pass must never stop a worker; it logs and retries itself
                log.exception("pass for %s failed", key)
            finally:
                self._active.discard(key)
            again = self._again.pop(key, None)
            if again is not None:
                self.add(key, again)
            # Let events (watch callbacks) run between passes: a long backlog must not hold the
            # event loop while a wake's watch event waits to be read.
            await asyncio.sleep(0)
