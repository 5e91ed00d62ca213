"""Warm schedules: cron expressions with a duration and a time zone keep a layer awake.

Pure: the planner asks whether a layer's schedule holds it awake at `now`, and when that answer
next changes (a window's start, less the wake's lead time, or its end). A window opens `lead`
seconds before its cron time (the layer's longest measured cold start), so the layer is Ready
when the busy hours begin. Cron parsing is cronsim's; time zones are the IANA database's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

from onion_contract.spec import Layer


@dataclass(frozen=True)
class WarmWindow:
    cron: str  # five fields, in `time_zone`
    duration: float  # seconds
    time_zone: str = "UTC"

    def describe(self) -> str:
        return f"{self.cron!r} for {self.duration:g}s ({self.time_zone})"


def windows(layer: Layer) -> tuple[WarmWindow, ...]:
    """A layer's warm schedule (its spec's `warmSchedule`; the spec checked each cron)."""
    return tuple(WarmWindow(w.cron, w.duration, w.time_zone) for w in layer.warm_schedule)


@dataclass(frozen=True)
class Scheduled:
    """Whether the schedule holds the layer awake at `now`, why, and when that changes."""

    awake: bool
    changes_at: datetime | None  # None: no schedule
    reason: str = ""


def _last_start(window: WarmWindow, now: datetime) -> datetime:
    """The latest cron time at or before `now` (aware, in the window's zone)."""
    local = now.astimezone(ZoneInfo(window.time_zone))
    # cronsim's reverse iteration yields times strictly before the one given.
    return next(iter(CronSim(window.cron, local + timedelta(seconds=1), reverse=True)))


def _next_start(window: WarmWindow, now: datetime) -> datetime:
    local = now.astimezone(ZoneInfo(window.time_zone))
    return next(iter(CronSim(window.cron, local)))


def scheduled(windows: Sequence[WarmWindow], now: datetime, lead: float = 0.0) -> Scheduled:
    """The state of a layer's warm schedule at `now`; windows open `lead` seconds early."""
    if not windows:
        return Scheduled(False, None)
    early = timedelta(seconds=lead)
    ends: list[tuple[datetime, WarmWindow]] = []
    starts: list[datetime] = []
    for window in windows:
        # A window that started (less the lead) at or before now and has not ended holds it.
        shifted = now + early
        start = _last_start(window, shifted)
        end = start + timedelta(seconds=window.duration)
        if end > now:
            ends.append((end, window))
        starts.append(_next_start(window, shifted) - early)
    if ends:
        # Awake until the last of the windows that overlap now has ended (a next window that
        # opens before then extends it; the planner plans again at this time and asks anew).
        end, window = max(ends, key=lambda e: e[0])
        until = end.astimezone(ZoneInfo(window.time_zone)).strftime("%Y-%m-%d %H:%M %Z")
        return Scheduled(True, end, f"warm schedule {window.describe()} until {until}")
    return Scheduled(False, min(starts))
