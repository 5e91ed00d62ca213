"""Pure pieces of a router over another Onion's router: composing who answered, reading its
heartbeats and Retry-After, and when to ask again."""

from __future__ import annotations

import pytest

from onion_router.protocol.sse import heartbeat, parse_heartbeat
from onion_router.protocol.types import Holding, Meta
from onion_router.retries import retry_after_seconds, retry_delay


@pytest.mark.parametrize(
    ("remote", "layer", "path", "degraded"),
    [
        (
            {"layer": "mid", "path": ["core", "mid"], "degraded": False},
            "c:mid",
            ("core", "c:core", "c:mid"),
            False,
        ),
        ({"layer": "mid", "path": ["mid"], "degraded": True}, "c:mid", ("core", "c:mid"), True),
        (None, "c", ("core", "c"), False),  # not an Onion router
        ({"layer": 3, "path": ["x"]}, "c", ("core", "c"), False),  # malformed: ignored
        ({"layer": "mid", "path": "mid"}, "c", ("core", "c"), False),
    ],
)
def test_meta_within_a_remote_onion(
    remote: object, layer: str, path: tuple[str, ...], degraded: bool
) -> None:
    meta = Meta("c", ("core", "c")).within(remote)
    assert (meta.layer, meta.path, meta.degraded) == (layer, path, degraded)


def test_heartbeats_round_trip_and_nest() -> None:
    line = heartbeat("mid", "Waking", 12.4, 600).decode().strip()
    assert parse_heartbeat(line, "cluster") == Holding("cluster:mid", "Waking", 12, 600)
    # Two routers out: the layer name already has a colon.
    outer = heartbeat("cluster:mid", "HTTP 429, retrying", 3, 60).decode()
    assert parse_heartbeat(outer, "edge") == Holding(
        "edge:cluster:mid", "HTTP 429, retrying", 3, 60
    )
    assert parse_heartbeat(": keep-alive", "c") is None
    assert parse_heartbeat('data: {"x": 1}', "c") is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: now
        ("soon", None),
        ("-3", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after(value: str | None, seconds: float | None) -> None:
    now = 1445412450.0  # 07:27:30 GMT that day
    assert retry_after_seconds(value, now=now) == seconds


@pytest.mark.parametrize(
    ("status", "retry_after", "waited", "timeout", "delay"),
    [
        (503, 2.0, 0.0, 600, 2.0),
        (429, 0.0, 0.0, 600, 0.25),  # never hammer
        (503, 10.0, 595.0, 600, None),  # would end past the wake timeout
        (503, None, 0.0, 600, None),  # no Retry-After: not told to come back
        (502, 1.0, 0.0, 600, None),  # broken, not busy
        (503, 1.0, 0.0, 0, None),  # no wake timeout: never retried
    ],
)
def test_retry_delay(
    status: int, retry_after: float | None, waited: float, timeout: float, delay: float | None
) -> None:
    assert retry_delay(status, retry_after, waited, timeout) == delay
