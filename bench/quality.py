#!/usr/bin/env python3
"""`make bench-quality`: the onion's bargain measured on a real model ladder, through the router.

Three llama-server processes serve the ladder (core SmolLM2-135M-Instruct, mid Qwen2.5-Coder-0.5B-
Instruct, big Qwen2.5-Coder-1.5B-Instruct); one `onion-router` (static mode) fronts them. With the
openai SDK, every question is asked once per layer pinned (`onion/<layer>`, temperature 0) with
the token logprobs each policy scores, plus the two probes the other policies need for the
inner layers: the `self` instruction (does the answer start with the sentinel?) and the `verify`
question (P(yes) that the layer's own answer is correct). The curves (accuracy vs. escalation
rate, cost, APGR, the random line) are computed from those answers. Then one live run per dataset
sends every question unpinned through a router configured with the best signal, and its real
escalations are compared with the computed prediction for that setting.

    bench/quality.py [--datasets gsm8k,humaneval,boolq] [--limit N | --full] [--out results]

Writes results/quality.json (summary), results/quality-<dataset>.json (every question: answers,
scores, grades, timings) and results/quality.png. These are tiny CPU models: they show the
mechanism and the method, not what large models reach.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal as signals
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "hack"), str(REPO / "bench")]

import llamaserver  # noqa: E402
from quality_curves import (  # noqa: E402
    GOAL_RATES,
    RATES,
    Point,
    at,
    binary_curve,
    cascade,
    goals,
    pair_curve,
    random_line,
)
from quality_data import CACHE, DATASETS, Dataset, Item  # noqa: E402

from onion_router.adaptive import quantile  # noqa: E402
from onion_router.config import Escalation  # noqa: E402
from onion_router.policies import p_yes, score_logprobs, self_instruction, verify_messages  # noqa: E402

# name, hack/models.py name, model, parameters (the cost proxy: generated tokens x parameters)
LADDER = (
    ("core", "smollm2", "SmolLM2-135M-Instruct Q4_1", 135e6),
    ("mid", "qwen05", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M", 494e6),
    ("big", "qwen15", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", 1544e6),
)
NAMES = [name for name, *_ in LADDER]
PARAMS = {name: params for name, _, _, params in LADDER}
# Sized to finish in well under an hour on a shared 2-core VM (measured: see docs/quality.md).
DEFAULT_LIMITS = {"gsm8k": 6, "humaneval": 6, "boolq": 12}
SIGNALS = ("mean", "min", "firstK", "verify")  # scored policies; `self` is a yes/no signal
FIRST_K = 8
LIVE_RATE = 0.3  # the targetRate-like setting of the live run, at both judged layers
SELF = Escalation(policy="self")
VERIFY = Escalation(policy="verify")
VERIFY_TOP = 10  # as the router asks (escalation.VERIFY_TOP_LOGPROBS)
SELF_PROBE_TOKENS = 12


def say(msg: str) -> None:
    print(f"[bench-quality {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Cache:
    """Answers already fetched (same model file, same request), so a rerun or a resumed run
    does not ask again. Kept outside the repo."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    key, value = json.loads(line)
                    self.data[key] = value

    @staticmethod
    def key(layer: str, body: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps([layer, body], sort_keys=True).encode()).hexdigest()

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        with self.path.open("a") as out:
            out.write(json.dumps([key, value]) + "\n")


def ask(client: Any, cache: Cache | None, model: str, body: dict[str, Any]) -> dict[str, Any]:
    """One chat completion through the router; what the bench keeps of it."""
    key = Cache.key(model, body)
    if cache is not None and key in cache.data:
        return dict(cache.data[key])
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(model=model, **body)
    seconds = time.perf_counter() - started
    reply = raw.parse()
    choice = reply.choices[0]
    content = (choice.logprobs.content if choice.logprobs else None) or []
    out = {
        "text": choice.message.content or "",
        "layer": raw.headers.get("x-onion-layer"),
        "path": raw.headers.get("x-onion-path"),
        "completionTokens": reply.usage.completion_tokens if reply.usage else 0,
        "promptTokens": reply.usage.prompt_tokens if reply.usage else 0,
        "seconds": round(seconds, 3),
        "logprobs": [t.logprob for t in content],
        "top": [{"token": a.token, "logprob": a.logprob} for a in (content[0].top_logprobs or [])]
        if content
        else [],
    }
    if cache is not None and model.startswith("onion/"):  # pinned answers are reusable
        cache.put(key, out)
    return out


def messages(dataset: Dataset, item: Item) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": dataset.system},
        {"role": "user", "content": item.question},
    ]


def measure_item(
    client: Any, cache: Cache, dataset: Dataset, item: Item
) -> dict[str, dict[str, Any]]:
    """Every layer's answer to one question, graded, with the scores every policy would see."""
    record: dict[str, dict[str, Any]] = {}
    base = {"messages": messages(dataset, item), "max_tokens": dataset.max_tokens}
    for index, layer in enumerate(NAMES):
        body = {**base, "temperature": 0, "logprobs": True, "top_logprobs": 1}
        answer = ask(client, cache, f"onion/{layer}", body)
        lps = answer.pop("logprobs")
        answer.pop("top")
        answer["correct"] = dataset.grade(item, answer["text"])
        answer["scores"] = {
            "mean": score_logprobs(lps, "mean", FIRST_K),
            "min": score_logprobs(lps, "min", FIRST_K),
            "firstK": score_logprobs(lps, "firstK", FIRST_K),
        }
        if index < len(NAMES) - 1:  # judged layers: the probes of `self` and `verify`
            instruction = self_instruction(SELF)
            assert instruction is not None
            probe = {
                "messages": [{"role": "system", "content": instruction}, *base["messages"]],
                "max_tokens": SELF_PROBE_TOKENS,
                "temperature": 0,
            }
            asked = ask(client, cache, f"onion/{layer}", probe)
            answer["self"] = {
                "asked": SELF.sentinel in asked["text"],
                "seconds": asked["seconds"],
                "completionTokens": asked["completionTokens"],
            }
            check = {
                "messages": verify_messages(VERIFY, item.question, answer["text"]),
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": VERIFY_TOP,
            }
            verdict = ask(client, cache, f"onion/{layer}", check)
            answer["scores"]["verify"] = p_yes(verdict["top"])
            answer["verify"] = {
                "seconds": verdict["seconds"],
                "promptTokens": verdict["promptTokens"],
                "completionTokens": verdict["completionTokens"],
            }
        answer["cost"] = answer["completionTokens"] * PARAMS[layer]
        record[layer] = answer
    return record


def curves(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per pair of layers and per signal: the curve, its APGR and the goal figures; and the
    cascade through all three."""
    col = {
        layer: {
            "ok": [r["layers"][layer]["correct"] for r in records],
            "cost": [r["layers"][layer]["cost"] for r in records],
        }
        for layer in NAMES
    }
    out: dict[str, Any] = {"pairs": {}, "cascade": {}}
    for weak, strong in (("core", "big"), ("mid", "big"), ("core", "mid")):
        pair: dict[str, Any] = {}
        args = (col[weak]["ok"], col[strong]["ok"], col[weak]["cost"], col[strong]["cost"])
        for signal in SIGNALS:
            scores = [r["layers"][weak]["scores"][signal] for r in records]
            points = pair_curve(*args, scores)
            pair[signal] = summarize(points, sum(col[strong]["ok"]) / len(records))
        asked = [r["layers"][weak]["self"]["asked"] for r in records]
        points = binary_curve(*args, asked)
        pair["self"] = summarize(points, sum(col[strong]["ok"]) / len(records))
        pair["self"]["escalated"] = sum(asked) / len(records)
        out["pairs"][f"{weak}->{strong}"] = pair
    ok = [col[layer]["ok"] for layer in NAMES]
    cost = [col[layer]["cost"] for layer in NAMES]
    for signal in (*SIGNALS, "random"):
        rows = []
        for rate in RATES:
            if signal == "random":  # expectation: each layer escalates `rate` of what it sees
                acc = (
                    (1 - rate) * sum(ok[0])
                    + rate * (1 - rate) * sum(ok[1])
                    + rate * rate * sum(ok[2])
                ) / len(records)
                spent = sum(cost[0]) + rate * sum(cost[1]) + rate * rate * sum(cost[2])
                rows.append({"rate": rate, "accuracy": acc, "cost": spent / sum(cost[2])})
                continue
            scores = [
                [r["layers"][layer]["scores"].get(signal) for r in records] for layer in NAMES
            ]
            acc, spent, _ = cascade(ok, cost, scores, rate)
            rows.append({"rate": rate, "accuracy": acc, "cost": spent})
        out["cascade"][signal] = rows
    return out


def summarize(points: list[Point], strong: float) -> dict[str, Any]:
    return {
        **goals(points, strong),
        "atRates": {
            f"{r:.1f}": {
                "accuracy": at(points, r).accuracy,
                "random": random_line(points, r).accuracy,
                "cost": at(points, r).cost,
            }
            for r in GOAL_RATES
        },
        "curve": [[round(p.rate, 4), round(p.accuracy, 4), round(p.cost, 4)] for p in points],
    }


def best_signal(table: dict[str, Any]) -> str:
    """The scored signal with the highest APGR, averaged over the pairs into `big`."""

    def mean_apgr(signal: str) -> float:
        values = [table["pairs"][p][signal]["apgr"] for p in ("core->big", "mid->big")]
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known else 0.0

    return max(SIGNALS, key=mean_apgr)


def live_thresholds(records: list[dict[str, Any]], signal: str) -> dict[str, float]:
    """Thresholds that escalate about LIVE_RATE of each judged layer's own traffic: the core
    sees every question, mid only what the core escalated."""
    thresholds: dict[str, float] = {}
    seeing = list(range(len(records)))
    for layer in NAMES[:-1]:
        values = [records[q]["layers"][layer]["scores"][signal] for q in seeing]
        scored = sorted(v for v in values if v is not None)
        thresholds[layer] = quantile(scored, LIVE_RATE) if scored else float("-inf")
        seeing = [
            q
            for q, v in zip(seeing, values, strict=True)
            if v is not None and v < thresholds[layer]
        ]
    return thresholds


def policy(signal: str, threshold: float) -> dict[str, Any]:
    if signal == "verify":
        return {"policy": "verify", "threshold": threshold}
    return {"policy": "confidence", "score": signal, "firstK": FIRST_K, "threshold": threshold}


def predicted_layer(record: dict[str, Any], signal: str, thresholds: dict[str, float]) -> str:
    for layer in NAMES[:-1]:
        score = record["layers"][layer]["scores"][signal]
        if score is None or score >= thresholds[layer]:
            return layer
    return NAMES[-1]


def live_run(
    urls: dict[str, str],
    dataset: Dataset,
    items: list[Item],
    records: list[dict[str, Any]],
    signal: str,
    logs: Path,
) -> dict[str, Any]:
    """Every question once through the unpinned router, configured with `signal`."""
    from openai import OpenAI

    thresholds = live_thresholds(records, signal)
    escalation = {layer: policy(signal, t) for layer, t in thresholds.items()}
    started = time.perf_counter()
    rows = []
    with router(urls, escalation, logs) as base:
        client = OpenAI(base_url=f"{base}/v1", api_key="bench", max_retries=0, timeout=600)
        for item, record in zip(items, records, strict=True):
            body = {
                "messages": messages(dataset, item),
                "max_tokens": dataset.max_tokens,
                "temperature": 0,
            }
            answer = ask(client, None, "onion", body)
            expected = predicted_layer(record, signal, thresholds)
            rows.append(
                {
                    "id": item.id,
                    "layer": answer["layer"],
                    "path": answer["path"],
                    "predicted": expected,
                    "correct": dataset.grade(item, answer["text"]),
                    "predictedCorrect": record["layers"][expected]["correct"],
                    "seconds": answer["seconds"],
                }
            )
    n = len(rows)
    return {
        "signal": signal,
        "rate": LIVE_RATE,
        "thresholds": thresholds,
        "accuracy": sum(r["correct"] for r in rows) / n,
        "predictedAccuracy": sum(r["predictedCorrect"] for r in rows) / n,
        "answeredBy": {layer: sum(r["layer"] == layer for r in rows) / n for layer in NAMES},
        "predictedAnsweredBy": {
            layer: sum(r["predicted"] == layer for r in rows) / n for layer in NAMES
        },
        "sameLayerAsPredicted": sum(r["layer"] == r["predicted"] for r in rows) / n,
        "escalatedOutOfCore": sum(r["layer"] != NAMES[0] for r in rows) / n,
        "wallSeconds": round(time.perf_counter() - started, 1),
        "questions": rows,
    }


@contextlib.contextmanager
def router(urls: dict[str, str], escalation: dict[str, Any], logs: Path) -> Iterator[str]:
    """onion-router in static mode in front of the three servers."""
    port = llamaserver.free_port()
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "upstreamTimeoutSeconds": 900,
        "tiers": [
            {
                "name": layer,
                "url": urls[layer],
                "model": layer,
                "engine": "llamacpp",
                "escalation": escalation.get(layer, {"policy": "none"}),
            }
            for layer in NAMES
        ],
    }
    path = logs / f"router-{port}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    exe = Path(sys.executable).parent / "onion-router"
    with (logs / f"router-{port}.log").open("ab") as out:
        process = subprocess.Popen(
            [str(exe), "--config", str(path), "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not llamaserver.healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"onion-router did not start; see {logs}")
            time.sleep(0.2)
        yield url
    finally:
        llamaserver.stop(process)


def overheads(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What the probes cost, per judged layer: the verify call's extra prompt tokens and time,
    beside the answer's own time."""
    out = {}
    for layer in NAMES[:-1]:
        rows = [r["layers"][layer] for r in records]
        answer = sum(r["seconds"] for r in rows) / len(rows)
        verify = sum(r["verify"]["seconds"] for r in rows) / len(rows)
        out[layer] = {
            "answerSeconds": round(answer, 3),
            "answerTokens": sum(r["completionTokens"] for r in rows) / len(rows),
            "verifySeconds": round(verify, 3),
            "verifyPromptTokens": sum(r["verify"]["promptTokens"] for r in rows) / len(rows),
            "verifyGeneratedTokens": 1,
            "verifyTimeOverAnswer": round(verify / answer, 3) if answer else None,
        }
    return out


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["datasets"])
    columns = ("core->big", "mid->big", "cascade")
    fig, axes = plt.subplots(len(names), 3, figsize=(15, 4.2 * len(names)), squeeze=False)
    colors = {"mean": "C0", "min": "C1", "firstK": "C2", "verify": "C3", "self": "C4"}
    for row, name in enumerate(names):
        table = summary["datasets"][name]["curves"]
        for col, what in enumerate(columns):
            ax = axes[row][col]
            if what == "cascade":
                for signal, rows in table["cascade"].items():
                    xs = [r["rate"] for r in rows]
                    ys = [r["accuracy"] for r in rows]
                    style = (
                        {"color": "k", "ls": "--"}
                        if signal == "random"
                        else {"color": colors[signal]}
                    )
                    ax.plot(xs, ys, label=signal, **style)
                ax.set_title(f"{name}: cascade, each layer escalates r")
            else:
                pair = table["pairs"][what]
                for signal, data in pair.items():
                    xs = [p[0] for p in data["curve"]]
                    ys = [p[1] for p in data["curve"]]
                    a = data["apgr"]
                    label = f"{signal} (APGR {a:.2f})" if a is not None else signal
                    marker = "o" if signal == "self" else None
                    ax.plot(xs, ys, label=label, color=colors[signal], marker=marker)
                first = pair["mean"]["curve"]
                ax.plot([0, 1], [first[0][1], first[-1][1]], "k--", label="random")
                ax.set_title(f"{name}: {what}")
            ax.set_xlabel("escalation rate (fraction escalated out of the first layer)")
            ax.set_ylabel("accuracy")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(
        "The onion's bargain on SmolLM2-135M / Qwen2.5-Coder-0.5B / Qwen2.5-Coder-1.5B "
        "(Qwen models: Apache-2.0, Qwen team, Alibaba Cloud)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _apgr(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(summary: dict[str, Any]) -> str:
    """The tables the README and docs/quality.md show, from the summary."""
    signals = (*SIGNALS, "self")
    lines = [
        "| dataset (n) | core | mid | big | pair | "
        + " | ".join(f"APGR {s}" for s in signals)
        + " | best at <= 30%: accuracy (rate, cost) | random there |",
        "|---" * (7 + len(signals)) + "|",
    ]
    for name, entry in summary["datasets"].items():
        acc = entry["accuracy"]
        for pair in ("core->big", "mid->big"):
            table = entry["curves"]["pairs"][pair]
            best = max(signals, key=lambda s: table[s]["bestAccuracyAtOrBelow30"])
            point = table[best]
            rate = point["itsRate"]
            curve = {round(p[0], 4): p for p in point["curve"]}
            cost = curve.get(round(rate, 4), [0, 0, float("nan")])[2]
            lo, hi = point["curve"][0][1], point["curve"][-1][1]
            lines.append(
                f"| {name} ({entry['questions']}) | {acc['core']:.2f} | {acc['mid']:.2f} | "
                f"{acc['big']:.2f} | {pair} | "
                + " | ".join(_apgr(table[s]["apgr"]) for s in signals)
                + f" | {point['bestAccuracyAtOrBelow30']:.2f} ({best}, {rate:.0%}, "
                f"{cost:.2f}x) | {lo + rate * (hi - lo):.2f} |"
            )
    lines += [
        "",
        "| dataset | cascade at 30% per layer: signal, accuracy, cost | random cascade | "
        "live run: accuracy (predicted), same layer as predicted, escalated out of core | "
        "verify call beside the answer (core, mid) |",
        "|---|---|---|---|---|",
    ]
    for name, entry in summary["datasets"].items():
        cascade_rows = entry["curves"]["cascade"]
        signal = entry["bestSignal"]
        row = next(r for r in cascade_rows[signal] if abs(r["rate"] - LIVE_RATE) < 1e-9)
        rnd = next(r for r in cascade_rows["random"] if abs(r["rate"] - LIVE_RATE) < 1e-9)
        live = entry.get("live")
        live_text = (
            f"{live['accuracy']:.2f} ({live['predictedAccuracy']:.2f}), "
            f"{live['sameLayerAsPredicted']:.0%}, {live['escalatedOutOfCore']:.0%}"
            if live
            else "-"
        )
        over = entry["overheads"]
        verify = ", ".join(
            f"{o['verifySeconds']:.2f} s / {o['answerSeconds']:.2f} s" for o in over.values()
        )
        lines.append(
            f"| {name} | {signal}, {row['accuracy']:.2f}, {row['cost']:.2f}x | "
            f"{rnd['accuracy']:.2f}, {rnd['cost']:.2f}x | {live_text} | {verify} |"
        )
    return "\n".join(lines) + "\n"


def limits(text: str | None) -> dict[str, int]:
    """`--limit N` (every dataset) or `--limit gsm8k=10,boolq=24`."""
    if not text:
        return {}
    if text.isdigit():
        return dict.fromkeys(DATASETS, int(text))
    pairs = (part.split("=", 1) for part in text.split(",") if part.strip())
    return {name.strip(): int(value) for name, value in pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/quality.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="boolq,humaneval,gsm8k")
    parser.add_argument(
        "--limit",
        help="questions per dataset: N, or name=N,... (default: DEFAULT_LIMITS)",
    )
    parser.add_argument("--full", action="store_true", help="every question of every dataset")
    parser.add_argument("--out", type=Path, default=REPO / "results")
    parser.add_argument("--no-live", action="store_true", help="skip the live runs")
    args = parser.parse_args(argv)
    from openai import OpenAI

    def stop(signum: int, _frame: object) -> None:  # unwind, so every server is stopped
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signals.SIGTERM, signals.SIGHUP, signals.SIGINT):
        signals.signal(sig, stop)
    chosen = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in chosen if d not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {sorted(DATASETS)}")
    try:
        llamaserver.binary()
        for _, model, *_ in LADDER:
            llamaserver.model(model)
    except llamaserver.EngineMissing as err:
        print(f"bench-quality: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    cache = Cache(CACHE / "bench-quality" / "answers.jsonl")
    started = time.perf_counter()
    summary: dict[str, Any] = {
        "ladder": [
            {"layer": name, "model": model, "parameters": params}
            for name, _, model, params in LADDER
        ],
        "costProxy": "generated tokens x layer parameter count, relative to always asking big",
        "machine": f"{os.cpu_count()} cores, no GPU, llama-server, "
        f"{llamaserver.THREADS} thread(s) a server",
        "datasets": {},
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        logs = Path(tmp)
        urls = {
            name: stack.enter_context(llamaserver.serve(model, name, logs / f"{name}.log"))
            for name, model, *_ in LADDER
        }
        say(f"llama-server ladder up: {urls}")
        with router(urls, {}, logs) as base:
            client = OpenAI(base_url=f"{base}/v1", api_key="bench", max_retries=0, timeout=900)
            for name in chosen:
                dataset = DATASETS[name]
                items = dataset.items()
                limit = None if args.full else limits(args.limit).get(name, DEFAULT_LIMITS[name])
                items = items[:limit]
                say(f"{name}: {len(items)} questions, each layer pinned")
                t0 = time.perf_counter()
                records = []
                for number, item in enumerate(items, 1):
                    layers = measure_item(client, cache, dataset, item)
                    records.append({"id": item.id, "gold": item.gold, "layers": layers})
                    marks = " ".join(
                        f"{k}={'Y' if v['correct'] else '.'}" for k, v in layers.items()
                    )
                    say(f"  {name} {number}/{len(items)} {marks}")
                summary["datasets"][name] = {
                    "questions": len(items),
                    "license": dataset.license,
                    "pinnedWallSeconds": round(time.perf_counter() - t0, 1),
                    "records": records,
                }
        for name in chosen:
            entry = summary["datasets"][name]
            records = entry["records"]
            n = len(records)
            table = curves(records)
            big = sum(r["layers"]["big"]["cost"] for r in records)
            entry["accuracy"] = {
                layer: sum(r["layers"][layer]["correct"] for r in records) / n for layer in NAMES
            }
            entry["costPerLayer"] = {
                layer: sum(r["layers"][layer]["cost"] for r in records) / big for layer in NAMES
            }
            entry["overheads"] = overheads(records)
            entry["curves"] = table
            entry["bestSignal"] = best_signal(table)
            if not args.no_live:
                dataset = DATASETS[name]
                items = dataset.items()[:n]
                say(f"{name}: live run through the unpinned router, signal {entry['bestSignal']}")
                entry["live"] = live_run(urls, dataset, items, records, entry["bestSignal"], logs)
                live = entry["live"]
                say(
                    f"  live accuracy {live['accuracy']:.3f} "
                    f"(predicted {live['predictedAccuracy']:.3f}), "
                    f"same layer as predicted for {live['sameLayerAsPredicted']:.0%}"
                )
    summary["wallSeconds"] = round(time.perf_counter() - started, 1)
    for name, entry in summary["datasets"].items():
        raw = {"dataset": name, "license": entry["license"], "questions": entry.pop("records")}
        (args.out / f"quality-{name}.json").write_text(json.dumps(raw, indent=1))
    (args.out / "quality.json").write_text(json.dumps(summary, indent=1))
    plot(summary, args.out / "quality.png")
    (args.out / "quality.md").write_text(markdown(summary))
    say(
        f"wrote {args.out}/quality.json, quality-*.json, quality.png "
        f"in {summary['wallSeconds']:.0f}s"
    )
    for name, entry in summary["datasets"].items():
        say(f"{name}: accuracy {entry['accuracy']}, best signal {entry['bestSignal']}")
        for pair, table in entry["curves"]["pairs"].items():
            cells = ", ".join(
                f"{s} {v['apgr']:.2f}" if v["apgr"] is not None else f"{s} -"
                for s, v in table.items()
            )
            say(f"  APGR {pair}: {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
