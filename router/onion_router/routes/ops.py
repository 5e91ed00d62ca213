"""Operations: liveness, readiness (the core layer answers), Prometheus metrics, and the
status of every layer (phase, queue, live threshold) with the recent escalations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from onion_router.protocol.errors import error_body
from onion_router.services import Services, services
from onion_router.serving import json_response

router = APIRouter()
Running = Annotated[Services, Depends(services)]


@router.get("/health")
async def health() -> Response:
    return json_response({"status": "ok"})


@router.get("/ready")
async def ready(s: Running) -> Response:
    core = s.config.layers[0].name
    if await s.upstreams[core].reachable():
        return json_response({"ready": True, "core": core})
    body = error_body(503, f"core layer {core!r} is not reachable", "core_unreachable")
    return json_response(body, 503)


@router.get("/metrics")
async def metrics(s: Running) -> Response:
    return Response(generate_latest(s.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/status")
async def status(s: Running) -> Response:
    layers = s.tracker.snapshot()
    live = s.escalator.live()
    for entry, layer in zip(layers, s.config.layers, strict=True):
        entry["url"] = layer.url
        entry["policy"] = layer.escalation.policy
        if layer.name in live:
            now = live[layer.name]
            entry["threshold"] = now.threshold
            entry["targetRate"] = layer.escalation.target_rate
            entry["escalationRate"] = now.escalation_rate
            entry["samples"] = now.samples
            entry["adapting"] = now.adapting
    return json_response(
        {
            "whileWaking": s.config.while_waking,
            "kubernetes": s.config.kubernetes.model_dump(by_alias=True),
            "layers": layers,
            "recentEscalations": s.metrics.recent_escalations(),
        }
    )
