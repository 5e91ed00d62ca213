"""What a client dialect provides, as the routes use it: read a request, write an answer, a
stream and an error in that dialect's form."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from onion_router.protocol.types import Answer, ChatRequest, Chunk, Meta


class Shaper(Protocol):
    """One streaming answer in a client's dialect; keeps that stream's state."""

    def chunk(self, chunk: Chunk, meta: Meta) -> bytes:
        """The event for one chunk (empty when the dialect has nothing to send for it)."""

    def done(self) -> bytes:
        """What ends the stream."""

    def error(self, status: int, message: str, code: str) -> bytes:
        """The event that ends a stream that failed."""


@dataclass(frozen=True)
class Dialect:
    parse: Callable[[Any], ChatRequest]
    render: Callable[[ChatRequest, Answer, Meta], Any]  # the non-streaming response body
    shaper: Callable[[ChatRequest], Shaper]
    error: Callable[[int, str, str, str | None], Any]  # (status, message, code, param) -> body
