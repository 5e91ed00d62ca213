"""What every client dialect shares: one request shape, answers and their streamed chunks,
and who answered."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Kind = Literal["chat", "completions", "tgi", "tgi_list"]


@dataclass(frozen=True)
class Token:
    text: str
    logprob: float
    top: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Call:
    """A tool call in an answer, or one streamed piece of it (later pieces carry no name or id)."""

    index: int
    name: str | None
    arguments: str = ""
    id: str | None = None


@dataclass
class _Text:
    text: str
    tokens: list[Token]
    finish_reason: str | None
    usage: dict[str, Any] | None
    raw: dict[str, Any]  # the model server's JSON, for fields we pass through untouched
    calls: tuple[Call, ...] = ()


@dataclass
class Answer(_Text):
    """A complete answer from one layer."""


@dataclass
class Chunk(_Text):
    """One streamed piece of an answer."""


@dataclass(frozen=True)
class Meta:
    """Who answered: shown as X-Onion-* headers and an `onion` field in every body."""

    layer: str
    path: tuple[str, ...]
    degraded: bool = False

    def body(self) -> dict[str, Any]:
        return {"layer": self.layer, "path": list(self.path), "degraded": self.degraded}

    def headers(self) -> dict[str, str]:
        headers = {"X-Onion-Layer": self.layer, "X-Onion-Path": ",".join(self.path)}
        if self.degraded:
            headers["X-Onion-Degraded"] = "true"
        return headers

    def within(self, remote: Any) -> Meta:
        """This answer's meta when the answering layer is itself an Onion's router, whose own
        `onion` field (`remote`) says which of its layers answered: that router's layers are
        named `<layer>:<layer>`, so an edge core escalated to a cluster's `mid` shows the path
        core, cluster:mid (with the remote's whole path in between)."""
        if not isinstance(remote, Mapping):
            return self
        layer, path = remote.get("layer"), remote.get("path")
        if not isinstance(layer, str) or not layer or not isinstance(path, list):
            return self
        inner = [f"{self.layer}:{p}" for p in path if isinstance(p, str)]
        if not inner or self.path[-1:] != (self.layer,):
            return self
        return Meta(
            f"{self.layer}:{layer}",
            (*self.path[:-1], *inner),
            self.degraded or remote.get("degraded") is True,
        )


@dataclass(frozen=True)
class Holding:
    """A request waits for a layer: it wakes, or it said when to come back (Retry-After)."""

    layer: str
    phase: str
    waited: float
    timeout: float


@dataclass(frozen=True)
class ChatRequest:
    """What the client asked, in one shape for every protocol."""

    kind: Kind
    model: str
    messages: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any]  # passed through to the model server
    stream: bool
    logprobs: bool = False
    top_logprobs: int | None = None
    include_usage: bool = False
    details: bool = False  # TGI: return token details
    request_id: str = ""

    @property
    def prompt(self) -> str:
        """The user's text, what routing rules look at."""
        return "\n".join(_text(m.get("content")) for m in self.messages if m.get("role") == "user")

    @property
    def tool_names(self) -> tuple[str, ...]:
        """Names of the functions the client offers the model (`tools`)."""
        tools = self.params.get("tools")
        if not isinstance(tools, list):
            return ()
        functions = (t.get("function") for t in tools if isinstance(t, Mapping))
        return tuple(str(f.get("name")) for f in functions if isinstance(f, Mapping))

    def with_system(self, instruction: str) -> ChatRequest:
        system = {"role": "system", "content": instruction}
        return replace(self, messages=(system, *self.messages))

    def with_tool(self, tool: Mapping[str, Any]) -> ChatRequest:
        """The request with one more tool offered to the model, after the client's own."""
        tools = self.params.get("tools")
        theirs = list(tools) if isinstance(tools, list) else []
        return replace(self, params={**self.params, "tools": [*theirs, tool]})

    def with_id(self, request_id: str) -> ChatRequest:
        return replace(self, request_id=request_id)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""
