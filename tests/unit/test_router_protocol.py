"""Pure answer shaping: tool calls joined from stream pieces, and the router's own removed."""

from __future__ import annotations

from typing import Any

import pytest

from onion_router.protocol.calls import CallFilter, call_json, merged_calls, without_calls
from onion_router.protocol.chat import parse_chat
from onion_router.protocol.errors import ProtocolError
from onion_router.protocol.types import Answer, Call, Chunk

WEATHER = {"type": "function", "function": {"name": "get_weather"}}


def call(index: int, name: str, arguments: str = "{}") -> dict[str, Any]:
    return {
        "index": index,
        "id": f"c{index}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def answer(*calls: tuple[str, str]) -> Answer:
    entries = [call(i, n, a) for i, (n, a) in enumerate(calls)]
    message = {"role": "assistant", "content": None, "tool_calls": entries}
    raw = {"id": "x", "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
    parsed = tuple(Call(i, n, a, f"c{i}") for i, (n, a) in enumerate(calls))
    return Answer("", [], "tool_calls", None, raw, parsed)


def test_without_calls_keeps_the_clients_calls() -> None:
    both = answer(("get_weather", '{"city": "Paris"}'), ("escalate", "{}"))
    kept = without_calls(both, "escalate")
    message = kept.raw["choices"][0]["message"]
    assert [e["function"]["name"] for e in message["tool_calls"]] == ["get_weather"]
    assert kept.finish_reason == "tool_calls" and [c.name for c in kept.calls] == ["get_weather"]
    assert both.raw["choices"][0]["message"]["tool_calls"][1]["function"]["name"] == "escalate"


def test_without_calls_of_only_ours_is_a_plain_answer() -> None:
    stripped = without_calls(answer(("escalate", "{}")), "escalate")
    choice = stripped.raw["choices"][0]
    assert choice["message"]["tool_calls"] is None and choice["message"]["content"] == ""
    assert choice["finish_reason"] == "stop" == stripped.finish_reason
    unchanged = answer(("get_weather", "{}"))
    assert without_calls(unchanged, "escalate") is unchanged


def chunk(*entries: dict[str, Any], finish: str | None = None) -> Chunk:
    delta = {"tool_calls": list(entries)} if entries else {}
    raw = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    calls = tuple(
        Call(e["index"], e["function"].get("name"), e["function"].get("arguments", ""))
        for e in entries
    )
    return Chunk("", [], finish, None, raw, calls)


def piece(index: int, arguments: str) -> dict[str, Any]:
    return {"index": index, "function": {"arguments": arguments}}


def test_call_filter_follows_a_call_by_its_index() -> None:
    stream = [
        chunk(call(0, "get_weather", "")),
        chunk(piece(0, '{"city": ')),
        chunk(call(1, "escalate", "")),
        chunk(piece(1, "{}"), piece(0, '"Paris"}')),
        chunk(finish="tool_calls"),
    ]
    calls = CallFilter("escalate")
    shown = [calls.chunk(c) for c in stream]
    entries = [e for c in shown for e in c.raw["choices"][0]["delta"].get("tool_calls") or []]
    assert {e["index"] for e in entries} == {0}
    assert [c.index for c in shown[3].calls] == [0]
    assert shown[-1].finish_reason == "tool_calls"  # the client's call is still there
    joined = merged_calls([p for c in shown for p in c.calls])
    assert [call_json(c)["function"] for c in joined] == [
        {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    ]


def test_call_filter_of_only_our_call_ends_with_stop() -> None:
    calls = CallFilter("escalate")
    first = calls.chunk(chunk(call(0, "escalate", "")))
    assert first.calls == () and first.raw["choices"][0]["delta"]["tool_calls"] is None
    assert calls.chunk(chunk(piece(0, "{}"))).calls == ()
    last = calls.chunk(chunk(finish="tool_calls"))
    assert last.finish_reason == "stop" == last.raw["choices"][0]["finish_reason"]


def test_request_tools_merge_after_the_clients() -> None:
    request = parse_chat({"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER]})
    assert request.tool_names == ("get_weather",)
    ours = {"type": "function", "function": {"name": "escalate"}}
    assert request.with_tool(ours).tool_names == ("get_weather", "escalate")
    assert request.tool_names == ("get_weather",)  # the client's request is unchanged
    bare = parse_chat({"messages": [{"role": "user", "content": "x"}]})
    assert bare.tool_names == () and bare.with_tool(ours).tool_names == ("escalate",)


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        (5, "tools"),
        (True, "tools"),
        ("get_weather", "tools"),
        ({"function": {"name": "x"}}, "tools"),
        ([1], "tools[0]"),
        ([WEATHER, {"type": "function"}], "tools[1]"),
        ([{"type": "function", "function": {"name": 7}}], "tools[0]"),
    ],
)
def test_tools_that_are_not_an_array_of_named_functions_are_the_clients_mistake(
    tools: Any, param: str
) -> None:
    # Found by fuzzing: `tools: 5` or `true` was a 500 (the router lists the client's tools).
    with pytest.raises(ProtocolError) as raised:
        parse_chat({"messages": [{"role": "user", "content": "hi"}], "tools": tools})
    assert raised.value.status == 400 and raised.value.param == param


def test_tools_may_be_absent_or_null() -> None:
    for body in ({}, {"tools": None}, {"tools": []}, {"tools": [WEATHER]}):
        parse_chat({"messages": [{"role": "user", "content": "hi"}], **body})
