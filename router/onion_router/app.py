"""The HTTP front door: `create_app(config)`. The lifespan owns the router's services (HTTP
clients, layer link, escalator, metrics) and hands them to the routes as lifespan state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException

from onion_contract.router_config import RouterConfig
from onion_router.credentials import Keys
from onion_router.layers import LayerLink
from onion_router.middleware import AuthMiddleware, RequestIdMiddleware
from onion_router.routes import openai, ops, tgi
from onion_router.scoring import Scoring
from onion_router.services import STATE_KEY, Services, running
from onion_router.serving import http_error, internal_error


def create_app(config: RouterConfig, *, link: LayerLink | None = None) -> FastAPI:
    """The router app. `link` replaces the Kubernetes (or static) layer link, e.g. in tests.
    The learned models (and their embedder) load here: a bad file fails before serving."""
    scoring = Scoring(config, log_features=config.decision_log is not None)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Services]]:
        async with running(config, scoring, link) as services:
            yield {STATE_KEY: services}

    app = FastAPI(
        title="onion-router", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.add_middleware(RequestIdMiddleware)
    if config.auth is not None:
        app.add_middleware(AuthMiddleware, keys=Keys(config.auth.keys_file))
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
    for routes in (openai, tgi, ops):
        app.include_router(routes.router)
    return app
