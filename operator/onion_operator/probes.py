"""`--metrics-bind-address HOST:PORT`: Prometheus metrics on `/metrics`, `/healthz` (alive) and
`/readyz` (a standby waiting for the leader Lease, or a leader whose caches are filled)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from onion_operator.metrics import OperatorMetrics


@dataclass
class Health:
    """What the probes report; the operator's lifecycle sets it."""

    leading: bool = False
    synced: bool = False  # every cache has its initial listing (handlers.startup)

    def ready(self) -> bool:
        # A standby is ready: it is healthy and waits to lead. A leader is ready once its caches
        # are filled, so a rollout does not count a leader still listing as available.
        return self.synced or not self.leading

    def describe(self) -> dict[str, object]:
        return {
            "ready": self.ready(),
            "role": "leader" if self.leading else "standby",
            "cachesSynced": self.synced,
        }


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (every address) or `[::1]:PORT`."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (for example 0.0.0.0:8080 or :8080)")
    return host.strip("[]") or "0.0.0.0", int(port)


class ProbeServer:
    def __init__(self, metrics: OperatorMetrics, health: Health, address: str) -> None:
        self.metrics = metrics
        self.health = health
        self.host, self.port = parse_address(address)
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"alive": True})  # answering at all: the event loop runs

    async def _readyz(self, _: web.Request) -> web.Response:
        return web.json_response(self.health.describe(), status=200 if self.health.ready() else 503)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # an ephemeral port: learn which (tests)
            addresses = self._runner.addresses
            if addresses:
                self.port = int(addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
