"""The trace-driven idle-policy benchmark drives the real planner: sanity on a tiny trace."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_path = Path(__file__).resolve().parents[2] / "bench" / "idle_policy.py"
_spec = importlib.util.spec_from_file_location("idle_policy", _path)
assert _spec and _spec.loader
idle_policy = importlib.util.module_from_spec(_spec)
sys.modules["idle_policy"] = idle_policy
_spec.loader.exec_module(idle_policy)
Request = idle_policy.Request


def test_always_on_never_waits_and_pays_for_the_whole_horizon() -> None:
    reqs = [Request(10.0, "mid", 40), Request(500.0, "big", 20)]
    r = idle_policy.simulate(reqs, {"minReplicas": 1}, None, 1000.0)
    assert r["cold_start_fraction"] == 0.0 and r["wait_p99_s"] == 0.0
    assert r["gpu_hours"] == round(2 * 1001 / 3600, 3)


def test_short_idle_timeout_sleeps_between_requests_and_pays_cold_starts() -> None:
    mid_cold = idle_policy.LAYERS["mid"]["cold_start_s"]
    reqs = [Request(10.0, "mid", 40), Request(600.0, "mid", 40)]
    r = idle_policy.simulate(reqs, {"idleTimeout": "30s"}, None, 1000.0)
    assert r["wakes"] == {"mid": 2, "big": 0}
    assert r["cold_start_fraction"] == 1.0
    assert mid_cold - 1 <= r["wait_p50_s"] <= mid_cold + 1
    assert r["requests_served"] == 2
    assert r["gpu_hours"] < 0.1


def test_budget_of_one_serves_both_layers_without_thrashing() -> None:
    reqs = [Request(10.0, "mid", 40), Request(20.0, "big", 20), Request(30.0, "mid", 40)]
    r = idle_policy.simulate(reqs, {"idleTimeout": "5m"}, 1, 1200.0)
    assert r["requests_served"] == 3 and r["requests_unserved_at_end"] == 0
    assert sum(r["wakes"].values()) <= 4
