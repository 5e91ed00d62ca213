"""The operator's Prometheus metrics, in one registry per process (served by probes.py).

Names follow controller-runtime's where they mean the same (reconcile counts and durations, work
queue depth and latency), prefixed `onion_operator_`; per-layer wake facts are `onion_layer_`.
No label carries an Onion's name: a thousand Onions must not make a thousand series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds: passes take milliseconds; a queue that falls behind, or a cold start, takes longer.
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SLOW = (1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.passes = Counter(
            "onion_operator_reconcile",
            "Reconcile passes by kind (full: every child applied; refresh: wakes, sleeps, status) "
            "and result (ok, error)",
            ["kind", "result"],
            registry=r,
        )
        self.pass_seconds = Histogram(
            "onion_operator_reconcile_duration_seconds",
            "Time one reconcile pass took, by kind",
            ["kind"],
            buckets=_FAST,
            registry=r,
        )
        self.wakes = Counter(
            "onion_operator_wakes", "Layers scaled 0 -> 1, by reason", ["reason"], registry=r
        )
        self.sleeps = Counter(
            "onion_operator_sleeps", "Layers scaled 1 -> 0, by reason", ["reason"], registry=r
        )
        self.errors = Counter(
            "onion_operator_errors",
            "Failed passes and actions, by kind (api: the API server refused or failed; "
            "invalid_spec: an Onion marked InvalidSpec)",
            ["kind"],
            registry=r,
        )
        self.api_requests = Counter(
            "onion_operator_api_requests",
            "Requests the operator sent to the API server, by verb, resource and status code "
            "(error: no answer); a watch request counts once, as verb WATCH",
            ["verb", "resource", "code"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "onion_operator_workqueue_depth",
            "Onions waiting for a pass now, by priority (event: a change or a deadline; backlog: "
            "start-up passes and drift repairs, served after every event)",
            ["priority"],
            registry=r,
        )
        self.queue_latency = Histogram(
            "onion_operator_workqueue_queue_duration_seconds",
            "How far behind the operator is: from an Onion queued (a change seen, or a deadline "
            "due) to its pass starting, by priority",
            ["priority"],
            buckets=_FAST,
            registry=r,
        )
        self.onions = Gauge("onion_operator_onions", "Onions in the operator's cache", registry=r)
        self.leader = Gauge(
            "onion_operator_leader", "1 while this instance leads, 0 as a standby", registry=r
        )
        self.cold_start = Histogram(
            "onion_layer_cold_start_seconds",
            "From a wake (replicas 0 -> 1) to the layer's first Ready pod, as the operator saw it",
            buckets=_SLOW,
            registry=r,
        )
