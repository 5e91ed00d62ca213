"""Warm schedules (schedule.py): cron windows in a time zone, opened early by the lead time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from onion_contract.spec import InvalidSpec, parse_spec
from onion_operator.schedule import WarmWindow, scheduled, windows

WEEKDAYS_9_TO_5 = WarmWindow("0 9 * * 1-5", 8 * 3600, "Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "awake", "changes_at"),
    [
        # Wednesday 2026-11-25, Berlin is UTC+1 in winter: 09:00 local = 08:00 UTC.
        (utc(2026, 11, 25, 7, 59), False, utc(2026, 11, 25, 8, 0)),
        (utc(2026, 11, 25, 8, 0), True, utc(2026, 11, 25, 16, 0)),
        (utc(2026, 11, 25, 15, 59), True, utc(2026, 11, 25, 16, 0)),
        (utc(2026, 11, 25, 16, 0), False, utc(2026, 11, 26, 8, 0)),
        # Friday evening: next window is Monday.
        (utc(2026, 11, 27, 18, 0), False, utc(2026, 11, 30, 8, 0)),
        # Summer time: 09:00 local = 07:00 UTC.
        (utc(2026, 7, 1, 7, 30), True, utc(2026, 7, 1, 15, 0)),
    ],
)
def test_a_window_in_a_time_zone(now: datetime, awake: bool, changes_at: datetime) -> None:
    state = scheduled([WEEKDAYS_9_TO_5], now)
    assert (state.awake, state.changes_at) == (awake, changes_at)
    if awake:
        assert "0 9 * * 1-5" in state.reason and "Europe/Berlin" in state.reason


def test_a_window_opens_early_by_the_lead_so_the_layer_is_ready_on_time() -> None:
    before = utc(2026, 11, 25, 7, 58)  # two minutes before 09:00 Berlin
    assert scheduled([WEEKDAYS_9_TO_5], before).changes_at == utc(2026, 11, 25, 8, 0)
    early = scheduled([WEEKDAYS_9_TO_5], before, lead=150.0)
    assert early.awake and early.changes_at == utc(2026, 11, 25, 16, 0)
    assert scheduled([WEEKDAYS_9_TO_5], before, lead=60.0).changes_at == utc(
        2026, 11, 25, 8, 0
    ) - timedelta(seconds=60)


def test_overlapping_windows_hold_until_the_last_one_ends() -> None:
    windows = [WarmWindow("0 12 * * *", 3600), WarmWindow("30 12 * * *", 3600)]
    state = scheduled(windows, utc(2026, 11, 25, 12, 45))
    assert state.awake and state.changes_at == utc(2026, 11, 25, 13, 30)


def test_no_schedule_never_holds_a_layer() -> None:
    assert scheduled([], utc(2026, 11, 25, 12)).changes_at is None


def spec_with(window: dict[str, Any]) -> Any:
    layer = {"name": "mid", "model": "m", "warmSchedule": [window]}
    return parse_spec("o", {"core": {"model": "c"}, "layers": [layer]})


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"cron": "0 25 * * *", "duration": "1h"}, "cron '0 25 * * *' is not a cron expression"),
        ({"cron": "0 9 * * *", "duration": "1h", "timeZone": "Mars/Olympus"}, "IANA time zone"),
        ({"cron": "0 9 * * *", "duration": "soon"}, "not a duration"),
    ],
)
def test_a_bad_schedule_is_a_clear_error(window: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec, match="warmSchedule") as err:
        spec_with(window)
    assert message in str(err.value)


def test_a_good_schedule_parses_with_utc_by_default() -> None:
    spec = spec_with({"cron": "0 9 * * 1-5", "duration": "8h"})
    assert windows(spec.layers[0]) == (WarmWindow("0 9 * * 1-5", 28800.0, "UTC"),)
