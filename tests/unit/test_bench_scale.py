"""bench/scale.py counts the operator's requests from the API server's audit log: its parsing."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

_path = Path(__file__).resolve().parents[2] / "bench" / "scale.py"
_spec = importlib.util.spec_from_file_location("scale_bench", _path)
assert _spec and _spec.loader
scale_bench = importlib.util.module_from_spec(_spec)
sys.modules["scale_bench"] = scale_bench
_spec.loader.exec_module(scale_bench)


def event(user: str, verb: str, resource: str, name: str, received: str, done: str, **kw: object):  # type: ignore[no-untyped-def]
    return {
        "stage": kw.get("stage", "ResponseComplete"),
        "user": {"username": user},
        "verb": verb,
        "objectRef": {"resource": resource, "namespace": "ns", "name": name},
        "requestURI": f"/x/{name}",
        "requestReceivedTimestamp": received,
        "stageTimestamp": done,
    }


def test_audit_requests_keep_the_users_completed_requests(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    events = [
        event(
            "onion-operator",
            "get",
            "leases",
            "l",
            "2026-11-28T18:00:00.000000Z",
            "2026-11-28T18:00:00.010000Z",
        ),
        event(
            "onion-operator",
            "patch",
            "deployments",
            "d",
            "2026-11-28T18:00:01.000000Z",
            "2026-11-28T18:00:01.030000Z",
        ),
        event(
            "admin",
            "patch",
            "leases",
            "l",
            "2026-11-28T18:00:01.500000Z",
            "2026-11-28T18:00:01.600000Z",
        ),
        event(
            "onion-operator",
            "watch",
            "leases",
            "",
            "2026-11-28T17:00:00.000000Z",
            "2026-11-28T18:00:02.000000Z",
        ),
    ]
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    requests = scale_bench.audit_requests(log, "onion-operator")
    assert [r.what for r in requests] == ["get leases", "patch deployments", "watch leases"]
    assert requests[1].name == "ns/d" and round(requests[1].seconds, 3) == 0.03
    t0 = requests[0].received
    assert [r.what for r in scale_bench.between(requests, t0, t0 + 1)] == ["get leases"]
    latency = scale_bench.api_latency(requests)
    assert set(latency) == {"get leases", "patch deployments"}  # watches are not latencies
    assert latency["patch deployments"]["p50_ms"] == 30.0
