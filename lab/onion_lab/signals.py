"""Each policy's score of a recorded answer, from the bank row alone (pure). Every score is
oriented the same way: higher means more trust in the answer (escalate the lowest first)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onion_router.policies import p_yes, score_logprobs

FIRST_K = 8
# The signals a row of a judged layer has (`learned` is added by the analysis, out of fold).
SIGNALS = ("mean", "min", "firstK", "verify", "self")


def scores(row: Mapping[str, Any]) -> dict[str, float | None]:
    """mean, min and firstK of the answer's token logprobs; verify: the layer's own P(yes)
    that its answer is right; self: 0 when it asked for help under the `self` instruction,
    else 1. Probes are recorded for the inner layers only, so the outermost has only the
    first three."""
    lps = row["logprobs"]
    out: dict[str, float | None] = {
        "mean": score_logprobs(lps, "mean", FIRST_K),
        "min": score_logprobs(lps, "min", FIRST_K),
        "firstK": score_logprobs(lps, "firstK", FIRST_K),
    }
    probes = row.get("probes") or {}
    if "verify" in probes:
        top = probes["verify"]["top_logprobs"]
        out["verify"] = p_yes(top[0]) if top else None
    if "self" in probes:
        out["self"] = 0.0 if probes["self"]["asked"] else 1.0
    return out
