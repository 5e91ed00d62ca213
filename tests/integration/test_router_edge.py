"""A router whose outer layer is another Onion's router (an edge device in front of a cluster),
without a cluster: the cluster router's layer phases come from an operator double. The edge
follows the cluster router's heartbeats and its 429/503 with Retry-After, and the answer's
layer and path compose across both routers. (tests/e2e/test_edge_over_cluster.py does the same
with a real core model and a real cluster.)"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from onion_lab.waiting import wait_until
from tests.support.fake_tgi import FakeTGI, Script
from tests.support.router_server import OperatorDouble, RouterServer, router_layer

KEY = "edge-to-cluster-key"
PROOF = "Please prove that 2 is prime"


@pytest.fixture
def servers() -> Iterator[dict[str, FakeTGI]]:
    unsure = Script(tokens=["Maybe", "?"], logprob=-3.0)
    with (
        FakeTGI(unsure, name="edge-core") as edge_core,
        FakeTGI(Script(tokens=["cluster", " core"], logprob=-0.05), name="core") as core,
        FakeTGI(Script(tokens=["Proof", ":", " done"]), name="mid") as mid,
    ):
        yield {"edge-core": edge_core, "core": core, "mid": mid}


@pytest.fixture
def cluster(
    servers: dict[str, FakeTGI], tmp_path: Path
) -> Iterator[tuple[RouterServer, OperatorDouble]]:
    """The cluster Onion's router: a core and a managed `mid` that proofs go to (a rule)."""
    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    link = OperatorDouble({"mid": "Dormant"})
    config = {
        "heartbeatSeconds": 0.2,
        "demandRenewSeconds": 0.3,
        "auth": {"keysFile": str(keys)},
        "layers": [
            router_layer("core", servers["core"].url),
            router_layer(
                "mid",
                servers["mid"].url,
                managed=True,
                lease="onion-mid-demand",
                wakeTimeoutSeconds=20,
                rules=[{"keywords": ["prove"]}],
            ),
        ],
    }
    with RouterServer(config, link) as router:
        yield router, link


def edge_config(core: FakeTGI, remote_url: str, key_file: Path, **fields: object) -> dict:
    """A static edge router: its core judged by confidence, the cluster's router outside it."""
    key_file.write_text(KEY)
    return {
        "heartbeatSeconds": 0.2,
        "layers": [
            router_layer("core", core.url, escalation={"policy": "confidence", "threshold": -1.0}),
            router_layer(
                "cluster",
                remote_url,
                model="onion",
                apiKeyFile=str(key_file),
                wakeTimeoutSeconds=fields.pop("wake", 20),
                **fields,
            ),
        ],
    }


def sse(url: str, text: str) -> tuple[dict[str, str], list[str]]:
    """A streaming chat request; the response headers and every line of the stream."""
    body = {"model": "onion", "stream": True, "messages": [{"role": "user", "content": text}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200, response.read()
        return dict(response.headers), [line for line in response.iter_lines() if line]


def test_a_held_stream_at_the_cluster_reaches_the_edge_client_as_heartbeats(
    servers: dict[str, FakeTGI], cluster: tuple[RouterServer, OperatorDouble], tmp_path: Path
) -> None:
    remote, link = cluster
    config = edge_config(servers["edge-core"], remote.url, tmp_path / "key")
    with RouterServer(config) as edge, ThreadPoolExecutor(1) as pool:
        held = pool.submit(sse, edge.url, PROOF)
        wait_until(lambda: link.renewed("onion-mid-demand"), what="demand for the cluster's mid")
        time.sleep(0.6)  # a few heartbeats of the cluster router
        assert not held.done()
        link.set_phase("mid", "Ready")
        headers, lines = held.result(timeout=20)

    beats = [line for line in lines if line.startswith(":")]
    assert beats and all(b.startswith(": waiting for layer cluster:mid (Dormant, ") for b in beats)
    assert headers["x-onion-held"] == "true" and headers["x-onion-layer"] == "cluster:mid"
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "Proof: done"
    assert {json.dumps(e["onion"]) for e in events} == {
        json.dumps({"layer": "cluster:mid", "path": ["core", "cluster:mid"], "degraded": False})
    }
    assert lines[-1] == "data: [DONE]"
    # The cluster's core never saw it (its rule sent it to mid); the edge core did, unsure.
    assert not servers["core"].stats.requests and len(servers["edge-core"].stats.requests) == 1


def test_layer_and_path_compose_across_both_routers(
    servers: dict[str, FakeTGI], cluster: tuple[RouterServer, OperatorDouble], tmp_path: Path
) -> None:
    remote, link = cluster
    link.set_phase("mid", "Ready")
    config = edge_config(servers["edge-core"], remote.url, tmp_path / "key")
    with RouterServer(config) as edge:
        client = edge.openai()
        raw = client.chat.completions.with_raw_response.create(
            model="onion", messages=[{"role": "user", "content": PROOF}]
        )
        assert raw.headers["x-onion-layer"] == "cluster:mid"
        assert raw.headers["x-onion-path"] == "core,cluster:mid"
        body = raw.http_response.json()
        assert body["onion"] == {
            "layer": "cluster:mid",
            "path": ["core", "cluster:mid"],
            "degraded": False,
        }
        # Not a proof: the cluster's core answers, its path shows it.
        easy = client.chat.completions.with_raw_response.create(
            model="onion", messages=[{"role": "user", "content": "hello"}]
        )
        assert easy.headers["x-onion-path"] == "core,cluster:core"
        headers, _ = sse(edge.url, "hello")
        assert headers["x-onion-layer"] == "cluster:core"
        assert headers["x-onion-path"] == "core,cluster:core"
    # The edge's key opened the cluster router (it refuses any other) and went no further.
    assert servers["mid"].stats.headers[0]["authorization"] == "Bearer EMPTY"


@pytest.fixture
def busy() -> Iterator[FakeTGI]:
    with FakeTGI(Script(tokens=["at", " last"]), name="busy") as server:
        yield server


def test_429_and_503_with_retry_after_are_retried_within_the_wake_timeout(
    servers: dict[str, FakeTGI], busy: FakeTGI, tmp_path: Path
) -> None:
    config = edge_config(servers["edge-core"], busy.url, tmp_path / "key")
    with RouterServer(config) as edge:
        busy.refusals = [(429, "1"), (503, "1")]
        started = time.monotonic()
        answer = edge.openai().chat.completions.create(
            model="onion", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == "at last"
        assert time.monotonic() - started >= 2.0  # waited as told, twice

        busy.refusals = [(503, "1")]
        headers, lines = sse(edge.url, "hi")
        beats = [line for line in lines if line.startswith(":")]
        assert beats and beats[0].startswith(": waiting for layer cluster (HTTP 503, retrying, ")
        assert headers["x-onion-held"] == "true"
        assert any("at" in line for line in lines if line.startswith("data: {"))


def test_a_refusal_past_the_wake_timeout_or_without_retry_after_goes_to_the_client(
    servers: dict[str, FakeTGI], busy: FakeTGI, tmp_path: Path
) -> None:
    config = edge_config(servers["edge-core"], busy.url, tmp_path / "key", wake=3)
    with RouterServer(config) as edge:
        client = edge.openai()
        busy.refusals = [(503, "30")]
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(
                model="onion", messages=[{"role": "user", "content": "hi"}]
            )
        assert err.value.status_code == 503 and err.value.code == "upstream_busy"
        assert err.value.response.headers["retry-after"] == "30"
        busy.refusals = [(429, None)]
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(
                model="onion", messages=[{"role": "user", "content": "hi"}]
            )
        assert err.value.status_code == 429 and "retry-after" not in err.value.response.headers
        assert len(busy.stats.headers) == 2  # neither was retried
