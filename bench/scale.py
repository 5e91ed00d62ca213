"""The operator at cluster scale: N Onions of a core and two managed layers on one operator.

For each N (default 100, 300 and 1,000) on a fresh local cluster (etcd, kube-apiserver,
controller-manager, scheduler, kwok with enough nodes), with router replicas 0 so only the
operator and the model Deployments are measured:

  time to all Ready   N Onions created at once -> every Onion Ready, its layers Dormant;
  at rest             over a quiet window: the operator's API requests, counted by the API server's
                      audit log for the operator's own user (not by the operator's code), its CPU
                      (/proc utime+stime) and memory (RSS), and the control plane's CPU;
  wake latency        Lease renewTime patch returns -> the layer Deployment seen at replicas 1 (a
                      watch), for wakes spread over random Onions while the rest stay idle;
  sleep punctuality   renewTime + idleTimeout -> the Deployment seen at replicas 0;
  a restart           before the quiet window, the operator is killed (SIGKILL, as a crash or a
                      lost node) and a new one started at once with the same identity (as a pod's
                      restarted container); a wake is sent 2 s after it started, then 29 more one
                      at a time (each Lease patch -> replicas 1), with the new operator's CPU
                      sampled every 0.5 s and when its caches were listed (its log: the demand
                      Leases, from when it serves events, and all of them).

Writes results/scale.json (and prints a table). `--operator-source DIR/operator` runs another
checkout's operator (the same venv), to measure the code before this one side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from onion_lab.audit import Request, api_latency, audit_requests, between
from onion_lab.cluster import LocalClusterProcess
from onion_lab.operator import OperatorProcess, apply_crd
from onion_lab.paths import RESULTS
from onion_lab.stats import summary
from onion_lab.usage import cpu_seconds, rss_mib
from onion_operator.kube import Kube
from onion_operator.planner import format_time

PER_NAMESPACE = 100  # Onions per namespace (one per team, say)
RESTART_SETTLE_S = 30.0  # after a restart: leadership, the watches' listings, a pass per Onion
RESTART_WAKE_AFTER_S = 2.0  # the first wake after a restart is sent this long after it started
IDENTITY = "bench-operator"  # every operator the bench starts: a restarted container's pod name
PODS_PER_NODE = 110
DELAY = "pod-ready.stage.kwok.x-k8s.io/delay"


def onion(ns: str, i: int, layers: int, idle: str, ready_delay: str) -> dict[str, Any]:
    layer = {"idleTimeout": idle, "resources": {}, "podAnnotations": {DELAY: ready_delay}}
    return {
        "apiVersion": "onion.dev/v1alpha1",
        "kind": "Onion",
        "metadata": {"name": f"o{i:04d}", "namespace": ns},
        "spec": {
            # No GPUs asked for: kwok nodes would need one per pod otherwise.
            "core": {"model": "bench/core", "resources": {}},
            "layers": [{"name": f"l{j}", "model": f"bench/l{j}", **layer} for j in range(layers)],
            "router": {"replicas": 0},
        },
    }


class World:
    """What the bench's own watches saw (wall-clock times, the clock renewTime uses)."""

    def __init__(self) -> None:
        self.ready: set[str] = set()  # ns/onion: Ready, every layer Dormant
        self.first_ready: dict[str, float] = {}  # ns/onion -> when it first was (monotonic)
        self.replicas: dict[str, int] = {}  # ns/deployment -> spec.replicas
        self.waiters: list[tuple[str, int, asyncio.Future[float]]] = []
        self.changed = asyncio.Event()

    def saw_replicas(self, key: str, replicas: int) -> None:
        self.replicas[key] = replicas
        now = time.time()
        for entry in list(self.waiters):
            want_key, want, future = entry
            if want_key == key and want == replicas and not future.done():
                future.set_result(now)
                self.waiters.remove(entry)

    def when_replicas(self, key: str, replicas: int) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters.append((key, replicas, future))
        return future


async def watching(list_call: Any, *args: Any, **kwargs: Any) -> Any:
    """Events of a watch forever, started again after an error (a CRD's storage still
    initialising answers 429 for a moment)."""
    while True:
        try:
            async with watch.Watch().stream(list_call, *args, **kwargs) as stream:
                async for event in stream:
                    yield event
        except (ApiException, aiohttp.ClientError, TimeoutError):
            await asyncio.sleep(1)


async def watch_onions(api: client.ApiClient, world: World) -> None:
    custom = client.CustomObjectsApi(api)
    async for event in watching(
        custom.list_cluster_custom_object, "onion.dev", "v1alpha1", "onions"
    ):
        obj = event["object"]
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        status = obj.get("status") or {}
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
        )
        dormant = all(
            e.get("phase") == "Dormant" for e in status.get("layers") or [] if e["managed"]
        )
        fresh = status.get("observedGeneration") == obj["metadata"].get("generation")
        if ready and dormant and fresh and status.get("layers"):
            world.ready.add(key)
            world.first_ready.setdefault(key, time.monotonic())
        else:
            world.ready.discard(key)
        world.changed.set()


async def watch_deployments(api: client.ApiClient, world: World) -> None:
    apps = client.AppsV1Api(api)
    async for event in watching(
        apps.list_deployment_for_all_namespaces, label_selector="onion.dev/component=model"
    ):
        dep = event["object"]
        world.saw_replicas(f"{dep.metadata.namespace}/{dep.metadata.name}", dep.spec.replicas or 0)


async def sample_cpu(pid: int, seconds: float, every: float = 0.5) -> dict[str, Any]:
    """A process's CPU over `seconds` from now: in all, and its start-up work: how long until it
    first stayed under a fifth of a core for a second, and how many cores it used until then."""
    start, before = time.monotonic(), cpu_seconds(pid)
    samples: list[tuple[float, float]] = []  # (seconds since start, cores over the sample)
    last = before
    while time.monotonic() - start < seconds:
        await asyncio.sleep(every)
        now = cpu_seconds(pid)
        samples.append((round(time.monotonic() - start, 2), round((now - last) / every, 3)))
        last = now
    quiet = 0.2
    busy_s = next(
        (
            samples[i - 1][0] if i else 0.0
            for i in range(len(samples) - 1)
            if samples[i][1] < quiet and samples[i + 1][1] < quiet
        ),
        samples[-1][0] if samples else 0.0,
    )
    used = sum(cores * every for t, cores in samples if t <= busy_s)
    return {
        "cpu_s": round(last - before, 2),
        "busy_s": busy_s,
        "busy_cores": round(used / busy_s, 2) if busy_s else 0.0,
        "samples": samples,
    }


def logged_s(log: str, marker: str, started_at: float) -> float | None:
    """When the operator's log first said `marker`, in seconds after `started_at` (wall clock),
    or None if it did not say it."""
    for line in log.splitlines():
        if marker in line and line.startswith("["):  # kopf's "[%(asctime)s] ..."
            try:
                when = datetime.fromisoformat(line[1 : line.index("]")].replace(",", "."))
            except ValueError:
                return None
            return round(when.timestamp() - started_at, 3)  # naive: local time, as time.time()
    return None


async def measure(
    local: LocalClusterProcess,
    n: int,
    layers: int,
    rest_s: float,
    wakes: int,
    restart_wakes: int,
    idle_s: float,
    ready_delay: str,
    restart: Callable[[], OperatorProcess],
    profile: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    cluster_state = local.state()
    kube = await Kube.connect(cluster_state["kubeconfig"])
    world = World()
    watchers = [asyncio.create_task(w(kube.api, world)) for w in (watch_onions, watch_deployments)]
    namespaces = [f"scale-{k}" for k in range(math.ceil(n / PER_NAMESPACE))]
    onions = [
        onion(namespaces[i // PER_NAMESPACE], i, layers, f"{idle_s:g}s", ready_delay)
        for i in range(n)
    ]
    result: dict[str, Any] = {"onions": n, "managed_layers_per_onion": layers}

    async def demand(obj: dict[str, Any], j: int) -> datetime:
        """What the router does for a request to layer j: renew its demand Lease."""
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        renew = datetime.now(UTC)
        patch = {"spec": {"renewTime": format_time(renew), "holderIdentity": "bench"}}
        await kube.merge_patch("Lease", ns, f"{name}-l{j}-demand", patch)
        return renew

    async def wake_and_wait(obj: dict[str, Any], j: int, limit_s: float) -> float | None:
        """Seconds from a demand Lease patch returning to replicas 1; None past `limit_s`."""
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}-l{j}"
        scaled = world.when_replicas(key, 1)
        await demand(obj, j)
        returned = time.time()
        try:
            return await asyncio.wait_for(scaled, limit_s) - returned
        except TimeoutError:
            return None

    try:
        # --- N Onions at once -> all Ready ---------------------------------------------------
        started, create_start = time.monotonic(), time.time()
        gate = asyncio.Semaphore(16)

        async def create(obj: dict[str, Any]) -> None:
            async with gate:
                await kube.create(obj)

        await asyncio.gather(*(create(o) for o in onions))
        created = time.monotonic()
        while len(world.ready) < n:
            world.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(world.changed.wait(), 5)
            for task in watchers:
                if task.done():
                    task.result()  # a watch that failed says why
            if time.monotonic() - started > 60 + n * 1.5:
                raise TimeoutError(f"only {len(world.ready)}/{n} Onions Ready")
        all_ready, all_ready_at = time.monotonic(), time.time()
        result["create_s"] = round(created - started, 1)
        result["time_to_all_ready_s"] = round(all_ready - started, 1)
        each = sorted(t - started for t in world.first_ready.values())
        result["time_to_ready_s"] = {
            f"p{q}": round(each[min(len(each) - 1, len(each) * q // 100)], 1) for q in (10, 50, 90)
        }
        print(f"  {n} Onions Ready {all_ready - started:.1f}s after the first create", flush=True)

        # --- at rest ------------------------------------------------------------------------
        # Restart the operator first: an operator that has run for a while has its Onions'
        # drift repairs spread over the period (one just created would repair them all half a
        # period after their creation), and a restart at this scale is worth measuring too.
        await asyncio.sleep(10)  # let the controller-manager and kwok finish their part
        restarted_at = time.time()
        operator = await asyncio.to_thread(restart)
        started_at = time.time()
        cpu_trace = asyncio.create_task(sample_cpu(operator.pid(), RESTART_SETTLE_S))
        if profile is not None:  # where the new operator's first seconds go
            profile(operator.pid(), n)
        # Wakes right after the restart, one at a time: the first 2 s after the new operator
        # started, the rest after it; distinct Onions, none of them among the later wakes.
        rng = random.Random(n)
        after_restart_targets = [(o, layers - 1) for o in rng.sample(onions, restart_wakes)]
        await asyncio.sleep(max(0.0, started_at + RESTART_WAKE_AFTER_S - time.time()))
        restart_wakes: list[dict[str, float | None]] = []
        for obj, j in after_restart_targets:
            sent = time.time()
            took = await wake_and_wait(obj, j, RESTART_SETTLE_S)
            restart_wakes.append({"sent_after_start_s": sent - started_at, "wake_s": took})
        restart_cpu = await cpu_trace
        # The restart's wakes sleep idle_s later: let them, before the quiet window.
        await asyncio.sleep(idle_s + 5)
        pids = {"operator": operator.pid(), **cluster_state["pids"]}
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        rest_start, t0 = time.time(), time.monotonic()
        await asyncio.sleep(rest_s)
        rest_end, elapsed = time.time(), time.monotonic() - t0
        cpu = {name: (cpu_seconds(pid) - cpu0[name]) / elapsed for name, pid in pids.items()}
        memory = rss_mib(pids["operator"])
        load = os.getloadavg()
        listed_s = {
            what: logged_s(operator.logs(), marker, started_at)
            for what, marker in (("leases", " Leases of "), ("all", " Onions queued, "))
        }

        # --- wakes under that load, then sleeps ---------------------------------------------
        restarted = {o["metadata"]["name"] for o, _ in after_restart_targets}
        targets = rng.sample(
            [
                (o, j)
                for o in onions
                for j in range(layers)
                if o["metadata"]["name"] not in restarted
            ],
            min(wakes, n),
        )
        records: list[dict[str, Any]] = []
        missed: list[str] = []  # no wake within 30 s, or no sleep within idleTimeout + 60 s
        sleeps: list[asyncio.Task[None]] = []

        async def wake(obj: dict[str, Any], j: int) -> None:
            ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
            key = f"{ns}/{name}-l{j}"
            scaled = world.when_replicas(key, 1)
            sent = time.time()
            renew = await demand(obj, j)
            returned = time.time()
            due = (renew + timedelta(seconds=idle_s)).timestamp()
            try:
                seen = await asyncio.wait_for(scaled, 30)
                asleep = world.when_replicas(key, 0)
                slept = await asyncio.wait_for(asleep, idle_s + 60)
            except TimeoutError:
                missed.append(key)  # counted, not measured
                return
            records.append(
                {
                    "key": key,
                    "sent": sent,
                    "returned": returned,
                    "seen": seen,
                    "due": due,
                    "slept": slept,
                }
            )

        for obj, j in targets:
            sleeps.append(asyncio.create_task(wake(obj, j)))
            await asyncio.sleep(0.5)
        await asyncio.gather(*sleeps)
        # The audit log is written in batches: give the last ones a moment.
        await asyncio.sleep(2)
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await kube.close()

    everything = audit_requests(Path(cluster_state["audit_log"]), "onion-operator")
    requests = between(everything, rest_start, rest_end)
    per_s = len(requests) / (rest_end - rest_start)
    after_restart = between(everything, restarted_at, started_at + RESTART_SETTLE_S)
    first, rest_wakes = restart_wakes[0], restart_wakes[1:]
    first_wake_s = first["wake_s"]
    sent_after = first["sent_after_start_s"]
    result["restart"] = {
        "how": "SIGKILL, a new operator with the same identity started at once",
        "window_s": RESTART_SETTLE_S,
        "operator_requests": len(after_restart),
        "by_request": dict(Counter(r.what for r in after_restart).most_common()),
        "leases_listed_after_start_s": listed_s["leases"],
        "caches_listed_after_start_s": listed_s["all"],
        "first_wake_sent_after_start_s": None if sent_after is None else round(sent_after, 3),
        "first_wake_s": None if first_wake_s is None else round(first_wake_s, 3),
        "first_wake_served_after_start_s": (
            None
            if first_wake_s is None or sent_after is None
            else round(sent_after + first_wake_s, 3)
        ),
        "next_wakes": summary([w["wake_s"] for w in rest_wakes if w["wake_s"] is not None]),
        "wakes_missed": sum(1 for w in restart_wakes if w["wake_s"] is None),
        "wakes": [
            {k: None if v is None else round(v, 3) for k, v in w.items()} for w in restart_wakes
        ],
        "operator_cpu_s": restart_cpu["cpu_s"],
        "operator_busy_s": restart_cpu["busy_s"],
        "operator_busy_cores": restart_cpu["busy_cores"],
        "cpu_samples": restart_cpu["samples"],
    }
    result["creating"] = {
        "operator_requests": len(between(everything, create_start, all_ready_at)),
        "api_seconds": api_latency(between(everything, create_start, all_ready_at)),
    }
    result["rest"] = {
        "window_s": round(rest_end - rest_start, 1),
        "operator_requests": len(requests),
        "requests_per_s": round(per_s, 3),
        "requests_per_s_per_onion": round(per_s / n, 5),
        "by_request": dict(Counter(r.what for r in requests).most_common()),
        "operator_cpu_cores": round(cpu["operator"], 4),
        **{f"operator_{k}": v for k, v in memory.items()},
        "operator_rss_mib_per_onion": round(memory["rss_mib"] / n, 4),
        "control_plane_cpu_cores": {k: round(v, 3) for k, v in cpu.items() if k != "operator"},
        "loadavg_1_5_15": [round(x, 2) for x in load],
    }
    # Where a wake's time goes: the operator's Deployment patch in the audit log splits it into
    # the operator's reaction (watch event -> kopf -> a pass -> the patch sent) and the API server.
    patches = [r for r in everything if r.what == "patch deployments"]

    def first_patch(key: str, after: float) -> Request | None:
        return min(
            (r for r in patches if r.name == key and r.received >= after),
            default=None,
            key=lambda r: r.received,
        )

    reaction, api, act_late = [], [], []
    for rec in records:
        woke = first_patch(rec["key"], rec["sent"])
        if woke is not None:
            reaction.append(max(0.0, woke.received - rec["returned"]))
            api.append(woke.seconds)
        slept = first_patch(rec["key"], rec["due"] - 1)
        if slept is not None:
            act_late.append(slept.received - rec["due"])
    result["wakes_or_sleeps_missed"] = missed
    result["wake_lease_patch_to_replicas_1"] = summary(
        [max(0.0, r["seen"] - r["returned"]) for r in records]
    )
    result["wake_from_sending_the_patch"] = summary([r["seen"] - r["sent"] for r in records])
    result["wake_operator_reaction"] = summary(reaction)
    result["wake_deployment_patch_in_api"] = summary(api)
    result["sleep_after_idle_timeout"] = summary([r["slept"] - r["due"] for r in records])
    result["sleep_patch_sent_after_idle_timeout"] = summary(act_late)
    result["samples_s"] = {
        "wake": [round(max(0.0, r["seen"] - r["returned"]), 4) for r in records],
        "sleep_late": [round(r["slept"] - r["due"], 4) for r in records],
    }
    return result


def py_spy(out: Path, pid: int, n: int) -> None:
    """Sample `pid` with py-spy for the restart's settling time, in the background: collapsed
    stacks (`--format raw`, one line a stack with its count) to read where the time went."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(RESTART_SETTLE_S)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out / f"restart-{n}.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def memory_fit(points: list[tuple[int, float]]) -> dict[str, float]:
    """RSS = base + slope x Onions, least squares: the curve to read 10,000 Onions from."""
    xs, ys = [float(x) for x, _ in points], [y for _, y in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    return {"base_mib": round(mean_y - slope * mean_x, 1), "mib_per_onion": round(slope, 4)}


def run_one(n: int, args: argparse.Namespace) -> dict[str, Any]:
    nodes = math.ceil((n + args.wakes) / (PODS_PER_NODE - 10)) + 1
    local = LocalClusterProcess(nodes=nodes, audit=True)
    cluster = local.start()
    operator = None
    extra = ["--all-namespaces", "--leader-namespace", "scale-0", "--identity", IDENTITY]
    extra += ["--leader-lease-seconds", "15", *args.operator_args]

    def start() -> OperatorProcess:
        nonlocal operator
        if operator is not None:
            operator.kill()  # SIGKILL: nothing handed over, its watches and passes cut off
            operator.stop(show_log=False)  # (removes its log)
        operator = OperatorProcess(
            cluster,
            "scale-0",
            *extra,
            kubeconfig=local.state()["operator_kubeconfig"],
            verbose=args.verbose,
            pythonpath=args.pythonpath,
        ).start()
        return operator

    try:
        apply_crd(cluster)
        for k in range(math.ceil(n / PER_NAMESPACE)):
            cluster.kubectl("create", "namespace", f"scale-{k}")
        print(f"N={n}: {nodes} kwok nodes, operator pid {start().pid()}", flush=True)
        result = asyncio.run(
            measure(
                local,
                n,
                args.layers,
                args.rest,
                args.wakes,
                min(args.restart_wakes, n),
                args.idle,
                args.ready_delay,
                start,
                None if args.py_spy is None else partial(py_spy, args.py_spy),
            )
        )
        result["kwok_nodes"] = nodes
    except BaseException:
        if operator is not None:
            operator.stop(show_log=True)  # its log's tail says why
        raise
    finally:
        if operator is not None:
            if args.keep_logs is not None:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(operator.log, args.keep_logs / f"operator-{n}.log")
            operator.stop(show_log=False)
        if args.keep_logs is not None:
            shutil.copy(local.state()["audit_log"], args.keep_logs / f"audit-{n}.log")
        local.stop()
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onions", type=int, nargs="+", default=[100, 300, 1000, 3000])
    p.add_argument("--layers", type=int, default=2, help="managed layers per Onion (plus the core)")
    p.add_argument("--rest", type=float, default=120.0, help="seconds of the at-rest window")
    p.add_argument("--wakes", type=int, default=60)
    p.add_argument(
        "--restart-wakes", type=int, default=30, help="wakes one at a time after the restart"
    )
    p.add_argument("--idle", type=float, default=10.0, help="the layers' idleTimeout, seconds")
    p.add_argument("--ready-delay", default="1s", help="kwok pod-ready delay of the layers")
    p.add_argument("--operator-source", type=Path, help="run this checkout's operator/ instead")
    p.add_argument("--operator-args", nargs="*", default=[], help="extra onion-operator flags")
    p.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    p.add_argument("--keep-logs", type=Path, help="copy the audit and operator logs here")
    p.add_argument("--label", help="what is measured, for the JSON (default: the source)")
    p.add_argument("--verbose", action="store_true", help="run the operator with --verbose")
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="py-spy the restarted operator for 30 s (pip install py-spy); stacks into DIR",
    )
    args = p.parse_args()
    args.pythonpath = None
    if args.operator_source is not None:
        src = args.operator_source.resolve()
        args.pythonpath = f"{src}:{src.parent / 'router'}"

    runs = []
    for n in args.onions:
        runs.append(run_one(n, args))
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "samples_s"}, indent=2))
    result = {
        "benchmark": "scale",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "operator": args.label or str(args.operator_source or "this checkout"),
        "operator_args": args.operator_args,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "note": "shared with other work; the control plane runs on the same cores",
        },
        "goals": {
            "requests_per_s_per_onion_at_rest": 0.05,
            "wake_p99_ms_at_1000": 1000,
            "asleep_within_s_of_idle_timeout": 2,
        },
        "idle_timeout_s": args.idle,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        "\n| Onions | to all Ready | requests/s at rest (per Onion) | CPU | RSS (per Onion) "
        "| wake p50/p99 | asleep after idleTimeout p50/p99 | restart: Leases / all listed "
        "| first wake (after start) | next 29 wakes p50 | CPU busy after the restart |"
    )
    for r in runs:
        rest, w, s = r["rest"], r["wake_lease_patch_to_replicas_1"], r["sleep_after_idle_timeout"]
        restart = r["restart"]
        print(
            f"| {r['onions']} | {r['time_to_all_ready_s']} s | {rest['requests_per_s']} "
            f"({rest['requests_per_s_per_onion']}) | {rest['operator_cpu_cores']} | "
            f"{rest['operator_rss_mib']} MiB ({rest['operator_rss_mib_per_onion']}) | "
            f"{w.get('p50_ms')} / {w.get('p99_ms')} ms | "
            f"{s.get('p50_ms')} / {s.get('p99_ms')} ms | "
            f"{restart['leases_listed_after_start_s']} / "
            f"{restart['caches_listed_after_start_s']} s | "
            f"{restart['first_wake_s']} s "
            f"({restart['first_wake_served_after_start_s']} s) | "
            f"{restart['next_wakes'].get('p50_ms')} ms | {restart['operator_busy_cores']} cores "
            f"for {restart['operator_busy_s']} s |"
        )
    if len(runs) > 1:
        fit = memory_fit([(r["onions"], r["rest"]["operator_rss_mib"]) for r in runs])
        result["memory_fit"] = fit
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"RSS ~ {fit['base_mib']} MiB + {fit['mib_per_onion']} MiB per Onion "
            f"(least squares over {len(runs)} sizes): "
            f"{fit['base_mib'] + 10_000 * fit['mib_per_onion']:.0f} MiB at 10,000 Onions"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
