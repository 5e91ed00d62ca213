"""`make demo` end to end: the real script, cluster, operator, router and llama.cpp servers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cluster import REPO
from tests.support.leftovers import leftovers

DEMO = REPO / "demo" / "run_demo.py"
pytestmark = [pytest.mark.slow, pytest.mark.engine]

# Command-line fragments only the demo's own processes carry (state dir, namespace, model alias).
DEMO_MARKS = ("/onion-demo-", "--namespace onion-demo", "smollm2-135m-outer")


def demo_leftovers() -> list[str]:
    return [p for p in leftovers() if any(mark in p for mark in DEMO_MARKS)]


def test_demo_escalates_wakes_and_sleeps(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(DEMO), "--report", str(report_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert report["ok"] is True

    # The easy question stays in the core; the hard one is routed by mid's rule and held.
    assert report["easy"]["layer"] == "core"
    assert report["easy"]["path"] == ["core"]
    assert report["easy"]["answer"]
    assert report["hard"]["layer"] == "mid"
    assert report["hard"]["path"] == ["mid"]
    assert report["hard"]["held"] is True
    assert report["hard"]["heartbeats"] >= 2  # kwok delay 6s, heartbeat every 1s

    # mid went through the whole cycle, big never woke, and mid is back at zero replicas.
    assert report["phases_before_hard"] == {"core": "Ready", "mid": "Dormant", "big": "Dormant"}
    assert report["phase_history"]["mid"] == ["Dormant", "Waking", "Ready", "Dormant"]
    assert report["phase_history"]["big"] == ["Dormant"]
    assert report["final_phases"]["mid"] == "Dormant"
    assert report["mid_replicas_after_sleep"] == 0

    # The transcript says what a reader needs to know.
    out = done.stdout
    assert "MECHANISM, not" in out
    assert "only the tier URLs replaced" in out
    assert "layer mid: Dormant -> Waking" in out
    assert "waiting for layer mid (Waking" in out
    assert "NAME" in out and "AWAKE" in out  # kubectl get onions printer columns
    assert took < 180, f"the demo took {took:.0f}s"
    assert demo_leftovers() == []


def test_demo_cleans_up_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(DEMO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # interrupt once the cluster, operator and models all run
            seen.append(line)
            if "onion-router listens" in line:
                break
        else:
            pytest.fail("the demo ended before its router started:\n" + "".join(seen))
        assert demo_leftovers(), "the demo's processes should be running now"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, rest[-2000:]
    assert "cleaned up" in rest
    assert demo_leftovers() == []
