"""Telemetry setup from the OTEL_* settings."""

from __future__ import annotations

import socket

from opentelemetry import trace

from mistral_serve import __version__
from mistral_serve.config import Settings
from mistral_serve.telemetry.setup import (
    build_resource,
    otlp_headers,
    signal_endpoint,
    start_telemetry,
)


def test_no_endpoint_means_off_and_no_ops():
    telemetry = start_telemetry(Settings(_env_file=None))
    assert not telemetry.enabled
    assert isinstance(telemetry.tracer, trace.NoOpTracer)
    assert not telemetry.tracer.start_span("x").is_recording()
    telemetry.shutdown()


def test_sdk_disabled_wins_over_an_endpoint():
    settings = Settings(
        _env_file=None, otel_exporter_otlp_endpoint="http://127.0.0.1:1", otel_sdk_disabled=True
    )
    assert not start_telemetry(settings).enabled


def test_resource_names_the_service_version_host_and_extra_attributes():
    settings = Settings(
        _env_file=None,
        otel_service_name="gw",
        otel_resource_attributes="deployment.environment.name=prod,team=ml%20infra",
    )
    attributes = build_resource(settings).attributes
    assert attributes["service.name"] == "gw"
    assert attributes["service.version"] == __version__
    assert attributes["host.name"] == socket.gethostname()
    assert attributes["deployment.environment.name"] == "prod"
    assert attributes["team"] == "ml infra"


def test_http_endpoints_get_the_signal_path_and_grpc_takes_the_base():
    http = Settings(_env_file=None, otel_exporter_otlp_endpoint="http://collector:4318/")
    assert signal_endpoint(http, "traces") == "http://collector:4318/v1/traces"
    assert signal_endpoint(http, "logs") == "http://collector:4318/v1/logs"
    grpc = Settings(
        otel_exporter_otlp_endpoint="http://collector:4317", otel_exporter_otlp_protocol="grpc"
    )
    assert signal_endpoint(grpc, "metrics") == "http://collector:4317"


def test_headers_are_parsed_and_kept_secret():
    settings = Settings(
        _env_file=None, otel_exporter_otlp_headers="signoz-ingestion-key=abc%3D%3D,x=1"
    )
    assert otlp_headers(settings) == {"signoz-ingestion-key": "abc==", "x": "1"}
    assert "abc" not in repr(settings)


def test_otlp_exporters_start_and_stop_for_both_protocols():
    # Port 1 refuses at once: shutdown's last export fails fast and must not raise.
    for protocol in ("http/protobuf", "grpc"):
        settings = Settings(
            _env_file=None,
            otel_exporter_otlp_endpoint="http://127.0.0.1:1",
            otel_exporter_otlp_protocol=protocol,
            otel_exporter_otlp_headers="signoz-ingestion-key=k",
        )
        telemetry = start_telemetry(settings)
        assert telemetry.enabled and telemetry.logger_provider is not None
        assert telemetry.tracer.start_span("x").is_recording()
        telemetry.shutdown()
        telemetry.shutdown()  # twice is fine
