"""The Grafana dashboard in the chart queries only metrics (and labels) the router and the
operator export: a renamed metric breaks this test, not a panel nobody looks at."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.core import Metric

from onion_operator.metrics import OperatorMetrics
from onion_router.metrics import Metrics

DASHBOARD = Path(__file__).parents[2] / "charts/onion-of-experts/dashboards/onion-of-experts.json"
# Added by the scrape (Prometheus' target labels), or by histogram_quantile's buckets.
SCRAPE_LABELS = {"namespace", "pod", "instance", "job", "le"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported() -> dict[str, set[str]]:
    """Every sample name the two registries can export -> the labels it carries."""
    router = Metrics()
    router.track_layers("chat", lambda: [{"name": "mid", "queued": 0, "inflight": 0}])
    families: list[Metric] = [*router.registry.collect(), *OperatorMetrics().registry.collect()]
    names: dict[str, set[str]] = {}
    for family in families:
        labels = set(family.samples[0].labels) if family.samples else set()
        for metric in (router, OperatorMetrics()):
            for attr in vars(metric).values():
                if getattr(attr, "_name", None) == family.name:
                    labels |= set(attr._labelnames)
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = labels - {"le"}
    return names


def expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_every_metric_and_label_the_dashboard_queries_is_exported() -> None:
    names = exported()
    assert "onion_router_layer_requests" in names and "onion_operator_wakes_total" in names
    exprs = expressions()
    assert len(exprs) >= 20
    for expr in exprs:
        used = set(re.findall(r"\bonion_[a-z_]+", expr))
        assert used, expr
        missing = used - set(names)
        assert not missing, f"{expr}: no such metric {sorted(missing)}"
        labels = set().union(*(names[n] for n in used)) | SCRAPE_LABELS
        grouped = {
            label.strip()
            for group in re.findall(r"\bby \(([^)]*)\)", expr)
            for label in group.split(",")
        }
        matched = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"", expr))
        assert grouped | matched <= labels, f"{expr}: labels {sorted((grouped | matched) - labels)}"
