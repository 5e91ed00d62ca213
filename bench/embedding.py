"""The prompt embedder's cost: per-prompt latency (p50/p99 at 16, 64 and 256 tokens, one prompt at
a time, one thread and the default threads), CPU per call, memory and installed size of the
router's runtime (onion_router.embedding, numpy), beside the alternatives measured once
(results/embedding-alternatives.json); writes results/embedding.json.

  python bench/embedding.py [--runs 100] [--rounds 4] [--out results/embedding.json]

Each (runtime, threads) pair runs in processes of its own (BLAS and ONNX Runtime fix their thread
pools when they load), in rounds that take turns. The alternatives need what the router does not
have, so each was measured once, taking turns with the numpy runtime, from a venv outside the
repo with this checkout installed in it without its dependencies (`pip install --no-deps -e .`;
llama-server from the dev venv):

  python bench/embedding.py alternative onnxruntime --onnx minilm.onnx   # onnxruntime, tokenizers
  python bench/embedding.py alternative sentence-transformers   # sentence-transformers, torch
  python bench/embedding.py alternative llama-server --gguf minilm-f32.gguf

minilm.onnx: torch.onnx.export (opset 17, dynamo=False, sequence length dynamic) of a module
running transformers' AutoModel of the verified folder, the mean over the attention mask and
L2 normalisation, inputs input_ids, attention_mask and token_type_ids. minilm-f32.gguf:
`convert_hf_to_gguf.py FOLDER --outtype f32` of the llama.cpp in the pinned llama-cpp-python
sdist (PYTHONPATH=its gguf-py and its root; f16 likewise). Each run merges its entry into
results/embedding-alternatives.json. Everything started here listens on 127.0.0.1 only and is
stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from onion_lab.paths import REPO
from onion_lab.stats import summary

TOKENS = (16, 64, 256)
REFERENCE = REPO / "tests" / "data" / "embedding-reference.json"
ALTERNATIVES = REPO / "results" / "embedding-alternatives.json"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# What each runtime needs installed, beside the router's base install.
NEEDS = {
    "numpy": ["numpy", "tokenizers", "safetensors", "threadpoolctl"],
    "onnxruntime": ["onnxruntime", "tokenizers"],
    "sentence-transformers": ["sentence-transformers", "torch"],
}
PARAGRAPH = (
    "the router reads each prompt once and decides whether the small model can answer it or a "
    "larger layer should wake up while the core is still working on its reply so the user waits "
    "less when the question is hard"
)

Embed = Callable[[str], Sequence[float]]


def folder() -> Path:
    from onion_lab import embedder_files

    return embedder_files.folder()


def prompt_of(count: Callable[[str], int], tokens: int) -> str:
    """A prompt of exactly `tokens` tokens ([CLS] and [SEP] included), of ordinary words."""
    vocabulary = PARAGRAPH.split()
    words: list[str] = []
    i = 0
    while count(" ".join(words)) < tokens:
        candidate = [*words, vocabulary[i % len(vocabulary)]]
        i += 1
        if count(" ".join(candidate)) <= tokens:
            words = candidate
    return " ".join(words)


def token_counter(model_folder: Path) -> Callable[[str], int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return lambda text: len(tokenizer.encode(text).ids)


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def accuracy(embed: Embed, whole_only: bool = False) -> dict[str, Any]:
    """Worst component difference and cosine against sentence-transformers' vectors;
    `whole_only`: only texts it did not truncate (a runtime that does not truncate)."""
    items = json.loads(REFERENCE.read_text())["items"]
    if whole_only:
        items = [i for i in items if i["tokens"] < 256]
    worst, lowest = 0.0, 1.0
    for item in items:
        got, want = list(embed(item["text"])), item["vector"]
        worst = max(worst, max(abs(a - b) for a, b in zip(got, want, strict=True)))
        norms = sum(a * a for a in got) ** 0.5 * sum(b * b for b in want) ** 0.5
        lowest = min(lowest, sum(a * b for a, b in zip(got, want, strict=True)) / norms)
    return {
        "texts": len(items),
        "max_abs_diff": float(f"{worst:.2g}"),
        "min_cosine": round(lowest, 7),
    }


def timings(
    embed: Embed, prompts: dict[int, str], runs: int, cpu: Callable[[], float] = time.process_time
) -> dict[str, Any]:
    """Seconds per call, `runs` calls at each prompt length after 3 untimed ones, and the CPU
    seconds they took in all (`cpu`: this process's, or a server's too): on a shared machine
    the wall time includes waiting for a core, the CPU time does not."""
    out: dict[str, Any] = {}
    for tokens, text in prompts.items():
        for _ in range(3):
            embed(text)
        times = []
        cpu_start = cpu()
        for _ in range(runs):
            start = time.perf_counter()
            embed(text)
            times.append(time.perf_counter() - start)
        out[str(tokens)] = {"wall": times, "cpu": cpu() - cpu_start}
    return out


def measure(
    make: Callable[[], Embed],
    model_folder: Path,
    runs: int,
    whole_only: bool = False,
    cpu: Callable[[], float] = time.process_time,
) -> dict[str, Any]:
    """Load, time and check one runtime in this process."""
    count = token_counter(model_folder)
    prompts = {n: prompt_of(count, n) for n in TOKENS}
    start = time.perf_counter()
    embed = make()
    loaded = time.perf_counter() - start
    return {
        "load_s": round(loaded, 2),
        "samples": timings(embed, prompts, runs, cpu),
        "rss_mb": rss_mb(),
        "accuracy": accuracy(embed, whole_only),
    }


def combine(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one runtime as one result: latencies over all of their calls, and the mean CPU
    time of a call."""
    walls: dict[str, list[float]] = {}
    cpus: dict[str, float] = {}
    for part in parts:
        for tokens, sample in part["samples"].items():
            walls.setdefault(tokens, []).extend(sample["wall"])
            cpus[tokens] = cpus.get(tokens, 0.0) + sample["cpu"]
    return {
        "latency": {
            n: {
                **summary(t),
                "min_ms": round(min(t) * 1000, 1),
                "cpu_ms_per_call": round(cpus[n] / len(t) * 1000, 1),
            }
            for n, t in walls.items()
        },
        "load_s": sorted(p["load_s"] for p in parts)[len(parts) // 2],
        "rss_mb": max(p["rss_mb"] for p in parts),
        "accuracy": parts[0]["accuracy"],
    }


def _requirements(name: str) -> Iterable[str]:
    from packaging.requirements import Requirement

    for text in metadata.distribution(name).requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            yield req.name


def closure(names: Iterable[str]) -> set[str]:
    """These distributions and every one they need (their markers evaluated here)."""
    seen: set[str] = set()
    todo = [canonical(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(canonical(r) for r in _requirements(name))
    return seen


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dist_bytes(name: str) -> int:
    """What one installed distribution's files take on disk (its RECORD)."""
    dist = metadata.distribution(name)
    total = 0
    for file in dist.files or []:
        path = Path(str(dist.locate_file(file)))
        if path.is_file():
            total += path.stat().st_size
    return total


def installed(names: Sequence[str]) -> dict[str, Any]:
    """Bytes on disk of these distributions and all they need, per distribution."""
    sizes = {n: dist_bytes(n) for n in sorted(closure(names))}
    versions = {n: metadata.version(n) for n in sizes}
    return {"distributions": {n: {"version": versions[n], "bytes": b} for n, b in sizes.items()}}


def beyond_base(size: dict[str, Any], base: set[str]) -> dict[str, Any]:
    """The MB a runtime adds to the router's base install (its distributions less the base's)."""
    extra = {n: d for n, d in size["distributions"].items() if n not in base}
    return {
        "mb_beyond_base": round(sum(d["bytes"] for d in extra.values()) / 1e6, 1),
        "adds": sorted(extra),
    }


# --- runtimes -------------------------------------------------------------------------------


def numpy_embedder(model_folder: Path, threads: int | None) -> Callable[[], Embed]:
    from onion_router.embedding import Embedder

    return lambda: Embedder(model_folder, threads=threads).embed


def onnx_embedder(model_folder: Path, onnx: Path, threads: int | None) -> Callable[[], Embed]:
    def make() -> Embed:
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(model_folder / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(256)

        def embed(text: str) -> Sequence[float]:
            encoding = tokenizer.encode(text.strip())
            ids = np.array([encoding.ids], dtype=np.int64)
            feeds = {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.zeros_like(ids),
            }
            return [float(v) for v in session.run(None, feeds)[0][0]]

        return embed

    return make


def torch_embedder(model_folder: Path, threads: int | None) -> Callable[[], Embed]:
    def make() -> Embed:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        model = SentenceTransformer(str(model_folder), device="cpu")
        return lambda text: [float(v) for v in model.encode(text, convert_to_numpy=True)]

    return make


@contextmanager
def llama_server(gguf: Path, threads: int | None, log: Path) -> Iterator[tuple[Embed, float, int]]:
    """llama.cpp's server in embedding mode (mean pooling; /v1/embeddings normalises) on
    loopback, called one request at a time over a kept-alive connection, as a router would;
    yields the embed function, its start-up seconds and its pid."""
    import http.client

    from onion_lab import llamaserver

    port = llamaserver.free_port()
    n = str(threads or os.cpu_count() or 1)
    argv = [
        llamaserver.binary(),
        *("--model", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--no-webui"),
        *("--embedding", "--pooling", "mean", "--ctx-size", "512", "--batch-size", "512"),
        *("--ubatch-size", "512", "--parallel", "1", "--threads", n, "--threads-batch", n),
    ]
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        start = time.perf_counter()
        llamaserver.wait_healthy(f"http://127.0.0.1:{port}", process, log, 120)
        started = time.perf_counter() - start
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def post(body: str) -> tuple[int, Any]:
            connection.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            return answer.status, json.loads(answer.read())

        def embed(text: str) -> Sequence[float]:
            body = json.dumps({"input": text, "encoding_format": "float"})
            try:
                status, data = post(body)
            except (http.client.HTTPException, OSError):
                # the server closes a connection left idle (while another runtime takes its
                # turn); the first calls of a turn are untimed
                connection.close()
                status, data = post(body)
            if status != 200:
                raise RuntimeError(f"llama-server answered {status}: {data}")
            return [float(v) for v in data["data"][0]["embedding"]]

        yield embed, started, process.pid
        connection.close()
    finally:
        llamaserver.stop(process)


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+)", status)
    return round(int(found[1]) / 1024, 1) if found else float("nan")


# --- the runs -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def worker(args: argparse.Namespace) -> None:
    """One (runtime, threads) measurement in this process; prints its JSON."""
    model_folder = Path(args.folder) if args.folder else folder()
    threads = args.threads or None
    makers = {
        "numpy": lambda: numpy_embedder(model_folder, threads),
        "onnxruntime": lambda: onnx_embedder(model_folder, Path(args.onnx), threads),
        "sentence-transformers": lambda: torch_embedder(model_folder, threads),
    }
    print(json.dumps(measure(makers[args.runtime](), model_folder, args.runs)))


def in_subprocess(runtime: str, threads: int | None, runs: int, args: argparse.Namespace) -> Any:
    """`worker` in a fresh process: one thread means every thread pool of one."""
    env = {**os.environ, **(ONE_THREAD if threads == 1 else {})}
    argv = [sys.executable, __file__, "worker", runtime, "--runs", str(runs)]
    argv += ["--threads", str(threads or 0)]
    argv += [f"--{k}={v}" for k in ("folder", "onnx") if (v := getattr(args, k, None))]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def interleaved(runtimes: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    """Each runtime at one thread and at the default, in `args.rounds` rounds that take turns,
    so that a shared machine's load falls on all of them alike."""
    model_folder = Path(args.folder) if args.folder else folder()
    out: dict[str, Any] = {r: {} for r in runtimes}
    per_round = max(1, args.runs // args.rounds)
    for threads in (1, None):
        parts: dict[str, list[dict[str, Any]]] = {r: [] for r in runtimes}
        with ExitStack() as stack:
            servers = {
                r: stack.enter_context(llama_server(Path(args.gguf), threads, Path(args.log)))
                for r in runtimes
                if r == "llama-server"
            }
            for i in range(args.rounds):
                order = runtimes if i % 2 == 0 else list(reversed(runtimes))
                for runtime in order:
                    if runtime in servers:
                        embed, started, pid = servers[runtime]
                        part = measure(
                            lambda e=embed: e,
                            model_folder,
                            per_round,
                            whole_only=True,
                            cpu=lambda p=pid: time.process_time() + cpu_seconds(p),
                        )
                        part.update(load_s=round(started, 2), rss_mb=peak_rss_mb(pid))
                    else:
                        part = in_subprocess(runtime, threads, per_round, args)
                    parts[runtime].append(part)
        for runtime in runtimes:
            out[runtime]["1" if threads == 1 else "default"] = combine(parts[runtime])
    return out


HOW = {
    "onnxruntime": "minilm.onnx exported by torch.onnx.export (opset 17, dynamic sequence length) "
    "of transformers' BertModel + mean pooling + L2 normalisation, from the verified folder; "
    "onnxruntime's CPUExecutionProvider, HF tokenizers; from a venv of onnxruntime and "
    "tokenizers (and safetensors and threadpoolctl for the numpy runtime beside it); the size "
    "is of onnxruntime, tokenizers and what they need",
    "sentence-transformers": "SentenceTransformer(folder, device='cpu').encode(text); from a "
    "venv of sentence-transformers and torch from PyPI (CUDA wheels); the size is of those two "
    "and what they need",
    "llama-server": "a GGUF made by llama.cpp's convert_hf_to_gguf.py (the llama.cpp vendored in "
    "the pinned llama-cpp-python sdist) from the verified folder; the llama-server `make "
    "engine` builds, --embedding --pooling mean, POST /v1/embeddings over loopback from the dev "
    "venv; it embeds a text whole (no truncation), so accuracy is over texts of < 256 tokens",
}


def alternative(args: argparse.Namespace) -> int:
    """Measure one alternative beside the numpy runtime, taking turns, once; merge both into
    results/embedding-alternatives.json."""
    runtime = args.runtime
    results = interleaved([runtime, "numpy"], args)
    entry: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "how": HOW[runtime],
        "threads": results[runtime],
        "numpy_same_window": results["numpy"],
    }
    if runtime == "llama-server":
        from onion_lab import llamaserver

        binary, gguf = Path(llamaserver.binary()), Path(args.gguf)
        entry["installed"] = {
            "mb": round((binary.stat().st_size + gguf.stat().st_size) / 1e6, 1),
            "what": f"the llama-server binary ({binary.stat().st_size / 1e6:.1f} MB, static) and "
            f"{gguf.name} ({gguf.stat().st_size / 1e6:.1f} MB); a process beside the router",
        }
        name = f"llama-server ({gguf.stem})"
    else:
        entry["installed"] = installed(NEEDS[runtime])
        name = runtime
    if args.onnx:
        entry["model_file_mb"] = round(Path(args.onnx).stat().st_size / 1e6, 1)
    record = Path(args.record)
    done = json.loads(record.read_text()) if record.exists() else {}
    done[name] = entry
    record.write_text(json.dumps(done, indent=1) + "\n")
    print(json.dumps({name: entry["threads"]}, indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "mode", nargs="?", default="bench", choices=["bench", "worker", "alternative"]
    )
    parser.add_argument("runtime", nargs="?", default="numpy", choices=[*NEEDS, "llama-server"])
    parser.add_argument("--runs", type=int, default=100, help="timed calls per prompt length")
    parser.add_argument("--rounds", type=int, default=4, help="turns the runs are split into")
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help="the model folder (default: the verified cache)")
    parser.add_argument("--onnx", help="alternative onnxruntime: the exported model")
    parser.add_argument("--gguf", help="alternative llama-server: the converted model")
    parser.add_argument("--log", default="/tmp/embedding-llama-server.log")
    parser.add_argument("--out", default=str(REPO / "results" / "embedding.json"))
    parser.add_argument("--record", default=str(ALTERNATIVES), help="the alternatives' record")
    args = parser.parse_args()
    if args.mode == "worker":
        worker(args)
        return 0
    if args.mode == "alternative":
        return alternative(args)

    base = closure(["onion-of-experts"])
    size = installed(NEEDS["numpy"])
    result: dict[str, Any] = {
        "benchmark": "embedding",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), 384 dimensions",
        "what": "embed(text), one prompt per call, one call at a time, tokenizing included, in "
        "ms; each thread setting in fresh processes (`1`: every thread pool of one thread); "
        "cpu_ms_per_call: CPU time per call (all threads; a server's too), which on a shared "
        "machine excludes the wait for a core that the wall times include",
        "runs_per_length": args.runs,
        "machine": machine(),
        "chosen": {
            "runtime": "numpy (onion_router.embedding.Embedder)",
            "threads": interleaved(["numpy"], args)["numpy"],
            "installed": {**size, **beyond_base(size, base)},
        },
    }
    result["machine"]["load_average_at_end"] = machine()["load_average"]
    record = Path(args.record)
    alternatives = json.loads(record.read_text()) if record.exists() else {}
    for entry in alternatives.values():
        if "distributions" in entry["installed"]:
            entry["installed"].update(beyond_base(entry["installed"], base))
    result["alternatives_measured_once"] = alternatives
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["chosen"]["threads"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
