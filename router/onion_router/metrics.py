"""Prometheus metrics and the recent escalation counts /status shows; one registry per app."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# The load signal for autoscaling a layer (the operator's default HPA metric, through an adapter).
from onion_contract.names import LAYER_REQUESTS_METRIC as LAYER_REQUESTS
from onion_router.adaptive import Live

RECENT_SECONDS = 300.0
Snapshot = Callable[[], Sequence[dict[str, object]]]


class _LayerRequests(Collector):
    """Queued and in-flight requests per layer, read from the layer tracker at scrape time."""

    def __init__(self, onion: str, snapshot: Snapshot) -> None:
        self._onion = onion
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            LAYER_REQUESTS,
            "Requests this router holds for a layer: queued (waiting for it to wake) or in flight",
            labels=["onion", "layer", "state"],
        )
        for layer in self._snapshot():
            for state in ("queued", "inflight"):
                value = layer.get(state, 0)
                family.add_metric(
                    [self._onion, str(layer["name"]), state],
                    float(value) if isinstance(value, int | float) else 0.0,
                )
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "onion_router_requests",
            "Answered requests by endpoint, answering layer and outcome",
            ["endpoint", "layer", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "onion_router_request_seconds",
            "Time to the complete answer (non-streaming)",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.judgements = Counter(
            "onion_router_judgements",
            "Answers judged by a layer's policy",
            ["layer", "verdict"],
            registry=self.registry,
        )
        self.escalations = Counter(
            "onion_router_escalations",
            "Escalations from one layer to the next",
            ["source", "target"],
            registry=self.registry,
        )
        self.early_wakes = Counter(
            "onion_router_early_wakes",
            "Demand recorded early from uncertain first tokens",
            ["layer"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "onion_router_refusals",
            "Requests refused (queue full, wake timeout, upstream error)",
            ["code"],
            registry=self.registry,
        )
        self.threshold = Gauge(
            "onion_router_threshold",
            "Each judged layer's live escalation threshold (fixed, or adapted to targetRate)",
            ["layer"],
            registry=self.registry,
        )
        self.escalation_rate = Gauge(
            "onion_router_escalation_rate",
            "Fraction of each judged layer's recent answers that it escalated (its window)",
            ["layer"],
            registry=self.registry,
        )
        self.verify_seconds = Histogram(
            "onion_router_verify_seconds",
            "Time of the extra call that asks a layer to verify its own answer (policy verify)",
            ["layer"],
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self._recent: deque[tuple[float, str, str]] = deque(maxlen=10_000)

    def track_layers(self, onion: str, snapshot: Snapshot) -> None:
        """Export `onion_router_layer_requests` from `snapshot` (LayerTracker.snapshot)."""
        self.registry.register(_LayerRequests(onion, snapshot))

    def live(self, layer: str, live: Live) -> None:
        self.threshold.labels(layer).set(live.threshold)
        if live.escalation_rate is not None:
            self.escalation_rate.labels(layer).set(live.escalation_rate)

    def verified(self, layer: str, seconds: float) -> None:
        self.verify_seconds.labels(layer).observe(seconds)

    def judged(self, layer: str, accept: bool, escalated_to: str | None) -> None:
        self.judgements.labels(layer, "accept" if accept else "escalate").inc()
        if escalated_to is not None:
            self.escalations.labels(layer, escalated_to).inc()
            self._recent.append((time.monotonic(), layer, escalated_to))

    def early_wake(self, layer: str) -> None:
        self.early_wakes.labels(layer).inc()

    def recent_escalations(self) -> dict[str, int]:
        """Escalations in the last five minutes, keyed "source->target"."""
        horizon = time.monotonic() - RECENT_SECONDS
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()
        return dict(Tally(f"{src}->{dst}" for _, src, dst in self._recent))
