"""Leader election when the API server is away: waiting, never crashing or leading blind."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from onion_operator.leader import LeaderElection


class FlakyApi:
    """A test double of `Kube` for the leader Lease: refuses `fail` calls, then serves."""

    def __init__(self, fail: int, error: Exception) -> None:
        self.fail, self.error = fail, error
        self.lease: dict[str, Any] | None = None
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.fail:
            raise self.error

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._maybe_fail()
        return self.lease

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail()
        self.lease = {**obj, "metadata": {**obj["metadata"], "resourceVersion": "1"}}
        return self.lease

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail()
        self.lease = obj
        return obj


async def test_acquire_waits_out_an_unreachable_api_server() -> None:
    # Started while kube-apiserver restarts: connection refused three times, then it answers.
    refused = aiohttp.ClientConnectionError("Cannot connect to host 127.0.0.1:6443")
    api = FlakyApi(fail=3, error=refused)
    election = LeaderElection(api, "ns", "me", lease_seconds=2, renew_seconds=0.01)  # type: ignore[arg-type]
    await asyncio.wait_for(election.acquire(), timeout=5)
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] == "me"


async def test_a_leader_that_cannot_renew_in_time_steps_down() -> None:
    api = FlakyApi(fail=0, error=aiohttp.ServerDisconnectedError())
    election = LeaderElection(api, "ns", "me", lease_seconds=0.2, renew_seconds=0.02)  # type: ignore[arg-type]
    await election.acquire()
    api.fail = api.calls + 1000  # from now on every renewal fails (not an OSError: disconnected)
    lost = asyncio.Event()
    await asyncio.wait_for(election.hold(lost), timeout=5)
    assert lost.is_set()
