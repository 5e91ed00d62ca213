"""One active operator: leader election on a coordination.k8s.io Lease.

The same protocol as client-go's leaderelection: the holder renews `renewTime` every
`renew_seconds`; another instance takes over only when it has not been renewed for
`lease_seconds`. A graceful exit releases the Lease so a successor starts at once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from onion_contract import names
from onion_operator.kube import RETRYABLE, ApiError, Kube
from onion_operator.planner import format_time, parse_time

log = logging.getLogger(__name__)


class LeaderElection:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        identity: str,
        lease_seconds: float = 15.0,
        renew_seconds: float = 5.0,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds

    def _lease(self, now: datetime, spec: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {**meta, "name": names.LEADER_LEASE, "namespace": self.namespace},
            "spec": {
                **spec,
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.lease_seconds)),
                "renewTime": format_time(now),
            },
        }

    async def try_acquire(self, now: datetime) -> bool:
        """Take or renew the Lease if it is ours, free or expired; False if someone holds it."""
        current = await self.kube.get("Lease", self.namespace, names.LEADER_LEASE)
        try:
            if current is None:
                new = self._lease(now, {"acquireTime": format_time(now), "leaseTransitions": 0}, {})
                await self.kube.create(new)
                return True
            spec = current.get("spec") or {}
            holder = spec.get("holderIdentity")
            renewed = parse_time(spec.get("renewTime"))
            duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
            expired = renewed is None or (now - renewed).total_seconds() > duration
            if holder and holder != self.identity and not expired:
                return False
            if holder != self.identity:
                spec = {
                    **spec,
                    "acquireTime": format_time(now),
                    "leaseTransitions": int(spec.get("leaseTransitions") or 0) + 1,
                }
            meta = {"resourceVersion": current["metadata"]["resourceVersion"]}
            await self.kube.replace(self._lease(now, spec, meta))
            return True
        except ApiError as e:
            if e.status == 409:  # another instance wrote first
                return False
            raise

    async def acquire(self) -> None:
        """Wait until this instance is the leader, however long the API server is away."""
        announced = False
        unreachable: str | None = None
        while True:
            try:
                if await self.try_acquire(datetime.now(UTC)):
                    break
                if not announced:
                    log.info(
                        "waiting for leadership (Lease %s/%s)", self.namespace, names.LEADER_LEASE
                    )
                    announced = True
            except RETRYABLE as e:  # starting while the API server restarts: wait, not crash
                if str(e) != unreachable:
                    log.warning("reading the leader Lease failed, retrying: %s", e)
                    unreachable = str(e)
            await asyncio.sleep(min(1.0, self.renew_seconds))
        log.info("leading as %s", self.identity)

    async def hold(self, lost: asyncio.Event) -> None:
        """Renew until cancelled; set `lost` if the Lease could not be renewed in time."""
        last_ok = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                if not await self.try_acquire(datetime.now(UTC)):
                    log.error("another instance took the leadership Lease; stopping")
                    lost.set()
                    return
                last_ok = asyncio.get_running_loop().time()
            except RETRYABLE as e:
                # The API may be briefly unreachable; give up before the Lease can expire.
                log.warning("renewing leadership failed: %s", e)
                if asyncio.get_running_loop().time() - last_ok >= self.lease_seconds * 0.8:
                    log.error("could not renew leadership in time; stopping")
                    lost.set()
                    return

    async def release(self) -> None:
        """Give the Lease up so a successor need not wait for it to expire."""
        current = await self.kube.get("Lease", self.namespace, names.LEADER_LEASE)
        if current is None or (current.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        current["spec"]["holderIdentity"] = None
        current["spec"].pop("renewTime", None)
        current["kind"] = "Lease"
        try:
            await self.kube.replace(current)
        except ApiError as e:
            log.warning("releasing leadership failed: %s", e)
