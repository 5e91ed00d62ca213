"""The decision log: one JSON object a request, what the router saw and decided at each judged
layer, so that a user can label answers and train a `learned` policy on their own traffic
(`onion-router train --log FILE --labels FILE`).

A record: `{"requestId", "time", "answeredBy", "path", "decisions": [{"layer", "policy",
"score", "threshold", "escalated", "features"}], "prompt"?}`. The prompt's text is written only
when `decisionLog.prompts` is set; the features (numbers, and the prompt's embedding when a
learned policy uses one) always are. Written to a file, or to stdout with path `-` (one line a
record, nothing else on stdout), where `kubectl logs` collects it.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True)
class Decision:
    layer: str
    policy: str
    score: float | None
    threshold: float | None
    escalated: bool
    features: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "policy": self.policy,
            "score": None if self.score is None else round(self.score, 6),
            "threshold": None if self.threshold is None else round(self.threshold, 6),
            "escalated": self.escalated,
            "features": {k: round(float(v), 6) for k, v in self.features.items()},
        }


def record(
    request_id: str,
    answered_by: str,
    path: Sequence[str],
    decisions: Sequence[Decision],
    prompt: str | None,
    now: float,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "requestId": request_id,
        "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        "answeredBy": answered_by,
        "path": list(path),
        "decisions": [d.to_json() for d in decisions],
    }
    if prompt is not None:
        out["prompt"] = prompt
    return out


class DecisionLog:
    """Appends records, one line each, to a file or to stdout (`-`); thread-safe."""

    def __init__(self, path: str, prompts: bool = False) -> None:
        self.prompts = prompts
        self._lock = threading.Lock()
        # Open for the router's lifetime, closed by close() (the app's lifespan).
        self._out: IO[str] = sys.stdout if path == "-" else Path(path).open("a", buffering=1)  # noqa: SIM115
        self._owned = path != "-"

    def write(self, entry: Mapping[str, Any]) -> None:
        line = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()

    def close(self) -> None:
        if self._owned:
            self._out.close()
