"""Escalation and routing decisions, table-driven on plain data."""

from __future__ import annotations

import pytest

from onion_contract.router_config import Escalation, RouterLayer, Rule
from onion_router.policies import (
    escalation_tool,
    estimate_tokens,
    fallback_layer,
    for_request,
    judge,
    judge_prefix,
    looks_uncertain,
    p_yes,
    resolve_model,
    rule_matches,
    score_logprobs,
    self_instruction,
    start_layer,
    strip_sentinel,
    verify_messages,
)

CONF = Escalation(policy="confidence", threshold=-0.8, score="mean", first_k=2)
SELF = Escalation(policy="self", sentinel="[[ESCALATE]]")
TOOL = Escalation(policy="self", via="toolCall")
NONE = Escalation(policy="none")


@pytest.mark.parametrize(
    ("logprobs", "method", "k", "expected"),
    [
        ([-0.2, -0.4, -1.2], "mean", 8, -0.6),
        ([-0.2, -0.4, -1.2], "min", 8, -1.2),
        ([-0.2, -0.4, -1.2], "firstK", 2, -0.3),
        ([-0.2, float("-inf"), -0.4], "mean", 8, -0.3),
        ([], "mean", 8, None),
    ],
)
def test_score(logprobs: list[float], method: str, k: int, expected: float | None) -> None:
    got = score_logprobs(logprobs, method, k)
    assert got == pytest.approx(expected) if expected is not None else got is None


@pytest.mark.parametrize(
    ("escalation", "text", "logprobs", "accept"),
    [
        (NONE, "whatever", [-9.0], True),
        (CONF, "sure", [-0.1, -0.2], True),
        (CONF, "hmm", [-1.5, -0.9], False),
        (CONF, "no logprobs", [], True),
        (Escalation(policy="confidence", threshold=-0.5, score="min"), "x", [-0.1, -0.6], False),
        (
            Escalation(policy="confidence", threshold=-0.5, score="firstK", first_k=1),
            "x",
            [-0.1, -5.0],
            True,
        ),
        (SELF, "[[ESCALATE]]", [-0.1], False),
        (SELF, "I think [[ESCALATE]] maybe", [], False),
        (SELF, "Paris.", [], True),
    ],
)
def test_judge(escalation: Escalation, text: str, logprobs: list[float], accept: bool) -> None:
    assert judge(escalation, text, logprobs).accept is accept


@pytest.mark.parametrize(
    ("text", "done", "expected"),
    [
        ("[[ESC", False, None),  # could still become the sentinel: buffer more
        ("  [[", False, None),
        ("[[ESC", True, True),
        ("Paris", False, True),
        ("[[ESCALATE]]", False, False),
    ],
)
def test_judge_prefix_self(text: str, done: bool, expected: bool | None) -> None:
    verdict = judge_prefix(SELF, text, [], done=done)
    assert (verdict.accept if verdict else None) is expected


def test_confidence_reason_names_the_score() -> None:
    verdict = judge(CONF, "x", [-2.0])
    assert not verdict.accept and verdict.score == -2.0 and "-2.000 < -0.8" in verdict.reason


@pytest.mark.parametrize(
    ("escalation", "text", "logprobs", "uncertain"),
    [
        (CONF, "", [-3.0, -3.0, -3.0, -3.0], True),
        (CONF, "", [-3.0], False),  # too few tokens to tell
        (CONF, "", [-0.1, -0.1, -3.0, -3.0], False),  # first k=2 are confident
        (SELF, "[[ESCALATE]]", [], True),
        (NONE, "", [-9.0] * 8, False),
    ],
)
def test_looks_uncertain(
    escalation: Escalation, text: str, logprobs: list[float], uncertain: bool
) -> None:
    assert looks_uncertain(escalation, text, logprobs) is uncertain


@pytest.mark.parametrize(
    ("escalation", "text", "calls", "accept"),
    [
        (TOOL, "", ["escalate"], False),
        (TOOL, "Let me get help.", ["escalate"], False),
        (TOOL, "", ["get_weather", "escalate"], False),  # parallel calls: help wins
        (TOOL, "", ["get_weather"], True),  # the client's tool: its answer stands
        (TOOL, "Paris.", [], True),
        (TOOL, "[[ESCALATE]]", [], True),  # the sentinel means nothing in this mode
        (Escalation(policy="self", via="toolCall", tool_name="ask"), "", ["escalate"], True),
        (SELF, "Paris.", ["escalate"], True),  # sentinel mode ignores tool calls
        (CONF, "", ["escalate"], True),
    ],
)
def test_judge_tool_call(escalation: Escalation, text: str, calls: list[str], accept: bool) -> None:
    assert judge(escalation, text, [], calls).accept is accept


@pytest.mark.parametrize(
    ("text", "calls", "done", "expected"),
    [
        ("", ["escalate"], False, False),  # decided on the call, before the answer ends
        ("", ["get_weather"], False, None),  # one of ours may still follow: buffer more
        ("", ["get_weather"], True, True),
        ("Paris is", [], False, True),
        ("", [], True, True),
    ],
)
def test_judge_prefix_tool_call(
    text: str, calls: list[str], done: bool, expected: bool | None
) -> None:
    verdict = judge_prefix(TOOL, text, [], done=done, calls=calls)
    assert (verdict.accept if verdict else None) is expected


def test_tool_call_early_wake_instruction_and_tool() -> None:
    assert looks_uncertain(TOOL, "", [], ["escalate"])
    assert not looks_uncertain(TOOL, "[[ESCALATE]]", [], ["get_weather"])
    instruction = self_instruction(TOOL) or ""
    assert "escalate" in instruction and "[[ESCALATE]]" not in instruction
    custom = Escalation(policy="self", via="toolCall", tool_name="ask", instruction="call {tool}")
    assert self_instruction(custom) == "call ask"
    tool = escalation_tool(custom)
    assert tool is not None and tool["type"] == "function"
    assert tool["function"]["name"] == "ask" and tool["function"]["parameters"]["type"] == "object"
    assert escalation_tool(SELF) is None and escalation_tool(CONF) is None
    assert strip_sentinel(TOOL, "[[ESCALATE]]") == "[[ESCALATE]]"


@pytest.mark.parametrize(
    ("escalation", "client_tools", "policy"),
    [
        (TOOL, ["get_weather"], "self"),
        (TOOL, ["escalate"], "none"),  # the client's own `escalate` wins: not judged
        (Escalation(policy="self", via="toolCall", tool_name="ask"), ["escalate"], "self"),
        (SELF, ["escalate"], "self"),
        (CONF, ["escalate"], "confidence"),
    ],
)
def test_for_request(escalation: Escalation, client_tools: list[str], policy: str) -> None:
    assert for_request(escalation, client_tools).policy == policy


def test_sentinel_stripping_and_instruction() -> None:
    assert strip_sentinel(SELF, "[[ESCALATE]] ") == ""
    assert strip_sentinel(CONF, "[[ESCALATE]]") == "[[ESCALATE]]"
    assert "[[ESCALATE]]" in (self_instruction(SELF) or "")
    assert self_instruction(CONF) is None


@pytest.mark.parametrize(
    ("model", "pinned", "known"),
    [
        ("onion", None, True),
        ("onion/mid", "mid", True),
        ("onion/nope", None, False),
        ("gpt-4", None, False),
    ],
)
def test_resolve_model(model: str, pinned: str | None, known: bool) -> None:
    choice = resolve_model(model, ["core", "mid"])
    assert (choice.pinned, choice.known) == (pinned, known)


@pytest.mark.parametrize(
    ("rule", "prompt", "matches"),
    [
        (Rule(regex="(?i)prove|theorem"), "Prove that 2 is prime", True),
        (Rule(regex="(?i)prove|theorem"), "hello", False),
        (Rule(keywords=("sql", "database")), "Write SQL for this", True),
        (Rule(keywords=("sql",)), "results", False),  # whole words only
        (Rule(min_prompt_tokens=5), "one two three four five", True),
        (Rule(min_prompt_tokens=5), "one two", False),
    ],
)
def test_rules(rule: Rule, prompt: str, matches: bool) -> None:
    assert rule_matches(rule, prompt) is matches


def test_start_layer_is_first_matching_layer_inside_out() -> None:
    layers = [
        RouterLayer(name="core", url="http://c", model="c"),
        RouterLayer(name="sql", url="http://s", model="s", rules=(Rule(keywords=("sql",)),)),
        RouterLayer(name="big", url="http://b", model="b", rules=(Rule(regex="(?i)sql|prove"),)),
    ]
    assert start_layer(layers, "hello") == 0
    assert start_layer(layers, "sql please") == 1
    assert start_layer(layers, "prove it") == 2


@pytest.mark.parametrize(
    ("awake", "wanted", "expected"),
    [([True, False, False], 2, 0), ([True, True, False], 2, 1), ([False, False], 1, None)],
)
def test_fallback_layer(awake: list[bool], wanted: int, expected: int | None) -> None:
    assert fallback_layer(awake, wanted) == expected


def test_estimate_tokens() -> None:
    assert estimate_tokens("Hello, world!") == 4


VERIFY = Escalation(policy="verify", threshold=0.6)


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ([{"token": "Yes", "logprob": -0.1}, {"token": " No", "logprob": -2.5}], 0.9168),
        ([{"token": "No", "logprob": -0.05}, {"token": "yes", "logprob": -3.0}], 0.0497),
        ([{"token": "Maybe", "logprob": -0.1}], None),  # neither word: no score
        ([{"token": "yes", "logprob": float("-inf")}, {"token": "no", "logprob": -1.0}], 0.0),
        ([], None),
    ],
)
def test_p_yes_from_the_first_tokens_alternatives(top: list, expected: float | None) -> None:
    got = p_yes(top)
    assert got == pytest.approx(expected, abs=1e-3) if expected is not None else got is None


def test_verify_judges_the_whole_answer_by_p_yes() -> None:
    assert judge_prefix(VERIFY, "partial", [], done=False) is None  # needs the whole answer
    assert judge(VERIFY, "4", [], score=0.9).accept
    rejected = judge(VERIFY, "5", [], score=0.2)
    assert not rejected.accept and rejected.score == 0.2 and "P(yes)" in rejected.reason
    assert judge(VERIFY, "5", [], score=None).accept  # no score: the answer stands
    assert not judge(VERIFY, "4", [], score=0.9, threshold=0.95).accept  # a live threshold


def test_verify_messages_fill_in_question_and_answer() -> None:
    (message,) = verify_messages(VERIFY, " What is 2+2? ", "4\n")
    assert message["role"] == "user"
    assert "Request:\nWhat is 2+2?\n\nAnswer:\n4\n\nIs the answer correct?" in message["content"]
    custom = Escalation(policy="verify", verify_prompt="Q={question} A={answer} ok?")
    assert verify_messages(custom, "q", "a") == [{"role": "user", "content": "Q=q A=a ok?"}]
