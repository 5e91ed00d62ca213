"""The kopf handlers: the only module that knows kopf. Each one is a few lines.

Three caches (Onions, demand Leases, model Deployments; see cache.py) are filled by one list each
at start and kept by kopf's watch streams: every event handler here updates its cache and puts the
Onion's key on the work queue. A pass (`run_pass`) reads the clock once, plans from the caches,
writes only what differs, and asks the queue to come back at the plan's next deadline or the
Onion's next drift repair, whichever is first. At rest, with no demand and nothing changing, the
operator sends no requests but those repairs, spread over `resync_seconds`, and its leader Lease
renewals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from onion_contract import names
from onion_operator.cache import (
    CachedDeployment,
    CachedLease,
    CachedOnion,
    Store,
    Written,
    deployment_entry,
    key_of_child,
    key_of_onion,
    lease_entry,
    onion_entry,
    onion_key,
)
from onion_operator.kube import RETRYABLE, ApiError, Kube, NotFound
from onion_operator.metrics import OperatorMetrics
from onion_operator.planner import Wake
from onion_operator.probes import Health
from onion_operator.reconciler import Event, PassApi, reconcile
from onion_operator.workqueue import WorkQueue, next_repair, spread

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tuning:
    """How hard the operator works at rest; the CLI sets it."""

    resync_seconds: float = 1800.0  # every child of every Onion re-applied once per period
    workers: int = 16  # passes in parallel (each one Onion)
    max_retry_seconds: float = 60.0  # back-off cap after a failed pass


class OperatorState:
    """In-memory caches only: everything that must survive a restart lives in the API."""

    def __init__(
        self,
        kube: Kube,
        tuning: Tuning,
        metrics: OperatorMetrics,
    ) -> None:
        self.kube = kube
        self.tuning = tuning
        self.metrics = metrics
        self.onions: Store[CachedOnion] = Store(onion_entry, key_of_onion)
        self.leases: Store[CachedLease] = Store(lease_entry, key_of_child)
        self.deployments: Store[CachedDeployment] = Store(deployment_entry, key_of_child)
        self.written = Written()
        self.queue = WorkQueue(
            lambda key: run_pass(self, key), tuning.workers, metrics.queue_latency.observe
        )
        metrics.queue_depth.set_function(self.queue.depth)
        metrics.onions.set_function(lambda: len(self.onions))
        self.needs_full: set[str] = set()  # a child was deleted: apply everything
        self.repair_due: dict[str, float] = {}  # loop time of each Onion's next drift repair
        self.failures: dict[str, int] = {}
        self.last_error: dict[str, str] = {}

    def changed(self, key: str, *, child_deleted: bool = False) -> None:
        if child_deleted:
            self.needs_full.add(key)
            self.written.forget_children(key)
        self.queue.add(key)

    def forget(self, key: str) -> None:
        self.queue.forget(key)
        self.written.forget(key)
        for memo in (self.repair_due, self.failures, self.last_error):
            memo.pop(key, None)
        self.needs_full.discard(key)


async def _post(state: OperatorState, onion: CachedOnion, event: Event, now: datetime) -> None:
    try:
        await state.kube.post_event(onion.ref(), event.type, event.reason, event.message, now)
    except RETRYABLE as e:  # an Event is worth a log line, not a retry
        log.warning("posting %s on %s failed: %s", event.reason, onion.key, e)


async def _failed(
    state: OperatorState, onion: CachedOnion, error: BaseException, now: datetime
) -> None:
    """One Event per distinct error, and a retry after a growing delay."""
    key = onion.key
    if isinstance(error, ApiError):
        body = error.body.decode(errors="replace") if isinstance(error.body, bytes) else error.body
        message = f"{error.status} {error.reason}: {body}"
    else:
        message = f"{type(error).__name__}: {error}"
    log.warning("reconciling %s failed: %s", key, message)
    gone = isinstance(error, ApiError) and error.status == NotFound
    if not gone and state.last_error.get(key) != message:
        state.last_error[key] = message
        await _post(state, onion, Event("Warning", "ReconcileError", message), now)
    failures = state.failures[key] = state.failures.get(key, 0) + 1
    delay = min(state.tuning.max_retry_seconds, 0.5 * 2**failures)
    state.queue.add_at(key, asyncio.get_running_loop().time() + delay)


async def _gone(state: OperatorState, onion: CachedOnion) -> bool:
    """After a 404: something the caches hold was deleted with no watch event to say so (the one
    window: deleted between the list at start and kopf's own). If it is the Onion, drop it and
    say so; else re-read its Leases and Deployments, so the retry (a full pass) re-creates what
    is missing."""
    kube = state.kube
    try:
        if await kube.get(names.KIND, onion.namespace, onion.name) is None:
            log.info("%s is gone: dropped from the cache", onion.key)
            state.onions.discard(onion.key, onion.name)
            state.forget(onion.key)
            return True
        for store, kind, labels in _cached_kinds(state)[1:]:  # its Leases and Deployments
            selector = {**labels, names.LABEL_ONION: onion.name}
            store.replace(onion.key, await kube.list(kind, onion.namespace, selector))
    except RETRYABLE as e:
        log.warning("re-reading %s after a 404 failed: %s", onion.key, e)
        return False
    state.needs_full.add(onion.key)
    state.written.forget_children(onion.key)
    return False


async def run_pass(state: OperatorState, key: str) -> None:
    """Reconcile one Onion from the caches, reading the clock once, and schedule its next pass."""
    onions = state.onions.get(key)
    if not onions:  # deleted
        state.forget(key)
        return
    loop_now = asyncio.get_running_loop().time()
    period = state.tuning.resync_seconds
    due = state.repair_due.setdefault(key, loop_now + spread(key, period))  # first: its slot
    full = key in state.needs_full or loop_now >= due
    state.needs_full.discard(key)
    view = state.written.view(onions[0], state.deployments.get(key), state.leases.get(key))
    now = datetime.now(UTC)
    metrics = state.metrics
    kind = "full" if full else "refresh"
    started = asyncio.get_running_loop().time()
    try:
        outcome = await reconcile(PassApi(state.kube, state.written, key), view, now, full)
    except RETRYABLE as e:
        metrics.passes.labels(kind, "error").inc()
        metrics.errors.labels("api").inc()
        if full:
            state.needs_full.add(key)
        if isinstance(e, ApiError) and e.status == NotFound and await _gone(state, view.onion):
            return
        await _failed(state, view.onion, e, now)
        return
    kind = "full" if outcome.full else kind  # a new generation or a missing child: full
    metrics.passes.labels(kind, "ok").inc()
    metrics.pass_seconds.labels(kind).observe(asyncio.get_running_loop().time() - started)
    for action in outcome.done:
        counter = metrics.wakes if isinstance(action, Wake) else metrics.sleeps
        counter.labels(action.cause).inc()
    for seconds in outcome.cold_starts:
        metrics.cold_start.observe(seconds)
    if any(e.reason == "InvalidSpec" for e in outcome.events):
        metrics.errors.labels("invalid_spec").inc()
    state.failures.pop(key, None)
    state.last_error.pop(key, None)
    if outcome.onion is None:
        state.forget(key)
        return
    if outcome.full:
        state.repair_due[key] = next_repair(key, loop_now, period)
    for event in outcome.events:
        await _post(state, outcome.onion, event, now)
    when, next_look = state.repair_due[key], "drift repair"
    deadline = outcome.next_deadline
    if deadline is not None and loop_now + (deadline.at - now).total_seconds() < when:
        when = loop_now + (deadline.at - now).total_seconds()
        next_look = f"{deadline.reason} of {deadline.layer}"
    state.queue.add_at(key, when)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "pass %s%s: %s; next in %.1fs (%s)",
            key,
            " (full)" if outcome.full else "",
            "; ".join(f"{e.reason}: {e.message}" for e in outcome.events) or "nothing to do",
            when - loop_now,
            next_look,
        )


# --- what the watches select -------------------------------------------------------------------

Labels = dict[str, Any]  # kopf.PRESENT is a filter token, not a str
_DEMAND: Labels = {names.LABEL_COMPONENT: names.COMPONENT_DEMAND, names.LABEL_ONION: kopf.PRESENT}
_MODEL: Labels = {names.LABEL_COMPONENT: names.COMPONENT_MODEL, names.LABEL_ONION: kopf.PRESENT}


def _selector(labels: Labels) -> str:
    """The same filter as a label selector for a list: `a=b,c` (c: present)."""
    return ",".join(k if v is kopf.PRESENT else f"{k}={v}" for k, v in labels.items())


def _cached_kinds(state: OperatorState) -> list[tuple[Store[Any], str, Labels]]:
    """Each cache, the kind it holds and the labels its watch selects (as the handlers below)."""
    return [
        (state.onions, names.KIND, {}),
        (state.leases, "Lease", _DEMAND),
        (state.deployments, "Deployment", _MODEL),
    ]


async def fill(state: OperatorState, namespaces: list[str] | None) -> None:
    """List the three cached kinds once, in `namespaces` (None: all), into the caches, and queue
    every Onion. A restarted operator plans from full caches from its first pass; kopf's own
    listing, which follows, brings nothing older (an older resourceVersion never wins)."""
    scope: list[str | None] = [None] if namespaces is None else list(namespaces)
    for store, kind, labels in _cached_kinds(state):
        for namespace in scope:
            for body in await state.kube.list_pages(kind, namespace, _selector(labels)):
                store.put(body)
    for key in state.onions:
        state.queue.add(key)


async def _fill_until_done(state: OperatorState, namespaces: list[str] | None) -> None:
    delay = 0.5
    while True:
        try:
            await fill(state, namespaces)
            return
        except RETRYABLE as e:
            log.warning("listing the cached kinds failed (retrying in %.0fs): %s", delay, e)
            await asyncio.sleep(delay)
            delay = min(state.tuning.max_retry_seconds, delay * 2)


# --- lifecycle ---------------------------------------------------------------------------------


class _NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: this operator has event handlers only, none that detect changes,
    so the diff base kopf builds for every event (a deep copy of the whole body, managedFields
    and all) would never be read. Measured: 12% less operator CPU under a stream of wakes."""

    # kopf's signatures, arguments unused on purpose.
    def build(self, *, body: Any, extra_fields: Any = None) -> kopf.BodyEssence:  # noqa: ARG002
        return kopf.BodyEssence()

    def fetch(self, *, body: Any) -> kopf.BodyEssence | None:  # noqa: ARG002
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:  # noqa: ARG002
        return None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Settings, the API client, the caches (listed before kopf starts its watches) and the
    work queue. `memo.namespaces` is the operator's scope: a list, or None for all."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = _NoDiffBase()
    settings.posting.enabled = False  # our own Events say what happened; not kopf's per handler
    settings.watching.server_timeout = 300
    tuning = memo.get("tuning") or Tuning()
    metrics: OperatorMetrics = memo.get("metrics") or OperatorMetrics()
    kube = await Kube.connect(metrics=metrics)
    state = OperatorState(kube, tuning, metrics)
    # Not kopf's indexes: while kopf lists an indexed kind at start, every object's worker waits
    # on one condition that every listed object notifies, which took minutes of CPU for a
    # restart at 1,000 Onions (docs/scale.md). One list per kind here is linear.
    await _fill_until_done(state, memo.get("namespaces"))
    memo["state"] = state
    state.queue.start()
    health: Health | None = memo.get("health")
    if health is not None:
        health.synced = True


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState = memo["state"]
    await state.queue.stop()
    await state.kube.close()


# --- events: every change of something a pass depends on queues its Onion ---------------------


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)
async def onion_changed(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    state: OperatorState = memo["state"]
    if type == "DELETED":  # children go by owner references
        state.forget(state.onions.remove(body))
    else:
        state.changed(state.onions.put(body))


@kopf.on.event("coordination.k8s.io", "v1", "leases", labels=_DEMAND)
async def lease_changed(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    """New demand on a Lease."""
    _child_changed(memo["state"], memo["state"].leases, type, body)


@kopf.on.event("apps", "v1", "deployments", labels=_MODEL)
async def deployment_changed(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    """A model Deployment changed (e.g. a pod became Ready, or someone scaled it)."""
    _child_changed(memo["state"], memo["state"].deployments, type, body)


def _child_changed(state: OperatorState, store: Store[Any], type: str, body: kopf.Body) -> None:
    deleted = type == "DELETED"
    key = store.remove(body) if deleted else store.put(body)
    state.changed(key, child_deleted=deleted)


def _deleted(type: str, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event("", "v1", "services", labels={names.LABEL_ONION: kopf.PRESENT}, when=_deleted)
@kopf.on.event("", "v1", "configmaps", labels={names.LABEL_ONION: kopf.PRESENT}, when=_deleted)
@kopf.on.event(
    "autoscaling",
    "v2",
    "horizontalpodautoscalers",
    labels={names.LABEL_ONION: kopf.PRESENT},
    when=_deleted,
)
async def other_child_deleted(
    labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> None:
    """A Service, the router ConfigMap or an HPA deleted by hand is re-created at once."""
    key = onion_key(namespace or "", labels[names.LABEL_ONION])
    memo["state"].changed(key, child_deleted=True)
