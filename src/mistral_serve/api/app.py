"""The FastAPI app factory and its lifespan, which owns every long-lived object."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Scope

from mistral_serve import __version__
from mistral_serve.admission import AdmissionLimits
from mistral_serve.api.admin import router as admin_router
from mistral_serve.api.batches_api import router as batches_router
from mistral_serve.api.conversations_api import router as conversations_router
from mistral_serve.api.errors import install_error_handlers
from mistral_serve.api.files_api import router as files_router
from mistral_serve.api.middleware import (
    UPLOAD_FRAMING_BYTES,
    BodyLimitMiddleware,
    RequestIdMiddleware,
    TracingMiddleware,
    UnexpectedErrorMiddleware,
    body_limit,
)
from mistral_serve.api.openapi import install_openapi
from mistral_serve.api.responses import GatewayApp
from mistral_serve.api.responses_api import RESPONSES_APPS
from mistral_serve.api.responses_api import router as responses_router
from mistral_serve.api.routes import GENERATION_APPS, router
from mistral_serve.api.workers import WorkerRole
from mistral_serve.batch.execute import executor
from mistral_serve.batch.files import FileLimits, Files
from mistral_serve.batch.runner import BatchRunner, RunnerOptions
from mistral_serve.batch.service import Batches
from mistral_serve.config import Settings
from mistral_serve.engines.client import EngineClient
from mistral_serve.engines.discovery import EngineDirectory
from mistral_serve.engines.health import HealthPolicy
from mistral_serve.engines.monitor import EngineMonitor
from mistral_serve.engines.registry import EngineRegistry, Restarter
from mistral_serve.gateway.accounting import Accounting
from mistral_serve.gateway.adapters import AdapterKeeper
from mistral_serve.gateway.fim import FimEncoder
from mistral_serve.gateway.pipeline import Endpoint, Gateway
from mistral_serve.models.catalog import kind_of
from mistral_serve.responses.conversations import Conversations
from mistral_serve.responses.mistral import MistralConversations
from mistral_serve.responses.service import Responses, ResponsesOptions
from mistral_serve.routing import Balance, RoutingOptions, RoutingPolicy, make_policy
from mistral_serve.store import (
    AdapterRecords,
    KeyRecords,
    Store,
    UsageRecords,
    WallClock,
    utc_now,
)
from mistral_serve.store.batches import BatchRecords
from mistral_serve.store.conversations import ConversationRecords
from mistral_serve.store.database import configured_url
from mistral_serve.store.files import FileRecords
from mistral_serve.store.responses import ResponseRecords
from mistral_serve.telemetry.batch import BatchTelemetry
from mistral_serve.telemetry.engines import EngineTelemetry
from mistral_serve.telemetry.genai import GenAIObserver
from mistral_serve.telemetry.setup import Telemetry, disabled_telemetry
from mistral_serve.tenancy.auth import Authenticator
from mistral_serve.tenancy.budgets import BudgetSeeds, spent_in_ledger
from mistral_serve.tenancy.cache import KeyCache
from mistral_serve.tenancy.ledger import Ledger
from mistral_serve.tenancy.limiter import Limiter, Limits, MemoryLimiter
from mistral_serve.tenancy.redis_limiter import RedisLimiter

log = logging.getLogger(__name__)

TRACED_ROUTES = frozenset(
    {endpoint.route for endpoint in Endpoint} | {"/v1/models", "/v1/batches", "/v1/batch/jobs"}
)


@dataclass
class Services:
    """Everything a request may need, built once per app in the lifespan."""

    client: EngineClient
    registry: EngineRegistry
    monitor: EngineMonitor
    gateway: Gateway
    #: The Responses API (its stored responses in the store, unless RESPONSES_STORE=off).
    responses: Responses
    #: OpenAI's conversations and Mistral's, on the same store.
    conversations: Conversations
    mistral_conversations: MistralConversations
    #: The key store and ADMIN_API_KEY, for the admin API (None: it is off).
    keys: KeyRecords | None = None
    admin_key: str | None = None
    #: The wall clock keys' states and expiries are judged by.
    clock: WallClock = utc_now
    #: The LoRA adapters: where they are loaded, and those added at run time (kept only
    #: when there is a store: not with AUTH=off).
    adapters: AdapterKeeper | None = None
    #: Uploaded files (`/v1/files`): records in the store, bytes in FILES_DIR.
    files: Files | None = None
    #: Batch jobs (`/v1/batches`, `/v1/batch/jobs`), run by this gateway's runner among others.
    batches: Batches | None = None
    batch_runner: BatchRunner | None = None


def routing_policy(settings: Settings, *, stats_max_age_s: float) -> RoutingPolicy:
    """The policy ROUTING_POLICY names, with its settings."""
    balance = Balance(settings.routing_balance_abs, settings.routing_balance_rel)
    return make_policy(settings.routing_policy, RoutingOptions(stats_max_age_s, balance))


@dataclass
class Tenancy:
    """Who may call, with what limits, and where their usage is written."""

    authenticator: Authenticator
    accounting: Accounting
    #: The key records, for the admin API (None when AUTH=off: there is no store).
    keys: KeyRecords | None = None
    cache: KeyCache | None = None
    limits: Limits | None = None
    ledger: Ledger | None = None
    #: The LoRA adapters added at run time, in the same store.
    adapters: AdapterRecords | None = None


def limiter_for(settings: Settings) -> Limiter:
    """Limit counters in Redis when REDIS_URL is set, else in this process."""
    if settings.redis_url is None:
        return MemoryLimiter()
    return RedisLimiter.from_url(settings.redis_url.get_secret_value())


@asynccontextmanager
async def opened_store(settings: Settings) -> AsyncIterator[Store]:
    """The store (its migrations applied): keys, limits and the ledger (unless AUTH=off),
    stored responses (unless RESPONSES_STORE=off), and uploaded files always keep records in
    it."""
    store = await Store.open(configured_url(settings))
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def tenancy(
    settings: Settings, store: Store | None, clock: WallClock = utc_now
) -> AsyncIterator[Tenancy]:
    """The authenticator AUTH asks for, per-key limits and the usage ledger. Unless auth is
    off, every key is read from the store, changes followed every KEY_CACHE_TTL_S, and the
    ledger started (replaying any spool). On the way out, pending settlements finish and the
    ledger writes every row it holds. ``clock`` stamps keys and ledger rows and judges
    expiries."""
    static_key = settings.api_key.get_secret_value() if settings.api_key else None
    if settings.auth == "off":
        yield Tenancy(Authenticator("off", None, None), Accounting())
        return
    assert store is not None  # opened_store: auth is on
    records = KeyRecords(store, clock)
    cache = KeyCache(records, settings.key_cache_ttl_s)
    usage = UsageRecords(store)
    limits = Limits(
        limiter_for(settings),
        on_store_error=settings.limits_on_store_error,
        budgets=BudgetSeeds(spent_in_ledger(usage)),  # budgets outlive restarts
    )
    ledger = Ledger(
        usage,
        settings.data_dir / "ledger-spool",
        flush_interval_s=settings.ledger_flush_interval_s,
        batch_rows=settings.ledger_batch_rows,
    )
    following: asyncio.Task[None] | None = None
    try:
        await cache.load()
        await ledger.start()
        following = asyncio.create_task(cache.run(), name="key-cache")
        accounting = Accounting(limits, ledger, settings.limits_reserve_output_tokens, clock)
        authenticator = Authenticator(settings.auth, static_key, cache, clock)
        adapters = AdapterRecords(store, clock)
        yield Tenancy(authenticator, accounting, records, cache, limits, ledger, adapters)
    finally:
        await _stopped(following)
        await limits.close()
        await ledger.close()


#: How often expired responses are deleted (the first sweep runs at start).
SWEEP_INTERVAL_S = 600.0


async def _sweep(responses: Responses, conversations: Conversations) -> None:
    """Delete expired responses and conversations now and every SWEEP_INTERVAL_S (every
    gateway sweeps; the deletes are idempotent). A failed sweep is logged and tried again
    next time."""
    while True:
        try:
            gone = await responses.expire()
            gone_conversations = await conversations.expire()
            if gone or gone_conversations:
                log.info(
                    "deleted %d expired responses and %d conversations", gone, gone_conversations
                )
        except Exception as exc:  # the store is away: the next sweep catches up
            log.warning("could not delete expired responses: %s", exc)
        await asyncio.sleep(SWEEP_INTERVAL_S)


async def _stopped(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task (if any) and wait until it is gone."""
    if task is not None:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def warn_if_open(settings: Settings, authenticator: Authenticator) -> None:
    """One line when anyone who reaches a non-loopback address may use the engines."""
    if settings.host not in ("127.0.0.1", "::1", "localhost") and not authenticator.required:
        log.warning(
            "no API key is required on %s:%d: anyone who can reach it can use the engines "
            "(set API_KEY, or create keys with `mistral-serve keys create`)",
            settings.host,
            settings.port,
        )


def observe_tenancy(observer: GenAIObserver, tenants: Tenancy) -> None:
    """Export the store's, the limit counters' and the ledger's health as metrics."""
    if tenants.cache is None or tenants.limits is None:
        return  # AUTH=off: no store, no limits, no ledger
    cache, limits, ledger = tenants.cache, tenants.limits, tenants.ledger
    observer.watch_tenancy(
        lambda: cache.failures,
        lambda: limits.store_errors,
        (lambda: {"written": ledger.written, "spooled": ledger.spooled}) if ledger else None,
        (lambda: ledger.pending) if ledger else None,
    )


def begin_draining(app: FastAPI) -> None:
    """Shutting down: requests still waiting for an engine are answered 503 at once (those
    already on an engine finish). Called by the CLI when a signal arrives."""
    services: Services | None = getattr(app.state, "services", None)
    if services is not None:
        services.gateway.drain()
        if services.batch_runner is not None:
            services.batch_runner.stop_claiming()


def create_app(
    settings: Settings,
    *,
    engine_urls: Sequence[str] | None = None,
    engine_names: Sequence[str] | None = None,
    telemetry: Telemetry | None = None,
    engine_telemetry: EngineTelemetry | None = None,
    restarter: Restarter | None = None,
    clock: WallClock = utc_now,
    worker: WorkerRole | None = None,
) -> FastAPI:
    """The gateway app over ``engine_urls`` (default: ENGINE_URLS from settings, whose
    ``dns://`` names are followed as their answers change).

    ``telemetry`` is started and shut down by the caller (the CLI), which owns the process.
    Under ``up``, ``restarter`` is the supervisor's: a stalled engine is restarted. ``clock``
    is the wall clock of keys and the ledger. ``worker``: this process is one of several
    gateway workers (api/workers.py).
    """
    directory = EngineDirectory(engine_urls if engine_urls is not None else settings.engine_urls)
    telemetry = telemetry or disabled_telemetry()
    observer = GenAIObserver(telemetry)
    exports_engines = worker is None or worker.exports_engines
    if engine_telemetry is None:  # the engines' states are one worker's to export
        meter = telemetry.meter if exports_engines else disabled_telemetry().meter
        engine_telemetry = EngineTelemetry(meter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with opened_store(settings) as store, tenancy(settings, store, clock) as tenants:
            warn_if_open(settings, tenants.authenticator)
            observe_tenancy(observer, tenants)
            async with _serving(app, tenants, store):
                yield

    @asynccontextmanager
    async def _serving(app: FastAPI, tenants: Tenancy, store: Store) -> AsyncIterator[None]:
        client = EngineClient()
        await client.start()
        registry = EngineRegistry(
            await directory.resolve(),
            names=engine_names,
            policy=HealthPolicy.from_settings(settings),
            telemetry=engine_telemetry,
            restarter=restarter,
            stats_interval_s=settings.engine_stats_interval_s,
            max_inflight=settings.engine_concurrency_target,
            shared=None if worker is None else worker.shared_load(),
            kind_of=functools.lru_cache(maxsize=64)(partial(kind_of, hf_cache=settings.hub_cache)),
        )
        monitor = EngineMonitor(
            registry,
            client,
            probe_interval_s=settings.engine_health_interval_s,
            stats_interval_s=settings.engine_stats_interval_s,
        )
        await monitor.start()
        following = (
            asyncio.create_task(
                directory.follow(monitor.set_urls, settings.engine_dns_refresh_s),
                name="engine-discovery",
            )
            if directory.dynamic
            else None
        )
        if exports_engines:
            observer.watch_ready_engines(lambda: len(registry.ready_engines()))
        adapters = AdapterKeeper(registry, client, tenants.adapters, telemetry=engine_telemetry)
        gateway = Gateway(
            registry,
            client,
            routing_policy(settings, stats_max_age_s=registry.stats_max_age_s),
            admission=AdmissionLimits(
                max_waiting=settings.admission_queue_max,
                timeout_s=settings.admission_queue_timeout_s,
            ),
            authenticator=tenants.authenticator,
            observer=observer,
            accounting=tenants.accounting,
            fim=FimEncoder(settings.hub_cache),
            workers=(0, 1) if worker is None else (worker.index, worker.count),
            adapters=adapters,
            migration_limit=settings.engine_migration_limit,
        )
        observer.watch_queue_depths(gateway.admission.depths)
        observer.watch_queue_shares(gateway.queued_tenants)
        admin_key = settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
        await adapters.start()
        ttl = timedelta(days=settings.responses_ttl_days)
        stored = store if settings.responses_store == "on" else None
        conversations = Conversations(
            gateway,
            ConversationRecords(stored, clock) if stored is not None else None,
            ttl=ttl,
            clock=clock,
        )
        responses = Responses(
            gateway,
            ResponseRecords(stored, clock) if stored is not None else None,
            ResponsesOptions(
                settings.responses_store == "on",
                ttl,
                settings.responses_lost_after_s,
            ),
            conversations=conversations,
            clock=clock,
        )
        mistral_conversations = MistralConversations(gateway, conversations, ttl=ttl, clock=clock)
        responses.start()
        sweeping = asyncio.create_task(_sweep(responses, conversations), name="expiry")
        files = Files(
            FileRecords(store), FileLimits(settings.files_path, settings.files_max_bytes), clock
        )
        batch_records = BatchRecords(store)
        batch_telemetry = BatchTelemetry(telemetry)
        runner = BatchRunner(
            batch_records,
            files,
            executor(gateway, responses),
            tenants.authenticator.caller_of,
            gateway.batch_capacity,
            RunnerOptions(settings.batch_max_share, settings.batch_lease_s),
            telemetry=batch_telemetry,
            clock=clock,
        )
        batch_telemetry.watch(lambda: runner.job_states, lambda: runner.waiting)
        gateway.on_capacity(runner.wake)
        runner.start()
        app.state.services = Services(
            client,
            registry,
            monitor,
            gateway,
            responses,
            conversations,
            mistral_conversations,
            tenants.keys,
            admin_key,
            clock,
            adapters,
            files,
            Batches(
                batch_records,
                files,
                gateway,
                telemetry=batch_telemetry,
                clock=clock,
                made=runner.wake,
            ),
            runner,
        )
        try:
            yield
        finally:
            await runner.stop(settings.shutdown_timeout_s)
            await responses.stop(settings.shutdown_timeout_s)
            await _stopped(sweeping)
            await adapters.stop()
            await _stopped(following)
            await monitor.stop()
            await client.close()
            if registry.shared is not None:
                registry.shared.close()

    app = GatewayApp(
        title="mistral-serve",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",  # Swagger UI over /openapi.json, as vLLM's server has
        redoc_url=None,
    )
    install_openapi(app)
    app.include_router(router)
    app.include_router(responses_router)
    app.include_router(conversations_router)
    app.include_router(files_router)
    app.include_router(batches_router)
    app.include_router(admin_router)
    install_error_handlers(app)

    def request_body_limit(scope: Scope) -> int:
        if scope["path"] == "/v1/files" and scope["method"] == "POST":  # an upload
            return settings.files_max_bytes + UPLOAD_FRAMING_BYTES
        services: Services | None = getattr(app.state, "services", None)
        longest = services.registry.longest_context if services is not None else 0
        return body_limit(settings.max_request_bytes, longest)

    # Innermost first: every answer, even an unexpected 500 or a 413, gets its request id, and
    # the span sees the status of every answer. The generation routes get the same layers.
    layers: list[tuple[type, dict[str, Any]]] = [
        (UnexpectedErrorMiddleware, {}),
        (BodyLimitMiddleware, {"limit": request_body_limit}),
    ]
    if telemetry.enabled:
        layers.append((TracingMiddleware, {"tracer": telemetry.tracer, "routes": TRACED_ROUTES}))
    layers.append((RequestIdMiddleware, {}))
    for layer, options in layers:
        app.add_middleware(layer, **options)
    direct = {**GENERATION_APPS, **RESPONSES_APPS}
    app.serve_directly({path: _wrapped(route, layers) for path, route in direct.items()})
    return app


def _wrapped(app: ASGIApp, layers: Sequence[tuple[type, dict[str, Any]]]) -> ASGIApp:
    for layer, options in layers:
        app = layer(app, **options)
    return app
