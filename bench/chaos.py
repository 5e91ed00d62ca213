"""The chaos campaign at length (`make chaos`): see tests/support/chaos.py for the scenarios.

Starts a private local cluster (or uses $KUBECONFIG with --external, where the control-plane
restarts are skipped), runs every scenario, prints one line per trial and writes
results/chaos.json with the figures per scenario and in total.

    python bench/chaos.py [--operator-cycles 30] [--router-trials 10] [--restart-trials 6]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from onion_lab.cluster import Cluster, LocalClusterProcess  # noqa: E402
from tests.support import chaos  # noqa: E402
from tests.support.leftovers import mark_session  # noqa: E402

TOTALS = ("trials", "lost_wakes", "stuck_awake", "hung_requests", "dropped_requests", "requests")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operator-cycles", type=int, default=30)
    parser.add_argument("--router-trials", type=int, default=10)
    parser.add_argument("--restart-trials", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--external", action="store_true", help="use $KUBECONFIG")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "chaos.json")
    args = parser.parse_args()
    mark_session()
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"{time.monotonic() - started:7.1f}s  {message}", flush=True)

    def run(cluster: Cluster) -> list[chaos.Figures]:
        with cluster.new_namespace("chaos") as namespace:
            return chaos.run_campaign(
                cluster,
                namespace,
                operator_cycles=args.operator_cycles,
                router_trials=args.router_trials,
                restart_trials=args.restart_trials,
                seed=args.seed,
                log=log,
            )

    if args.external:
        figures = run(Cluster(os.environ["KUBECONFIG"], None, local=False))
    else:
        with LocalClusterProcess() as cluster:
            figures = run(cluster)
    scenarios = [f.summary() for f in figures]
    totals = {key: sum(s[key] for s in scenarios) for key in TOTALS}
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": uuid.uuid4().hex[:8],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {
            "idle_timeout_s": chaos.IDLE_SECONDS,
            "simulated_load_s": chaos.LOAD_SECONDS,
            "wake_bound_s": chaos.WAKE_BOUND,
            "sleep_bound_s": chaos.SLEEP_BOUND,
            "hang_bound_s": chaos.HANG_BOUND,
            "seed": args.seed,
        },
        "scenarios": scenarios,
        "totals": totals,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(totals))
    failures = totals["lost_wakes"] + totals["stuck_awake"]
    failures += totals["hung_requests"] + totals["dropped_requests"]
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
