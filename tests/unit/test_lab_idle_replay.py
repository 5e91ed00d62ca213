"""The replay behind the idle-policy benchmark drives the real planner: sanity on a tiny trace."""

from __future__ import annotations

from onion_lab import idle_replay
from onion_lab.idle_replay import Request


def test_always_on_never_waits_and_pays_for_the_whole_horizon() -> None:
    reqs = [Request(10.0, "mid", 40), Request(500.0, "big", 20)]
    r = idle_replay.simulate(reqs, {"minReplicas": 1}, None, 1000.0)
    assert r["cold_start_fraction"] == 0.0 and r["wait_p99_s"] == 0.0
    assert r["gpu_hours"] == round(2 * 1001 / 3600, 3)


def test_short_idle_timeout_sleeps_between_requests_and_pays_cold_starts() -> None:
    mid_cold = idle_replay.LAYERS["mid"]["cold_start_s"]
    reqs = [Request(10.0, "mid", 40), Request(600.0, "mid", 40)]
    r = idle_replay.simulate(reqs, {"idleTimeout": "30s"}, None, 1000.0)
    assert r["wakes"] == {"mid": 2, "big": 0}
    assert r["cold_start_fraction"] == 1.0
    assert mid_cold - 1 <= r["wait_p50_s"] <= mid_cold + 1
    assert r["requests_served"] == 2
    assert r["gpu_hours"] < 0.1


def test_budget_of_one_serves_both_layers_without_thrashing() -> None:
    reqs = [Request(10.0, "mid", 40), Request(20.0, "big", 20), Request(30.0, "mid", 40)]
    r = idle_replay.simulate(reqs, {"idleTimeout": "5m"}, 1, 1200.0)
    assert r["requests_served"] == 3 and r["requests_unserved_at_end"] == 0
    assert sum(r["wakes"].values()) <= 4


def test_adaptive_learns_a_periodic_tenant_and_pre_warms_it() -> None:
    # A request to mid every 10 minutes for 5 hours: awake throughout while it learns its first
    # 16 gaps (its fixed fallback, idleTimeout, is longer than them), then asleep in between and
    # pre-warmed before each next one.
    reqs = [Request(60.0 + 600.0 * i, "mid", 40) for i in range(30)]
    horizon = 60.0 + 600.0 * 30
    adaptive = {"idlePolicy": "adaptive", "idleTimeout": "30m"}
    r = idle_replay.simulate(reqs, adaptive, None, horizon)
    fixed_long = idle_replay.simulate(reqs, {"idleTimeout": "30m"}, None, horizon)
    fixed_short = idle_replay.simulate(reqs, {"idleTimeout": "30s"}, None, horizon)
    assert r["idle_gaps_learned"]["mid"] == 29
    assert r["wakes_without_waiting_requests"]["mid"] >= 10  # pre-warms
    assert r["cold_start_fraction"] < fixed_short["cold_start_fraction"] == 1.0
    assert r["gpu_hours"] < 0.65 * fixed_long["gpu_hours"]


def row(policy: str, gpu: float, cold: float) -> dict[str, object]:
    return {"policy": policy, "gpu_hours": gpu, "cold_start_fraction": cold}


def test_goal_needs_no_dominating_fixed_timeout_and_a_clear_win_over_5_minutes() -> None:
    fixed = [row("idleTimeout 2m", 1.0, 0.2), row("idleTimeout 5m", 1.6, 0.07)]
    fewer_gpu = idle_replay.goal([*fixed, row("adaptive", 1.2, 0.07)])
    assert fewer_gpu["met"] and fewer_gpu["gpu_hours_saving_vs_5m"] == 0.25
    fewer_cold = idle_replay.goal([*fixed, row("adaptive", 1.6, 0.035)])
    assert fewer_cold["met"] and fewer_cold["cold_start_fraction_vs_5m"] == 0.5
    close = idle_replay.goal([*fixed, row("adaptive", 1.5, 0.06)])
    assert not close["met"] and close["dominated_by_fixed"] == []
    beaten = idle_replay.goal([*fixed, row("adaptive", 1.7, 0.07)])
    assert beaten["dominated_by_fixed"] == ["idleTimeout 5m"] and not beaten["met"]
