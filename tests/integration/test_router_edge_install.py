"""The edge install: the router alone, without the `cluster` extra (kopf and the Kubernetes
client), runs in static mode; Kubernetes mode then says what is missing."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from packaging.requirements import Requirement

from onion_lab.sockets import free_port
from onion_lab.waiting import wait_until
from tests.support.fake_tgi import FakeTGI, Script
from tests.support.router_server import router_layer

MISSING = "kopf,kubernetes_asyncio"
CLUSTER_ONLY = {"kopf", "kubernetes-asyncio"}


def test_the_base_install_does_not_pull_the_cluster_packages() -> None:
    requirements = [Requirement(r) for r in importlib.metadata.requires("onion-of-experts") or []]
    base = {r.name for r in requirements if r.marker is None}
    cluster = {r.name for r in requirements if r.marker and r.marker.evaluate({"extra": "cluster"})}
    assert base and not base & CLUSTER_ONLY
    assert cluster >= CLUSTER_ONLY


@pytest.fixture
def core() -> Iterator[FakeTGI]:
    with FakeTGI(Script(tokens=["edge", " answer"]), name="core") as server:
        yield server


def start(config: dict, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    path, log = tmp_path / "edge.yaml", tmp_path / "edge.log"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [sys.executable, "-m", "tests.support.without_modules", MISSING, "--"]
    argv += ["--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    return proc, f"http://127.0.0.1:{port}", log


def test_the_router_runs_in_static_mode_without_kopf_and_the_kubernetes_client(
    core: FakeTGI, tmp_path: Path
) -> None:
    proc, url, log = start({"layers": [router_layer("core", core.url)]}, tmp_path)
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=30, what="edge router /health")
        body = {"model": "onion", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10).json()
        assert answer["choices"][0]["message"]["content"] == "edge answer"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert "kubernetes_asyncio" not in log.read_text()


def test_kubernetes_mode_without_the_client_says_what_to_install(tmp_path: Path) -> None:
    config = {
        "kubernetes": {"enabled": True, "namespace": "ns", "onion": "o"},
        "layers": [router_layer("core", "http://127.0.0.1:9")],
    }
    proc, _, log = start(config, tmp_path)
    assert proc.wait(timeout=30) != 0
    out = log.read_text()
    assert "kubernetes.enabled needs the Kubernetes client" in out
    assert "onion-of-experts[cluster]" in out
