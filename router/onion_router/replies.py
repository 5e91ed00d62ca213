"""What a layer said, as the escalation loop hears it: the text, token logprobs and tool calls
so far (`Heard`), a reply heard far enough to judge (`Reply`), and the reply that stands with
what the client must not see taken out (`Decided`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from onion_contract.router_config import RouterLayer
from onion_router.policies import Verdict, own_tool, strip_sentinel
from onion_router.protocol.calls import CallFilter, call_json, merged_calls, without_calls
from onion_router.protocol.types import Answer, Call, Chunk, Meta, Token
from onion_router.upstream import UpstreamStream


@dataclass
class Heard:
    """What a layer has said so far, as its policy judges it: text, token logprobs, tool calls.
    Streamed chunks are kept, to be sent on if the answer stands."""

    chunks: list[Chunk] = field(default_factory=list)
    text: str = ""
    tokens: list[Token] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    pieces: list[Call] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # names of the tools called
    count: int = 0  # tokens (or, without logprobs, pieces of text)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None

    @classmethod
    def of(cls, answer: Answer) -> Heard:
        """A whole answer, heard at once."""
        heard = cls(text=answer.text, tokens=answer.tokens, pieces=list(answer.calls))
        heard.logprobs = [t.logprob for t in answer.tokens]
        heard.calls = [c.name for c in answer.calls if c.name]
        return heard

    def add(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)
        self.text += chunk.text
        self.tokens.extend(chunk.tokens)
        self.logprobs.extend(t.logprob for t in chunk.tokens)
        self.pieces.extend(chunk.calls)
        self.calls.extend(c.name for c in chunk.calls if c.name)
        self.count += len(chunk.tokens) or (1 if chunk.text else 0)
        self.finish_reason = chunk.finish_reason or self.finish_reason
        self.usage = chunk.usage or self.usage

    def answer(self) -> Answer:
        """The streamed answer joined, as the model server would have answered it whole."""
        first = self.chunks[0].raw if self.chunks else {}
        calls = merged_calls(self.pieces)
        # As the model server would answer: content null when there are only tool calls.
        content = self.text or (None if calls else "")
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = [call_json(c) for c in calls]
        raw = {
            "id": first.get("id"),
            "object": "chat.completion",
            "created": first.get("created") or int(time.time()),
            "model": first.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": self.usage,
        }
        return Answer(self.text, self.tokens, self.finish_reason, self.usage, raw, calls)


@dataclass
class Reply:
    """What one layer said, heard far enough to judge: a whole answer, or the first chunks of a
    stream whose rest has still to come."""

    heard: Heard
    done: bool  # the whole answer has been heard
    answer: Answer | None = None  # the whole answer (the non-streaming path)
    stream: UpstreamStream | None = None  # the rest of it (the streaming path)
    verdict: Verdict | None = None  # when the policy decided on the first chunks

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()


@dataclass(frozen=True)
class Decided:
    """The loop's last step: this reply stands, from this layer, as `meta` says."""

    reply: Reply
    layer: RouterLayer
    judged: bool  # whether the layer's policy judged it (and the router's tool was offered)
    meta: Meta

    def degraded(self) -> Decided:
        return replace(self, meta=replace(self.meta, degraded=True))

    def answer(self) -> Answer:
        """The whole answer without what the client must never see (sentinel, own calls)."""
        answer = self.reply.answer
        assert answer is not None, "only the non-streaming path asks for the answer whole"
        escalation = self.layer.escalation
        answer = replace(answer, text=strip_sentinel(escalation, answer.text))
        tool = own_tool(escalation) if self.judged else None
        return without_calls(answer, tool) if tool is not None else answer

    def cleaner(self) -> Callable[[Chunk], Chunk]:
        """Takes out of each streamed chunk what the client must never see: the router's own
        tool calls (offered only when judged), or the sentinel."""
        tool = own_tool(self.layer.escalation) if self.judged else None
        if tool is not None:
            return CallFilter(tool).chunk
        escalation = self.layer.escalation
        sentinel = escalation.sentinel if escalation.policy == "self" else None

        def clean(chunk: Chunk) -> Chunk:
            if sentinel is not None and sentinel in chunk.text:
                return replace(chunk, text=chunk.text.replace(sentinel, ""))
            return chunk

        return clean
