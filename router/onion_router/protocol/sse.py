"""Server-sent events as the OpenAI API frames them, and the router's heartbeats: SSE comments
that clients ignore, proxies see as traffic, and another Onion router reads as progress."""

from __future__ import annotations

import re
from typing import Any

import orjson

from onion_router.protocol.errors import error_body
from onion_router.protocol.types import Holding

DONE = b"data: [DONE]\n\n"


def event(body: Any) -> bytes:
    """One `data:` event with `body` as its JSON."""
    return b"data: " + orjson.dumps(body) + b"\n\n"


class OpenAIStream:
    """How a stream of OpenAI's APIs ends: `data: [DONE]`, or an event in its error shape."""

    def done(self) -> bytes:
        return DONE

    def error(self, status: int, message: str, code: str) -> bytes:
        return event(error_body(status, message, code))


def heartbeat(layer: str, phase: str, waited: float, timeout: float) -> bytes:
    """An SSE comment: clients ignore it, proxies see traffic, people see progress."""
    return f": waiting for layer {layer} ({phase}, {waited:.0f}s of {timeout:.0f}s)\n\n".encode()


_HEARTBEAT = re.compile(r"^:\s*waiting for layer (\S+) \((.+), (\d+)s of (\d+)s\)$")


def parse_heartbeat(line: str, layer: str) -> Holding | None:
    """Another Onion router's heartbeat line (see `heartbeat`), as a Holding of layer `layer`:
    its layer L is shown as `layer:L` (its own name, then the remote's). None for any other line."""
    match = _HEARTBEAT.match(line.strip())
    if match is None:
        return None
    inner, phase, waited, timeout = match.groups()
    return Holding(f"{layer}:{inner}", phase, float(waited), float(timeout))
