#!/usr/bin/env python3
"""`make demo`: the whole system on one machine, no GPU and no Docker.

Starts a private local Kubernetes control plane (onion_lab.cluster, kwok nodes), installs the
Onion CRD, runs `onion-operator` and `onion-router` (Kubernetes mode: demand Leases, readiness
from the Onion status) as local processes, applies examples/demo-local.yaml, serves its three
layers with a real model ladder on llama.cpp's `llama-server` (SmolLM2-135M, Qwen2.5-Coder-0.5B and
-1.5B), and plays a scripted session with the openai SDK: an easy question (core), one the core
gets wrong and is unsure of (escalated to `mid`, woken while the request is held, answered right),
one a routing rule sends to `big`, then the idle wait that puts both layers back to sleep.

    demo/run_demo.py [--report FILE.json] [--quiet-models]

Everything it starts runs in its own process group and is stopped on exit, Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from onion_lab import llamaserver
from onion_lab.cluster import LocalClusterProcess
from onion_lab.operator import apply_crd
from onion_lab.paths import REPO
from onion_lab.sockets import free_port

EXAMPLE = REPO / "examples" / "demo-local.yaml"
BIN = Path(sys.executable).parent
NAMESPACE = "onion-demo"
ONION = "demo"
EASY = "What is the capital of France? Answer in one short sentence."
# SmolLM2-135M gets this wrong and is unsure of it (its mean token logprob is under the
# threshold); Qwen2.5-Coder-0.5B gets it right. GOLD is printed beside both answers.
UNSURE = "What is 17 * 24? Reply with the number only."
GOLD = "408"
# The keyword "python" matches the routing rule of the outermost layer `big`.
RULED = "Write a Python function fib(n) that returns the n-th Fibonacci number. Code only."
MAX_TOKENS = 32
RULED_MAX_TOKENS = 80

T0 = time.monotonic()


def say(msg: str = "", *, who: str = "demo") -> None:
    stamp = f"{time.monotonic() - T0:6.1f}s"
    for line in msg.splitlines() or [""]:
        print(f"{stamp} {who:>8} | {line}", flush=True)


def wait_until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:  # not ready yet; the timeout reports it
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:  # loopback only
        return 200 <= resp.status < 300


@dataclass
class Processes:
    """Everything the demo starts; each in its own session, stopped in reverse order."""

    logs: Path
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Path:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # own process group: stopped as a whole
            )
        self.started.append((name, proc))
        return log

    def check_alive(self) -> None:
        for name, proc in self.started:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.started):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.started.clear()


class Cluster:
    """The demo's private local control plane (onion_lab.cluster) and what the demo asks of it."""

    def __init__(self, state_dir: Path) -> None:
        self.local = LocalClusterProcess(state_dir=state_dir)
        self.handle = self.local.cluster
        self.up = False

    def start(self) -> None:
        self.up = True
        self.local.start()

    def stop(self) -> None:
        if self.up:
            self.local.stop()
            self.up = False

    def env(self) -> dict[str, str]:
        return self.handle.env()

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        done = self.handle.kubectl(*args, input=stdin, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def token_kubeconfig(self, service_account: str, path: Path) -> str:
        """A kubeconfig that authenticates with a ServiceAccount token (its RBAC only)."""
        token = wait_until(
            f"ServiceAccount {service_account}",
            lambda: self.kubectl("-n", NAMESPACE, "create", "token", service_account).strip(),
            30,
        )
        admin = json.loads(self.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
            "users": [{"name": service_account, "user": {"token": token}}],
            "contexts": [
                {"name": "local", "context": {"cluster": "local", "user": service_account}}
            ],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return str(path)

    def onion(self) -> dict[str, Any]:
        return json.loads(self.kubectl("-n", NAMESPACE, "get", "onion", ONION, "-o", "json"))

    def show_onions(self) -> None:
        say(self.kubectl("-n", NAMESPACE, "get", "onions").rstrip(), who="kubectl")


def phases(onion: dict[str, Any]) -> dict[str, str]:
    return {
        layer["name"]: layer.get("phase", "?")
        for layer in (onion.get("status") or {}).get("layers") or []
    }


class PhaseWatcher(threading.Thread):
    """Polls the Onion's status and prints every layer phase change as it happens."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stopped = threading.Event()
        self.current: dict[str, str] = {}
        self.history: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stopped.wait(0.3):
            try:
                now = phases(self.cluster.onion())
            except Exception:  # a missed poll is retried 0.3 s later
                continue
            with self.lock:
                for name, phase in now.items():
                    before = self.current.get(name)
                    if before != phase:
                        self.history.setdefault(name, []).append(phase)
                        if before is not None:
                            say(f"layer {name}: {before} -> {phase}", who="status")
                self.current = now

    def phase(self, name: str) -> str | None:
        with self.lock:
            return self.current.get(name)


# The ladder: onion_lab.models names of each layer's model.
LADDER = {"core": "smollm2", "mid": "qwen05", "big": "qwen15"}


def start_models(procs: Processes, layers: list[dict[str, Any]]) -> dict[str, str]:
    """One llama-server per layer, on loopback; returns layer name -> base URL."""
    urls: dict[str, str] = {}
    for layer in layers:
        path = llamaserver.model(LADDER[layer["name"]])
        port = free_port()
        procs.start(
            f"llama-{layer['name']}", llamaserver.command(path, layer["model"], port, ctx=2048)
        )
        urls[layer["name"]] = f"http://127.0.0.1:{port}"
        say(f"llama-server serves {layer['name']:<4} = {Path(path).name} as {layer['model']!r}")
    for name, url in urls.items():
        wait_until(f"llama-server for {name}", lambda u=url: http_ok(f"{u}/health"), 120)
        procs.check_alive()
    return urls


def local_router_config(rendered: str, urls: dict[str, str]) -> dict[str, Any]:
    """The operator's rendered config with only the layer URLs pointed at the local servers."""
    config: dict[str, Any] = yaml.safe_load(rendered)
    for layer in config["layers"]:
        layer["url"] = urls[layer["name"]]
    return config


@contextlib.contextmanager
def interrupt_as_exception() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP unwind as KeyboardInterrupt, so the finally blocks clean up.

    SIGINT gets the handler too: a demo started in the background of a non-interactive shell
    inherits SIGINT ignored, and Python then raises no KeyboardInterrupt on Ctrl-C by itself."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def ask_easy(client: Any) -> dict[str, Any]:
    say(f"Q1 (easy) > {EASY}", who="client")
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="onion",
        messages=[{"role": "user", "content": EASY}],
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    reply = raw.parse()
    took = time.monotonic() - started
    text = (reply.choices[0].message.content or "").strip()
    onion = (reply.model_extra or {}).get("onion") or {}
    say(f"A1 < {text!r}", who="client")
    say(
        f"answered by layer {raw.headers.get('X-Onion-Layer')!r}, "
        f"path {raw.headers.get('X-Onion-Path')!r}, {took:.1f}s: no rule matched, the core answers",
        who="router",
    )
    return {
        "question": EASY,
        "answer": text,
        "layer": raw.headers.get("X-Onion-Layer"),
        "path": onion.get("path", []),
        "seconds": round(took, 2),
    }


def ask_core_alone(client: Any, question: str) -> str:
    """What the core would answer on its own (pinned: `onion/core`, never escalated)."""
    reply = client.chat.completions.create(
        model="onion/core",
        messages=[{"role": "user", "content": question}],
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    text = (reply.choices[0].message.content or "").strip()
    say(f"the core alone (pinned onion/core) would answer {text!r}; gold answer {GOLD!r}")
    return text


def ask_streaming(
    client: Any, label: str, question: str, why: str, router: str, max_tokens: int = MAX_TOKENS
) -> dict[str, Any]:
    """A streamed question; SSE comments (the router's heartbeats while a layer wakes) shown."""
    say(f"{label} > {question}", who="client")
    say(why, who="router")
    started = time.monotonic()
    heartbeats = 0
    pieces: list[str] = []
    onion: dict[str, Any] = {}
    with client.chat.completions.with_streaming_response.create(
        model="onion",
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
    ) as response:
        held = response.headers.get("X-Onion-Held") == "true"
        for line in response.iter_lines():
            if line.startswith(":"):  # an SSE comment: the router's heartbeat while waking
                heartbeats += 1
                say(line[1:].strip(), who="sse")
            elif line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or []:
                    pieces.append((choice.get("delta") or {}).get("content") or "")
                onion = chunk.get("onion") or onion
    took = time.monotonic() - started
    text = "".join(pieces).strip()
    say(f"{label.split()[0].replace('Q', 'A')} < {text!r}", who="client")
    say(
        f"answered by layer {onion.get('layer')!r}, path {onion.get('path')}, {took:.1f}s "
        f"including the wake ({heartbeats} heartbeats while held)",
        who="router",
    )
    return {
        "question": question,
        "answer": text,
        "layer": onion.get("layer"),
        "path": onion.get("path", []),
        "held": held,
        "heartbeats": heartbeats,
        "seconds": round(took, 2),
        "metrics": router_metrics(router),
    }


def router_metrics(router: str) -> list[str]:
    """The router's own counters of verdicts, escalations and early wakes (Prometheus text)."""
    with urllib.request.urlopen(f"{router}/metrics", timeout=5) as resp:  # loopback only
        text = resp.read().decode()
    wanted = (
        "onion_router_judgements_total",
        "onion_router_escalations_total",
        "onion_router_early_wakes_total",
    )
    return [line for line in text.splitlines() if line.startswith(wanted)]


def run(report_path: Path | None) -> dict[str, Any]:
    from openai import OpenAI  # imported late: only the session needs it

    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    state = Path(tempfile.mkdtemp(prefix="onion-demo-", dir=base))
    logs = state / "logs"
    logs.mkdir()
    procs = Processes(logs)
    cluster = Cluster(state / "cluster")
    watcher: PhaseWatcher | None = None
    report: dict[str, Any] = {"ok": False}
    try:
        say("A real model ladder on CPU: SmolLM2-135M-Instruct (core), Qwen2.5-Coder-0.5B-Instruct")
        say("(mid), Qwen2.5-Coder-1.5B-Instruct (big; Qwen models Apache-2.0, Qwen team, Alibaba")
        say("Cloud). Tiny models show the MECHANISM, not intelligence: expect odd answers. Watch")
        say("which layer answers, when layers wake, and how the woken layer's answer compares.")
        say()
        say("starting a private Kubernetes control plane (etcd, kube-apiserver, kwok nodes)")
        cluster.start()
        cluster.kubectl("create", "namespace", NAMESPACE)
        apply_crd(cluster.handle)
        say(f"CRD onions.onion.dev installed; namespace {NAMESPACE}")

        procs.start(
            "operator",
            [str(BIN / "onion-operator"), "--namespace", NAMESPACE, "--leader-lease-seconds", "5"],
            env=cluster.env(),
        )
        say(f"onion-operator runs as a local process (watching {NAMESPACE})")

        example = yaml.safe_load(EXAMPLE.read_text())["spec"]
        idle = example["layers"][0]["idleTimeout"]
        threshold = example["core"]["escalation"]["threshold"]
        cluster.kubectl("-n", NAMESPACE, "apply", "-f", str(EXAMPLE))
        say(f"applied {EXAMPLE.relative_to(REPO)}: core + layers mid, big (idleTimeout {idle})")
        rendered = wait_until(
            "the operator to render the router ConfigMap",
            lambda: json.loads(
                cluster.kubectl(
                    "-n", NAMESPACE, "get", "configmap", f"{ONION}-router", "-o", "json"
                )
            )["data"]["config.yaml"],
            60,
        )
        procs.check_alive()
        layers = yaml.safe_load(rendered)["layers"]
        if [t["name"] for t in layers] != ["core", "mid", "big"]:
            raise RuntimeError(f"unexpected layers in the rendered router config: {layers}")

        urls = start_models(procs, layers)
        config = local_router_config(rendered, urls)
        router_port = free_port()
        config["listen"] = {"host": "127.0.0.1", "port": router_port}
        config_file = state / "router.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        say(
            "router config = the operator's ConfigMap demo-router/config.yaml with only the layer "
            "URLs replaced by the local llama.cpp servers (kwok pods run nothing):",
            who="demo",
        )
        for entry in config["layers"]:
            say(
                f"  {entry['name']:<4} {entry['url']}  model={entry['model']}  "
                f"lease={entry['lease']}  rules={entry['rules']}",
                who="demo",
            )
        # The router authenticates as the ServiceAccount the operator made for it, so it has
        # exactly its in-cluster permissions: read this Onion, renew only its demand Leases.
        router_kubeconfig = cluster.token_kubeconfig(f"{ONION}-router", state / "router.kubeconfig")
        say(f"the router runs with the token of ServiceAccount {ONION}-router (its Role only)")
        procs.start(
            "router",
            [str(BIN / "onion-router"), "--config", str(config_file), "--log-level", "warning"],
            env={**os.environ, "KUBECONFIG": router_kubeconfig},
        )
        router = f"http://127.0.0.1:{router_port}"
        wait_until("the router", lambda: http_ok(f"{router}/health"), 60)
        wait_until(
            "the core to be Ready",
            lambda: (
                (cluster.onion().get("status") or {}).get("conditions") is not None
                and phases(cluster.onion()).get("core") == "Ready"
            ),
            60,
        )
        wait_until("the router to see the Onion", lambda: http_ok(f"{router}/ready"), 60)
        say(f"onion-router listens on {router} (Kubernetes mode: Leases + Onion status)")
        watcher = PhaseWatcher(cluster)
        watcher.start()
        cluster.show_onions()
        say(f"layer phases: {phases(cluster.onion())}", who="status")
        say()

        client = OpenAI(base_url=f"{router}/v1", api_key="demo", max_retries=0, timeout=180)
        easy = ask_easy(client)
        say()
        before = phases(cluster.onion())
        alone = ask_core_alone(client, UNSURE)
        unsure = ask_streaming(
            client,
            "Q2 (the core is unsure)",
            UNSURE,
            f"the core answers first; its policy (confidence: mean token logprob < {threshold}) "
            "rejects its shaky answer and sends the request one layer out, to `mid` "
            f"(Qwen2.5-Coder-0.5B), which is {watcher.phase('mid')}: the router renews mid's "
            "demand Lease and holds the request until the Onion status says Ready (SSE "
            "heartbeats below)",
            router,
        )
        unsure["core_alone"] = alone
        unsure["gold"] = GOLD
        say(f"gold answer {GOLD!r}: the core alone said {alone!r}, mid said {unsure['answer']!r}")
        for line in unsure["metrics"]:
            say(line, who="metrics")
        procs.check_alive()
        cluster.show_onions()
        say()
        ruled = ask_streaming(
            client,
            "Q3 (a routing rule)",
            RULED,
            "the outermost layer `big` (Qwen2.5-Coder-1.5B) has a routing rule (keywords: "
            "python, sql) that matches 'Python': the request skips the core and mid and waits "
            f"for big ({watcher.phase('big')}) to wake",
            router,
            max_tokens=RULED_MAX_TOKENS,
        )
        procs.check_alive()
        cluster.show_onions()
        say(f"layer phases: {phases(cluster.onion())}", who="status")
        say()

        say(f"waiting for mid and big to go back to sleep (no demand for idleTimeout={idle})")
        slept = time.monotonic()
        wait_until(
            "mid and big to be Dormant again",
            lambda: watcher.phase("mid") == "Dormant" and watcher.phase("big") == "Dormant",
            90,
        )
        say(f"mid and big are Dormant again {time.monotonic() - slept:.0f}s after the last answer")
        replicas = {
            layer: int(
                cluster.kubectl(
                    *("-n", NAMESPACE, "get", "deployment", f"{ONION}-{layer}"),
                    *("-o", "jsonpath={.spec.replicas}"),
                )
                or 0
            )
            for layer in ("mid", "big")
        }
        say(f"deployment replicas now: {replicas}", who="kubectl")
        cluster.show_onions()
        events = cluster.kubectl(
            *("-n", NAMESPACE, "get", "events", "--field-selector", "involvedObject.kind=Onion"),
            *("--sort-by=.lastTimestamp", "-o", "custom-columns=REASON:.reason,MESSAGE:.message"),
        )
        say("the operator's Events on the Onion:", who="kubectl")
        say(events.rstrip(), who="kubectl")
        say()
        say("done: the core answered the easy question; its low confidence woke `mid` for the")
        say("multiplication (which mid got right); a rule woke `big` for the code; both went back")
        say("to zero replicas after their idle timeout. GPUs (here: CPU processes) would be paid")
        say("only while awake.")
        with watcher.lock:
            history = {k: list(v) for k, v in watcher.history.items()}
        report = {
            "ok": True,
            "easy": easy,
            "unsure": unsure,
            "ruled": ruled,
            "phases_before": before,
            "phase_history": history,
            "final_phases": phases(cluster.onion()),
            "replicas_after_sleep": replicas,
            "wall_seconds": round(time.monotonic() - T0, 1),
        }
        return report
    except BaseException as err:
        why = "interrupted" if isinstance(err, KeyboardInterrupt) else "FAILED"
        say(f"{why}; logs were in {logs} (last lines below)", who="demo")
        for log in sorted(logs.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"--- {log.name}\n" + "\n".join(tail), file=sys.stderr)
        raise
    finally:
        if watcher is not None:
            watcher.stopped.set()
            if watcher.ident is not None:  # Ctrl-C may land before the thread started
                watcher.join(timeout=5)
        procs.stop_all()
        with contextlib.suppress(Exception):
            cluster.stop()
        shutil.rmtree(state, ignore_errors=True)
        if report_path is not None:
            report_path.write_text(json.dumps(report, indent=2))
        say(f"cleaned up: processes stopped, cluster down ({time.monotonic() - T0:.0f}s in all)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, help="also write the outcome as JSON here")
    args = parser.parse_args(argv)
    try:
        with interrupt_as_exception():
            run(args.report)
    except KeyboardInterrupt:
        print("interrupted; everything the demo started was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
