"""The Onion a bargain run stands for (pure): the ladder on GPUs, an escalation policy at the
core and mid, an idle policy at mid and big, and every time constant divided by a compression
factor (idle timeouts, the adaptive policy's cold-start cost, wake timeouts, and the cold starts
themselves as kwok's pod readiness delay), so that the real operator and router replay a trace
`factor` times faster than it happened. The simulator parses the same body."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from onion_contract.spec import parse_duration
from onion_lab.bargain import EscalationPolicy
from onion_operator.constants import KWOK_READY_DELAY_ANNOTATION

# What the layers stand for on GPUs, and their GPUs (the cost weights).
ONION: dict[str, Any] = {
    "core": {
        "model": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    },
    "layers": [
        {
            "name": "mid",
            "model": "Qwen/Qwen2.5-14B-Instruct",
            "resources": {"limits": {"nvidia.com/gpu": 1}},
        },
        {
            "name": "big",
            "model": "meta-llama/Llama-3.3-70B-Instruct",
            "resources": {"limits": {"nvidia.com/gpu": 4}},
        },
    ],
}
# Stated cold starts of GPU layers (no GPU here): a 14B-class model on one GPU about a minute;
# a 70B-class model on vLLM with tensor parallelism about 3.5 minutes from a warm page cache
# (vllm-project/vllm#19824: P2P check 60 s, weights 10 s, dynamo 15 s, torch.compile 70 s,
# CUDA graphs 60 s).
COLD_START = {"mid": 60.0, "big": 215.0}
CORE_READY_SECONDS = 5.0  # the core's pod at the start (it never sleeps)
IDLE = {
    "idleTimeout 1m": {"idleTimeout": "1m"},
    "idleTimeout 3m": {"idleTimeout": "3m"},
    "idleTimeout 5m": {"idleTimeout": "5m"},
    "idleTimeout 10m": {"idleTimeout": "10m"},
    # idleTimeout: what adaptive falls back to until its history can be trusted (and its most)
    "adaptive": {"idlePolicy": "adaptive", "idleTimeout": "5m"},
}
WAKE_TIMEOUT = "30m"  # no request is refused for waiting: the benchmark counts the waits
MODEL_KEY = "model.json"


def duration(seconds: float) -> str:
    """A Go duration of `seconds`, to the millisecond."""
    return f"{max(1, round(seconds * 1000))}ms"


def model_map(name: str) -> str:
    """The ConfigMap of a learned model file (core, mid, core-prompt)."""
    return f"bargain-learned-{name}"


def escalation(
    policy: EscalationPolicy, layer: str, wake_cut: float | None = None
) -> dict[str, Any] | None:
    """The layer's `escalation` field for the policy (None: it never escalates)."""
    if policy.mode in ("big", "core") or layer not in policy.signals:
        return None
    signal = policy.signals[layer]
    cut = policy.cuts[layer]
    out: dict[str, Any]
    if signal == "learned":
        out = {"policy": "learned", "model": {"configMap": model_map(layer), "key": MODEL_KEY}}
    elif signal == "verify":
        out = {"policy": "verify"}
    else:
        out = {"policy": "confidence", "score": signal}
    out["threshold"] = round(cut.threshold, 6) if cut.threshold > -1e300 else -1e9
    if policy.mode == "targetRate":
        out.update(targetRate=policy.rate, window=500, minSamples=50)
    if policy.early_wake and layer == "core" and wake_cut is not None:
        prompt = {"configMap": model_map("core-prompt"), "key": MODEL_KEY}
        out["earlyWake"] = {"model": prompt, "probability": round(wake_cut, 6)}
    return out


def onion_body(
    policy: EscalationPolicy,
    idle: Mapping[str, Any],
    factor: float = 1.0,
    cold_start: Mapping[str, float] = COLD_START,
    wake_cut: float | None = None,
) -> dict[str, Any]:
    """The Onion's spec for one combination, its time constants divided by `factor`."""
    body = copy.deepcopy(ONION)
    core = body["core"]
    core["podAnnotations"] = {KWOK_READY_DELAY_ANNOTATION: duration(CORE_READY_SECONDS / factor)}
    core_escalation = escalation(policy, "core", wake_cut)
    if core_escalation is not None:
        core["escalation"] = core_escalation
    for layer in body["layers"]:
        name = layer["name"]
        layer["idleTimeout"] = duration(parse_duration(idle["idleTimeout"]) / factor)
        layer["wakeTimeout"] = duration(parse_duration(WAKE_TIMEOUT) / factor)
        if idle.get("idlePolicy") == "adaptive":
            layer["idlePolicy"] = "adaptive"
            cost = parse_duration((idle.get("adaptive") or {}).get("coldStartCost", "1m"))
            layer["adaptive"] = {"coldStartCost": duration(cost / factor)}
        layer["podAnnotations"] = {KWOK_READY_DELAY_ANNOTATION: duration(cold_start[name] / factor)}
        layer_escalation = escalation(policy, name)
        if layer_escalation is not None:
            layer["escalation"] = layer_escalation
    return body


def gpus(spec_body: Mapping[str, Any]) -> dict[str, float]:
    """GPUs per layer from the Onion's resources (limits, else requests, nvidia.com/gpu)."""

    def count(workload: Mapping[str, Any]) -> float:
        resources = workload.get("resources") or {}
        for part in ("limits", "requests"):
            value = (resources.get(part) or {}).get("nvidia.com/gpu")
            if value is not None:
                return float(value)
        return 0.0

    out = {"core": count(spec_body["core"])}
    for layer in spec_body.get("layers", []):
        out[layer["name"]] = count(layer)
    return out
