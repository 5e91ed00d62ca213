"""A short chaos campaign in `make test`, and the campaign at length in `make chaos` (see
tests/support/chaos.py): the operator, routers, kube-apiserver and etcd killed mid-wake and
mid-hold. Nothing may be lost: no wake, no held request; no layer stays awake past its timeout.

`make chaos` sets the sizes (ONION_CHAOS_*) and ONION_CHAOS_REPORT, the file the figures are
written to (results/chaos.json) before they are checked."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from onion_lab.cluster import Cluster
from tests.support import chaos

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_chaos_campaign_loses_nothing(cluster: Cluster, namespace: str) -> None:
    sizes = chaos.Sizes.from_environment()
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"{time.monotonic() - started:7.1f}s  {message}", flush=True)

    figures = chaos.run_campaign(
        cluster,
        namespace,
        operator_cycles=sizes.operator_cycles,
        router_trials=sizes.router_trials,
        restart_trials=sizes.restart_trials,
        seed=sizes.seed,
        log=log,
    )
    report = chaos.report(figures, sizes, time.monotonic() - started)
    if os.environ.get("ONION_CHAOS_REPORT"):
        out = Path(os.environ["ONION_CHAOS_REPORT"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["totals"]))
    assert {f.scenario: f.failures for f in figures} == {f.scenario: 0 for f in figures}, report
    assert all(f.trials for f in figures)
