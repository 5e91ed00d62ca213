"""End to end on a real API server: the operator and the router (real CLIs, as processes) and
TGI-protocol test servers standing for the model pods that kwok only simulates.

A request that needs a dormant layer records demand, the operator wakes the layer, kwok turns its
pod Ready after a simulated load time, the router sees Ready in the Onion status and answers from
the layer; a request that outlives the idle timeout keeps the layer awake; afterwards it sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import openai
import pytest
import yaml

from onion_lab.cluster import Cluster
from onion_lab.waiting import wait_until
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
from tests.support.router_server import router_process

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def servers() -> Iterator[dict[str, FakeTGI]]:
    confident = Script(tokens=["Paris", "."], logprob=-0.05)
    unsure = Script(tokens=["Maybe", " 42", "?"], logprob=-3.0)
    core = FakeTGI(confident, name="core")
    core.by_word["hard"] = unsure
    # The layer answers slowly enough (8 x 0.5 s) to outlive its 3 s idle timeout.
    mid = FakeTGI(Script(tokens=[f" t{i}" for i in range(8)], logprob=-0.1), name="mid")
    mid.by_word["quick"] = Script(tokens=["Proof", "."], logprob=-0.1)
    mid.by_word["slow"] = Script(tokens=[f" t{i}" for i in range(8)], token_delay=0.5)
    with core, mid:
        yield {"core": core, "mid": mid}


def test_request_wakes_dormant_layer_keeps_it_awake_and_it_sleeps_after(
    cluster: Cluster, namespace: str, servers: dict[str, FakeTGI]
) -> None:
    ns = namespace
    mid_layer = {
        "name": "mid",
        "model": "Qwen/Qwen2.5-14B-Instruct",
        "idleTimeout": "3s",
        "wakeTimeout": "60s",
        "podAnnotations": {DELAY_ANNOTATION: "2s"},
    }
    onion = onion_yaml("chat", [mid_layer])
    spec = yaml.safe_load(onion)
    spec["spec"]["core"]["escalation"] = {"policy": "confidence", "threshold": -1.0}
    with running_operator(cluster, ns):
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=yaml.safe_dump(spec))
        wait_for_phase(cluster, ns, "mid", "Dormant", timeout=30, what="mid Dormant")
        assert replicas(cluster, ns, "chat-mid") == 0
        urls = {name: server.url for name, server in servers.items()}
        config = local_router_config(cluster, ns, "chat", urls)

        with (
            router_process(
                config, {"KUBECONFIG": cluster.kubeconfig, "POD_NAME": "router-e2e"}
            ) as url,
            openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=90) as client,
        ):
            # An easy question: the core answers, nothing wakes.
            easy = client.chat.completions.with_raw_response.create(
                model="onion", messages=[{"role": "user", "content": "Capital of France?"}]
            )
            assert easy.headers["x-onion-layer"] == "core"
            assert easy.parse().choices[0].message.content == "Paris."
            assert replicas(cluster, ns, "chat-mid") == 0

            # A hard one: the core is unsure, demand wakes mid; answered after its pod is Ready.
            started = time.monotonic()
            hard = client.chat.completions.with_raw_response.create(
                model="onion",
                messages=[{"role": "user", "content": "A hard quick one"}],
                logprobs=True,
            )
            waited = time.monotonic() - started
            assert hard.headers["x-onion-layer"] == "mid"
            assert hard.headers["x-onion-path"].split(",")[:2] == ["core", "mid"]
            assert hard.parse().choices[0].message.content == "Proof."
            assert waited >= 2.0, "answered before the simulated model load finished"
            status = layer_status(cluster, ns, "chat", "mid")
            assert status["phase"] == "Ready" and status["wakeCount"] == 1
            assert status["lastWakeSeconds"] >= 2.0

            # A request longer than the idle timeout: demand is renewed, the layer stays up.
            low_replicas: list[int | None] = []
            done = threading.Event()

            def watch() -> None:
                while not done.is_set():
                    low_replicas.append(replicas(cluster, ns, "chat-mid"))
                    time.sleep(0.3)

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                long = client.chat.completions.create(
                    model="onion/mid", messages=[{"role": "user", "content": "slow"}]
                )
            finally:
                done.set()
                watcher.join()
            assert long.choices[0].message.content == "".join(f" t{i}" for i in range(8))
            assert low_replicas and set(low_replicas) == {1}, low_replicas

            # No more demand: back to 0 replicas and Dormant after the idle timeout.
            wait_until(
                lambda: replicas(cluster, ns, "chat-mid") == 0, timeout=30, what="mid asleep"
            )
            wait_for_phase(cluster, ns, "mid", "Dormant", timeout=10, what="mid Dormant again")
