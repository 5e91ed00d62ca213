"""Replay request arrivals through the operator's own pure planner (`onion_operator.planner.plan`)
once a simulated second, with the adaptive policy learning from the same functions the operator
uses (`onion_operator.idle`): GPU time paid against requests that wait, per idle policy, and the
verdicts the idle-policy benchmark (bench/idle_policy.py) reports.

Which request escalates is a stated rule over the trace's token counts (RULE); cold-start and
decode speeds are stated assumptions (LAYERS), not measurements.
"""

from __future__ import annotations

import bisect
import csv
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from onion_lab.paths import DATA
from onion_operator.idle import History, busy_gap, learn_gap
from onion_operator.planner import Observed, plan
from onion_operator.spec import parse_spec

# The Azure LLM inference trace 2023, conversation service (see shared/data/README.md).
TRACE = DATA / "azure-llm-inference-2023-conv.csv"

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
    prewarms: int = 0  # wakes with no demand waiting (the adaptive policy's pre-warms)
    renewals: list[float] = field(default_factory=list)  # sorted demand times
    history: History = field(
        default_factory=History
    )  # what the adaptive policy learned, as the operator keeps it
    seen_demand: float | None = None  # the last demand the planner saw (status.lastDemandTime)


T0 = datetime(2023, 11, 16, 18, 15, tzinfo=UTC)  # the trace's first request


def simulate(
    requests: list[Request],
    layer_spec: dict[str, Any],
    budget: int | None,
    horizon: float,
    per_layer: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One policy (`layer_spec` on every layer, `per_layer` on top) over the requests."""
    spec_body: dict[str, Any] = {
        "core": {"model": "HuggingFaceTB/SmolLM2-1.7B-Instruct"},
        "layers": [
            {"name": n, "model": LAYERS[n]["model"], **layer_spec, **(per_layer or {}).get(n, {})}
            for n in LAYERS
        ],
    }
    if budget is not None:
        spec_body["maxAwakeLayers"] = budget
    spec = parse_spec("bench", spec_body)
    busy = busy_gap(spec.demand_renew_seconds)
    keep = {lay.name: lay.adaptive.history for lay in spec.managed_layers}
    t0 = T0
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
        # The operator's decision, from recorded demand only (renewals up to now), with what
        # it learned: idle gaps as demand comes back, cold starts as wakes finish.
        demand = {}
        for name, sim in sims.items():
            k = bisect.bisect_right(sim.renewals, now)
            latest = sim.renewals[k - 1] if k else None
            sim.history = learn_gap(sim.history, sim.seen_demand, latest, busy, keep[name])
            sim.seen_demand = latest
            demand[name] = t0 + timedelta(seconds=latest) if latest is not None else None
            if sim.replicas and sim.ready_at == now:
                sim.history = sim.history.with_cold_start(LAYERS[name]["cold_start_s"], keep[name])
        observed = {n: Observed(replicas=s.replicas) for n, s in sims.items()}
        history = {n: s.history for n, s in sims.items()}
        decision = plan(spec, observed, demand, t0 + timedelta(seconds=now), history)
        for name, want in decision.replicas.items():
            sim = sims[name]
            if want and not sim.replicas:
                sim.wakes += 1
                sim.prewarms += not any(r.layer == name for r in waiting)
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
        "wakes_without_waiting_requests": {n: s.prewarms for n, s in sims.items()},
        "idle_gaps_learned": {n: len(s.history.gaps) for n, s in sims.items()},
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


FIXED_TIMEOUTS = ("30s", "1m", "2m", "3m", "5m", "7m", "10m", "15m", "20m", "30m")
COSTS = ("15s", "30s", "2m", "5m", "15m", "1h")  # coldStartCost of adaptive rows (default: 1m)
BASELINE = "idleTimeout 5m"
DEFAULT_ADAPTIVE = "adaptive"
Policy = tuple[str, dict[str, Any], int | None, dict[str, dict[str, Any]] | None]


def policies() -> list[Policy]:
    adaptive = {"idlePolicy": "adaptive", "idleTimeout": "30m"}
    # The trace's hour is 18:15-19:15 UTC: a tenant that knows mid is busy from 18:00 for an
    # hour says so; big stays adaptive.
    schedule = {"mid": {"warmSchedule": [{"cron": "0 18 * * *", "duration": "1h"}]}}
    return [
        ("always on (minReplicas: 1)", {"minReplicas": 1}, None, None),
        *[(f"idleTimeout {t}", {"idleTimeout": t}, None, None) for t in FIXED_TIMEOUTS],
        ("idleTimeout 5m, maxAwakeLayers 1", {"idleTimeout": "5m"}, 1, None),
        (DEFAULT_ADAPTIVE, adaptive, None, None),
        *[
            (
                f"adaptive coldStartCost {w}",
                {**adaptive, "adaptive": {"coldStartCost": w}},
                None,
                None,
            )
            for w in COSTS
        ],
        ("adaptive, no pre-warm", {**adaptive, "adaptive": {"prewarm": False}}, None, None),
        ("adaptive, maxAwakeLayers 1", adaptive, 1, None),
        ("adaptive + warmSchedule mid 18:00-19:00 UTC", adaptive, None, schedule),
    ]


def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """`a` is at least as good as `b` on both GPU-hours and cold-start fraction."""
    return a["gpu_hours"] <= b["gpu_hours"] and a["cold_start_fraction"] <= b["cold_start_fraction"]


def goal(rows: list[dict[str, Any]], name: str = DEFAULT_ADAPTIVE) -> dict[str, Any]:
    """Issue 13's goal for one tenant: no fixed timeout (30 s-30 min) at least as good as
    `name` on both axes; against 5 min, >= 25% fewer GPU-hours with no more cold starts, or at
    most half the cold starts with no more GPU-hours."""
    by_name = {r["policy"]: r for r in rows}
    ours, base = by_name[name], by_name[BASELINE]
    fixed = [r for r in rows if r["policy"] in {f"idleTimeout {t}" for t in FIXED_TIMEOUTS}]
    dominated_by = [r["policy"] for r in fixed if dominates(r, ours)]
    saving = 1 - ours["gpu_hours"] / base["gpu_hours"]
    cold_ratio = (
        ours["cold_start_fraction"] / base["cold_start_fraction"]
        if base["cold_start_fraction"]
        else (0.0 if not ours["cold_start_fraction"] else float("inf"))
    )
    fewer_gpu = saving >= 0.25 and ours["cold_start_fraction"] <= base["cold_start_fraction"]
    fewer_cold = cold_ratio <= 0.5 and ours["gpu_hours"] <= base["gpu_hours"]
    return {
        "policy": name,
        "dominated_by_fixed": dominated_by,
        "gpu_hours_saving_vs_5m": round(saving, 3),
        "cold_start_fraction_vs_5m": round(cold_ratio, 3),
        "met": not dominated_by and (fewer_gpu or fewer_cold),
    }


HINDSIGHT_TIMEOUTS = ("30s", "1m", "2m", "3m", "5m", "7m", "10m", "15m", "30m")


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no other row dominates (strictly better on one axis, no worse on the other)."""

    def beaten(r: dict[str, Any]) -> bool:
        return any(
            dominates(o, r)
            and (o["gpu_hours"], o["cold_start_fraction"])
            != (r["gpu_hours"], r["cold_start_fraction"])
            for o in rows
        )

    return sorted((r for r in rows if not beaten(r)), key=lambda r: r["gpu_hours"])


def hindsight(requests: list[Request], horizon: float) -> list[dict[str, Any]]:
    """A reference no online policy can beat with keep-alives alone: every pair of fixed
    timeouts, one per layer, chosen after seeing the whole trace; its Pareto frontier."""
    rows = []
    for mid in HINDSIGHT_TIMEOUTS:
        for big in HINDSIGHT_TIMEOUTS:
            per = {"mid": {"idleTimeout": mid}, "big": {"idleTimeout": big}}
            r = simulate(requests, {}, None, horizon, per)
            name = f"per-layer idleTimeout mid {mid}, big {big}"
            rows.append({"policy": name, **{k: r[k] for k in ("gpu_hours", "cold_start_fraction")}})
    return pareto(rows)


def hindsight_goal(frontier: list[dict[str, Any]], base: dict[str, Any]) -> bool:
    """Whether any per-layer pair in hindsight reaches the goal's bar against 5 minutes."""
    return any(
        (
            r["gpu_hours"] <= 0.75 * base["gpu_hours"]
            and r["cold_start_fraction"] <= base["cold_start_fraction"]
        )
        or (
            r["cold_start_fraction"] <= 0.5 * base["cold_start_fraction"]
            and r["gpu_hours"] <= base["gpu_hours"]
        )
        for r in frontier
    )
