"""Recording the answer bank: the real model ladder on llama-server, every question asked once of
every layer, with token logprobs and the probes of the `verify` and `self` policies.

Resumable: a row is keyed by its model file's sha256 and the exact request, and a key already in
the bank (closed or open shards) is not asked again. `workers` ladders run side by side, one
thread a server, each on its own questions (two on a 2-core machine with nothing else running).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onion_contract.router_config import Escalation
from onion_lab import bank, llamaserver, signals
from onion_lab.datasets import DATASETS, Dataset, Item
from onion_lab.paths import CACHE
from onion_router.policies import self_instruction, verify_messages


@dataclass(frozen=True)
class Layer:
    name: str
    model: str  # onion_lab.models name
    title: str
    parameters: float  # the compute proxy's weight
    license: str


LADDER = (
    Layer("core", "smollm2", "SmolLM2-135M-Instruct Q4_1", 135e6, "Apache-2.0 (Hugging Face)"),
    Layer(
        "mid",
        "qwen05",
        "Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
        494e6,
        "Apache-2.0 (Qwen team, Alibaba Cloud)",
    ),
    Layer(
        "big",
        "qwen15",
        "Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
        1544e6,
        "Apache-2.0 (Qwen team, Alibaba Cloud)",
    ),
)
NAMES = tuple(layer.name for layer in LADDER)
PARAMETERS = {layer.name: layer.parameters for layer in LADDER}

TOP_LOGPROBS = 5
VERIFY_TOP_LOGPROBS = 10  # as the router asks (onion_router.escalation.VERIFY_TOP_LOGPROBS)
SELF_PROBE_TOKENS = 12
SEED = 0
SELF = Escalation(policy="self")
VERIFY = Escalation(policy="verify")


# --- the requests, exactly as sent (their hash is the row's key) --------------------------------


def answer_request(dataset: Dataset, item: Item) -> dict[str, Any]:
    return {
        "messages": dataset.messages(item),
        "max_tokens": dataset.max_tokens,
        "temperature": 0,
        "seed": SEED,
        "logprobs": True,
        "top_logprobs": TOP_LOGPROBS,
    }


def self_request(dataset: Dataset, item: Item) -> dict[str, Any]:
    """The answer request as a `self`-policy layer gets it: the router's instruction first."""
    instruction = self_instruction(SELF)
    assert instruction is not None
    return {
        "messages": [{"role": "system", "content": instruction}, *dataset.messages(item)],
        "max_tokens": SELF_PROBE_TOKENS,
        "temperature": 0,
        "seed": SEED,
    }


def verify_request(item: Item, answer: str) -> dict[str, Any]:
    """The router's own verification question about this answer (policy verify)."""
    return {
        "messages": verify_messages(VERIFY, item.question, answer),
        "max_tokens": 1,
        "temperature": 0,
        "seed": SEED,
        "logprobs": True,
        "top_logprobs": VERIFY_TOP_LOGPROBS,
    }


# --- talking to a layer --------------------------------------------------------------------------


def ask(client: Any, request: Mapping[str, Any]) -> dict[str, Any]:
    """One chat completion with the openai SDK; what the bank keeps of it."""
    started = time.perf_counter()
    reply = client.chat.completions.create(model="layer", **request)
    seconds = time.perf_counter() - started
    choice = reply.choices[0]
    content = (choice.logprobs.content if choice.logprobs else None) or []
    timings = (reply.model_extra or {}).get("timings") or {}
    return {
        "answer": choice.message.content or "",
        "finish_reason": choice.finish_reason,
        "prompt_tokens": reply.usage.prompt_tokens if reply.usage else 0,
        "completion_tokens": reply.usage.completion_tokens if reply.usage else 0,
        "seconds": round(seconds, 3),
        "engine_ms": {
            "prompt": round(float(timings.get("prompt_ms", 0.0)), 1),
            "generation": round(float(timings.get("predicted_ms", 0.0)), 1),
        },
        "logprobs": [bank.rounded(t.logprob) for t in content],
        "top_logprobs": [
            [{"token": a.token, "logprob": bank.rounded(a.logprob)} for a in t.top_logprobs or []]
            for t in content
        ],
    }


def file_sha256(path: Path) -> str:
    """A model file's sha256, remembered by path, size and mtime (1 GB takes seconds)."""
    stat = path.stat()
    memo = (
        CACHE
        / "sha256"
        / hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    )
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(digest.hexdigest())
    return digest.hexdigest()


@dataclass(frozen=True)
class Model:
    layer: Layer
    path: Path
    sha256: str


def ladder_models() -> list[Model]:
    models = []
    for layer in LADDER:
        path = Path(llamaserver.model(layer.model))
        models.append(Model(layer, path, file_sha256(path)))
    return models


def engine_version() -> str:
    done = subprocess.run(
        [llamaserver.binary(), "--version"], capture_output=True, text=True, check=False
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    return next((line for line in lines if "version" in line), lines[0] if lines else "unknown")


# --- one question, every layer ---------------------------------------------------------------


def record_layer(
    client: Any, model: Model, dataset: Dataset, item: Item, judged: bool
) -> dict[str, Any]:
    """One row: the layer's answer, graded strictly, with the probes of a judged layer."""
    request = answer_request(dataset, item)
    got = ask(client, request)
    grade = dataset.grade(item, got["answer"])
    row: dict[str, Any] = {
        "dataset": dataset.name,
        "id": item.id,
        "split": item.split,
        "layer": model.layer.name,
        "prompt": item.question,
        "model": model.path.name,
        "model_sha256": model.sha256,
        "key": bank.request_key(model.sha256, request),
        "messages_sha256": bank.messages_digest(request["messages"]),
        "correct": grade.correct,
        "lenient": grade.lenient,
        "grade_detail": grade.detail,
        **got,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if judged:
        probe = self_request(dataset, item)
        asked = ask(client, probe)
        verify = verify_request(item, got["answer"])
        verdict = ask(client, verify)
        row["probes"] = {
            "self": {
                "asked": SELF.sentinel in asked["answer"],
                "messages_sha256": bank.messages_digest(probe["messages"]),
                **{k: asked[k] for k in ("answer", "finish_reason", "prompt_tokens")},
                **{k: asked[k] for k in ("completion_tokens", "seconds", "engine_ms")},
            },
            "verify": {
                "messages_sha256": bank.messages_digest(verify["messages"]),
                **{k: verdict[k] for k in ("answer", "prompt_tokens", "completion_tokens")},
                **{k: verdict[k] for k in ("seconds", "engine_ms", "top_logprobs")},
            },
        }
    row["scores"] = signals.scores(row)
    return row


@dataclass(frozen=True)
class Job:
    dataset: Dataset
    item: Item


def interleaved(sizes: Mapping[str, int]) -> list[Job]:
    """The first `sizes[name]` questions of each dataset, merged so that every dataset grows in
    proportion to its size: a bank stopped at any point is balanced."""
    lists = {name: DATASETS[name].items()[:size] for name, size in sizes.items()}
    tagged = [
        ((i + 1) / len(items), name, Job(DATASETS[name], item))
        for name, items in lists.items()
        for i, item in enumerate(items)
    ]
    return [job for _, _, job in sorted(tagged, key=lambda t: (t[0], t[1]))]


def pending(jobs: Sequence[Job], models: Sequence[Model], have: set[str]) -> list[Job]:
    """The jobs with at least one layer's answer not yet in the bank."""
    return [
        job
        for job in jobs
        if any(
            bank.request_key(m.sha256, answer_request(job.dataset, job.item)) not in have
            for m in models
        )
    ]


class Recorder:
    """Asks the ladder the pending questions, `workers` ladders side by side."""

    def __init__(self, folder: Path, models: Sequence[Model], workers: int, log: Path) -> None:
        self.folder, self.models, self.workers, self.log = folder, list(models), workers, log
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.writers: dict[tuple[str, int], bank.ShardWriter] = {}
        self.errors: list[str] = []

    def _write(self, worker: int, row: dict[str, Any]) -> None:
        with self.lock:
            key = (row["dataset"], worker)
            if key not in self.writers:
                self.writers[key] = bank.ShardWriter(self.folder, row["dataset"], f"w{worker}")
            self.writers[key].write(row)

    def _ladders(self, stack: contextlib.ExitStack) -> list[dict[str, Any]]:
        """A ladder of servers per worker, started (and stopped by `stack`) in the main thread,
        so a stop stops them however long a worker's call still runs."""
        from openai import OpenAI

        ladders = []
        for worker in range(self.workers):
            clients = {}
            for model in self.models:
                name = model.layer.name
                log = self.log / f"w{worker}-{name}.log"
                url = stack.enter_context(llamaserver.serve(model.layer.model, name, log))
                clients[name] = OpenAI(
                    base_url=f"{url}/v1", api_key="bank", max_retries=2, timeout=1800
                )
            ladders.append(clients)
        return ladders

    def _work(
        self, worker: int, clients: dict[str, Any], jobs: list[Job], have: set[str], done: Any
    ) -> None:
        try:
            while not self.stop.is_set():
                with self.lock:
                    if not jobs:
                        return
                    job = jobs.pop(0)
                for index, model in enumerate(self.models):
                    request = answer_request(job.dataset, job.item)
                    if self.stop.is_set():
                        return
                    if bank.request_key(model.sha256, request) in have:
                        continue
                    judged = index < len(self.models) - 1
                    client = clients[model.layer.name]
                    row = record_layer(client, model, job.dataset, job.item, judged)
                    if self.stop.is_set():  # its servers may have gone mid-answer
                        return
                    self._write(worker, row)
                done(job)
        except Exception as err:  # one ladder's failure stops the recording, with the reason
            if not self.stop.is_set():
                self.errors.append(f"worker {worker}: {type(err).__name__}: {err}")
            self.stop.set()

    def run(self, jobs: list[Job], have: set[str], done: Any) -> None:
        queue = list(jobs)
        with contextlib.ExitStack() as stack:
            try:
                threads = [
                    threading.Thread(
                        target=self._work, args=(w, clients, queue, have, done), daemon=True
                    )
                    for w, clients in enumerate(self._ladders(stack))
                ]
                for thread in threads:
                    thread.start()
                while any(t.is_alive() for t in threads):
                    for thread in threads:
                        thread.join(timeout=0.5)
            finally:
                self.stop.set()
                with self.lock:
                    for writer in self.writers.values():
                        writer.close()
        if self.errors:
            raise RuntimeError("; ".join(self.errors))


def manifest(
    models: Sequence[Model], recording: Mapping[str, Any] | None = None, folder: Path = bank.BANK
) -> dict[str, Any]:
    """What the bank was recorded with; each recording appends its own entry."""
    path = folder / "manifest.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    out = {
        "format": "one JSON object per (dataset, question, layer); see onion_lab/bank.py",
        "layers": [
            {
                "layer": m.layer.name,
                "model": m.layer.title,
                "file": m.path.name,
                "sha256": m.sha256,
                "bytes": m.path.stat().st_size,
                "parameters": m.layer.parameters,
                "license": m.layer.license,
            }
            for m in models
        ],
        "engine": {
            "name": "llama.cpp llama-server (built by hack/build-llama-server.sh)",
            "version": engine_version(),
            "threadsPerServer": llamaserver.THREADS,
        },
        "sampling": {"temperature": 0, "seed": SEED, "topLogprobs": TOP_LOGPROBS},
        "datasets": {
            name: {"system": d.system, "maxTokens": d.max_tokens, "license": d.license}
            for name, d in DATASETS.items()
        },
        "probes": {
            "self": {
                "instruction": self_instruction(SELF),
                "sentinel": SELF.sentinel,
                "maxTokens": SELF_PROBE_TOKENS,
                "layers": "all but the outermost",
            },
            "verify": {
                "prompt": VERIFY.verify_prompt,
                "maxTokens": 1,
                "topLogprobs": VERIFY_TOP_LOGPROBS,
                "layers": "all but the outermost",
            },
        },
        "split": "sha256(id)[0] even: train, odd: test",
        "recordings": [*old.get("recordings", []), *([dict(recording)] if recording else [])],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out
