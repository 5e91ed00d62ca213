"""The Onion spec as frozen pydantic models, parsed from the custom resource's `spec`.

Everything the schema cannot check (regexes, budgets against warm layers, name lengths) is
checked here and reported as one `InvalidSpec` error whose message names the field to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from onion_operator import idle, schedule
from onion_operator.constants import CORE, DEMAND_RENEW_SECONDS, ROUTER
from onion_operator.engines import ENGINES, Engine

# The router owns the shape of routing rules: the operator validates them exactly as the router
# will read them from the config it renders.
from onion_router.config import DEFAULT_TOOL_NAME, Rule, check_headers
from onion_router.config import Escalation as RouterEscalation

EngineName = Literal["tgi", "vllm", "llamacpp"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class InvalidSpec(ValueError):
    """The Onion's spec cannot be acted on; the message says which field and why."""


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as `10m`, `1h30m`, `2.5s` or `500ms`."""
    text = text.strip()
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"{text!r} is not a duration like 90s, 10m or 1h30m")
    return total


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value) if isinstance(value, str) else float(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} must be a positive duration")
    return seconds


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, alias_generator=to_camel, populate_by_name=True, extra="ignore"
    )


class Escalation(_Model):
    """When THIS tier's own answer is rejected and the request goes one tier out."""

    policy: Literal["none", "confidence", "self", "verify"] = "confidence"
    threshold: float = -0.8
    # Hold this escalation rate instead of a fixed threshold (see the router's adaptive.py).
    target_rate: float | None = Field(default=None, gt=0, lt=1)
    window: int = Field(default=500, ge=1)
    min_samples: int = Field(default=50, ge=1)
    min_threshold: float | None = None
    max_threshold: float | None = None
    verify_prompt: str | None = None
    score: Literal["mean", "min", "firstK"] = "mean"
    first_k: int = Field(default=8, ge=1)
    sentinel: str = "[[ESCALATE]]"
    # Policy self: the model writes the sentinel, or calls the function `tool_name` that the
    # router offers it and intercepts.
    via: Literal["sentinel", "toolCall"] = "sentinel"
    tool_name: str = DEFAULT_TOOL_NAME

    @model_validator(mode="after")
    def _as_the_router_reads_it(self) -> Escalation:
        # The router owns these rules (what the schema cannot say): check them as it will.
        try:
            RouterEscalation.model_validate(self.model_dump(exclude_none=True))
        except ValidationError as err:
            problems = (str(e["msg"]).removeprefix("Value error, ") for e in err.errors())
            raise ValueError("; ".join(problems)) from None
        return self


class Autoscaling(_Model):
    """Replicas above one while awake, owned by a HorizontalPodAutoscaler the operator creates.

    The operator still owns 0 <-> 1 (sleep and wake); the HPA owns the count in between
    `min_replicas` and `max_replicas`. Without `metrics` the HPA scales on the router's queued
    plus in-flight requests for this tier (an External metric; docs/scale.md says how to serve it).
    """

    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(ge=1)
    target_requests_per_replica: float = Field(default=8.0, gt=0)
    metrics: tuple[dict[str, Any], ...] = ()  # autoscaling/v2 MetricSpecs, used as given
    behavior: dict[str, Any] | None = None  # autoscaling/v2 HorizontalPodAutoscalerBehavior

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"autoscaling.maxReplicas ({self.max_replicas}) must be at least "
                f"minReplicas ({self.min_replicas})"
            )
        return self


class _Workload(_Model):
    """Fields shared by the core and the managed layers: how their pods run."""

    model: str | None = None
    revision: str | None = None  # the model's revision (branch, tag or commit) on the hub
    served_model_name: str | None = None
    engine: EngineName = "tgi"
    image: str | None = None
    args: tuple[str, ...] | None = None
    env: tuple[dict[str, Any], ...] = ()
    resources: dict[str, Any] | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    # Passed to the engine container and the pod as given, so Pod Security `restricted`
    # namespaces can admit engine images that run as non-root.
    security_context: dict[str, Any] | None = None
    pod_security_context: dict[str, Any] | None = None
    escalation: Escalation = Field(default_factory=Escalation)
    autoscaling: Autoscaling | None = None

    @property
    def engine_info(self) -> Engine:
        return ENGINES[self.engine]

    @property
    def upstream_model(self) -> str:
        """The model name the router sends upstream."""
        return self.served_model_name or self.model or ""


class Core(_Workload):
    model: str
    replicas: int = Field(default=1, ge=1)


class AdaptiveIdle(_Model):
    """Parameters of `idlePolicy: adaptive` (see idle.py and docs/cold-starts.md)."""

    # How much idle GPU time one request that waits for a cold start is worth.
    cold_start_cost: float = 60.0
    min_samples: int = Field(default=16, ge=1, le=256)  # idle gaps before the policy adapts
    history: int = Field(default=64, ge=8, le=256)  # idle gaps remembered (the newest)
    prewarm: bool = True

    @field_validator("cold_start_cost", mode="before")
    @classmethod
    def _cost(cls, value: Any) -> float:
        seconds = parse_duration(value) if isinstance(value, str) else float(value)
        if seconds < 0:
            raise ValueError(f"{value!r} must be a duration such as 30s or 5m")
        return seconds

    @property
    def params(self) -> idle.Params:
        return idle.Params(self.cold_start_cost, self.min_samples, self.history, self.prewarm)


class WarmWindow(_Model):
    """Keep the layer awake for `duration` from each time `cron` names, in `time_zone`."""

    cron: str
    duration: float
    time_zone: str = "UTC"

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return _positive_duration(value)

    @model_validator(mode="after")
    def _parses(self) -> WarmWindow:
        schedule.check(self.cron, self.time_zone)
        return self

    @property
    def window(self) -> schedule.WarmWindow:
        return schedule.WarmWindow(self.cron, self.duration, self.time_zone)


class SecretKeyRef(_Model):
    """One key of a Secret in the Onion's namespace, mounted into the router's pods."""

    name: str = Field(min_length=1)
    key: str = Field(min_length=1, pattern=r"^[-._a-zA-Z0-9]+$")


class Layer(_Workload):
    name: str
    endpoint: str | None = None
    # An endpoint's credentials: its API key and an extra CA from Secrets (never in the
    # router's ConfigMap), plain headers sent with every request to it.
    api_key_secret_ref: SecretKeyRef | None = None
    ca_secret_ref: SecretKeyRef | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    idle_timeout: float = 600.0
    wake_timeout: float = 600.0
    min_replicas: Literal[0, 1] = 0
    # fixed: asleep after idleTimeout without demand; adaptive: learned from this layer's idle
    # gaps and cold starts, at most idleTimeout (idle.py).
    idle_policy: Literal["fixed", "adaptive"] = "fixed"
    adaptive: AdaptiveIdle = Field(default_factory=AdaptiveIdle)
    warm_schedule: tuple[WarmWindow, ...] = Field(default=(), max_length=16)
    rules: tuple[Rule, ...] = ()

    @field_validator("idle_timeout", "wake_timeout", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> float:
        return _positive_duration(value)

    @field_validator("name")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > 40:
            raise ValueError(f"{v!r} must be a DNS label (a-z, 0-9, '-') of at most 40 characters")
        if v in (CORE, ROUTER):
            raise ValueError(f"{v!r} is reserved; choose another layer name")
        return v

    @model_validator(mode="after")
    def _model_xor_endpoint(self) -> Layer:
        if (self.model is None) == (self.endpoint is None):
            raise ValueError(f"layer {self.name!r} needs exactly one of model or endpoint")
        if self.endpoint is not None and self.autoscaling is not None:
            raise ValueError(f"layer {self.name!r}: an endpoint layer has no replicas to autoscale")
        given = [f for f in ("api_key_secret_ref", "ca_secret_ref", "headers") if getattr(self, f)]
        if self.endpoint is None and given:
            fields = ", ".join(to_camel(f) for f in given)
            raise ValueError(f"layer {self.name!r}: {fields} apply only to an endpoint layer")
        return self

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return check_headers(headers)  # as the router will read them

    @property
    def managed(self) -> bool:
        """A managed layer runs as a Deployment the operator wakes; an external one does not."""
        return self.endpoint is None

    @property
    def warm_windows(self) -> tuple[schedule.WarmWindow, ...]:
        return tuple(w.window for w in self.warm_schedule)


class ParentRef(_Model):
    """A Gateway (or a listener of one) the router's HTTPRoute attaches to."""

    name: str = Field(min_length=1)
    namespace: str | None = None
    section_name: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    group: str | None = None
    kind: str | None = None


class HTTPRoute(_Model):
    """Expose the router through a Gateway API Gateway: an HTTPRoute to the router's Service."""

    parent_refs: tuple[ParentRef, ...] = Field(min_length=1)
    hostnames: tuple[str, ...] = ()


class RouterSettings(_Model):
    replicas: int = Field(default=1, ge=0)
    http_route: HTTPRoute | None = None
    while_waking: Literal["wait", "fallback"] = "wait"
    image: str | None = None
    auth_secret_name: str | None = None
    max_queue_per_layer: int = Field(default=64, ge=1)
    stream_buffer_tokens: int = Field(default=16, ge=0)
    heartbeat_seconds: float = Field(default=5, gt=0)
    max_request_bytes: int = Field(default=1048576, ge=1)
    resources: dict[str, Any] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()


class ModelCache(_Model):
    """A volume mounted at each engine's cache dir so weights survive a sleep."""

    pvc_name: str | None = None
    size: str | None = None
    storage_class_name: str | None = None
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadOnlyMany"] = "ReadWriteMany"

    @model_validator(mode="after")
    def _pvc_xor_size(self) -> ModelCache:
        if (self.pvc_name is None) == (self.size is None):
            raise ValueError("modelCache needs exactly one of pvcName or size")
        return self


class ColdStart(_Model):
    """Opt-in work before a wake that makes it shorter (docs/cold-starts.md)."""

    # A DaemonSet per managed layer pulls its engine image on the nodes it can run on.
    pre_pull_images: bool = False
    # A Job per managed layer's model and revision fills modelCache before the first wake.
    prefetch_weights: bool = False
    # The image the prefetch Jobs run: it needs huggingface_hub's `hf` (the router's image has it).
    prefetch_image: str | None = None


class OnionSpec(_Model):
    core: Core
    layers: tuple[Layer, ...] = ()
    router: RouterSettings = Field(default_factory=RouterSettings)
    max_awake_layers: int | None = Field(default=None, ge=1)
    # A layer whose demand was renewed this recently is in use: the GPU budget never evicts it.
    eviction_grace_period: float = 10.0
    model_cache: ModelCache | None = None
    cold_start: ColdStart = Field(default_factory=ColdStart)

    @field_validator("eviction_grace_period", mode="before")
    @classmethod
    def _grace(cls, value: Any) -> float:
        return _positive_duration(value)

    @model_validator(mode="after")
    def _semantics(self) -> OnionSpec:
        names = [layer.name for layer in self.layers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"layer names must be unique; repeated: {', '.join(dupes)}")
        warm = [layer.name for layer in self.layers if layer.managed and layer.min_replicas]
        if self.max_awake_layers is not None and len(warm) > self.max_awake_layers:
            raise ValueError(
                f"maxAwakeLayers={self.max_awake_layers} is smaller than the number of warm "
                f"layers (minReplicas: 1): {', '.join(warm)}; raise the budget or set "
                "minReplicas: 0 on some of them"
            )
        if self.cold_start.prefetch_weights and self.model_cache is None:
            raise ValueError(
                "coldStart.prefetchWeights fills the modelCache volume: set modelCache "
                "(pvcName or size) or turn prefetchWeights off"
            )
        return self

    @property
    def demand_renew_seconds(self) -> float:
        """How often the router renews a used layer's demand: well inside the shortest
        idleTimeout, so a layer in use never looks idle when a renewal is a little late."""
        idle_timeouts = [layer.idle_timeout for layer in self.managed_layers]
        return min(DEMAND_RENEW_SECONDS, min(idle_timeouts, default=9.0) / 3)

    def layer(self, name: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.name == name), None)

    @property
    def managed_layers(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.managed)


def _where(loc: tuple[int | str, ...]) -> str:
    out = "spec"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def parse_spec(name: str, spec: Mapping[str, Any]) -> OnionSpec:
    """Parse an Onion's `spec`, or raise `InvalidSpec` naming every field to fix."""
    try:
        parsed = OnionSpec.model_validate(dict(spec))
    except ValidationError as e:
        problems = []
        for err in e.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{_where(err['loc'])}: {msg}")
        raise InvalidSpec("; ".join(problems)) from None
    too_long = [layer.name for layer in parsed.layers if len(f"{name}-{layer.name}-demand") > 63]
    if too_long:
        raise InvalidSpec(
            f"Onion name {name!r} plus layer name(s) {', '.join(too_long)} make child names "
            "longer than 63 characters; shorten the Onion or layer names"
        )
    return parsed
