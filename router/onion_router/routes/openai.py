"""OpenAI's API: chat completions, completions, and the models the router offers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from onion_router.protocol.chat import CHAT
from onion_router.protocol.completions import COMPLETIONS
from onion_router.services import Services, services
from onion_router.serving import add_model_route, json_response

router = APIRouter()
add_model_route(router, "/v1/chat/completions", CHAT)
add_model_route(router, "/v1/completions", COMPLETIONS)


@router.get("/v1/models")
async def models(s: Annotated[Services, Depends(services)]) -> Response:
    """`onion` (the router chooses) and `onion/<layer>` (pinned) for every layer."""
    ids = ["onion", *(f"onion/{t.name}" for t in s.config.layers)]
    data = [{"id": i, "object": "model", "created": 0, "owned_by": "onion"} for i in ids]
    return json_response({"object": "list", "data": data})
