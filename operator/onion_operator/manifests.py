"""Pure builders of every object an Onion owns, as plain dicts ready for server-side apply."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from onion_contract import names
from onion_contract.router_config import ModelFile
from onion_contract.spec import (
    Autoscaling,
    Core,
    HTTPRoute,
    Layer,
    ModelCache,
    OnionSpec,
)
from onion_operator import constants as c
from onion_operator.engines import ENGINES

Obj = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The Onion that owns the children: deleting it garbage-collects them."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> Obj:
        return {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def labels(onion: str, part: str, component: str) -> dict[str, str]:
    return {
        names.LABEL_ONION: onion,
        names.LABEL_LAYER: part,
        names.LABEL_COMPONENT: component,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
    }


def _meta(owner: Owner, name: str, part: str, component: str) -> Obj:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner.name, part, component),
        "ownerReferences": [owner.reference()],
    }


def _selector(onion: str, part: str, component: str) -> dict[str, str]:
    return {names.LABEL_ONION: onion, names.LABEL_LAYER: part, names.LABEL_COMPONENT: component}


def layer_url(spec_layer: Layer | Core, onion: str, namespace: str) -> str:
    """Where the router reaches a layer: its Service, or an external layer's endpoint."""
    if isinstance(spec_layer, Layer) and spec_layer.endpoint is not None:
        return spec_layer.endpoint
    part = spec_layer.name if isinstance(spec_layer, Layer) else names.CORE
    return c.service_url(onion, part, namespace)


def planned_core_replicas(core: Core) -> int:
    """The core's replicas when the operator sets them: its own count, or the HPA's minimum."""
    return core.autoscaling.min_replicas if core.autoscaling is not None else core.replicas


def applied_replicas(work: Core | Layer, planned: int, exists: bool) -> int | None:
    """`spec.replicas` in the operator's apply of a model Deployment (None: left out).

    Without autoscaling the operator owns the field and applies the planned count. With it, the
    field is applied only to create the Deployment; afterwards the HPA (above one replica) and the
    wake/sleep patches (0 <-> 1) own it, and an apply that named it would undo the HPA.
    """
    if work.autoscaling is None or not exists:
        return planned
    return None


STARTUP_PROBE_PERIOD = 1  # seconds: a Ready engine is seen within a second, as before
CORE_LOAD_SECONDS = 600  # the core has no wakeTimeout: the startup budget of its loads


def engine_probes(health_path: str, work: Core | Layer) -> Obj:
    """Startup, readiness and liveness probes of an engine container.

    The startup probe allows the whole `wakeTimeout` for the model to load (pull, download,
    load, warm-up), so a slow load is never killed as unhealthy; only after it succeeds do the
    liveness probe (an engine that hangs for a minute is restarted) and the readiness probe run.
    """
    budget = work.wake_timeout if isinstance(work, Layer) else CORE_LOAD_SECONDS
    health = {"httpGet": {"path": health_path, "port": "http"}}
    return {
        "startupProbe": {
            **health,
            "periodSeconds": STARTUP_PROBE_PERIOD,
            "failureThreshold": max(1, math.ceil(budget / STARTUP_PROBE_PERIOD)),
            "timeoutSeconds": 1,
        },
        "readinessProbe": {**health, "periodSeconds": 1, "failureThreshold": 3},
        "livenessProbe": {
            **health,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
    }


def build_model_deployment(
    owner: Owner,
    part: str,
    work: Core | Layer,
    replicas: int | None,
    model_cache: ModelCache | None,
) -> Obj:
    """The engine Deployment of the core or a managed layer, at `replicas` (None: unset)."""
    engine = ENGINES[work.engine]
    model = work.model or ""
    args = (
        list(work.args)
        if work.args is not None
        else engine.args(model, work.upstream_model, work.revision)
    )
    env = [{"name": k, "value": v} for k, v in engine.cache_env] + [dict(e) for e in work.env]
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    if model_cache is not None:
        claim = model_cache.pvc_name or names.model_cache_pvc_name(owner.name)
        volumes.append({"name": "model-cache", "persistentVolumeClaim": {"claimName": claim}})
    else:
        volumes.append({"name": "model-cache", "emptyDir": {}})
    mounts.append({"name": "model-cache", "mountPath": engine.cache_dir})
    if engine.resources:  # GPU engines want a large /dev/shm for NCCL and tensor parallelism
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}})
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    container: Obj = {
        "name": "engine",
        "image": work.image or engine.image,
        "args": args,
        "ports": [{"name": "http", "containerPort": engine.port, "protocol": "TCP"}],
        "env": env,
        "resources": dict(work.resources if work.resources is not None else engine.resources),
        **engine_probes(engine.health_path, work),
        "volumeMounts": mounts,
    }
    if work.security_context is not None:
        container["securityContext"] = dict(work.security_context)
    pod_spec: Obj = {
        "containers": [container],
        "volumes": volumes,
        "nodeSelector": dict(work.node_selector),
        "tolerations": [dict(t) for t in work.tolerations],
        "enableServiceLinks": False,
    }
    if work.pod_security_context is not None:
        pod_spec["securityContext"] = dict(work.pod_security_context)
    selector = _selector(owner.name, part, names.COMPONENT_MODEL)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner, names.child_name(owner.name, part), part, names.COMPONENT_MODEL),
        "spec": {
            **({} if replicas is None else {"replicas": replicas}),
            # A big model may load for longer than the 600s default before it is Ready.
            "progressDeadlineSeconds": max(
                600, round(work.wake_timeout) if isinstance(work, Layer) else 0
            ),
            "selector": {"matchLabels": selector},
            # One GPU per replica: never surge a second pod during a rollout.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels(owner.name, part, names.COMPONENT_MODEL),
                    "annotations": dict(work.pod_annotations),
                },
                "spec": pod_spec,
            },
        },
    }


def _quantity(value: float) -> str:
    """A Kubernetes quantity: 8 -> "8", 0.5 -> "500m"."""
    return str(int(value)) if value == int(value) else f"{round(value * 1000)}m"


def default_load_metric(onion: str, part: str, per_replica: float) -> Obj:
    """The router's queued + in-flight requests for this layer, summed over router replicas,
    as an External metric averaged over the layer's replicas."""
    return {
        "type": "External",
        "external": {
            "metric": {
                "name": names.LAYER_REQUESTS_METRIC,
                "selector": {"matchLabels": {"onion": onion, "layer": part}},
            },
            "target": {"type": "AverageValue", "averageValue": _quantity(per_replica)},
        },
    }


def build_autoscaler(owner: Owner, part: str, auto: Autoscaling) -> Obj:
    """The autoscaling/v2 HorizontalPodAutoscaler of the core's or a layer's Deployment."""
    name = names.child_name(owner.name, part)
    metrics = [dict(m) for m in auto.metrics] or [
        default_load_metric(owner.name, part, auto.target_requests_per_replica)
    ]
    spec: Obj = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": auto.min_replicas,
        "maxReplicas": auto.max_replicas,
        "metrics": metrics,
    }
    if auto.behavior is not None:
        spec["behavior"] = dict(auto.behavior)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(owner, name, part, names.COMPONENT_AUTOSCALER),
        "spec": spec,
    }


def build_replicas_claim(namespace: str, name: str, replicas: int) -> Obj:
    """Just `spec.replicas` at its current value, applied under HANDOVER_FIELD_MANAGER."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas},
    }


def build_service(owner: Owner, part: str, component: str, target_port: str = "http") -> Obj:
    """ClusterIP Service on port 80 in front of the core, a layer or the router."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(owner, names.child_name(owner.name, part), part, component),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(owner.name, part, component),
            "ports": [
                {
                    "name": "http",
                    "port": c.SERVICE_PORT,
                    "targetPort": target_port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_demand_lease(owner: Owner, layer: str) -> Obj:
    """The demand record for one managed layer; the router patches only its renewTime."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": _meta(
            owner, names.lease_name(owner.name, layer), layer, names.COMPONENT_DEMAND
        ),
        "spec": {},
    }


def build_model_cache_pvc(owner: Owner, cache: ModelCache) -> Obj | None:
    """The shared weights volume when the spec asks for a size (None for an existing PVC)."""
    if cache.size is None:
        return None
    spec: Obj = {
        "accessModes": [cache.access_mode],
        "resources": {"requests": {"storage": cache.size}},
    }
    if cache.storage_class_name:
        spec["storageClassName"] = cache.storage_class_name
    meta = _meta(owner, names.model_cache_pvc_name(owner.name), names.CORE, names.COMPONENT_CACHE)
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def _model_file(model: ModelFile) -> Obj:
    """A learned model's ConfigMap key, as the path where the router finds it mounted."""
    assert model.config_map is not None  # an Onion's names its ConfigMap (the CRD says so)
    return {"path": c.learned_model_path(model.config_map, model.key)}


def _escalation(work: Core | Layer) -> Obj:
    e = work.escalation
    out: Obj = {"policy": e.policy, "threshold": e.threshold, "score": e.score, "firstK": e.first_k}
    if e.model is not None:
        out["model"] = _model_file(e.model)
    if e.early_wake is not None:
        out["earlyWake"] = {
            "model": _model_file(e.early_wake.model),
            "probability": e.early_wake.probability,
        }
    if e.policy == "self" or isinstance(work, Core):
        out["sentinel"] = e.sentinel
    if e.policy == "self":
        out["via"] = e.via
        out["toolName"] = e.tool_name
    if e.policy == "verify" and "verify_prompt" in e.model_fields_set:  # else the router's default
        out["verifyPrompt"] = e.verify_prompt
    if e.target_rate is not None:
        out.update(targetRate=e.target_rate, window=e.window, minSamples=e.min_samples)
        if e.min_threshold is not None:
            out["minThreshold"] = e.min_threshold
        if e.max_threshold is not None:
            out["maxThreshold"] = e.max_threshold
    return out


def _rule(rule: Any) -> Obj:
    if rule.regex is not None:
        return {"regex": rule.regex}
    if rule.keywords is not None:
        return {"keywords": list(rule.keywords)}
    return {"minPromptTokens": rule.min_prompt_tokens}


def _endpoint_access(layer: Layer) -> Obj:
    """An endpoint layer's key and CA files (mounted Secrets) and headers, for its layer."""
    out: Obj = {}
    if layer.api_key_secret_ref is not None:
        out["apiKeyFile"] = c.layer_secret_path(layer.name, c.API_KEY_FILE)
    if layer.ca_secret_ref is not None:
        out["caFile"] = c.layer_secret_path(layer.name, c.CA_FILE)
    if layer.headers:
        out["headers"] = dict(layer.headers)
    return out


def _layer_secret_volumes(spec: OnionSpec) -> tuple[list[Obj], list[Obj]]:
    """One projected volume per endpoint layer with Secrets: only their one key each, mounted
    read-only as a directory (a subPath mount would never see a rotated key). A missing Secret
    keeps the router pod from starting, and its events name the Secret."""
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    for layer in spec.layers:
        refs = ((layer.api_key_secret_ref, c.API_KEY_FILE), (layer.ca_secret_ref, c.CA_FILE))
        sources = [
            {"secret": {"name": ref.name, "items": [{"key": ref.key, "path": file}]}}
            for ref, file in refs
            if ref is not None
        ]
        if not sources:
            continue
        name = f"layer-{layer.name}"
        volumes.append({"name": name, "projected": {"sources": sources}})
        mounts.append(
            {"name": name, "mountPath": f"{c.ROUTER_LAYERS_DIR}/{layer.name}", "readOnly": True}
        )
    return volumes, mounts


def _learned_config_maps(spec: OnionSpec) -> list[str]:
    """The ConfigMaps of every learned model the Onion's escalations name, in order, once."""
    out: list[str] = []
    for work in (spec.core, *spec.layers):
        e = work.escalation
        models = [e.model, e.early_wake.model if e.early_wake else None]
        for model in models:
            if model is not None and model.config_map and model.config_map not in out:
                out.append(model.config_map)
    return out


def _learned_volumes(spec: OnionSpec) -> tuple[list[Obj], list[Obj]]:
    """Each learned model's ConfigMap, mounted read-only as a directory. A missing ConfigMap
    keeps the router pod from starting, and its events name it."""
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    for index, name in enumerate(_learned_config_maps(spec)):
        volume = f"learned-{index}"
        volumes.append({"name": volume, "configMap": {"name": name}})
        mounts.append(
            {"name": volume, "mountPath": f"{c.ROUTER_LEARNED_DIR}/{name}", "readOnly": True}
        )
    return volumes, mounts


def publishes_thresholds(spec: OnionSpec) -> bool:
    """Whether a layer holds a targetRate (its routers then share their thresholds)."""
    return any(w.escalation.target_rate is not None for w in (spec.core, *spec.layers))


def build_thresholds_lease(owner: Owner) -> Obj:
    """Where the routers publish their live targetRate thresholds (annotations they patch)."""
    name = names.thresholds_lease_name(owner.name)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": _meta(owner, name, names.ROUTER, names.COMPONENT_ROUTER),
        "spec": {},
    }


def build_router_config(spec: OnionSpec, namespace: str, onion: str) -> Obj:
    """The router's config.yaml (camelCase), parsed by onion_contract.router_config.RouterConfig."""
    r = spec.router
    layers: list[Obj] = [
        {
            "name": names.CORE,
            "url": c.service_url(onion, names.CORE, namespace),
            "model": spec.core.upstream_model,
            "engine": spec.core.engine,
            "managed": False,
            "lease": None,
            "wakeTimeoutSeconds": 0,
            "escalation": _escalation(spec.core),
            "rules": [],
        }
    ]
    for layer in spec.layers:
        layers.append(
            {
                "name": layer.name,
                "url": layer_url(layer, onion, namespace),
                "model": layer.upstream_model or layer.name,
                "engine": layer.engine,
                "managed": layer.managed,
                "lease": names.lease_name(onion, layer.name) if layer.managed else None,
                # An endpoint's 429/503 with Retry-After (another Onion waking) are retried so long.
                "wakeTimeoutSeconds": layer.wake_timeout,
                "escalation": _escalation(layer),
                "rules": [_rule(rule) for rule in layer.rules],
                **_endpoint_access(layer),
            }
        )
    config: Obj = {
        "listen": {"host": "0.0.0.0", "port": c.ROUTER_PORT},
        "kubernetes": {"enabled": True, "namespace": namespace, "onion": onion},
        "whileWaking": r.while_waking,
        "maxQueuePerLayer": r.max_queue_per_layer,
        "streamBufferTokens": r.stream_buffer_tokens,
        "heartbeatSeconds": r.heartbeat_seconds,
        "maxRequestBytes": r.max_request_bytes,
    }
    if spec.managed_layers:  # the router's default of 3 s suits idle timeouts of minutes
        config["demandRenewSeconds"] = spec.demand_renew_seconds
    if r.auth_secret_name:
        config["auth"] = {"keysFile": f"{c.ROUTER_AUTH_DIR}/keys"}
    if r.decision_log is not None:  # to stdout, where `kubectl logs` collects it
        config["decisionLog"] = {"path": "-", "prompts": r.decision_log.prompts}
    if publishes_thresholds(spec):
        config["thresholdsLease"] = names.thresholds_lease_name(onion)
    config["layers"] = layers
    return config


def render_router_config(spec: OnionSpec, namespace: str, onion: str) -> str:
    return yaml.safe_dump(build_router_config(spec, namespace, onion), sort_keys=False)


def build_router_configmap(owner: Owner, config_yaml: str) -> Obj:
    name = names.router_config_name(owner.name)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(owner, name, names.ROUTER, names.COMPONENT_ROUTER),
        "data": {c.ROUTER_CONFIG_KEY: config_yaml},
    }


def build_router_deployment(owner: Owner, spec: OnionSpec, config_yaml: str) -> Obj:
    """The router: `onion-router --config /etc/onion/config.yaml`, restarted on config change."""
    router = spec.router
    name = names.child_name(owner.name, names.ROUTER)
    digest = hashlib.sha256(config_yaml.encode()).hexdigest()[:16]
    volumes: list[Obj] = [
        {"name": "config", "configMap": {"name": names.router_config_name(owner.name)}}
    ]
    mounts: list[Obj] = [{"name": "config", "mountPath": c.ROUTER_CONFIG_DIR, "readOnly": True}]
    if router.auth_secret_name:
        volumes.append({"name": "auth", "secret": {"secretName": router.auth_secret_name}})
        mounts.append({"name": "auth", "mountPath": c.ROUTER_AUTH_DIR, "readOnly": True})
    for extra_volumes, extra_mounts in (_layer_secret_volumes(spec), _learned_volumes(spec)):
        volumes += extra_volumes
        mounts += extra_mounts
    probe = {"tcpSocket": {"port": "http"}, "periodSeconds": 2}
    container: Obj = {
        "name": "router",
        "image": router.image or names.DEFAULT_OPERATOR_IMAGE,
        "command": ["onion-router", "--config", f"{c.ROUTER_CONFIG_DIR}/{c.ROUTER_CONFIG_KEY}"],
        "ports": [{"name": "http", "containerPort": c.ROUTER_PORT, "protocol": "TCP"}],
        "resources": dict(router.resources),
        "readinessProbe": probe,
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65532,  # numeric, so runAsNonRoot holds whatever USER the image sets
            "capabilities": {"drop": ["ALL"]},
            # Pod Security `restricted` also requires a seccomp profile.
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner, name, names.ROUTER, names.COMPONENT_ROUTER),
        "spec": {
            "replicas": router.replicas,
            "selector": {
                "matchLabels": _selector(owner.name, names.ROUTER, names.COMPONENT_ROUTER)
            },
            "template": {
                "metadata": {
                    "labels": labels(owner.name, names.ROUTER, names.COMPONENT_ROUTER),
                    "annotations": {names.ANNOTATION_CONFIG_HASH: digest},
                },
                "spec": {
                    "serviceAccountName": name,
                    "containers": [container],
                    "volumes": volumes,
                    "nodeSelector": dict(router.node_selector),
                    "tolerations": [dict(t) for t in router.tolerations],
                    "enableServiceLinks": False,
                },
            },
        },
    }


def build_router_rbac(owner: Owner, spec: OnionSpec) -> list[Obj]:
    """ServiceAccount, Role and RoleBinding: read Onions, renew only this Onion's demand Leases."""
    name = names.child_name(owner.name, names.ROUTER)
    leases = [names.lease_name(owner.name, layer.name) for layer in spec.managed_layers]
    if publishes_thresholds(spec):
        leases.append(names.thresholds_lease_name(owner.name))
    rules: list[Obj] = [
        {
            "apiGroups": [names.GROUP],
            "resources": [names.PLURAL],
            "verbs": ["get", "list", "watch"],
        },
    ]
    if leases:
        rules.append(
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": leases,
                "verbs": ["get", "patch", "update"],
            }
        )

    def meta() -> Obj:
        return _meta(owner, name, names.ROUTER, names.COMPONENT_ROUTER)

    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta()},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]


def build_router_httproute(owner: Owner, route: HTTPRoute) -> Obj:
    """A Gateway API HTTPRoute from the given Gateways (and hostnames) to the router's Service."""
    name = names.child_name(owner.name, names.ROUTER)
    parents = [
        {k: v for k, v in ref.model_dump(by_alias=True).items() if v is not None}
        for ref in route.parent_refs
    ]
    spec: Obj = {
        "parentRefs": parents,
        "rules": [{"backendRefs": [{"name": name, "port": c.SERVICE_PORT}]}],
    }
    if route.hostnames:
        spec["hostnames"] = list(route.hostnames)
    return {
        "apiVersion": c.HTTPROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": _meta(owner, name, names.ROUTER, names.COMPONENT_ROUTER),
        "spec": spec,
    }


# What a pre-pull or prefetch container may use: it runs where GPU pods run, next to them.
_SMALL = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def build_prepull_daemonset(owner: Owner, layer: Layer) -> Obj:
    """Pull a layer's engine image on every node its pods can be scheduled to, ahead of a wake.

    The image is pulled by an init container that exits at once (it asks for no GPU); a pause
    container keeps the pod, and so the image, in use. Same nodeSelector and tolerations as the
    layer's pods, so exactly the nodes a wake could land on pull it."""
    part = layer.name
    selector = _selector(owner.name, part, names.COMPONENT_PREPULL)
    pull = {
        "name": "pull",
        "image": layer.image or ENGINES[layer.engine].image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", "exit 0"],
        "resources": _SMALL,
        "securityContext": _RESTRICTED,
    }
    pause = {
        "name": "pause",
        "image": c.PAUSE_IMAGE,
        "resources": _SMALL,
        "securityContext": {**_RESTRICTED, "readOnlyRootFilesystem": True},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(
            owner, names.prepull_name(owner.name, part), part, names.COMPONENT_PREPULL
        ),
        "spec": {
            "selector": {"matchLabels": selector},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "100%"},
            },
            "template": {
                "metadata": {"labels": labels(owner.name, part, names.COMPONENT_PREPULL)},
                "spec": {
                    "initContainers": [pull],
                    "containers": [pause],
                    "nodeSelector": dict(layer.node_selector),
                    "tolerations": [dict(t) for t in layer.tolerations],
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }


def prefetch_job_name(onion: str, layer: Layer) -> str:
    """One Job per layer, model and revision: a new model or revision is a new Job."""
    digest = hashlib.sha256(f"{layer.model}@{layer.revision or 'main'}".encode()).hexdigest()
    return f"{onion}-{layer.name}"[:51] + f"-w{digest[:10]}"  # at most 63: a label value


# What an engine reads of a hub repository: weights, configs, tokenizers, custom code.
PREFETCH_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.py")


def build_prefetch_job(owner: Owner, layer: Layer, cache: ModelCache, image: str) -> Obj:
    """Fill the model cache with a layer's model (at its revision) before the first wake: the
    same volume at the same path and the same HF_HOME as the engine, so the engine finds every
    file in place and downloads nothing. It runs as the engine would (its security contexts),
    with its env (a gated model's HF_TOKEN), and asks for no GPU."""
    engine = ENGINES[layer.engine]
    claim = cache.pvc_name or names.model_cache_pvc_name(owner.name)
    includes = [arg for pattern in PREFETCH_PATTERNS for arg in ("--include", pattern)]
    container: Obj = {
        "name": "prefetch",
        "image": image,
        "command": ["hf", "download", layer.model or "", "--revision", layer.revision or "main"],
        "args": includes,
        "env": [{"name": engine.cache_var, "value": engine.cache_dir}]
        + [dict(e) for e in layer.env],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "volumeMounts": [{"name": "model-cache", "mountPath": engine.cache_dir}],
    }
    if layer.security_context is not None:
        container["securityContext"] = dict(layer.security_context)
    pod: Obj = {
        "restartPolicy": "OnFailure",
        "containers": [container],
        "volumes": [{"name": "model-cache", "persistentVolumeClaim": {"claimName": claim}}],
        "enableServiceLinks": False,
    }
    if layer.pod_security_context is not None:
        pod["securityContext"] = dict(layer.pod_security_context)
    name = prefetch_job_name(owner.name, layer)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(owner, name, layer.name, names.COMPONENT_PREFETCH),
        "spec": {
            "backoffLimit": 6,
            "template": {
                "metadata": {"labels": labels(owner.name, layer.name, names.COMPONENT_PREFETCH)},
                "spec": pod,
            },
        },
    }


def build_cold_start_helpers(owner: Owner, spec: OnionSpec) -> list[Obj]:
    """The opt-in pre-pull DaemonSets and prefetch Jobs of the managed layers (coldStart)."""
    objs: list[Obj] = []
    cold = spec.cold_start
    for layer in spec.managed_layers:
        if cold.pre_pull_images:
            objs.append(build_prepull_daemonset(owner, layer))
        if (
            cold.prefetch_weights
            and spec.model_cache is not None
            and ENGINES[layer.engine].hub_cache
        ):
            image = cold.prefetch_image or spec.router.image or names.DEFAULT_OPERATOR_IMAGE
            objs.append(build_prefetch_job(owner, layer, spec.model_cache, image))
    return objs


def build_leases(owner: Owner, spec: OnionSpec) -> list[Obj]:
    """The demand Lease of every managed layer."""
    return [build_demand_lease(owner, layer.name) for layer in spec.managed_layers]


def build_children(owner: Owner, spec: OnionSpec, replicas: Mapping[str, int | None]) -> list[Obj]:
    """Every object the Onion owns but the demand Leases; model Deployments at `replicas`
    (by part: the core or a layer; None leaves the field out, see `applied_replicas`)."""
    objs: list[Obj] = []
    if spec.model_cache is not None:
        pvc = build_model_cache_pvc(owner, spec.model_cache)
        if pvc is not None:
            objs.append(pvc)
    workloads: list[tuple[str, Core | Layer]] = [(names.CORE, spec.core)]
    workloads += [(layer.name, layer) for layer in spec.managed_layers]
    for part, work in workloads:
        default = planned_core_replicas(spec.core) if part == names.CORE else 0
        objs.append(
            build_model_deployment(owner, part, work, replicas.get(part, default), spec.model_cache)
        )
        objs.append(build_service(owner, part, names.COMPONENT_MODEL))
        if work.autoscaling is not None:
            objs.append(build_autoscaler(owner, part, work.autoscaling))
    config_yaml = render_router_config(spec, owner.namespace, owner.name)
    objs.append(build_router_configmap(owner, config_yaml))
    objs.extend(build_router_rbac(owner, spec))
    if publishes_thresholds(spec):
        objs.append(build_thresholds_lease(owner))
    objs.append(build_router_deployment(owner, spec, config_yaml))
    objs.append(build_service(owner, names.ROUTER, names.COMPONENT_ROUTER))
    if spec.router.http_route is not None:
        objs.append(build_router_httproute(owner, spec.router.http_route))
    objs.extend(build_cold_start_helpers(owner, spec))
    return objs
