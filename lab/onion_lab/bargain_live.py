"""The bargain, live: a slice of the trace replayed, `factor` times faster than it happened,
through the real onion-router (Kubernetes mode) and the real onion-operator on the local
cluster (kwok nodes: a layer's pod turns Ready after its stated cold start, divided by the
factor). Each layer is served by a bank replay engine (onion_lab.bank_replay: a test double of
the model that answers with the bank's recorded answers at the recorded speed times the factor),
on 127.0.0.1 like everything else started here; everything is stopped at the end.

Per request the client (httpx, streaming) records the layer that answered and its path (the
router's `onion` field), whether the router held it for a waking layer (a heartbeat comment:
the router's heartbeat is set to 0.1 s for this), and its latency. Each layer's awake time is
read from a watch on its Deployment (spec.replicas, the operator's decision, as the simulator
counts it). Everything is reported in trace time (x factor).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from onion_contract import names
from onion_lab import bargain_report, bargain_run, bargain_spec, embedder_files, recorder
from onion_lab.bargain import LAYERS, EscalationPolicy
from onion_lab.bargain_report import Served
from onion_lab.cluster import Cluster, LocalClusterProcess
from onion_lab.datasets import DATASETS
from onion_lab.operator import OperatorProcess, apply_crd
from onion_lab.sockets import free_port
from onion_lab.waiting import wait_until

ONION = "bargain"
ROUTER_BIN = Path(sys.executable).with_name("onion-router")
HEARTBEAT_SECONDS = 0.1  # real seconds: a held request shows within a tenth of a second
WHOLE_ANSWER_TOKENS = 100_000  # the router judges whole answers, as the bank's scores are


# --- processes on 127.0.0.1 -------------------------------------------------------------------


class Process:
    """A command in its own session, output to a log file; stop() ends it and its group."""

    def __init__(self, argv: list[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.argv, self.log = argv, log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def _healthy(url: str, proc: Process) -> bool:
    if not proc.alive():
        raise RuntimeError(f"{proc.argv[:3]} exited: {proc.log.read_text()[-2000:]}")
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    return False


@contextlib.contextmanager
def engines(bank: Path, factor: float, workdir: Path) -> Iterator[dict[str, str]]:
    """One bank replay engine per layer; yields their base URLs (OpenAI API under /v1)."""
    started: list[Process] = []
    urls = {}
    try:
        for layer in LAYERS:
            port = free_port()
            argv = [sys.executable, "-m", "onion_lab.bank_replay", "--layer", layer]
            argv += ["--port", str(port), "--bank", str(bank), "--speed", str(factor)]
            started.append(Process(argv, workdir / f"engine-{layer}.log"))
            urls[layer] = f"http://127.0.0.1:{port}"
        for (layer, url), proc in zip(urls.items(), started, strict=True):
            wait_until(
                lambda u=url, p=proc: _healthy(u, p), timeout=180, what=f"replay engine {layer}"
            )
        yield {layer: f"{url}/v1" for layer, url in urls.items()}
    finally:
        for proc in started:
            proc.stop()


# --- the router's config: the operator's, pointed at this machine -------------------------------


def local_config(
    rendered: Mapping[str, Any], urls: Mapping[str, str], learned: Path | None
) -> dict[str, Any]:
    """The operator's rendered router config with the layers' URLs at the replay engines, the
    learned models' mounted paths at local files, whole-answer judging and a fast heartbeat."""
    config = json.loads(json.dumps(rendered))
    key = "layers" if "layers" in config else "tiers"  # the router's older spelling: tiers
    for tier in config[key]:
        tier["url"] = urls[tier["name"]]

    def relink(node: Any) -> None:
        if isinstance(node, dict):
            path = node.get("path")
            if learned is not None and isinstance(path, str) and "bargain-learned-" in path:
                name = path.split("bargain-learned-", 1)[1].split("/", 1)[0]
                node["path"] = str(learned / f"{name}.json")
            for value in node.values():
                relink(value)
        elif isinstance(node, list):
            for value in node:
                relink(value)

    relink(config)
    config["heartbeatSeconds"] = HEARTBEAT_SECONDS
    config["streamBufferTokens"] = WHOLE_ANSWER_TOKENS
    config["listen"] = {"host": "127.0.0.1", "port": 0}
    with contextlib.suppress(Exception):
        config["embedder"] = str(embedder_files.folder())
    return config


# --- what the client and the watch saw ----------------------------------------------------------


@dataclass
class Seen:
    start: float = 0.0
    end: float = 0.0
    layer: str = ""
    path: tuple[str, ...] = ()
    held: bool = False
    text: str = ""
    error: str | None = None


@dataclass
class Timeline:
    """(time, replicas) per layer, from the Deployments' watch."""

    changes: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def set(self, layer: str, when: float, replicas: int) -> None:
        points = self.changes.setdefault(layer, [])
        if not points or points[-1][1] != replicas:
            points.append((when, replicas))

    def awake(self, layer: str, start: float, end: float) -> float:
        """Seconds in [start, end] with at least one replica wanted."""
        total = 0.0
        points = [*self.changes.get(layer, []), (end, 0)]
        for (t, n), (t_next, _) in itertools.pairwise(points):
            lo, hi = max(t, start), min(t_next, end)
            if n > 0 and hi > lo:
                total += hi - lo
        return total

    def wakes(self, layer: str) -> int:
        points = [(0.0, 0), *self.changes.get(layer, [])]
        return sum(1 for (_, n), (_, m) in itertools.pairwise(points) if n == 0 and m > 0)

    def replicas(self, layer: str) -> int:
        points = self.changes.get(layer) or [(0.0, 0)]
        return points[-1][1]


async def _watch(cluster: Cluster, namespace: str, timeline: Timeline, stop: asyncio.Event) -> None:
    from kubernetes_asyncio import client, config, watch

    api = await config.new_client_from_config(config_file=cluster.kubeconfig)
    apps = client.AppsV1Api(api)
    children = {names.child_name(ONION, layer): layer for layer in LAYERS[1:]}
    try:
        while not stop.is_set():
            w = watch.Watch()
            listing = apps.list_namespaced_deployment
            async for event in w.stream(listing, namespace, timeout_seconds=5):
                obj = event["object"]
                layer = children.get(obj.metadata.name)
                if layer is not None:
                    timeline.set(layer, time.monotonic(), int(obj.spec.replicas or 0))
                if stop.is_set():
                    break
    finally:
        await api.close()


async def _ask(http: httpx.AsyncClient, router: str, body: Mapping[str, Any], seen: Seen) -> None:
    seen.start = time.monotonic()
    try:
        async with http.stream("POST", f"{router}/v1/chat/completions", json=body) as reply:
            if reply.status_code != 200:
                seen.error = f"HTTP {reply.status_code}: {(await reply.aread())[:300]!r}"
                return
            # Who answered: the headers when it was not held, else the chunks' `onion` field
            # (an answer with no text has no chunk to carry it).
            header_path = reply.headers.get("x-onion-path") or ""
            if header_path:
                seen.layer = reply.headers.get("x-onion-layer") or ""
                seen.path = tuple(header_path.split(","))
            async for line in reply.aiter_lines():
                if line.startswith(": waiting for layer"):
                    seen.held = True
                elif line.startswith("data: {"):
                    data = json.loads(line[6:])
                    if "error" in data:
                        seen.error = str(data["error"])[:300]
                    meta = data.get("onion") or {}
                    if meta.get("layer"):
                        seen.layer, seen.path = meta["layer"], tuple(meta.get("path") or ())
                    for choice in data.get("choices") or []:
                        seen.text += (choice.get("delta") or {}).get("content") or ""
    except httpx.HTTPError as err:
        seen.error = repr(err)
    finally:
        seen.end = time.monotonic()


def request_body(dataset: str, qid: str) -> dict[str, Any]:
    """The recorded request of the question (its messages and max_tokens), to the router."""
    data = DATASETS[dataset]
    recorded = recorder.answer_request(data, data.item(qid))
    return {
        "model": "onion",
        "messages": recorded["messages"],
        "max_tokens": recorded["max_tokens"],
        "temperature": 0,
        "stream": True,
    }


async def _drive(
    cluster: Cluster,
    namespace: str,
    router: str,
    setup: bargain_run.Setup,
    factor: float,
) -> tuple[list[Seen], Timeline, float]:
    timeline = Timeline()
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(cluster, namespace, timeline, stop))
    await asyncio.sleep(1.0)  # the watch's first listing
    seen = [Seen() for _ in setup.asks]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    timeout = httpx.Timeout(setup.horizon / factor + 60)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        t0 = time.monotonic()
        tasks = []
        for arrival, (dataset, qid), s in zip(setup.arrivals, setup.asks, seen, strict=True):
            delay = t0 + arrival.time / factor - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = request_body(dataset, qid)
            tasks.append(asyncio.create_task(_ask(http, router, body, s)))
        await asyncio.gather(*tasks)
    # The layers' tail: until both sleep, or the horizon.
    end = t0 + setup.horizon / factor
    while time.monotonic() < end and any(timeline.replicas(n) for n in LAYERS[1:]):  # noqa: ASYNC110
        await asyncio.sleep(0.2)  # the watch task fills the timeline
    stop.set()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await watcher
    return seen, timeline, t0


# --- one combination ------------------------------------------------------------------------------


def _service(
    setup: bargain_run.Setup, policy: EscalationPolicy, ask: tuple[str, str], path: Sequence[str]
) -> float:
    """The answering layers' own seconds on this path, as the simulator counts them (a judged
    layer's with its policy's probes)."""
    total = 0.0
    for layer in path:
        signal = "answer" if layer == LAYERS[-1] else policy.signals.get(layer, "answer")
        total += setup.answers[(*ask, layer)].seconds[signal]
    return total


def served_live(
    setup: bargain_run.Setup, policy: EscalationPolicy, seen: Sequence[Seen], factor: float
) -> tuple[list[Served], dict[str, Any]]:
    out: list[Served] = []
    problems: dict[str, Any] = {"errors": 0, "textDiffers": 0, "examples": []}
    for ask, s in zip(setup.asks, seen, strict=True):
        key = "|".join(ask)
        if s.error or not s.layer:
            problems["errors"] += 1
            if len(problems["examples"]) < 3:
                problems["examples"].append(
                    f"{key}: {s.error or f'no layer named, text {s.text!r}'}"
                )
            out.append(Served(False, s.path, s.held, (s.end - s.start) * factor, key))
            continue
        answer = setup.answers[(*ask, s.layer)]
        question = next(q for q in setup.questions[ask[0]] if q.id == ask[1])
        if s.text != question.rows[s.layer]["answer"]:
            problems["textDiffers"] += 1
        added = (s.end - s.start) * factor - _service(setup, policy, ask, s.path)
        out.append(Served(answer.correct, s.path, s.held, max(0.0, added), key))
    return out, problems


def run_one(
    cluster: Cluster,
    setup: bargain_run.Setup,
    policy: EscalationPolicy,
    idle: str,
    factor: float,
    urls: Mapping[str, str],
    big: Mapping[str, Any],
    workdir: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    learned = setup.learned.folder if setup.learned else None
    wake_cut = setup.learned.wake_cut if setup.learned else None
    body = bargain_spec.onion_body(policy, bargain_spec.IDLE[idle], factor, wake_cut=wake_cut)
    onion = {"apiVersion": "onion.dev/v1alpha1", "kind": "Onion", "metadata": {"name": ONION}}
    with cluster.new_namespace("bargain") as ns:
        if learned is not None and "learned" in policy.signals.values():
            for name in bargain_spec_files(policy):
                cluster.kubectl(
                    "-n",
                    ns,
                    "create",
                    "configmap",
                    bargain_spec.model_map(name),
                    f"--from-file={bargain_spec.MODEL_KEY}={learned / f'{name}.json'}",
                )
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=yaml.safe_dump({**onion, "spec": body}))
        operator = OperatorProcess(cluster, ns).start()
        router: Process | None = None
        try:
            rendered = wait_until(lambda: _rendered(cluster, ns), timeout=60, what="router config")
            config = local_config(rendered, urls, learned)
            port = free_port()
            config_path = workdir / f"router-{ns}.yaml"
            config_path.write_text(yaml.safe_dump(config))
            argv = [str(ROUTER_BIN), "--config", str(config_path)]
            argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            router = Process(argv, workdir / f"router-{ns}.log", {"KUBECONFIG": cluster.kubeconfig})
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _healthy(url, router), timeout=60, what="router /health")
            wait_until(lambda: _layers_known(cluster, ns), timeout=60, what="Onion status")
            say(f"live: {policy.name} x {idle}: {len(setup.asks)} requests at {factor:g}x in {ns}")
            started = time.monotonic()
            seen, timeline, t0 = asyncio.run(_drive(cluster, ns, url, setup, factor))
            wall = time.monotonic() - started
        finally:
            if router is not None:
                router.stop()
            operator.stop(show_log=False)
    served, problems = served_live(setup, policy, seen, factor)
    end = t0 + setup.horizon / factor
    awake = {layer: timeline.awake(layer, t0, end) * factor for layer in LAYERS[1:]}
    wakes = {layer: timeline.wakes(layer) for layer in LAYERS[1:]}
    return bargain_run.row(
        setup,
        policy,
        idle,
        served,
        awake,
        big,
        "live",
        factor,
        wakes,
        problems=problems,
        wallSeconds=round(wall, 1),
    )


def bargain_spec_files(policy: EscalationPolicy) -> list[str]:
    files = [layer for layer, signal in policy.signals.items() if signal == "learned"]
    return files + (["core-prompt"] if policy.early_wake else [])


def _rendered(cluster: Cluster, ns: str) -> dict[str, Any] | None:
    done = cluster.kubectl(
        "-n",
        ns,
        "get",
        "configmap",
        names.router_config_name(ONION),
        "-o",
        "jsonpath={.data.config\\.yaml}",
        check=False,
    )
    return yaml.safe_load(done.stdout) if done.returncode == 0 and done.stdout else None


def _layers_known(cluster: Cluster, ns: str) -> bool:
    status = cluster.kubectl_json("-n", ns, "get", "onion", ONION).get("status") or {}
    phases = {e["name"]: e.get("phase") for e in status.get("layers") or []}
    return all(phases.get(layer) for layer in LAYERS[1:])


# --- the whole live part ----------------------------------------------------------------------


def replay(
    setup: bargain_run.Setup,
    pairs: Sequence[tuple[str, str]],
    factor: float,
    bank: Path,
    say: Callable[[str], None] = print,
    cluster: Cluster | None = None,
) -> dict[str, Any]:
    """Each (policy name, idle) pair live on the slice, beside the simulator on the same slice
    compressed the same way and at trace speed; and how far apart they are."""
    by_name = {p.name: p for p in setup.policies}
    failed = True
    big, _ = bargain_run.baselines(setup)
    rows, compared = [], []
    workdir = Path(tempfile.mkdtemp(prefix="onion-bargain-"))
    with contextlib.ExitStack() as stack:
        # The logs and configs of this run, removed when it succeeds (kept to debug a failure).
        stack.callback(lambda: print(f"bench-bargain: logs kept in {workdir}") if failed else None)
        if cluster is None:
            say("starting the local cluster (kwok nodes) and the replay engines")
            cluster = stack.enter_context(LocalClusterProcess(nodes=3))
        urls = stack.enter_context(engines(bank, factor, workdir))
        apply_crd(cluster)
        for name, idle in pairs:
            policy = by_name[name]
            live = run_one(cluster, setup, policy, idle, factor, urls, big, workdir, say)
            same = bargain_run.simulate(setup, policy, idle, big, factor=factor)
            trace_speed = bargain_run.simulate(setup, policy, idle, big)
            rows.append(live)
            compared.append(
                {
                    "name": name,
                    "idle": idle,
                    "live": _brief(live),
                    "simulatedCompressed": _brief(same),
                    "simulatedTraceSpeed": _brief(trace_speed),
                    "liveMinusSimulatedCompressed": bargain_report.distance(same, live),
                    "liveMinusSimulatedTraceSpeed": bargain_report.distance(trace_speed, live),
                }
            )
            say(f"live {name} x {idle}: {_brief(live)}")
            say(f"  simulated the same way: {_brief(same)}")
        failed = False
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "requests": len(setup.asks),
        "traceSeconds": round(setup.horizon, 1),
        "compression": factor,
        "rows": rows,
        "compared": compared,
    }


def _brief(row: Mapping[str, Any]) -> dict[str, Any]:
    keys = (*bargain_report.COMPARED, "accuracyShare", "gpuShareCoreOnDevice", "escalationRate")
    return {k: row.get(k) for k in (*keys, "wakes", "problems")}
