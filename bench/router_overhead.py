"""Router overhead: the same load against a TGI-protocol test server directly, through
onion-router, and through the LiteLLM proxy, in one run; non-streaming and streaming at several
concurrencies. Reports added latency p50/p99 and throughput ratios; writes a JSON result.

The load comes from bench/loadgen (Go, built here with the Go toolchain that `make bins` needs
too): a Python client on the same two cores costs more CPU per request than the servers it
measures, and capped the test server's measured throughput at a third of what it serves.

Everything runs on 127.0.0.1; every process this starts is stopped at the end.
Usage: python bench/router_overhead.py [--out results/router-overhead.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onion_lab.paths import CACHE, REPO, RESULTS
from onion_lab.routerbench import ROUTER_BIN, TOKENS, process
from onion_lab.sockets import free_port
from onion_lab.stats import percentile
from onion_lab.usage import cpu_seconds

MASTER_KEY = "sk-bench-only"
CONCURRENCY = (1, 8, 32)
MODES = ("non-stream", "stream", "stream-paced", "judged-256")
# stream-paced: the test server waits PREFILL, then PER_TOKEN between tokens, like a real engine
# at low load; the router's work then overlaps generation and what it adds to the time to first
# event is its own per-request cost, not a backlog of tokens that all arrived at once.
PACED = (0.010, 0.002)
PACED_CONCURRENCY = (1, 8)
OTHER_PROXIES = ("passthrough", "litellm")  # passthrough: bench/passthrough_proxy.py, the floor
# judged-256: 256-token answers that the router judges with the confidence policy (a keyword
# rule sends them to a layer that has it), so it asks for and parses token logprobs; the other
# targets just pass the same answer through.
JUDGED_TOKENS = 256
LOADS = [
    *((m, c) for m in MODES[:2] for c in CONCURRENCY),
    *(("stream-paced", c) for c in PACED_CONCURRENCY),
    *(("judged-256", c) for c in PACED_CONCURRENCY),
]
ROUNDS = 4
LITELLM_DEFAULT = CACHE / "litellm-venv" / "bin" / "litellm"


@dataclass
class Sample:
    """Latencies and wall time of one target under one load, summed over interleaved rounds."""

    latencies: list[float] = field(default_factory=list)
    first_bytes: list[float] = field(default_factory=list)  # streams: time to the first event
    errors: int = 0
    wall: float = 0.0
    cpu: float = 0.0  # of the server process (the proxy; the test server for `direct`)

    def result(self) -> dict[str, Any]:
        done = len(self.latencies)
        return {
            "requests": done,
            "errors": self.errors,
            "seconds": round(self.wall, 3),
            "throughput_rps": round(done / self.wall, 1) if self.wall else 0.0,
            "p50_ms": round(percentile(self.latencies, 50) * 1000, 3) if done else None,
            "p99_ms": round(percentile(self.latencies, 99) * 1000, 3) if done else None,
            "mean_ms": round(sum(self.latencies) / done * 1000, 3) if done else None,
            "server_cpu_ms_per_request": round(self.cpu / done * 1000, 3) if done else None,
            "first_event_p50_ms": _ms(self.first_bytes, 50),
            "first_event_p99_ms": _ms(self.first_bytes, 99),
        }


def _ms(values: list[float], q: float) -> float | None:
    return round(percentile(values, q) * 1000, 3) if values else None


def load(
    loadgen: Path,
    sample: Sample,
    url: str,
    model: str,
    headers: dict[str, str],
    mode: str,
    concurrency: int,
    requests: int,
    pid: int,
) -> None:
    """`requests` requests from `concurrency` closed-loop clients (after a short warm-up), sent
    by the native load generator; the server's CPU is read around the measured requests only."""
    stream = mode.startswith("stream")
    prompt = {"stream-paced": "paced", "judged-256": "long judged"}.get(mode, "plain")
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"{prompt} benchmark prompt"}],
        "max_tokens": JUDGED_TOKENS if mode == "judged-256" else TOKENS,
        "stream": stream,
    }
    argv = [str(loadgen), "-url", url, "-body", json.dumps(body), "-c", str(concurrency)]
    argv += ["-n", str(max(1, requests // concurrency)), "-warmup", "2"]
    argv += ["-stream"] * stream
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as client:
        assert client.stdin is not None and client.stdout is not None
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError(f"load generator failed during warm-up against {url}")
        cpu = cpu_seconds(pid)
        client.stdin.write("go\n")
        client.stdin.flush()
        measured = json.loads(client.stdout.read())
        sample.cpu += cpu_seconds(pid) - cpu
    sample.latencies += measured["latencies"]
    sample.first_bytes += measured["first_events"]
    sample.errors += measured["errors"]
    sample.wall += measured["wall"]


def build_loadgen() -> Path:
    """Build bench/loadgen (Go, standard library only; Go caches the build)."""
    if shutil.which("go") is None:
        sys.exit("the router benchmark's load generator is Go: install the Go toolchain")
    binary = CACHE / "bin" / "onion-loadgen"
    subprocess.run(
        ["go", "build", "-o", str(binary), "."], cwd=REPO / "bench" / "loadgen", check=True
    )
    return binary


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per load: what each proxy adds over the test server alone, and how they compare."""
    by_key = {(r["target"], r["mode"], r["concurrency"]): r for r in runs}
    rows = []
    for mode, conc in LOADS:
        direct = by_key[("direct", mode, conc)]
        router = by_key[("onion-router", mode, conc)]
        row: dict[str, Any] = {"mode": mode, "concurrency": conc}
        for name, key in (("router", "onion-router"), *((p, p) for p in OTHER_PROXIES)):
            through = by_key.get((key, mode, conc))
            if through is None:
                continue
            row |= {
                f"{name}_added_p50_ms": round(through["p50_ms"] - direct["p50_ms"], 3),
                f"{name}_added_p99_ms": round(through["p99_ms"] - direct["p99_ms"], 3),
                **_added_first_event(name, through, direct),
                f"{name}_cpu_ms_per_request": through["server_cpu_ms_per_request"],
                f"router_throughput_vs_{name}": round(
                    router["throughput_rps"] / through["throughput_rps"], 3
                ),
            }
        row["router_throughput_vs_direct"] = round(
            router["throughput_rps"] / direct["throughput_rps"], 3
        )
        del row["router_throughput_vs_router"]
        rows.append(row)
    return rows


def _added_first_event(
    name: str, through: dict[str, Any], direct: dict[str, Any]
) -> dict[str, float]:
    """Streams: what the proxy adds to the time until the first event reaches the client."""
    if through["first_event_p50_ms"] is None or direct["first_event_p50_ms"] is None:
        return {}
    return {
        f"{name}_added_first_event_p50_ms": round(
            through["first_event_p50_ms"] - direct["first_event_p50_ms"], 3
        ),
        f"{name}_added_first_event_p99_ms": round(
            through["first_event_p99_ms"] - direct["first_event_p99_ms"], 3
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "router-overhead.json"))
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
    parser.add_argument(
        "--litellm",
        default=str(LITELLM_DEFAULT),
        help="the litellm executable (its own venv: its pins clash with ours)",
    )
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    requests = {1: int(200 * scale), 8: int(800 * scale), 32: int(1600 * scale)}
    litellm_bin = shutil.which(args.litellm)
    use_litellm = not args.no_litellm and litellm_bin is not None
    if not args.no_litellm and not use_litellm:
        print(
            f"{args.litellm} not found (make bench-router installs it); skipping LiteLLM",
            file=sys.stderr,
        )

    loadgen = build_loadgen()
    fake_port, router_port, litellm_port = free_port(), free_port(), free_port()
    passthrough_port = free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="onion-bench-") as tmp:
        logs = Path(tmp)
        (logs / "router.yaml").write_text(
            json.dumps(
                {
                    "listen": {"host": "127.0.0.1", "port": router_port},
                    "kubernetes": {"enabled": False},
                    "layers": [
                        {"name": "core", "url": fake, "model": "bench"},
                        {
                            "name": "judge",
                            "url": fake,
                            "model": "bench",
                            "rules": [{"keywords": ["judged"]}],
                            # always accepted: each request is judged once, then answered
                            "escalation": {"policy": "confidence", "threshold": -100},
                        },
                        {"name": "outer", "url": fake, "model": "bench"},
                    ],
                }
            )
        )
        (logs / "litellm.yaml").write_text(
            json.dumps(
                {
                    "model_list": [
                        {
                            "model_name": "onion",
                            "litellm_params": {
                                "model": "openai/bench",
                                "api_base": f"{fake}/v1",
                                "api_key": "none",
                            },
                        }
                    ],
                    "general_settings": {"master_key": MASTER_KEY},
                    "litellm_settings": {"telemetry": False},
                }
            )
        )
        targets: list[tuple[str, str, str, dict[str, str]]] = [
            ("direct", f"{fake}/v1/chat/completions", "bench", {}),
            ("onion-router", f"http://127.0.0.1:{router_port}/v1/chat/completions", "onion", {}),
            ("passthrough", f"http://127.0.0.1:{passthrough_port}/v1/chat/completions", "b", {}),
        ]
        if use_litellm:
            targets.append(
                (
                    "litellm",
                    f"http://127.0.0.1:{litellm_port}/v1/chat/completions",
                    "onion",
                    {"Authorization": f"Bearer {MASTER_KEY}"},
                )
            )
        with (
            process(
                "fake-tgi",
                [
                    sys.executable,
                    "-m",
                    "tests.support.fake_tgi",
                    "--port",
                    str(fake_port),
                    "--tokens",
                    str(TOKENS),
                    "--paced",
                    *map(str, PACED),
                    "--long",
                    str(JUDGED_TOKENS),
                ],
                f"{fake}/health",
                logs,
            ) as fake_server,
            process(
                "onion-router",
                [
                    str(ROUTER_BIN),
                    "--config",
                    str(logs / "router.yaml"),
                    "--log-level",
                    "warning",
                ],
                f"http://127.0.0.1:{router_port}/health",
                logs,
            ) as router,
            process(
                "passthrough",
                [
                    sys.executable,
                    str(REPO / "bench" / "passthrough_proxy.py"),
                    "--port",
                    str(passthrough_port),
                    "--backend",
                    fake,
                ],
                f"http://127.0.0.1:{passthrough_port}/health",
                logs,
            ) as passthrough,
            process(
                "litellm",
                [
                    str(litellm_bin),
                    "--config",
                    str(logs / "litellm.yaml"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(litellm_port),
                ],
                f"http://127.0.0.1:{litellm_port}/health/liveliness",
                logs,
                env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
                timeout=180,
            )
            if use_litellm
            else _nothing() as litellm,
        ):
            pids = {
                "direct": fake_server.pid,
                "onion-router": router.pid,
                "passthrough": passthrough.pid,
            }
            if litellm is not None:
                pids["litellm"] = litellm.pid
            for mode, conc in LOADS:
                # Interleave the targets in rounds so background noise hits all alike.
                samples = {name: Sample() for name, *_ in targets}
                for _ in range(ROUNDS):
                    for name, url, model, headers in targets:
                        load(
                            loadgen,
                            samples[name],
                            url,
                            model,
                            headers,
                            mode,
                            conc,
                            requests[conc] // ROUNDS,
                            pids[name],
                        )
                for name, sample in samples.items():
                    result = sample.result()
                    runs.append({"target": name, "mode": mode, "concurrency": conc, **result})
                    print(
                        f"{mode:12} c={conc:<3} {name:13} {result['throughput_rps']:8.1f} "
                        f"req/s  p50 {result['p50_ms']:8.2f} ms  p99 {result['p99_ms']:8.2f}"
                        f" ms  errors {result['errors']}"
                        + (
                            f"  first event p50 {result['first_event_p50_ms']:.2f} ms"
                            if result["first_event_p50_ms"] is not None
                            else ""
                        ),
                        flush=True,
                    )
    summary = summarize(runs)
    out = {
        "benchmark": "router-overhead",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # Other work on the machine skews absolute numbers; the ratios are what compare.
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "backend": f"TGI-protocol test server (tests/support/fake_tgi.py), {TOKENS} tokens/answer,"
        f" no delays; stream-paced: {PACED[0] * 1000:.0f} ms prefill, {PACED[1] * 1000:.0f} ms"
        " per token",
        "litellm_version": _litellm_version(litellm_bin) if use_litellm else None,
        "runs": runs,
        "summary": summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("\nadded latency (ms) over direct, and throughput ratios:")
    for row in summary:
        print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    print(f"wrote {args.out}")
    return 0


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _litellm_version(litellm_bin: str | None) -> str | None:
    python = Path(litellm_bin or "").parent / "python"
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m;print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
