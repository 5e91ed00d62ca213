"""The router's configuration file (YAML, camelCase keys), as the operator renders it.

`Escalation` and `Rule` are also the Onion's (`spec.py` uses them for each layer), so an Onion's
escalation and rules are exactly what the router reads; their `json_schema_extra` is for the CRD.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import yaml
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

from onion_contract.schema import NO_CRD_DEFAULT, ROUTER_ONLY, cel, validations

EngineName = Literal["tgi", "vllm", "llamacpp"]

DEFAULT_SENTINEL = "[[ESCALATE]]"
DEFAULT_TOOL_NAME = "escalate"
DEFAULT_INSTRUCTION = (
    "If you are not confident that you can answer the user's request correctly, reply with "
    "exactly {sentinel} and nothing else; a more capable assistant will then answer."
)
DEFAULT_TOOL_INSTRUCTION = (
    "If you are not confident that you can answer the user's request correctly, call the "
    "function {tool} instead of answering; a more capable assistant will then answer."
)
# Policy `verify` (self-verification, as in AutoMix): the same layer is asked whether its own
# answer is correct; the score is P(yes) from its top logprobs for the first token it writes.
DEFAULT_VERIFY_PROMPT = (
    "Here is a request and an answer to it.\n\nRequest:\n{question}\n\nAnswer:\n{answer}\n\n"
    "Is the answer correct? Reply with one word: Yes or No."
)


class ConfigError(ValueError):
    """The configuration file is missing, not YAML, or does not match the schema."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Listen(_Model):
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)


class Kubernetes(_Model):
    enabled: bool = False
    namespace: str = ""
    onion: str = ""

    @model_validator(mode="after")
    def _needs_names(self) -> Kubernetes:
        if self.enabled and not (self.namespace and self.onion):
            raise ValueError("kubernetes.enabled needs kubernetes.namespace and kubernetes.onion")
        return self


class Auth(_Model):
    keys_file: str


class ModelFile(_Model):
    """A learned policy's model: the JSON file `onion-router train` writes. In an Onion, a key of
    a ConfigMap in its namespace (the operator mounts it into the router); in a router config
    file, its path."""

    # `path` is the router config's alone, so in the CRD the ConfigMap is required.
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.configMap)", "a learned model in an Onion names its configMap")
        )
    )

    config_map: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="The ConfigMap holding the model (in the Onion's namespace).",
    )
    key: str = Field(
        default="model.json",
        pattern=r"^[-._a-zA-Z0-9]+$",
        max_length=253,
        description="The ConfigMap's key holding the model (default model.json).",
    )
    path: str | None = Field(default=None, min_length=1, json_schema_extra=ROUTER_ONLY)

    @model_validator(mode="after")
    def _one_source(self) -> ModelFile:
        if (self.config_map is None) == (self.path is None):
            raise ValueError("a model file is exactly one of configMap (in an Onion) or path")
        return self


class EarlyWake(_Model):
    """Wake the next layer out before this one has answered, when a prompt model says the
    request will likely be escalated: its cold start then overlaps this layer's answer."""

    model: ModelFile = Field(description="The prompt model (onion-router train --prompt-out).")
    probability: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Wake the next layer when P(escalated) is at least this (the model file's "
        "meta.probability is the one chosen on its training data).",
    )


class Escalation(_Model):
    """How a layer's own answer is judged; a rejected answer goes one layer out.

    The policy defaults to `confidence`, as an Onion's layers do; a layer of a router config file
    that names none does not escalate (`RouterLayer.escalation`).
    """

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.targetRate) || self.policy in ['confidence', 'verify', 'learned']",
                "targetRate needs policy confidence, verify or learned (a score to rank)",
            ),
            cel(
                "!has(self.policy) || self.policy != 'learned' || has(self.model)",
                "policy learned needs model (the ConfigMap of onion-router train's file)",
            ),
            cel(
                "!has(self.minSamples) || !has(self.window) || self.minSamples <= self.window",
                "minSamples must not exceed window",
            ),
            cel(
                "!has(self.minThreshold) || !has(self.maxThreshold) "
                "|| self.minThreshold <= self.maxThreshold",
                "minThreshold must not be above maxThreshold",
            ),
        )
    )

    policy: Literal["none", "confidence", "self", "verify", "learned"] = Field(
        default="confidence",
        description="confidence (token logprobs), self (the model asks for help), verify (the "
        "layer is asked whether its own answer is correct; P(yes) is the score), learned (a "
        "trained model scores the answer from its logprobs and the prompt), or none.",
    )
    # confidence: a score of token logprobs (<= 0); verify: P(yes) in [0, 1]. Escalate below it.
    threshold: float = Field(
        default=-0.8,
        description="Escalate when the score is below this: a logprob score (confidence) or "
        "P(yes) in [0, 1] (verify). With targetRate, the starting value.",
    )
    # Instead of holding `threshold`, hold this fraction of escalated answers: the threshold
    # becomes the `targetRate` quantile of the last `window` scores, once `minSamples` were seen
    # (`threshold` until then), kept within [minThreshold, maxThreshold] when given.
    target_rate: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Hold this fraction of escalated answers instead of a fixed threshold: the "
        "router sets the threshold at this quantile of the layer's last `window` scores, once it "
        "has `minSamples` of them.",
    )
    model: ModelFile | None = Field(
        default=None,
        description="Policy learned: the model that scores this layer's answers, P(the answer "
        "stands), to which threshold or targetRate applies.",
    )
    early_wake: EarlyWake | None = Field(
        default=None,
        description="Wake the next layer out at once when a prompt model predicts this "
        "layer's answer will be escalated (any policy).",
    )
    # Not defaulted by the API server: the CEL rule above compares them only when both are set.
    window: int = Field(
        default=500,
        ge=1,
        description="Scores kept for targetRate (default 500).",
        json_schema_extra=NO_CRD_DEFAULT,
    )
    min_samples: int = Field(
        default=50,
        ge=1,
        description="Scores needed before targetRate adapts (default 50).",
        json_schema_extra=NO_CRD_DEFAULT,
    )
    min_threshold: float | None = Field(
        default=None, description="Lower bound of the adapted threshold."
    )
    max_threshold: float | None = Field(
        default=None, description="Upper bound of the adapted threshold."
    )
    score: Literal["mean", "min", "firstK"] = "mean"
    first_k: int = Field(default=8, ge=1)
    sentinel: str = Field(
        default=DEFAULT_SENTINEL,
        min_length=1,
        description="What the model writes to ask for help (policy self).",
    )
    # How a `self`-policy model asks for help: by writing the sentinel, or by calling a tool
    # (an OpenAI-style function named `toolName`) that the router adds to the request.
    via: Literal["sentinel", "toolCall"] = Field(
        default="sentinel",
        description="Policy self: the model asks for help by writing the sentinel, or by calling "
        "the function toolName that the router offers it and strips.",
    )
    tool_name: str = Field(
        default=DEFAULT_TOOL_NAME,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="The function the router offers with via toolCall.",
    )
    # System instruction for the `self` policy; "{sentinel}" and "{tool}" are replaced by the
    # sentinel and the tool name. None: the default instruction for `via`. Not in the Onion.
    instruction: str | None = Field(default=None, json_schema_extra=ROUTER_ONLY)
    # Policy verify: the question put to the layer, "{question}" and "{answer}" filled in. The
    # API server leaves it unset, so the operator renders it only when the Onion sets it.
    verify_prompt: str = Field(
        default=DEFAULT_VERIFY_PROMPT,
        min_length=1,
        description="Policy verify: the question put to the layer; {question} and {answer} are "
        "filled in.",
        json_schema_extra=NO_CRD_DEFAULT,
    )

    @model_validator(mode="after")
    def _adaptive_needs_a_score(self) -> Escalation:
        if self.target_rate is not None and not self.scored:
            raise ValueError(
                "targetRate needs policy confidence, verify or learned (a score to rank), "
                f"not {self.policy}"
            )
        if self.policy == "learned" and self.model is None:
            raise ValueError("policy learned needs model (onion-router train's file)")
        if self.min_samples > self.window:
            raise ValueError(f"minSamples ({self.min_samples}) exceeds window ({self.window})")
        lo, hi = self.min_threshold, self.max_threshold
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"minThreshold ({lo}) is above maxThreshold ({hi})")
        return self

    @property
    def scored(self) -> bool:
        """Whether this policy turns an answer into a number compared with a threshold."""
        return self.policy in ("confidence", "verify", "learned")


# A layer of a router config file that names no policy does not escalate.
NO_ESCALATION = Escalation(policy="none")


def _no_policy_means_none(value: object) -> object:
    if isinstance(value, Mapping) and "policy" not in value:
        return {**value, "policy": NO_ESCALATION.policy}
    return value


class Rule(_Model):
    """One routing rule; a request matching any rule of a layer goes straight to that layer."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "[has(self.regex), has(self.keywords), has(self.minPromptTokens)]"
                ".filter(x, x).size() == 1",
                "a rule has exactly one of regex, keywords, minPromptTokens",
            )
        )
    )

    # The bounds in json_schema_extra are the API server's alone: a router config file has none.
    regex: str | None = Field(default=None, json_schema_extra={"minLength": 1, "maxLength": 1024})
    keywords: (
        tuple[
            Annotated[str, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 256})],
            ...,
        ]
        | None
    ) = Field(default=None, json_schema_extra={"minItems": 1, "maxItems": 64})
    min_prompt_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Rule:
        given = [v for v in (self.regex, self.keywords, self.min_prompt_tokens) if v is not None]
        if len(given) != 1:
            raise ValueError("a rule has exactly one of regex, keywords, minPromptTokens")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"regex {self.regex!r} does not compile: {err}") from err
        return self


# Headers the router sets itself on every upstream request (or that would break the wire).
# The key goes in Authorization from apiKeyFile, never in a header written in the config.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "x-request-id",
        "authorization",
    }
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """Extra headers for a layer: valid names, one line of ASCII each, none the router sets."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(
                f"header {name!r} is set by the router itself (an API key comes from a Secret)"
            )
        if "\r" in value or "\n" in value or not value.isascii():
            raise ValueError(f"header {name!r} must be one line of ASCII")
    return headers


class RouterLayer(_Model):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    url: str
    model: str  # the served model name sent upstream
    engine: EngineName = "tgi"
    managed: bool = False
    lease: str | None = None
    # Managed: how long a request may wait for the layer to wake. Not managed: how long the
    # router retries the layer's 429/503 answers that carry Retry-After (another Onion's router
    # holding a waking layer, a hosted API's rate limit); 0 never retries.
    wake_timeout_seconds: float = Field(default=0, ge=0)
    escalation: Annotated[Escalation, BeforeValidator(_no_policy_means_none)] = NO_ESCALATION
    rules: tuple[Rule, ...] = ()
    # Credentials and TLS for an endpoint: the bearer key is read from this file (a mounted
    # Secret; read again when it changes) and sent to this layer alone; `headers` go with every
    # request to it; `caFile` trusts one more CA besides the system's bundle for https.
    api_key_file: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"layer url {url!r} must start with http:// or https://")
        return url.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return check_headers(headers)

    @model_validator(mode="after")
    def _lease_if_managed(self) -> RouterLayer:
        if self.managed and not self.lease:
            raise ValueError(f"layer {self.name!r} is managed and needs a lease name")
        return self


class DecisionLog(_Model):
    """Per request, what the router saw and decided at each judged layer, one JSON line each:
    the data `onion-router train --log` learns from once labels are added."""

    path: str = Field(default="-", min_length=1)  # "-": stdout, where `kubectl logs` reads it
    prompts: bool = False  # the prompt's text too (off: features and decisions only)


class RouterConfig(_Model):
    listen: Listen = Listen()
    kubernetes: Kubernetes = Kubernetes()
    while_waking: Literal["wait", "fallback"] = "wait"
    max_queue_per_layer: int = Field(default=64, ge=0)
    stream_buffer_tokens: int = Field(default=16, ge=0)
    heartbeat_seconds: float = Field(default=5, gt=0)
    max_request_bytes: int = Field(default=1_048_576, ge=1)
    # Not in the operator's rendering; defaults suit it. Bounds one upstream call.
    upstream_timeout_seconds: float = Field(default=600, gt=0)
    # How often demand is renewed while a layer is used (the operator renders it at most a third
    # of the shortest idle timeout).
    demand_renew_seconds: float = Field(default=3, gt=0)
    auth: Auth | None = None
    # The prompt embedder's folder (all-MiniLM-L6-v2) for learned models that use the prompt's
    # embedding; the image ships one there (docs/learned.md).
    embedder: str = "/opt/onion-of-experts/embedders/all-minilm-l6-v2"
    decision_log: DecisionLog | None = None
    # Kubernetes mode: the Lease the router publishes its live targetRate thresholds on, so a
    # restarted or added replica starts from them (the operator creates it).
    thresholds_lease: str | None = None
    # Inside out; layers[0] is the core. `tiers`, the key's older spelling, is still accepted.
    layers: tuple[RouterLayer, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _older_spelling(cls, data: object) -> object:
        if isinstance(data, Mapping) and "tiers" in data:
            if "layers" in data:
                raise ValueError("give `layers` or its older spelling `tiers`, not both")
            data = {("layers" if k == "tiers" else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> RouterConfig:
        names = [t.name for t in self.layers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"layer names must be unique; repeated: {', '.join(dupes)}")
        return self

    def layer(self, name: str) -> RouterLayer | None:
        return next((t for t in self.layers if t.name == name), None)

    def index(self, name: str) -> int:
        return next(i for i, t in enumerate(self.layers) if t.name == name)


def parse_config(data: object) -> RouterConfig:
    """Validate already-loaded YAML data; one ConfigError with every problem listed."""
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"invalid router config: {problems}") from None


def load_config(path: str | Path) -> RouterConfig:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read router config {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"router config {path} is not valid YAML: {err}") from None
    return parse_config(data)
