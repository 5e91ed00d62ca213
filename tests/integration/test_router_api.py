"""The router's API driven by the real openai SDK and huggingface_hub's InferenceClient, in front
of TGI-protocol test servers: policies, recursion, pinning, streaming, both client protocols."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from huggingface_hub import InferenceClient

from tests.support.fake_tgi import FakeTGI, Script
from tests.support.router_server import RouterServer, router_layer

CONFIDENT = Script(tokens=["Paris", " is", " the", " capital", "."], logprob=-0.05)
UNSURE = Script(tokens=["Maybe", " Lyon", "?", " or", " Nice"], logprob=-2.5)


@pytest.fixture
def servers() -> Iterator[tuple[FakeTGI, FakeTGI, FakeTGI]]:
    core = FakeTGI(CONFIDENT, name="core").start()
    mid = FakeTGI(Script(tokens=["Mid", " says", " hi"], logprob=-0.3), name="mid").start()
    big = FakeTGI(Script(tokens=["Big", " knows"], logprob=-0.01), name="big").start()
    yield core, mid, big
    for server in (core, mid, big):
        server.stop()


def three_layers(core: FakeTGI, mid: FakeTGI, big: FakeTGI, **overrides: object) -> dict:
    conf = {"policy": "confidence", "threshold": -1.0, "score": "mean"}
    return {
        "streamBufferTokens": 3,
        "layers": [
            router_layer("core", core.url, escalation=conf),
            router_layer("mid", mid.url, escalation=conf, rules=[{"keywords": ["sql"]}]),
            router_layer("big", big.url, rules=[{"regex": "(?i)theorem"}]),
        ],
        **overrides,
    }


@pytest.fixture
def router(servers: tuple[FakeTGI, FakeTGI, FakeTGI]) -> Iterator[RouterServer]:
    with RouterServer(three_layers(*servers)) as server:
        yield server


def client(router: RouterServer) -> openai.OpenAI:
    return router.openai()


def ask(router: RouterServer, text: str, model: str = "onion", **kwargs: object):  # type: ignore[no-untyped-def]
    return client(router).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kwargs
    )  # type: ignore[call-overload]


def test_confident_core_answers(router: RouterServer, servers: tuple[FakeTGI, ...]) -> None:
    raw = ask(router, "What is the capital of France?")
    answer = raw.parse()
    assert answer.choices[0].message.content == "Paris is the capital."
    assert raw.headers["x-onion-layer"] == "core" and raw.headers["x-onion-path"] == "core"
    assert answer.model_extra is not None
    assert answer.model_extra["onion"] == {"layer": "core", "path": ["core"], "degraded": False}
    assert answer.choices[0].logprobs is None  # the router asked for them, the client did not
    upstream = servers[0].stats.requests[-1]
    assert upstream["model"] == "core-model" and upstream["logprobs"] is True
    assert "top_logprobs" not in upstream  # alternatives cost parsing; TGI and vLLM need none
    assert not servers[1].stats.requests


def test_llamacpp_layers_are_asked_for_one_alternative(servers: tuple[FakeTGI, ...]) -> None:
    config = three_layers(*servers)
    config["layers"][0]["engine"] = "llamacpp"  # its server sends no logprobs without them
    with RouterServer(config) as router:
        ask(router, "What is the capital of France?")
        ask(router, "What is the capital of France?", logprobs=True, top_logprobs=3)
    judged, asked = servers[0].stats.requests[-2:]
    assert (judged["logprobs"], judged["top_logprobs"]) == (True, 1)
    assert (asked["logprobs"], asked["top_logprobs"]) == (True, 3)


def test_unsure_core_escalates_once(router: RouterServer, servers: tuple[FakeTGI, ...]) -> None:
    servers[0].script = UNSURE
    raw = ask(router, "Where is the Louvre?", logprobs=True, top_logprobs=1)
    answer = raw.parse()
    assert answer.choices[0].message.content == "Mid says hi"
    assert raw.headers["x-onion-path"] == "core,mid"
    assert answer.choices[0].logprobs is not None
    assert [t.token for t in answer.choices[0].logprobs.content] == ["Mid", " says", " hi"]


def test_three_layer_recursion(router: RouterServer, servers: tuple[FakeTGI, ...]) -> None:
    servers[0].script = UNSURE
    servers[1].script = UNSURE
    raw = ask(router, "Hard question")
    assert raw.parse().choices[0].message.content == "Big knows"
    assert raw.headers["x-onion-path"] == "core,mid,big"
    status = httpx.get(f"{router.url}/status").json()
    assert status["recentEscalations"] == {"core->mid": 1, "mid->big": 1}
    metrics = httpx.get(f"{router.url}/metrics").text
    assert 'onion_router_escalations_total{source="core",target="mid"} 1.0' in metrics


def test_rules_route_straight_to_a_layer(
    router: RouterServer, servers: tuple[FakeTGI, ...]
) -> None:
    assert ask(router, "Prove this theorem").headers["x-onion-path"] == "big"
    assert ask(router, "write sql for me").headers["x-onion-path"] == "mid"
    assert not servers[0].stats.requests


def test_pinning_skips_policies(router: RouterServer, servers: tuple[FakeTGI, ...]) -> None:
    servers[1].script = UNSURE
    raw = ask(router, "hi", model="onion/mid")
    assert raw.headers["x-onion-path"] == "mid"
    assert raw.parse().model == "onion/mid"
    assert "logprobs" not in servers[1].stats.requests[-1]  # not judged: nothing to score
    with pytest.raises(openai.NotFoundError) as err:
        ask(router, "hi", model="gpt-4")
    assert err.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_self_policy_sentinel_is_intercepted(servers: tuple[FakeTGI, ...]) -> None:
    core, mid, big = servers
    config = three_layers(core, mid, big)
    config["layers"][0]["escalation"] = {"policy": "self", "sentinel": "[[ESCALATE]]"}
    core.script = Script(tokens=["[[", "ESC", "ALATE", "]]"], logprob=-0.01)
    with RouterServer(config) as router:
        raw = ask(router, "Explain quantum gravity")
        assert raw.parse().choices[0].message.content == "Mid says hi"
        assert raw.headers["x-onion-path"] == "core,mid"
        sent = core.stats.requests[-1]["messages"]
        assert sent[0]["role"] == "system" and "[[ESCALATE]]" in sent[0]["content"]
        # Streaming: the sentinel arrives in pieces and is never shown.
        stream = client(router).chat.completions.create(
            model="onion", messages=[{"role": "user", "content": "again"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "Mid says hi"
        # Pinned, the core's answer is not judged, so it is not invited to escalate.
        core.script = Script(tokens=["ok"])
        assert ask(router, "x", model="onion/core").parse().choices[0].message.content == "ok"
        assert core.stats.requests[-1]["messages"][0]["role"] == "user"


def test_streaming_buffers_then_streams_one_coherent_answer(
    router: RouterServer, servers: tuple[FakeTGI, ...]
) -> None:
    servers[0].script = UNSURE
    with client(router).chat.completions.with_streaming_response.create(
        model="onion",
        messages=[{"role": "user", "content": "stream it"}],
        stream=True,
        logprobs=True,
        top_logprobs=1,
    ) as response:
        assert response.headers["x-onion-layer"] == "mid"
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Mid says hi"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.model == "onion" for c in chunks)
    assert {c.model_extra["onion"]["layer"] for c in chunks if c.model_extra} == {"mid"}
    lps = [
        c.choices[0].logprobs.content[0].logprob
        for c in chunks
        if c.choices and c.choices[0].logprobs and c.choices[0].logprobs.content
    ]
    assert lps == [-0.3, -0.3, -0.3]
    # The core's rejected stream was closed after the buffer, not read to the end.
    assert servers[0].stats.streams_started == 1


def test_completions_api(router: RouterServer) -> None:
    answer = client(router).completions.create(
        model="onion", prompt="Capital of France?", logprobs=1
    )
    assert answer.object == "text_completion"
    assert answer.choices[0].text == "Paris is the capital."
    assert answer.choices[0].logprobs is not None
    assert answer.choices[0].logprobs.tokens == ["Paris", " is", " the", " capital", "."]
    stream = client(router).completions.create(model="onion/big", prompt="x", stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == "Big knows"


def test_models_health_ready(router: RouterServer) -> None:
    ids = [m.id for m in client(router).models.list()]
    assert ids == ["onion", "onion/core", "onion/mid", "onion/big"]
    assert httpx.get(f"{router.url}/health").status_code == 200
    assert httpx.get(f"{router.url}/ready").json() == {"ready": True, "core": "core"}
    layers = httpx.get(f"{router.url}/status").json()["layers"]
    assert [(x["name"], x["phase"]) for x in layers] == [
        ("core", "Ready"),
        ("mid", "Ready"),
        ("big", "Ready"),
    ]


def test_ready_fails_when_core_is_down(servers: tuple[FakeTGI, ...]) -> None:
    config = three_layers(*servers)
    servers[0].stop()
    with RouterServer(config) as router:
        response = httpx.get(f"{router.url}/ready")
        assert response.status_code == 503 and "core" in response.json()["error"]["message"]


def test_tgi_protocol_with_inference_client(
    router: RouterServer, servers: tuple[FakeTGI, ...]
) -> None:
    hf = InferenceClient(base_url=router.url)
    assert hf.text_generation("Capital of France?", max_new_tokens=20) == "Paris is the capital."
    assert servers[0].stats.requests[-1]["max_tokens"] == 20
    details = hf.text_generation("Capital?", details=True)
    assert details.generated_text == "Paris is the capital."
    assert details.details is not None and len(details.details.tokens) == 5
    tokens = list(hf.text_generation("Capital?", stream=True))
    assert "".join(tokens) == "Paris is the capital."
    servers[0].script = UNSURE
    final = list(hf.text_generation("Capital?", stream=True, details=True))[-1]
    assert final.generated_text == "Mid says hi" and final.details is not None
    # TGI's own routes too.
    body = httpx.post(f"{router.url}/generate", json={"inputs": "hi"}).json()
    assert body["generated_text"] == "Mid says hi" and body["onion"]["path"] == ["core", "mid"]
    events = httpx.post(f"{router.url}/generate_stream", json={"inputs": "hi"}).text
    last = json.loads(events.strip().split("\n\n")[-1].removeprefix("data:"))
    assert events.startswith("data:") and last["generated_text"] == "Mid says hi"


def test_chat_through_inference_client(router: RouterServer) -> None:
    hf = InferenceClient(base_url=f"{router.url}/v1")
    out = hf.chat_completion([{"role": "user", "content": "hi"}], model="onion")
    assert out.choices[0].message.content == "Paris is the capital."
    streamed = hf.chat_completion(
        [{"role": "user", "content": "hi"}], model="onion/big", stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == "Big knows"


def test_request_id_propagates(router: RouterServer, servers: tuple[FakeTGI, ...]) -> None:
    response = httpx.post(
        f"{router.url}/v1/chat/completions",
        headers={"X-Request-Id": "abc-1"},
        json={"model": "onion", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.headers["x-request-id"] == "abc-1"
    minted = httpx.get(f"{router.url}/health").headers["x-request-id"]
    assert len(minted) == 32
    for stream in (False, True):  # HTTP allows other bytes; they would break the upstream call
        response = httpx.post(
            f"{router.url}/v1/chat/completions",
            headers=[(b"X-Request-Id", b"\xe9t\xe9")],
            json={
                "model": "onion",
                "messages": [{"role": "user", "content": "x"}],
                "stream": stream,
            },
        )
        assert response.status_code == 200, response.text
        assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"model": "onion"}', 400, "'messages'"),
        (b'{"model": "onion", "messages": [{"content": "x"}]}', 400, "messages[0]"),
        (b'{"model": "onion", "messages": [{"role": "user", "content": "x"}], "n": 3}', 400, "n=1"),
        (b"[1, 2]", 400, "JSON object"),
    ],
)
def test_malformed_requests_get_openai_errors(
    router: RouterServer, body: bytes, status: int, fragment: str
) -> None:
    response = httpx.post(
        f"{router.url}/v1/chat/completions",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"] == "invalid_request_error"


def test_oversized_request(servers: tuple[FakeTGI, ...]) -> None:
    with RouterServer(three_layers(*servers, maxRequestBytes=1000)) as router:
        big = "x" * 2000
        with pytest.raises(openai.APIStatusError) as err:
            ask(router, big)
        assert err.value.status_code == 413
        # Without a Content-Length (chunked upload) the limit holds as well.
        response = httpx.post(
            f"{router.url}/v1/chat/completions",
            content=iter([b'{"messages": "', big.encode(), b'"}']),
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"


def test_unknown_route_is_an_openai_error(router: RouterServer) -> None:
    response = httpx.get(f"{router.url}/v1/nothing")
    assert response.status_code == 404 and "error" in response.json()


def test_auth(servers: tuple[FakeTGI, ...], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# router keys\nsk-one\nsk-two\n")
    with RouterServer(three_layers(*servers, auth={"keysFile": str(keys)})) as router:
        ok = router.openai(api_key="sk-two")
        assert ok.chat.completions.create(
            model="onion", messages=[{"role": "user", "content": "x"}]
        ).choices
        bad = router.openai(api_key="sk-nope")
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        assert httpx.get(f"{router.url}/health").status_code == 200  # probes stay open
        assert httpx.get(f"{router.url}/status").status_code == 401
        hf = InferenceClient(base_url=router.url, api_key="sk-one")
        assert hf.text_generation("x") == "Paris is the capital."


ESCALATE_CALL = Script(tokens=[], calls=[("escalate", '{"reason": "quantum gravity"}')])
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_CALL = Script(tokens=[], calls=[("get_weather", '{"city": "Paris"}')])


@pytest.fixture
def tool_router(servers: tuple[FakeTGI, FakeTGI, FakeTGI]) -> Iterator[RouterServer]:
    """The core asks for help by calling the router's `escalate` tool (`self`, `toolCall`)."""
    config = three_layers(*servers)
    config["layers"][0]["escalation"] = {"policy": "self", "via": "toolCall"}
    with RouterServer(config) as server:
        yield server


def offered(server: FakeTGI) -> list[str]:
    """Names of the tools the router offered the model in its last request."""
    return [t["function"]["name"] for t in server.stats.requests[-1].get("tools") or []]


def test_self_policy_tool_call_escalates_and_is_never_shown(
    tool_router: RouterServer, servers: tuple[FakeTGI, ...]
) -> None:
    core, mid, _ = servers
    core.script = ESCALATE_CALL
    raw = ask(tool_router, "Explain quantum gravity")
    answer = raw.parse()
    assert answer.choices[0].message.content == "Mid says hi"
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].finish_reason == "stop"
    assert raw.headers["x-onion-path"] == "core,mid"
    sent = core.stats.requests[-1]
    assert offered(core) == ["escalate"]
    assert sent["messages"][0]["role"] == "system"
    assert "escalate" in sent["messages"][0]["content"]
    assert "[[ESCALATE]]" not in sent["messages"][0]["content"]
    assert "tools" not in mid.stats.requests[-1]  # the next layer is not offered it
    # An answer without the call stands.
    core.script = CONFIDENT
    raw = ask(tool_router, "Capital of France?")
    assert raw.parse().choices[0].message.content == "Paris is the capital."
    assert raw.headers["x-onion-path"] == "core"
    # Pinned, the core is not judged: no tool, no instruction.
    ask(tool_router, "x", model="onion/core")
    assert "tools" not in core.stats.requests[-1]
    assert core.stats.requests[-1]["messages"][0]["role"] == "user"


def test_self_policy_tool_call_streaming(
    tool_router: RouterServer, servers: tuple[FakeTGI, ...]
) -> None:
    core = servers[0]
    core.script = ESCALATE_CALL
    with client(tool_router).chat.completions.with_streaming_response.create(
        model="onion", messages=[{"role": "user", "content": "stream it"}], stream=True
    ) as response:
        assert response.headers["x-onion-path"] == "core,mid"
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Mid says hi"
    assert not [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert offered(core) == ["escalate"]
    # The core's stream was closed on the call, not read to the end.
    assert core.stats.streams_started == 1


def test_client_tool_calls_pass_through_the_self_tool_call_policy(
    tool_router: RouterServer, servers: tuple[FakeTGI, ...]
) -> None:
    core, mid, _ = servers
    core.script = WEATHER_CALL
    question = [{"role": "user", "content": "Weather in Paris?"}]
    raw = client(tool_router).chat.completions.with_raw_response.create(
        model="onion", messages=question, tools=[WEATHER_TOOL]
    )
    answer = raw.parse()
    assert raw.headers["x-onion-path"] == "core"
    assert answer.choices[0].finish_reason == "tool_calls"
    calls = answer.choices[0].message.tool_calls or []
    assert [(c.type, c.function.name, c.function.arguments) for c in calls] == [
        ("function", "get_weather", '{"city": "Paris"}')
    ]
    assert calls[0].id.startswith("call-")
    assert offered(core) == ["get_weather", "escalate"]  # theirs kept, ours added

    # Streaming: the SDK's own accumulator rebuilds the client's call from the pieces.
    with client(tool_router).chat.completions.stream(
        model="onion", messages=question, tools=[WEATHER_TOOL]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("get_weather", '{"city": "Paris"}')
    ]

    # The model asks for help instead: the next layer gets the client's tools, not ours.
    core.script = ESCALATE_CALL
    raw = client(tool_router).chat.completions.with_raw_response.create(
        model="onion", messages=question, tools=[WEATHER_TOOL]
    )
    assert raw.parse().choices[0].message.content == "Mid says hi"
    assert raw.headers["x-onion-path"] == "core,mid"
    assert offered(mid) == ["get_weather"]


def test_a_client_tool_named_like_the_routers_own_wins(
    tool_router: RouterServer, servers: tuple[FakeTGI, ...]
) -> None:
    core = servers[0]
    core.script = ESCALATE_CALL  # here the client's own `escalate` tool
    theirs = {"type": "function", "function": {"name": "escalate", "parameters": {}}}
    raw = client(tool_router).chat.completions.with_raw_response.create(
        model="onion", messages=[{"role": "user", "content": "angry customer"}], tools=[theirs]
    )
    assert raw.headers["x-onion-path"] == "core"
    calls = raw.parse().choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["escalate"]
    assert offered(core) == ["escalate"]  # only theirs
    assert core.stats.requests[-1]["messages"][0]["role"] == "user"  # no instruction


@pytest.mark.parametrize("stream", [False, True])
def test_verify_policy_asks_the_same_layer_and_escalates_on_no(
    servers: tuple[FakeTGI, ...], stream: bool
) -> None:
    core, mid, big = servers
    config = three_layers(core, mid, big)
    config["layers"][0]["escalation"] = {"policy": "verify", "threshold": 0.5}
    # The verification question: the core says "No" about its answer to one question only.
    core.by_word["Is the answer correct?"] = Script(tokens=["Yes"], logprob=-0.01)
    with RouterServer(config) as router:
        api = client(router)
        for question, layer in (("What is the capital?", "core"), ("doubt me", "mid")):
            if "doubt" in question:
                core.by_word = {"doubt me": Script(tokens=["No"], logprob=-0.01), **core.by_word}
            body = {"model": "onion", "messages": [{"role": "user", "content": question}]}
            if stream:
                with api.chat.completions.with_streaming_response.create(
                    **body, stream=True
                ) as response:
                    assert response.headers["x-onion-layer"] == layer
                    text = "".join(
                        c.choices[0].delta.content or "" for c in response.parse() if c.choices
                    )
            else:
                raw = api.chat.completions.with_raw_response.create(**body)
                assert raw.headers["x-onion-layer"] == layer
                text = raw.parse().choices[0].message.content or ""
            assert text == ("Paris is the capital." if layer == "core" else "Mid says hi")
        status = httpx.get(f"{router.url}/status").json()
    # Each judged answer was followed by one verification call: the question and the answer,
    # one token, the alternatives asked for.
    checks = [r for r in core.stats.requests if "Is the answer correct?" in json.dumps(r)]
    assert len(checks) == 2
    assert checks[0]["max_tokens"] == 1 and checks[0]["top_logprobs"] == 10
    assert "What is the capital?" in checks[0]["messages"][0]["content"]
    assert "Paris is the capital." in checks[0]["messages"][0]["content"]
    # Answers judged by verify are not asked for logprobs (they are not used).
    assert not core.stats.requests[0].get("logprobs")
    core_status = status["layers"][0]
    assert core_status["threshold"] == 0.5 and core_status["escalationRate"] == 0.5


def test_two_routers_in_one_process_share_nothing(servers: tuple[FakeTGI, ...]) -> None:
    """Everything a router uses (HTTP clients, layer tracker, escalator, metrics) belongs to
    its app's lifespan: two apps side by side answer from their own layers and count their own
    requests."""
    core, mid, _ = servers
    ok = 'onion_router_requests_total{endpoint="/v1/chat/completions",layer="core",outcome="ok"}'
    with (
        RouterServer({"layers": [router_layer("core", core.url)]}) as first,
        RouterServer({"layers": [router_layer("core", mid.url)]}) as second,
    ):
        answers = [ask(first, "a"), ask(first, "b"), ask(second, "c")]
        texts = [a.parse().choices[0].message.content for a in answers]
        assert texts == ["Paris is the capital.", "Paris is the capital.", "Mid says hi"]
        assert f"{ok} 2.0" in httpx.get(f"{first.url}/metrics").text
        assert f"{ok} 1.0" in httpx.get(f"{second.url}/metrics").text
