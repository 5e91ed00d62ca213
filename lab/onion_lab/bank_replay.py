"""A BANK REPLAY ENGINE (a test double of a model, not a model): an OpenAI-compatible chat server
that answers a question of the answer bank with one layer's recorded answer (text, token
logprobs, top logprobs, finish reason, token counts) at its recorded speed, divided by `speed`.
The probes of the `verify` and `self` policies are answered from the bank the same way. A request
the bank does not hold gets a clear 404 in the OpenAI error shape. The bank's own recording (real
models on llama-server) is what ties it to the real ladder; `make bench-bargain` starts one per
layer so that a whole trace can be replayed through the real router and operator in minutes (so
it lives in the lab package, which benchmarks and tests share, not in tests/; product code never
imports it).

Stated simplification: a layer asked under the `self` instruction answers the sentinel when its
recorded probe asked for help, and otherwise its recorded plain answer.

    python -m onion_lab.bank_replay --layer core --port N [--bank results/bank] [--speed 6]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from onion_lab import bank
from onion_lab.sockets import serve_on_loopback


@dataclass(frozen=True)
class Reply:
    """One recorded answer, as the engine gave it."""

    text: str
    pieces: tuple[str, ...]  # the text split at its tokens (what a stream sends)
    logprobs: tuple[float, ...]
    top: tuple[tuple[Mapping[str, Any], ...], ...]
    finish_reason: str
    prompt_tokens: int
    prefill_seconds: float
    token_seconds: float  # per generated token


def pieces_of(text: str, tokens: Iterable[str]) -> tuple[str, ...]:
    """The answer split at its tokens. A token that is part of a multi-byte character (shown as
    U+FFFD) sends nothing; the next whole token sends the text up to its end. The pieces always
    join to the exact answer."""
    out: list[str] = []
    offset = 0
    for token in tokens:
        if "\ufffd" in token or not token:
            out.append("")
            continue
        found = text.find(token, offset)
        if found < 0:
            out.append("")
            continue
        out.append(text[offset : found + len(token)])
        offset = found + len(token)
    if offset < len(text):
        if out:
            out[-1] += text[offset:]
        else:
            out.append(text[offset:])
    return tuple(out)


def reply_of(answer: Mapping[str, Any], text: str | None = None) -> Reply:
    """How the engine gives a recorded answer (or probe): its text, tokens and timing."""
    tops = tuple(tuple(t) for t in answer.get("top_logprobs") or ())
    said = answer["answer"] if text is None else text
    tokens = [t[0]["token"] if t else "" for t in tops]
    generated = max(1, int(answer.get("completion_tokens") or len(tokens) or 1))
    engine = answer.get("engine_ms") or {}
    seconds = float(answer.get("seconds") or 0.0)
    prefill = float(engine.get("prompt", 0.0)) / 1000 or seconds * 0.1
    # The whole answer takes its recorded wall seconds (what the simulator counts too).
    decode = max(0.0, seconds - prefill) if seconds else float(engine.get("generation", 0.0)) / 1000
    return Reply(
        text=said,
        pieces=pieces_of(said, tokens) if text is None else (said,),
        logprobs=tuple(float(v) for v in answer.get("logprobs") or ()),
        top=tops,
        finish_reason=str(answer.get("finish_reason") or "stop"),
        prompt_tokens=int(answer.get("prompt_tokens") or 0),
        prefill_seconds=prefill,
        token_seconds=decode / generated,
    )


def index(rows: Iterable[Mapping[str, Any]], layer: str, sentinel: str) -> dict[str, Reply]:
    """Replies of one layer by the sha256 of the request's messages: the answer, and the
    answers to the `self` and `verify` probes."""
    out: dict[str, Reply] = {}
    for row in rows:
        if row["layer"] != layer:
            continue
        out[row["messages_sha256"]] = reply_of(row)
        probes = row.get("probes") or {}
        if "self" in probes:
            probe = probes["self"]
            out[probe["messages_sha256"]] = (
                reply_of(probe, sentinel) if probe["asked"] else reply_of(row)
            )
        if "verify" in probes:
            out[probes["verify"]["messages_sha256"]] = reply_of(probes["verify"])
    return out


def _digest(messages: Any) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


class BankReplay:
    """The server of one layer."""

    def __init__(self, replies: Mapping[str, Reply], name: str, speed: float = 1.0) -> None:
        self.replies, self.name, self.speed = replies, name, speed
        self.unknown = 0
        self.served = 0
        self._ids = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/health", self.health),
                Route("/v1/models", self.models),
            ]
        )

    async def health(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def models(self, _: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": self.name, "object": "model"}]})

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds / self.speed)

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        messages = [
            {k: v for k, v in m.items() if k in ("role", "content")}
            for m in body.get("messages") or []
            if isinstance(m, dict)
        ]
        reply = self.replies.get(_digest(messages))
        if reply is None:
            self.unknown += 1
            message = (
                f"bank replay engine ({self.name}): this request is not in the answer bank "
                f"(messages sha256 {_digest(messages)[:16]}...); it answers only recorded questions"
            )
            error = {"message": message, "type": "invalid_request_error", "code": "not_in_bank"}
            return JSONResponse({"error": error}, status_code=404)
        self.served += 1
        limit = body.get("max_tokens")
        count = len(reply.pieces)
        if isinstance(limit, int) and 0 < limit < count:
            count = limit  # a probe asked for fewer tokens than recorded
        want = bool(body.get("logprobs"))
        tops = int(body.get("top_logprobs") or 0)
        ident = f"chatcmpl-replay-{self.name}-{next(self._ids)}"
        created = int(time.time())
        finish = reply.finish_reason if count == len(reply.pieces) else "length"

        def entry(i: int) -> dict[str, Any]:
            token = reply.top[i][0]["token"] if i < len(reply.top) and reply.top[i] else ""
            lp = reply.logprobs[i] if i < len(reply.logprobs) else 0.0
            top = [dict(t) for t in reply.top[i][:tops]] if i < len(reply.top) else []
            return {"token": token, "logprob": lp, "top_logprobs": top}

        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": count,
            "total_tokens": reply.prompt_tokens + count,
        }
        await self._sleep(reply.prefill_seconds)
        if not body.get("stream"):
            await self._sleep(reply.token_seconds * count)
            text = "".join(reply.pieces[:count])
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": {"content": [entry(i) for i in range(count)]} if want else None,
                "finish_reason": finish,
            }
            return JSONResponse(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": self.name,
                    "choices": [choice],
                    "usage": usage,
                }
            )

        def chunk(delta: dict[str, Any], lp: Any, end: str | None, **extra: Any) -> bytes:
            data = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.name,
                "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": end}],
                **extra,
            }
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        async def events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""}, None, None)
            for i in range(count):
                await self._sleep(reply.token_seconds)
                lp = {"content": [entry(i)]} if want else None
                yield chunk({"content": reply.pieces[i]}, lp, None)
            yield chunk({}, None, finish, usage=usage)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


def main() -> None:
    from onion_contract.router_config import DEFAULT_SENTINEL

    parser = argparse.ArgumentParser(description="bank replay engine (a test double of a model)")
    parser.add_argument("--layer", required=True, help="whose recorded answers to give")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bank", type=Path, default=bank.BANK)
    parser.add_argument("--speed", type=float, default=1.0, help="time compression factor")
    parser.add_argument("--name", help="the served model name (default: the layer)")
    args = parser.parse_args()
    replies = index(bank.rows(args.bank), args.layer, DEFAULT_SENTINEL)
    server = BankReplay(replies, args.name or args.layer, args.speed)
    serve_on_loopback(server.app, args.port)


if __name__ == "__main__":
    main()
