"""Added latency of two versions of the router, side by side, one request at a time.

`make bench-router` runs each target for a round of requests in turn, so a slow stretch of the
VM can fall on one target and not another; comparing two commits that way needs many runs. Here
each turn sends one non-streaming request to each target in a row: the test server directly, this
checkout's router, the router from `--source` (e.g. a `git worktree` of an older commit, run with
this checkout's environment), and the do-nothing passthrough. The client is stdlib http.client on
one keep-alive connection per target, light enough that it barely competes with the servers.

Usage: python bench/router_ab.py --source OTHER/router [--requests 4000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from onion_lab.paths import REPO
from onion_lab.routerbench import ROUTER_BIN, TOKENS, process
from onion_lab.sockets import free_port
from onion_lab.stats import percentile

WARMUP = 300
BODY = json.dumps(
    {
        "model": "onion",
        "messages": [{"role": "user", "content": "benchmark prompt"}],
        "max_tokens": TOKENS,
    }
)


def one(conn: http.client.HTTPConnection) -> float:
    started = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", BODY, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status} from port {conn.port}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="router/ directory of the other version")
    parser.add_argument("--requests", type=int, default=4000, help="per target")
    args = parser.parse_args()
    source = str(Path(args.source).resolve())
    ports = {name: free_port() for name in ("direct", "router", "other", "passthrough")}
    fake = f"http://127.0.0.1:{ports['direct']}"
    with tempfile.TemporaryDirectory(prefix="onion-ab-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        fake_argv = [sys.executable, "-m", "tests.support.fake_tgi"]
        fake_argv += ["--port", str(ports["direct"]), "--tokens", str(TOKENS)]
        stack.enter_context(process("fake-tgi", fake_argv, f"{fake}/health", work))
        for name, env in (("router", None), ("other", {"PYTHONPATH": source})):
            config = work / f"{name}.yaml"
            layers = [{"name": "core", "url": fake, "model": "bench"}]
            listen = {"host": "127.0.0.1", "port": ports[name]}
            config.write_text(
                json.dumps({"listen": listen, "kubernetes": {"enabled": False}, "layers": layers})
            )
            argv = [
                str(ROUTER_BIN),
                "--config",
                str(config),
                "--log-level",
                "warning",
            ]
            health = f"http://127.0.0.1:{ports[name]}/health"
            stack.enter_context(process(name, argv, health, work, env=env))
        passthrough = [sys.executable, str(REPO / "bench" / "passthrough_proxy.py")]
        passthrough += ["--port", str(ports["passthrough"]), "--backend", fake]
        health = f"http://127.0.0.1:{ports['passthrough']}/health"
        stack.enter_context(process("passthrough", passthrough, health, work))

        conns = {
            name: http.client.HTTPConnection("127.0.0.1", port) for name, port in ports.items()
        }
        latencies: dict[str, list[float]] = {name: [] for name in conns}
        for turn in range(WARMUP + args.requests):
            for name, conn in conns.items():
                seconds = one(conn)
                if turn >= WARMUP:
                    latencies[name].append(seconds)
        for conn in conns.values():
            conn.close()

    direct = percentile(latencies["direct"], 50)
    print(f"{args.requests} non-streaming requests per target, alternating; other = {source}")
    for name, values in latencies.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        print(
            f"{name:12} p50 {p50 * 1000:6.3f} ms  p99 {p99 * 1000:6.3f} ms"
            f"  added p50 {(p50 - direct) * 1000:6.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
