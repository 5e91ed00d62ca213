"""`onion-router train`: the answer model and the early-wake prompt model, from the committed
answer bank and from a decision log with labels added (scikit-learn, the `train` extra)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from onion_lab.paths import RESULTS
from onion_router.learned import LearnedModel
from onion_router.train import main

BANK = RESULTS / "bank"
PROMPT_ONLY = {"prompt_tokens_log"}


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four shards of the committed bank's BoolQ rows (80 questions x 3 layers): the real
    format, small enough to train on in seconds."""
    folder = tmp_path_factory.mktemp("bank")
    (folder / "boolq").mkdir()
    for shard in sorted((BANK / "boolq").glob("*.jsonl.gz"))[:4]:
        shutil.copy(shard, folder / "boolq" / shard.name)
    return folder


def test_from_the_bank_both_models_and_the_chosen_wake_probability(
    small_bank: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answer, prompt = tmp_path / "core.json", tmp_path / "core-prompt.json"
    argv = ["--bank", str(small_bank), "--layer", "core", "--out", str(answer)]
    assert main([*argv, "--prompt-out", str(prompt), "--escalate-below", "0.5"]) == 0
    said = capsys.readouterr().out
    judged = LearnedModel.load(answer)
    wake = LearnedModel.load(prompt)
    assert judged.kind == "answer" and {"lp_mean", "lp_first_k"} <= set(judged.features)
    assert judged.meta["split"] == "train" and judged.meta["examples"] > 20
    # Only what is known before the core answers goes into the early-wake model.
    assert wake.kind == "prompt" and set(wake.features) == PROMPT_ONLY
    probability = wake.meta["probability"]
    assert f"earlyWake.probability {probability:.3f}" in said
    assert wake.meta["maxUnneeded"] == 0.15 and "P(right) < 0.5" in wake.meta["predicts"]
    # The same bank gives the same files (the folds are seeded).
    again = tmp_path / "again.json"
    assert main([*argv[:-1], str(again)]) == 0
    assert json.loads(again.read_text()) == json.loads(answer.read_text())


def _log(tmp_path: Path, n: int = 40) -> tuple[Path, Path]:
    """A decision log in the router's format, and labels a person added: an answer whose mean
    logprob is above -1 is right; the router escalated those below -1.2; long prompts were
    the ones it escalated."""
    rng = random.Random(3)
    log, labels = tmp_path / "decisions.jsonl", tmp_path / "labels.jsonl"
    entries, marks = [], []
    for i in range(n):
        lp = rng.uniform(-3, 0)
        escalated = lp < -1.2
        tokens = rng.uniform(4, 5) if escalated else rng.uniform(2, 3)
        features = {"lp_mean": lp, "prompt_tokens_log": tokens}
        decision = {"layer": "core", "policy": "learned", "score": 0.5, "threshold": 0.5}
        decision |= {"escalated": escalated, "features": features}
        entries.append({"requestId": f"r{i}", "decisions": [decision]})
        marks.append({"requestId": f"r{i}", "layer": "core", "correct": lp > -1})
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    labels.write_text("".join(json.dumps(m) + "\n" for m in marks[: n - 5]))  # 5 unlabelled
    return log, labels


def test_from_a_decision_log_with_labels(tmp_path: Path) -> None:
    log, labels = _log(tmp_path)
    answer, prompt = tmp_path / "a.json", tmp_path / "p.json"
    argv = ["--log", str(log), "--labels", str(labels), "--layer", "core"]
    assert main([*argv, "--out", str(answer), "--prompt-out", str(prompt)]) == 0
    judged = LearnedModel.load(answer)
    assert judged.meta["examples"] == 35  # only the labelled decisions
    assert judged.probability({"lp_mean": -0.2, "prompt_tokens_log": 3}) > 0.8
    assert judged.probability({"lp_mean": -2.5, "prompt_tokens_log": 3}) < 0.2
    wake = LearnedModel.load(prompt)
    assert set(wake.features) == PROMPT_ONLY and wake.meta["examples"] == 40
    assert wake.probability({"prompt_tokens_log": 4.5}) > wake.meta["probability"]
    assert wake.probability({"prompt_tokens_log": 2.5}) < wake.meta["probability"]


def test_clear_errors(small_bank: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, _ = _log(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["--log", str(log), "--layer", "core", "--out", str(tmp_path / "x.json")])
    assert exited.value.code == 2 and "--log needs --labels" in capsys.readouterr().err
    out = str(tmp_path / "y.json")
    assert main(["--bank", str(small_bank), "--layer", "nope", "--out", out]) == 2
    assert "no train rows of layer 'nope'" in capsys.readouterr().err
