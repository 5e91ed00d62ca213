"""Self-tuning thresholds, self-verification and `onion-router calibrate` on the real ladder:
SmolLM2-135M-Instruct as the core and Qwen2.5-Coder-0.5B-Instruct as the next layer, both on
llama.cpp's `llama-server`. Short answers keep the CI cost to seconds. (Tiny models: the
mechanism, not intelligence.)"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.fake_tgi import FakeTGI, Script
from tests.support.llama import llama_server, require_engine
from tests.support.router_server import ROUTER_BIN, RouterServer, router_layer

pytestmark = [pytest.mark.engine, pytest.mark.slow]

require_engine("smollm2", "qwen05")

QUESTIONS = [
    "What is the capital of France?",
    "What is 7 times 8?",
    "Name a primary colour.",
    "What is the boiling point of water in Celsius?",
    "Translate 'thank you' to Finnish.",
    "Who wrote Hamlet?",
    "What is the square root of 144?",
    "Name the largest planet of the solar system.",
    "What does CPU stand for?",
    "Spell 'onion' backwards.",
    "What is 123 plus 456?",
    "Which gas do plants take in?",
]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    logs = tmp_path_factory.mktemp("ladder")
    with (
        llama_server("smollm2", "core", logs / "core.log") as core,
        llama_server("qwen05", "mid", logs / "mid.log") as mid,
    ):
        yield {"core": core, "mid": mid}


def ask(router: RouterServer, question: str) -> str:
    raw = router.openai().chat.completions.with_raw_response.create(
        model="onion",
        messages=[{"role": "user", "content": question + " Answer in a few words."}],
        max_tokens=8,
        temperature=0,
    )
    return raw.headers["x-onion-layer"]


def test_target_rate_adapts_the_threshold_on_real_scores(ladder: dict[str, str]) -> None:
    # Start from a threshold that never escalates; after 4 real answers the router holds 50%.
    escalation = {
        "policy": "confidence",
        "score": "mean",
        "threshold": -50.0,
        "targetRate": 0.5,
        "window": 12,
        "minSamples": 4,
    }
    config = {
        "layers": [
            router_layer("core", ladder["core"], engine="llamacpp", escalation=escalation),
            router_layer("mid", ladder["mid"], engine="llamacpp"),
        ]
    }
    with RouterServer(config) as router:
        layers = [ask(router, q) for q in QUESTIONS]
        status = httpx.get(f"{router.url}/status").json()
        metrics = httpx.get(f"{router.url}/metrics").text
    assert layers[:4] == ["core"] * 4  # the configured threshold until minSamples
    escalated = layers[4:].count("mid")
    assert 1 <= escalated <= 7, layers  # about half of the 8 after it adapted
    core = status["layers"][0]
    assert core["adapting"] is True and core["targetRate"] == 0.5 and core["samples"] == 12
    assert -10 < core["threshold"] < 0  # a real mean logprob, not the configured -50
    assert core["escalationRate"] == pytest.approx(escalated / 12)
    assert f'onion_router_threshold{{layer="core"}} {core["threshold"]}' in metrics
    assert 'onion_router_escalation_rate{layer="core"}' in metrics


def test_verify_asks_the_layer_and_escalates_below_p_yes(ladder: dict[str, str]) -> None:
    with FakeTGI(Script(tokens=["outer"]), name="outer") as outer:
        for threshold, path in ((1.01, "core,outer"), (-0.01, "core")):
            escalation = {"policy": "verify", "threshold": threshold}
            config = {
                "layers": [
                    router_layer("core", ladder["mid"], engine="llamacpp", escalation=escalation),
                    router_layer("outer", outer.url),
                ]
            }
            with RouterServer(config) as router:
                raw = router.openai().chat.completions.with_raw_response.create(
                    model="onion",
                    messages=[{"role": "user", "content": "What is 2 + 2? Reply with a number."}],
                    max_tokens=4,
                    temperature=0,
                )
                metrics = httpx.get(f"{router.url}/metrics").text
            assert raw.headers["x-onion-path"] == path
            # One verification call per judged answer, to the same real model.
            assert 'onion_router_verify_seconds_count{layer="core"} 1.0' in metrics
    assert outer.stats.requests, "the escalated request reached the outer layer"


def test_calibrate_prints_the_distribution_and_writes_a_snippet(
    ladder: dict[str, str], tmp_path: Path
) -> None:
    config = {
        "layers": [
            router_layer(
                "core",
                ladder["core"],
                engine="llamacpp",
                escalation={"policy": "confidence", "score": "mean"},
            ),
            router_layer("mid", ladder["mid"], engine="llamacpp", escalation={"policy": "verify"}),
            router_layer("big", "http://127.0.0.1:9", engine="llamacpp"),  # never asked
        ]
    }
    (tmp_path / "router.yaml").write_text(yaml.safe_dump(config))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "{q}"}}\n' for q in QUESTIONS[:6]))
    snippet = tmp_path / "snippet.yaml"
    argv = [str(ROUTER_BIN), "calibrate", "--config", str(tmp_path / "router.yaml")]
    argv += ["--prompts", str(prompts), "--target-rate", "0.5", "--max-tokens", "8"]
    done = subprocess.run(
        [*argv, "--out", str(snippet)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[1:3]}
    assert rows["core"][1] == "6" and rows["mid"][1] == "6"  # every prompt scored
    spec = yaml.safe_load(snippet.read_text())
    core = spec["core"]["escalation"]
    assert core["policy"] == "confidence" and core["targetRate"] == 0.5 and core["threshold"] < 0
    (mid,) = spec["layers"]
    assert mid["name"] == "mid" and 0 <= mid["escalation"]["threshold"] <= 1  # a P(yes)


def test_calibrate_refuses_bad_input_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "router.yaml").write_text(
        yaml.safe_dump(
            {
                "layers": [
                    router_layer("core", "http://127.0.0.1:9"),
                    router_layer("big", "http://x"),
                ]
            }
        )
    )
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\nnot json\n')
    base = [str(ROUTER_BIN), "calibrate", "--config", str(tmp_path / "router.yaml")]
    bad_rate = subprocess.run(
        [*base, "--prompts", str(tmp_path / "p.jsonl"), "--target-rate", "1.5"],
        capture_output=True,
        text=True,
    )
    assert bad_rate.returncode == 2 and "between 0 and 1" in bad_rate.stderr
    bad_line = subprocess.run(
        [*base, "--prompts", str(tmp_path / "p.jsonl"), "--target-rate", "0.2"],
        capture_output=True,
        text=True,
    )
    assert bad_line.returncode == 2 and "p.jsonl:2" in bad_line.stderr
