"""Wake-latency benchmark of the operator on a real API server (the local cluster by default).

Two numbers per wake, p50/p99 over at least 30 wakes:
  demand -> replicas: the router-style Lease renewTime patch returns -> the layer Deployment
                      is seen with spec.replicas 1 (a watch);
  ready -> status:    the layer's pod is seen Ready (kwok, after its simulated load delay) ->
                      the Onion is seen with status.layers[].phase Ready (a watch).
Writes results/wake-latency.json. `--external` uses $KUBECONFIG instead of a private cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, watch

from onion_lab.cluster import Cluster, LocalClusterProcess
from onion_lab.operator import OperatorProcess, apply_crd
from onion_lab.paths import RESULTS
from onion_lab.stats import summary
from onion_operator.kube import Kube
from onion_operator.planner import format_time

LAYERS = ("l1", "l2", "l3")
ONION = "bench"


class Seen:
    """Timestamps (monotonic) of what the watches saw, and waiters for predicates."""

    def __init__(self) -> None:
        self.replicas: dict[str, int] = {}
        self.pod_ready: dict[str, bool] = {}
        self.pods: dict[str, int] = {}
        self.phase: dict[str, str] = {}
        self.changed = asyncio.Condition()

    async def until(self, check: Callable[[], bool], limit: float) -> float:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(check), limit)
        return time.monotonic()

    async def note(self) -> None:
        async with self.changed:
            self.changed.notify_all()


async def watch_deployments(api: client.ApiClient, ns: str, seen: Seen) -> None:
    apps = client.AppsV1Api(api)
    async with watch.Watch().stream(
        apps.list_namespaced_deployment, ns, label_selector="onion.dev/component=model"
    ) as stream:
        async for event in stream:
            dep = event["object"]
            seen.replicas[dep.metadata.labels["onion.dev/layer"]] = dep.spec.replicas or 0
            await seen.note()


async def watch_pods(api: client.ApiClient, ns: str, seen: Seen) -> None:
    core = client.CoreV1Api(api)
    pods: dict[str, tuple[str, bool]] = {}
    async with watch.Watch().stream(
        core.list_namespaced_pod, ns, label_selector="onion.dev/component=model"
    ) as stream:
        async for event in stream:
            pod = event["object"]
            layer = pod.metadata.labels["onion.dev/layer"]
            ready = any(
                c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])
            )
            if event["type"] == "DELETED":
                pods.pop(pod.metadata.name, None)
            else:
                pods[pod.metadata.name] = (layer, ready)
            seen.pod_ready[layer] = any(r for lay, r in pods.values() if lay == layer)
            seen.pods[layer] = sum(1 for lay, _ in pods.values() if lay == layer)
            await seen.note()


async def watch_onion(api: client.ApiClient, ns: str, seen: Seen) -> None:
    custom = client.CustomObjectsApi(api)
    async with watch.Watch().stream(
        custom.list_namespaced_custom_object, "onion.dev", "v1alpha1", ns, "onions"
    ) as stream:
        async for event in stream:
            for entry in (event["object"].get("status") or {}).get("layers") or []:
                seen.phase[entry["name"]] = entry.get("phase", "")
            await seen.note()


def onion_manifest(ready_delay: str) -> dict[str, Any]:
    layer = {
        "idleTimeout": "1s",
        "podAnnotations": {"pod-ready.stage.kwok.x-k8s.io/delay": ready_delay},
    }
    return {
        "apiVersion": "onion.dev/v1alpha1",
        "kind": "Onion",
        "metadata": {"name": ONION},
        "spec": {
            "core": {"model": "bench/core"},
            "layers": [{"name": n, "model": f"bench/{n}", **layer} for n in LAYERS],
        },
    }


async def measure(cluster: Cluster, ns: str, wakes: int, ready_delay: str) -> dict[str, Any]:
    kube = await Kube.connect(cluster.kubeconfig)
    seen = Seen()
    tasks = [
        asyncio.create_task(w(kube.api, ns, seen))
        for w in (watch_deployments, watch_pods, watch_onion)
    ]
    demand_to_replicas: list[float] = []
    ready_to_status: list[float] = []
    try:
        cluster.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(onion_manifest(ready_delay)))
        await seen.until(
            lambda: (
                all(seen.phase.get(n) == "Dormant" for n in LAYERS)
                and seen.phase.get("core") == "Ready"
            ),
            limit=60,
        )
        for i in range(wakes):
            layer = LAYERS[i % len(LAYERS)]
            # Start each wake from a fully dormant layer: no pod left from the last one.
            await seen.until(
                lambda layer=layer: (
                    seen.phase.get(layer) == "Dormant"
                    and seen.replicas.get(layer) == 0
                    and not seen.pods.get(layer)
                ),
                limit=60,
            )
            patch = {
                "spec": {"renewTime": format_time(datetime.now(UTC)), "holderIdentity": "bench"}
            }
            await kube.merge_patch("Lease", ns, f"{ONION}-{layer}-demand", patch)
            t_demand = time.monotonic()
            t_scaled = await seen.until(lambda layer=layer: seen.replicas.get(layer) == 1, limit=30)
            t_pod = await seen.until(lambda layer=layer: seen.pod_ready.get(layer, False), limit=60)
            t_status = await seen.until(
                lambda layer=layer: seen.phase.get(layer) == "Ready", limit=30
            )
            demand_to_replicas.append(t_scaled - t_demand)
            ready_to_status.append(max(0.0, t_status - t_pod))
            print(
                f"wake {i + 1:2d} {layer}: demand->replicas "
                f"{(t_scaled - t_demand) * 1000:6.1f} ms, ready->status "
                f"{(t_status - t_pod) * 1000:6.1f} ms",
                flush=True,
            )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await kube.close()
    return {
        "demand_to_replicas": summary(demand_to_replicas),
        "pod_ready_to_status_ready": summary(ready_to_status),
        "samples_s": {
            "demand_to_replicas": demand_to_replicas,
            "pod_ready_to_status_ready": ready_to_status,
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wakes", type=int, default=36)
    p.add_argument("--ready-delay", default="300ms", help="kwok pod-ready delay (model load)")
    p.add_argument("--external", action="store_true", help="use $KUBECONFIG")
    p.add_argument("--out", default=str(RESULTS / "wake-latency.json"))
    args = p.parse_args()

    local = None if args.external else LocalClusterProcess()
    cluster = (
        Cluster(os.environ["KUBECONFIG"], None, local=False) if local is None else local.start()
    )
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    operator = None
    try:
        apply_crd(cluster)
        cluster.kubectl("create", "namespace", ns)
        operator = OperatorProcess(cluster, ns).start()
        result = asyncio.run(measure(cluster, ns, args.wakes, args.ready_delay))
    finally:
        if operator is not None:
            operator.stop(show_log=False)
        if local is not None:
            local.stop()
        else:
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    result = {
        "benchmark": "wake-latency",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "wakes": args.wakes,
        "kwok_ready_delay": args.ready_delay,
        "cluster": "local (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
        if local is not None
        else "external ($KUBECONFIG)",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "goal_p99_ms": 1000,
        **result,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for key in ("demand_to_replicas", "pod_ready_to_status_ready"):
        s = result[key]
        print(
            f"{key:28s} p50 {s['p50_ms']:7.1f} ms  p99 {s['p99_ms']:7.1f} ms  "
            f"(n={s['count']}, goal p99 < 1000 ms)"
        )
    print(f"wrote {out}")
    ok = all(
        result[k]["p99_ms"] < 1000 for k in ("demand_to_replicas", "pod_ready_to_status_ready")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
