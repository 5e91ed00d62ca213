"""The bargain's figures (pure but for the plot): from what each request got (its grade, the
layers it visited, whether it waited for a cold start, its added latency) and how long each
layer was awake, the figures of one policy against always-big; the goal's reading; how far the
simulator is from the live replay; the frontier as a picture."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onion_lab import evaluation, wake_sim
from onion_lab.bargain import Route, percentile

GOAL = {"accuracyShare": 0.95, "gpuShare": 0.25, "waitedShare": 0.05}
MANAGED = ("mid", "big")


@dataclass(frozen=True)
class Served:
    """One request, as the client saw it."""

    correct: bool
    layers: tuple[str, ...]  # the layers it visited, in order
    waited: bool  # held for a layer's cold start
    added: float  # seconds beyond the answering layers' own time (trace time)
    question: str = ""  # which question it asked (requests repeat questions)


def served_simulated(
    paths: Sequence[Route], outcome: wake_sim.Outcome, questions: Sequence[str]
) -> list[Served]:
    if outcome.unfinished:
        raise ValueError(f"{outcome.unfinished} requests unfinished at the horizon")
    return [
        Served(p.correct, tuple(v[0] for v in p.visits), w > 0, w, q)
        for p, w, q in zip(paths, outcome.waits, questions, strict=True)
    ]


def _r(value: float, places: int = 4) -> float:
    return round(float(value), places)


def accuracy_figures(
    correct: Sequence[bool], big: Sequence[bool], questions: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy with its 95% bootstrap interval, and the paired difference to always-big's on
    the same requests (distinguishable when its interval excludes 0). The bootstrap resamples
    questions, not requests: a trace's requests repeat the bank's test questions, and a
    question's grade is the same each time it is asked."""
    ok = np.array(correct, dtype=float)
    ref = np.array(big, dtype=float)
    keys = list(questions) if questions and all(questions) else [str(i) for i in range(len(ok))]
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    group = np.array([index[k] for k in keys], dtype=int)
    count = np.bincount(group, minlength=len(index)).astype(float)
    hits = np.bincount(group, weights=ok, minlength=len(index))
    big_hits = np.bincount(group, weights=ref, minlength=len(index))

    def share(h: np.ndarray, c: np.ndarray) -> float | None:
        return float(h.sum() / c.sum()) if c.sum() else None

    def gap(h: np.ndarray, b: np.ndarray, c: np.ndarray) -> float | None:
        return float((h.sum() - b.sum()) / c.sum()) if c.sum() else None

    interval = evaluation.bootstrap(share, [hits, count], samples=1000)
    diff = evaluation.bootstrap(gap, [hits, big_hits, count], samples=1000)
    pair = diff.pair() if diff else None
    return {
        "requests": len(ok),
        "questions": len(index),
        "accuracy": _r(ok.mean()) if len(ok) else None,
        "accuracyCi": interval.pair() if interval else None,
        "accuracyMinusBigCi": pair,
        "distinguishableFromBig": bool(pair and (pair[0] > 0 or pair[1] < 0)),
    }


def figures(
    name: str,
    served: Sequence[Served],
    awake: Mapping[str, float],
    horizon: float,
    weights: Mapping[str, float],
    big: Mapping[str, Any],
    source: str,
    core_gpu: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """One policy's row. `awake`: seconds each managed layer was awake (its GPUs counted);
    `big`: always-big's row on the same requests (its `correct` list and accuracy);
    `core_gpu`: the core is awake all along on its GPUs (always-big has no core)."""
    n = len(served)
    acc = accuracy_figures(
        [s.correct for s in served], big["correct"], [s.question for s in served]
    )
    layers_gpu = sum(weights[layer] * awake.get(layer, 0.0) for layer in MANAGED)
    big_gpu = weights["big"] * horizon
    added = [s.added for s in served]
    return {
        "name": name,
        **extra,
        **acc,
        "accuracyShare": _r(acc["accuracy"] / big["accuracy"]) if big["accuracy"] else None,
        "gpuShare": _r((weights["core"] * horizon * core_gpu + layers_gpu) / big_gpu),
        "gpuShareCoreOnDevice": _r(layers_gpu / big_gpu),
        "waitedShare": _r(sum(s.waited for s in served) / n) if n else None,
        "addedLatencyP50Seconds": round(percentile(added, 0.5), 1),
        "addedLatencyP99Seconds": round(percentile(added, 0.99), 1),
        "escalationRate": {
            layer: _r(sum(layer in s.layers for s in served) / n) if n else None
            for layer in MANAGED
        },
        "awakeSeconds": {layer: round(awake.get(layer, 0.0), 1) for layer in MANAGED},
        "source": source,
    }


def baseline(
    name: str,
    correct: Sequence[bool],
    layer: str,
    horizon: float,
    weights: Mapping[str, float],
    big_correct: Sequence[bool] | None = None,
    questions: Sequence[str] = (),
) -> dict[str, Any]:
    """Always-big or always-core: every request to `layer`, which is always awake; shares
    against always-big's grades on the same requests (`big_correct`; itself when omitted)."""
    keys = list(questions) or [""] * len(correct)
    served = [Served(c, (layer,), False, 0.0, q) for c, q in zip(correct, keys, strict=True)]
    awake = {"big": horizon} if layer == "big" else {}
    ref = list(correct if big_correct is None else big_correct)
    big = {"correct": ref, "accuracy": float(np.mean(ref)) if ref else 0.0}
    row = figures(name, served, awake, horizon, weights, big, "simulated", core_gpu=layer == "core")
    row["correct"] = [bool(c) for c in correct]
    return row


def shortfall(row: Mapping[str, Any], gpu_key: str = "gpuShare") -> dict[str, float]:
    """How far a point is from the goal on each axis (0: met)."""
    return {
        "accuracyShare": _r(max(0.0, GOAL["accuracyShare"] - (row["accuracyShare"] or 0.0))),
        "gpuShare": _r(max(0.0, row[gpu_key] - GOAL["gpuShare"])),
        "waitedShare": _r(max(0.0, (row["waitedShare"] or 0.0) - GOAL["waitedShare"])),
    }


def best(rows: Sequence[Mapping[str, Any]], gpu_key: str = "gpuShare") -> dict[str, Any] | None:
    """The point closest to the goal: the smallest sum of shortfalls, each relative to its
    bound; ties to the more accurate. With whether the goal is met and the gap on each axis."""
    if not rows:
        return None

    def distance(row: Mapping[str, Any]) -> tuple[float, float]:
        gap = shortfall(row, gpu_key)
        return (sum(gap[k] / GOAL[k] for k in GOAL), -(row["accuracyShare"] or 0.0))

    row = min(rows, key=distance)
    gap = shortfall(row, gpu_key)
    keep = ("name", "idle", "accuracy", "accuracyCi", "accuracyShare", gpu_key, "waitedShare")
    return {
        **{k: row.get(k) for k in keep},
        "source": row["source"],
        "goalMet": not any(gap.values()),
        "shortfall": gap,
    }


def within_budget(rows: Sequence[Mapping[str, Any]], gpu_key: str) -> dict[str, Any] | None:
    """The most accurate point within the goal's GPU and wait bounds."""
    ok = [
        r
        for r in rows
        if r[gpu_key] <= GOAL["gpuShare"] and (r["waitedShare"] or 0.0) <= GOAL["waitedShare"]
    ]
    if not ok:
        return None
    row = max(ok, key=lambda r: r["accuracyShare"] or 0.0)
    keys = ("name", "idle", "accuracy", "accuracyCi", "accuracyShare", gpu_key, "waitedShare")
    return {k: row.get(k) for k in keys}


def cheapest_accurate(rows: Sequence[Mapping[str, Any]], gpu_key: str) -> dict[str, Any] | None:
    """The cheapest point keeping the goal's share of always-big's accuracy."""
    ok = [r for r in rows if (r["accuracyShare"] or 0.0) >= GOAL["accuracyShare"]]
    if not ok:
        return None
    row = min(ok, key=lambda r: (r[gpu_key], r["waitedShare"] or 0.0))
    keys = ("name", "idle", "accuracy", "accuracyCi", "accuracyShare", gpu_key, "waitedShare")
    return {**{k: row.get(k) for k in keys}, "shortfall": shortfall(row, gpu_key)}


COMPARED = (
    "accuracy",
    "gpuShare",
    "waitedShare",
    "addedLatencyP50Seconds",
    "addedLatencyP99Seconds",
)


def distance(simulated: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """Live minus simulated, figure by figure (escalation rates per layer too)."""
    out: dict[str, Any] = {
        k: _r(live[k] - simulated[k], 4)
        for k in COMPARED
        if live.get(k) is not None and simulated.get(k) is not None
    }
    out["escalationRate"] = {
        layer: _r((live["escalationRate"][layer] or 0) - (simulated["escalationRate"][layer] or 0))
        for layer in MANAGED
    }
    return out


def plot(
    policies: Sequence[Mapping[str, Any]],
    path: Path,
    title: str,
    core: Mapping[str, Any] | None = None,
) -> None:
    """Accuracy share against GPU share (core on a GPU: filled; on a device: hollow), the waited
    share as colour; the goal's corner shaded; live points ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    sim = [p for p in policies if p["source"] == "simulated"]
    live = [p for p in policies if p["source"] == "live"]
    waited = [100 * (p["waitedShare"] or 0.0) for p in policies]
    vmax = max([5.0, *waited])
    marks = (("gpuShare", "o", 1.0, "on a GPU"), ("gpuShareCoreOnDevice", "^", 0.6, "on a device"))
    for key, marker, alpha, where in marks:
        scatter = ax.scatter(
            [p[key] for p in sim],
            [p["accuracyShare"] for p in sim],
            c=[100 * p["waitedShare"] for p in sim],
            cmap="viridis_r",
            vmin=0,
            vmax=vmax,
            s=22,
            marker=marker,
            alpha=alpha,
            label=f"core {where} (simulated)",
        )
    if live:
        ax.scatter(
            [p["gpuShare"] for p in live],
            [p["accuracyShare"] for p in live],
            facecolors="none",
            edgecolors="red",
            s=90,
            linewidths=1.5,
            label="live replay (core on a GPU)",
        )
    ax.scatter([1.0], [1.0], marker="*", s=140, color="black", label="always big")
    if core is not None:
        for key, face in (("gpuShare", "black"), ("gpuShareCoreOnDevice", "none")):
            ax.scatter(
                [core[key]],
                [core["accuracyShare"]],
                marker="s",
                s=50,
                color=face,
                edgecolors="black",
                label=f"always core ({'GPU' if face == 'black' else 'device'})",
            )
    top = max(1.1, *[(p["accuracyShare"] or 0) + 0.05 for p in policies])
    ax.axvspan(
        0, GOAL["gpuShare"], ymin=GOAL["accuracyShare"] / top, ymax=1, color="green", alpha=0.1
    )
    ax.axhline(GOAL["accuracyShare"], color="green", linestyle="--", linewidth=1)
    ax.axvline(GOAL["gpuShare"], color="green", linestyle="--", linewidth=1)
    ax.text(0.01, GOAL["accuracyShare"] + 0.01, "goal: >= 95% of big's accuracy", fontsize=8)
    ax.set_xlabel("GPU cost, share of always-big's (awake time x GPUs)")
    ax.set_ylabel("accuracy, share of always-big's")
    ax.set_xlim(0, max(1.05, *[p["gpuShare"] for p in policies]))
    ax.set_ylim(0, top)
    fig.colorbar(scatter, ax=ax, label="% of requests that waited for a cold start")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
