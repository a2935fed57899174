"""semconv names every metric once: METRICS is exactly what the instruments are created as,
so docs/observability.md and the SigNoz dashboard, checked against it, are checked against
what is emitted."""

from __future__ import annotations

from typing import Any

from opentelemetry.metrics import NoOpMeter
from opentelemetry.trace import NoOpTracer

from mistral_serve.telemetry import semconv
from mistral_serve.telemetry.engines import EngineTelemetry
from mistral_serve.telemetry.genai import GenAIObserver
from mistral_serve.telemetry.gpu import GpuMetrics, Nvml
from mistral_serve.telemetry.setup import Telemetry

from .test_gpu import FakeNvmlModule


class NamingMeter:
    """A meter that notes the name of every instrument created on it."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._meter = NoOpMeter("names")

    def __getattr__(self, method: str) -> Any:
        create = getattr(self._meter, method)

        def noted(name: str, *args: Any, **kwargs: Any) -> Any:
            self.names.append(name)
            return create(name, *args, **kwargs)

        return noted


def test_metrics_is_every_instrument_created_and_each_once():
    meter = NamingMeter()
    observer = GenAIObserver(Telemetry(tracer=NoOpTracer(), meter=meter))  # type: ignore[arg-type]
    observer.watch_ready_engines(lambda: 0)
    observer.watch_queue_depths(dict)
    observer.watch_queue_shares(list)
    observer.watch_tenancy(lambda: 0, lambda: 0, dict, lambda: 0)
    engines = EngineTelemetry(meter)  # type: ignore[arg-type]
    engines.watch_states([], list)
    engines.watch_memory(list)
    engines.watch_adapters(list)
    GpuMetrics(Nvml(FakeNvmlModule())).register(meter)  # type: ignore[arg-type]
    assert sorted(meter.names) == sorted(semconv.METRICS)
