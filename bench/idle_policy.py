"""Trace-driven benchmark of wake/idle policies: GPU time paid vs. requests that wait.

Replays one hour of real request arrivals (Azure LLM inference trace, conversation service;
see shared/data/README.md) through the operator's own pure planner (`onion_operator.planner.plan`)
once a simulated second, for several idle timeouts, a warm minimum (always on) and a
maxAwakeLayers=1 budget, and reports per policy: GPU-hours the outer layers were up, requests that
hit a cold start, and how long escalated requests waited.

The trace carries token counts, not prompts, so which request escalates is modelled by a stated
rule (printed with the results). Cold-start and decode speeds are stated assumptions, not
measurements from this machine (no GPU here).

    python bench/idle_policy.py [--keep-every 20] [--out results/idle-policy.json]
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from onion_operator.planner import Observed, plan
from onion_operator.spec import parse_spec

TRACE = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "azure-llm-inference-2023-conv.csv"
)

# Assumptions (per outer layer): cold start = pod start + weight load from a node-local model
# cache; decode speed of one stream. Typical of TGI on one GPU for these model sizes.
LAYERS = {
    "mid": {"model": "Qwen/Qwen2.5-14B-Instruct", "cold_start_s": 45.0, "tokens_per_s": 40.0},
    "big": {
        "model": "meta-llama/Llama-3.3-70B-Instruct",
        "cold_start_s": 120.0,
        "tokens_per_s": 20.0,
    },
}
RULE = "ContextTokens >= 4096 -> big; >= 2048 -> mid; else the core (always on, not counted)"
RENEW_EVERY_S = 5.0  # the router renews demand this often while requests are held or in flight


def target_layer(context_tokens: int) -> str | None:
    if context_tokens >= 4096:
        return "big"
    if context_tokens >= 2048:
        return "mid"
    return None


@dataclass(frozen=True)
class Request:
    arrival: float  # seconds from the start of the trace
    layer: str
    generated_tokens: int


def load_trace(path: Path, keep_every: int) -> list[Request]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    start = datetime.fromisoformat(rows[0]["TIMESTAMP"][:26])
    requests = []
    for i, row in enumerate(rows):
        if i % keep_every:
            continue
        layer = target_layer(int(row["ContextTokens"]))
        if layer is None:
            continue
        t = (datetime.fromisoformat(row["TIMESTAMP"][:26]) - start).total_seconds()
        requests.append(Request(t, layer, int(row["GeneratedTokens"])))
    return requests


@dataclass
class LayerSim:
    replicas: int = 0
    ready_at: float | None = None  # when the current wake finishes loading
    up_seconds: float = 0.0
    wakes: int = 0
    renewals: list[float] = field(default_factory=list)  # sorted demand times


def simulate(
    requests: list[Request], layer_spec: dict[str, Any], budget: int | None, horizon: float
) -> dict[str, Any]:
    spec_body: dict[str, Any] = {
        "core": {"model": "HuggingFaceTB/SmolLM2-1.7B-Instruct"},
        "layers": [{"name": n, "model": LAYERS[n]["model"], **layer_spec} for n in LAYERS],
    }
    if budget is not None:
        spec_body["maxAwakeLayers"] = budget
    spec = parse_spec("bench", spec_body)
    t0 = datetime(2023, 11, 16, 18, 15, tzinfo=UTC)
    sims = {n: LayerSim() for n in LAYERS}
    pending = sorted(requests, key=lambda r: r.arrival)
    waiting: list[Request] = []
    waits: dict[str, list[float]] = {n: [] for n in LAYERS}
    cold = 0
    i = 0
    # Steady state before the trace: what the planner keeps up with no demand (warm minimum).
    for name, want in plan(spec, {}, {n: None for n in LAYERS}, t0).replicas.items():
        sims[name].replicas, sims[name].ready_at = want, (0.0 if want else None)
    for second in range(int(horizon) + 1):
        now = float(second)
        # Arrivals in (now-1, now]: demand is recorded at once.
        while i < len(pending) and pending[i].arrival <= now:
            req = pending[i]
            i += 1
            sims[req.layer].renewals.append(req.arrival)
            waiting.append(req)
        # Serve what can be served: the layer is up and loaded.
        still = []
        for req in waiting:
            sim = sims[req.layer]
            if sim.replicas and sim.ready_at is not None and sim.ready_at <= now:
                start = max(req.arrival, sim.ready_at)
                wait = start - req.arrival
                waits[req.layer].append(wait)
                cold += wait > 0
                end = start + req.generated_tokens / LAYERS[req.layer]["tokens_per_s"]
                t = start
                while t < end:  # demand renewed while in flight
                    t = min(end, t + RENEW_EVERY_S)
                    bisect.insort(sim.renewals, t)
            else:
                still.append(req)
        waiting = still
        # Held requests are demand too: the router renews for queued requests as for in-flight.
        for req in waiting:
            sim = sims[req.layer]
            if now - sim.renewals[-1] >= RENEW_EVERY_S:
                bisect.insort(sim.renewals, now)
        # The operator's decision, from recorded demand only (renewals up to now).
        demand = {}
        for name, sim in sims.items():
            k = bisect.bisect_right(sim.renewals, now)
            demand[name] = t0 + timedelta(seconds=sim.renewals[k - 1]) if k else None
        observed = {n: Observed(replicas=s.replicas) for n, s in sims.items()}
        decision = plan(spec, observed, demand, t0 + timedelta(seconds=now))
        for name, want in decision.replicas.items():
            sim = sims[name]
            if want and not sim.replicas:
                sim.wakes += 1
                sim.ready_at = now + LAYERS[name]["cold_start_s"]
            if not want:
                sim.ready_at = None
            sim.replicas = want
            sim.up_seconds += want
    all_waits = [w for ws in waits.values() for w in ws]
    served = len(all_waits)
    return {
        "gpu_hours": round(sum(s.up_seconds for s in sims.values()) / 3600, 3),
        "wakes": {n: s.wakes for n, s in sims.items()},
        "requests_served": served,
        "requests_unserved_at_end": len(waiting) + len(pending) - i,
        "cold_start_fraction": round(cold / served, 3) if served else 0.0,
        "wait_p50_s": round(statistics.median(all_waits), 1) if all_waits else 0.0,
        "wait_p99_s": round(percentile(all_waits, 0.99), 1) if all_waits else 0.0,
        "wait_mean_s": round(statistics.fmean(all_waits), 2) if all_waits else 0.0,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument(
        "--keep-every",
        type=int,
        default=20,
        help="thin the trace to every k-th request (a smaller tenant)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/idle-policy.json"))
    args = parser.parse_args()
    requests = load_trace(args.trace, args.keep_every)
    horizon = 3600.0 + 600  # the trace hour, plus time for the last wakes and sleeps
    policies: list[tuple[str, dict[str, Any], int | None]] = [
        ("always on (minReplicas: 1)", {"minReplicas": 1}, None),
        *[
            (f"idleTimeout {t}", {"idleTimeout": t}, None)
            for t in ("30s", "2m", "5m", "10m", "30m")
        ],
        ("idleTimeout 5m, maxAwakeLayers 1", {"idleTimeout": "5m"}, 1),
    ]
    per_layer = {n: sum(r.layer == n for r in requests) for n in LAYERS}
    print(f"trace: {args.trace.name}, every {args.keep_every}th request; escalation rule: {RULE}")
    print(f"escalated requests: {per_layer}; assumptions: {json.dumps(LAYERS)}")
    print(
        f"{'policy':36} {'GPU-h':>6} {'vs on':>6} {'wakes':>12} {'cold%':>6} "
        f"{'wait p50':>9} {'p99':>7}"
    )
    results = []
    baseline = None
    for name, layer_spec, budget in policies:
        r = simulate(requests, layer_spec, budget, horizon)
        baseline = baseline or r["gpu_hours"]
        r["gpu_hours_vs_always_on"] = round(r["gpu_hours"] / baseline, 3)
        results.append({"policy": name, **r})
        print(
            f"{name:36} {r['gpu_hours']:6.2f} {r['gpu_hours_vs_always_on']:6.2f} "
            f"{json.dumps(r['wakes']):>12} {100 * r['cold_start_fraction']:5.1f}% "
            f"{r['wait_p50_s']:8.1f}s {r['wait_p99_s']:6.1f}s"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "trace": args.trace.name,
                "keep_every": args.keep_every,
                "rule": RULE,
                "assumptions": LAYERS,
                "renew_every_s": RENEW_EVERY_S,
                "escalated_requests": per_layer,
                "horizon_s": horizon,
                "policies": results,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
