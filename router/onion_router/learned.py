"""Policy `learned`: a small trained model scores an answer from what the router knows when it
decides (pure; plain data in, a probability out).

Features: statistics of the answer's token logprobs (mean, min, quantiles, the first k, the last
k), the entropy and margin of the top alternatives at each token, the answer's length and
whether it hit `max_tokens`, `verify`'s P(yes) when that probe is configured, and the prompt: its
length and its sentence embedding. The model is a logistic regression stored as versioned JSON
(no pickle): standardisation, weights and intercept by feature name, so the router needs no
machine-learning library to apply it, only the embedder when the model uses the prompt's
embedding. `onion-router train` writes it (onion_router/train.py).

Two models share the format: an answer model, P(this answer is right), which the threshold (or
`targetRate`) of the layer's escalation applies to; and a prompt model, P(this request will be
escalated), from the prompt alone, which wakes the next layer before the layer has answered.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onion_router.policies import estimate_tokens

FORMAT = "onion-of-experts/learned-policy"
VERSION = 1
FIRST_K = 8
EMBEDDING_PREFIX = "emb"


class ModelFileError(ValueError):
    """A learned-policy file that is not one, or of a version this router cannot read."""


def _quantile(ordered: Sequence[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _entropy_and_margin(alternatives: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """Entropy of the top alternatives (renormalised) and the logprob margin of the best over
    the second best, for one generated token."""
    lps = sorted(
        (float(a["logprob"]) for a in alternatives if math.isfinite(float(a["logprob"]))),
        reverse=True,
    )
    if not lps:
        return 0.0, 0.0
    total = sum(math.exp(lp) for lp in lps)
    probs = [math.exp(lp) / total for lp in lps]
    entropy = -sum(p * math.log(p) for p in probs if p > 0)
    margin = lps[0] - lps[1] if len(lps) > 1 else 10.0
    return entropy, min(margin, 10.0)


def prompt_features(prompt: str, embedding: Sequence[float] | None) -> dict[str, float]:
    """What is known before any layer answers."""
    out = {"prompt_tokens_log": math.log1p(estimate_tokens(prompt))}
    if embedding is not None:
        out.update({f"{EMBEDDING_PREFIX}{i}": float(v) for i, v in enumerate(embedding)})
    return out


def answer_features(
    logprobs: Sequence[float],
    top_logprobs: Sequence[Sequence[Mapping[str, Any]]],
    finish_reason: str | None,
    verify: float | None = None,
) -> dict[str, float]:
    """What the answer itself says about its own quality."""
    lps = [lp for lp in logprobs if math.isfinite(lp)] or [0.0]
    ordered = sorted(lps)
    pairs = [_entropy_and_margin(top) for top in top_logprobs] or [(0.0, 0.0)]
    entropies = [e for e, _ in pairs]
    margins = [m for _, m in pairs]
    out = {
        "lp_mean": sum(lps) / len(lps),
        "lp_min": ordered[0],
        "lp_p10": _quantile(ordered, 0.10),
        "lp_p25": _quantile(ordered, 0.25),
        "lp_p50": _quantile(ordered, 0.50),
        "lp_first_k": sum(lps[:FIRST_K]) / len(lps[:FIRST_K]),
        "lp_last_k": sum(lps[-FIRST_K:]) / len(lps[-FIRST_K:]),
        "entropy_mean": sum(entropies) / len(entropies),
        "entropy_max": max(entropies),
        "margin_mean": sum(margins) / len(margins),
        "answer_tokens_log": math.log1p(len(logprobs)),
        "hit_max_tokens": 1.0 if finish_reason == "length" else 0.0,
    }
    if verify is not None:
        out["verify_p_yes"] = verify
    return out


@dataclass(frozen=True)
class LearnedModel:
    """A logistic regression over named features:
    P = sigmoid(b + sum over f of w_f (x_f - mean_f) / scale_f)."""

    kind: str  # "answer": P(right); "prompt": P(escalated)
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float
    embedding: Mapping[str, Any] | None  # the embedder it was trained with, if any
    meta: Mapping[str, Any]

    @property
    def uses_embedding(self) -> bool:
        return any(f.startswith(EMBEDDING_PREFIX) for f in self.features)

    @property
    def uses_verify(self) -> bool:
        return "verify_p_yes" in self.features

    def probability(self, features: Mapping[str, float]) -> float:
        """A feature the model knows but the input lacks counts as its training mean."""
        z = self.intercept
        for name, mean, scale, weight in zip(
            self.features, self.mean, self.scale, self.weights, strict=True
        ):
            value = features.get(name, mean)
            z += weight * (value - mean) / scale
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        return math.exp(z) / (1.0 + math.exp(z))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "weights": list(self.weights),
            "intercept": self.intercept,
            "embedding": dict(self.embedding) if self.embedding else None,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LearnedModel:
        if data.get("format") != FORMAT:
            raise ModelFileError(f"not a learned-policy file (format {data.get('format')!r})")
        if data.get("version") != VERSION:
            raise ModelFileError(
                f"learned-policy file version {data.get('version')!r}; this router reads {VERSION}"
            )
        try:
            features = tuple(str(f) for f in data["features"])
            columns = [tuple(float(v) for v in data[k]) for k in ("mean", "scale", "weights")]
            kind = str(data["kind"])
            intercept = float(data["intercept"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFileError(f"learned-policy file is malformed: {err}") from None
        if kind not in ("answer", "prompt"):
            raise ModelFileError(f"learned-policy kind {kind!r}: want answer or prompt")
        if any(len(c) != len(features) for c in columns):
            raise ModelFileError(
                "learned-policy file: features, mean, scale, weights differ in length"
            )
        if any(s <= 0 or not math.isfinite(s) for s in columns[1]):
            raise ModelFileError("learned-policy file: every scale must be positive")
        return cls(
            kind,
            features,
            columns[0],
            columns[1],
            columns[2],
            intercept,
            data.get("embedding"),
            data.get("meta") or {},
        )

    @classmethod
    def load(cls, path: str | Path) -> LearnedModel:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise ModelFileError(f"cannot read learned-policy file {path}: {err}") from None
        return cls.from_json(data)
