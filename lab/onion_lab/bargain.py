"""The whole bargain, simulated (pure): a real trace's arrivals, each a question of the answer
bank's test split, routed through the ladder by an escalation policy on the bank's recorded
scores, while the operator's own planner (onion_operator.planner.plan) wakes and puts layers to
sleep from the demand those requests record, once a simulated second, as in `make bench-idle`.

It gives, for any policy, in seconds: accuracy (the answering layer's strict grade), the GPU
time each layer was awake (weighted by its GPUs), which requests waited for a cold start and how
long, and the escalation rate per layer. `make bench-bargain` runs it for every combination and
runs a slice of the same through the real router and operator (bench/bargain.py), and reports
how far the two are apart.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from onion_contract.router_config import Escalation
from onion_contract.spec import OnionSpec
from onion_lab import wake_sim
from onion_lab.evaluation import Cut
from onion_router.adaptive import Threshold

LAYERS = ("core", "mid", "big")
FIRST_K = 8  # the router's default `firstK`: its first-token early wake reads as many tokens
CONFIDENCE = ("mean", "min", "firstK")


# --- arrivals and the questions they ask -------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    time: float  # seconds from the trace's first kept request
    context_tokens: int
    generated_tokens: int


def load_trace(
    path: Path, keep_every: int = 1, start: float = 0.0, duration: float | None = None
) -> list[Arrival]:
    """Arrivals of an Azure LLM inference trace (TIMESTAMP,ContextTokens,GeneratedTokens):
    every `keep_every`-th request, from `start` seconds for `duration` seconds, re-based at 0."""
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    first = datetime.fromisoformat(rows[0]["TIMESTAMP"][:26])
    out = []
    for index, row in enumerate(rows):
        if index % keep_every:
            continue
        t = (datetime.fromisoformat(row["TIMESTAMP"][:26]) - first).total_seconds() - start
        if t < 0 or (duration is not None and t >= duration):
            continue
        out.append(Arrival(t, int(row["ContextTokens"]), int(row["GeneratedTokens"])))
    return out


def parse_mix(text: str) -> dict[str, float]:
    """`gsm8k:0.4,humaneval:0.2,boolq:0.4` as weights that sum to 1."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition(":")
        if not name.strip() or not value.strip():
            raise ValueError(f"mix entry {part!r}: want NAME:WEIGHT")
        weights[name.strip()] = float(value)
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"mix {text!r}: weights must be >= 0 and not all 0")
    return {k: v / total for k, v in weights.items()}


def assign(
    count: int, questions: Mapping[str, Sequence[str]], mix: Mapping[str, float], seed: int
) -> list[tuple[str, str]]:
    """A (dataset, question id) per arrival, drawn with a fixed seed: the dataset by the mix,
    then a question of that dataset's test split uniformly."""
    missing = [name for name in mix if not questions.get(name)]
    if missing:
        raise ValueError(f"mix names datasets with no test questions in the bank: {missing}")
    rng = random.Random(seed)
    names = list(mix)
    weights = [mix[n] for n in names]
    out = []
    for _ in range(count):
        name = rng.choices(names, weights)[0]
        out.append((name, rng.choice(list(questions[name]))))
    return out


# --- routes: which layers a request visits, by the policy ---------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the bank says of one layer's answer to one question."""

    correct: bool
    seconds: Mapping[str, float]  # wall seconds under each policy's signal ("answer": alone)
    scores: Mapping[str, float | None]
    tokens: int = 0  # generated tokens
    first_tokens_seconds: float = 0.0  # until the first FIRST_K tokens are out (prefill too)


@dataclass(frozen=True)
class EscalationPolicy:
    name: str
    mode: str  # "fixed" (train's threshold), "targetRate" (the router's adaptive), "big", "core"
    signals: Mapping[str, str] = field(default_factory=dict)  # judged layer -> signal
    rate: float = 0.3
    early_wake: bool = False
    cuts: Mapping[str, Cut] = field(default_factory=dict)  # "fixed": train's cut per layer


@dataclass(frozen=True)
class Route:
    visits: tuple[tuple[str, float], ...]  # (layer, service seconds), in order
    correct: bool
    early: str | None = None  # the layer woken at arrival by the prompt model
    # The router's early wakes: (layer, seconds after arrival) by the prompt model (at once) or
    # by a confidence policy's uncertain first tokens.
    wakes: tuple[tuple[str, float], ...] = ()

    @property
    def answered(self) -> str:
        return self.visits[-1][0]


def routes(
    policy: EscalationPolicy,
    asks: Sequence[tuple[str, str]],
    answers: Mapping[tuple[str, str, str], Answer],
    wake_probability: Callable[[str, str], float] | None = None,
    wake_cut: float = 1.01,
    seed: int = 0,
) -> list[Route]:
    """Each request's path, in arrival order (a targetRate threshold learns as it goes, as the
    router's does; a tie at its cut is split by a seeded coin)."""
    rng = random.Random(seed)
    # targetRate: the router's own adaptive threshold, starting from train's cut (what
    # `onion-router calibrate` would have configured) until it has minSamples scores.
    live = {
        layer: Threshold(
            Escalation(
                policy="verify",
                threshold=policy.cuts[layer].threshold if layer in policy.cuts else 0.0,
                target_rate=policy.rate,
                window=500,
                min_samples=50,
            )
        )
        for layer in policy.signals
    }
    out = []
    for dataset, qid in asks:
        if policy.mode == "big":
            a = answers[(dataset, qid, "big")]
            out.append(Route((("big", a.seconds["answer"]),), a.correct))
            continue
        visits: list[tuple[str, float]] = []
        wakes: list[tuple[str, float]] = []
        early = None
        if (
            policy.early_wake
            and wake_probability is not None
            and wake_probability(dataset, qid) >= wake_cut
        ):
            early = "mid"
            wakes.append(("mid", 0.0))
        clock = 0.0  # when the request reached this layer, after the arrival
        for index, layer in enumerate(LAYERS):
            a = answers[(dataset, qid, layer)]
            last = index == len(LAYERS) - 1 or policy.mode == "core"
            signal = policy.signals.get(layer, "answer")
            visits.append((layer, a.seconds["answer" if last else signal]))
            if last:
                out.append(Route(tuple(visits), a.correct, early, tuple(wakes)))
                break
            score = a.scores.get(signal)
            if policy.mode == "fixed":
                limit = policy.cuts[layer].threshold
                up = score is not None and score < limit
            else:
                t = live[layer]
                limit = t.value
                coin = rng.random()
                up = score is not None and (
                    score < t.value or (score == t.value and coin < t.tie_share)
                )
                t.observe(score, up)
            # The router's first-token early wake (policies.looks_uncertain): a confidence
            # policy whose first FIRST_K tokens' mean logprob is under the threshold.
            first = a.scores.get("firstK")
            if signal in CONFIDENCE and a.tokens >= 4 and first is not None and first < limit:
                wakes.append((LAYERS[index + 1], clock + a.first_tokens_seconds))
            clock += visits[-1][1]
            if not up:
                out.append(Route(tuple(visits), a.correct, early, tuple(wakes)))
                break
    return out


# --- the cluster: wakes and sleeps from recorded demand ------------------------------------------


def simulate(
    spec: OnionSpec,
    arrivals: Sequence[float],
    paths: Sequence[Route],
    cold_start: Mapping[str, float],
    horizon: float,
) -> wake_sim.Outcome:
    """The requests through the planner (onion_lab.wake_sim), each on its route."""
    trips = [
        wake_sim.Trip(t, route.visits, wakes=route.wakes)
        for t, route in zip(arrivals, paths, strict=True)
    ]
    return wake_sim.run(spec, trips, cold_start, horizon)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
