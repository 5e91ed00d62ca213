"""Instructions per router request, counted by valgrind's callgrind: a cost measure that does
not move with whatever else the machine is doing, for comparing two versions of the router.

Starts the TGI-protocol test server and `onion-router` under `valgrind --tool=callgrind` on
127.0.0.1, warms up, zeroes the counters, sends N sequential requests, dumps the counters and
divides. Loads: `non-stream` and `stream` (16-token answers, policy none: the proxying cost),
and `judged-256` (256-token answers judged by the confidence policy, so with token logprobs:
what a core layer's typical request costs the router). `--source DIR` runs the router package
from another checkout (e.g. a `git worktree` of an older commit) with this one's environment, so
both are measured alike.

Usage: python bench/router_instructions.py [--requests 200] [--source OTHER/router]
       [--modes non-stream,stream,judged-256] [--out results/router-instructions.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from onion_lab.paths import REPO, RESULTS
from onion_lab.routerbench import ROUTER_BIN, TOKENS, process
from onion_lab.sockets import free_port

WARMUP = 30
JUDGED_TOKENS = 256
# mode: (stream, tokens per answer, the core's escalation policy, share of --requests)
MODES = {
    "non-stream": (False, TOKENS, {"policy": "none"}, 1.0),
    "stream": (True, TOKENS, {"policy": "none"}, 1.0),
    # threshold -100: always accepted, so every request is judged once and answered by the core
    "judged-256": (False, JUDGED_TOKENS, {"policy": "confidence", "threshold": -100}, 0.25),
}


def drive(url: str, count: int, stream: bool, tokens: int) -> None:
    body = {
        "model": "onion",
        "messages": [{"role": "user", "content": "benchmark prompt"}],
        "max_tokens": tokens,
        "stream": stream,
    }
    with httpx.Client(timeout=120) as client:
        for _ in range(count):
            with client.stream("POST", url, json=body) as response:
                response.raise_for_status()
                for _ in response.iter_raw():
                    pass


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def measure(mode: str, requests: int, source: str | None, work: Path) -> int:
    stream, tokens, escalation, share = MODES[mode]
    requests = max(10, int(requests * share))
    fake_port, router_port = free_port(), free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    config = work / f"router-{mode}.yaml"
    config.write_text(
        json.dumps(
            {
                "listen": {"host": "127.0.0.1", "port": router_port},
                "kubernetes": {"enabled": False},
                "layers": [
                    {"name": "core", "url": fake, "model": "bench", "escalation": escalation},
                    {"name": "outer", "url": fake, "model": "bench"},
                ],
            }
        )
    )
    out = work / f"callgrind-{mode}.out"
    router_argv = [str(ROUTER_BIN), "--config", str(config)]
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    env = {"PYTHONPATH": source} if source else None
    fake_argv = [sys.executable, "-m", "tests.support.fake_tgi", "--port", str(fake_port)]
    fake_argv += ["--tokens", str(tokens)]
    with (
        process("fake-tgi", fake_argv, f"{fake}/health", work),
        process(
            "router",
            [*argv, *router_argv, "--log-level", "warning"],
            f"http://127.0.0.1:{router_port}/health",
            work,
            env=env,
            timeout=300,
        ) as router,
    ):
        url = f"http://127.0.0.1:{router_port}/v1/chat/completions"
        drive(url, WARMUP, stream, tokens)
        callgrind_control("--zero", str(router.pid))
        drive(url, requests, stream, tokens)
        callgrind_control("--dump", str(router.pid))
        time.sleep(1)
    dump = next(p for p in sorted(work.glob(f"callgrind-{mode}.out.*")) if p.suffix != ".out")
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1]) // requests
    raise RuntimeError(f"no summary line in {dump}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--source", help="router/ directory of another checkout to measure")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of loads")
    parser.add_argument("--out", default=str(RESULTS / "router-instructions.json"))
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (with callgrind_control) is not installed", file=sys.stderr)
        return 2
    source = str(Path(args.source).resolve()) if args.source else None
    result: dict[str, object] = {
        "benchmark": "router-instructions",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source or str(REPO / "router"),
        "requests": args.requests,
        "python": sys.version.split()[0],
    }
    with tempfile.TemporaryDirectory(prefix="onion-instr-") as tmp:
        for mode in args.modes.split(","):
            per_request = measure(mode, args.requests, source, Path(tmp))
            result[f"{mode}_instructions_per_request"] = per_request
            print(f"{mode:10} {per_request:>12,} instructions per request", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
