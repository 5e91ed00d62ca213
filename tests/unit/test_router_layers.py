"""Holding logic of the layer tracker, with an in-memory link (no HTTP, no cluster)."""

from __future__ import annotations

import asyncio
import time

import pytest

from onion_contract.router_config import parse_config
from onion_router.layers import LayerLink, LayerTracker, LeaseMissing, PhaseSink, Refused


class MemoryLink:
    def __init__(self, phases: dict[str, str], missing: bool = False) -> None:
        self.phases = phases
        self.missing = missing
        self.renewed: list[str] = []
        self.sink: PhaseSink | None = None

    async def start(self, on_phases: PhaseSink) -> None:
        self.sink = on_phases
        on_phases(self.phases)

    async def renew(self, lease: str) -> None:
        if self.missing:
            raise LeaseMissing(f"demand Lease {lease} does not exist")
        self.renewed.append(lease)

    async def close(self) -> None:
        return None


def layers(link: LayerLink, wake: float = 0.3, queue: int = 2) -> LayerTracker:
    config = parse_config(
        {
            "maxQueuePerLayer": queue,
            "layers": [
                {"name": "core", "url": "http://127.0.0.1:1", "model": "c"},
                {
                    "name": "mid",
                    "url": "http://127.0.0.1:2",
                    "model": "m",
                    "managed": True,
                    "lease": "x-mid-demand",
                    "wakeTimeoutSeconds": wake,
                },
            ],
        }
    )
    return LayerTracker(config, link)


async def test_unmanaged_layers_are_always_ready() -> None:
    tracker = layers(MemoryLink({"core": "Dormant"}))
    await tracker.start()
    assert tracker.phase("core") == "Ready" and tracker.phase("mid") == "Unknown"
    async with tracker.admit("core") as admission:
        assert admission.ready and await admission.wait()
    await tracker.close()


async def test_wait_never_admits_before_ready_and_raises_at_the_deadline() -> None:
    link = MemoryLink({"mid": "Waking"})
    tracker = layers(link, wake=0.3)
    await tracker.start()
    started = time.monotonic()
    async with tracker.admit("mid") as admission:
        assert link.renewed == ["x-mid-demand"]  # demand at once on a wake
        with pytest.raises(Refused) as err:
            while not await admission.wait(0.05):
                assert not admission.inflight
    assert time.monotonic() - started >= 0.3
    assert err.value.status == 503 and err.value.code == "wake_timeout"
    assert tracker.snapshot()[1]["queued"] == 0
    await tracker.close()


async def test_ready_releases_waiters_and_failed_refuses_them() -> None:
    link = MemoryLink({"mid": "Dormant"})
    tracker = layers(link, wake=5)
    await tracker.start()
    assert link.sink is not None
    async with tracker.admit("mid") as admission:
        waiter = asyncio.ensure_future(admission.wait())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        link.sink({"mid": "Ready"})
        assert await asyncio.wait_for(waiter, 2) is True
        assert tracker.snapshot()[1]["inflight"] == 1
    link.sink({"mid": "Failed"})
    async with tracker.admit("mid") as admission:
        with pytest.raises(Refused, match="failed to start"):
            await admission.wait()
    await tracker.close()


async def test_queue_bound_and_missing_lease() -> None:
    tracker = layers(MemoryLink({"mid": "Dormant"}), queue=1)
    await tracker.start()
    async with tracker.admit("mid"):
        with pytest.raises(Refused) as err:
            async with tracker.admit("mid"):
                pass
        assert err.value.status == 429 and err.value.retry_after
    await tracker.close()
    tracker = layers(MemoryLink({"mid": "Dormant"}, missing=True))
    await tracker.start()
    with pytest.raises(Refused, match="x-mid-demand does not exist"):
        async with tracker.admit("mid"):
            pass
    assert tracker.snapshot()[1]["queued"] == 0
    await tracker.close()
