"""The work queue: one pass per key at a time, adds folded together, timers per key, every event
before any backlog."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from onion_operator.workqueue import Pending, Priority, WorkQueue, next_repair, spread

EVENT, BACKLOG = Priority.EVENT, Priority.BACKLOG


class Recorder:
    """A pass that records which keys ran, and how many ran at once per key."""

    def __init__(self, hold: float = 0.0) -> None:
        self.runs: Counter[str] = Counter()
        self.order: list[tuple[str, Priority]] = []
        self.running: Counter[str] = Counter()
        self.most_at_once = 0
        self.hold = hold
        self.started = asyncio.Event()

    async def __call__(self, key: str, priority: Priority = EVENT) -> None:
        self.order.append((key, priority))
        self.running[key] += 1
        self.most_at_once = max(self.most_at_once, self.running[key])
        self.started.set()
        await asyncio.sleep(self.hold)
        self.runs[key] += 1
        self.running[key] -= 1


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


async def test_adds_of_a_queued_key_fold_into_one_pass() -> None:
    rec = Recorder()
    queue = WorkQueue(rec, workers=2)
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    queue.start()
    await settle()
    await queue.stop()
    assert rec.runs == {"a": 1, "b": 1}


async def test_an_add_during_a_pass_runs_once_more_after_it_never_alongside() -> None:
    rec = Recorder(hold=0.05)
    queue = WorkQueue(rec, workers=4)
    queue.start()
    queue.add("a")
    await rec.started.wait()
    for _ in range(3):
        queue.add("a")
    await settle(0.2)
    await queue.stop()
    assert rec.runs["a"] == 2 and rec.most_at_once == 1


async def test_a_failing_pass_does_not_stop_the_worker(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[str] = []

    async def handle(key: str, _: Priority) -> None:
        runs.append(key)
        if key == "bad":
            raise RuntimeError("boom")

    queue = WorkQueue(handle, workers=1)
    queue.start()
    queue.add("bad")
    queue.add("good")
    await settle()
    await queue.stop()
    assert runs == ["bad", "good"]
    assert "pass for bad failed" in caplog.text


async def test_timers_run_a_key_at_its_time_and_a_new_time_replaces_the_old() -> None:
    rec = Recorder()
    queue = WorkQueue(rec)
    queue.start()
    loop = asyncio.get_running_loop()
    queue.add_at("a", loop.time() + 0.05)
    queue.add_at("a", loop.time() + 0.15)  # replaces: no pass at 0.05
    queue.add_at("b", loop.time() - 1)  # already due: runs now
    assert queue.timers() == 1
    await settle(0.1)
    assert rec.runs == {"b": 1}
    await settle(0.1)
    assert rec.runs == {"a": 1, "b": 1} and queue.timers() == 0
    await queue.stop()


async def test_forget_drops_the_timer_and_a_queued_pass() -> None:
    rec = Recorder()
    queue = WorkQueue(rec)
    queue.add("a")
    queue.add_at("b", asyncio.get_running_loop().time() + 0.05)
    queue.forget("a")
    queue.forget("b")
    queue.start()
    await settle(0.1)
    await queue.stop()
    assert rec.runs == {}


def test_spread_is_stable_and_covers_the_period() -> None:
    offsets = [spread(f"ns/onion-{i}", 600.0) for i in range(1000)]
    assert offsets == [spread(f"ns/onion-{i}", 600.0) for i in range(1000)]
    assert all(0 <= o < 600 for o in offsets)
    per_minute = Counter(int(o // 60) for o in offsets)
    assert len(per_minute) == 10 and max(per_minute.values()) < 140  # about 100 each


def test_repairs_keep_each_keys_slot_whenever_its_last_full_pass_was() -> None:
    period = 600.0
    for key in ("ns/a", "ns/b", "ns/c"):
        slot = spread(key, period)
        for after in (0.0, 17.0, 299.0, 301.0, 1234.5):
            due = next_repair(key, after, period)
            assert after + period / 2 <= due < after + 1.5 * period
            assert abs((due - slot) % period) < 1e-6 or abs((due - slot) % period - period) < 1e-6
    # Onions created together (one full pass each within a second) repair spread out later.
    dues = sorted(next_repair(f"ns/onion-{i}", 1000.0 + i / 1000, period) for i in range(1000))
    busiest = max(Counter(int(d // 60) for d in dues).values())
    assert busiest < 140  # about 100 a minute, not 1000 at once


async def test_depth_and_the_wait_for_a_worker_are_reported() -> None:
    waits: list[float] = []
    rec = Recorder(hold=0.05)
    queue = WorkQueue(rec, workers=1, waited=lambda seconds, _: waits.append(seconds))
    for key in ("a", "b", "c"):
        queue.add(key)
    queue.add("a")  # folded: still three keys waiting
    assert queue.depth() == 3
    queue.start()
    await settle(0.3)
    await queue.stop()
    assert queue.depth() == 0
    # One worker: each key waited for the passes before it (about 0, 0.05 and 0.1 s).
    assert len(waits) == 3 and waits == sorted(waits) and waits[2] >= 0.09


def test_pending_serves_every_event_before_any_backlog_first_in_first_out() -> None:
    pending = Pending()
    for i, (key, priority) in enumerate(
        [("b1", BACKLOG), ("e1", EVENT), ("b2", BACKLOG), ("e2", EVENT), ("b3", BACKLOG)]
    ):
        assert pending.add(key, priority, float(i))
    assert pending.count() == 5 and pending.count(EVENT) == 2
    taken = [pending.pop() for _ in range(6)]
    assert [t[0] if t else None for t in taken] == ["e1", "e2", "b1", "b2", "b3", None]


def test_pending_holds_a_key_once_and_moves_it_up_never_down() -> None:
    pending = Pending()
    assert pending.add("a", BACKLOG, 1.0)
    assert pending.add("b", BACKLOG, 2.0)
    assert not pending.add("b", EVENT, 3.0)  # moved up, not a second entry
    assert not pending.add("b", BACKLOG, 4.0)  # and never back down
    assert pending.count() == 2 and pending.priority_of("b") == EVENT
    # The first add's time is kept: the wait is measured from the first add.
    assert pending.pop() == ("b", EVENT, 2.0)
    assert pending.pop() == ("a", BACKLOG, 1.0)
    assert pending.pop() is None  # b's old backlog entry was skipped


def test_pending_discard_and_re_add() -> None:
    pending = Pending()
    pending.add("a", EVENT, 0.0)
    pending.discard("a")
    assert "a" not in pending and pending.pop() is None
    pending.add("a", BACKLOG, 1.0)
    pending.add("a", EVENT, 2.0)
    pending.discard("a")
    pending.add("a", BACKLOG, 3.0)
    assert pending.pop() == ("a", BACKLOG, 3.0) and pending.pop() is None


async def test_a_backlog_of_thousands_does_not_delay_an_event() -> None:
    """The restart the queue exists for: every Onion's start-up pass is queued, then a wake's
    event comes; it is the next pass any worker starts."""
    rec = Recorder(hold=0.001)
    queue = WorkQueue(rec, workers=2)
    for i in range(2000):
        queue.add(f"ns/o{i}", BACKLOG)
    queue.start()
    await settle(0.02)
    queue.add("ns/o1500", EVENT)  # still waiting as backlog: moves up
    queue.add("ns/new", EVENT)
    await settle(0.02)
    order = [key for key, _ in rec.order]
    assert {"ns/o1500", "ns/new"} <= set(order)
    assert max(order.index("ns/o1500"), order.index("ns/new")) < 60  # not after the backlog
    assert ("ns/o1500", EVENT) in rec.order
    assert queue.depth(BACKLOG) > 1000 and queue.depth(EVENT) == 0
    await queue.stop()


async def test_an_event_during_a_backlog_pass_runs_after_it_as_an_event() -> None:
    rec = Recorder(hold=0.05)
    queue = WorkQueue(rec, workers=1)
    queue.start()
    queue.add("a", BACKLOG)
    await rec.started.wait()
    queue.add("a", EVENT)  # never alongside: once more after, at the higher priority
    for i in range(5):
        queue.add(f"b{i}", BACKLOG)
    await settle(0.2)
    await queue.stop()
    assert rec.order[:2] == [("a", BACKLOG), ("a", EVENT)]
    assert rec.most_at_once == 1


async def test_timers_keep_their_priority() -> None:
    rec = Recorder()
    queue = WorkQueue(rec, workers=1)
    loop = asyncio.get_running_loop()
    queue.add_at("repair", loop.time() + 0.02, BACKLOG)
    queue.add_at("deadline", loop.time() + 0.02, EVENT)
    await settle(0.05)  # both due, no worker yet
    queue.start()
    await settle(0.05)
    await queue.stop()
    assert rec.order == [("deadline", EVENT), ("repair", BACKLOG)]
