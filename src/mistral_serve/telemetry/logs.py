"""Log setup: LOG_LEVEL and LOG_FORMAT (text for people, json for collectors).

Relayed engine lines carry the replica they came from (``extra={"replica": "engine 0"}``): text
logs prefix it, JSON logs give it its own field.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from mistral_serve.config import Settings

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
