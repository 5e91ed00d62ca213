"""Property-based fuzzing of Onion specs against the real API server and operator (Hypothesis).

Generated specs, valid and broken (a valid Onion with fields set to arbitrary values, removed, or
combined in ways the schema forbids), are applied with kubectl. Each must end one of three ways:

- rejected at admission (kubectl fails) with a message that names the field;
- accepted, then marked `InvalidSpec` by the operator with a message naming the field, and with
  nothing created in the cluster for it;
- accepted and acted on (its core Deployment exists).

Afterwards the operator is still running, wrote each invalid Onion's status once and posted one
InvalidSpec Event for it (no retry loop), and logged no traceback.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterator
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onion_lab.cluster import Cluster
from onion_lab.operator import OperatorProcess
from onion_lab.waiting import wait_until
from tests.support.operator import condition, running_operator

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EXAMPLES = int(os.environ.get("ONION_FUZZ_ONIONS", "25"))

BASE: dict[str, Any] = {
    "core": {"model": "core-model", "engine": "llamacpp"},
    "layers": [
        {"name": "mid", "model": "mid-model", "engine": "llamacpp", "idleTimeout": "10m"},
        {"name": "ext", "endpoint": "https://models.example/v1"},
    ],
    "router": {"replicas": 0},
}
# Paths (into the spec) the mutations touch: every field the operator reads, at each level.
PATHS: tuple[tuple[str | int, ...], ...] = (
    ("core",),
    ("core", "model"),
    ("core", "engine"),
    ("core", "replicas"),
    ("core", "image"),
    ("core", "args"),
    ("core", "env"),
    ("core", "resources"),
    ("core", "nodeSelector"),
    ("core", "escalation"),
    ("core", "escalation", "policy"),
    ("core", "escalation", "threshold"),
    ("core", "escalation", "score"),
    ("core", "escalation", "firstK"),
    ("layers",),
    ("layers", 0),
    ("layers", 0, "name"),
    ("layers", 0, "model"),
    ("layers", 0, "endpoint"),
    ("layers", 0, "idleTimeout"),
    ("layers", 0, "wakeTimeout"),
    ("layers", 0, "minReplicas"),
    ("layers", 0, "rules"),
    ("layers", 0, "escalation", "via"),
    ("layers", 1, "name"),
    ("layers", 1, "endpoint"),
    ("router", "replicas"),
    ("router", "whileWaking"),
    ("router", "maxQueuePerLayer"),
    ("router", "heartbeatSeconds"),
    ("maxAwakeLayers",),
    ("evictionGracePeriod",),
    ("modelCache",),
)

names = st.sampled_from(["mid", "ext", "core", "router", "Big", "a" * 45, "x", "-bad", ""])
durations = st.sampled_from(["10m", "0s", "-5s", "1h30m", "10", "ten minutes", "1.5h", "", "9999h"])
rules = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "regex": st.sampled_from(["(?i)prove", "(unclosed", "[a-", "ok"]),
            "keywords": st.lists(st.text(max_size=5), max_size=2),
            "minPromptTokens": st.integers(-2, 5000),
        },
    ),
    max_size=2,
)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 10**12)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=12)
    | names
    | durations,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
specials: dict[str, st.SearchStrategy[Any]] = {
    "name": names,
    "idleTimeout": durations,
    "wakeTimeout": durations,
    "evictionGracePeriod": durations,
    "rules": rules,
    "maxAwakeLayers": st.integers(-1, 3),
    "minReplicas": st.integers(-1, 2),
    "replicas": st.integers(-1, 3),
}


def _set(spec: dict[str, Any], path: tuple[str | int, ...], value: Any, delete: bool) -> bool:
    """Set (or delete) `path` in `spec`; False if a container on the way is not there."""
    node: Any = spec
    for key in path[:-1]:
        if isinstance(key, int):
            if not isinstance(node, list) or len(node) <= key:
                return False
        elif not isinstance(node, dict) or key not in node:
            if not isinstance(node, dict):
                return False
            node[key] = {}
        node = node[key]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or len(node) <= last:
            return False
        if delete:
            node.pop(last)
        else:
            node[last] = value
        return True
    if not isinstance(node, dict):
        return False
    if delete:
        node.pop(last, None)
    else:
        node[last] = value
    return True


@st.composite
def onion_specs(draw: st.DrawFn) -> tuple[dict[str, Any], list[str], bool]:
    """A spec, the field names its mutations touched (what an error message should name), and
    whether the Onion gets a name too long for its children's names."""
    spec = copy.deepcopy(BASE)
    touched: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(PATHS))
        key = path[-1]
        value = draw(specials.get(key, values) if isinstance(key, str) else values)
        if _set(spec, path, value, delete=draw(st.integers(0, 5)) == 0):
            touched += [str(p) for p in path if isinstance(p, str)]
    layers = spec.get("layers")
    first = layers[0] if isinstance(layers, list) and layers else None
    trouble = draw(st.sampled_from(["none", "none", "duplicate", "regex", "budget", "long"]))
    if trouble == "duplicate" and isinstance(first, dict):  # the same name (and fields) twice
        layers.append(copy.deepcopy(first))
        touched.append("layers")
    # What only the operator can judge: a regex that does not compile, more warm layers than
    # the GPU budget, child names over 63 characters.
    elif trouble == "regex" and isinstance(first, dict):
        first["rules"] = [{"regex": draw(st.sampled_from(["(unclosed", "[a-", "*x", "a{2,1}"]))}]
        touched += ["rules", "regex"]
    elif trouble == "budget" and isinstance(first, dict) and "model" in first:
        first["minReplicas"] = 1
        layers.append({"name": "warm2", "model": "m", "minReplicas": 1})
        spec["maxAwakeLayers"] = 1
        touched += ["maxAwakeLayers", "minReplicas"]
    elif trouble == "long":
        touched.append("name")
    return spec, touched, trouble == "long"


ids = count()


@pytest.fixture
def operator(cluster: Cluster, namespace: str) -> Iterator[OperatorProcess]:
    with running_operator(cluster, namespace) as proc:
        yield proc


def _apply(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> tuple[bool, str]:
    body = {"apiVersion": "onion.dev/v1alpha1", "kind": "Onion", "metadata": {"name": name}}
    body["spec"] = spec
    done = cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(body), check=False)
    return done.returncode == 0, done.stderr.strip()


def _settled(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The InvalidSpec condition once the operator has judged this generation of the Onion."""
    onion = cluster.kubectl_json("-n", namespace, "get", "onion", name)
    generation = onion["metadata"].get("generation")
    for cond in (onion.get("status") or {}).get("conditions") or []:
        if cond["type"] == "InvalidSpec" and cond.get("observedGeneration") == generation:
            return dict(cond)
    return None


def test_generated_onions_are_rejected_marked_invalid_or_served(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    outcomes: dict[str, list[str]] = {"rejected": [], "invalid": [], "served": []}

    @settings(
        max_examples=EXAMPLES,
        derandomize=os.environ.get("HYPOTHESIS_PROFILE") != "fuzz",
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(generated=onion_specs())
    def check(generated: tuple[dict[str, Any], list[str], bool]) -> None:
        spec, touched, long_name = generated
        name = f"fz{next(ids)}" + ("-" + "x" * 60 if long_name else "")
        accepted, message = _apply(cluster, namespace, name, spec)
        if not accepted:
            assert "spec" in message, message
            assert any(field in message for field in touched), (touched, message)
            outcomes["rejected"].append(name)
            return
        judged = wait_until(
            lambda: _settled(cluster, namespace, name), timeout=30, what=f"{name} judged"
        )
        if judged["status"] == "True":
            assert any(field in judged["message"] for field in touched), (touched, judged)
            assert _deployments_of(cluster, namespace, name) == set(), judged
            outcomes["invalid"].append(name)
        else:
            assert _deployments_of(cluster, namespace, name) >= {f"{name}-core"}
            outcomes["served"].append(name)

    check()
    print({k: len(v) for k, v in outcomes.items()})
    # All three outcomes occur: the generator reaches each side of the validation.
    assert all(outcomes.values()), outcomes

    # No retry loop: an invalid Onion's status is written once, one Event says why, and its
    # resourceVersion stays put while the operator keeps running.
    before = {n: _resource_version(cluster, namespace, n) for n in outcomes["invalid"]}
    time.sleep(3)
    after = {n: _resource_version(cluster, namespace, n) for n in outcomes["invalid"]}
    assert before == after
    events = cluster.kubectl_json(
        "-n", namespace, "get", "events", "--field-selector", "reason=InvalidSpec"
    )["items"]
    per_onion: dict[str, int] = {}
    for event in events:
        name = event["involvedObject"]["name"]
        per_onion[name] = per_onion.get(name, 0) + int(event.get("count") or 1)
    assert per_onion == dict.fromkeys(outcomes["invalid"], 1)
    for name in outcomes["invalid"]:
        assert condition(cluster, namespace, name, "Ready")["status"] == "False"

    assert operator.proc is not None and operator.proc.poll() is None, operator.logs()[-3000:]
    assert "Traceback" not in operator.logs(), operator.logs()[-5000:]


def _deployments_of(cluster: Cluster, namespace: str, onion: str) -> set[str]:
    """Deployments owned by the Onion (listed whole: a name too long for a label selector is
    one of the generated cases)."""
    items = cluster.kubectl_json("-n", namespace, "get", "deployments")["items"]
    return {
        d["metadata"]["name"]
        for d in items
        if any(o.get("name") == onion for o in d["metadata"].get("ownerReferences") or [])
    }


def _resource_version(cluster: Cluster, namespace: str, name: str) -> str:
    onion = cluster.kubectl_json("-n", namespace, "get", "onion", name)
    return str(onion["metadata"]["resourceVersion"])
