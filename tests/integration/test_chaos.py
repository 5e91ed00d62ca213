"""A short chaos campaign in `make test` (`make chaos` runs it at length; see
tests/support/chaos.py): the operator, routers, kube-apiserver and etcd killed mid-wake and
mid-hold. Nothing may be lost: no wake, no held request; no layer stays awake past its timeout."""

from __future__ import annotations

import pytest

from onion_lab.cluster import Cluster
from tests.support.chaos import run_campaign

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_short_chaos_campaign_loses_nothing(cluster: Cluster, namespace: str) -> None:
    figures = run_campaign(
        cluster, namespace, operator_cycles=3, router_trials=1, restart_trials=1, log=print
    )
    for scenario in figures:
        print(scenario.summary())
    assert {f.scenario: f.failures for f in figures} == {f.scenario: 0 for f in figures}, [
        f.summary() for f in figures
    ]
    assert all(f.trials for f in figures)
