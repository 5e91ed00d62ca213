"""What `make bench-quality` shows of its figures: the markdown tables (README, docs/quality.md)
and the plot; and the prompt embedder the learned policies use, with its cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from onion_lab.paths import CACHE

LAYERS = ("core", "mid", "big")


def embedder() -> tuple[Callable[[str], Sequence[float]] | None, dict[str, Any] | None]:
    """The router's own prompt embedder on the cached all-MiniLM-L6-v2 files, with a cache of
    the vectors outside the repo; (None, None) where the `learned` extra or the files are not
    installed (`make engine` fetches the files)."""
    try:
        from onion_lab import embedder_files
        from onion_router.embedding import Embedder

        folder = embedder_files.folder()
        model = Embedder(folder)
    except (ImportError, OSError, RuntimeError, ValueError):
        return None, None
    meta = dict(model.describe())
    cache_path = CACHE / "embeddings" / f"{meta.get('sha256', 'minilm')[:16]}.jsonl"
    cache: dict[str, list[float]] = {}
    if cache_path.exists():
        for line in cache_path.read_text().splitlines():
            key, vector = json.loads(line)
            cache[key] = vector
    cache_path.parent.mkdir(parents=True, exist_ok=True)

    def embed(text: str) -> Sequence[float]:
        key = hashlib.sha256(text.encode()).hexdigest()
        if key not in cache:
            cache[key] = [round(float(v), 6) for v in model.embed(text)]
            with cache_path.open("a") as out:
                out.write(json.dumps([key, cache[key]]) + "\n")
        return cache[key]

    return embed, meta


def _f(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _ci(pair: Sequence[float] | None) -> str:
    return "-" if not pair else f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def _sets(summary: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Each dataset, then all of them pooled as one traffic."""
    out = list(summary["datasets"].items())
    if summary.get("pooled"):
        out.append(("pooled", summary["pooled"]))
    return out


def markdown(summary: Mapping[str, Any]) -> str:
    """The tables: accuracy per layer; per pair the signal chosen on train and its test APGR;
    the cascade's operating points; early wake."""
    out = [
        "Test split only; chosen on train. n = test questions; [95% bootstrap interval].",
        "",
        "| dataset (n test) | core | mid | big | cap hits (core, mid, big) |",
        "|---|---|---|---|---|",
    ]
    for name, d in _sets(summary):
        acc = d["accuracy"]
        tests = [acc[layer]["test"] for layer in LAYERS]
        cells = [f"{_f(t['value'])} {_ci(t['ci'])}" for t in tests]
        caps = ", ".join(f"{acc[layer]['capHits']:.0%}" for layer in LAYERS)
        out.append(f"| {name} ({d['questions']['test']}) | " + " | ".join(cells) + f" | {caps} |")
    out += [
        "",
        "| dataset | pair | chosen on train (train APGR) | test APGR [95%] | p vs random | "
        "at 30% on train's cut: accuracy [95%], escalated, minus big [95%], compute, wall |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in _sets(summary):
        for pair, p in d["pairs"].items():
            chosen = p.get("chosenOnTrain")
            if chosen is None:
                out.append(f"| {name} | {pair} | - (no gap on train) | - | - | - |")
                continue
            t = p["test"]
            op = p["operatingPoints"]["0.3"]
            out.append(
                f"| {name} | {pair} | {chosen} ({_f(p['signals'][chosen]['trainApgr'])}) | "
                f"{_f(t['apgr'])} {_ci(t['apgrCi'])} | {_f(t['pValue'], '.3f')} | "
                f"{_f(op['accuracy'])} {_ci(op['accuracyCi'])}, {op['escalated']:.0%}, "
                f"{_f(op['minusBig'], '+.2f')} {_ci(op['minusBigCi'])}, "
                f"{op['computeShare']:.2f}x, {op['wallShare']:.2f}x |"
            )
    out += [
        "",
        "| dataset | test APGR of every signal, core->big (p) | mid->big (p) |",
        "|---|---|---|",
    ]
    for name, d in _sets(summary):
        cells = []
        for pair in ("core->big", "mid->big"):
            sig = d["pairs"][pair]["signals"]
            cells.append(
                ", ".join(
                    f"{s} {_f(v['test']['apgr'])} ({_f(v['test']['pValue'], '.2f')})"
                    for s, v in sig.items()
                )
            )
        out.append(f"| {name} | {cells[0]} | {cells[1]} |")
    out += [
        "",
        "| dataset | cascade signals (core, mid) | rate per layer | accuracy [95%] | minus big "
        "[95%] | answered by core / mid / big | compute | wall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, d in _sets(summary):
        c = d["cascade"]
        for rate, row in c["atRates"].items():
            by = " / ".join(f"{row['answeredBy'][layer]:.0%}" for layer in LAYERS)
            out.append(
                f"| {name} | {c['signals']['core']}, {c['signals']['mid']} | {rate} | "
                f"{_f(row['accuracy'])} {_ci(row['accuracyCi'])} | {_ci(row['minusBigCi'])} | "
                f"{by} | {row['computeShare']:.2f}x | {row['wallShare']:.2f}x |"
            )
    wake = summary.get("earlyWake") or {}
    if "test" in wake:
        out += [
            "",
            f"Early wake (prompt-only model, cut {wake['probabilityCut']} chosen on train for "
            f"{wake['chosenOnTrainFor']}; cold start {wake['coldStartSeconds']:.0f} s):",
            "",
            "| traffic | requests | escalated | already waking | early wakes | unneeded | "
            "wait saved per escalated request |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, w in wake["test"].items():
            out.append(
                f"| {name} | {w['requests']} | {_f(w['escalated'], '.1f')} | "
                f"{_f(w['alreadyWakingShare'], '.0%')} | {w['earlyWakes']} | "
                f"{_f(w['unneededShare'], '.0%')} | {_f(w['waitSavedSecondsPerEscalated'])} s |"
            )
    return "\n".join(out) + "\n"


def plot(summary: Mapping[str, Any], path: Path) -> None:
    """Per dataset: core->big and mid->big test curves of every signal (the one chosen on train
    bold, with its bootstrap band at the goal rates), the random line; and the cascade."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["datasets"])
    fig, axes = plt.subplots(len(names), 3, figsize=(15, 4.2 * len(names)), squeeze=False)
    colors = {
        "mean": "C0",
        "min": "C1",
        "firstK": "C2",
        "verify": "C3",
        "self": "C4",
        "learned": "C5",
        "learnedVerify": "C6",
    }
    for row, name in enumerate(names):
        d = summary["datasets"][name]
        for col, pair in enumerate(("core->big", "mid->big")):
            ax = axes[row][col]
            p = d["pairs"][pair]
            curve = p.get("curve")
            if curve:
                xs = [i / (len(curve) - 1) for i in range(len(curve))]
                ax.plot([0, 1], [curve[0], curve[-1]], "k--", label="random")
                chosen = p["chosenOnTrain"]
                ax.plot(
                    xs,
                    curve,
                    color=colors.get(chosen, "k"),
                    lw=2.5,
                    label=f"{chosen} (chosen on train), APGR {p['test']['apgr']:.2f}",
                )
                rates = [float(r) for r in p["atRates"]]
                lows = [p["atRates"][r]["accuracyCi"][0] for r in p["atRates"]]
                highs = [p["atRates"][r]["accuracyCi"][1] for r in p["atRates"]]
                ax.fill_between(
                    rates,
                    lows,
                    highs,
                    color=colors.get(chosen, "k"),
                    alpha=0.2,
                    label="95% interval",
                )
            ax.set_title(f"{name} (test, n={d['questions']['test']}): {pair}")
            ax.set_xlabel("share escalated")
            ax.set_ylabel("accuracy")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        ax = axes[row][2]
        c = d["cascade"]["atRates"]
        rates = [float(r) for r in c]
        ax.plot(rates, [c[r]["accuracy"] for r in c], "o-", label="cascade accuracy")
        ax.fill_between(
            rates, [c[r]["accuracyCi"][0] for r in c], [c[r]["accuracyCi"][1] for r in c], alpha=0.2
        )
        big = d["accuracy"]["big"]["test"]["value"]
        ax.axhline(big, color="k", ls=":", label=f"always big {big:.2f}")
        ax.plot(
            rates,
            [c[r]["computeShare"] for r in c],
            "s--",
            color="C3",
            label="compute vs always big",
        )
        ax.set_title(f"{name}: cascade core->mid->big, each judged layer escalating r")
        ax.set_xlabel("rate per judged layer (cut chosen on train)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "The bargain on the test split: SmolLM2-135M / Qwen2.5-Coder-0.5B / Qwen2.5-Coder-1.5B "
        "(Qwen models Apache-2.0, Qwen team, Alibaba Cloud)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
