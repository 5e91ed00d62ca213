"""`make demo` end to end: the real script, cluster, operator, router and llama.cpp servers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from onion_lab.paths import REPO
from tests.support.leftovers import ours

DEMO = REPO / "demo" / "run_demo.py"
pytestmark = [pytest.mark.slow, pytest.mark.engine]

# Command-line fragments only the demo's own processes carry (state dir, namespace, model alias).
DEMO_MARKS = ("/onion-demo-", "--namespace onion-demo", "qwen2.5-coder-1.5b-instruct")


def demo_leftovers() -> list[str]:
    return [cmd for cmd in ours().values() if any(mark in cmd for mark in DEMO_MARKS)]


def test_demo_escalates_wakes_and_sleeps(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(DEMO), "--report", str(report_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert report["ok"] is True

    # The easy question stays in the core.
    assert report["easy"]["layer"] == "core"
    assert report["easy"]["path"] == ["core"]
    assert report["easy"]["answer"]
    # The core's shaky product is rejected by its confidence policy and escalates to mid,
    # which is woken (early, from the core's first uncertain tokens) while the request is held,
    # and answers it right where the core alone did not.
    unsure = report["unsure"]
    assert unsure["layer"] == "mid"
    assert unsure["path"] == ["core", "mid"]
    assert unsure["gold"] == "408"
    assert "408" in unsure["answer"] and "408" not in unsure["core_alone"]
    # (Whether the client itself was held depends on how fast the core wrote its answer: the
    # early wake may finish first on a fast machine. The phase history below shows the wake.)
    assert 'onion_router_escalations_total{source="core",target="mid"} 1.0' in unsure["metrics"]
    assert 'onion_router_judgements_total{layer="core",verdict="accept"} 1.0' in unsure["metrics"]
    # "Python" matches big's routing rule: straight to the outermost layer, woken for it.
    ruled = report["ruled"]
    assert "def fib" in ruled["answer"]
    assert ruled["layer"] == "big"
    assert ruled["path"] == ["big"]
    assert ruled["held"] is True
    assert ruled["heartbeats"] >= 2  # kwok delay 8s

    # Both layers went through the whole cycle and are back at zero replicas.
    assert report["phases_before"] == {"core": "Ready", "mid": "Dormant", "big": "Dormant"}
    for layer in ("mid", "big"):  # Draining may show for a moment on the way down
        seen = [p for p in report["phase_history"][layer] if p != "Draining"]
        assert seen == ["Dormant", "Waking", "Ready", "Dormant"], report["phase_history"]
    assert report["phase_history"]["core"] == ["Ready"]
    assert report["final_phases"] == {"core": "Ready", "mid": "Dormant", "big": "Dormant"}
    assert report["replicas_after_sleep"] == {"mid": 0, "big": 0}

    # The transcript says what a reader needs to know.
    out = done.stdout
    assert "MECHANISM, not" in out
    assert "only the layer URLs replaced" in out
    assert "token of ServiceAccount demo-router" in out  # the router's own RBAC sufficed
    assert "layer mid: Dormant -> Waking" in out and "layer big: Waking -> Ready" in out
    assert "waiting for layer big (Waking" in out
    assert "NAME" in out and "AWAKE" in out  # kubectl get onions printer columns
    assert "Waking       layer mid" in out and "Sleeping     layer big" in out  # Onion Events
    # No timed assertion (timings depend on what else the 2-core machine runs); the subprocess
    # timeout above bounds a hang, and the demo prints its own wall time.
    assert demo_leftovers() == []


def test_demo_cleans_up_on_ctrl_c() -> None:
    # Started with SIGINT ignored, as a background job of a non-interactive shell (CI) starts
    # it: the demo must still take Ctrl-C.
    proc = subprocess.Popen(
        ["bash", "-c", 'trap "" INT; exec "$0" "$1"', sys.executable, str(DEMO)],
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
