"""The kopf handlers: the only module that knows kopf. Each one is a few lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from onion_operator import constants as c
from onion_operator.kube import ApiError, Kube
from onion_operator.reconciler import reconcile

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0  # idle and budget checks; cheap when nothing changes
ENSURE_EVERY_SECONDS = 60.0  # re-apply all children to repair drift


def onion_key(namespace: str, name: str) -> str:
    """The one way per-Onion state (locks, last ensure) is keyed."""
    return f"{namespace}/{name}"


class OperatorState:
    """In-memory caches only: everything that must survive a restart lives in the API."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.locks: dict[str, asyncio.Lock] = {}
        self.last_ensure: dict[str, float] = {}
        self.last_error: dict[str, str] = {}
        self.ticker: asyncio.Task[None] | None = None

    def forget(self, key: str) -> None:
        self.locks.pop(key, None)
        self.last_ensure.pop(key, None)
        self.last_error.pop(key, None)


async def run_reconcile(state: OperatorState, namespace: str, name: str) -> None:
    """Reconcile one Onion under its lock, reading the clock once, and post its Events."""
    key = onion_key(namespace, name)
    lock = state.locks.setdefault(key, asyncio.Lock())
    async with lock:
        if key not in state.locks:  # deleted while we waited
            return
        loop_now = asyncio.get_running_loop().time()
        full = loop_now - state.last_ensure.get(key, -ENSURE_EVERY_SECONDS) >= ENSURE_EVERY_SECONDS
        now = datetime.now(UTC)
        try:
            outcome = await reconcile(state.kube, namespace, name, now, full=full)
        except ApiError as e:
            body = e.body.decode(errors="replace") if isinstance(e.body, bytes) else e.body
            message = f"{e.status} {e.reason}: {body}"
            log.warning("reconciling %s failed: %s", key, message)
            onion = await state.kube.get(c.KIND, namespace, name)
            if onion is not None and state.last_error.get(key) != message:
                state.last_error[key] = message  # one Event per distinct error, not per tick
                await state.kube.post_event(onion, "Warning", "ReconcileError", message, now)
            return
        state.last_error.pop(key, None)
        if full:
            state.last_ensure[key] = loop_now
    if outcome.onion is None:
        state.forget(key)
        return
    for event in outcome.events:
        await state.kube.post_event(outcome.onion, event.type, event.reason, event.message, now)


async def _tick(state: OperatorState) -> None:
    """Every second, re-plan every known Onion: idle sleeps and the budget need no event."""
    while True:
        await asyncio.sleep(TICK_SECONDS)
        keys = list(state.locks)
        results = await asyncio.gather(
            *(run_reconcile(state, *key.split("/", 1)) for key in keys), return_exceptions=True
        )
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, Exception):
                log.error("tick for %s failed: %r", key, result)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=c.GROUP)
    settings.posting.enabled = False  # our own Events say what happened; not kopf's per handler
    settings.watching.server_timeout = 300
    state = OperatorState(await Kube.connect())
    state.ticker = asyncio.create_task(_tick(state))
    memo["state"] = state


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState = memo["state"]
    if state.ticker is not None:
        state.ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await state.ticker
    await state.kube.close()


@kopf.on.event(c.GROUP, c.VERSION, c.PLURAL)
async def onion_changed(type: str, name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    state: OperatorState = memo["state"]
    if namespace is None:
        return
    if type == "DELETED":  # children go by owner references
        state.forget(onion_key(namespace, name))
        return
    await run_reconcile(state, namespace, name)


@kopf.on.event(
    "coordination.k8s.io",
    "v1",
    "leases",
    labels={c.LABEL_COMPONENT: c.COMPONENT_DEMAND, c.LABEL_ONION: kopf.PRESENT},
)
@kopf.on.event(
    "apps",
    "v1",
    "deployments",
    labels={c.LABEL_COMPONENT: c.COMPONENT_MODEL, c.LABEL_ONION: kopf.PRESENT},
)
async def child_changed(
    type: str, labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> None:
    """New demand on a Lease, or a layer Deployment changed (e.g. a pod became Ready)."""
    await _owner_changed(memo["state"], namespace, labels, reapply=type == "DELETED")


async def _owner_changed(
    state: OperatorState, namespace: str | None, labels: Mapping[str, str], reapply: bool
) -> None:
    """Reconcile the Onion a child belongs to; `reapply` if a child was deleted by hand."""
    if namespace is None:
        return
    if reapply:
        state.last_ensure.pop(onion_key(namespace, labels[c.LABEL_ONION]), None)
    await run_reconcile(state, namespace, labels[c.LABEL_ONION])


def _deleted(type: str, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event("", "v1", "services", labels={c.LABEL_ONION: kopf.PRESENT}, when=_deleted)
@kopf.on.event("", "v1", "configmaps", labels={c.LABEL_ONION: kopf.PRESENT}, when=_deleted)
async def other_child_deleted(
    labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> None:
    """A Service or the router ConfigMap deleted by hand is re-created at once."""
    await _owner_changed(memo["state"], namespace, labels, reapply=True)
