"""Pure escalation and routing decisions: plain data in, a decision out; no I/O, no requests."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from onion_contract.router_config import (
    DEFAULT_INSTRUCTION,
    DEFAULT_TOOL_INSTRUCTION,
    Escalation,
    RouterLayer,
    Rule,
)

ROUTER_MODEL = "onion"
PIN_PREFIX = "onion/"

_TOKENISH = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class Verdict:
    """Whether a layer's answer (or its first tokens) stands; `reason` is shown in /status."""

    accept: bool
    reason: str
    score: float | None = None


@dataclass(frozen=True)
class ModelChoice:
    """What the client's `model` field asks for: the router's choice, a pinned layer, or neither."""

    pinned: str | None  # layer name when pinned
    known: bool


def resolve_model(model: str, layer_names: Sequence[str]) -> ModelChoice:
    if model == ROUTER_MODEL:
        return ModelChoice(pinned=None, known=True)
    if model.startswith(PIN_PREFIX) and model[len(PIN_PREFIX) :] in layer_names:
        return ModelChoice(pinned=model[len(PIN_PREFIX) :], known=True)
    return ModelChoice(pinned=None, known=False)


def score_logprobs(logprobs: Sequence[float], method: str, first_k: int) -> float | None:
    """Mean, minimum, or mean of the first k token logprobs; None when there are none."""
    values = [lp for lp in logprobs if math.isfinite(lp)] if logprobs else []
    if method == "firstK":
        values = values[:first_k]
    if not values:
        return None
    if method == "min":
        return min(values)
    return sum(values) / len(values)


def judge(
    escalation: Escalation,
    text: str,
    logprobs: Sequence[float],
    calls: Sequence[str] = (),
    *,
    threshold: float | None = None,
    score: float | None = None,
    tie_share: float = 0.0,
    draw: float = 1.0,
) -> Verdict:
    """Judge a complete answer of a layer by that layer's own policy; `calls` names the tools
    the answer calls, `threshold` overrides the configured one (a live `targetRate` threshold,
    which escalates `tie_share` of the scores exactly on it, by the coin `draw` in [0, 1)) and
    `score` is the verification score (policy verify)."""
    verdict = judge_prefix(
        escalation,
        text,
        logprobs,
        done=True,
        calls=calls,
        threshold=threshold,
        score=score,
        tie_share=tie_share,
        draw=draw,
    )
    assert verdict is not None  # a finished answer is always decidable
    return verdict


def judge_prefix(
    escalation: Escalation,
    text: str,
    logprobs: Sequence[float],
    *,
    done: bool,
    calls: Sequence[str] = (),
    threshold: float | None = None,
    score: float | None = None,
    tie_share: float = 0.0,
    draw: float = 1.0,
) -> Verdict | None:
    """Judge the first tokens of an answer; None means "buffer more tokens before deciding"."""
    if escalation.policy == "none":
        return Verdict(True, "policy none")
    limit = escalation.threshold if threshold is None else threshold

    def below(value: float) -> bool:
        return value < limit or (value == limit and draw < tie_share)

    def relation(value: float) -> str:
        return "<" if value < limit else f"on the cut (tie share {tie_share:.2f}) at"

    if escalation.policy in ("verify", "learned"):
        if not done:
            return None  # verification, and the learned model, judge the whole answer
        what = "P(yes)" if escalation.policy == "verify" else "P(stands)"
        if score is None:
            return Verdict(True, f"no {what} score")
        if below(score):
            return Verdict(False, f"{what} {score:.3f} {relation(score)} {limit:.3f}", score)
        return Verdict(True, f"{what} {score:.3f} >= {limit:.3f}", score)
    if escalation.policy == "self":
        if asked_for_help(escalation, text, calls):
            return Verdict(False, "model asked for help")
        if escalation.via == "toolCall":
            # Calls of the client's tools so far; one of ours may still follow in parallel.
            if not done and calls:
                return None
            return Verdict(True, f"no call of {escalation.tool_name}")
        if not done and escalation.sentinel.startswith(text.lstrip()):
            return None
        return Verdict(True, "no sentinel")
    score = score_logprobs(logprobs, escalation.score, escalation.first_k)
    if score is None:
        return Verdict(True, "no logprobs to judge")
    if below(score):
        return Verdict(False, f"confidence {score:.3f} {relation(score)} {limit:.3f}", score)
    return Verdict(True, f"confidence {score:.3f} >= {limit:.3f}", score)


def asked_for_help(escalation: Escalation, text: str, calls: Sequence[str] = ()) -> bool:
    """`self` policy: the model wrote the sentinel, or called the router's tool."""
    if escalation.policy != "self":
        return False
    if escalation.via == "toolCall":
        return escalation.tool_name in calls
    return escalation.sentinel in text


def looks_uncertain(
    escalation: Escalation,
    text: str,
    logprobs: Sequence[float],
    calls: Sequence[str] = (),
    threshold: float | None = None,
) -> bool:
    """Early-wake signal: do the first tokens already suggest this answer will be rejected?"""
    if escalation.policy == "self":
        return asked_for_help(escalation, text, calls)
    if escalation.policy != "confidence" or len(logprobs) < min(escalation.first_k, 4):
        return False
    score = score_logprobs(logprobs[: escalation.first_k], "mean", escalation.first_k)
    limit = escalation.threshold if threshold is None else threshold
    return score is not None and score < limit


def verify_messages(escalation: Escalation, question: str, answer: str) -> list[dict[str, str]]:
    """Policy verify: the request that asks a layer whether its own answer is correct."""
    prompt = escalation.verify_prompt.replace("{question}", question.strip())
    return [{"role": "user", "content": prompt.replace("{answer}", answer.strip())}]


def p_yes(top: Sequence[Mapping[str, Any]]) -> float | None:
    """P(yes) / (P(yes) + P(no)) over the alternatives for the first token of a verification
    answer (OpenAI `top_logprobs` entries); None when neither word is among them."""
    yes = no = 0.0
    for entry in top:
        word = str(entry.get("token", "")).strip().lower()
        logprob = entry.get("logprob")
        if not isinstance(logprob, int | float) or not math.isfinite(logprob):
            continue
        if word in ("yes", "y", "correct", "true"):
            yes += math.exp(logprob)
        elif word in ("no", "n", "incorrect", "false", "wrong"):
            no += math.exp(logprob)
    if yes + no == 0:
        return None
    return yes / (yes + no)


def strip_sentinel(escalation: Escalation, text: str) -> str:
    """Remove the `self` policy's sentinel, which the client must never see."""
    if not asked_for_help(escalation, text) or escalation.via != "sentinel":
        return text
    return text.replace(escalation.sentinel, "").strip()


def self_instruction(escalation: Escalation) -> str | None:
    """The system instruction a `self`-policy layer gets, or None for other policies."""
    if escalation.policy != "self":
        return None
    default = DEFAULT_TOOL_INSTRUCTION if escalation.via == "toolCall" else DEFAULT_INSTRUCTION
    template = escalation.instruction or default
    return template.replace("{sentinel}", escalation.sentinel).replace(
        "{tool}", escalation.tool_name
    )


def own_tool(escalation: Escalation) -> str | None:
    """The name of the tool the router offers a judged layer to ask for help, if any."""
    if escalation.policy == "self" and escalation.via == "toolCall":
        return escalation.tool_name
    return None


def escalation_tool(escalation: Escalation) -> dict[str, Any] | None:
    """The OpenAI-style function tool added to a judged layer's request, if its policy has one."""
    name = own_tool(escalation)
    if name is None:
        return None
    reason = {"type": "string", "description": "What you are not sure about."}
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": "Hand the user's request to a more capable assistant. Call it "
            "instead of answering when you are not confident you can answer correctly.",
            "parameters": {"type": "object", "properties": {"reason": reason}},
        },
    }


def for_request(escalation: Escalation, client_tools: Sequence[str]) -> Escalation:
    """The policy that judges one request. A client tool with the router's tool name wins:
    the router cannot tell the two apart, so it offers nothing and does not judge."""
    if own_tool(escalation) in client_tools:
        return Escalation(policy="none")
    return escalation


def estimate_tokens(text: str) -> int:
    """Tokenizer-free estimate: words and punctuation marks (real tokenizers give a bit more)."""
    return len(_TOKENISH.findall(text))


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def rule_matches(rule: Rule, prompt: str) -> bool:
    if rule.regex is not None:
        return _compiled(rule.regex).search(prompt) is not None
    if rule.keywords is not None:
        lowered = prompt.lower()
        return any(
            re.search(rf"\b{re.escape(k.lower())}\b", lowered) is not None for k in rule.keywords
        )
    assert rule.min_prompt_tokens is not None
    return estimate_tokens(prompt) >= rule.min_prompt_tokens


def start_layer(layers: Sequence[RouterLayer], prompt: str) -> int:
    """Index of the first layer (inside out) whose rules match the prompt; the core otherwise."""
    for index, layer in enumerate(layers):
        if any(rule_matches(rule, prompt) for rule in layer.rules):
            return index
    return 0


def fallback_layer(awake: Sequence[bool], wanted: int) -> int | None:
    """The best awake layer for `whileWaking: fallback`: the outermost awake one inside `wanted`."""
    for index in range(min(wanted, len(awake)) - 1, -1, -1):
        if awake[index]:
            return index
    return None
