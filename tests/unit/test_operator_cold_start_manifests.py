"""What shortens a real wake: probes sized from wakeTimeout, the engines' warm-up caches, the
model revision, the image pre-pull DaemonSets and the weights prefetch Jobs."""

from __future__ import annotations

from typing import Any

import pytest

from onion_contract import names
from onion_contract.spec import InvalidSpec, parse_spec
from onion_operator import constants as c
from onion_operator.manifests import (
    Owner,
    build_children,
    build_model_deployment,
    prefetch_job_name,
)

OWNER = Owner("chat", "ns1", "uid-1")
GPU_NODES = {
    "nodeSelector": {"gpu": "a100"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}


def spec_of(layers: list[dict[str, Any]], **extra: Any) -> Any:
    return parse_spec("chat", {"core": {"model": "org/core"}, "layers": layers, **extra})


def engine(dep: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_startup_probe_allows_the_whole_wake_timeout_before_liveness_counts() -> None:
    spec = spec_of([{"name": "big", "model": "b", "wakeTimeout": "20m"}])
    big = engine(build_model_deployment(OWNER, "big", spec.layers[0], 0, None))
    startup, liveness = big["startupProbe"], big["livenessProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] == 1200
    assert liveness["httpGet"] == startup["httpGet"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] == 60
    assert big["readinessProbe"]["periodSeconds"] == 1  # Ready seen within a second
    core = engine(build_model_deployment(OWNER, "core", spec.core, 1, None))
    assert core["startupProbe"]["failureThreshold"] == 600


def test_vllm_keeps_its_compile_caches_on_the_model_cache_volume() -> None:
    spec = spec_of([{"name": "mid", "model": "org/m", "engine": "vllm", "revision": "v2"}])
    dep = build_model_deployment(OWNER, "mid", spec.layers[0], 0, spec.model_cache)
    env = {e["name"]: e["value"] for e in engine(dep)["env"]}
    assert env["VLLM_CACHE_ROOT"] == "/root/.cache/huggingface/vllm"
    assert env["TRITON_CACHE_DIR"] == "/root/.cache/huggingface/triton"
    assert engine(dep)["volumeMounts"][0]["mountPath"] == "/root/.cache/huggingface"
    args = engine(dep)["args"]
    assert args[args.index("--revision") + 1] == "v2"


def test_no_cold_start_helpers_unless_asked() -> None:
    kinds = {o["kind"] for o in build_children(OWNER, spec_of([{"name": "mid", "model": "m"}]), {})}
    assert "DaemonSet" not in kinds and "Job" not in kinds


def test_pre_pull_runs_each_layers_image_where_its_pods_can_run_and_asks_for_no_gpu() -> None:
    layers = [
        {"name": "mid", "model": "org/m", "engine": "vllm", **GPU_NODES},
        {"name": "big", "model": "org/b", "image": "registry.example/tgi:custom"},
        {"name": "remote", "endpoint": "https://example.com/v1"},
    ]
    spec = spec_of(layers, coldStart={"prePullImages": True})
    sets = {
        o["metadata"]["name"]: o
        for o in build_children(OWNER, spec, {})
        if o["kind"] == "DaemonSet"
    }
    assert set(sets) == {"chat-mid-pull", "chat-big-pull"}  # managed layers only
    mid = sets["chat-mid-pull"]
    pod = mid["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == GPU_NODES["nodeSelector"]
    assert pod["tolerations"] == GPU_NODES["tolerations"]
    (pull,) = pod["initContainers"]
    assert pull["image"] == "vllm/vllm-openai:v0.10.1"
    assert pull["imagePullPolicy"] == "IfNotPresent"
    for container in [pull, *pod["containers"]]:
        assert "nvidia.com/gpu" not in str(container["resources"])
        assert container["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["image"] == c.PAUSE_IMAGE
    assert mid["metadata"]["labels"][names.LABEL_COMPONENT] == names.COMPONENT_PREPULL
    assert mid["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    big = sets["chat-big-pull"]["spec"]["template"]["spec"]
    assert big["initContainers"][0]["image"] == "registry.example/tgi:custom"


def test_prefetch_fills_the_model_cache_as_the_engine_reads_it_once_per_revision() -> None:
    token = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    layers = [
        {"name": "mid", "model": "org/m", "revision": "abc123", "env": [token]},
        {"name": "big", "model": "org/b", "engine": "vllm"},
        {"name": "edge", "model": "org/gguf:Q4_K_M", "engine": "llamacpp"},
    ]
    spec = spec_of(layers, modelCache={"size": "500Gi"}, coldStart={"prefetchWeights": True})
    jobs = {
        o["metadata"]["labels"][names.LABEL_LAYER]: o
        for o in build_children(OWNER, spec, {})
        if o["kind"] == "Job"
    }
    assert set(jobs) == {"mid", "big"}  # llama.cpp's -hf cache is its own layout: no Job
    mid = jobs["mid"]
    pod = mid["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:5] == ["hf", "download", "org/m", "--revision", "abc123"]
    assert "*.safetensors" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_HOME"]["value"] == "/data" and env["HF_TOKEN"] == token
    assert container["volumeMounts"] == [{"name": "model-cache", "mountPath": "/data"}]
    claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == names.model_cache_pvc_name("chat")
    assert "nvidia.com/gpu" not in str(container["resources"])
    assert pod["restartPolicy"] == "OnFailure"
    big_env = {
        e["name"]: e["value"]
        for e in jobs["big"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert big_env["HF_HOME"] == "/root/.cache/huggingface"
    # A new revision is a new Job (a Job's template cannot change); the name fits a label.
    moved = spec_of(
        [{**layers[0], "revision": "def456"}],
        modelCache={"size": "500Gi"},
        coldStart={"prefetchWeights": True},
    )
    assert prefetch_job_name("chat", moved.layers[0]) != mid["metadata"]["name"]
    long = spec_of([{"name": "x" * 40, "model": "org/m"}])
    assert len(prefetch_job_name("o" * 15, long.layers[0])) <= 63


def test_prefetch_without_a_model_cache_is_a_clear_error() -> None:
    with pytest.raises(
        InvalidSpec, match=r"coldStart\.prefetchWeights fills the modelCache volume"
    ):
        spec_of([{"name": "mid", "model": "m"}], coldStart={"prefetchWeights": True})
