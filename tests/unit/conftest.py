"""Unit-test helpers.

``captured`` is a Telemetry exporting into the SDK's in-memory exporter and metric reader.

``fake_engine`` is an in-process aiohttp server with vLLM's routes, whose answers each test
chooses. It is the only way to make what a real engine cannot be made to do on demand (a 500,
a stream that drops mid-way, a connection closed under a pooled request), and unit tests also
use it for ordinary behaviour (the pipeline's routing, admission, auth and limits; probes and
scrapes), because it answers at once and exactly as told. What a user relies on is shown
against real engines too, in tests/integration.

``built`` holds both demo checkpoints, built once per run.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mistral_serve.config import Settings
from mistral_serve.engines.client import EngineClient
from mistral_serve.engines.health import HealthPolicy
from mistral_serve.engines.monitor import EngineMonitor
from mistral_serve.engines.registry import EngineRegistry
from mistral_serve.models import demo
from mistral_serve.telemetry.setup import Telemetry, start_telemetry


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both demo checkpoints (by variant: v3, v1), built once for the whole run."""
    root = tmp_path_factory.mktemp("demo")
    return {variant: demo.ensure_demo_model(root / variant, variant) for variant in demo.VARIANTS}


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes the user's data folder (the default key store lives there)."""
    monkeypatch.setenv("MISTRAL_SERVE_DATA_DIR", str(tmp_path_factory.mktemp("data")))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeEngine:
    """An HTTP server with vLLM's routes, whose behaviour each test chooses."""

    def __init__(self) -> None:
        self.models = ["fake-model"]
        #: Each model's card ``root`` (what it is served from), where a test says one.
        self.roots: dict[str, str] = {}
        self.healthy = True
        #: What /metrics answers (None: 404, as an engine without metrics).
        self.metrics_text: str | None = None
        self.handlers: dict[str, Handler] = {}
        self.requests: list[tuple[str, bytes, CIMultiDict[str]]] = []
        #: How many requests were cut off by the gateway closing the connection (an abort).
        self.aborted = 0
        #: How many GETs each watched path (/health, /v1/models, /metrics) has answered.
        self.gets: Counter[str] = Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/{tail:.*}", self._generate)
        app.router.add_post("/tokenize", self._generate)
        app.router.add_post("/detokenize", self._generate)
        # A client that goes cancels its handler, as vLLM aborts a request whose client left.
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        self.gets[request.path] += 1
        return web.Response(status=200 if self.healthy else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        self.gets[request.path] += 1
        if self.metrics_text is None:
            return web.Response(status=404)
        return web.Response(text=self.metrics_text, content_type="text/plain")

    async def _models(self, request: web.Request) -> web.Response:
        self.gets[request.path] += 1
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": m,
                        "object": "model",
                        **({"root": self.roots[m]} if m in self.roots else {}),
                    }
                    for m in self.models
                ],
            }
        )

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.path, body, request.headers.copy()))
        handler = self.handlers.get(request.path)
        if handler is None:
            return web.json_response({"id": "x", "choices": []})
        try:
            return await handler(request)
        except asyncio.CancelledError:
            self.aborted += 1
            raise


@pytest.fixture
async def client() -> AsyncIterator[EngineClient]:
    """The real pooled engine client, as the gateway uses it."""
    engine_client = EngineClient()
    await engine_client.start()
    yield engine_client
    await engine_client.close()


async def _running_fake_engine() -> AsyncIterator[FakeEngine]:
    engine = FakeEngine()
    await engine.start()
    yield engine
    await engine.stop()


@pytest.fixture
async def fake_engine() -> AsyncIterator[FakeEngine]:
    async for engine in _running_fake_engine():
        yield engine


@pytest.fixture
async def second_fake_engine() -> AsyncIterator[FakeEngine]:
    """Another, independent fake, for tests that route between engines."""
    async for engine in _running_fake_engine():
        yield engine


async def probed(
    client: EngineClient, *urls: str, policy: HealthPolicy | None = None, **kwargs: Any
) -> tuple[EngineRegistry, EngineMonitor]:
    """A registry over ``urls`` and its monitor (fast intervals), every engine probed once.
    The monitor's loops are not started: tests that need them call ``monitor.start()``."""
    registry = EngineRegistry(list(urls), policy=policy, stats_interval_s=0.05, **kwargs)
    monitor = EngineMonitor(registry, client, probe_interval_s=0.05, stats_interval_s=0.05)
    await monitor.probe_all()
    return registry, monitor


@dataclass
class Captured:
    """A Telemetry whose spans, metrics and logs land in memory, for assertions."""

    telemetry: Telemetry
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    logs: InMemoryLogRecordExporter

    def finished_spans(self) -> list:
        return list(self.spans.get_finished_spans())

    def metrics(self) -> dict[str, Any]:
        """Metric name → metric (its data points across every attribute set)."""
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {
            metric.name: metric
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }


def capture_telemetry(**settings: Any) -> Captured:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    logs = InMemoryLogRecordExporter()
    telemetry = start_telemetry(
        Settings(_env_file=None, **settings),
        span_exporter=spans,
        metric_readers=[reader],
        log_exporter=logs,
    )
    return Captured(telemetry, spans, reader, logs)


@pytest.fixture
def captured() -> Iterator[Captured]:
    capture = capture_telemetry()
    yield capture
    capture.telemetry.shutdown()
