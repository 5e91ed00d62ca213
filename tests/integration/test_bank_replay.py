"""The bank replay engine (a test double of a model): a recorded answer comes back through the
openai SDK as it was recorded, streamed or not, with its probes; an unknown request gets a clear
404."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from onion_lab import bank
from onion_lab.bank_replay import pieces_of
from onion_lab.paths import REPO
from onion_lab.sockets import free_port

MESSAGES = [
    {"role": "system", "content": "Answer yes or no."},
    {"role": "user", "content": "Is water wet?\n\nAnswer yes or no:"},
]
VERIFY = [{"role": "user", "content": "Is the answer correct? ..."}]


def _sha(messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def _row() -> dict[str, object]:
    tokens = ["Yes", ",", " it", " is", "."]
    top = [[{"token": t, "logprob": -0.1}, {"token": "No", "logprob": -2.5}] for t in tokens]
    return {
        "dataset": "boolq",
        "id": "boolq/1",
        "split": "test",
        "layer": "core",
        "key": "k",
        "messages_sha256": _sha(MESSAGES),
        "answer": "Yes, it is.",
        "finish_reason": "stop",
        "prompt_tokens": 21,
        "completion_tokens": 5,
        "seconds": 0.05,
        "engine_ms": {"prompt": 20.0, "generation": 30.0},
        "logprobs": [-0.1] * 5,
        "top_logprobs": top,
        "probes": {
            "verify": {
                "messages_sha256": _sha(VERIFY),
                "answer": "Yes",
                "prompt_tokens": 40,
                "completion_tokens": 1,
                "seconds": 0.01,
                "engine_ms": {},
                "top_logprobs": [
                    [{"token": "Yes", "logprob": -0.2}, {"token": "No", "logprob": -1.7}]
                ],
            }
        },
    }


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[str]:
    writer = bank.ShardWriter(tmp_path, "boolq", "w0")
    writer.write(_row())
    writer.close()
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "onion_lab.bank_replay",
            "--layer",
            "core",
            "--port",
            str(port),
            "--bank",
            str(tmp_path),
            "--speed",
            "10",
        ],
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_recorded_answer_comes_back_whole_streamed_or_not(engine: str) -> None:
    client = openai.OpenAI(base_url=f"{engine}/v1", api_key="none", max_retries=0)
    reply = client.chat.completions.create(
        model="core",
        messages=MESSAGES,
        logprobs=True,
        top_logprobs=2,  # type: ignore[arg-type]
    )
    choice = reply.choices[0]
    assert choice.message.content == "Yes, it is." and choice.finish_reason == "stop"
    assert choice.logprobs and [t.token for t in choice.logprobs.content or []][:2] == ["Yes", ","]
    assert reply.usage and reply.usage.prompt_tokens == 21
    stream = client.chat.completions.create(
        model="core",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Yes, it is."
    verdict = client.chat.completions.create(
        model="core",
        messages=VERIFY,
        max_tokens=1,
        logprobs=True,
        top_logprobs=10,  # type: ignore[arg-type]
    )
    top = verdict.choices[0].logprobs.content[0].top_logprobs  # type: ignore[union-attr,index]
    assert [t.token for t in top] == ["Yes", "No"]


def test_a_request_not_in_the_bank_is_a_clear_404(engine: str) -> None:
    client = openai.OpenAI(base_url=f"{engine}/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="not in the answer bank"):
        client.chat.completions.create(
            model="core", messages=[{"role": "user", "content": "something else"}]
        )


def test_pieces_join_to_the_answer_even_across_a_split_character() -> None:
    text = "93 ≈ 0.89"
    pieces = pieces_of(text, ["93", " \ufffd", "\ufffd", " 0", ".89"])
    assert "".join(pieces) == text and len(pieces) == 5
