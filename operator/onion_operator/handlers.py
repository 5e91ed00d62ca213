"""The kopf handlers: the only module that knows kopf. Each one is a few lines.

kopf runs the operator (start-up, clean-up, signals, logging); what it watches is fed by the
operator's own informers (informer.py), one per kind: demand Leases, Onions and model Deployments
are listed once at start into three caches (cache.py), smallest first, each then watched from its
list; Services, the router ConfigMaps and HPAs are watched for their deletions only. Every change
puts the Onion's key on the work queue as an `EVENT`, served from the moment the Leases are listed
(a pass reads what the caches lack yet); after a start, each Onion's first pass is an `EVENT` if
someone may be waiting on it (urgency.py: demand or readiness the status does not show yet, a new
spec) and `BACKLOG` otherwise, so a restarted operator serves wakes before its start-up passes.
A pass (`run_pass`) reads the clock once, plans from the caches, writes only what differs, and asks
the queue to come back at the plan's next deadline (an `EVENT`) or the Onion's next drift repair
(`BACKLOG`), whichever is first. At rest, with no demand and nothing changing, the operator sends no
requests but those repairs, spread over `resync_seconds`, and its leader Lease renewals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from onion_contract import names
from onion_operator.cache import (
    CachedDeployment,
    CachedLease,
    CachedOnion,
    OnionView,
    Store,
    Written,
    deployment_entry,
    key_of_child,
    key_of_onion,
    lease_entry,
    onion_entry,
)
from onion_operator.informer import LISTED, Informer, Obj, Source
from onion_operator.kube import RETRYABLE, ApiError, Kube, NotFound
from onion_operator.metrics import OperatorMetrics
from onion_operator.planner import Wake
from onion_operator.probes import Health
from onion_operator.reconciler import Event, PassApi, reconcile
from onion_operator.urgency import waiting, waiting_by_status
from onion_operator.workqueue import Priority, WorkQueue, next_repair, spread

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
            lambda key, priority: run_pass(self, key, priority),
            tuning.workers,
            lambda seconds, priority: metrics.queue_latency.labels(priority.label).observe(seconds),
        )
        for priority in Priority:
            metrics.queue_depth.labels(priority.label).set_function(self._depth_of(priority))
        metrics.onions.set_function(lambda: len(self.onions))
        self.unlisted: set[str] = {names.KIND, "Lease", "Deployment"}  # no first list yet
        self.watches: list[asyncio.Task[None]] = []
        self.needs_full: set[str] = set()  # a child was deleted: apply everything
        self.repair_due: dict[str, float] = {}  # loop time of each Onion's next drift repair
        self.failures: dict[str, int] = {}
        self.last_error: dict[str, str] = {}

    def _depth_of(self, priority: Priority) -> Callable[[], int]:
        return lambda: self.queue.depth(priority)

    def changed(self, key: str, *, child_deleted: bool = False) -> None:
        if child_deleted:
            self.needs_full.add(key)
            self.written.forget_children(key)
        self.queue.add(key, Priority.EVENT)

    def forget(self, key: str) -> None:
        self.queue.forget(key)
        self.written.forget(key)
        for memo in (self.repair_due, self.failures, self.last_error):
            memo.pop(key, None)
        self.needs_full.discard(key)

    def view(self, key: str) -> OnionView | None:
        onions = self.onions.get(key)
        if not onions:
            return None
        return self.written.view(onions[0], self.deployments.get(key), self.leases.get(key))

    def first_passes(self, judge: Callable[[OnionView], str | None]) -> None:
        """Queue each cached Onion that has had no pass since the start: an `EVENT` if `judge`
        says someone may be waiting on it, else (once every kind is listed) `BACKLOG`."""
        urgent = queued = 0
        for key in self.onions:
            view = self.view(key)
            if view is None or key in self.repair_due:  # its first pass ran (an event)
                continue
            reason = judge(view)
            if reason is not None:
                urgent += 1
                log.info("%s first: %s", key, reason)
                self.queue.add(key, Priority.EVENT)
            elif not self.unlisted:
                self.queue.add(key, Priority.BACKLOG)
            queued += 1
        if not self.unlisted:
            log.info("%d Onions queued, %d of them first", queued, urgent)


async def _post(state: OperatorState, onion: CachedOnion, event: Event, now: datetime) -> None:
    try:
        await state.kube.post_event(onion.ref(), event.type, event.reason, event.message, now)
    except RETRYABLE as e:  # an Event is worth a log line, not a retry
        log.warning("posting %s on %s failed: %s", event.reason, onion.key, e)


async def _failed(
    state: OperatorState,
    onion: CachedOnion,
    error: BaseException,
    now: datetime,
    priority: Priority,
) -> None:
    """One Event per distinct error, and a retry after a growing delay, as urgent as before."""
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
    state.queue.add_at(key, asyncio.get_running_loop().time() + delay, priority)


async def _gone(state: OperatorState, onion: CachedOnion) -> bool:
    """After a 404: something the caches hold was deleted and the watch has not said so yet (or
    said it while this pass ran). If it is the Onion, drop it and say so; else re-read its
    Leases and Deployments, so the retry (a full pass) re-creates what is missing."""
    kube = state.kube
    try:
        if await kube.get(names.KIND, onion.namespace, onion.name) is None:
            log.info("%s is gone: dropped from the cache", onion.key)
            state.onions.discard(onion.key, onion.name)
            state.forget(onion.key)
            return True
        for store, kind in _child_kinds(state):
            store.replace(onion.key, await kube.list(kind, onion.namespace, _of(kind, onion.name)))
    except RETRYABLE as e:
        log.warning("re-reading %s after a 404 failed: %s", onion.key, e)
        return False
    state.needs_full.add(onion.key)
    state.written.forget_children(onion.key)
    return False


async def _read_unlisted(state: OperatorState, key: str) -> None:
    """Before every kind has its first list: read this one Onion, and its model Deployments, from
    the API if their kinds are not listed yet, so that an event is served now, not after the lists
    (two requests; an older version never replaces what the lists bring later)."""
    namespace, name = key.split("/", 1)
    if names.KIND in state.unlisted:
        onion = await state.kube.get(names.KIND, namespace, name)
        if onion is not None:
            state.onions.update(onion)
    if "Deployment" in state.unlisted:
        for deployment in await state.kube.list("Deployment", namespace, _of("Deployment", name)):
            state.deployments.update(deployment)


async def run_pass(state: OperatorState, key: str, priority: Priority = Priority.EVENT) -> None:
    """Reconcile one Onion from the caches, reading the clock once, and schedule its next pass."""
    if state.unlisted:
        try:
            await _read_unlisted(state, key)
        except RETRYABLE as e:
            log.warning("reading %s before the caches are listed failed: %s", key, e)
            state.queue.add_at(key, asyncio.get_running_loop().time() + 1, priority)
            return
    view = state.view(key)
    if view is None:  # deleted, or its children seen before it
        state.forget(key)
        return
    loop_now = asyncio.get_running_loop().time()
    period = state.tuning.resync_seconds
    due = state.repair_due.setdefault(key, loop_now + spread(key, period))  # first: its slot
    full = key in state.needs_full or loop_now >= due
    state.needs_full.discard(key)
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
        await _failed(state, view.onion, e, now, priority)
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
    when, next_look, urgency = state.repair_due[key], "drift repair", Priority.BACKLOG
    deadline = outcome.next_deadline
    if deadline is not None and loop_now + (deadline.at - now).total_seconds() < when:
        when = loop_now + (deadline.at - now).total_seconds()
        next_look, urgency = f"{deadline.reason} of {deadline.layer}", Priority.EVENT
    state.queue.add_at(key, when, urgency)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "pass %s (%s%s): %s; next in %.1fs (%s)",
            key,
            priority.label,
            ", full" if outcome.full else "",
            "; ".join(f"{e.reason}: {e.message}" for e in outcome.events) or "nothing to do",
            when - loop_now,
            next_look,
        )


# --- what the informers follow -----------------------------------------------------------------

_COMPONENT: dict[str, dict[str, str]] = {
    "Lease": {names.LABEL_COMPONENT: names.COMPONENT_DEMAND},
    "Deployment": {names.LABEL_COMPONENT: names.COMPONENT_MODEL},
}
_DELETIONS_OF = ("Service", "ConfigMap", "HorizontalPodAutoscaler")  # re-created at once


def _child_kinds(state: OperatorState) -> list[tuple[Store[Any], str]]:
    return [(state.leases, "Lease"), (state.deployments, "Deployment")]


def _of(kind: str, onion: str) -> dict[str, str]:
    """The labels of one Onion's demand Leases or model Deployments."""
    return {**_COMPONENT[kind], names.LABEL_ONION: onion}


def _selector(kind: str) -> str:
    """Demand Leases and model Deployments by their component; the rest: any Onion's."""
    return ",".join([*(f"{k}={v}" for k, v in _COMPONENT.get(kind, {}).items()), names.LABEL_ONION])


def _on_cached(
    state: OperatorState, store: Store[Any], deleted: Callable[[str], None]
) -> Callable[[str, Obj], None]:
    """Keep `store`; a change queues its Onion (a first list's objects wait for `first_passes`),
    a deletion goes to `deleted` with the Onion's key."""

    def seen(type_: str, body: Obj) -> None:
        if type_ == "DELETED":
            deleted(store.remove(body))
            return
        key, new = store.update(body)
        if new and (type_ != LISTED or not state.unlisted):
            state.changed(key)

    return seen


def _child_deleted(state: OperatorState) -> Callable[[str], None]:
    return lambda key: state.changed(key, child_deleted=True)


def _on_deleted(state: OperatorState) -> Callable[[str, Obj], None]:
    """A Service, the router ConfigMap or an HPA deleted by hand is re-created at once."""

    def seen(type_: str, body: Obj) -> None:
        if type_ == "DELETED":
            _child_deleted(state)(key_of_child(body))

    return seen


def informers(state: OperatorState, kube: Kube, namespaces: list[str] | None) -> list[Informer]:
    """One informer per followed kind and namespace (None: one for all namespaces)."""
    scope: list[str | None] = [None] if namespaces is None else list(namespaces)
    followed: list[tuple[Source, Callable[[str, Obj], None]]] = []
    for namespace in scope:
        followed += [
            (
                Source("Lease", _selector("Lease"), namespace),
                _on_cached(state, state.leases, _child_deleted(state)),
            ),
            # An Onion's children go by owner references: forget it.
            (Source(names.KIND, "", namespace), _on_cached(state, state.onions, state.forget)),
            (
                Source("Deployment", _selector("Deployment"), namespace),
                _on_cached(state, state.deployments, _child_deleted(state)),
            ),
            *(
                (Source(kind, _selector(kind), namespace, changes_only=True), _on_deleted(state))
                for kind in _DELETIONS_OF
            ),
        ]
    return [Informer(kube, source, on_event) for source, on_event in followed]


async def _list_then_watch(state: OperatorState, feeds: list[Informer]) -> None:
    """Start each feed (it lists, retrying until the API answers, then watches from that list)
    and wait until every one has its first list in the caches."""
    for feed in feeds:
        state.watches.append(asyncio.create_task(feed.run(), name=f"watch {feed.source}"))
    await asyncio.gather(*(feed.listed.wait() for feed in feeds))


async def fill(state: OperatorState, feeds: list[Informer]) -> None:
    """List every followed kind once into the caches and watch it from there, smallest first, so
    that events are served before the lists are done: the demand Leases (and the kinds followed
    for deletions, one request each), then passes start (an event's pass reads its own Onion and
    Deployments until their kinds are listed); then the Onions, and those whose demand their
    status has not seen go first; then the model Deployments, and every Onion is queued once."""
    stages = [
        ({"Lease", *_DELETIONS_OF}, None),
        ({names.KIND}, waiting_by_status),
        ({"Deployment"}, waiting),
    ]
    for kinds, judge in stages:
        await _list_then_watch(state, [f for f in feeds if f.source.kind in kinds])
        state.unlisted -= kinds
        if judge is None:
            log.info("demand Leases of %d Onions listed: serving events", len(state.leases))
            state.queue.start()
        else:
            state.first_passes(judge)


# --- lifecycle ---------------------------------------------------------------------------------


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """The API clients, the caches (listed once, then watched) and the work queue.
    `memo.namespaces` is the operator's scope: a list, or None for all."""
    settings.posting.enabled = False  # our own Events say what happened; not kopf's
    tuning = memo.get("tuning") or Tuning()
    metrics: OperatorMetrics = memo.get("metrics") or OperatorMetrics()
    kube = await Kube.connect(metrics=metrics)
    # Watches hold their connections for minutes: their own pool, so that however many
    # namespaces are followed, passes always find a free connection.
    watches = await Kube.connect(metrics=metrics, pool=0)
    state = OperatorState(kube, tuning, metrics)
    memo["state"], memo["watches"] = state, watches
    await fill(state, informers(state, watches, memo.get("namespaces")))
    health: Health | None = memo.get("health")
    if health is not None:
        health.synced = True


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState = memo["state"]
    for task in state.watches:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await state.queue.stop()
    await state.kube.close()
    await memo["watches"].close()
