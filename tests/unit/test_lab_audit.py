"""bench/scale.py counts the operator's requests from the API server's audit log: its parsing
(onion_lab.audit)."""

from __future__ import annotations

import json
from pathlib import Path

from onion_lab import audit


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
    requests = audit.audit_requests(log, "onion-operator")
    assert [r.what for r in requests] == ["get leases", "patch deployments", "watch leases"]
    assert requests[1].name == "ns/d" and round(requests[1].seconds, 3) == 0.03
    t0 = requests[0].received
    assert [r.what for r in audit.between(requests, t0, t0 + 1)] == ["get leases"]
    latency = audit.api_latency(requests)
    assert set(latency) == {"get leases", "patch deployments"}  # watches are not latencies
    assert latency["patch deployments"]["p50_ms"] == 30.0
