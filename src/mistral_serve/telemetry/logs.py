"""Log setup: LOG_LEVEL and LOG_FORMAT (text for people, json for collectors).

Relayed engine lines carry the replica they came from (``extra={"replica": "engine 0"}``): text
logs prefix it, JSON logs give it its own field. JSON lines written inside a traced request
carry its ``trace_id`` and ``span_id``. With OTLP on, :func:`export_logs` also sends every record
to the collector, where SigNoz links it to its trace (the record keeps the span context).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson
from opentelemetry import trace
from opentelemetry.instrumentation.logging.handler import LoggingHandler

from mistral_serve.config import Settings
from mistral_serve.telemetry.setup import Telemetry

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        replica = getattr(record, "replica", None)
        if replica is not None:
            return f"[{replica}] {record.getMessage()}"  # the engine's line has its own stamp
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        replica = getattr(record, "replica", None)
        if replica is not None:
            entry["replica"] = replica
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # uvicorn configures its own loggers unless told not to; route them through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(
        logging.INFO if settings.log_level == "DEBUG" else logging.WARNING
    )


class _NotFromTheExporter(logging.Filter):
    """The OTLP exporters log their own failures; sending those over OTLP would loop."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("opentelemetry")


def export_logs(telemetry: Telemetry) -> None:
    """Also send log records over OTLP (when telemetry exports logs); undone at shutdown."""
    if telemetry.logger_provider is None:
        return
    handler = LoggingHandler(logger_provider=telemetry.logger_provider)
    handler.addFilter(_NotFromTheExporter())
    root = logging.getLogger()
    root.addHandler(handler)
    telemetry.add_shutdown(lambda: root.removeHandler(handler))
