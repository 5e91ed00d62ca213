"""The router in front of a real engine: llama.cpp's own `llama-server` running
SmolLM2-135M-Instruct. The model's own token logprobs drive the confidence policy.
(A 135M model shows the mechanism, not intelligence.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_tgi import FakeTGI, Script
from tests.support.llama import require_engine
from tests.support.router_server import RouterServer, router_layer

pytestmark = [pytest.mark.engine, pytest.mark.slow]

require_engine("smollm2")  # the session fixture `llama` (tests/conftest.py) serves it


@pytest.fixture
def outer() -> Iterator[FakeTGI]:
    with FakeTGI(Script(tokens=["outer", " layer"]), name="outer") as server:
        yield server


def config(llama: str, outer: FakeTGI, threshold: float) -> dict:
    return {
        "streamBufferTokens": 4,
        "layers": [
            router_layer(
                "core",
                llama,
                model="core",
                engine="llamacpp",
                escalation={"policy": "confidence", "threshold": threshold, "score": "mean"},
            ),
            router_layer("outer", outer.url),
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
