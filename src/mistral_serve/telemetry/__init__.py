"""Telemetry: logging now; OpenTelemetry traces and metrics join here."""
