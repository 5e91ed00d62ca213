"""What the router benchmarks share (bench/router_overhead.py, router_ab.py and
router_instructions.py): the answer length they ask of the TGI-protocol test server, the
onion-router executable, and a server process started, waited on until healthy and stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from onion_lab.paths import REPO
from onion_lab.processes import stop

TOKENS = 16  # tokens per answer of the test server: the same in every router benchmark
ROUTER_BIN = Path(sys.executable).with_name("onion-router")


@contextmanager
def process(
    name: str,
    argv: list[str],
    health: str,
    logs: Path,
    env: dict[str, str] | None = None,
    timeout: float = 90,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait (bounded) until `health` answers 200, stop it afterwards. It runs in
    the checkout's root, where `python -m tests.support.fake_tgi` (the test server) is found."""
    log = (logs / f"{name}.log").open("w")
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})}
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited; see {logs / (name + '.log')}")
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become healthy in {timeout}s")
            time.sleep(0.2)
        yield proc
    finally:
        stop(proc, grace=20)
        log.close()
