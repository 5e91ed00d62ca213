"""The Onion spec as frozen pydantic models, parsed from the custom resource's `spec`.

The CRD's schema is generated from these models (`crd.py`): types, defaults, enums, bounds and
descriptions from their fields, CEL rules and list-map keys from `json_schema_extra`. Everything
the schema cannot check (regexes, cron expressions, budgets against warm layers, name lengths) is
checked here and reported as one `InvalidSpec` error whose message names the field to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from onion_contract.names import (
    CORE,
    DEFAULT_OPERATOR_IMAGE,
    DEMAND_RENEW_SECONDS,
    LAYER_REQUESTS_METRIC,
    ROUTER,
    lease_name,
)
from onion_contract.router_config import EngineName, Escalation, Rule, check_headers
from onion_contract.schema import PRESERVE, cel, list_map, validations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_DNS_LABEL = re.compile(DNS_LABEL)
LAYER_NAME_MAX = 40


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


def _non_negative_duration(value: Any) -> float:
    seconds = parse_duration(value) if isinstance(value, str) else float(value)
    if seconds < 0:
        raise ValueError(f"{value!r} must be a duration such as 30s or 5m")
    return seconds


def check_cron(cron: str, time_zone: str) -> None:
    """Raise ValueError with a message a user can act on if either is not usable."""
    try:
        zone = ZoneInfo(time_zone)
    except (ValueError, KeyError) as e:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"timeZone {time_zone!r} is not an IANA time zone") from e
    try:
        CronSim(cron, datetime(2000, 1, 1, tzinfo=zone))
    except CronSimError as e:
        raise ValueError(f"cron {cron!r} is not a cron expression: {e}") from None


# A Go duration in the CRD (a string the API server checks), seconds in the model.
_DURATION_SCHEMA = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}
_POSITIVE = cel(
    "duration(self) > duration('0s')", "must be a positive duration such as 30s, 10m or 1h"
)
Duration = Annotated[
    float,
    BeforeValidator(_positive_duration),
    WithJsonSchema({**_DURATION_SCHEMA, **validations(_POSITIVE)}),
]
NonNegativeDuration = Annotated[
    float, BeforeValidator(_non_negative_duration), WithJsonSchema(_DURATION_SCHEMA)
]
_GO_DURATION = "A Go duration such as 90s, 10m or 1h30m."

# Kubernetes objects the operator passes on as given: the CRD keeps them whole.
FreeForm = Annotated[dict[str, Any], WithJsonSchema(PRESERVE)]
_QUANTITIES = {
    "type": "object",
    "additionalProperties": {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
    },
}
Resources = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {"type": "object", "properties": {"limits": _QUANTITIES, "requests": _QUANTITIES}}
    ),
]
EnvVar = Annotated[
    dict[str, Any],
    WithJsonSchema({**PRESERVE, "required": ["name"], "properties": {"name": {"type": "string"}}}),
]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, alias_generator=to_camel, populate_by_name=True, extra="ignore"
    )


class Autoscaling(_Model):
    """Replicas above one while awake, owned by a HorizontalPodAutoscaler the operator creates.

    The operator still owns 0 <-> 1 (sleep and wake); the HPA owns the count in between
    `min_replicas` and `max_replicas`. Without `metrics` the HPA scales on the router's queued
    plus in-flight requests for this layer (an External metric; docs/scale.md says how to serve it).
    """

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.minReplicas) || self.maxReplicas >= self.minReplicas",
                "autoscaling.maxReplicas must be at least minReplicas",
            )
        )
    )

    min_replicas: int = Field(
        default=1, ge=1, description="Replicas while awake (a sleeping layer still has 0)."
    )
    max_replicas: int = Field(ge=1)
    target_requests_per_replica: float = Field(
        default=8,
        gt=0,
        description="Queued plus in-flight router requests per replica (the default metric).",
    )
    metrics: tuple[FreeForm, ...] = Field(
        default=(), description="autoscaling/v2 MetricSpecs used as given instead of the default."
    )
    behavior: FreeForm | None = Field(
        default=None, description="autoscaling/v2 HorizontalPodAutoscalerBehavior, as given."
    )

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

    model: str | None = Field(default=None, min_length=1)
    revision: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="The model's revision on the hub (branch, tag or commit); the engine and the "
        "prefetch Job use it.",
    )
    served_model_name: str | None = Field(
        default=None, description="Model name the router sends upstream; defaults to model."
    )
    engine: EngineName = Field(
        default="tgi", description="Picks the image, args, port, health path and cache dir."
    )
    image: str | None = Field(default=None, description="Overrides the engine's default image.")
    args: tuple[str, ...] | None = Field(
        default=None, description="Replaces the engine's default arguments."
    )
    env: tuple[EnvVar, ...] = ()
    resources: Resources | None = Field(
        default=None,
        description="Container resources; default nvidia.com/gpu 1 for tgi and vllm, none for "
        "llamacpp.",
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[FreeForm, ...] = ()
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations on the model pods."
    )
    # Passed to the engine container and the pod as given, so Pod Security `restricted`
    # namespaces can admit engine images that run as non-root.
    security_context: FreeForm | None = Field(
        default=None,
        description="The engine container's securityContext (runAsNonRoot, runAsUser, "
        "allowPrivilegeEscalation, capabilities, seccompProfile, ...), so model pods can pass Pod "
        "Security restricted.",
    )
    pod_security_context: FreeForm | None = Field(
        default=None,
        description="The model pod's securityContext (runAsUser, fsGroup, seccompProfile, ...).",
    )
    escalation: Escalation = Field(
        default_factory=Escalation,
        description="Judges THIS layer's own answer; rejected answers go one layer out.",
        json_schema_extra={"default": {}},
    )
    autoscaling: Autoscaling | None = Field(
        default=None,
        description="More than one replica while awake: the operator creates an autoscaling/v2 "
        "HorizontalPodAutoscaler for this Deployment and owns only 0 <-> 1 (sleep and wake); the "
        "HPA owns the count in between. Without metrics it scales on the router's queued plus "
        f"in-flight requests for this layer (the External metric {LAYER_REQUESTS_METRIC}; see "
        "docs/scale.md).",
    )

    @property
    def upstream_model(self) -> str:
        """The model name the router sends upstream."""
        return self.served_model_name or self.model or ""


class Core(_Workload):
    model: str = Field(
        min_length=1, description="Hugging Face repo id (or a local GGUF path for llamacpp)."
    )
    replicas: int = Field(
        default=1, ge=1, description="The core never sleeps; at least one replica."
    )


class AdaptiveIdle(_Model):
    """Parameters of `idlePolicy: adaptive` (see the operator's idle.py, docs/cold-starts.md)."""

    # How much idle GPU time one request that waits for a cold start is worth.
    cold_start_cost: NonNegativeDuration = Field(
        default="1m",
        validate_default=True,
        description="How much idle GPU time one request that waits for a cold start is worth (a "
        "Go duration); higher keeps the layer awake longer.",
    )
    min_samples: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Idle gaps learned before the policy adapts (before that, idleTimeout: the "
        "fixed policy).",
    )
    history: int = Field(default=64, ge=8, le=256, description="Idle gaps remembered (the newest).")
    prewarm: bool = Field(
        default=True, description="Wake the layer before the demand its history predicts."
    )


class WarmWindow(_Model):
    """Keep the layer awake for `duration` from each time `cron` names, in `time_zone`."""

    cron: str = Field(
        min_length=9,
        max_length=200,
        description="A five-field cron expression, such as '0 9 * * 1-5'.",
    )
    duration: Duration = Field(description="How long each window lasts, such as 8h or 30m.")
    time_zone: str = Field(
        default="UTC", max_length=64, description="An IANA time zone, such as Europe/Berlin."
    )

    @model_validator(mode="after")
    def _parses(self) -> WarmWindow:
        check_cron(self.cron, self.time_zone)
        return self


class SecretKeyRef(_Model):
    """One key of a Secret in the Onion's namespace, mounted into the router's pods."""

    name: str = Field(min_length=1)
    key: str = Field(min_length=1, pattern=r"^[-._a-zA-Z0-9]+$")


class Layer(_Workload):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.model) != has(self.endpoint)",
                "a layer has exactly one of model (run by the operator) or endpoint (external)",
            ),
            cel(
                "!has(self.endpoint) || !has(self.autoscaling)",
                "an endpoint layer has no replicas to autoscale",
            ),
            cel(
                "has(self.endpoint) || "
                "!(has(self.apiKeySecretRef) || has(self.caSecretRef) || has(self.headers))",
                "apiKeySecretRef, caSecretRef and headers apply only to an endpoint layer",
            ),
        )
    )

    # Checked by `_dns_label` with a message of its own; the bounds are the CRD's.
    name: str = Field(
        json_schema_extra={
            "maxLength": LAYER_NAME_MAX,
            "pattern": DNS_LABEL,
            **validations(
                cel(
                    f"self != '{CORE}' && self != '{ROUTER}'",
                    f'"{CORE}" and "{ROUTER}" are reserved names',
                )
            ),
        }
    )
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="An external OpenAI/TGI-compatible server; never woken.",
    )
    # An endpoint's credentials: its API key and an extra CA from Secrets (never in the
    # router's ConfigMap), plain headers sent with every request to it.
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="The endpoint's API key, a key of a Secret in this namespace; sent as the "
        "bearer token to this endpoint alone, re-read when the Secret changes.",
    )
    ca_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="A PEM CA bundle (a key of a Secret) trusted besides the system's CAs for "
        "this https endpoint.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="Extra HTTP headers sent with every request to the endpoint (not secrets).",
    )
    idle_timeout: Duration = Field(default="10m", validate_default=True, description=_GO_DURATION)
    wake_timeout: Duration = Field(default="10m", validate_default=True, description=_GO_DURATION)
    min_replicas: int = Field(
        default=0, ge=0, le=1, description="1 keeps the layer warm (never put to sleep)."
    )
    # fixed: asleep after idleTimeout without demand; adaptive: learned from this layer's idle
    # gaps and cold starts, at most idleTimeout (the operator's idle.py).
    idle_policy: Literal["fixed", "adaptive"] = Field(
        default="fixed",
        description="fixed sleeps after idleTimeout without demand; adaptive learns this layer's "
        "idle gaps and cold starts, sleeps sooner when that pays and pre-warms before the demand "
        "it expects, never awake longer than idleTimeout without demand (docs/cold-starts.md).",
    )
    adaptive: AdaptiveIdle = Field(
        default_factory=AdaptiveIdle, description="Parameters of idlePolicy adaptive."
    )
    warm_schedule: tuple[WarmWindow, ...] = Field(
        default=(),
        max_length=16,
        description="Windows in which the layer is kept awake (busy hours), opened early by its "
        "measured cold start.",
    )
    rules: tuple[Rule, ...] = Field(
        default=(),
        max_length=32,
        description="Requests matching any rule go straight to this layer.",
    )

    @field_validator("name")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > LAYER_NAME_MAX:
            raise ValueError(
                f"{v!r} must be a DNS label (a-z, 0-9, '-') of at most {LAYER_NAME_MAX} characters"
            )
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


class ParentRef(_Model):
    """A Gateway (or a listener of one) the router's HTTPRoute attaches to."""

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(default=None, min_length=1, max_length=63)
    section_name: str | None = Field(default=None, min_length=1, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)
    group: str | None = Field(default=None, max_length=253)
    kind: str | None = Field(default=None, min_length=1, max_length=63)


_HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class HTTPRoute(_Model):
    """Expose the router through a Gateway API Gateway: an HTTPRoute to the router's Service."""

    parent_refs: tuple[
        Annotated[ParentRef, Field(description="A Gateway (or one listener of it) to attach to.")],
        ...,
    ] = Field(min_length=1, max_length=32)
    hostnames: tuple[Annotated[str, Field(max_length=253, pattern=_HOSTNAME)], ...] = Field(
        default=(), max_length=16
    )


class RouterDecisionLog(_Model):
    """The router writes one JSON line per request to its stdout (`kubectl logs`): what each
    judged layer scored and decided, the data to train a learned policy on."""

    prompts: bool = Field(
        default=False, description="Include the prompt's text (off: features and decisions)."
    )


class RouterSettings(_Model):
    replicas: int = Field(default=1, ge=0)
    http_route: HTTPRoute | None = Field(
        default=None,
        description="Expose the router through a Gateway API Gateway: the operator creates an "
        "HTTPRoute (gateway.networking.k8s.io/v1) <onion>-router to its Service. Needs the "
        "Gateway API CRDs in the cluster.",
    )
    while_waking: Literal["wait", "fallback"] = Field(
        default="wait",
        description="Hold requests for a waking layer, or answer from the best awake one.",
    )
    image: str | None = Field(default=None, description=f"Defaults to {DEFAULT_OPERATOR_IMAGE}.")
    auth_secret_name: str | None = Field(
        default=None, description="Secret with key `keys`, one API key per line."
    )
    max_queue_per_layer: int = Field(default=64, ge=1)
    stream_buffer_tokens: int = Field(default=16, ge=0)
    heartbeat_seconds: float = Field(default=5, gt=0)
    max_request_bytes: int = Field(default=1048576, ge=1)
    resources: Resources = Field(
        default_factory=dict, description="The router container's resources."
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[FreeForm, ...] = ()
    decision_log: RouterDecisionLog | None = Field(
        default=None, description="Log every escalation decision (for onion-router train)."
    )


class ModelCache(_Model):
    """A volume mounted at each engine's cache dir so weights survive a sleep."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.pvcName) != has(self.size)",
                "modelCache needs exactly one of pvcName (existing claim) or size (new claim)",
            )
        )
    )

    pvc_name: str | None = Field(default=None, min_length=1)
    size: str | None = Field(
        default=None, pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"
    )
    storage_class_name: str | None = None
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadOnlyMany"] = "ReadWriteMany"

    @model_validator(mode="after")
    def _pvc_xor_size(self) -> ModelCache:
        if (self.pvc_name is None) == (self.size is None):
            raise ValueError("modelCache needs exactly one of pvcName or size")
        return self


class ColdStart(_Model):
    """Opt-in work before a wake that makes it shorter (docs/cold-starts.md)."""

    pre_pull_images: bool = Field(
        default=False,
        description="A DaemonSet per managed layer pulls its engine image on every node the "
        "layer can run on.",
    )
    prefetch_weights: bool = Field(
        default=False,
        description="A Job per managed layer's model and revision fills modelCache before the "
        "first wake.",
    )
    # The image the prefetch Jobs run: it needs huggingface_hub's `hf` (the router's image has it).
    prefetch_image: str | None = Field(
        default=None,
        min_length=1,
        description="Image of the prefetch Jobs; it needs huggingface_hub's hf command (default "
        "the operator's image).",
    )


class OnionSpec(_Model):
    core: Core = Field(description="The always-on model that answers first.")
    layers: tuple[Layer, ...] = Field(
        default=(),
        max_length=16,
        description="Outer layers, ordered inside -> out.",
        json_schema_extra={
            **list_map("name"),
            **validations(
                cel(
                    "self.all(l, self.exists_one(m, m.name == l.name))",
                    "layer names must be unique",
                )
            ),
        },
    )
    router: RouterSettings = Field(
        default_factory=RouterSettings, json_schema_extra={"default": {}}
    )
    max_awake_layers: int | None = Field(
        default=None,
        ge=1,
        description="GPU budget; wakes beyond it first sleep the least recently used layer.",
    )
    # A layer whose demand was renewed this recently is in use: the GPU budget never evicts it.
    eviction_grace_period: Duration = Field(
        default="10s",
        validate_default=True,
        description="A layer with demand this recent is in use and never evicted for the budget.",
    )
    model_cache: ModelCache | None = Field(
        default=None,
        description="Volume at each engine's cache dir so weights survive a sleep.",
    )
    cold_start: ColdStart = Field(
        default_factory=ColdStart,
        description="Opt-in work done before a wake so the wake is shorter (docs/cold-starts.md).",
    )

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
    # The demand Lease has the longest of the names a layer's children get.
    too_long = [layer.name for layer in parsed.layers if len(lease_name(name, layer.name)) > 63]
    if too_long:
        raise InvalidSpec(
            f"Onion name {name!r} plus layer name(s) {', '.join(too_long)} make child names "
            "longer than 63 characters; shorten the Onion or layer names"
        )
    return parsed
