"""The FastAPI app factory and its lifespan, which owns every long-lived object."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from mistral_serve import __version__
from mistral_serve.api.errors import install_error_handlers
from mistral_serve.api.middleware import RequestIdMiddleware, UnexpectedErrorMiddleware
from mistral_serve.api.routes import router
from mistral_serve.config import Settings
from mistral_serve.engines.client import EngineClient
from mistral_serve.engines.registry import EngineRegistry
from mistral_serve.gateway.pipeline import Gateway
from mistral_serve.routing import LeastOutstanding


@dataclass
class Services:
    """Everything a request may need, built once per app in the lifespan."""

    client: EngineClient
    registry: EngineRegistry
    gateway: Gateway


def create_app(
    settings: Settings,
    *,
    engine_urls: Sequence[str] | None = None,
    engine_names: Sequence[str] | None = None,
) -> FastAPI:
    """The gateway app over ``engine_urls`` (default: ENGINE_URLS from settings)."""
    urls = list(engine_urls if engine_urls is not None else settings.engine_urls)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = EngineClient(read_timeout_s=settings.engine_read_timeout_s)
        await client.start()
        registry = EngineRegistry(
            urls, client, interval_s=settings.engine_health_interval_s, names=engine_names
        )
        await registry.start()
        gateway = Gateway(registry, client, LeastOutstanding())
        app.state.services = Services(client, registry, gateway)
        try:
            yield
        finally:
            await registry.stop()
            await client.close()

    app = FastAPI(
        title="mistral-serve",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(router)
    install_error_handlers(app)
    # Last added is outermost: every answer, even an unexpected 500, gets its request id.
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app
