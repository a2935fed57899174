import json
import logging

from mistral_serve.config import Settings
from mistral_serve.telemetry.logs import JsonFormatter, TextFormatter, export_logs, setup_logging


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


def test_json_lines_inside_a_span_carry_its_trace_and_span_ids(captured):
    with captured.telemetry.tracer.start_as_current_span("request") as span:
        entry = json.loads(JsonFormatter().format(record("inside")))
    context = span.get_span_context()
    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in json.loads(JsonFormatter().format(record("outside")))


def test_exported_logs_keep_the_span_context_and_the_replica(captured):
    setup_logging(Settings(_env_file=None))
    export_logs(captured.telemetry)
    logger = logging.getLogger("mistral_serve.test")
    with captured.telemetry.tracer.start_as_current_span("request") as span:
        logger.warning("inside a request", extra={"replica": "engine 1"})
    logging.getLogger("opentelemetry.exporter").warning("export failed")  # never looped back
    captured.telemetry.shutdown()  # also removes the OTLP handler
    logger.warning("after shutdown")
    [exported] = captured.logs.get_finished_logs()
    assert exported.log_record.body == "inside a request"
    assert exported.log_record.trace_id == span.get_span_context().trace_id
    assert exported.log_record.span_id == span.get_span_context().span_id
    assert exported.log_record.attributes["replica"] == "engine 1"
