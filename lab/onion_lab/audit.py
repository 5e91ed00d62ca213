"""The API server's audit log, read: every request one user sent, when, and how long it took.

The local cluster writes it with `--audit` (onion_lab.localcluster), so a benchmark counts what
the operator sends without trusting the operator's own code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from onion_lab.stats import summary
from onion_operator.planner import parse_time


@dataclass(frozen=True)
class Request:
    """One request of the operator, as the API server's audit log saw it."""

    received: float  # wall-clock seconds
    completed: float
    what: str  # verb resource[/subresource]
    name: str  # namespace/name, or the URI

    @property
    def seconds(self) -> float:
        return self.completed - self.received


def audit_requests(path: Path, user: str) -> list[Request]:
    """Every request `user` sent, from the audit log (one ResponseComplete event each)."""
    out = []
    with path.open() as f:
        for line in f:
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete":
                continue
            if (event.get("user") or {}).get("username") != user:
                continue
            received = parse_time(event["requestReceivedTimestamp"])
            completed = parse_time(event["stageTimestamp"])
            if received is None or completed is None:
                continue
            ref = event.get("objectRef") or {}
            what = ref.get("resource", event.get("requestURI", "?"))
            if ref.get("subresource"):
                what += "/" + ref["subresource"]
            name = (
                f"{ref.get('namespace', '')}/{ref.get('name', '')}" if ref else event["requestURI"]
            )
            out.append(
                Request(
                    received.timestamp(), completed.timestamp(), f"{event['verb']} {what}", name
                )
            )
    return out


def between(requests: list[Request], start: float, end: float) -> list[Request]:
    return [r for r in requests if start <= r.received < end]


def api_latency(requests: list[Request]) -> dict[str, dict[str, float]]:
    """Per kind of request: how many, and how long the API server took (p50/p99)."""
    kinds: dict[str, list[float]] = {}
    for r in requests:
        if not r.what.startswith("watch"):
            kinds.setdefault(r.what, []).append(r.seconds)
    return {k: summary(v) for k, v in sorted(kinds.items(), key=lambda kv: -len(kv[1]))}
