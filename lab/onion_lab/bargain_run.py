"""The bargain's simulated side: one setup (the trace's arrivals, the questions they ask, the
bank's answers, the policies chosen on train), then any escalation policy x idle policy through
the simulator (onion_lab.bargain: the router's policies, the operator's planner), at trace speed
or compressed as the live replay runs it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from onion_contract.spec import parse_spec
from onion_lab import bank, bargain, bargain_inputs, bargain_report, bargain_spec, quality
from onion_lab.bargain import Answer, Arrival, EscalationPolicy, Route
from onion_lab.paths import RESULTS

RATES = (0.2, 0.4, 0.6, 0.8)
TAIL = 900.0  # seconds of trace after the last arrival: every layer asleep by then (10m idle)


@dataclass
class Setup:
    arrivals: list[Arrival]
    asks: list[tuple[str, str]]
    answers: dict[tuple[str, str, str], Answer]
    mix: dict[str, float]
    signals: dict[str, str]
    policies: list[EscalationPolicy]
    learned: bargain_inputs.Learned | None
    wake_p: dict[tuple[str, str], float] | None
    questions: dict[str, list[quality.Question]] = field(repr=False, default_factory=dict)
    weights: dict[str, float] = field(default_factory=lambda: bargain_spec.gpus(bargain_spec.ONION))

    @property
    def question_keys(self) -> list[str]:
        return [f"{dataset}|{qid}" for dataset, qid in self.asks]

    @property
    def horizon(self) -> float:
        return max((a.time for a in self.arrivals), default=0.0) + TAIL

    def slice(self, count: int) -> Setup:
        """The first `count` requests (what the live replay runs)."""
        return replace(self, arrivals=self.arrivals[:count], asks=self.asks[:count])

    def routes(self, policy: EscalationPolicy, seed: int = 0) -> list[Route]:
        probability = None
        if self.wake_p is not None:
            wake_p = self.wake_p

            def probability(dataset: str, qid: str) -> float:
                return wake_p[(dataset, qid)]

        cut = self.learned.wake_cut if self.learned and self.learned.wake_cut is not None else 1.01
        return bargain.routes(policy, self.asks, self.answers, probability, cut, seed)


def prepare(
    trace: Path,
    keep_every: int,
    mix: Mapping[str, float],
    seed: int = 0,
    folder: Path = bank.BANK,
    results: Path = RESULTS,
    rates: Sequence[float] = RATES,
    say: Callable[[str], None] = print,
    with_learned: bool = True,
) -> Setup:
    """`with_learned=False` leaves the learned policies out (no training, no embedder)."""
    questions = bargain_inputs.load(folder)
    test_ids = {name: [q.id for q in qs if q.split == "test"] for name, qs in questions.items()}
    arrivals = bargain.load_trace(trace, keep_every)
    asks = bargain.assign(len(arrivals), test_ids, mix, seed)
    learned = bargain_inputs.learned(questions, folder, results, say) if with_learned else None
    wake_p = None
    if learned is not None and learned.prompt_model is not None:
        wake_p = bargain_inputs.wake_probabilities(questions, learned.prompt_model)
    signals = bargain_inputs.choose_signals(questions, mix)
    policies = bargain_inputs.policies(
        questions, mix, signals, rates, learned is not None, wake_p is not None
    )
    answers = bargain_inputs.answers_of(questions)
    return Setup(arrivals, asks, answers, dict(mix), signals, policies, learned, wake_p, questions)


def baselines(setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
    """always-big (every request to big, always awake) and always-core."""
    out: list[dict[str, Any]] = []
    for name, mode, layer in (("always big", "big", "big"), ("always core", "core", "core")):
        paths = setup.routes(EscalationPolicy(name, mode))
        correct = [p.correct for p in paths]
        ref = out[0]["correct"] if out else None
        keys = setup.question_keys
        out.append(
            bargain_report.baseline(name, correct, layer, setup.horizon, setup.weights, ref, keys)
        )
    return out[0], out[1]


def compressed(paths: Sequence[Route], factor: float) -> list[Route]:
    return [
        replace(
            p,
            visits=tuple((layer, s / factor) for layer, s in p.visits),
            wakes=tuple((layer, s / factor) for layer, s in p.wakes),
        )
        for p in paths
    ]


def simulate(
    setup: Setup,
    policy: EscalationPolicy,
    idle: str,
    big: Mapping[str, Any],
    factor: float = 1.0,
    paths: Sequence[Route] | None = None,
) -> dict[str, Any]:
    """One combination through the simulator; `factor` > 1 runs it as the live replay does
    (the Onion's time constants, arrivals, answers and cold starts divided by it), reported
    in trace time."""
    paths = list(paths if paths is not None else setup.routes(policy))
    wake_cut = setup.learned.wake_cut if setup.learned else None
    body = bargain_spec.onion_body(policy, bargain_spec.IDLE[idle], factor, wake_cut=wake_cut)
    spec = parse_spec("bargain", body)
    cold = {k: v / factor for k, v in bargain_spec.COLD_START.items()}
    times = [a.time / factor for a in setup.arrivals]
    outcome = bargain.simulate(spec, times, compressed(paths, factor), cold, setup.horizon / factor)
    served = [
        replace(s, added=s.added * factor)
        for s in bargain_report.served_simulated(paths, outcome, setup.question_keys)
    ]
    awake = {name: sim.up_seconds * factor for name, sim in outcome.layers.items()}
    wakes = {name: sim.wakes for name, sim in outcome.layers.items()}
    return row(setup, policy, idle, served, awake, big, "simulated", factor, wakes)


def row(
    setup: Setup,
    policy: EscalationPolicy,
    idle: str,
    served: Sequence[bargain_report.Served],
    awake: Mapping[str, float],
    big: Mapping[str, Any],
    source: str,
    factor: float,
    wakes: Mapping[str, int],
    **extra: Any,
) -> dict[str, Any]:
    """One combination's figures (simulated or live), in trace time."""
    return bargain_report.figures(
        policy.name,
        served,
        awake,
        setup.horizon,
        setup.weights,
        big,
        source,
        idle=idle,
        earlyWake=policy.early_wake,
        compression=factor,
        wakes=dict(wakes),
        **extra,
    )


def sweep(setup: Setup, idles: Sequence[str], big: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for policy in setup.policies:
        if policy.mode in ("big", "core"):
            continue
        paths = setup.routes(policy)
        for idle in idles:
            rows.append(simulate(setup, policy, idle, big, paths=paths))
    return rows
