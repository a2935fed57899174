import json
import logging

from mistral_serve.config import Settings
from mistral_serve.telemetry.logs import JsonFormatter, TextFormatter, setup_logging


def record(message: str, **extra) -> logging.LogRecord:
    entry = logging.LogRecord("mistral_serve.x", logging.WARNING, __file__, 1, message, (), None)
    entry.__dict__.update(extra)
    return entry


def test_json_lines_carry_level_logger_and_replica():
    line = JsonFormatter().format(record("engine says hi", replica="engine 1"))
    entry = json.loads(line)
    assert entry["message"] == "engine says hi"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "mistral_serve.x"
    assert entry["replica"] == "engine 1"
    assert "\n" not in line


def test_text_prefixes_relayed_engine_lines_with_the_replica():
    assert TextFormatter().format(record("loading", replica="engine 0")) == "[engine 0] loading"
    assert "WARNING mistral_serve.x: plain" in TextFormatter().format(record("plain"))


def test_setup_applies_level_and_format():
    setup_logging(Settings(_env_file=None, log_level="ERROR", log_format="json"))
    root = logging.getLogger()
    assert root.level == logging.ERROR
    assert isinstance(root.handlers[0].formatter, JsonFormatter)
    setup_logging(Settings(_env_file=None))
