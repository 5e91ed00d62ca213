"""Run llama.cpp's `llama-server` (built by hack/build-llama-server.sh) on loopback: for the
tests, the demo and the quality benchmarks. Everything it starts it stops."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from onion_lab import models
from onion_lab.paths import HACK
from onion_lab.processes import stop
from onion_lab.sockets import free_port


class EngineMissing(RuntimeError):
    """llama-server or a model is not there; the message says how to get it."""


def binary() -> str:
    """The llama-server binary, or EngineMissing naming `make engine`."""
    done = subprocess.run(
        ["bash", str(HACK / "build-llama-server.sh"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise EngineMissing(done.stderr.strip() or "llama-server is not built; run `make engine`")
    return done.stdout.strip()


def model(name: str) -> str:
    """A model file by its onion_lab.models name (smollm2, qwen05, qwen15)."""
    try:
        return str(models.MODELS[name]())
    except models.ModelError as err:
        raise EngineMissing(f"{err}; run `make engine`") from None


# Threads per server. One by default: on a 2-core machine shared with other work, ggml's two
# threads wait on each other at every step (measured here under load: 15 tokens/s with two
# threads, 31 with one, SmolLM2-135M). ONION_LLAMA_THREADS=2 on an idle machine.
THREADS = os.environ.get("ONION_LLAMA_THREADS", "1")


def command(path: str, alias: str, port: int, ctx: int = 4096) -> list[str]:
    """One llama-server on 127.0.0.1: one slot (requests run one at a time, each with the whole
    context), THREADS threads, the model's own chat template."""
    return [
        binary(),
        *("--model", path, "--alias", alias, "--host", "127.0.0.1", "--port", str(port)),
        *("--threads", THREADS, "--ctx-size", str(ctx), "--parallel", "1", "--no-webui"),
    ]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:  # loopback only
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"llama-server exited with {process.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"llama-server at {url} not healthy after {timeout:.0f}s")
        time.sleep(0.2)


@contextlib.contextmanager
def serve(name: str, alias: str, log: Path, ctx: int = 4096) -> Iterator[str]:
    """A llama-server for model `name` served as `alias`; yields its base URL."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            command(model(name), alias, port, ctx), stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log, 120)
        yield url
    finally:
        stop(process)
