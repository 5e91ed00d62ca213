"""Trace-driven benchmark of wake/idle policies: GPU time paid vs. requests that wait.

Replays one hour of real request arrivals (Azure LLM inference trace, conversation service;
see shared/data/README.md) through the operator's own pure planner (`onion_operator.planner.plan`)
once a simulated second, with the adaptive policy learning from the same functions the operator
uses (`onion_operator.idle`), for: fixed idle timeouts from 30 s to 30 min, a warm minimum (always
on), a maxAwakeLayers=1 budget, `idlePolicy: adaptive` at several coldStartCosts, and a warm
schedule. Each policy runs on several tenant sizes (every k-th request of the trace). Reported
per policy: GPU-hours the outer layers were up (waking counts), the fraction of escalated requests
that waited for a cold start, and how long they waited; the GPU-hours vs cold-start-fraction
frontier is drawn as a PNG, and the goal of issue 13 is checked against the 5-minute timeout.

The trace carries token counts, not prompts, so which request escalates is modelled by a stated
rule (printed with the results). Cold-start and decode speeds are stated assumptions, not
measurements from this machine (no GPU here). The adaptive policy starts with no history: it
learns during the hour, as a new layer would. The replay and the verdicts are
onion_lab.idle_replay; this is its command line, its table and its plot.

    python bench/idle_policy.py [--trace FILE] [--keep-every 20,5,10,50]
                                [--out results/idle-policy.json] [--plot results/idle-frontier.png]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

from onion_lab.idle_replay import (
    BASELINE,
    COSTS,
    DEFAULT_ADAPTIVE,
    FIXED_TIMEOUTS,
    LAYERS,
    RENEW_EVERY_S,
    RULE,
    TRACE,
    goal,
    hindsight,
    hindsight_goal,
    load_trace,
    policies,
    simulate,
)


def run_tenant(path: Path, keep_every: int, horizon: float) -> dict[str, Any]:
    requests = load_trace(path, keep_every)
    per_layer = {n: sum(r.layer == n for r in requests) for n in LAYERS}
    print(f"\ntrace: {path.name}, every {keep_every}th request; escalated requests: {per_layer}")
    print(
        f"{'policy':44} {'GPU-h':>6} {'vs on':>6} {'wakes':>12} {'cold%':>6} "
        f"{'wait p50':>9} {'p99':>7}"
    )
    results = []
    baseline = None
    for name, layer_spec, budget, per in policies():
        r = simulate(requests, layer_spec, budget, horizon, per)
        baseline = baseline or r["gpu_hours"]
        r["gpu_hours_vs_always_on"] = round(r["gpu_hours"] / baseline, 3)
        results.append({"policy": name, **r})
        print(
            f"{name:44} {r['gpu_hours']:6.2f} {r['gpu_hours_vs_always_on']:6.2f} "
            f"{json.dumps(r['wakes']):>12} {100 * r['cold_start_fraction']:5.1f}% "
            f"{r['wait_p50_s']:8.1f}s {r['wait_p99_s']:6.1f}s"
        )
    verdict = goal(results)
    frontier = hindsight(requests, horizon)
    always_on = results[0]["gpu_hours"]
    for r in frontier:
        r["gpu_hours_vs_always_on"] = round(r["gpu_hours"] / always_on, 3)
    base = next(r for r in results if r["policy"] == BASELINE)
    verdict["reachable_by_per_layer_timeouts_in_hindsight"] = hindsight_goal(frontier, base)
    print(f"goal (adaptive vs fixed, keep every {keep_every}): {json.dumps(verdict)}")
    print(
        "per-layer fixed timeouts in hindsight, Pareto frontier: "
        + "; ".join(
            f"{r['policy'].removeprefix('per-layer idleTimeout ')} "
            f"{r['gpu_hours']:.2f} GPU-h {100 * r['cold_start_fraction']:.1f}%"
            for r in frontier
        )
    )
    return {
        "keep_every": keep_every,
        "escalated_requests": per_layer,
        "policies": results,
        "goal": verdict,
        "per_layer_hindsight_frontier": frontier,
    }


def plot(tenants: list[dict[str, Any]], trace: str, out: Path) -> None:
    """GPU-hours (vs always on) against cold-start fraction, one panel per tenant size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(2, len(tenants))
    nrows = (len(tenants) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, 4.8 * nrows), squeeze=False)
    for ax in axes.flat[len(tenants) :]:
        ax.set_visible(False)
    for ax, tenant in zip(axes.flat, tenants, strict=False):
        rows = tenant["policies"]

        def series(names: tuple[str, ...], rows: list[dict[str, Any]] = rows) -> list[Any]:
            picked = [r for r in rows if r["policy"] in names]
            return sorted(picked, key=lambda r: r["gpu_hours"])

        fixed_names = tuple(f"idleTimeout {t}" for t in FIXED_TIMEOUTS)
        adaptive_names = (DEFAULT_ADAPTIVE, *(f"adaptive coldStartCost {w}" for w in COSTS))
        for names, style, label in (
            (fixed_names, "o-", "fixed idleTimeout 30s-30m"),
            (adaptive_names, "s-", "adaptive, coldStartCost 15s-1h (default 1m)"),
        ):
            pts = series(names)
            xs = [r["gpu_hours_vs_always_on"] for r in pts]
            ax.plot(xs, [100 * r["cold_start_fraction"] for r in pts], style, label=label, ms=4)
        oracle = tenant["per_layer_hindsight_frontier"]
        ax.plot(
            [r["gpu_hours_vs_always_on"] for r in oracle],
            [100 * r["cold_start_fraction"] for r in oracle],
            ":",
            color="grey",
            label="per-layer timeouts, best in hindsight",
        )
        for r in rows:
            if r["policy"] in (BASELINE, DEFAULT_ADAPTIVE) or "warmSchedule" in r["policy"]:
                xy = (r["gpu_hours_vs_always_on"], 100 * r["cold_start_fraction"])
                text = {BASELINE: "5m", DEFAULT_ADAPTIVE: "adaptive"}.get(r["policy"], "schedule")
                ax.annotate(text, xy, textcoords="offset points", xytext=(5, 5), fontsize=8)
                ax.plot(*xy, "k*" if text != "5m" else "kx", ms=7)
        ax.set_title(f"every {tenant['keep_every']}th request {tenant['escalated_requests']}")
        ax.set_xlabel("GPU-hours of the outer layers / always on")
        ax.set_ylabel("escalated requests that waited for a cold start (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Idle policies on {trace}: lower left is better", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--trace", type=Path, default=TRACE, help="CSV: TIMESTAMP,ContextTokens,..."
    )
    parser.add_argument(
        "--keep-every",
        default="20,5,10,50",
        help="tenant sizes: thin the trace to every k-th request, comma-separated (the first "
        "is the one in the JSON's top-level `policies`, as before several sizes)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/idle-policy.json"))
    parser.add_argument("--plot", type=Path, default=Path("results/idle-frontier.png"))
    args = parser.parse_args()
    try:
        sizes = [int(k) for k in args.keep_every.split(",")]
    except ValueError:
        parser.error(f"--keep-every {args.keep_every!r}: give integers such as 20 or 5,20")
    if any(k < 1 for k in sizes):
        parser.error("--keep-every: every size must be at least 1")
    if not args.trace.is_file():
        parser.error(f"--trace {args.trace}: no such file")
    # The plot comes last: say what is missing before minutes of replay, not after them.
    if importlib.util.find_spec("matplotlib") is None:
        parser.error(
            "needs matplotlib for its plot (make bench-idle installs it): pip install matplotlib"
        )
    horizon = 3600.0 + 600  # the trace hour, plus time for the last wakes and sleeps
    print(f"escalation rule: {RULE}; assumptions: {json.dumps(LAYERS)}")
    tenants = [run_tenant(args.trace, k, horizon) for k in sizes]
    first = tenants[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "trace": args.trace.name,
                "keep_every": first["keep_every"],
                "rule": RULE,
                "assumptions": LAYERS,
                "renew_every_s": RENEW_EVERY_S,
                "escalated_requests": first["escalated_requests"],
                "horizon_s": horizon,
                "policies": first["policies"],
                "goal": first["goal"],
                "tenants": tenants,
            },
            indent=2,
        )
    )
    plot(sorted(tenants, key=lambda t: int(t["keep_every"])), args.trace.name, args.plot)
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
