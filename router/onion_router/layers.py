"""Which layers are awake, who is waiting for them, and recording demand so they wake and stay up.

All Kubernetes I/O sits behind `LayerLink` (see kube.py); `StaticLink` is the local mode where
every layer is assumed awake, and tests plug in their own link to play the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from onion_contract.names import PHASE_FAILED, PHASE_READY
from onion_contract.router_config import RouterConfig, RouterLayer

log = logging.getLogger("onion_router.layers")

READY = PHASE_READY  # the phase the operator publishes for a layer that serves
FAILED = PHASE_FAILED
UNKNOWN = "Unknown"

PhaseSink = Callable[[dict[str, str]], None]


class LeaseMissing(Exception):
    """The operator has not created the demand Lease (yet); nothing can wake the layer."""


class LayerLink(Protocol):
    """The I/O behind demand and readiness."""

    async def start(self, on_phases: PhaseSink) -> None:
        """Begin reporting layer phases (name -> phase) to `on_phases`, as they change."""

    async def renew(self, lease: str) -> None:
        """Record demand now; raises LeaseMissing if the Lease does not exist."""

    async def close(self) -> None: ...


class StaticLink:
    """Local mode: no cluster; every layer counts as awake and demand goes nowhere."""

    def __init__(self, layers: tuple[RouterLayer, ...]) -> None:
        self._names = [t.name for t in layers]

    async def start(self, on_phases: PhaseSink) -> None:
        on_phases(dict.fromkeys(self._names, READY))

    async def renew(self, lease: str) -> None:  # noqa: ARG002 - nothing to record locally
        return None

    async def close(self) -> None:
        return None


class Refused(Exception):
    """A request cannot be held: full queue, wake timeout, failed layer or no Lease."""

    def __init__(self, status: int, message: str, code: str, retry_after: int | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after


@dataclass
class _LayerState:
    layer: RouterLayer
    phase: str
    queued: int = 0
    inflight: int = 0
    last_renew: float = float("-inf")
    renewer: asyncio.Task[None] | None = None


class LayerTracker:
    """Tracks phases, queues and in-flight counts; renews demand while a layer is wanted."""

    def __init__(self, config: RouterConfig, link: LayerLink) -> None:
        self._config = config
        self._link = link
        self._renew_every = config.demand_renew_seconds
        self._state = {
            t.name: _LayerState(t, READY if not t.managed else UNKNOWN) for t in config.layers
        }
        self._changed = asyncio.Condition()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def link(self) -> LayerLink:
        return self._link

    async def start(self) -> None:
        await self._link.start(self._on_phases)

    async def close(self) -> None:
        for task in [*self._background, *(s.renewer for s in self._state.values() if s.renewer)]:
            task.cancel()
        for task in [*self._background, *(s.renewer for s in self._state.values() if s.renewer)]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._link.close()

    def _on_phases(self, phases: dict[str, str]) -> None:
        for name, phase in phases.items():
            state = self._state.get(name)
            if state is not None and state.layer.managed:
                state.phase = phase
        self._notify()

    def _notify(self) -> None:
        async def wake_waiters() -> None:
            async with self._changed:
                self._changed.notify_all()

        self._spawn(wake_waiters())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- reading ---------------------------------------------------------------------------

    def phase(self, name: str) -> str:
        return self._state[name].phase

    def awake(self) -> list[bool]:
        return [self._state[t.name].phase == READY for t in self._config.layers]

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {
                "name": s.layer.name,
                "phase": s.phase,
                "managed": s.layer.managed,
                "queued": s.queued,
                "inflight": s.inflight,
                "engine": s.layer.engine,
            }
            for s in self._state.values()
        ]

    # --- demand ----------------------------------------------------------------------------

    async def _renew(self, state: _LayerState) -> None:
        lease = state.layer.lease
        if not state.layer.managed or lease is None:
            return
        state.last_renew = time.monotonic()
        await self._link.renew(lease)

    def demand(self, name: str) -> None:
        """Record demand soon, without waiting (early wake, renewals of awake layers)."""
        state = self._state[name]
        if state.layer.managed and time.monotonic() - state.last_renew >= self._renew_every:
            state.last_renew = time.monotonic()
            self._spawn(self._renew_logged(state))

    async def _renew_logged(self, state: _LayerState) -> None:
        try:
            await self._renew(state)
        except Exception as err:  # a background renewal must not kill anything; next one retries
            state.last_renew = float("-inf")
            log.warning("recording demand for layer %s failed: %s", state.layer.name, err)

    def _keep_renewing(self, state: _LayerState) -> None:
        if state.layer.managed and (state.renewer is None or state.renewer.done()):
            state.renewer = asyncio.create_task(self._renew_while_used(state))

    async def _renew_while_used(self, state: _LayerState) -> None:
        # A timer, not a wait for a condition: the Lease must be renewed while requests live.
        while state.queued or state.inflight:
            await asyncio.sleep(self._renew_every)
            if state.queued or state.inflight:
                await self._renew_logged(state)

    # --- holding ---------------------------------------------------------------------------

    def admit(self, name: str) -> Admission:
        return Admission(self, self._state[name])


class Admission:
    """One request's claim on a layer: queued while it wakes, then in flight. Use `async with`."""

    def __init__(self, tracker: LayerTracker, state: _LayerState) -> None:
        self._tracker = tracker
        self._state = state
        self._config = tracker._config
        self.started = time.monotonic()
        self.timeout = state.layer.wake_timeout_seconds
        self.queued = False
        self.inflight = False

    @property
    def layer(self) -> str:
        return self._state.layer.name

    @property
    def phase(self) -> str:
        return self._state.phase

    @property
    def ready(self) -> bool:
        return self._state.phase == READY

    @property
    def waited(self) -> float:
        return time.monotonic() - self.started

    async def __aenter__(self) -> Admission:
        state = self._state
        if self.ready:
            self._fly()
            self._tracker.demand(self.layer)
            return self
        if state.queued >= self._config.max_queue_per_layer:
            raise Refused(
                429,
                f"layer {self.layer!r} is waking and its queue is full "
                f"({state.queued} waiting); retry later",
                "queue_full",
                retry_after=max(1, int(self.timeout / 4) or 1),
            )
        state.queued += 1
        self.queued = True
        self._tracker._keep_renewing(state)
        if time.monotonic() - state.last_renew >= 1.0:  # renew at once on a wake
            try:
                await self._tracker._renew(state)
            except LeaseMissing as err:
                await self.__aexit__(None, None, None)
                raise Refused(
                    503,
                    f"layer {self.layer!r} cannot be woken: {err}",
                    "layer_unavailable",
                    retry_after=10,
                ) from None
            except Exception as err:
                # The API server away (restarting, say): the request stays held, and the renewer
                # records the demand as soon as it answers, within the wake timeout.
                state.last_renew = float("-inf")
                log.warning(
                    "recording demand for layer %s failed; holding the request and retrying: %s",
                    self.layer,
                    err,
                )
        return self

    def _fly(self) -> None:
        if self.queued:
            self._state.queued -= 1
            self.queued = False
        self._state.inflight += 1
        self.inflight = True
        self._tracker._keep_renewing(self._state)

    async def wait(self, step: float | None = None) -> bool:
        """Wait up to `step` seconds (default: the rest of the wake timeout) for the layer.

        True once it is Ready (the request is then in flight); False if the step ran out;
        raises Refused when the wake timeout has passed or the layer failed.
        """
        if self.inflight:
            return True
        remaining = self.timeout - self.waited
        if remaining <= 0:
            raise Refused(
                503,
                f"layer {self.layer!r} did not become ready within "
                f"{self.timeout:.0f}s (phase {self.phase})",
                "wake_timeout",
                retry_after=max(1, int(self.timeout / 4)),
            )
        changed = self._tracker._changed
        try:
            async with changed:
                await asyncio.wait_for(
                    changed.wait_for(lambda: self._state.phase in (READY, FAILED)),
                    min(remaining, step) if step else remaining,
                )
        except TimeoutError:
            return False  # the caller asks again: heartbeat, or the deadline check above
        if self._state.phase == FAILED:
            raise Refused(
                503, f"layer {self.layer!r} failed to start", "layer_failed", retry_after=30
            )
        self._fly()
        return True

    async def __aexit__(self, *_: object) -> None:
        if self.queued:
            self._state.queued -= 1
            self.queued = False
        if self.inflight:
            self._state.inflight -= 1
            self.inflight = False
