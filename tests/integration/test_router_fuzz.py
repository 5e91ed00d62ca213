"""Property-based fuzzing of every POST route of the router (Hypothesis), over real HTTP.

In front of TGI-protocol test servers that accept anything (so every error is the router's own),
arbitrary bodies go to `/v1/chat/completions`, `/v1/completions`, `/generate`, `/generate_stream`
and `/`: any JSON value in any field, nested junk, truncated or non-JSON bodies, wrong content
types, huge numbers, odd unicode, streaming and not. Properties:

- never a 5xx: with an engine that accepts anything, every failure is the client's mistake, a 4xx;
- every error is JSON in the route's shape (OpenAI's `{"error": {...}}`, TGI's
  `{"error": str, "error_type": str}`), and so is every event of a stream;
- the router still serves a normal request afterwards.

`make test` runs a bounded, derandomised number of examples per route (the `ci` profile);
`make fuzz` runs many more with fresh randomness (`HYPOTHESIS_PROFILE=fuzz`,
`ONION_FUZZ_EXAMPLES=N`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fake_tgi import FakeTGI, Script
from tests.support.router_server import RouterServer, router_layer

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("ONION_FUZZ_EXAMPLES", "120")),
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("ONION_FUZZ_EXAMPLES", "3000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

OPENAI_ROUTES = ("/v1/chat/completions", "/v1/completions")
TGI_ROUTES = ("/generate", "/generate_stream", "/")

BASE: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "onion", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "onion", "prompt": "hi"},
    "/generate": {"inputs": "hi", "parameters": {"max_new_tokens": 4}},
    "/generate_stream": {"inputs": "hi", "parameters": {"max_new_tokens": 4}},
    "/": {"inputs": "hi", "parameters": {"max_new_tokens": 4}},
}
# The fields each route reads or passes on, plus the usual OpenAI and TGI parameters.
FIELDS: dict[str, tuple[str, ...]] = {
    "/v1/chat/completions": (
        "model",
        "messages",
        "stream",
        "stream_options",
        "logprobs",
        "top_logprobs",
        "n",
        "tools",
        "tool_choice",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "response_format",
        "user",
    ),
    "/v1/completions": (
        "model",
        "prompt",
        "stream",
        "stream_options",
        "logprobs",
        "echo",
        "n",
        "max_tokens",
        "temperature",
        "stop",
        "seed",
        "suffix",
    ),
}
TGI_FIELDS = ("inputs", "parameters", "stream", "model")
TGI_PARAMETERS = (
    "max_new_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "details",
    "do_sample",
    "frequency_penalty",
    "return_full_text",
)
for route in TGI_ROUTES:
    FIELDS[route] = TGI_FIELDS

odd_text = st.text(
    st.characters(codec="utf-8") | st.sampled_from(["\u0000", "\ufeff", "\u202e", "😀", "\\"]),
    max_size=40,
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 10**30, -1, 0])  # beyond 64 bits and edges
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e308, -1e308, 5e-324])
    | odd_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)


def _message(value: Any) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"])}).map(
        lambda m: {**m, "content": value}
    )


@st.composite
def mutated(draw: st.DrawFn, route: str) -> dict[str, Any]:
    """The route's valid body with a few fields (known or not) set to arbitrary JSON."""
    body = orjson.loads(orjson.dumps(BASE[route]))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["field", "field", "nested", "unknown"]))
        value = draw(scalars | json_values)  # a wrong scalar type is the commonest mistake
        if where == "unknown":
            body[draw(odd_text)] = value
        elif where == "field":
            body[draw(st.sampled_from(FIELDS[route]))] = value
        elif route == "/v1/chat/completions":
            part = draw(st.sampled_from(["content", "role", "message", "tool", "extra"]))
            if part == "content":
                body["messages"] = [draw(_message(value))]
            elif part == "role":
                body["messages"] = [{"role": value, "content": "hi"}]
            elif part == "message":
                body["messages"] = [value]
            elif part == "tool":
                body["tools"] = [{"type": "function", "function": value}]
            else:
                body["messages"] = [{"role": "user", "content": "hi", draw(odd_text): value}]
        elif route in TGI_ROUTES:
            params = body.get("parameters")
            params = params if isinstance(params, dict) else {}
            params[draw(st.sampled_from(TGI_PARAMETERS))] = value
            body["parameters"] = params
        else:
            body["stream_options"] = {"include_usage": value}
    if draw(st.booleans()):
        body["stream"] = True
    return body


@st.composite
def raw_bodies(draw: st.DrawFn, route: str) -> tuple[bytes, str]:
    """Bytes that are not the route's JSON object: truncated, junk, other JSON, other types."""
    kind = draw(st.sampled_from(["truncated", "binary", "json", "text", "empty", "nan"]))
    content_type = draw(
        st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""])
    )
    if kind == "truncated":
        whole = json.dumps(draw(mutated(route))).encode()
        body = whole[: draw(st.integers(0, max(0, len(whole) - 1)))]
    elif kind == "binary":
        body = draw(st.binary(max_size=200))
    elif kind == "json":
        body = json.dumps(draw(json_values)).encode()
    elif kind == "text":
        body = draw(odd_text).encode("utf-8", "surrogatepass")
    elif kind == "nan":
        body = b'{"inputs": NaN, "messages": Infinity, "prompt": -Infinity}'
    else:
        body = b""
    return body, content_type


def _is_tgi(route: str) -> bool:
    return route in TGI_ROUTES


def check_error_shape(route: str, body: Any) -> None:
    if _is_tgi(route):
        assert isinstance(body, dict), body
        assert isinstance(body.get("error"), str) and body["error"], body
        assert isinstance(body.get("error_type"), str), body
        return
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    error = body["error"]
    assert isinstance(error.get("message"), str) and error["message"], body
    assert isinstance(error.get("type"), str) and isinstance(error.get("code"), str), body


def check_stream(route: str, text: str) -> None:
    """Every `data:` line of an event stream is JSON (or OpenAI's [DONE]); errors in shape."""
    for line in text.splitlines():
        if not line.startswith("data:"):
            assert line == "" or line.startswith(":"), line  # separators and heartbeats only
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            assert not _is_tgi(route), "TGI streams end without [DONE]"
            continue
        event = orjson.loads(data)
        if "error" in event:
            check_error_shape(route, event)


def check_response(route: str, response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        assert response.status_code == 200
        check_stream(route, response.text)
        return
    body = orjson.loads(response.content)  # every answer, error or not, is JSON
    if response.status_code >= 400:
        check_error_shape(route, body)
    elif route in OPENAI_ROUTES:
        assert body["onion"]["layer"], body
    else:
        assert isinstance(body, dict | list), body


@pytest.fixture(scope="module")
def router() -> Iterator[RouterServer]:
    confident = Script(tokens=["Paris", " is", " nice"], logprob=-0.05)
    core = FakeTGI(confident, name="core").start()
    mid = FakeTGI(Script(tokens=["Mid", " says", " hi"], logprob=-3.0), name="mid").start()
    big = FakeTGI(Script(tokens=["Big", " knows"], logprob=-0.01), name="big").start()
    # `hi` answers are confident at the core; prompts with `help` escalate through mid, whose
    # self policy offers its tool, to big.
    core.by_word["help"] = Script(tokens=["Hmm", " maybe"], logprob=-3.0)
    config = {
        "streamBufferTokens": 2,
        "layers": [
            router_layer("core", core.url, escalation={"policy": "confidence", "threshold": -1.0}),
            router_layer("mid", mid.url, escalation={"policy": "self", "via": "toolCall"}),
            router_layer("big", big.url, rules=[{"regex": "(?i)theorem"}]),
        ],
    }
    try:
        with RouterServer(config) as server:
            yield server
    finally:
        for server in (core, mid, big):
            server.stop()


@pytest.fixture(scope="module")
def http(router: RouterServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=router.url, timeout=30) as client:
        yield client


def _post(http: httpx.Client, route: str, content: bytes, content_type: str) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return http.post(route, content=content, headers=headers)


ALL_ROUTES = (*OPENAI_ROUTES, *TGI_ROUTES)


@pytest.mark.parametrize("route", ALL_ROUTES)
def test_mutated_bodies_get_answers_or_client_errors(http: httpx.Client, route: str) -> None:
    @given(body=mutated(route), help_me=st.booleans())
    def check(body: dict[str, Any], help_me: bool) -> None:
        if help_me and isinstance(body.get("messages"), list) and body["messages"]:
            first = body["messages"][0]
            if isinstance(first, dict) and first.get("content") == "hi":
                first["content"] = "help me"
        # The stdlib encoder, not orjson: the bodies carry integers beyond 64 bits.
        content = json.dumps(body, ensure_ascii=False).encode()
        check_response(route, _post(http, route, content, "application/json"))

    check()


@pytest.mark.parametrize("route", ALL_ROUTES)
def test_bodies_that_are_not_the_routes_json_get_client_errors(
    http: httpx.Client, route: str
) -> None:
    @given(raw=raw_bodies(route))
    def check(raw: tuple[bytes, str]) -> None:
        response = _post(http, route, *raw)
        check_response(route, response)

    check()


def test_the_router_still_serves_afterwards(http: httpx.Client) -> None:
    # Runs after the fuzzing above (file order): the same router, a normal request.
    answer = http.post("/v1/chat/completions", json=BASE["/v1/chat/completions"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "Paris is nice"
    tgi = http.post("/generate", json=BASE["/generate"])
    assert tgi.status_code == 200 and tgi.json()["generated_text"] == "Paris is nice"
