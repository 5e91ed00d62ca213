"""Waking and holding without a cluster: an operator double sets layer phases and sees the
demand the router records; clients are the real openai SDK and plain HTTP for raw SSE."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from onion_lab.waiting import wait_until
from tests.support.fake_tgi import FakeTGI, Script
from tests.support.router_server import OperatorDouble, RouterServer, router_layer

UNSURE = Script(tokens=["Maybe", " Lyon", "?"], logprob=-2.5)


@pytest.fixture
def core() -> Iterator[FakeTGI]:
    with FakeTGI(Script(tokens=["core", " answer"], logprob=-0.05), name="core") as server:
        yield server


@pytest.fixture
def mid() -> Iterator[FakeTGI]:
    with FakeTGI(Script(tokens=["mid", " answer"], logprob=-0.05), name="mid") as server:
        yield server


def config(core: FakeTGI, mid: FakeTGI, **overrides: object) -> dict:
    return {
        "heartbeatSeconds": 0.2,
        "demandRenewSeconds": 0.3,
        "layers": [
            router_layer("core", core.url, escalation={"policy": "confidence", "threshold": -1.0}),
            router_layer(
                "mid",
                mid.url,
                managed=True,
                lease="onion-mid-demand",
                wakeTimeoutSeconds=overrides.pop("wake", 20),
            ),
        ],
        **overrides,
    }


def chat(router: RouterServer, model: str = "onion", **kwargs: object):  # type: ignore[no-untyped-def]
    return router.openai().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello"}], **kwargs
    )  # type: ignore[call-overload]


def streamed(router: RouterServer) -> tuple[httpx.Headers, str]:
    """A streamed answer through the openai SDK: its headers and its text."""
    with router.openai().chat.completions.with_streaming_response.create(
        model="onion", messages=[{"role": "user", "content": "x"}], stream=True
    ) as response:
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    return response.headers, text


def layer(router: RouterServer, name: str) -> dict:
    layers = httpx.get(f"{router.url}/status").json()["layers"]
    return next(x for x in layers if x["name"] == name)


def test_held_request_is_answered_once_the_layer_is_ready(core: FakeTGI, mid: FakeTGI) -> None:
    link = OperatorDouble({"mid": "Dormant"})
    with RouterServer(config(core, mid), link) as router, ThreadPoolExecutor(1) as pool:
        held = pool.submit(chat, router, "onion/mid")
        wait_until(lambda: link.renewed("onion-mid-demand"), what="demand for mid")
        wait_until(lambda: layer(router, "mid")["queued"] == 1, what="request queued")
        assert not held.done() and not mid.stats.requests
        link.set_phase("mid", "Waking")
        time.sleep(0.3)  # a non-Ready phase change must not release the request
        assert not held.done()
        link.set_phase("mid", "Ready")
        raw = held.result(timeout=10)
        assert raw.parse().choices[0].message.content == "mid answer"
        assert raw.headers["x-onion-layer"] == "mid"


def test_a_request_held_while_the_api_server_is_away_is_answered(
    core: FakeTGI, mid: FakeTGI
) -> None:
    # Demand cannot be recorded at first (kube-apiserver restarting): the request is held, not
    # refused, and the renewer records it once the API answers; then the layer wakes.
    link = OperatorDouble({"mid": "Dormant"})
    link.unreachable = 3
    with RouterServer(config(core, mid), link) as router, ThreadPoolExecutor(1) as pool:
        held = pool.submit(chat, router, "onion/mid")
        wait_until(lambda: link.renewed("onion-mid-demand"), timeout=10, what="demand recorded")
        assert link.unreachable == 0 and not held.done()
        link.set_phase("mid", "Ready")
        raw = held.result(timeout=10)
        assert raw.parse().choices[0].message.content == "mid answer"


def layer_load(router: RouterServer, layer: str) -> dict[str, float]:
    """The autoscaling signal the router exports: queued and in-flight requests per layer."""
    values: dict[str, float] = {}
    for line in httpx.get(f"{router.url}/metrics").text.splitlines():
        if line.startswith("onion_router_layer_requests{") and f'layer="{layer}"' in line:
            state = line.split('state="')[1].split('"')[0]
            values[state] = float(line.rsplit(" ", 1)[1])
    return values


def test_the_load_signal_counts_held_then_in_flight_requests(core: FakeTGI, mid: FakeTGI) -> None:
    mid.script = Script(tokens=["slow", " mid"], logprob=-0.05, token_delay=0.4)
    link = OperatorDouble({"mid": "Dormant"})
    with RouterServer(config(core, mid), link) as router, ThreadPoolExecutor(1) as pool:
        assert layer_load(router, "mid") == {"queued": 0.0, "inflight": 0.0}
        held = pool.submit(chat, router, "onion/mid")
        wait_until(lambda: layer_load(router, "mid")["queued"] == 1, what="counted as queued")
        link.set_phase("mid", "Ready")
        wait_until(
            lambda: layer_load(router, "mid") == {"queued": 0.0, "inflight": 1.0},
            what="counted as in flight",
        )
        held.result(timeout=10)
        assert layer_load(router, "mid") == {"queued": 0.0, "inflight": 0.0}
        assert layer_load(router, "core") == {"queued": 0.0, "inflight": 0.0}


def test_escalation_wakes_the_next_layer(core: FakeTGI, mid: FakeTGI) -> None:
    core.script = UNSURE
    link = OperatorDouble({"mid": "Dormant"})
    with RouterServer(config(core, mid), link) as router, ThreadPoolExecutor(1) as pool:
        held = pool.submit(chat, router)
        wait_until(lambda: link.renewed("onion-mid-demand"), what="demand for mid")
        link.set_phase("mid", "Ready")
        assert held.result(timeout=10).headers["x-onion-path"] == "core,mid"


def test_early_wake_overlaps_cold_start_with_generation(core: FakeTGI, mid: FakeTGI) -> None:
    core.script = Script(tokens=[f" w{i}" for i in range(12)], logprob=-2.5, token_delay=0.15)
    link = OperatorDouble({"mid": "Dormant"})
    with RouterServer(config(core, mid), link) as router, ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        held = pool.submit(chat, router)
        wait_until(lambda: link.renewed("onion-mid-demand"), what="early demand for mid")
        first_demand = link.renewals[0][0] - started
        # The core needs 12 x 0.15 s; demand was recorded after its first few tokens.
        assert first_demand < 1.2, first_demand
        assert core.stats.streams_finished == 0
        link.set_phase("mid", "Ready")
        assert held.result(timeout=10).headers["x-onion-path"] == "core,mid"
        metrics = httpx.get(f"{router.url}/metrics").text
        assert 'onion_router_early_wakes_total{layer="mid"} 1.0' in metrics


def test_early_wake_while_streaming(core: FakeTGI, mid: FakeTGI) -> None:
    core.script = Script(tokens=[f" w{i}" for i in range(12)], logprob=-2.5, token_delay=0.15)
    link = OperatorDouble({"mid": "Dormant"})
    body = {"model": "onion", "stream": True, "messages": [{"role": "user", "content": "hi"}]}

    def read_stream() -> list[str]:
        with httpx.stream(
            "POST", f"{router.url}/v1/chat/completions", json=body, timeout=20
        ) as response:
            return [line for line in response.iter_lines() if line.startswith("data:")]

    with RouterServer(config(core, mid), link) as router, ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        lines = pool.submit(read_stream)
        wait_until(lambda: link.renewed("onion-mid-demand"), what="early demand for mid")
        assert link.renewals[0][0] - started < 1.2
        link.set_phase("mid", "Ready")
        events = lines.result(timeout=20)
    first = json.loads(events[1].removeprefix("data: "))
    assert events[-1] == "data: [DONE]" and first["onion"]["path"] == ["core", "mid"]


def test_wake_timeout_gives_503_with_retry_after(core: FakeTGI, mid: FakeTGI) -> None:
    link = OperatorDouble({"mid": "Waking"})
    with RouterServer(config(core, mid, wake=1), link) as router:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as err:
            chat(router, "onion/mid")
        assert 0.9 < time.monotonic() - started < 5
        assert err.value.status_code == 503
        assert err.value.response.headers["retry-after"]
        assert "did not become ready within 1s" in err.value.message


def test_full_queue_gives_429_with_retry_after(core: FakeTGI, mid: FakeTGI) -> None:
    link = OperatorDouble({"mid": "Dormant"})
    with (
        RouterServer(config(core, mid, maxQueuePerLayer=1), link) as router,
        ThreadPoolExecutor(1) as pool,
    ):
        held = pool.submit(chat, router, "onion/mid")
        wait_until(lambda: layer(router, "mid")["queued"] == 1, what="one request queued")
        with pytest.raises(openai.RateLimitError) as err:
            chat(router, "onion/mid")
        assert int(err.value.response.headers["retry-after"]) >= 1
        assert err.value.body["code"] == "queue_full"  # type: ignore[index]
        link.set_phase("mid", "Ready")
        assert held.result(timeout=10).parse().choices[0].message.content == "mid answer"


def test_demand_is_renewed_while_a_request_is_in_flight(core: FakeTGI, mid: FakeTGI) -> None:
    mid.script = Script(tokens=[f" t{i}" for i in range(10)], token_delay=0.15)
    link = OperatorDouble({"mid": "Ready"})
    with RouterServer(config(core, mid), link) as router:
        chat(router, "onion/mid")  # 1.5 s in flight, renewals every 0.3 s
        assert link.renewed("onion-mid-demand") >= 3


def test_missing_lease_is_a_clear_503(core: FakeTGI, mid: FakeTGI) -> None:
    link = OperatorDouble({"mid": "Dormant"}, missing={"onion-mid-demand"})
    with RouterServer(config(core, mid), link) as router:
        with pytest.raises(openai.APIStatusError) as err:
            chat(router, "onion/mid")
        assert err.value.status_code == 503
        assert "onion-mid-demand does not exist" in err.value.message
        assert layer(router, "mid")["queued"] == 0


def test_failed_layer_releases_held_requests(core: FakeTGI, mid: FakeTGI) -> None:
    link = OperatorDouble({"mid": "Waking"})
    with RouterServer(config(core, mid), link) as router, ThreadPoolExecutor(1) as pool:
        held = pool.submit(chat, router, "onion/mid")
        wait_until(lambda: layer(router, "mid")["queued"] == 1, what="queued")
        link.set_phase("mid", "Failed")
        with pytest.raises(openai.APIStatusError) as err:
            held.result(timeout=10)
        assert err.value.status_code == 503 and "failed to start" in err.value.message


def test_streaming_client_gets_heartbeats_while_held(core: FakeTGI, mid: FakeTGI) -> None:
    link = OperatorDouble({"mid": "Waking"})
    body = {"model": "onion/mid", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with (
        RouterServer(config(core, mid), link) as router,
        httpx.stream(
            "POST", f"{router.url}/v1/chat/completions", json=body, timeout=20
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["x-onion-held"] == "true"
        lines = response.iter_lines()
        assert next(lines).startswith(": waiting for layer mid (Waking")
        link.set_phase("mid", "Ready")
        rest = [line for line in lines if line.startswith("data:")]
    assert rest[-1] == "data: [DONE]" and '"mid"' in rest[1]


def test_fallback_answers_from_an_awake_layer_marked_degraded(core: FakeTGI, mid: FakeTGI) -> None:
    core.script = UNSURE
    link = OperatorDouble({"mid": "Dormant"})
    with RouterServer(config(core, mid, whileWaking="fallback"), link) as router:
        raw = chat(router)
        assert raw.headers["x-onion-layer"] == "core"
        assert raw.headers["x-onion-degraded"] == "true"
        assert raw.parse().model_extra["onion"]["degraded"] is True
        pinned = chat(router, "onion/mid")  # the pinned layer sleeps: the core stands in
        assert pinned.headers["x-onion-layer"] == "core"
        assert pinned.headers["x-onion-degraded"] == "true"
        headers, text = streamed(router)
        assert headers["x-onion-degraded"] == "true"
        assert text == "Maybe Lyon?"
        # Meanwhile the sleeping layer was asked to wake for the next requests.
        assert link.renewed("onion-mid-demand") >= 1
        assert not mid.stats.requests


def test_self_tool_call_while_the_next_layer_sleeps(core: FakeTGI, mid: FakeTGI) -> None:
    """The core asks for help by calling the router's tool, but mid sleeps and `whileWaking:
    fallback` keeps the core's answer: the client gets its text without the call."""
    settings = config(core, mid, whileWaking="fallback")
    settings["layers"][0]["escalation"] = {"policy": "self", "via": "toolCall"}
    core.script = Script(tokens=["I", " am", " unsure"], calls=[("escalate", "{}")])
    link = OperatorDouble({"mid": "Dormant"})
    with RouterServer(settings, link) as router:
        raw = chat(router)
        answer = raw.parse()
        assert raw.headers["x-onion-degraded"] == "true"
        assert answer.choices[0].message.content == "I am unsure"
        assert answer.choices[0].message.tool_calls is None
        assert answer.choices[0].finish_reason == "stop"
        # It still wakes, for the next requests (the renewal is sent in the background).
        wait_until(lambda: link.renewed("onion-mid-demand"), timeout=10, what="demand renewed")
        with router.openai().chat.completions.with_streaming_response.create(
            model="onion", messages=[{"role": "user", "content": "hello"}], stream=True
        ) as response:
            assert response.headers["x-onion-degraded"] == "true"
            chunks = [c for c in response.parse() if c.choices]
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "I am unsure"
        assert not [c for c in chunks if c.choices[0].delta.tool_calls]
        assert chunks[-1].choices[0].finish_reason == "stop"
        # A call of the client's own tool is joined from the streamed pieces the router reads
        # internally while the next layer sleeps (so that its wake could start early).
        core.script = Script(tokens=[], calls=[("lookup", '{"q": "x"}')])
        tool = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
        answer = chat(router, tools=[tool]).parse()
        assert core.stats.requests[-1]["stream"] is True
        assert answer.choices[0].finish_reason == "tool_calls"
        assert answer.choices[0].message.content is None
        calls = answer.choices[0].message.tool_calls or []
        assert [(c.function.name, c.function.arguments) for c in calls] == [
            ("lookup", '{"q": "x"}')
        ]
        assert calls[0].id.startswith("call-")


def test_a_rejected_answer_stands_when_the_next_layer_fails_under_fallback(
    core: FakeTGI, mid: FakeTGI
) -> None:
    """Mid is awake but refuses: with `whileWaking: fallback` the core's rejected answer, heard
    whole, stands marked degraded, on both paths; the core's verdict counts as a judgement and
    the escalation that was tried as one."""
    core.script = UNSURE
    mid.script = Script(fail="refuse")
    link = OperatorDouble({"mid": "Ready"})
    with RouterServer(config(core, mid, whileWaking="fallback"), link) as router:
        raw = chat(router)
        assert raw.headers["x-onion-layer"] == "core"
        assert raw.headers["x-onion-degraded"] == "true"
        assert raw.parse().choices[0].message.content == "Maybe Lyon?"
        headers, text = streamed(router)
        assert headers["x-onion-degraded"] == "true"
        assert text == "Maybe Lyon?"
        assert len(mid.stats.requests) == 2
        metrics = httpx.get(f"{router.url}/metrics").text
    assert 'onion_router_judgements_total{layer="core",verdict="escalate"} 2.0' in metrics
    assert 'onion_router_escalations_total{source="core",target="mid"} 2.0' in metrics


def test_an_answer_kept_because_the_next_layer_sleeps_is_no_escalation(
    core: FakeTGI, mid: FakeTGI
) -> None:
    """The core's answer is rejected but mid sleeps (`whileWaking: fallback`): the verdict
    counts, and the adaptive threshold sees it, but nothing went to mid, on either path."""
    core.script = UNSURE
    link = OperatorDouble({"mid": "Dormant"})
    with RouterServer(config(core, mid, whileWaking="fallback"), link) as router:
        assert chat(router).headers["x-onion-degraded"] == "true"
        assert streamed(router)[0]["x-onion-degraded"] == "true"
        metrics = httpx.get(f"{router.url}/metrics").text
    assert 'onion_router_judgements_total{layer="core",verdict="escalate"} 2.0' in metrics
    assert "onion_router_escalations_total{" not in metrics
