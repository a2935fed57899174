"""The `mistral-serve` command.

    mistral-serve up                  engines (supervised) + gateway on this machine
    mistral-serve gateway             gateway only, over ENGINE_URLS
    mistral-serve demo-model DIR      write the built-in demo checkpoint
    mistral-serve keys …              API keys: create, list, show, update, revoke
    mistral-serve usage …             token usage from the ledger, by day, model or key
    mistral-serve healthcheck         exit 0 when this machine's gateway is ready (containers)

Settings come from the environment and `.env` (see config/sample.env). A bad setting stops the
start with one line naming the variable; an engine that cannot start stops it with the engine's
own error line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import sys
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from mistral_serve import __version__
from mistral_serve.api.app import begin_draining, create_app
from mistral_serve.api.http_protocol import limited_protocol
from mistral_serve.api.workers import (
    WorkerRole,
    Workers,
    check_workers,
    die_with,
    engines_given,
    listening_socket,
    restart_requester,
    worker_count,
)
from mistral_serve.batch.files import FileLimits, Files
from mistral_serve.batch.jobs import openai_object
from mistral_serve.batch.jobs import table as batch_table
from mistral_serve.batch.service import Batches
from mistral_serve.config import Settings, describe_validation_error
from mistral_serve.engines.client import EngineClient
from mistral_serve.engines.gpus import visible_gpus
from mistral_serve.engines.registry import Restarter, engine_name
from mistral_serve.engines.supervisor import EngineSpec, Supervisor
from mistral_serve.errors import ConfigError, EngineStartError, NotFoundError
from mistral_serve.launch.engines import place_fleet, plan_engines
from mistral_serve.models import placement, planner
from mistral_serve.models.catalog import UnknownModelError, architecture_of
from mistral_serve.models.demo import VARIANTS, ensure_demo_model
from mistral_serve.models.fleet import load_fleet
from mistral_serve.store import KeyRecords, Store, UsageRecords, utc_now
from mistral_serve.store.batches import BatchRecords
from mistral_serve.store.database import configured_url
from mistral_serve.store.files import FileRecords
from mistral_serve.telemetry.engines import EngineTelemetry
from mistral_serve.telemetry.gpu import register_gpu_metrics
from mistral_serve.telemetry.logs import export_logs, setup_logging
from mistral_serve.telemetry.setup import Telemetry, start_telemetry
from mistral_serve.tenancy import manage, report

log = logging.getLogger("mistral_serve")

EXIT_CONFIG = 2
EXIT_ENGINE = 3


class GatewayServer(uvicorn.Server):
    """uvicorn, minus its signal handling: the CLI decides the shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What start-up built (imported modules, SQLAlchemy's and Alembic's tables of
        # everything) lives as long as this process: out of the collector's sight, a full
        # collection no longer walks it during every busy second (~110 µs less CPU a request,
        # bench/tenancy_cost.py).
        gc.collect()
        gc.freeze()
        # A request allocates thousands of short-lived objects: with the default threshold (700)
        # the young generation was collected several times per request, 2 % of the gateway's
        # CPU in a native profile; at 50,000 most die by reference counting first (CPU per
        # streamed token 4 % lower over a fake engine, /tmp A/B of 4 rounds each).
        gc.set_threshold(50_000, 20, 100)


def _uvicorn_config(app: object, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="none",  # we already run on uvloop
        http=limited_protocol(settings.max_request_headers, settings.max_request_header_bytes),
        lifespan="on",
        log_config=None,  # our logging setup stays in charge
        access_log=settings.log_level == "DEBUG",
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        server_header=False,
    )


async def _serve_until_signal(
    server: GatewayServer, stop: asyncio.Event, sockets: list[socket.socket] | None = None
) -> None:
    """Serve until a signal arrives (or the server gives up), then drain: requests waiting for
    an engine are answered 503 at once, those on an engine finish."""
    serving = asyncio.create_task(server.serve(sockets))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    begin_draining(server.config.app)  # type: ignore[arg-type]
    server.should_exit = True
    stopping.cancel()
    await serving  # re-raises a startup failure (e.g. the port is taken)


def _install_signal_handlers(stop: asyncio.Event, server_ref: list[GatewayServer]) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():  # a second signal: stop waiting for requests to finish
            for server in server_ref:
                server.force_exit = True
            return
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


# -- up ------------------------------------------------------------------------------------------
async def run_up(
    settings: Settings,
    specs: list[EngineSpec],
    telemetry: Telemetry,
    listening: socket.socket,
    workers: int = 1,
    remote: Sequence[str] = (),
) -> int:
    """Engines, then the gateway on ``listening`` (bound before the engines started: refused
    at once if the port is taken, not after minutes of loading, and held while they load),
    over them and the ``remote`` engines a models file names."""
    stop = asyncio.Event()
    servers: list[GatewayServer] = []
    _install_signal_handlers(stop, servers)
    client = EngineClient()
    await client.start()
    engine_telemetry = EngineTelemetry(telemetry.meter)
    supervisor = Supervisor(
        specs,
        client,
        start_timeout_s=settings.engine_start_timeout_s,
        stop_timeout_s=settings.shutdown_timeout_s,
        on_progress=lambda message: log.info("%s", message),
        telemetry=engine_telemetry,
    )
    try:
        starting = asyncio.create_task(supervisor.start())
        interrupted = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # a signal while engines load: stop them and leave
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return 0
        interrupted.cancel()
        starting.result()  # raises EngineStartError
        urls = [*supervisor.urls, *remote]
        names = [*supervisor.names, *(engine_name(url) for url in remote)]
        if workers > 1:
            engines = dict(zip(urls, names, strict=True))
            await _serve_with_workers(
                settings, workers, listening, stop, engines, supervisor.restart
            )
            return 0
        app = create_app(
            settings,
            engine_urls=urls,
            engine_names=names,
            telemetry=telemetry,
            engine_telemetry=engine_telemetry,
            restarter=supervisor.restart,  # a stalled engine is restarted
        )
        server = GatewayServer(_uvicorn_config(app, settings))
        servers.append(server)
        log.info("gateway listening on http://%s:%d", settings.host, settings.port)
        await _serve_until_signal(server, stop, [listening])
        return 0
    finally:
        await supervisor.stop()  # engines go after the gateway has drained
        await client.close()
        log.info("stopped")


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings()
    setup_logging(settings)
    workers = _workers(settings)
    listening = listening_socket(settings.host, settings.port)
    specs, remote = plan_engines(settings, os.environ)
    with _process_telemetry(settings) as telemetry:
        return _run(run_up(settings, specs, telemetry, listening, workers, remote))


# -- gateway -------------------------------------------------------------------------------------
async def run_gateway(
    settings: Settings, telemetry: Telemetry, listening: socket.socket, workers: int = 1
) -> int:
    stop = asyncio.Event()
    if workers > 1:
        _install_signal_handlers(stop, [])
        await _serve_with_workers(settings, workers, listening, stop)
        return 0
    app = create_app(settings, telemetry=telemetry)
    server = GatewayServer(_uvicorn_config(app, settings))
    _install_signal_handlers(stop, [server])
    log.info(
        "gateway over %s on http://%s:%d",
        ", ".join(settings.engine_urls),
        settings.host,
        settings.port,
    )
    await _serve_until_signal(server, stop, [listening])
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    settings = _settings()
    if not settings.engine_urls:
        raise ConfigError("ENGINE_URLS: required by `mistral-serve gateway` (comma-separated URLs)")
    setup_logging(settings)
    workers = _workers(settings)
    listening = listening_socket(settings.host, settings.port)
    with _process_telemetry(settings) as telemetry:
        return _run(run_gateway(settings, telemetry, listening, workers))


# -- gateway workers -----------------------------------------------------------------------------
def _workers(settings: Settings) -> int:
    """How many gateway processes serve PORT (GATEWAY_WORKERS; api/workers.py)."""
    count = worker_count(settings, len(visible_gpus(os.environ)), os.cpu_count())
    check_workers(settings, count)
    return count


async def _serve_with_workers(
    settings: Settings,
    count: int,
    listening: socket.socket,
    stop: asyncio.Event,
    engines: Mapping[str, str] | None = None,
    restarter: Restarter | None = None,
) -> None:
    """Serve PORT with ``count`` worker processes until a signal, then let each drain."""
    workers = Workers(
        settings, count, listening, engines=engines, restarter=restarter, environ=os.environ
    )
    await workers.start()
    log.info(
        "gateway listening on http://%s:%d with %d workers", settings.host, settings.port, count
    )
    await stop.wait()
    await workers.stop(settings.shutdown_timeout_s + 5)


def cmd_worker(args: argparse.Namespace) -> int:
    """One of several gateway processes (started by `up` or `gateway`, never by hand)."""
    die_with(args.parent)
    settings = _settings()
    setup_logging(settings)
    engines = engines_given(args.engine)
    role = WorkerRole(args.index, args.workers, args.load_table_fd)
    telemetry = start_telemetry(settings)
    if telemetry.enabled:
        export_logs(telemetry)
    try:
        return _run(_run_worker(settings, telemetry, role, engines, args))
    finally:
        telemetry.shutdown()


async def _run_worker(
    settings: Settings,
    telemetry: Telemetry,
    role: WorkerRole,
    engines: Mapping[str, str],
    args: argparse.Namespace,
) -> int:
    stop = asyncio.Event()
    app = create_app(
        settings,
        engine_urls=list(engines) or None,
        engine_names=list(engines.values()) or None,
        telemetry=telemetry,
        restarter=restart_requester(args.control_fd) if engines else None,
        worker=role,
    )
    server = GatewayServer(_uvicorn_config(app, settings))
    _install_signal_handlers(stop, [server])
    listening = socket.socket(fileno=args.listen_fd)
    await _serve_until_signal(server, stop, [listening])
    return 0


# -- demo-model ----------------------------------------------------------------------------------
def cmd_demo_model(args: argparse.Namespace) -> int:
    folder = ensure_demo_model(Path(args.directory), args.variant)
    print(f"demo model ({args.variant}) in {folder}")
    return 0


# -- keys ----------------------------------------------------------------------------------------
def cmd_keys(args: argparse.Namespace) -> int:
    """API keys in the store DATABASE_URL names (SQLite in MISTRAL_SERVE_DATA_DIR by default)."""
    settings = _settings()
    now = utc_now()  # the one reading of the clock: expiries count from it, states are at it
    try:
        settings_given = _key_settings(args, now)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return _run(_keys(args, settings, settings_given, now))


def _key_settings(args: argparse.Namespace, now: datetime) -> dict[str, object]:
    given: dict[str, object] = {}
    if getattr(args, "models", None) is not None:
        given["models"] = manage.parse_models(args.models)
    if getattr(args, "priority", None) is not None:
        given["priority"] = args.priority
    if getattr(args, "weight", None) is not None:
        if not 0 < args.weight <= 1000:
            raise ValueError("--weight must be above 0 and at most 1000")
        given["weight"] = args.weight
    if getattr(args, "expires", None) is not None:
        given["expires_at"] = manage.parse_expiry(args.expires, now)
    if getattr(args, "rename", None) is not None:
        given["name"] = args.rename
    for name in manage.LIMITS:
        if getattr(args, name, None) is not None:
            given[name] = manage.parse_limit(getattr(args, name))
    return given


async def _keys(
    args: argparse.Namespace, settings: Settings, given: dict[str, object], now: datetime
) -> int:
    store = await Store.open(configured_url(settings))
    try:
        records = KeyRecords(store, clock=lambda: now)
        if args.action == "create":
            issued, record = await manage.create_key(records, args.name, **given)
            print(f"key id:  {record.id}")
            print(f"key:     {issued.text}")
            print("Shown once: store it now. Only a hash of it is kept.", file=sys.stderr)
            return 0
        if args.action == "list":
            listed = await records.list()
            if args.json:
                print(json.dumps([manage.describe(record, now) for record in listed], indent=2))
            else:
                print(manage.table(listed, now))
            return 0
        if args.action == "show":
            record = await records.get(args.key_id)
        elif args.action == "update":
            record = await records.update(args.key_id, **given)
        else:  # revoke
            record = await records.revoke(args.key_id)
        if record is None:
            print(f"mistral-serve: no key {args.key_id}", file=sys.stderr)
            return 1
        print(json.dumps(manage.describe(record, now), indent=2))
        return 0
    finally:
        await store.close()


def _add_keys_parser(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser(
        "keys", help="API keys: create, list, show, update, revoke (DATABASE_URL's store)"
    )
    keys.set_defaults(handler=cmd_keys)
    actions = keys.add_subparsers(dest="action", required=True)

    def settable(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--models", help="models it may use: a,b (default all)")
        parser.add_argument("--priority", type=int, help="admission order, lower first (0)")
        parser.add_argument(
            "--weight", type=float, help="share of turns within its priority, relative (1)"
        )
        parser.add_argument("--expires", help="30d, 12h, an ISO date, or never (default)")
        for flag, what in (
            ("--rpm", "requests per minute"),
            ("--tpm", "tokens per minute (prompt + completion)"),
            ("--max-concurrent", "requests at a time"),
            ("--tokens-per-day", "token budget per UTC day"),
            ("--tokens-per-month", "token budget per UTC month"),
        ):
            parser.add_argument(flag, metavar="N", help=f"{what}; none: unlimited (default)")

    create = actions.add_parser("create", help="make a key; prints it once")
    create.add_argument("--name", required=True, help="what the key is for")
    settable(create)
    listing = actions.add_parser("list", help="every key (never a secret)")
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="one key")
    show.add_argument("key_id", metavar="ID")
    update = actions.add_parser("update", help="change a key's settings")
    update.add_argument("key_id", metavar="ID")
    update.add_argument("--name", dest="rename", help="a new name")
    settable(update)
    revoke = actions.add_parser(
        "revoke", help="refuse the key from now on (every gateway within KEY_CACHE_TTL_S)"
    )
    revoke.add_argument("key_id", metavar="ID")


# -- batch ---------------------------------------------------------------------------------------
def cmd_batch(args: argparse.Namespace) -> int:
    """Batch jobs in DATABASE_URL's store, every key's: list, show, cancel."""
    return _run(_batch(args, _settings()))


async def _batch(args: argparse.Namespace, settings: Settings) -> int:
    store = await Store.open(configured_url(settings))
    try:
        files = Files(FileRecords(store), FileLimits(settings.files_path, settings.files_max_bytes))
        batches = Batches(BatchRecords(store), files)
        if args.action == "list":
            statuses = args.status.split(",") if args.status else None
            rows = await batches.listed(args.key, statuses=statuses, limit=args.limit)
            if args.json:
                now = utc_now()
                print(
                    json.dumps([openai_object(job, counts, now) for job, counts in rows], indent=2)
                )
            else:
                print(batch_table(rows))
            return 0
        try:
            if args.action == "cancel":
                await batches.cancel(None, args.batch_id)
            print(json.dumps(await batches.described(args.batch_id), indent=2))
        except NotFoundError:
            print(f"mistral-serve: no batch {args.batch_id}", file=sys.stderr)
            return 1
        return 0
    finally:
        await store.close()


def _add_batch_parser(commands: argparse._SubParsersAction) -> None:
    batch = commands.add_parser(
        "batch", help="batch jobs: list, show, cancel (DATABASE_URL's store, every key's)"
    )
    batch.set_defaults(handler=cmd_batch)
    actions = batch.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="jobs, newest first, with their counts")
    listing.add_argument("--key", metavar="ID", help="one key's jobs only")
    listing.add_argument("--status", help="in_progress,cancelling,… (OpenAI's names)")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="one job: counts, pause, files, gateways running it")
    show.add_argument("batch_id", metavar="ID")
    cancel = actions.add_parser(
        "cancel", help="stop starting its requests; running ones finish, the rest are cancelled"
    )
    cancel.add_argument("batch_id", metavar="ID")


# -- usage ---------------------------------------------------------------------------------------
def cmd_usage(args: argparse.Namespace) -> int:
    """Token usage from the ledger in DATABASE_URL's store, by day, model or key."""
    settings = _settings()
    try:
        since = report.parse_since(args.since, utc_now())
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    return _run(_usage(args, settings, since))


async def _usage(args: argparse.Namespace, settings: Settings, since: date) -> int:
    store = await Store.open(configured_url(settings))
    try:
        summaries = await UsageRecords(store).totals(since, by=args.by, key_id=args.key)
        names = (
            {record.id: record.name for record in await KeyRecords(store).list()}
            if args.by == "key"
            else None
        )
    finally:
        await store.close()
    print(report.render(summaries, args.by, args.format, names))
    return 0


def _add_usage_parser(commands: argparse._SubParsersAction) -> None:
    usage = commands.add_parser("usage", help="token usage from the ledger (DATABASE_URL's store)")
    usage.add_argument("--key", metavar="ID", help="one key's usage only")
    usage.add_argument(
        "--since", default="7d", help="7d, 24h, 2w back, or an ISO date (default 7d; UTC days)"
    )
    usage.add_argument("--by", choices=("day", "model", "key"), default="day")
    usage.add_argument("--format", choices=("table", "csv", "json"), default="table")
    usage.set_defaults(handler=cmd_usage)


# -- plan --------------------------------------------------------------------------------------
def cmd_plan(args: argparse.Namespace) -> int:
    """Will MODEL (or the fleet of a models file) fit on these GPUs, and how should they be
    split between engines?"""
    settings = _settings()
    if (args.model is None) == (args.fleet is None):
        raise ConfigError("plan: give a MODEL or --fleet FILE")
    if args.fleet is not None:
        return _plan_fleet(args, settings)
    try:
        architecture = architecture_of(args.model, settings.hub_cache)
        gpus = planner.Gpus.parse(args.gpus)
        result = planner.plan(
            architecture,
            gpus,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
            utilization=args.gpu_memory_utilization,
        )
    except (planner.PlanError, UnknownModelError) as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps(result.to_json(), indent=2) if args.json else planner.render(result))
    return 0 if result.recommended is not None else 1


def _plan_fleet(args: argparse.Namespace, settings: Settings) -> int:
    """Every engine of the models file placed on the GPUs, or why the fleet does not fit."""
    fleet = load_fleet(args.fleet)
    try:
        gpus = planner.Gpus.parse(args.gpus)
    except planner.PlanError as exc:
        raise ConfigError(str(exc)) from None
    try:
        result = place_fleet(settings, fleet, gpus)
    except placement.PlacementError as exc:
        print(f"does not fit: {exc}")
        return 1
    print(placement.render(result))
    return 0


def _add_plan_parser(commands: argparse._SubParsersAction) -> None:
    plan = commands.add_parser(
        "plan",
        help="size MODEL for GPUs (layouts that fit, KV cache, the recommended one), or place "
        "a fleet (--fleet FILE)",
    )
    plan.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        help="a local folder, a Hugging Face id in the local cache, or a published Mistral "
        "model by name (mistralai/Mixtral-8x7B-Instruct-v0.1, mixtral-8x7b …)",
    )
    plan.add_argument(
        "--fleet",
        metavar="FILE",
        type=Path,
        help="instead of MODEL: place every engine of this models file (MODELS_FILE's format, "
        "config/models.example.yaml) on the GPUs",
    )
    plan.add_argument("--gpus", default="2xH100", help="COUNTxNAME (default 2xH100)")
    plan.add_argument("--max-model-len", type=int, help="default: the model's context length")
    plan.add_argument("--dtype", choices=("bf16", "fp8"), default="bf16")
    plan.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=planner.DEFAULT_UTILIZATION,
        help=f"the share of each GPU's memory vLLM may use (default {planner.DEFAULT_UTILIZATION})",
    )
    plan.add_argument("--json", action="store_true", help="the plan as JSON")
    plan.set_defaults(handler=cmd_plan)


# -- healthcheck ---------------------------------------------------------------------------------
def cmd_healthcheck(args: argparse.Namespace) -> int:
    """A container's HEALTHCHECK: is the gateway on HOST:PORT ready (GET /ready → 200)?"""
    settings = _settings()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    netloc = f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"
    url = f"http://{netloc}/ready"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:  # URLError and HTTPError (503: no engine ready) are OSErrors
        print(f"mistral-serve: not ready: {exc}", file=sys.stderr)
        return 1


# -- plumbing ------------------------------------------------------------------------------------
def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


@contextlib.contextmanager
def _process_telemetry(settings: Settings) -> Iterator[Telemetry]:
    """This process's telemetry: spans, metrics (GPUs included when NVML sees some) and logs
    over OTLP, flushed when the command ends."""
    telemetry = start_telemetry(settings)
    if telemetry.enabled:
        export_logs(telemetry)
        register_gpu_metrics(telemetry)
    try:
        yield telemetry
    finally:
        telemetry.shutdown()


def _run(main: object) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(main)  # type: ignore[arg-type]
    return uvloop.run(main)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mistral-serve",
        description="Serve Mistral models: an OpenAI-compatible gateway over vLLM engines.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start engines and the gateway on this machine")
    up.set_defaults(handler=cmd_up)
    gateway = commands.add_parser("gateway", help="run the gateway over ENGINE_URLS")
    gateway.set_defaults(handler=cmd_gateway)
    worker = commands.add_parser("worker")  # started by up/gateway (GATEWAY_WORKERS), not listed
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--workers", type=int, required=True)
    worker.add_argument("--listen-fd", type=int, required=True)
    worker.add_argument("--control-fd", type=int, required=True)
    worker.add_argument("--load-table-fd", type=int, required=True)
    worker.add_argument("--parent", type=int, required=True)
    worker.add_argument("--engine", action="append", default=[], help="NAME=URL (under up)")
    worker.set_defaults(handler=cmd_worker)
    demo = commands.add_parser("demo-model", help="write the built-in demo model to DIR")
    demo.add_argument("directory", metavar="DIR")
    demo.add_argument(
        "--variant",
        choices=VARIANTS,
        default="v3",
        help="v3: Mistral format (default); v1: HF format, Mistral-7B-v0.1 tokenizer",
    )
    demo.set_defaults(handler=cmd_demo_model)
    _add_keys_parser(commands)
    _add_usage_parser(commands)
    _add_batch_parser(commands)
    _add_plan_parser(commands)
    health = commands.add_parser(
        "healthcheck", help="exit 0 if the gateway on HOST:PORT is ready (for containers)"
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    health.set_defaults(handler=cmd_healthcheck)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"mistral-serve: configuration error: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except EngineStartError as exc:
        print(f"mistral-serve: engine failed to start: {exc.message}", file=sys.stderr)
        return EXIT_ENGINE


if __name__ == "__main__":
    sys.exit(main())
