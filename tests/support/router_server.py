"""Run the router in-process on a loopback port for tests, and a layer link the test drives
(it plays the operator: sets phases, and sees the demand the router records)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import uvicorn
import yaml

from onion_contract.router_config import RouterConfig, parse_config
from onion_lab.sockets import free_port
from onion_lab.waiting import wait_until
from onion_router.app import create_app
from onion_router.layers import LayerLink, LeaseMissing, PhaseSink

ROUTER_BIN = Path(sys.executable).with_name("onion-router")


class OperatorDouble:
    """A LayerLink for tests: phases set by the test, renewals recorded (thread-safe)."""

    def __init__(
        self, phases: dict[str, str] | None = None, missing: set[str] | None = None
    ) -> None:
        self.phases = dict(phases or {})
        self.missing = set(missing or ())
        self.renewals: list[tuple[float, str]] = []
        self.unreachable = 0  # the next renewals that fail as if the API server were away
        self._sink: PhaseSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, on_phases: PhaseSink) -> None:
        self._sink = on_phases
        self._loop = asyncio.get_running_loop()
        on_phases(dict(self.phases))

    async def renew(self, lease: str) -> None:
        if lease in self.missing:
            raise LeaseMissing(f"demand Lease {lease} does not exist")
        if self.unreachable > 0:
            self.unreachable -= 1
            raise ConnectionRefusedError(111, "Connect call failed (the API server is away)")
        self.renewals.append((time.monotonic(), lease))

    async def close(self) -> None:
        self._sink = None

    def set_phase(self, layer: str, phase: str) -> None:
        self.phases[layer] = phase
        if self._loop is not None and self._sink is not None:
            sink = self._sink
            self._loop.call_soon_threadsafe(sink, {layer: phase})

    def renewed(self, lease: str) -> int:
        return sum(1 for _, name in self.renewals if name == lease)


class RouterServer:
    """The router app under uvicorn in a background thread, on 127.0.0.1 and a free port."""

    def __init__(
        self, config: RouterConfig | dict[str, Any], link: LayerLink | None = None
    ) -> None:
        self.config = config if isinstance(config, RouterConfig) else parse_config(config)
        self.app = create_app(self.config, link=link)
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._clients: list[openai.OpenAI] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def openai(self, api_key: str = "unused") -> openai.OpenAI:
        """A real OpenAI SDK client for this router, closed when the router stops."""
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0)
        self._clients.append(client)
        return client

    def start(self) -> RouterServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("router did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> RouterServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def router_layer(name: str, url: str, **fields: Any) -> dict[str, Any]:
    """A layer entry for a test config (camelCase like the operator renders)."""
    return {"name": name, "url": url, "model": f"{name}-model", **fields}


# How a router process is started: (workdir holding config.yaml, the arguments after
# `--config FILE`) -> the command line.
Launcher = Callable[[Path, list[str]], list[str]]


def local_launcher(workdir: Path, args: list[str]) -> list[str]:
    return [str(ROUTER_BIN), "--config", str(workdir / "config.yaml"), *args]


class RouterProcess:
    """`onion-router --config FILE` as a process of its own (its own session, so `kill()` is a
    real `kill -9` of it alone), with `env` added to this one's; its output goes to
    `workdir`/router.log."""

    def __init__(
        self,
        config: dict[str, Any],
        env: dict[str, str] | None = None,
        *,
        workdir: Path | None = None,
        args: tuple[str, ...] = ("--log-level", "warning"),
        launcher: Launcher = local_launcher,
        timeout: float = 30,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="onion-router-"))
        (self.workdir / "config.yaml").write_text(yaml.safe_dump(config))
        self.env = {**os.environ, **(env or {})}
        self.argv = launcher(self.workdir, ["--host", "127.0.0.1", "--port", str(self.port), *args])
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def logs(self) -> str:
        path = self.workdir / "router.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> RouterProcess:
        with (self.workdir / "router.log").open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.logs()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            return False

        try:
            wait_until(up, timeout=self.timeout, what="router /health")
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as when its node dies."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.contextmanager
def router_process(
    config: dict[str, Any],
    env: dict[str, str] | None = None,
    *,
    workdir: Path | None = None,
    args: tuple[str, ...] = ("--log-level", "warning"),
    launcher: Launcher = local_launcher,
    timeout: float = 30,
) -> Iterator[str]:
    """`onion-router --config FILE` as a process of its own (see RouterProcess); yields its base
    URL and stops it afterwards."""
    proc = RouterProcess(
        config, env, workdir=workdir, args=args, launcher=launcher, timeout=timeout
    )
    try:
        yield proc.start().url
    finally:
        proc.stop()
