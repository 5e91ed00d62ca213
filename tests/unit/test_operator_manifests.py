"""The pure builders: children, router config and least-privilege RBAC."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from onion_contract.router_config import parse_config
from onion_contract.spec import InvalidSpec, parse_spec
from onion_operator.manifests import (
    Owner,
    applied_replicas,
    build_children,
    build_leases,
    build_model_deployment,
    build_replicas_claim,
    build_router_config,
    planned_core_replicas,
)

OWNER = Owner("chat", "ns1", "uid-1")

SPEC = {
    "core": {"model": "HuggingFaceTB/SmolLM2-1.7B-Instruct"},
    "layers": [
        {
            "name": "mid",
            "model": "Qwen/Qwen2.5-14B-Instruct",
            "wakeTimeout": "5m",
            "rules": [
                {"regex": "(?i)prove|theorem"},
                {"keywords": ["sql", "database"]},
                {"minPromptTokens": 2000},
            ],
        },
        {
            "name": "remote",
            "endpoint": "https://api.example.com/v1",
            "servedModelName": "big",
            "escalation": {"policy": "none"},
        },
    ],
    "router": {"authSecretName": "router-keys"},
}


def by_kind_name(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def test_children_are_owned_labelled_and_complete() -> None:
    spec = parse_spec("chat", SPEC)
    objs = by_kind_name(build_leases(OWNER, spec) + build_children(OWNER, spec, {"mid": 0}))
    assert set(objs) == {
        ("Deployment", "chat-core"),
        ("Service", "chat-core"),
        ("Lease", "chat-mid-demand"),
        ("Deployment", "chat-mid"),
        ("Service", "chat-mid"),
        ("ConfigMap", "chat-router"),
        ("ServiceAccount", "chat-router"),
        ("Role", "chat-router"),
        ("RoleBinding", "chat-router"),
        ("Deployment", "chat-router"),
        ("Service", "chat-router"),
    }
    for obj in objs.values():
        meta = obj["metadata"]
        assert meta["namespace"] == "ns1"
        assert meta["ownerReferences"][0]["uid"] == "uid-1"
        assert meta["labels"]["onion.dev/onion"] == "chat"
    lease = objs[("Lease", "chat-mid-demand")]
    assert lease["metadata"]["labels"]["onion.dev/component"] == "demand"
    assert "renewTime" not in lease["spec"]  # the router's field, never the operator's
    assert objs[("Deployment", "chat-mid")]["spec"]["replicas"] == 0
    assert objs[("Deployment", "chat-core")]["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    ("engine", "image", "port", "args", "gpu", "cache"),
    [
        (
            "tgi",
            "ghcr.io/huggingface/text-generation-inference:3.3.4",
            8080,
            ["--model-id", "org/m", "--hostname", "0.0.0.0", "--port", "8080"],
            1,
            "/data",
        ),
        (
            "vllm",
            "vllm/vllm-openai:v0.10.1",
            8000,
            [
                "--model",
                "org/m",
                "--served-model-name",
                "org/m",
                "--host",
                "0.0.0.0",
                "--port",
                "8000",
            ],
            1,
            "/root/.cache/huggingface",
        ),
        (
            "llamacpp",
            "ghcr.io/ggml-org/llama.cpp:server",
            8080,
            ["-hf", "org/m", "--alias", "org/m", "--host", "0.0.0.0", "--port", "8080"],
            None,
            "/models",
        ),
    ],
)
def test_engine_defaults(
    engine: str, image: str, port: int, args: list[str], gpu: int | None, cache: str
) -> None:
    spec = parse_spec(
        "chat", {"core": {"model": "org/m", "engine": engine}, "modelCache": {"pvcName": "weights"}}
    )
    dep = build_model_deployment(OWNER, "core", spec.core, 1, spec.model_cache)
    ctr = dep["spec"]["template"]["spec"]["containers"][0]
    assert ctr["image"] == image
    assert ctr["args"] == args
    assert ctr["ports"][0]["containerPort"] == port
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert ctr["resources"].get("limits", {}).get("nvidia.com/gpu") == gpu
    mount = next(m for m in ctr["volumeMounts"] if m["name"] == "model-cache")
    assert mount["mountPath"] == cache
    volume = next(
        v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "model-cache"
    )
    assert volume["persistentVolumeClaim"]["claimName"] == "weights"


def test_overrides_win_over_engine_defaults() -> None:
    spec = parse_spec(
        "chat",
        {
            "core": {
                "model": "/models/q.gguf",
                "engine": "llamacpp",
                "image": "my/llama:1",
                "args": ["--custom"],
                "resources": {"limits": {"cpu": "4"}},
                "podAnnotations": {"pod-ready.stage.kwok.x-k8s.io/delay": "2s"},
            }
        },
    )
    dep = build_model_deployment(OWNER, "core", spec.core, 1, None)
    ctr = dep["spec"]["template"]["spec"]["containers"][0]
    assert (ctr["image"], ctr["args"], ctr["resources"]) == (
        "my/llama:1",
        ["--custom"],
        {"limits": {"cpu": "4"}},
    )
    assert dep["spec"]["template"]["metadata"]["annotations"] == {
        "pod-ready.stage.kwok.x-k8s.io/delay": "2s"
    }


def test_router_config_matches_the_contract() -> None:
    config = build_router_config(parse_spec("chat", SPEC), "ns1", "chat")
    assert config["listen"] == {"host": "0.0.0.0", "port": 8080}
    assert config["kubernetes"] == {"enabled": True, "namespace": "ns1", "onion": "chat"}
    assert config["auth"] == {"keysFile": "/etc/onion/auth/keys"}
    assert (
        config["whileWaking"],
        config["maxQueuePerLayer"],
        config["streamBufferTokens"],
        config["heartbeatSeconds"],
        config["maxRequestBytes"],
    ) == ("wait", 64, 16, 5, 1048576)
    core, mid, remote = config["layers"]
    assert core == {
        "name": "core",
        "url": "http://chat-core.ns1.svc:80",
        "model": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        "engine": "tgi",
        "managed": False,
        "lease": None,
        "wakeTimeoutSeconds": 0,
        "escalation": {
            "policy": "confidence",
            "threshold": -0.8,
            "score": "mean",
            "firstK": 8,
            "sentinel": "[[ESCALATE]]",
        },
        "rules": [],
    }
    assert mid["url"] == "http://chat-mid.ns1.svc:80"
    assert (mid["managed"], mid["lease"], mid["wakeTimeoutSeconds"]) == (
        True,
        "chat-mid-demand",
        300,
    )
    assert mid["rules"] == [
        {"regex": "(?i)prove|theorem"},
        {"keywords": ["sql", "database"]},
        {"minPromptTokens": 2000},
    ]
    assert remote["url"] == "https://api.example.com/v1"
    assert (remote["managed"], remote["lease"], remote["model"]) == (False, None, "big")
    assert remote["escalation"]["policy"] == "none"


def test_no_auth_key_without_secret() -> None:
    config = build_router_config(parse_spec("chat", {"core": {"model": "m"}}), "ns1", "chat")
    assert "auth" not in config and [t["name"] for t in config["layers"]] == ["core"]


def test_router_rbac_is_least_privilege() -> None:
    objs = by_kind_name(build_children(OWNER, parse_spec("chat", SPEC), {}))
    role = objs[("Role", "chat-router")]
    assert role["rules"] == [
        {"apiGroups": ["onion.dev"], "resources": ["onions"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["chat-mid-demand"],
            "verbs": ["get", "patch", "update"],
        },
    ]
    binding = objs[("RoleBinding", "chat-router")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "chat-router", "namespace": "ns1"}
    ]


def test_router_deployment_mounts_config_and_rolls_on_change() -> None:
    spec = parse_spec("chat", SPEC)
    objs = by_kind_name(build_children(OWNER, spec, {}))
    dep = objs[("Deployment", "chat-router")]
    pod = dep["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    assert ctr["command"] == ["onion-router", "--config", "/etc/onion/config.yaml"]
    assert ctr["image"] == "ghcr.io/onion-of-experts/onion:0.1.0"
    assert pod["serviceAccountName"] == "chat-router"
    assert {m["mountPath"] for m in ctr["volumeMounts"]} == {"/etc/onion", "/etc/onion/auth"}
    config = yaml.safe_load(objs[("ConfigMap", "chat-router")]["data"]["config.yaml"])
    assert config["layers"][1]["name"] == "mid"
    changed = parse_spec("chat", {**SPEC, "router": {"whileWaking": "fallback"}})
    dep2 = by_kind_name(build_children(OWNER, changed, {}))[("Deployment", "chat-router")]
    hash_key = "onion.dev/config-hash"
    assert (
        dep["spec"]["template"]["metadata"]["annotations"][hash_key]
        != dep2["spec"]["template"]["metadata"]["annotations"][hash_key]
    )


def test_endpoint_credentials_are_mounted_secrets_the_config_points_at() -> None:
    layer = {
        "name": "hosted",
        "endpoint": "https://api.example.com/v1",
        "servedModelName": "gpt-4o-mini",
        "apiKeySecretRef": {"name": "openai", "key": "token"},
        "caSecretRef": {"name": "corp-ca", "key": "ca.pem"},
        "headers": {"OpenAI-Organization": "org-1"},
    }
    spec = parse_spec("chat", {"core": {"model": "m"}, "layers": [layer, {**layer, "name": "b"}]})
    objs = by_kind_name(build_children(OWNER, spec, {}))
    config = yaml.safe_load(objs[("ConfigMap", "chat-router")]["data"]["config.yaml"])
    hosted = config["layers"][1]
    assert hosted["apiKeyFile"] == "/etc/onion/layers/hosted/api-key"
    assert hosted["caFile"] == "/etc/onion/layers/hosted/ca.crt"
    assert (hosted["headers"], hosted["model"]) == ({"OpenAI-Organization": "org-1"}, "gpt-4o-mini")
    assert "apiKeyFile" not in config["layers"][0]
    pod = objs[("Deployment", "chat-router")]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "layer-hosted")
    assert volume["projected"]["sources"] == [
        {"secret": {"name": "openai", "items": [{"key": "token", "path": "api-key"}]}},
        {"secret": {"name": "corp-ca", "items": [{"key": "ca.pem", "path": "ca.crt"}]}},
    ]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    # A directory, not a subPath: only then does the kubelet swap in a rotated key.
    assert mounts["layer-hosted"] == {
        "name": "layer-hosted",
        "mountPath": "/etc/onion/layers/hosted",
        "readOnly": True,
    }
    assert "layer-b" in mounts and "subPath" not in mounts["layer-b"]


def test_http_route_only_when_asked_for() -> None:
    assert not any(
        o["kind"] == "HTTPRoute" for o in build_children(OWNER, parse_spec("chat", SPEC), {})
    )
    route = {
        "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
        "hostnames": ["chat.example.com"],
    }
    spec = parse_spec("chat", {**SPEC, "router": {"httpRoute": route}})
    objs = by_kind_name(build_children(OWNER, spec, {}))
    obj = objs[("HTTPRoute", "chat-router")]
    assert obj["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert obj["metadata"]["ownerReferences"][0]["name"] == "chat"
    assert obj["spec"] == {
        "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
        "hostnames": ["chat.example.com"],
        "rules": [{"backendRefs": [{"name": "chat-router", "port": 80}]}],
    }
    service = objs[("Service", "chat-router")]
    assert service["spec"]["ports"][0]["port"] == 80


def test_model_cache_size_creates_a_claim() -> None:
    spec = parse_spec("chat", {"core": {"model": "m"}, "modelCache": {"size": "200Gi"}})
    objs = by_kind_name(build_children(OWNER, spec, {}))
    pvc = objs[("PersistentVolumeClaim", "chat-model-cache")]
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "200Gi"}},
    }


def test_progress_deadline_covers_the_wake_timeout() -> None:
    spec = parse_spec(
        "chat",
        {
            "core": {"model": "m"},
            "layers": [
                {"name": "big", "model": "b", "wakeTimeout": "20m"},
                {"name": "mid", "model": "m"},
            ],
        },
    )
    big = build_model_deployment(OWNER, "big", spec.layers[0], 0, None)
    core = build_model_deployment(OWNER, "core", spec.core, 1, None)
    assert big["spec"]["progressDeadlineSeconds"] == 1200
    assert core["spec"]["progressDeadlineSeconds"] == 600


AUTOSCALED = {
    "core": {"model": "org/core", "autoscaling": {"minReplicas": 2, "maxReplicas": 4}},
    "layers": [
        {"name": "mid", "model": "org/mid", "autoscaling": {"maxReplicas": 3}},
        {
            "name": "big",
            "model": "org/big",
            "autoscaling": {
                "maxReplicas": 2,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70},
                        },
                    }
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}},
            },
        },
        {"name": "plain", "model": "org/plain"},
    ],
}


def test_autoscaled_parts_get_an_hpa_on_their_deployment() -> None:
    spec = parse_spec("chat", AUTOSCALED)
    objs = by_kind_name(build_children(OWNER, spec, {}))
    hpas = {name: o for (kind, name), o in objs.items() if kind == "HorizontalPodAutoscaler"}
    assert set(hpas) == {"chat-core", "chat-mid", "chat-big"}
    core = hpas["chat-core"]
    assert core["apiVersion"] == "autoscaling/v2"
    assert core["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert core["metadata"]["labels"]["onion.dev/component"] == "autoscaler"
    assert core["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "chat-core",
    }
    assert (core["spec"]["minReplicas"], core["spec"]["maxReplicas"]) == (2, 4)
    # No metrics given: the router's queued + in-flight requests for the layer, per replica.
    assert hpas["chat-mid"]["spec"]["metrics"] == [
        {
            "type": "External",
            "external": {
                "metric": {
                    "name": "onion_router_layer_requests",
                    "selector": {"matchLabels": {"onion": "chat", "layer": "mid"}},
                },
                "target": {"type": "AverageValue", "averageValue": "8"},
            },
        }
    ]
    big = hpas["chat-big"]["spec"]
    assert big["metrics"][0]["resource"]["name"] == "cpu"  # given metrics are used as they are
    assert big["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 600}}
    assert "behavior" not in hpas["chat-mid"]["spec"]


@pytest.mark.parametrize(
    ("part", "planned", "exists", "applied"),
    [
        ("plain", 0, True, 0),  # no HPA: the operator owns replicas and applies them
        ("plain", 1, False, 1),
        ("mid", 0, False, 0),  # autoscaled, created asleep
        ("mid", 1, False, 1),  # autoscaled, created awake
        ("mid", 1, True, None),  # autoscaled and there: the HPA's or the wake's field, left out
        ("mid", 0, True, None),
        ("core", 2, False, 2),  # an autoscaled core starts at the HPA's minimum
        ("core", 2, True, None),
    ],
)
def test_applied_replicas(part: str, planned: int, exists: bool, applied: int | None) -> None:
    spec = parse_spec("chat", AUTOSCALED)
    work = spec.core if part == "core" else spec.layer(part)
    assert work is not None
    assert applied_replicas(work, planned, exists) == applied
    replicas = {part: applied_replicas(work, planned, exists)}
    dep = by_kind_name(build_children(OWNER, spec, replicas))[("Deployment", f"chat-{part}")]
    assert dep["spec"].get("replicas") == applied
    assert ("replicas" in dep["spec"]) == (applied is not None)


def test_an_autoscaled_core_is_planned_at_the_hpa_minimum() -> None:
    assert planned_core_replicas(parse_spec("chat", AUTOSCALED).core) == 2
    assert planned_core_replicas(parse_spec("chat", SPEC).core) == 1


def test_the_replicas_claim_names_only_replicas() -> None:
    assert build_replicas_claim("ns1", "chat-mid", 2) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chat-mid", "namespace": "ns1"},
        "spec": {"replicas": 2},
    }


def test_security_contexts_reach_the_engine_container_and_pod_as_given() -> None:
    container = {"runAsNonRoot": True, "runAsUser": 1000, "capabilities": {"drop": ["ALL"]}}
    pod = {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
    spec = parse_spec(
        "chat",
        {"core": {"model": "m", "securityContext": container, "podSecurityContext": pod}},
    )
    hardened = build_model_deployment(OWNER, "core", spec.core, 1, None)["spec"]["template"]
    assert hardened["spec"]["securityContext"] == pod
    assert hardened["spec"]["containers"][0]["securityContext"] == container
    # Without them the engine image's defaults apply: nothing is set.
    plain = build_model_deployment(
        OWNER, "core", parse_spec("c", {"core": {"model": "m"}}).core, 1, None
    )
    assert "securityContext" not in plain["spec"]["template"]["spec"]
    assert "securityContext" not in plain["spec"]["template"]["spec"]["containers"][0]


def test_adaptive_and_verify_escalation_reach_the_router_config() -> None:
    escalation = {
        "policy": "verify",
        "threshold": 0.5,
        "targetRate": 0.25,
        "window": 200,
        "minSamples": 20,
        "minThreshold": 0.05,
        "verifyPrompt": "{question} -> {answer}: right?",
    }
    spec = {
        "core": {"model": "m", "escalation": escalation},
        "layers": [{"name": "big", "model": "b"}],
    }
    config = build_router_config(parse_spec("chat", spec), "ns1", "chat")
    rendered = config["layers"][0]["escalation"]
    assert {k: rendered[k] for k in escalation} == escalation
    assert "maxThreshold" not in rendered
    # The router reads it back exactly so.
    parsed = parse_config({**config, "kubernetes": {"enabled": False}})
    core = parsed.layers[0].escalation
    assert (core.policy, core.target_rate, core.window, core.min_samples) == (
        "verify",
        0.25,
        200,
        20,
    )
    assert core.verify_prompt == "{question} -> {answer}: right?"


def test_adaptive_settings_the_router_would_refuse_are_an_invalid_spec() -> None:
    bad = {"policy": "confidence", "targetRate": 0.2, "minThreshold": 1, "maxThreshold": 0}
    with pytest.raises(InvalidSpec, match=r"spec.core.escalation: minThreshold \(1.0\) is above"):
        parse_spec("chat", {"core": {"model": "m", "escalation": bad}})


@pytest.mark.parametrize(("idle", "renew"), [("10m", 3.0), ("6s", 2.0), ("3s", 1.0)])
def test_demand_is_renewed_well_inside_the_shortest_idle_timeout(idle: str, renew: float) -> None:
    # A renewal every 3 s against a 3 s idle timeout let a layer in use look idle when one
    # renewal came a little late (seen: a long request's layer put to sleep mid-answer).
    layers = [
        {"name": "mid", "model": "m", "idleTimeout": idle},
        {"name": "big", "model": "b", "idleTimeout": "1h"},
    ]
    spec = parse_spec("chat", {"core": {"model": "c"}, "layers": layers})
    config = build_router_config(spec, "ns1", "chat")
    assert config["demandRenewSeconds"] == renew
    assert parse_config(config).demand_renew_seconds == renew
    core_only = build_router_config(parse_spec("c", {"core": {"model": "c"}}), "ns1", "c")
    assert "demandRenewSeconds" not in core_only


def test_a_learned_policy_mounts_its_models_and_the_router_publishes_its_thresholds() -> None:
    spec = parse_spec(
        "a",
        {
            "core": {
                "model": "m",
                "escalation": {
                    "policy": "learned",
                    "model": {"configMap": "core-learned"},
                    "targetRate": 0.3,
                    "earlyWake": {"model": {"configMap": "core-prompt", "key": "p.json"}},
                },
            },
            "layers": [{"name": "mid", "model": "x"}],
            "router": {"decisionLog": {}},
        },
    )
    config = build_router_config(spec, "ns", "a")
    core = config["layers"][0]["escalation"]
    assert core["model"] == {"path": "/etc/onion/learned/core-learned/model.json"}
    assert core["earlyWake"]["model"] == {"path": "/etc/onion/learned/core-prompt/p.json"}
    assert config["decisionLog"] == {"path": "-", "prompts": False}
    assert config["thresholdsLease"] == "a-thresholds"
    objs = build_children(Owner("a", "ns", "uid"), spec, {})
    router = next(
        o for o in objs if o["metadata"]["name"] == "a-router" and o["kind"] == "Deployment"
    )
    pod = router["spec"]["template"]["spec"]
    assert {"name": "learned-1", "configMap": {"name": "core-prompt"}} in pod["volumes"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {
        "name": "learned-0",
        "mountPath": "/etc/onion/learned/core-learned",
        "readOnly": True,
    } in mounts
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "Lease"] == ["a-thresholds"]
    role = next(o for o in objs if o["kind"] == "Role")
    assert "a-thresholds" in role["rules"][1]["resourceNames"]
    # Without targetRate there is nothing to publish, and no Lease for it.
    plain = parse_spec("b", {"core": {"model": "m"}, "layers": [{"name": "mid", "model": "x"}]})
    assert "thresholdsLease" not in build_router_config(plain, "ns", "b")
    assert not [o for o in build_children(Owner("b", "ns", "u"), plain, {}) if o["kind"] == "Lease"]
