"""The bargain, measured from the answer bank: every figure of `make bench-quality`.

Everything chosen (the signal of each pair, the cut of each operating point, the learned models'
weights, the early-wake probability) is chosen on the `train` split; every headline figure is
measured on `test` only. Intervals are 95% bootstrap intervals over questions; p-values are
permutation tests against random escalation.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onion_lab import bank, evaluation, recorder, signals
from onion_lab.datasets import DATASETS, Dataset
from onion_lab.evaluation import Array, Cut
from onion_lab.paths import CACHE
from onion_router.learned import answer_features, prompt_features

LAYERS = recorder.NAMES
PAIRS = (("core", "big"), ("mid", "big"), ("core", "mid"))
RATES = (0.1, 0.2, 0.3, 0.4, 0.5)
HEADLINE_RATE = 0.3
BASE_SIGNALS = ("mean", "min", "firstK", "verify", "self")
LEARNED = ("learned", "learnedVerify")  # without and with verify's P(yes) as a feature
SIGNALS = (*BASE_SIGNALS, *LEARNED)
GRADER_VERSION = "strict-1"  # bump when a grader changes: cached grades are then redone
EMBEDDER_PARAMETERS = 22.7e6  # all-MiniLM-L6-v2, the learned policies' prompt embedding
Embed = Callable[[str], Sequence[float]]


# --- the bank, current rows only -------------------------------------------------------------


def current_keys(manifest: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """{dataset: {key: layer}} of the rows the bank's current models and prompts would have."""
    shas = {layer["layer"]: layer["sha256"] for layer in manifest["layers"]}
    out: dict[str, dict[str, str]] = {}
    for name, dataset in DATASETS.items():
        keys = out.setdefault(name, {})
        for item in dataset.items():
            request = recorder.answer_request(dataset, item)
            for layer, sha in shas.items():
                keys[bank.request_key(sha, request)] = layer
    return out


@dataclass
class Question:
    dataset: str
    id: str
    split: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)


# --- grades, kept fresh --------------------------------------------------------------------------


class GradeCache:
    """Strict grades by (dataset, id, answer, grader version), outside the repo: re-grading the
    whole bank (HumanEval runs every answer's tests) takes a minute once, then seconds."""

    def __init__(self, path: Path = CACHE / "bank-grades.jsonl") -> None:
        self.path = path
        self.data: dict[str, list[Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                key, value = json.loads(line)
                self.data[key] = value

    def grade(self, dataset: Dataset, question_id: str, answer: str) -> tuple[bool, bool, str]:
        digest = hashlib.sha256(answer.encode()).hexdigest()
        key = f"{GRADER_VERSION}|{dataset.name}|{question_id}|{digest}"
        if key not in self.data:
            g = dataset.grade(dataset.item(question_id), answer)
            self.data[key] = [g.correct, g.lenient, g.detail]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as out:
                out.write(json.dumps([key, self.data[key]]) + "\n")
        correct, lenient, detail = self.data[key]
        return bool(correct), bool(lenient), str(detail)


def refreshed(row: Mapping[str, Any], grades: GradeCache) -> dict[str, Any]:
    """The row with today's strict grade, its prompt text and every score but the learned ones
    (which need the whole split to train on)."""
    dataset = DATASETS[row["dataset"]]
    correct, lenient, detail = grades.grade(dataset, row["id"], row["answer"])
    out = dict(row)
    out.update(correct=correct, lenient=lenient, grade_detail=detail)
    out["prompt"] = dataset.item(row["id"]).question
    learned = {k: v for k, v in (row.get("scores") or {}).items() if k in LEARNED}
    out["scores"] = {**signals.scores(out), **learned}
    return out


# --- the learned policies: trained on train, out of fold on train, predicted on test ------------


def features(row: Mapping[str, Any], embed: Embed | None, with_verify: bool) -> dict[str, float]:
    p_yes = row["scores"].get("verify") if with_verify else None
    out = answer_features(row["logprobs"], row["top_logprobs"], row["finish_reason"], p_yes)
    out.update(prompt_features(row["prompt"], embed(row["prompt"]) if embed else None))
    return out


def stands(row: Mapping[str, Any], next_row: Mapping[str, Any]) -> int:
    """What a learned policy predicts of a layer's answer: 1 when escalating it would not help
    (it is right, or the next layer is wrong too), as RouteLLM's routers learn from preferences;
    the bank has every layer's answer, so it knows. (Trained on a decision log, where only the
    answering layer's grade is known, the label is that grade.)"""
    return int(bool(row["correct"]) or not bool(next_row["correct"]))


def learned_scores(
    questions: Mapping[str, list[Question]], embed: Embed | None
) -> tuple[dict[tuple[str, str, str, str], float], dict[str, Any]]:
    """`learned` and `learnedVerify` for every judged row: one model per judged layer, trained
    on the train rows of every dataset (a router learns from all its traffic); train rows get
    out-of-fold predictions, test rows the prediction of the model fitted on all train rows."""
    from onion_router import train

    scores: dict[tuple[str, str, str, str], float] = {}
    models: dict[str, Any] = {}
    for index, layer in enumerate(LAYERS[:-1]):
        nxt = LAYERS[index + 1]
        pairs = [(q.rows[layer], q.rows[nxt]) for qs in questions.values() for q in qs]
        train_pairs = [p for p in pairs if p[0]["split"] == "train"]
        train_rows = [r for r, _ in train_pairs]
        test_rows = [r for r, _ in pairs if r["split"] == "test"]
        labels = [stands(r, n) for r, n in train_pairs]
        for name, with_verify in (("learned", False), ("learnedVerify", True)):
            x_train = [features(r, embed, with_verify) for r in train_rows]
            if len(set(labels)) < 2:
                continue
            oof = train.out_of_fold(x_train, labels, "answer")
            model = train.fit(x_train, labels, "answer", {"layer": layer, "signal": name})
            for r, p in zip(train_rows, oof, strict=True):
                scores[(r["dataset"], r["id"], layer, name)] = p
            test_x = [features(r, embed, with_verify) for r in test_rows]
            for r, x in zip(test_rows, test_x, strict=True):
                scores[(r["dataset"], r["id"], layer, name)] = model.probability(x)
            models[f"{layer}/{name}"] = {
                "features": len(model.features),
                "embedding": embed is not None,
                "trainExamples": len(labels),
                "C": model.meta["C"],
                "auc": {
                    "trainOutOfFold": _auc(labels, oof),
                    "test": _auc(
                        [int(r["correct"]) for r in test_rows],
                        [model.probability(x) for x in test_x],
                    ),
                },
                "model": model,
            }
    return scores, models


def _auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return round(wins / (len(pos) * len(neg)), 4)


# --- one dataset's split as arrays ---------------------------------------------------------------


def _cost(parameters: float, prompt_tokens: float, completion_tokens: float) -> float:
    """The compute proxy of one call: 2 x parameters x (prompt + generated tokens)."""
    return 2.0 * parameters * (prompt_tokens + completion_tokens)


@dataclass
class Split:
    ids: list[str]
    ok: dict[str, Array]
    lenient: dict[str, Array]
    capped: dict[str, Array]
    scores: dict[str, dict[str, Array]]
    compute: dict[str, dict[str, Array]]  # per layer: the policy's compute for one question
    seconds: dict[str, dict[str, Array]]

    @property
    def n(self) -> int:
        return len(self.ids)


def policy_costs(row: Mapping[str, Any], signal: str) -> tuple[float, float]:
    """(compute proxy, wall seconds) of asking a layer under a policy: the answer, plus the
    probes the policy needs; `self` answers under its instruction (its probe's prompt), and a
    layer that asked for help stops at the sentinel."""
    params = recorder.PARAMETERS[row["layer"]]
    compute = _cost(params, row["prompt_tokens"], row["completion_tokens"])
    seconds = float(row["seconds"])
    probes = row.get("probes") or {}
    if signal in ("verify", "learnedVerify") and "verify" in probes:
        v = probes["verify"]
        compute += _cost(params, v["prompt_tokens"], v["completion_tokens"])
        seconds += float(v["seconds"])
    if signal == "self" and "self" in probes:
        s = probes["self"]
        generated = s["completion_tokens"] if s["asked"] else row["completion_tokens"]
        compute = _cost(params, s["prompt_tokens"], generated)
        seconds = float(s["seconds"]) if s["asked"] else seconds
    if signal in LEARNED:
        compute += _cost(EMBEDDER_PARAMETERS, row["prompt_tokens"], 0)
    return compute, seconds


def as_split(questions: Sequence[Question]) -> Split:
    ids = [q.id for q in questions]

    def column(layer: str, get: Callable[[dict[str, Any]], float]) -> Array:
        return np.array([float(get(q.rows[layer])) for q in questions])

    def score(value: Any) -> float:
        return float("nan") if value is None else float(value)

    scores, compute, seconds = {}, {}, {}
    for layer in LAYERS:
        scores[layer] = {
            s: column(layer, lambda r, s=s: score(r["scores"].get(s))) for s in SIGNALS
        }
        compute[layer], seconds[layer] = {}, {}
        for s in ("answer", *SIGNALS):
            pairs = [policy_costs(q.rows[layer], "mean" if s == "answer" else s) for q in questions]
            compute[layer][s] = np.array([c for c, _ in pairs])
            seconds[layer][s] = np.array([t for _, t in pairs])
    return Split(
        ids,
        {layer: column(layer, lambda r: r["correct"]) for layer in LAYERS},
        {layer: column(layer, lambda r: r["lenient"]) for layer in LAYERS},
        {layer: column(layer, lambda r: r["finish_reason"] == "length") for layer in LAYERS},
        scores,
        compute,
        seconds,
    )


# --- figures ----------------------------------------------------------------------------------


def _r(value: float | None, places: int = 4) -> float | None:
    return (
        None
        if value is None or (isinstance(value, float) and math.isnan(value))
        else round(value, places)
    )


def mean_ci(values: Array, seed: int = 0) -> dict[str, Any]:
    interval = evaluation.bootstrap(lambda v: float(v.mean()), [values], seed=seed)
    return {"value": _r(float(values.mean())), "ci": interval.pair() if interval else None}


def signal_figures(split: Split, weak: str, strong: str, signal: str) -> dict[str, Any]:
    args = (split.ok[weak], split.ok[strong], split.scores[weak][signal])
    value = evaluation.apgr(*args)
    interval = evaluation.bootstrap(evaluation.apgr, list(args)) if value is not None else None
    return {
        "apgr": _r(value),
        "apgrCi": interval.pair() if interval else None,
        "pValue": _r(evaluation.permutation_p(*args)) if value is not None else None,
    }


def operating_point(
    train: Split, test: Split, weak: str, strong: str, signal: str, rate: float
) -> dict[str, Any]:
    """The cut that escalates `rate` of train's answers, applied to test: what a router would
    do with that fixed threshold (or with targetRate once settled)."""
    cut = evaluation.cut_for_rate(train.scores[weak][signal], rate)

    def accuracy(weak_ok: Array, strong_ok: Array, scores: Array) -> float:
        up = cut.escalation(scores)
        return float((weak_ok * (1 - up) + strong_ok * up).mean())

    def gap(weak_ok: Array, strong_ok: Array, scores: Array, big_ok: Array) -> float:
        return accuracy(weak_ok, strong_ok, scores) - float(big_ok.mean())

    arrays = [test.ok[weak], test.ok[strong], test.scores[weak][signal]]
    up = cut.escalation(test.scores[weak][signal])
    big = test.compute["big"]["answer"].sum()
    compute = (test.compute[weak][signal] + up * test.compute[strong]["answer"]).sum() / big
    wall = (test.seconds[weak][signal] + up * test.seconds[strong]["answer"]).sum()
    acc_ci = evaluation.bootstrap(accuracy, arrays)
    gap_ci = evaluation.bootstrap(gap, [*arrays, test.ok["big"]])
    realized = float(up.mean())
    return {
        "targetRate": rate,
        "threshold": _r(cut.threshold, 6),
        "tieShare": _r(cut.tie_share),
        "escalated": _r(realized),
        "accuracy": _r(accuracy(*arrays)),
        "accuracyCi": acc_ci.pair() if acc_ci else None,
        "randomAtThatRate": _r(
            float(test.ok[weak].mean() * (1 - realized) + test.ok[strong].mean() * realized)
        ),
        "minusBig": _r(gap(*arrays, test.ok["big"])),
        "minusBigCi": gap_ci.pair() if gap_ci else None,
        "computeShare": _r(float(compute)),
        "wallShare": _r(float(wall / test.seconds["big"]["answer"].sum())),
    }


def pair_figures(train: Split, test: Split, weak: str, strong: str) -> dict[str, Any]:
    table = {}
    for signal in SIGNALS:
        if np.isnan(train.scores[weak][signal]).all():
            continue
        train_apgr = evaluation.apgr(train.ok[weak], train.ok[strong], train.scores[weak][signal])
        table[signal] = {
            "trainApgr": _r(train_apgr),
            "test": signal_figures(test, weak, strong, signal),
        }
    ranked = [s for s in table if table[s]["trainApgr"] is not None]
    chosen = max(ranked, key=lambda s: table[s]["trainApgr"]) if ranked else None
    out: dict[str, Any] = {"signals": table, "chosenOnTrain": chosen}
    if chosen is None:
        return out
    points = evaluation.curve(test.ok[weak], test.ok[strong], test.scores[weak][chosen])
    out["test"] = {"signal": chosen, **table[chosen]["test"]}
    out["atRates"] = {}
    for rate in RATES:

        def at(w: Array, s: Array, sc: Array, rate: float = rate) -> float:
            return evaluation.at_rate(evaluation.curve(w, s, sc), rate)

        interval = evaluation.bootstrap(
            at, [test.ok[weak], test.ok[strong], test.scores[weak][chosen]]
        )
        lo, hi = float(points[0]), float(points[-1])
        out["atRates"][f"{rate:.1f}"] = {
            "accuracy": _r(evaluation.at_rate(points, rate)),
            "accuracyCi": interval.pair() if interval else None,
            "random": _r(lo + rate * (hi - lo)),
        }
    out["curve"] = [_r(float(v)) for v in points]
    out["operatingPoints"] = {
        f"{rate:.1f}": operating_point(train, test, weak, strong, chosen, rate) for rate in RATES
    }
    return out


def cascade_figures(train: Split, test: Split, chosen: Mapping[str, str]) -> dict[str, Any]:
    """core -> mid -> big, each judged layer with the signal chosen on train for its pair into
    the next layer, escalating `rate` of its own traffic by cuts set on train."""
    judged = LAYERS[:-1]
    policy = {layer: chosen.get(layer, "answer") for layer in LAYERS}  # the outermost: no probe
    big = LAYERS.index("big")
    out: dict[str, Any] = {"signals": dict(chosen), "atRates": {}}
    for rate in RATES:
        cuts = evaluation.cascade_cuts([train.scores[j][policy[j]] for j in judged], rate)

        def accuracy(*arrays: Array, cuts: list[Cut] = cuts) -> float:
            oks, scores = arrays[: len(LAYERS)], arrays[len(LAYERS) :]
            answering, _ = evaluation.cascade_answering(list(scores), cuts)
            return float(sum(answering[i] * ok for i, ok in enumerate(oks)).mean())

        def minus_big(*arrays: Array) -> float:
            return accuracy(*arrays) - float(arrays[big].mean())

        oks = [test.ok[layer] for layer in LAYERS]
        arrays = oks + [test.scores[j][policy[j]] for j in judged]
        answering, visited = evaluation.cascade_answering(arrays[len(LAYERS) :], cuts)
        spent = {
            what: sum(
                visited[i] * getattr(test, what)[layer][policy[layer]]
                for i, layer in enumerate(LAYERS)
            ).sum()
            / getattr(test, what)["big"]["answer"].sum()
            for what in ("compute", "seconds")
        }
        interval = evaluation.bootstrap(accuracy, arrays)
        gap = evaluation.bootstrap(minus_big, arrays)
        out["atRates"][f"{rate:.1f}"] = {
            "accuracy": _r(accuracy(*arrays)),
            "accuracyCi": interval.pair() if interval else None,
            "minusBig": _r(minus_big(*arrays)),
            "minusBigCi": gap.pair() if gap else None,
            "answeredBy": {layer: _r(float(answering[i].mean())) for i, layer in enumerate(LAYERS)},
            "computeShare": _r(float(spent["compute"])),
            "wallShare": _r(float(spent["seconds"])),
            "cuts": [[_r(c.threshold, 6), _r(c.tie_share)] for c in cuts],
        }
    return out


def dataset_figures(train: Split, test: Split) -> dict[str, Any]:
    accuracy = {}
    for layer in LAYERS:
        accuracy[layer] = {
            "test": mean_ci(test.ok[layer]),
            "testLenient": _r(float(test.lenient[layer].mean())),
            "train": _r(float(train.ok[layer].mean())),
            "capHits": _r(float(np.concatenate([train.capped[layer], test.capped[layer]]).mean())),
        }
    pairs = {f"{w}->{s}": pair_figures(train, test, w, s) for w, s in PAIRS}
    chosen = {
        "core": pairs["core->mid"].get("chosenOnTrain") or "mean",
        "mid": pairs["mid->big"].get("chosenOnTrain") or "mean",
    }
    return {
        "questions": {"train": train.n, "test": test.n},
        "accuracy": accuracy,
        "pairs": pairs,
        "cascade": cascade_figures(train, test, chosen),
    }


# --- early wake: the next layer woken from the prompt alone --------------------------------------

MAX_UNNEEDED = 0.15  # at most this share of early wakes may turn out not needed (chosen on train)
DEMO_COLD_START_SECONDS = 6.0  # examples/demo-local.yaml: mid's pods turn Ready after 6 s


def early_wake_figures(
    questions: Mapping[str, list[Question]], embed: Embed | None
) -> dict[str, Any]:
    """Early wake on mixed traffic (every dataset's questions, pooled): the core's policy is
    `learned` escalating HEADLINE_RATE of the requests, its cut chosen on train (out-of-fold
    scores there); a prompt-only model, P(the core's answer will be escalated), trained on
    train, its probability cut chosen on train for at most MAX_UNNEEDED unneeded wakes;
    measured on test, pooled and per dataset."""
    from onion_router import train

    pooled = {
        part: [q for qs in questions.values() for q in qs if q.split == part]
        for part in ("train", "test")
    }

    def learned(qs: Sequence[Question]) -> Array:
        values = [q.rows["core"]["scores"].get("learned") for q in qs]
        return np.array([np.nan if v is None else float(v) for v in values])

    cut = evaluation.cut_for_rate(learned(pooled["train"]), HEADLINE_RATE)
    up = {part: cut.escalation(learned(qs)) for part, qs in pooled.items()}
    prompts = {
        part: [
            prompt_features(
                q.rows["core"]["prompt"], embed(q.rows["core"]["prompt"]) if embed else None
            )
            for q in qs
        ]
        for part, qs in pooled.items()
    }
    if len({int(p >= 0.5) for p in up["train"]}) < 2:
        return {"note": "the core's policy escalated all or none of train: nothing to learn"}
    model, wake = train.fit_early_wake(
        prompts["train"],
        list(up["train"]),
        MAX_UNNEEDED,
        {"layer": "core", "predicts": f"escalated by learned at {HEADLINE_RATE:.0%}"},
    )
    p_test = np.array([model.probability(x) for x in prompts["test"]])
    seconds = np.array([float(q.rows["core"]["seconds"]) for q in pooled["test"]])
    names = np.array([q.dataset for q in pooled["test"]])
    figures = {"all": _wake_measure(p_test >= wake, up["test"], seconds)}
    for name in questions:
        mask = names == name
        figures[name] = _wake_measure(p_test[mask] >= wake, up["test"][mask], seconds[mask])
    return {
        "promptModel": model,
        "corePolicy": f"learned, escalating {HEADLINE_RATE:.0%} by train's cut",
        "model": {
            "features": len(model.features),
            "embedding": embed is not None,
            "trainExamples": len(up["train"]),
            "C": model.meta["C"],
            "aucTest": _auc([int(v >= 0.5) for v in up["test"]], list(p_test)),
        },
        "probabilityCut": _r(float(wake)),
        "chosenOnTrainFor": f"at most {MAX_UNNEEDED:.0%} unneeded early wakes",
        "coldStartSeconds": DEMO_COLD_START_SECONDS,
        "test": figures,
    }


def _wake_measure(woken: Array, up: Array, core_seconds: Array) -> dict[str, Any]:
    escalated = float(up.sum())
    early = float(woken.sum())
    saved = np.minimum(DEMO_COLD_START_SECONDS, core_seconds) * woken * up
    return {
        "requests": len(up),
        "escalated": _r(escalated),
        "alreadyWakingShare": _r(float((woken * up).sum() / escalated)) if escalated else None,
        "earlyWakes": int(early),
        "unneededShare": _r(float((woken * (1 - up)).sum() / early)) if early else None,
        "waitSavedSecondsPerEscalated": _r(float(saved.sum() / escalated), 2)
        if escalated
        else None,
        "waitShareSaved": _r(float(saved.sum() / (escalated * DEMO_COLD_START_SECONDS)))
        if escalated
        else None,
    }


# --- the whole report ----------------------------------------------------------------------------


def load(
    folder: Path, grades: GradeCache
) -> tuple[dict[Path, list[dict[str, Any]]], dict[str, list[Question]], dict[str, Any]]:
    """The closed shards' rows, refreshed; the complete questions; the manifest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    keys = current_keys(manifest)
    shard_rows = {
        path: [refreshed(r, grades) for r in bank.read_shard(path)] for path in bank.shards(folder)
    }
    found: dict[tuple[str, str], Question] = {}
    for rows in shard_rows.values():
        for row in rows:
            if row["key"] in keys.get(row["dataset"], {}):
                q = found.setdefault(
                    (row["dataset"], row["id"]), Question(row["dataset"], row["id"], row["split"])
                )
                q.rows[row["layer"]] = row
    questions: dict[str, list[Question]] = {}
    for name, dataset in DATASETS.items():
        order = {item.id: i for i, item in enumerate(dataset.items())}
        done = [q for (d, _), q in found.items() if d == name and set(LAYERS) <= set(q.rows)]
        if done:
            questions[name] = sorted(done, key=lambda q: order[q.id])
    return shard_rows, questions, manifest


def report(
    folder: Path, embed: Embed | None, embedder: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every figure from the bank; the shards get their refreshed grades and scores (learned
    ones included), rewritten only where something changed. Returns (summary, models)."""
    grades = GradeCache()
    shard_rows, questions, manifest = load(folder, grades)
    learned, models = learned_scores(questions, embed)
    for rows in shard_rows.values():
        for row in rows:
            for name in LEARNED:
                value = learned.get((row["dataset"], row["id"], row["layer"], name))
                if value is not None:
                    row["scores"][name] = round(value, 6)
    rewritten = sum(bank.rewrite(path, rows) for path, rows in shard_rows.items())
    splits = {}
    for name, qs in questions.items():
        train = as_split([q for q in qs if q.split == "train"])
        test = as_split([q for q in qs if q.split == "test"])
        splits[name] = (train, test)
    datasets = {name: dataset_figures(*parts) for name, parts in splits.items()}
    # All datasets' questions as one traffic (what one router sees), each question once.
    pooled = [q for qs in questions.values() for q in qs]
    mixed = dataset_figures(
        as_split([q for q in pooled if q.split == "train"]),
        as_split([q for q in pooled if q.split == "test"]),
    )
    summary = {
        "method": "signals, cuts, learned weights and the early-wake cut chosen on train; every "
        "figure under `test` measured on the test split only; 95% bootstrap intervals over "
        f"questions ({evaluation.B_DEFAULT} resamples), permutation p-values against random "
        f"escalation ({evaluation.B_DEFAULT} permutations)",
        "grading": "strict: GSM8K the number on the final 'Answer:' line (none: wrong); "
        "HumanEval check() ran to its end (a nonce after it) in a sandbox with limits; BoolQ the "
        "first word. `testLenient` is a forgiving reading, labelled",
        "costProxy": "2 x parameters x (prompt + generated tokens) for every call a policy makes "
        "(rejected answers, verify and self probes, the learned policies' embedding), relative "
        "to always asking big; `wallShare` the same with the recorded seconds",
        "ladder": manifest["layers"],
        "engine": manifest["engine"],
        "embedder": dict(embedder) if embedder else None,
        "bankRows": sum(len(r) for r in shard_rows.values()),
        "shardsRewritten": rewritten,
        "learnedModels": {
            k: {kk: vv for kk, vv in v.items() if kk != "model"} for k, v in models.items()
        },
        "datasets": datasets,
        "pooled": mixed,
        "earlyWake": early_wake_figures(questions, embed),
    }
    files = {
        name.replace("/learned", "").replace("Verify", "-verify"): m["model"]
        for name, m in models.items()
    }
    prompt_model = summary["earlyWake"].pop("promptModel", None)
    if prompt_model is not None:
        files["core-prompt"] = prompt_model
    return summary, files
