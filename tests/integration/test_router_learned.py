"""Policy `learned`, early wake from the prompt, and the decision log, through the real router
and the openai SDK, with TGI-protocol test servers as the layers and an operator double."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from onion_lab.waiting import wait_until
from onion_router.learned import LearnedModel
from tests.support.fake_tgi import FakeTGI, Script
from tests.support.router_server import ROUTER_BIN, OperatorDouble, RouterServer, router_layer

SURE = Script(tokens=["Paris", "."], logprob=-0.05)
UNSURE = Script(tokens=["Maybe", " Lyon", "?"], logprob=-2.5)


def model_file(path: Path, kind: str, weights: dict[str, float], intercept: float = 0.0) -> str:
    """A learned-policy file as onion-router train writes it (standardised features)."""
    names = sorted(weights)
    model = LearnedModel(
        kind=kind,
        features=tuple(names),
        mean=tuple(0.0 for _ in names),
        scale=tuple(1.0 for _ in names),
        weights=tuple(weights[n] for n in names),
        intercept=intercept,
        embedding=None,
        meta={"test": True},
    )
    path.write_text(json.dumps(model.to_json()))
    return str(path)


@pytest.fixture
def core() -> Iterator[FakeTGI]:
    with FakeTGI(SURE, name="core") as server:
        server.by_word["unsure"] = UNSURE
        yield server


@pytest.fixture
def mid() -> Iterator[FakeTGI]:
    with FakeTGI(Script(tokens=["mid", " answer"], logprob=-0.05), name="mid") as server:
        yield server


def config(core: FakeTGI, mid: FakeTGI, escalation: dict[str, object], **extra: object) -> dict:
    return {
        "heartbeatSeconds": 0.2,
        "demandRenewSeconds": 0.3,
        "layers": [
            router_layer("core", core.url, escalation=escalation),
            router_layer(
                "mid", mid.url, managed=True, lease="onion-mid-demand", wakeTimeoutSeconds=20
            ),
        ],
        **extra,
    }


def ask(router: RouterServer, text: str):  # type: ignore[no-untyped-def]
    return router.openai().chat.completions.with_raw_response.create(
        model="onion", messages=[{"role": "user", "content": text}]
    )


def test_a_learned_model_escalates_the_answers_it_does_not_trust(
    core: FakeTGI, mid: FakeTGI, tmp_path: Path
) -> None:
    # P(stands) rises with the mean token logprob: -0.05 -> 0.99, -2.5 -> 0.08.
    path = model_file(tmp_path / "core.json", "answer", {"lp_mean": 2.0}, intercept=2.5)
    escalation = {"policy": "learned", "model": {"path": path}, "threshold": 0.5}
    link = OperatorDouble({"mid": "Ready"})
    with RouterServer(config(core, mid, escalation), link) as router:
        assert ask(router, "capital of France?").headers["x-onion-path"] == "core"
        assert ask(router, "unsure: capital of France?").headers["x-onion-path"] == "core,mid"
    # The router asked the core for the alternatives the model's features read.
    assert core.stats.requests[-1]["top_logprobs"] == 5
    assert core.stats.requests[-1]["logprobs"] is True


def test_early_wake_from_the_prompt_starts_the_next_layer_before_the_core_answers(
    core: FakeTGI, mid: FakeTGI, tmp_path: Path
) -> None:
    core.by_word["unsure"] = Script(
        tokens=[f" w{i}" for i in range(8)], logprob=-2.5, first_delay=1.5
    )
    # Long prompts are the ones that get escalated, says this prompt model.
    prompt = model_file(tmp_path / "p.json", "prompt", {"prompt_tokens_log": 4.0}, -10.0)
    escalation = {
        "policy": "confidence",
        "threshold": -1.0,
        "earlyWake": {"model": {"path": prompt}, "probability": 0.6},
    }
    link = OperatorDouble({"mid": "Dormant"})
    with RouterServer(config(core, mid, escalation), link) as router, ThreadPoolExecutor(1) as p:
        assert ask(router, "short?").headers["x-onion-path"] == "core"
        assert not link.renewed("onion-mid-demand")  # a short prompt wakes nothing
        started = time.monotonic()
        long = "unsure: " + " ".join(f"word{i}" for i in range(60))
        held = p.submit(ask, router, long)
        wait_until(lambda: link.renewed("onion-mid-demand"), what="demand for mid")
        # Recorded before the core's first byte (it waits 1.5 s before answering at all).
        assert link.renewals[0][0] - started < 1.0
        link.set_phase("mid", "Ready")
        assert held.result(timeout=20).headers["x-onion-path"] == "core,mid"
        metrics = httpx.get(f"{router.url}/metrics").text
        assert 'onion_router_early_wakes_total{layer="mid"} 1.0' in metrics


def test_the_decision_log_has_each_judged_decision_with_its_features(
    core: FakeTGI, mid: FakeTGI, tmp_path: Path
) -> None:
    log = tmp_path / "decisions.jsonl"
    escalation = {"policy": "confidence", "threshold": -1.0}
    link = OperatorDouble({"mid": "Ready"})
    extra = {"decisionLog": {"path": str(log)}, "embedder": str(tmp_path / "no-embedder")}
    with RouterServer(config(core, mid, escalation, **extra), link) as router:
        ask(router, "capital of France?")
        ask(router, "unsure: capital of France?")
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["answeredBy"] for e in entries] == ["core", "mid"]
    assert entries[1]["path"] == ["core", "mid"]
    first, second = entries[0]["decisions"][0], entries[1]["decisions"][0]
    assert (first["layer"], first["escalated"], second["escalated"]) == ("core", False, True)
    assert second["score"] == pytest.approx(-2.5)
    assert second["features"]["lp_mean"] == pytest.approx(-2.5)
    assert "prompt_tokens_log" in second["features"]
    assert all("prompt" not in e for e in entries)  # no prompt text unless asked
    assert entries[0]["requestId"] and entries[0]["requestId"] != entries[1]["requestId"]


def test_a_missing_or_wrong_model_file_stops_the_router_with_a_clear_error(
    core: FakeTGI, mid: FakeTGI, tmp_path: Path
) -> None:
    prompt = model_file(tmp_path / "p.json", "prompt", {"prompt_tokens_log": 1.0})
    cases = [
        ({"policy": "learned", "model": {"path": str(tmp_path / "nope.json")}}, "cannot read"),
        ({"policy": "learned", "model": {"path": prompt}}, "is a prompt model"),
    ]
    for escalation, message in cases:
        path = tmp_path / "config.yaml"
        body = config(core, mid, escalation, listen={"host": "127.0.0.1", "port": 0})
        path.write_text(yaml.safe_dump(body))
        done = subprocess.run(
            [str(ROUTER_BIN), "--config", str(path)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode != 0
        assert message in done.stderr, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
