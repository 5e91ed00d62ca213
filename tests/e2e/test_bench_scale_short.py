"""`make bench-scale` in short: the real script on its own local cluster, 20 Onions, with the
operator killed (SIGKILL) and a new one started before the quiet window. Checks what it reports,
not how fast (timings here are noisy; the ratios and figures come from the full run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from onion_lab.paths import REPO
from tests.support.leftovers import ours

pytestmark = [pytest.mark.slow]

SCALE = REPO / "bench" / "scale.py"


def test_a_short_scale_run_wakes_sleeps_and_survives_a_restart(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    before = set(ours())
    short = [
        "--onions",
        "20",
        "--rest",
        "10",
        "--wakes",
        "6",
        "--restart-wakes",
        "5",
        "--idle",
        "5",
    ]
    done = subprocess.run(
        [sys.executable, str(SCALE), *short, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = json.loads(out.read_text())["runs"]
    assert run["onions"] == 20 and run["time_to_all_ready_s"] > 0
    assert run["wakes_or_sleeps_missed"] == []
    assert run["wake_lease_patch_to_replicas_1"]["count"] == 6
    assert run["sleep_after_idle_timeout"]["count"] == 6
    # The wakes sent from 2 s after the new operator started were all served, once it had listed
    # its demand Leases; it listed each kind once (the watches start from those lists).
    restart = run["restart"]
    assert restart["wakes_missed"] == 0 and restart["next_wakes"]["count"] == 4
    assert restart["first_wake_sent_after_start_s"] >= 2.0
    assert restart["first_wake_served_after_start_s"] > restart["leases_listed_after_start_s"] > 0
    assert restart["caches_listed_after_start_s"] >= restart["leases_listed_after_start_s"]
    by_request = restart["by_request"]
    for kind in ("onions", "leases", "deployments"):  # (a watch is audited when it ends)
        assert by_request.get(f"list {kind}") == 1, by_request
    # At rest the operator sends only its leader Lease renewals and the drift repairs.
    assert run["rest"]["requests_per_s_per_onion"] < 0.05
    assert set(ours()) <= before, "the benchmark left processes running"
