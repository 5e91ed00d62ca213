#!/usr/bin/env python3
"""`make bench-bargain`: the whole bargain in one run. A real trace's arrivals, each a question
of the answer bank's test split, through the ladder: accuracy kept, share of always-big's GPU
bill paid, share of requests that waited for a cold start, for every escalation policy and idle
policy; first simulated (seconds), then a slice replayed live through the real router and
operator on the local cluster, with the layers served by the bank replay engine.

    bench/bargain.py [--trace FILE] [--keep-every 20] [--mix gsm8k:0.4,humaneval:0.2,boolq:0.4]
                     [--out results/bargain.json] [--live | --no-live]

It records nothing: everything comes from the committed bank (results/bank/) and the learned
models `make bench-quality` trained on its train split (results/learned/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onion_contract.spec import parse_spec
from onion_lab import bank, bargain, evaluation, quality, wake_sim
from onion_lab.bargain import Answer, EscalationPolicy
from onion_lab.paths import REPO, RESULTS
from onion_router.learned import LearnedModel, prompt_features

TRACE = REPO.parent / "shared" / "data" / "azure-llm-inference-2023-conv.csv"
MIX = "gsm8k:0.4,humaneval:0.2,boolq:0.4"
RATES = (0.2, 0.3, 0.4)
IDLE = {
    "idleTimeout 1m": {"idleTimeout": "1m"},
    "idleTimeout 3m": {"idleTimeout": "3m"},
    "idleTimeout 5m": {"idleTimeout": "5m"},
    "idleTimeout 10m": {"idleTimeout": "10m"},
    "adaptive": {"idlePolicy": "adaptive", "idleTimeout": "10m"},
}
# Stated cold starts of GPU layers (no GPU here): a 14B-class model on one GPU about a minute;
# a 70B-class model on vLLM with tensor parallelism about 3.5 minutes from a warm page cache
# (vllm-project/vllm#19824: P2P check 60 s, weights 10 s, dynamo 15 s, torch.compile 70 s,
# CUDA graphs 60 s).
COLD_START = {"mid": 60.0, "big": 215.0}
# What the layers stand for on GPUs, and their GPUs (the cost weights).
ONION = {
    "core": {
        "model": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    },
    "layers": [
        {
            "name": "mid",
            "model": "Qwen/Qwen2.5-14B-Instruct",
            "resources": {"limits": {"nvidia.com/gpu": 1}},
        },
        {
            "name": "big",
            "model": "meta-llama/Llama-3.3-70B-Instruct",
            "resources": {"limits": {"nvidia.com/gpu": 4}},
        },
    ],
}


def say(msg: str) -> None:
    print(f"[bench-bargain {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def answers_of(
    questions: Mapping[str, list[quality.Question]],
) -> dict[tuple[str, str, str], Answer]:
    out = {}
    for qs in questions.values():
        for q in qs:
            for layer, row in q.rows.items():
                seconds = {"answer": quality.policy_costs(row, "mean")[1]}
                for signal in quality.SIGNALS:
                    seconds[signal] = quality.policy_costs(row, signal)[1]
                out[(q.dataset, q.id, layer)] = Answer(bool(row["correct"]), seconds, row["scores"])
    return out


def train_choice(
    questions: Mapping[str, list[quality.Question]], mix: Mapping[str, float]
) -> tuple[dict[str, str], dict[str, dict[float, list[evaluation.Cut]]]]:
    """Per judged layer, the non-learned signal with the best APGR into the next layer on the
    mixed train split (each dataset weighted by the mix); and for that choice and for `learned`,
    the cuts at each rate of a cascade on train: the core escalates `rate` of all requests, mid
    `rate` of what the core escalated."""
    train = [
        (q, mix[name] / sum(1 for x in qs if x.split == "train"))
        for name, qs in questions.items()
        if name in mix
        for q in qs
        if q.split == "train"
    ]
    weights = np.array([w for _, w in train])
    # Resampled by the mix's weights, so that APGR weighs the datasets as the traffic does.
    pick = np.random.default_rng(0).choice(len(train), size=4000, p=weights / weights.sum())
    signals: dict[str, str] = {}
    for weak, strong in (("core", "mid"), ("mid", "big")):
        weak_ok = np.array([float(train[i][0].rows[weak]["correct"]) for i in pick])
        strong_ok = np.array([float(train[i][0].rows[strong]["correct"]) for i in pick])
        best, best_apgr = "mean", -1.0
        for signal in quality.BASE_SIGNALS:
            scores = np.array([_score(train[i][0].rows[weak], signal) for i in pick])
            value = evaluation.apgr(weak_ok, strong_ok, scores)
            if value is not None and value > best_apgr:
                best, best_apgr = signal, value
        signals[weak] = best
    cuts: dict[str, dict[float, list[evaluation.Cut]]] = {}
    for family, chosen in (("signal", signals), ("learned", {"core": "learned", "mid": "learned"})):
        layer_scores = [
            np.array([_score(q.rows[layer], chosen[layer]) for q, _ in train])
            for layer in ("core", "mid")
        ]
        cuts[family] = {
            rate: evaluation.cascade_cuts(layer_scores, rate, weights) for rate in RATES
        }
    return signals, cuts


def _score(row: Mapping[str, Any], signal: str) -> float:
    value = row["scores"].get(signal)
    return float("nan") if value is None else float(value)


def policies(
    signals: Mapping[str, str],
    cuts: Mapping[str, Mapping[float, list[evaluation.Cut]]],
    early: bool,
) -> list[EscalationPolicy]:
    out = [EscalationPolicy("always big", "big"), EscalationPolicy("always core", "core")]
    for family in ("signal", "learned"):
        chosen = {
            layer: (signals[layer] if family == "signal" else "learned")
            for layer in ("core", "mid")
        }
        label = "/".join(chosen[layer] for layer in ("core", "mid"))
        for rate in RATES:
            layer_cuts = dict(zip(("core", "mid"), cuts[family][rate], strict=True))
            for mode in ("fixed", "targetRate"):
                wakes = (False, True) if family == "learned" and early else (False,)
                for wake in wakes:
                    name = f"{label} {'threshold' if mode == 'fixed' else 'targetRate'} {rate:.1f}"
                    out.append(
                        EscalationPolicy(
                            name + (" + early wake" if wake else ""),
                            mode,
                            chosen,
                            rate,
                            wake,
                            layer_cuts,
                        )
                    )
    return out


def figures(
    policy: EscalationPolicy,
    idle: str,
    paths: Sequence[bargain.Route],
    outcome: wake_sim.Outcome,
    horizon: float,
    weights: Mapping[str, float],
    big: Mapping[str, float],
) -> dict[str, Any]:
    correct = np.array([float(p.correct) for p in paths])
    interval = evaluation.bootstrap(lambda v: float(v.mean()), [correct], samples=1000)
    awake = {name: sim.up_seconds for name, sim in outcome.layers.items()}
    gpu = weights["core"] * horizon + sum(weights[n] * s for n, s in awake.items())
    on_device = sum(weights[n] * s for n, s in awake.items())
    if policy.mode == "big":
        gpu = on_device = weights["big"] * horizon
    elif policy.mode == "core":
        gpu, on_device = weights["core"] * horizon, 0.0
    waits = [w for w in outcome.waits]
    n = len(paths)
    return {
        "name": policy.name,
        "idle": idle,
        "earlyWake": policy.early_wake,
        "accuracy": round(float(correct.mean()), 4),
        "accuracyCi": interval.pair() if interval else None,
        "accuracyShare": round(float(correct.mean()) / big["accuracy"], 4)
        if big["accuracy"]
        else None,
        "gpuShare": round(gpu / big["gpu"], 4),
        "gpuShareCoreOnDevice": round(on_device / big["gpu"], 4),
        "waitedShare": round(sum(w > 0 for w in waits) / n, 4),
        "addedLatencyP50Seconds": round(bargain.percentile(waits, 0.5), 1),
        "addedLatencyP99Seconds": round(bargain.percentile(waits, 0.99), 1),
        "latencyP50Seconds": round(bargain.percentile(outcome.latencies, 0.5), 1),
        "escalatedTo": {
            layer: round(sum(any(v[0] == layer for v in p.visits) for p in paths) / n, 4)
            for layer in ("mid", "big")
        },
        "wakes": {name: sim.wakes for name, sim in outcome.layers.items()},
        "unfinished": outcome.unfinished,
        "source": "simulated",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/bargain.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--keep-every", type=int, default=20)
    parser.add_argument("--mix", default=MIX)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bank", type=Path, default=bank.BANK)
    parser.add_argument("--learned", type=Path, default=RESULTS / "learned")
    parser.add_argument("--out", type=Path, default=RESULTS / "bargain.json")
    args = parser.parse_args(argv)
    if not args.trace.is_file():
        parser.error(f"--trace {args.trace}: no such file")
    try:
        mix = bargain.parse_mix(args.mix)
    except ValueError as err:
        parser.error(str(err))
    started = time.perf_counter()
    _, questions, _ = quality.load(args.bank, quality.GradeCache())
    test_ids = {name: [q.id for q in qs if q.split == "test"] for name, qs in questions.items()}
    arrivals = bargain.load_trace(args.trace, args.keep_every)
    asks = bargain.assign(len(arrivals), test_ids, mix, args.seed)
    answers = answers_of(questions)
    signals, cuts = train_choice(questions, mix)
    prompt_path = args.learned / "core-prompt.json"
    wake_p = None
    wake_cut = 1.01
    summary_path = args.out.parent / "quality.json"
    if prompt_path.exists() and summary_path.exists():
        from onion_lab import quality_report

        model = LearnedModel.load(prompt_path)
        embed, _ = quality_report.embedder()
        prompts = {
            (q.dataset, q.id): q.rows["core"]["prompt"] for qs in questions.values() for q in qs
        }

        def wake_p(dataset: str, qid: str) -> float:
            text = prompts[(dataset, qid)]
            return model.probability(
                prompt_features(text, embed(text) if embed and model.uses_embedding else None)
            )

        wake_cut = float(json.loads(summary_path.read_text())["earlyWake"]["probabilityCut"])
    horizon = max(a.time for a in arrivals) + 900
    weights = bargain.gpus(ONION)
    times = [a.time for a in arrivals]
    say(
        f"{len(arrivals)} arrivals (every {args.keep_every}th of {args.trace.name}), "
        f"mix {mix}, signals chosen on train {signals}"
    )
    rows = []
    big_paths = bargain.routes(EscalationPolicy("always big", "big"), asks, answers)
    big_acc = statistics.fmean(p.correct for p in big_paths)
    reference = {"accuracy": big_acc, "gpu": weights["big"] * horizon}
    for policy in policies(signals, cuts, wake_p is not None):
        paths = bargain.routes(policy, asks, answers, wake_p, wake_cut, args.seed)
        for idle, idle_spec in IDLE.items():
            if policy.mode in ("big", "core") and idle != "idleTimeout 5m":
                continue
            body = {**ONION, "layers": [{**layer, **idle_spec} for layer in ONION["layers"]]}
            spec = parse_spec("bargain", body)
            outcome = bargain.simulate(spec, times, paths, COLD_START, horizon)
            rows.append(figures(policy, idle, paths, outcome, horizon, weights, reference))
    always_big = next(r for r in rows if r["name"] == "always big")
    always_core = next(r for r in rows if r["name"] == "always core")
    result = {
        "trace": args.trace.name,
        "keepEvery": args.keep_every,
        "requests": len(arrivals),
        "mix": mix,
        "coldStartSeconds": COLD_START,
        "gpus": weights,
        "onion": ONION,
        "signalsChosenOnTrain": signals,
        "earlyWakeCut": wake_cut if wake_p else None,
        "alwaysBig": always_big,
        "alwaysCore": always_core,
        "policies": [r for r in rows if r not in (always_big, always_core)],
        "wallSeconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    say(f"wrote {args.out} in {result['wallSeconds']:.0f}s")
    for r in sorted(result["policies"], key=lambda r: r["gpuShare"])[:10]:
        say(
            f"  {r['name']:45} {r['idle']:16} accuracy {r['accuracyShare']:.2f} of big's, GPU "
            f"{r['gpuShare']:.2f} ({r['gpuShareCoreOnDevice']:.2f} with the core on a device), "
            f"waited {r['waitedShare']:.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
