"""Backends that refuse, hang, or die mid-stream, and clients that leave: clean errors, nothing
hangs, and the upstream request is cancelled."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import openai
import pytest
from huggingface_hub import InferenceClient

from onion_lab.waiting import wait_until
from tests.support.fake_tgi import FakeTGI, Script
from tests.support.router_server import RouterServer, router_layer


@pytest.fixture
def core() -> Iterator[FakeTGI]:
    with FakeTGI(name="core") as server:
        yield server


def api(router: RouterServer) -> openai.OpenAI:
    return router.openai()


def one_layer(url: str, **overrides: object) -> dict:
    return {"upstreamTimeoutSeconds": 1, "layers": [router_layer("core", url)], **overrides}


MESSAGES = [{"role": "user", "content": "hi"}]


def text_before_the_break(router: RouterServer) -> str:
    """Stream an answer that breaks off: the text the client saw before the error."""
    seen = []
    stream = api(router).chat.completions.create(model="onion", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="broke off mid-stream"):
        for chunk in stream:
            seen.append((chunk.choices[0].delta.content if chunk.choices else None) or "")
    return "".join(seen)


def test_refusing_backend(core: FakeTGI) -> None:
    core.script = Script(fail="refuse")
    with RouterServer(one_layer(core.url)) as router:
        with pytest.raises(openai.APIStatusError) as err:
            api(router).chat.completions.create(model="onion", messages=MESSAGES)
        assert err.value.status_code == 503
        assert "layer 'core' answered HTTP 503" in err.value.message
        with pytest.raises(openai.APIStatusError) as err:
            api(router).chat.completions.create(model="onion", messages=MESSAGES, stream=True)
        assert err.value.status_code == 503  # the status is read before the stream commits


def test_hanging_backend_times_out(core: FakeTGI) -> None:
    core.script = Script(fail="hang")
    with RouterServer(one_layer(core.url)) as router:
        with pytest.raises(openai.APIStatusError) as err:
            api(router).chat.completions.create(model="onion", messages=MESSAGES)
        assert err.value.status_code == 504 and "timed out" in err.value.message


def test_unreachable_backend() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with RouterServer(one_layer(f"http://127.0.0.1:{port}")) as router:
            with pytest.raises(openai.APIStatusError) as err:
                api(router).chat.completions.create(model="onion", messages=MESSAGES)
            assert err.value.status_code == 502 and "unreachable" in err.value.message


def test_backend_dying_mid_stream(core: FakeTGI) -> None:
    core.script = Script(tokens=["a", "b", "c", "d", "e"], fail="die", fail_after=3)
    with RouterServer(one_layer(core.url)) as router:
        assert text_before_the_break(router) == "abc"
        # TGI protocol: an error event, then the end.
        hf = InferenceClient(base_url=router.url)
        with pytest.raises(Exception, match="broke off mid-stream"):
            list(hf.text_generation("hi", stream=True))


def test_backend_error_event_mid_stream(core: FakeTGI) -> None:
    core.script = Script(tokens=["a", "b", "c"], fail="error_event", fail_after=1)
    with (
        RouterServer(one_layer(core.url)) as router,
        pytest.raises(openai.APIError, match="CUDA out of memory"),
    ):
        list(api(router).chat.completions.create(model="onion", messages=MESSAGES, stream=True))


def test_backend_sending_what_is_not_json(core: FakeTGI) -> None:
    core.script = Script(tokens=["a", "b", "c"], fail="garbage", fail_after=2)
    with RouterServer(one_layer(core.url)) as router:
        with pytest.raises(openai.APIStatusError) as err:
            api(router).chat.completions.create(model="onion", messages=MESSAGES)
        assert err.value.status_code == 502 and "malformed answer" in err.value.message
        assert text_before_the_break(router) == "ab"


def test_dying_inside_the_decision_buffer_is_a_plain_http_error(core: FakeTGI) -> None:
    core.script = Script(tokens=["a", "b", "c"], logprob=-0.1, fail="die", fail_after=1)
    config = one_layer(core.url, streamBufferTokens=4)
    config["layers"] = [
        router_layer("core", core.url, escalation={"policy": "confidence"}),
        router_layer("mid", core.url),
    ]
    with RouterServer(config) as router:
        with pytest.raises(openai.APIStatusError) as err:
            api(router).chat.completions.create(model="onion", messages=MESSAGES, stream=True)
        assert err.value.status_code == 502


def test_client_leaving_a_stream_cancels_upstream(core: FakeTGI) -> None:
    core.script = Script(tokens=[f" t{i}" for i in range(100)], token_delay=0.05)
    with RouterServer(one_layer(core.url, upstreamTimeoutSeconds=30)) as router:
        stream = api(router).chat.completions.create(model="onion", messages=MESSAGES, stream=True)
        for index, _ in enumerate(stream):
            if index == 3:
                break
        stream.close()
        wait_until(
            lambda: core.stats.streams_abandoned == 1, timeout=10, what="upstream stream abandoned"
        )
        assert core.stats.streams_finished == 0


def test_client_leaving_a_plain_request_cancels_upstream(core: FakeTGI) -> None:
    core.script = Script(tokens=[f" t{i}" for i in range(100)], token_delay=0.05)
    with RouterServer(one_layer(core.url, upstreamTimeoutSeconds=30)) as router:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{router.url}/v1/chat/completions",
                timeout=0.5,
                json={"model": "onion", "messages": MESSAGES},
            )
        wait_until(
            lambda: core.stats.calls_abandoned == 1, timeout=10, what="upstream call abandoned"
        )
