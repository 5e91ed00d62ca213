"""TGI's API: /generate, /generate_stream, and POST / (where huggingface_hub's
`InferenceClient.text_generation` posts; counted as /generate in the metrics)."""

from __future__ import annotations

from fastapi import APIRouter

from onion_router.protocol.tgi import GENERATE, GENERATE_STREAM, TGI_ROOT
from onion_router.serving import add_model_route

router = APIRouter()
add_model_route(router, "/generate", GENERATE)
add_model_route(router, "/generate_stream", GENERATE_STREAM)
add_model_route(router, "/", TGI_ROOT, endpoint="/generate")
