"""Parsing the Onion spec: defaults, durations and actionable InvalidSpec messages."""

from __future__ import annotations

from typing import Any

import pytest

from onion_contract.spec import InvalidSpec, parse_duration, parse_spec


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("2.5s", 2.5), ("500ms", 0.5), ("1h0m1s", 3601)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "10x", "1h 30m", "-5s", "5s3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_defaults() -> None:
    spec = parse_spec("o", {"core": {"model": "small"}, "layers": [{"name": "mid", "model": "m"}]})
    assert spec.core.engine == "tgi" and spec.core.replicas == 1
    mid = spec.layers[0]
    assert (mid.idle_timeout, mid.wake_timeout, mid.min_replicas) == (600, 600, 0)
    assert mid.managed and mid.escalation.policy == "confidence"
    assert spec.router.while_waking == "wait" and spec.max_awake_layers is None
    assert spec.core.autoscaling is None and mid.autoscaling is None


def test_autoscaling_defaults() -> None:
    spec = parse_spec(
        "o", core(layers=[{"name": "mid", "model": "m", "autoscaling": {"maxReplicas": 4}}])
    )
    auto = spec.layers[0].autoscaling
    assert auto is not None
    assert (auto.min_replicas, auto.max_replicas, auto.target_requests_per_replica) == (1, 4, 8.0)
    assert auto.metrics == () and auto.behavior is None


def core(**kw: Any) -> dict[str, Any]:
    return {"core": {"model": "small"}, **kw}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "spec.core: Field required"),
        (core(layers=[{"name": "mid"}]), "layer 'mid' needs exactly one of model or endpoint"),
        (
            core(layers=[{"name": "mid", "model": "m", "endpoint": "http://x"}]),
            "exactly one of model or endpoint",
        ),
        (
            core(layers=[{"name": "mid", "model": "m", "idleTimeout": "0s"}]),
            "spec.layers[0].idleTimeout: '0s' must be a positive duration",
        ),
        (
            core(layers=[{"name": "mid", "model": "m", "wakeTimeout": "soon"}]),
            "spec.layers[0].wakeTimeout: 'soon' is not a duration",
        ),
        (
            core(layers=[{"name": "a", "model": "m"}, {"name": "a", "model": "n"}]),
            "layer names must be unique; repeated: a",
        ),
        (core(layers=[{"name": "core", "model": "m"}]), "'core' is reserved"),
        (core(layers=[{"name": "Big_One", "model": "m"}]), "must be a DNS label"),
        (
            core(layers=[{"name": "mid", "model": "m", "rules": [{"regex": "(unclosed"}]}]),
            "spec.layers[0].rules[0]: regex '(unclosed' does not compile",
        ),
        (
            core(
                layers=[{"name": "mid", "model": "m", "rules": [{"regex": "a", "keywords": ["b"]}]}]
            ),
            "a rule has exactly one of regex, keywords, minPromptTokens",
        ),
        (
            core(
                maxAwakeLayers=1,
                layers=[
                    {"name": "a", "model": "m", "minReplicas": 1},
                    {"name": "b", "model": "n", "minReplicas": 1},
                ],
            ),
            "maxAwakeLayers=1 is smaller than the number of warm layers",
        ),
        (core(modelCache={}), "modelCache needs exactly one of pvcName or size"),
        ({"core": {"model": "small", "engine": "ollama"}}, "spec.core.engine: Input should be"),
        ({"core": {"model": "small", "replicas": 0}}, "spec.core.replicas"),
        (
            {"core": {"model": "small", "autoscaling": {"minReplicas": 3, "maxReplicas": 2}}},
            "autoscaling.maxReplicas (2) must be at least minReplicas (3)",
        ),
        (
            {"core": {"model": "small", "autoscaling": {"minReplicas": 1}}},
            "spec.core.autoscaling.maxReplicas: Field required",
        ),
        (
            core(
                layers=[
                    {
                        "name": "r",
                        "endpoint": "https://x.example",
                        "autoscaling": {"maxReplicas": 2},
                    }
                ]
            ),
            "layer 'r': an endpoint layer has no replicas to autoscale",
        ),
        (
            core(
                layers=[{"name": "mid", "model": "m", "apiKeySecretRef": {"name": "s", "key": "k"}}]
            ),
            "layer 'mid': apiKeySecretRef apply only to an endpoint layer",
        ),
        (
            core(
                layers=[{"name": "x", "endpoint": "https://a", "headers": {"Authorization": "k"}}]
            ),
            "spec.layers[0].headers: header 'Authorization' is set by the router itself",
        ),
        (
            core(layers=[{"name": "x", "endpoint": "https://a", "apiKeySecretRef": {"name": "s"}}]),
            "spec.layers[0].apiKeySecretRef.key: Field required",
        ),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_spec("o", spec)
    assert message in str(err.value)


def test_names_too_long_for_children() -> None:
    with pytest.raises(InvalidSpec, match="longer than 63 characters"):
        parse_spec("x" * 30, core(layers=[{"name": "y" * 30, "model": "m"}]))
