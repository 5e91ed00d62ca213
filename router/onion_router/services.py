"""What the app's lifespan owns (the HTTP clients, the layer link and tracker, the escalator,
the metrics), and how a route reaches it: the lifespan's state, read from the request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

from starlette.requests import Request

from onion_contract.router_config import RouterConfig
from onion_router.decisions import DecisionLog
from onion_router.escalation import Escalator
from onion_router.layers import LayerLink, LayerTracker, StaticLink
from onion_router.metrics import Metrics
from onion_router.scoring import Scoring
from onion_router.thresholds import Annotated, ThresholdsSync
from onion_router.upstream import Upstream, upstreams

STATE_KEY = "services"


@dataclass(frozen=True)
class Services:
    config: RouterConfig
    escalator: Escalator
    tracker: LayerTracker
    upstreams: dict[str, Upstream]
    metrics: Metrics


def _layer_link(config: RouterConfig) -> LayerLink:
    """The Kubernetes API in cluster mode, else every layer counts as awake."""
    if not config.kubernetes.enabled:
        return StaticLink(config.layers)
    try:  # only in cluster mode: an edge install has no Kubernetes client
        from onion_router.kube import KubeLink
    except ImportError as err:
        raise RuntimeError(
            f"kubernetes.enabled needs the Kubernetes client ({err}); install "
            "'onion-of-experts[cluster]', or set kubernetes.enabled: false"
        ) from None
    return KubeLink(config.kubernetes.namespace, config.kubernetes.onion)


def _thresholds_sync(
    config: RouterConfig, link: LayerLink, escalator: Escalator
) -> ThresholdsSync | None:
    """In cluster mode with a thresholds Lease: share live targetRate thresholds through it."""
    if config.thresholds_lease is None or not hasattr(link, "annotate"):
        return None
    return ThresholdsSync(cast(Annotated, link), config.thresholds_lease, escalator.thresholds)


@asynccontextmanager
async def running(
    config: RouterConfig, scoring: Scoring, link: LayerLink | None = None
) -> AsyncIterator[Services]:
    """The router's services from start-up to shutdown; `link` replaces the configured layer
    link (tests play the operator with one)."""
    tracker = LayerTracker(config, link or _layer_link(config))
    log = config.decision_log
    decisions = DecisionLog(log.path, log.prompts) if log is not None else None
    async with upstreams(config) as clients:
        metrics = Metrics()
        metrics.track_layers(config.kubernetes.onion, tracker.snapshot)
        escalator = Escalator(config, tracker, clients, metrics, scoring, decisions)
        await tracker.start()
        sync = _thresholds_sync(config, tracker.link, escalator)
        if sync is not None:
            await sync.start()
        try:
            yield Services(config, escalator, tracker, clients, metrics)
        finally:
            if sync is not None:
                await sync.close()
            await tracker.close()
            if decisions is not None:
                decisions.close()


def services(request: Request) -> Services:
    """The running app's services (also a FastAPI dependency)."""
    found = getattr(request.state, STATE_KEY, None)
    if not isinstance(found, Services):
        raise RuntimeError("the router's lifespan has not started")  # pragma: no cover
    return found
