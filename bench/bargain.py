#!/usr/bin/env python3
"""`make bench-bargain`: the whole bargain in one run. A real trace's arrivals, each a question
of the answer bank's test split, through the ladder: accuracy kept, share of always-big's GPU
bill paid, share of requests that waited for a cold start, for every escalation policy and idle
policy; first simulated (seconds), then a slice replayed live through the real router and
operator on the local cluster, with the layers served by the bank replay engine (a test double
of the model), time compressed by --speed.

    bench/bargain.py [--trace FILE] [--keep-every 20] [--mix gsm8k:0.4,humaneval:0.2,boolq:0.4]
                     [--out results/bargain.json] [--no-live] [--live-requests 300] [--speed 10]

It records nothing: everything comes from the committed bank (results/bank/), with the learned
models of `make bench-quality` (results/learned/) where the bank carries their scores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

from onion_lab import bank, bargain, bargain_report, bargain_run, bargain_spec
from onion_lab.paths import REPO, RESULTS

TRACE = REPO.parent / "shared" / "data" / "azure-llm-inference-2023-conv.csv"
MIX = "gsm8k:0.4,humaneval:0.2,boolq:0.4"


def say(msg: str) -> None:
    print(f"[bench-bargain {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def live_choice(rows: list[dict[str, Any]], count: int) -> list[tuple[str, str]]:
    """(policy, idle) pairs to replay live: the simulator's best point; its escalation policy
    with `adaptive`; the cheapest point keeping 95% of big's accuracy; the best with early wake."""
    out: list[tuple[str, str]] = []

    def add(row: dict[str, Any] | None, idle: str | None = None) -> None:
        if row is not None and (row["name"], idle or row["idle"]) not in out:
            out.append((row["name"], idle or row["idle"]))

    best = bargain_report.best(rows)
    add(best)
    add(best, "adaptive")
    accurate = [
        r for r in rows if (r["accuracyShare"] or 0) >= bargain_report.GOAL["accuracyShare"]
    ]
    add(min(accurate, key=lambda r: r["gpuShare"], default=None))
    add(bargain_report.best([r for r in rows if r["earlyWake"]]))
    return out[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/bargain.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--keep-every", type=int, default=20)
    parser.add_argument("--mix", default=MIX)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bank", type=Path, default=bank.BANK)
    parser.add_argument("--out", type=Path, default=RESULTS / "bargain.json")
    parser.add_argument("--png", type=Path, help="default: the JSON's path with .png")
    parser.add_argument("--no-live", dest="live", action="store_false", help="simulator alone")
    parser.add_argument("--live-requests", type=int, default=300, help="the live slice's size")
    parser.add_argument("--live-combinations", type=int, default=4)
    parser.add_argument("--speed", type=float, default=10.0, help="live time compression")
    args = parser.parse_args(argv)
    if not args.trace.is_file():
        parser.error(f"--trace {args.trace}: no such file")
    try:
        mix = bargain.parse_mix(args.mix)
    except ValueError as err:
        parser.error(str(err))
    if importlib.util.find_spec("matplotlib") is None:
        parser.error("needs matplotlib (make bench-bargain installs it): pip install matplotlib")
    started = time.perf_counter()
    setup = bargain_run.prepare(args.trace, args.keep_every, mix, args.seed, args.bank, say=say)
    say(
        f"{len(setup.arrivals)} arrivals (every {args.keep_every}th of {args.trace.name}), "
        f"mix {mix}, signals chosen on train {setup.signals}, learned: "
        f"{setup.learned.source if setup.learned else 'none (no prompt embedder)'}"
    )
    always_big, always_core = bargain_run.baselines(setup)
    rows = bargain_run.sweep(setup, list(bargain_spec.IDLE), always_big)
    sim_seconds = time.perf_counter() - started
    say(f"simulated {len(rows)} combinations in {sim_seconds:.0f}s")
    result: dict[str, Any] = {
        "trace": args.trace.name,
        "keepEvery": args.keep_every,
        "requests": len(setup.arrivals),
        "traceSeconds": round(setup.horizon, 1),
        "mix": mix,
        "seed": args.seed,
        "coldStartSeconds": bargain_spec.COLD_START,
        "gpus": setup.weights,
        "onion": bargain_spec.ONION,
        "signalsChosenOnTrain": setup.signals,
        "learnedModels": setup.learned.source if setup.learned else None,
        "earlyWakeCut": setup.learned.wake_cut if setup.learned else None,
        "goal": bargain_report.GOAL,
        "alwaysBig": {k: v for k, v in always_big.items() if k != "correct"},
        "alwaysCore": {k: v for k, v in always_core.items() if k != "correct"},
        "policies": rows,
        "simulatorSeconds": round(sim_seconds, 1),
    }
    if args.live:
        from onion_lab import bargain_live

        pairs = live_choice(rows, args.live_combinations)
        live_setup = setup.slice(args.live_requests)
        live_started = time.perf_counter()
        result["live"] = bargain_live.replay(live_setup, pairs, args.speed, args.bank, say=say)
        result["liveSeconds"] = round(time.perf_counter() - live_started, 1)
        result["policies"] += result["live"]["rows"]
    # The best points of the whole trace (simulated), and of the live slice apart: the live rows
    # are on fewer requests, their shares against always-big on the same slice.
    simulated = [r for r in result["policies"] if r["source"] == "simulated"]
    live_rows = [r for r in result["policies"] if r["source"] == "live"]
    result["best"] = {
        "coreOnGpu": bargain_report.best(simulated, "gpuShare"),
        "coreOnDevice": bargain_report.best(simulated, "gpuShareCoreOnDevice"),
        "withinBudgetCoreOnGpu": bargain_report.within_budget(simulated, "gpuShare"),
        "withinBudgetCoreOnDevice": bargain_report.within_budget(simulated, "gpuShareCoreOnDevice"),
        "mostAccurateAtLeast95": bargain_report.cheapest_accurate(simulated, "gpuShare"),
        "live": bargain_report.best(live_rows, "gpuShare"),
    }
    result["wallSeconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    png = args.png or args.out.with_suffix(".png")
    title = (
        f"{len(setup.arrivals)} requests of {args.trace.name} (every {args.keep_every}th),\n"
        f"mix {args.mix}; cold starts mid {bargain_spec.COLD_START['mid']:.0f} s, "
        f"big {bargain_spec.COLD_START['big']:.0f} s"
    )
    bargain_report.plot(result["policies"], png, title, result["alwaysCore"])
    say(f"wrote {args.out} and {png} in {result['wallSeconds']:.0f}s")
    for key, point in result["best"].items():
        say(f"best ({key}): {point}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
