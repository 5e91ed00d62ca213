"""An edge router in front of a cluster Onion, end to end: the edge router (static mode) answers
from a real SmolLM2 core on llama.cpp; what its core is unsure of goes to its outer layer, the
cluster Onion's router (Kubernetes mode on the local cluster, with a key), whose `mid` layer is
dormant. The escalated request wakes `mid` through the operator; the edge client hears the
cluster router's heartbeats meanwhile and sees the answer's path across both routers.

kwok's pods run nothing, so the cluster's core and `mid` are TGI-protocol test servers on this
machine (as in test_wake_on_request.py); the edge core is the real model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from onion_lab.cluster import Cluster
from tests.support.fake_tgi import FakeTGI, Script
from tests.support.operator import (
    DELAY_ANNOTATION,
    layer_status,
    local_router_config,
    onion_yaml,
    replicas,
    running_operator,
    wait_for_phase,
)
from tests.support.router_server import router_layer, router_process

pytestmark = [pytest.mark.cluster, pytest.mark.engine, pytest.mark.slow]


KEY = "sk-edge-device-0001"
EASY = "What is the capital of France? Answer in one word."
HARD = "Prove that there are infinitely many primes."
TOKENS = 12  # answers this long are judged whole, streamed or not


def confidence(llama: str, question: str) -> float:
    """SmolLM2's own mean token logprob over its answer (greedy, so the same every time)."""
    client = openai.OpenAI(base_url=f"{llama}/v1", api_key="none", max_retries=0)
    answer = client.chat.completions.create(
        model="core",
        messages=[{"role": "user", "content": question}],
        max_tokens=TOKENS,
        temperature=0,
        logprobs=True,
        top_logprobs=1,
    )
    client.close()
    content = answer.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content
    return sum(t.logprob for t in content) / len(content)


@pytest.fixture
def servers() -> Iterator[dict[str, FakeTGI]]:
    with (
        FakeTGI(Script(tokens=["cluster", " core"], logprob=-0.05), name="core") as core,
        FakeTGI(
            Script(tokens=["Euclid", ":", " suppose", " finitely", " many"]), name="mid"
        ) as mid,
    ):
        yield {"core": core, "mid": mid}


def test_an_edge_core_escalates_to_a_cluster_onion_that_wakes_its_layer(
    cluster: Cluster,
    namespace: str,
    llama: str,
    servers: dict[str, FakeTGI],
    tmp_path: Path,
) -> None:
    ns = namespace
    # Where this SmolLM2 is sure and where it is not, measured: the edge's threshold in between.
    easy, hard = confidence(llama, EASY), confidence(llama, HARD)
    assert easy > hard, (easy, hard)
    threshold = (easy + hard) / 2

    mid = {
        "name": "mid",
        "model": "Qwen/Qwen2.5-14B-Instruct",
        "idleTimeout": "60s",
        "wakeTimeout": "60s",
        "rules": [{"keywords": ["prove"]}],  # proofs go straight to mid
        "podAnnotations": {DELAY_ANNOTATION: "3s"},  # its model load
    }
    onion = yaml.safe_load(
        onion_yaml("chat", [mid], router={"heartbeatSeconds": 1, "authSecretName": "chat-keys"})
    )
    keys = tmp_path / "cluster-keys"
    keys.write_text(f"# the edge device's key\n{KEY}\n")
    key_file = tmp_path / "edge-key"
    key_file.write_text(KEY)

    with running_operator(cluster, ns):
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=yaml.safe_dump(onion))
        wait_for_phase(cluster, ns, "mid", "Dormant", timeout=30, what="mid Dormant")
        config = local_router_config(
            cluster, ns, "chat", {name: s.url for name, s in servers.items()}
        )
        assert config["auth"] == {"keysFile": "/etc/onion/auth/keys"}  # the Secret's mount
        config["auth"] = {"keysFile": str(keys)}
        env = {"KUBECONFIG": cluster.kubeconfig, "POD_NAME": "router-edge-e2e"}
        with router_process(config, env) as cluster_url:
            edge_config = {
                "kubernetes": {"enabled": False},
                "heartbeatSeconds": 1,
                "streamBufferTokens": TOKENS,
                "layers": [
                    router_layer(
                        "core",
                        llama,
                        model="core",
                        engine="llamacpp",
                        escalation={"policy": "confidence", "threshold": threshold},
                    ),
                    router_layer(
                        "cluster",
                        cluster_url,
                        model="onion",
                        apiKeyFile=str(key_file),
                        wakeTimeoutSeconds=60,
                    ),
                ],
            }
            with router_process(edge_config) as edge:
                client = openai.OpenAI(base_url=f"{edge}/v1", api_key="unused", timeout=120)
                sure = client.chat.completions.with_raw_response.create(
                    model="onion",
                    messages=[{"role": "user", "content": EASY}],
                    max_tokens=TOKENS,
                    temperature=0,
                )
                assert sure.headers["x-onion-path"] == "core"  # the edge core answers
                assert "Paris" in (sure.parse().choices[0].message.content or "")
                assert replicas(cluster, ns, "chat-mid") == 0 and not servers["mid"].stats.requests
                client.close()

                body = {
                    "model": "onion",
                    "stream": True,
                    "max_tokens": TOKENS,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": HARD}],
                }
                started = time.monotonic()
                with httpx.stream(
                    "POST", f"{edge}/v1/chat/completions", json=body, timeout=120
                ) as response:
                    assert response.status_code == 200
                    headers = response.headers
                    lines = [line for line in response.iter_lines() if line]
                waited = time.monotonic() - started

            status = layer_status(cluster, ns, "chat", "mid")

    beats = [line for line in lines if line.startswith(":")]
    assert beats, lines
    assert all(b.startswith(": waiting for layer cluster:mid (") for b in beats), beats
    assert headers["x-onion-held"] == "true" and headers["x-onion-layer"] == "cluster:mid"
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "Euclid: suppose finitely many"
    assert events[-1]["onion"] == {
        "layer": "cluster:mid",
        "path": ["core", "cluster:mid"],
        "degraded": False,
    }
    assert lines[-1] == "data: [DONE]"
    assert waited >= 3.0, "answered before mid's simulated model load"
    assert status["phase"] == "Ready" and status["wakeCount"] == 1
    # The cluster's core was skipped (its rule), and mid was asked once, after its wake.
    assert not servers["core"].stats.requests and len(servers["mid"].stats.requests) == 1
