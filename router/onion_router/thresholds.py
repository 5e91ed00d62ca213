"""Live targetRate thresholds shared between router replicas: each replica publishes its cut as
an annotation of the Onion's thresholds Lease (one per judged layer, JSON), and a replica that
starts (a restart, a scale-up) begins from the published cut instead of the configured
threshold, until it has minSamples scores of its own. Last writer wins: replicas on the same
traffic settle near the same cut anyway; this only spares a new one its warm-up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Mapping
from typing import Protocol

from onion_contract.names import ANNOTATION_THRESHOLD_PREFIX
from onion_router.adaptive import Threshold

log = logging.getLogger("onion_router.thresholds")
PUBLISH_SECONDS = 30.0


class Annotated(Protocol):
    """The I/O: read and merge-patch one Lease's annotations (kube.KubeLink)."""

    async def annotations(self, lease: str) -> dict[str, str]: ...

    async def annotate(self, lease: str, values: Mapping[str, str]) -> None: ...


def encode(threshold: Threshold) -> str:
    live = threshold.live()
    return json.dumps(
        {"threshold": threshold.value, "tieShare": threshold.tie_share, "samples": live.samples},
        separators=(",", ":"),
    )


def decode(text: str) -> tuple[float, float] | None:
    """(threshold, tie share) from an annotation; None if it is not one."""
    try:
        data = json.loads(text)
        value, share = float(data["threshold"]), float(data.get("tieShare", 0.0))
    except (ValueError, TypeError, KeyError):
        return None
    return (value, share) if math.isfinite(value) and 0.0 <= share <= 1.0 else None


class ThresholdsSync:
    """Seed the adaptive thresholds from the Lease at start, then publish them periodically."""

    def __init__(
        self,
        link: Annotated,
        lease: str,
        thresholds: Mapping[str, Threshold],
        every: float = PUBLISH_SECONDS,
    ) -> None:
        self.link, self.lease, self.every = link, lease, every
        self.adaptive = {n: t for n, t in thresholds.items() if t.target_rate is not None}
        self._task: asyncio.Task[None] | None = None
        self._published: dict[str, str] = {}

    async def start(self) -> None:
        try:
            found = await self.link.annotations(self.lease)
        except Exception as err:  # the router serves anyway, from the configured thresholds
            log.warning("reading published thresholds from Lease %s failed: %s", self.lease, err)
            found = {}
        for name, threshold in self.adaptive.items():
            cut = decode(found.get(ANNOTATION_THRESHOLD_PREFIX + name, ""))
            if cut is not None:
                threshold.seed(*cut)
                log.info("layer %s starts from the published threshold %.4f", name, cut[0])
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def publish(self) -> None:
        values = {
            ANNOTATION_THRESHOLD_PREFIX + name: encode(t)
            for name, t in self.adaptive.items()
            if t.adapting
        }
        changed = {k: v for k, v in values.items() if self._published.get(k) != v}
        if changed:
            await self.link.annotate(self.lease, changed)
            self._published.update(changed)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.publish()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("publishing thresholds on Lease %s failed: %s", self.lease, err)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            with contextlib.suppress(Exception):
                await self.publish()
