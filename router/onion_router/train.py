"""`onion-router train`: fit a `learned` policy's models (onion_router/learned.py) with
scikit-learn, from the answer bank or from the router's own decision log with labels added.

    onion-router train --bank results/bank --layer core [--verify] --out core.json \
        [--prompt-out core-prompt.json --escalate-below 0.5 --max-unneeded 0.15]
    onion-router train --log decisions.jsonl --labels labels.jsonl --layer core --out core.json \
        [--prompt-out core-prompt.json --max-unneeded 0.15]

`--prompt-out` also writes the early-wake model: from the bank, "escalated" is the answer model's
out-of-fold P(right) below `--escalate-below` (the threshold the layer will use); from the log,
it is what the router decided. Its file records the wake probability chosen out of fold for at
most `--max-unneeded` unneeded early wakes; put it in the layer's `earlyWake.probability`.

The answer model predicts P(the layer's answer is right) from the answer's features and the
prompt's; the prompt model predicts P(the request will be escalated) from the prompt alone, the
early-wake signal. Both are logistic regressions whose regularisation is chosen by
cross-validation; the files are JSON (no pickle). Needs the `train` extra (scikit-learn) and,
for the prompt embedding, the `learned` extra and the embedder's files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from onion_router.learned import (
    EMBEDDING_PREFIX,
    LearnedModel,
    answer_features,
    prompt_features,
)

Embed = Callable[[str], Sequence[float]]


def _sklearn() -> Any:
    try:
        import numpy
        import sklearn  # noqa: F401
    except ImportError:
        raise SystemExit(
            "onion-router train needs scikit-learn: pip install 'onion-of-experts[train]'"
        ) from None
    from sklearn import linear_model, model_selection, preprocessing

    return linear_model, model_selection, preprocessing, numpy


def names_of(rows: Iterable[Mapping[str, float]]) -> list[str]:
    """Every feature seen, scalars first, then the embedding in order."""
    seen: set[str] = set()
    for row in rows:
        seen.update(row)
    scalars = sorted(n for n in seen if not n.startswith("emb"))
    embedding = sorted((n for n in seen if n.startswith("emb")), key=lambda n: int(n[3:]))
    return scalars + embedding


def _matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> list[list[float]]:
    return [[float(row.get(n, 0.0)) for n in names] for row in rows]


def fit(
    rows: Sequence[Mapping[str, float]],
    labels: Sequence[int],
    kind: str,
    meta: Mapping[str, Any] | None = None,
    embedding: Mapping[str, Any] | None = None,
    folds: int = 5,
) -> LearnedModel:
    """A standardised logistic regression, L2, its strength chosen by `folds`-fold CV on log
    loss; returned as the router's JSON model."""
    linear_model, model_selection, preprocessing, numpy = _sklearn()
    if len(set(labels)) < 2:
        raise ValueError(f"training a {kind} model needs both labels; all are {labels[0]}")
    names = names_of(rows)
    x = _matrix(rows, names)
    scaler = preprocessing.StandardScaler().fit(x)
    smallest = min(sum(1 for v in labels if v), sum(1 for v in labels if not v))
    cv = model_selection.StratifiedKFold(
        n_splits=max(2, min(folds, smallest)), shuffle=True, random_state=0
    )
    # The strength C on LogisticRegressionCV's default grid, chosen by CV on log loss; a grid
    # search over the plain estimator, whose API has stayed put across scikit-learn releases.
    search = model_selection.GridSearchCV(
        linear_model.LogisticRegression(max_iter=5000),
        {"C": [10.0**e for e in numpy.linspace(-4, 4, 12)]},
        cv=cv,
        scoring="neg_log_loss",
    ).fit(scaler.transform(x), list(labels))
    model = search.best_estimator_
    scale = [float(s) if s > 0 else 1.0 for s in scaler.scale_]
    return LearnedModel(
        kind=kind,
        features=tuple(names),
        mean=tuple(float(m) for m in scaler.mean_),
        scale=tuple(scale),
        weights=tuple(float(w) for w in model.coef_[0]),
        intercept=float(model.intercept_[0]),
        embedding=embedding,
        meta={
            **(meta or {}),
            "examples": len(labels),
            "positives": int(sum(labels)),
            "C": float(model.C),
        },
    )


def out_of_fold(
    rows: Sequence[Mapping[str, float]], labels: Sequence[int], kind: str, folds: int = 5
) -> list[float]:
    """Each example's probability from a model fitted without it (`folds` folds): scores that
    can be evaluated on the examples they came from."""
    _, model_selection, _, _ = _sklearn()
    out = [0.0] * len(rows)
    split = model_selection.StratifiedKFold(n_splits=folds, shuffle=True, random_state=1)
    for train, held in split.split(list(range(len(rows))), list(labels)):
        model = fit([rows[i] for i in train], [labels[i] for i in train], kind)
        for i in held:
            out[i] = model.probability(rows[i])
    return out


def wake_cut(
    probabilities: Sequence[float], escalated: Sequence[float], max_unneeded: float
) -> float:
    """The lowest probability at which an early wake is still needed (the request is in the end
    escalated) at least 1 - `max_unneeded` of the time, on held-out predictions: the most
    escalations caught within that budget. 1.01 (never wake early) if no cut keeps to it.
    `escalated` may be a probability (a tie split at random)."""
    best = 1.01
    pairs = sorted(zip(probabilities, escalated, strict=True), reverse=True)
    woken = needed = 0.0
    for index, (p, up) in enumerate(pairs):
        woken += 1
        needed += up
        last_of_value = index + 1 == len(pairs) or pairs[index + 1][0] < p
        if last_of_value and (woken - needed) / woken <= max_unneeded:
            best = p
    return best


def fit_early_wake(
    prompts: Sequence[Mapping[str, float]],
    escalated: Sequence[float],
    max_unneeded: float,
    meta: Mapping[str, Any] | None = None,
    embedding: Mapping[str, Any] | None = None,
) -> tuple[LearnedModel, float]:
    """The prompt model, P(escalated | prompt), and the probability above which the router wakes
    the next layer at once, chosen out of fold for at most `max_unneeded` unneeded wakes."""
    labels = [int(p >= 0.5) for p in escalated]
    oof = out_of_fold(prompts, labels, "prompt")
    cut = wake_cut(oof, escalated, max_unneeded)
    info = {**(meta or {}), "probability": cut, "maxUnneeded": max_unneeded}
    return fit(prompts, labels, "prompt", info, embedding), cut


# --- examples from the answer bank ----------------------------------------------------------


def bank_rows(folder: Path) -> Iterator[dict[str, Any]]:
    """The bank's rows (results/bank/<dataset>/*.jsonl.gz, one gzip member or many)."""
    for path in sorted(folder.glob("*/*.jsonl.gz")):
        data = path.read_bytes()
        while data:
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
            try:
                text = inflater.decompress(data)
            except zlib.error:
                break
            for line in text.decode().splitlines():
                if line.strip():
                    yield json.loads(line)
            if not inflater.eof:
                break
            data = inflater.unused_data


def row_features(row: Mapping[str, Any], embed: Embed | None, verify: bool) -> dict[str, float]:
    """A bank row's features, as the router computes them when it judges that answer."""
    p_yes = (row.get("scores") or {}).get("verify") if verify else None
    features = answer_features(row["logprobs"], row["top_logprobs"], row["finish_reason"], p_yes)
    prompt = row.get("prompt", "")
    features.update(prompt_features(prompt, embed(prompt) if embed else None))
    return features


def prompt_only(features: Mapping[str, float]) -> dict[str, float]:
    """The prompt's part of an answer's features (what is known before the layer answers)."""
    known = set(prompt_features("", None))
    return {k: v for k, v in features.items() if k in known or k.startswith(EMBEDDING_PREFIX)}


# --- examples from the router's decision log ----------------------------------------------------


def log_examples(log: Path, labels: Path, layer: str) -> tuple[list[dict[str, float]], list[int]]:
    """Decisions the router logged for `layer` (`decisionLog`), with the labels a person added:
    one JSON object a line, `{"requestId": ..., "layer": ..., "correct": true|false}`."""
    marks = {}
    for line in labels.read_text().splitlines():
        if line.strip():
            mark = json.loads(line)
            marks[(mark["requestId"], mark.get("layer", layer))] = bool(mark["correct"])
    rows, out = [], []
    for entry in _log_entries(log):
        for decision in entry.get("decisions", []):
            key = (entry["requestId"], decision["layer"])
            if decision["layer"] == layer and key in marks:
                rows.append({k: float(v) for k, v in decision["features"].items()})
                out.append(int(marks[key]))
    return rows, out


def log_escalations(log: Path, layer: str) -> tuple[list[dict[str, float]], list[float]]:
    """Every logged decision at `layer`: its prompt features and whether it escalated (no
    labels needed: the early-wake model predicts the router's own decision)."""
    rows, out = [], []
    for entry in _log_entries(log):
        for decision in entry.get("decisions", []):
            if decision["layer"] == layer:
                rows.append(prompt_only({k: float(v) for k, v in decision["features"].items()}))
                out.append(float(bool(decision["escalated"])))
    return rows, out


def _log_entries(log: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if log.suffix == ".gz" else open
    with opener(log, "rt") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onion-router train", description=__doc__.split("\n\n")[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bank", type=Path, help="an answer bank folder (results/bank)")
    source.add_argument("--log", type=Path, help="the router's decision log (JSON lines)")
    parser.add_argument("--labels", type=Path, help="with --log: labels, one JSON object a line")
    parser.add_argument("--layer", required=True, help="the layer whose answers are judged")
    parser.add_argument("--split", default="train", help="bank rows of this split (or 'all')")
    parser.add_argument(
        "--verify", action="store_true", help="use verify's P(yes) (the probe's cost)"
    )
    parser.add_argument(
        "--embedder", type=Path, help="the all-MiniLM-L6-v2 folder (prompt embedding)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the answer model's JSON file")
    parser.add_argument("--prompt-out", type=Path, help="also the early-wake prompt model's file")
    parser.add_argument(
        "--escalate-below",
        type=float,
        default=0.5,
        help="with --bank: the answer model's P(right) below which the layer escalates",
    )
    parser.add_argument(
        "--max-unneeded", type=float, default=0.15, help="early wakes allowed to be unneeded"
    )
    args = parser.parse_args(argv)
    embed: Embed | None = None
    embedding_meta = None
    if args.embedder is not None:
        from onion_router.embedding import Embedder

        embedder = Embedder(args.embedder)
        embed = embedder.embed
        embedding_meta = embedder.describe()
    if args.bank is not None:
        rows = [
            r
            for r in bank_rows(args.bank)
            if r["layer"] == args.layer and (args.split == "all" or r["split"] == args.split)
        ]
        if not rows:
            print(
                f"onion-router train: no {args.split} rows of layer {args.layer!r} in {args.bank}",
                file=sys.stderr,
            )
            return 2
        features = [row_features(r, embed, args.verify) for r in rows]
        labels = [int(bool(r["correct"])) for r in rows]
        meta = {"source": str(args.bank), "layer": args.layer, "split": args.split}
    else:
        if args.labels is None:
            parser.error("--log needs --labels")
        features, labels = log_examples(args.log, args.labels, args.layer)
        meta = {"source": str(args.log), "layer": args.layer}
    model = fit(features, labels, "answer", meta, embedding_meta)
    args.out.write_text(json.dumps(model.to_json(), indent=1) + "\n")
    print(f"wrote {args.out}: {len(model.features)} features, {len(labels)} examples")
    if args.prompt_out is not None:
        if args.bank is not None:
            oof = out_of_fold(features, labels, "answer")
            escalated = [float(p < args.escalate_below) for p in oof]
            prompts = [prompt_only(f) for f in features]
            predicts = f"escalated: the answer model's P(right) < {args.escalate_below}"
        else:
            prompts, escalated = log_escalations(args.log, args.layer)
            predicts = "escalated, as the router decided"
        wake, cut = fit_early_wake(
            prompts,
            escalated,
            args.max_unneeded,
            {**meta, "predicts": predicts},
            embedding_meta,
        )
        args.prompt_out.write_text(json.dumps(wake.to_json(), indent=1) + "\n")
        print(
            f"wrote {args.prompt_out}: {len(prompts)} examples, {sum(escalated):.0f} escalated; "
            f"earlyWake.probability {cut:.3f}"
            + (" (no cut keeps to --max-unneeded: never wakes early)" if cut > 1 else "")
        )
    return 0
