"""Tool calls: joined from streamed pieces, and the router's own taken out of answers and
streams (the `self` policy's tool, which clients never see)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from onion_router.protocol.types import Answer, Call, Chunk


def merged_calls(pieces: Sequence[Call]) -> tuple[Call, ...]:
    """Streamed tool-call pieces joined into whole calls, in index order."""
    calls: dict[int, Call] = {}
    for piece in pieces:
        have = calls.get(piece.index)
        if have is not None:
            piece = Call(
                piece.index,
                have.name or piece.name,
                have.arguments + piece.arguments,
                have.id or piece.id,
            )
        calls[piece.index] = piece
    return tuple(calls[i] for i in sorted(calls))


def call_json(call: Call) -> dict[str, Any]:
    """One whole call in a chat message's `tool_calls`."""
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "type": "function", "function": function}


def _call_index(entry: Mapping[str, Any], position: int) -> int:
    index = entry.get("index")
    return index if isinstance(index, int) else position


def _call_name(entry: Mapping[str, Any]) -> Any:
    function = entry.get("function")
    return function.get("name") if isinstance(function, Mapping) else None


def without_calls(answer: Answer, name: str) -> Answer:
    """The answer without calls of the tool `name` (the router's own, which clients never see)."""
    if not any(c.name == name for c in answer.calls):
        return answer
    kept = tuple(c for c in answer.calls if c.name != name)
    finish = answer.finish_reason
    if not kept and finish == "tool_calls":
        finish = "stop"
    choices = []
    for choice in answer.raw.get("choices") or []:
        choice = dict(choice)
        message = dict(choice.get("message") or {})
        entries = [e for e in message.get("tool_calls") or [] if _call_name(e) != name]
        message["tool_calls"] = entries or None
        if not entries and message.get("content") is None:
            message["content"] = ""
        choice["message"] = message
        choice["finish_reason"] = finish
        choices.append(choice)
    return replace(answer, finish_reason=finish, calls=kept, raw={**answer.raw, "choices": choices})


class CallFilter:
    """Removes the calls of one tool from a stream. Only the first piece of a call names the
    tool, so the call indices that are its are remembered for the pieces that follow."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ours: set[int] = set()
        self.kept = False  # whether the client has seen a call of another tool

    def chunk(self, chunk: Chunk) -> Chunk:
        self.ours.update(c.index for c in chunk.calls if c.name == self.name)
        self.kept = self.kept or any(c.index not in self.ours for c in chunk.calls)
        if not self.ours or not (chunk.calls or chunk.finish_reason == "tool_calls"):
            return chunk
        finish = chunk.finish_reason
        if finish == "tool_calls" and not self.kept:
            finish = "stop"
        choices = []
        for choice in chunk.raw.get("choices") or []:
            choice = dict(choice)
            delta = dict(choice.get("delta") or {})
            entries = [
                e
                for position, e in enumerate(delta.get("tool_calls") or [])
                if _call_index(e, position) not in self.ours
            ]
            delta["tool_calls"] = entries or None
            choice["delta"] = delta
            choice["finish_reason"] = finish
            choices.append(choice)
        return replace(
            chunk,
            finish_reason=finish,
            calls=tuple(c for c in chunk.calls if c.index not in self.ours),
            raw={**chunk.raw, "choices": choices},
        )
