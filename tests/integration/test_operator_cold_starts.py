"""Cold starts on a real API server: a layer pre-warmed before the demand its history predicts,
a warm schedule keeping a layer awake without demand, and the pre-pull DaemonSets and prefetch
Jobs accepted (and pruned) by the API server. The policies' time constants are seconds here."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from onion_contract.names import ANNOTATION_WOKEN_AT
from onion_lab.cluster import Cluster
from onion_lab.operator import OperatorProcess, apply_crd
from onion_lab.waiting import wait_until
from onion_operator.planner import parse_time
from tests.support.operator import (
    layer_status,
    managed_layer,
    onion_events,
    onion_yaml,
    owned_names,
    renew_demand,
    replicas,
    running_operator,
    wait_for_phase,
)

pytestmark = pytest.mark.cluster

GAP = 12.0  # what the seeded history says: demand comes back 12 s after each busy period


def events_starting(cluster: Cluster, ns: str, prefix: str) -> list[str]:
    return [e for e in onion_events(cluster, ns) if e.startswith(prefix)]


def woken_at(cluster: Cluster, ns: str, deployment: str) -> datetime:
    meta = cluster.kubectl_json("-n", ns, "get", "deployment", deployment)["metadata"]
    stamp = parse_time(meta["annotations"][ANNOTATION_WOKEN_AT])
    assert stamp is not None
    return stamp


def test_an_adaptive_layer_is_pre_warmed_before_the_demand_it_expects(
    cluster: Cluster, namespace: str
) -> None:
    ns = namespace
    apply_crd(cluster)
    # idle: the longest it may stay awake without demand
    mid = managed_layer("mid", idle="4s", delay="200ms", idlePolicy="adaptive")
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [mid]))
    # What an earlier operator learned, in the Onion's status (as it would be after a restart):
    # 16 gaps of 12 s, a 1 s cold start.
    learned = {"gaps": [GAP] * 16, "coldStarts": [1.0]}
    status = {"layers": [{"name": "mid", "phase": "Dormant", "idle": learned}]}
    patch = json.dumps({"status": status})
    cluster.kubectl(
        "-n", ns, "patch", "onion", "chat", "--subresource=status", "--type=merge", "-p", patch
    )
    with running_operator(cluster, ns):
        idle = wait_until(
            lambda: (
                "keepAliveSeconds" in (i := layer_status(cluster, ns, "chat", "mid")["idle"]) and i
            ),
            timeout=30,
            what="the operator's first pass",
        )
        assert idle["gaps"] == [GAP] * 16  # the new operator kept what the old one learned
        assert idle["keepAliveSeconds"] == 4  # three renewals, the shortest it may be
        prewarm_from = idle["prewarmFromSeconds"]
        assert GAP - 2 < prewarm_from < GAP - 1  # 12 s less the cold start plus 10%
        assert idle["prewarmUntilSeconds"] == GAP

        t0 = renew_demand(cluster, ns, "chat-mid-demand")
        wait_for_phase(cluster, ns, "mid", "Ready", timeout=10, what="woken by demand")
        # Asleep after the learned keep-alive (not idleTimeout: it equals it here)...
        wait_until(lambda: replicas(cluster, ns, "chat-mid") == 0, timeout=10, what="asleep")
        assert events_starting(
            cluster,
            ns,
            "Sleeping: layer mid: idle: last demand 4s ago, adaptive keep-alive 4s (16 idle gaps",
        )
        # ...then woken again, with no demand at all, before the next one is expected.
        wait_until(lambda: replicas(cluster, ns, "chat-mid") == 1, timeout=GAP, what="pre-warm")
        ready = wait_for_phase(cluster, ns, "mid", "Ready", timeout=GAP, what="pre-warmed")
        # When the operator woke it and saw it Ready, from its own stamps (not from when this
        # test's kubectl polls happened to look: seconds late on a busy machine).
        woke = (woken_at(cluster, ns, "chat-mid") - t0).total_seconds()
        assert GAP - 3 < woke < GAP, woke
        assert woke + ready["lastWakeSeconds"] < GAP  # Ready before the demand
        (prewarm,) = events_starting(cluster, ns, "Waking: layer mid: pre-warm: last demand")
        assert "Ready before the next one is expected" in prewarm and "(wake #2)" in prewarm
        # The demand comes as predicted (inside the window) and finds the layer awake.
        time.sleep(max(0.0, GAP - 0.5 - (datetime.now(UTC) - t0).total_seconds()))
        renew_demand(cluster, ns, "chat-mid-demand")
        time.sleep(1)
        assert replicas(cluster, ns, "chat-mid") == 1
        assert len(events_starting(cluster, ns, "Waking: layer mid")) == 2
        # That pause was learned as the 17th gap, and the pre-warm's cold start measured.
        idle = layer_status(cluster, ns, "chat", "mid")["idle"]
        assert len(idle["gaps"]) == 17 and GAP - 2 < idle["gaps"][-1] < GAP + 1
        assert len(idle["coldStarts"]) == 3 and ready["lastWakeSeconds"] < GAP


def test_a_warm_schedule_keeps_a_layer_awake_without_demand(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    mid = managed_layer("mid", idle="2s", delay="200ms")
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [mid]))
    wait_for_phase(cluster, ns, "mid", "Dormant", timeout=30, what="layers created")
    now = datetime.now(UTC)
    # A window that opened at the start of this minute and ends 8 s from now.
    ends_in = 8.0
    duration = now.second + now.microsecond / 1e6 + ends_in
    window = {"cron": f"{now.minute} {now.hour} * * *", "duration": f"{duration:.1f}s"}
    mid["warmSchedule"] = [window]
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=onion_yaml("chat", [mid]))
    wait_for_phase(cluster, ns, "mid", "Ready", timeout=ends_in, what="woken by the schedule")
    (wake,) = events_starting(cluster, ns, "Waking: layer mid: warm schedule")
    assert f"'{window['cron']}'" in wake and "(UTC) until" in wake
    # Awake with no demand at all, far past its 2 s idleTimeout, while the window lasts...
    time.sleep(4)
    assert replicas(cluster, ns, "chat-mid") == 1
    # ...and asleep when it ends (a deadline: nothing else happens in the cluster).
    wait_until(lambda: replicas(cluster, ns, "chat-mid") == 0, timeout=ends_in, what="asleep")
    slept = (datetime.now(UTC) - now).total_seconds()
    assert ends_in <= slept < ends_in + 3, slept
    (sleep,) = events_starting(cluster, ns, "Sleeping: layer mid")
    assert "outside its warm schedule" in sleep


def helpers(cluster: Cluster, ns: str, kind: str) -> dict[str, dict[str, Any]]:
    items = cluster.kubectl_json("-n", ns, "get", kind, "-l", "onion.dev/onion=chat")["items"]
    return {item["metadata"]["name"]: item for item in items}


def test_pre_pull_daemonsets_and_prefetch_jobs_are_accepted_and_follow_the_spec(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    layers = [
        {"name": "mid", "model": "org/mid", "revision": "v1", "nodeSelector": {"type": "kwok"}},
        {"name": "big", "model": "org/big", "engine": "vllm", "nodeSelector": {"gpu": "none"}},
    ]
    cold = {"prePullImages": True, "prefetchWeights": True}
    body = onion_yaml("chat", layers, modelCache={"size": "10Gi"}, coldStart=cold)
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=body)
    wait_until(
        lambda: (
            len(owned_names(cluster, ns, "daemonset", "chat")) == 2
            and len(owned_names(cluster, ns, "job", "chat")) == 2
        ),
        timeout=30,
        what="pre-pull DaemonSets and prefetch Jobs",
    )
    sets = helpers(cluster, ns, "daemonset")
    assert set(sets) == {"chat-mid-pull", "chat-big-pull"}

    # The DaemonSet controller places a puller on exactly the nodes the layer can run on: all
    # three kwok nodes for mid, none for big (no node has gpu=none).
    def scheduled(name: str) -> int | None:
        return (helpers(cluster, ns, "daemonset")[name].get("status") or {}).get(
            "desiredNumberScheduled"
        )

    wait_until(lambda: scheduled("chat-mid-pull") == 3, timeout=30, what="mid pullers placed")
    assert scheduled("chat-big-pull") == 0
    jobs = helpers(cluster, ns, "job")
    by_layer = {j["metadata"]["labels"]["onion.dev/layer"]: j for j in jobs.values()}
    command = by_layer["mid"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:5] == ["hf", "download", "org/mid", "--revision", "v1"]

    # A new revision is a new Job; the old one goes. Pre-pull off: the DaemonSets go.
    old = by_layer["mid"]["metadata"]["name"]
    layers[0]["revision"] = "v2"
    body = onion_yaml(
        "chat", layers, modelCache={"size": "10Gi"}, coldStart={"prefetchWeights": True}
    )
    cluster.kubectl("-n", ns, "apply", "-f", "-", input=body)
    wait_until(
        lambda: (
            not owned_names(cluster, ns, "daemonset", "chat")
            and old not in owned_names(cluster, ns, "job", "chat")
            and len(owned_names(cluster, ns, "job", "chat")) == 2
        ),
        timeout=30,
        what="old prefetch Job and DaemonSets pruned",
    )
    jobs = helpers(cluster, ns, "job")
    revisions = {
        j["spec"]["template"]["spec"]["containers"][0]["command"][4] for j in jobs.values()
    }
    assert revisions == {"v2", "main"}
