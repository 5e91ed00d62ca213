"""What the bargain reads: the answer bank's questions with every policy's score, the learned
policies' models, and the choices made on the train split (each judged layer's signal, the cut
of every operating point). Nothing here is recorded: it is all from the committed bank.

The `learned` scores are the bank's own where `make bench-quality` wrote them into its shards
(out of fold on train, the model fitted on train for test), with that run's model files in
results/learned/. Where the bank has none yet, they are trained here the same way, once per bank
(`quality.learned_scores`, `quality.early_wake_figures`), and kept under the cache directory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onion_lab import bank, bank_replay, evaluation, quality, quality_report
from onion_lab.bargain import FIRST_K, LAYERS, Answer, EscalationPolicy
from onion_lab.paths import CACHE, RESULTS
from onion_router.learned import LearnedModel, prompt_features

MODEL_FILES = ("core", "mid", "core-prompt")  # the answer models of core and mid; the prompt model
# The threshold families: `self` is left out (a yes/no probe: its rate cannot be chosen, and the
# core never asked for help in the bank).
THRESHOLD_SIGNALS = ("mean", "min", "firstK", "verify")


@dataclass
class Learned:
    folder: Path  # core.json, mid.json, core-prompt.json, as the router loads them
    source: str  # "results/learned (make bench-quality)" or "trained here on train"
    wake_cut: float | None  # the early wake's probability cut, chosen on train
    prompt_model: LearnedModel | None


def load(folder: Path = bank.BANK) -> dict[str, list[quality.Question]]:
    _, questions, _ = quality.load(folder, quality.GradeCache())
    return questions


def bank_digest(folder: Path) -> str:
    parts = sorted(f"{p.relative_to(folder)}:{p.stat().st_size}" for p in bank.shards(folder))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _has_learned(questions: Mapping[str, list[quality.Question]]) -> bool:
    rows = [q.rows[layer] for qs in questions.values() for q in qs for layer in ("core", "mid")]
    return bool(rows) and all("learned" in r["scores"] for r in rows)


def learned(
    questions: Mapping[str, list[quality.Question]],
    folder: Path = bank.BANK,
    results: Path = RESULTS,
    say: Any = print,
) -> Learned | None:
    """Sets every core and mid row's `learned` score; the model files for the live router. None
    when they cannot be had (no prompt embedder for models that need one)."""
    shipped = results / "learned"
    if _has_learned(questions) and all((shipped / f"{n}.json").exists() for n in MODEL_FILES):
        summary = results / "quality.json"
        cut = None
        if summary.exists():
            cut = (json.loads(summary.read_text()).get("earlyWake") or {}).get("probabilityCut")
        model = LearnedModel.load(shipped / "core-prompt.json")
        cut = float(cut if cut is not None else model.meta.get("probability", 0.5))
        return Learned(shipped, "results/learned (make bench-quality)", cut, model)
    cache = CACHE / "bargain-learned" / bank_digest(folder)
    scores_path = cache / "scores.json"
    embed, _ = quality_report.embedder()
    if not scores_path.exists():
        say("the bank has no learned scores yet: training them on train (once per bank, minutes)")
        scores, models = quality.learned_scores(questions, embed)
        _set(questions, {k: v for k, v in scores.items() if k[3] == "learned"})
        wake = quality.early_wake_figures(questions, embed)
        cache.mkdir(parents=True, exist_ok=True)
        for layer in ("core", "mid"):
            body = models[f"{layer}/learned"]["model"].to_json()
            (cache / f"{layer}.json").write_text(json.dumps(body) + "\n")
        if "promptModel" in wake:
            (cache / "core-prompt.json").write_text(json.dumps(wake["promptModel"].to_json()))
        rows = {"|".join(k[:3]): v for k, v in scores.items() if k[3] == "learned"}
        scores_path.write_text(json.dumps(rows) + "\n")
    else:
        rows = json.loads(scores_path.read_text())
        _set(questions, {(*k.split("|"), "learned"): v for k, v in rows.items()})
    prompt = cache / "core-prompt.json"
    model = LearnedModel.load(prompt) if prompt.exists() else None
    cut = float(model.meta["probability"]) if model is not None else None
    return Learned(cache, "trained here on train (the bank has no learned scores yet)", cut, model)


def _set(
    questions: Mapping[str, list[quality.Question]], scores: Mapping[tuple[str, ...], float]
) -> None:
    for qs in questions.values():
        for q in qs:
            for layer, row in q.rows.items():
                value = scores.get((q.dataset, q.id, layer, "learned"))
                if value is not None:
                    row["scores"]["learned"] = float(value)


def wake_probabilities(
    questions: Mapping[str, list[quality.Question]], model: LearnedModel
) -> dict[tuple[str, str], float]:
    """P(escalated) of every question's prompt, as the router's early wake computes it."""
    embed = quality_report.embedder()[0] if model.uses_embedding else None
    out = {}
    for qs in questions.values():
        for q in qs:
            text = q.rows["core"]["prompt"]
            out[(q.dataset, q.id)] = model.probability(
                prompt_features(text, embed(text) if embed else None)
            )
    return out


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
                reply = bank_replay.reply_of(row)
                out[(q.dataset, q.id, layer)] = Answer(
                    bool(row["correct"]),
                    seconds,
                    row["scores"],
                    int(row["completion_tokens"]),
                    reply.prefill_seconds + FIRST_K * reply.token_seconds,
                )
    return out


def _score(row: Mapping[str, Any], signal: str) -> float:
    value = row["scores"].get(signal)
    return float("nan") if value is None else float(value)


def _train(
    questions: Mapping[str, list[quality.Question]], mix: Mapping[str, float]
) -> tuple[list[quality.Question], np.ndarray]:
    train = [
        (q, mix[name] / sum(1 for x in qs if x.split == "train"))
        for name, qs in questions.items()
        if name in mix
        for q in qs
        if q.split == "train"
    ]
    return [q for q, _ in train], np.array([w for _, w in train])


def choose_signals(
    questions: Mapping[str, list[quality.Question]], mix: Mapping[str, float]
) -> dict[str, str]:
    """Per judged layer, the threshold signal with the best APGR into the next layer out on the
    train split, each dataset weighted as the mix weighs it."""
    train, weights = _train(questions, mix)
    # Resampled by the mix's weights, so that APGR weighs the datasets as the traffic does.
    pick = np.random.default_rng(0).choice(len(train), size=4000, p=weights / weights.sum())
    signals: dict[str, str] = {}
    for weak, strong in (("core", "mid"), ("mid", "big")):
        weak_ok = np.array([float(train[i].rows[weak]["correct"]) for i in pick])
        strong_ok = np.array([float(train[i].rows[strong]["correct"]) for i in pick])
        best, best_apgr = "mean", -1.0
        for signal in THRESHOLD_SIGNALS:
            scores = np.array([_score(train[i].rows[weak], signal) for i in pick])
            value = evaluation.apgr(weak_ok, strong_ok, scores)
            if value is not None and value > best_apgr:
                best, best_apgr = signal, value
        signals[weak] = best
    return signals


def cuts_for(
    questions: Mapping[str, list[quality.Question]],
    mix: Mapping[str, float],
    chosen: Mapping[str, str],
    rate: float,
) -> dict[str, evaluation.Cut]:
    """The cuts of a cascade on train: the core escalates `rate` of all requests, mid `rate` of
    what the core escalated."""
    train, weights = _train(questions, mix)
    scores = [
        np.array([_score(q.rows[layer], chosen[layer]) for q in train]) for layer in LAYERS[:2]
    ]
    return dict(zip(LAYERS[:2], evaluation.cascade_cuts(scores, rate, weights), strict=True))


def policies(
    questions: Mapping[str, list[quality.Question]],
    mix: Mapping[str, float],
    signals: Mapping[str, str],
    rates: Sequence[float],
    with_learned: bool,
    with_early_wake: bool,
) -> list[EscalationPolicy]:
    """always-big and always-core, then each family (the train-chosen signals; learned, with and
    without early wake) at each rate, with a fixed threshold (train's cut) and with targetRate."""
    out = [EscalationPolicy("always big", "big"), EscalationPolicy("always core", "core")]
    families: list[tuple[dict[str, str], bool]] = [(dict(signals), False)]
    if with_learned:
        families.append(({"core": "learned", "mid": "learned"}, False))
        if with_early_wake:
            families.append(({"core": "learned", "mid": "learned"}, True))
    for chosen, wake in families:
        label = "/".join(chosen[layer] for layer in LAYERS[:2])
        for rate in rates:
            cuts = cuts_for(questions, mix, chosen, rate)
            for mode in ("fixed", "targetRate"):
                kind = "threshold" if mode == "fixed" else "targetRate"
                name = f"{label} {kind} {rate:.1f}" + (" + early wake" if wake else "")
                out.append(EscalationPolicy(name, mode, chosen, rate, wake, cuts))
    return out
