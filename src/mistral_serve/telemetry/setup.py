"""OpenTelemetry setup from the standard OTEL_* settings: resource, exporters, providers.

Nothing here is global: :func:`start_telemetry` returns a :class:`Telemetry` holding this
process's tracer and meter, which the app passes down. With no OTLP endpoint (or
OTEL_SDK_DISABLED=true) the tracer and meter are OpenTelemetry's no-ops, so instrumented code
costs a few attribute lookups and exports nothing.

Tests hand in the SDK's in-memory exporter and reader instead of OTLP.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from mistral_serve import __version__
from mistral_serve.config import Settings, parse_key_values
from mistral_serve.telemetry import semconv

log = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "mistral_serve"


@dataclass
class Telemetry:
    """This process's tracer and meter, and how to flush and stop them."""

    tracer: trace.Tracer
    meter: metrics.Meter
    enabled: bool = False
    capture_content: bool = False
    logger_provider: LoggerProvider | None = None
    _shutdowns: list[Callable[[], object]] = field(default_factory=list)

    def add_shutdown(self, step: Callable[[], object]) -> None:
        """Run ``step`` at shutdown, before the steps added earlier."""
        self._shutdowns.insert(0, step)

    def shutdown(self) -> None:
        """Flush what is buffered and stop exporting (safe to call twice)."""
        shutdowns, self._shutdowns = self._shutdowns, []
        for shutdown in shutdowns:
            try:
                shutdown()
            except Exception:  # a collector that is gone must not break shutdown
                log.warning("telemetry: shutdown failed", exc_info=True)


def disabled_telemetry() -> Telemetry:
    return Telemetry(tracer=trace.NoOpTracer(), meter=metrics.NoOpMeter(INSTRUMENTATION_NAME))


def start_telemetry(
    settings: Settings,
    *,
    span_exporter: SpanExporter | None = None,
    metric_readers: Sequence[MetricReader] = (),
    log_exporter: LogRecordExporter | None = None,
) -> Telemetry:
    """Providers for this process, exporting over OTLP as the settings say.

    Exporters passed in (tests) are used instead of OTLP, whatever the settings, and export
    synchronously, so a test sees a span as soon as it ends.
    """
    injected = span_exporter is not None or bool(metric_readers) or log_exporter is not None
    if not injected and not settings.telemetry_enabled:
        return disabled_telemetry()
    if not injected:
        span_exporter, metric_readers, log_exporter = _otlp_exporters(settings)

    resource = build_resource(settings)
    tracer_provider = TracerProvider(resource=resource)
    if span_exporter is not None:
        processor = SimpleSpanProcessor if injected else BatchSpanProcessor
        tracer_provider.add_span_processor(processor(span_exporter))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=list(metric_readers), views=histogram_views()
    )
    logger_provider = None
    if log_exporter is not None:
        logger_provider = LoggerProvider(resource=resource)
        log_processor = SimpleLogRecordProcessor if injected else BatchLogRecordProcessor
        logger_provider.add_log_record_processor(log_processor(log_exporter))

    telemetry = Telemetry(
        tracer=tracer_provider.get_tracer(INSTRUMENTATION_NAME, __version__),
        meter=meter_provider.get_meter(INSTRUMENTATION_NAME, __version__),
        enabled=True,
        capture_content=settings.otel_instrumentation_genai_capture_message_content,
        logger_provider=logger_provider,
    )
    telemetry.add_shutdown(tracer_provider.shutdown)
    telemetry.add_shutdown(meter_provider.shutdown)
    if logger_provider is not None:
        telemetry.add_shutdown(logger_provider.shutdown)
    if not injected:
        log.info(
            "telemetry: exporting traces, metrics and logs to %s over %s",
            settings.otel_exporter_otlp_endpoint,
            settings.otel_exporter_otlp_protocol,
        )
    return telemetry


def histogram_views() -> list[View]:
    """The conventions' bucket boundaries, set explicitly: the SDK's defaults fit none."""
    return [
        View(
            instrument_name=name,
            aggregation=ExplicitBucketHistogramAggregation(boundaries=list(boundaries)),
        )
        for name, boundaries in semconv.HISTOGRAM_BUCKETS.items()
    ]


def build_resource(settings: Settings) -> Resource:
    """service.name/version, host.name, then OTEL_RESOURCE_ATTRIBUTES (which may override)."""
    attributes: dict[str, str] = {
        "service.name": settings.otel_service_name,
        "service.version": __version__,
        "host.name": socket.gethostname(),
    }
    attributes.update(parse_key_values(settings.otel_resource_attributes))
    attributes["service.name"] = settings.otel_service_name  # OTEL_SERVICE_NAME wins, per spec
    return Resource.create(attributes)


def otlp_headers(settings: Settings) -> dict[str, str]:
    if settings.otel_exporter_otlp_headers is None:
        return {}
    return parse_key_values(settings.otel_exporter_otlp_headers.get_secret_value())


def signal_endpoint(settings: Settings, signal: str) -> str:
    """Where one signal goes. OTLP/HTTP appends ``/v1/<signal>`` to the base endpoint, as the
    spec does for OTEL_EXPORTER_OTLP_ENDPOINT; gRPC takes the base as it is."""
    base = settings.otel_exporter_otlp_endpoint or ""
    if settings.otel_exporter_otlp_protocol == "grpc":
        return base
    return f"{base}/v1/{signal}"


def _otlp_exporters(
    settings: Settings,
) -> tuple[SpanExporter, list[MetricReader], LogRecordExporter]:
    headers = otlp_headers(settings)
    if settings.otel_exporter_otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = (settings.otel_exporter_otlp_endpoint or "").startswith("http://")
        options: dict[str, object] = {"headers": headers, "insecure": insecure}
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import (  # type: ignore[no-redef]
            OTLPLogExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[no-redef]
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[no-redef]
            OTLPSpanExporter,
        )

        options = {"headers": headers}
    spans = OTLPSpanExporter(endpoint=signal_endpoint(settings, "traces"), **options)
    metric_exporter = OTLPMetricExporter(endpoint=signal_endpoint(settings, "metrics"), **options)
    reader = PeriodicExportingMetricReader(
        metric_exporter, export_interval_millis=settings.otel_metric_export_interval
    )
    logs = OTLPLogExporter(endpoint=signal_endpoint(settings, "logs"), **options)
    return spans, [reader], logs
