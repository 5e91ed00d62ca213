"""The router talks to its model servers and nothing else: on an air-gapped GPU cluster a call
to huggingface.co would not be answered. (huggingface_hub makes such calls as side effects; the
router sends with httpx2 alone.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.fake_tgi import FakeTGI, Script
from tests.support.router_server import router_layer, router_process


class HubDouble(ThreadingHTTPServer):
    """Stands in for huggingface.co (HF_ENDPOINT) and records every path asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub.paths.append(self.path)
                self.send_error(404)

            def log_message(self, *_: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def hub() -> Iterator[HubDouble]:
    server = HubDouble()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_answering_calls_no_hub(hub: HubDouble, tmp_path: Path) -> None:
    """huggingface_hub's User-Agent header, with its telemetry on, fetches a registry of coding
    agents from the Hub on first use: a blocking call of up to 3 s on the router's event loop.
    Whatever the environment says about telemetry, answering asks the Hub for nothing."""
    core = FakeTGI(Script(tokens=["Hi", " there"]), name="core").start()
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf-home"),  # no cached registry
        "HF_HUB_DISABLE_TELEMETRY": "0",
        "DISABLE_TELEMETRY": "0",
        "DO_NOT_TRACK": "0",
    }
    try:
        with router_process({"layers": [router_layer("core", core.url)]}, env) as url:
            body = {"model": "onion", "messages": [{"role": "user", "content": "hello"}]}
            for stream in (False, True):
                answer = httpx.post(
                    f"{url}/v1/chat/completions", json={**body, "stream": stream}, timeout=30
                )
                assert answer.status_code == 200, answer.text
    finally:
        core.stop()
    assert len(core.stats.requests) == 2
    assert hub.paths == []
