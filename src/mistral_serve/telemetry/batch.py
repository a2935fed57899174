"""Batch jobs as telemetry: each job's span (linked from the request that created it; every
request of the job is its child, on whichever gateway runs it, through the traceparent kept
with the job), and the batch metrics: requests ended by state, jobs by state, requests
waiting to run per model."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mistral_serve.telemetry import semconv
from mistral_serve.telemetry.genai import per_attribute
from mistral_serve.telemetry.setup import Telemetry

_PROPAGATOR = TraceContextTextMapPropagator()


class BatchTelemetry:
    def __init__(self, telemetry: Telemetry) -> None:
        self._tracer = telemetry.tracer
        self._meter = telemetry.meter
        self._requests = telemetry.meter.create_counter(
            semconv.BATCH_REQUESTS,
            unit="{request}",
            description="Batch requests by how their run ended (succeeded, failed, released "
            "to run again, cancelled, expired).",
        )

    def job_created(self, job_id: str, model: str) -> str | None:
        """Record the job's span, linked from the request creating it (the current span);
        its traceparent, which its requests' spans take as their parent."""
        creating = trace.get_current_span().get_span_context()
        links = [Link(creating)] if creating.is_valid else []
        span = self._tracer.start_span(
            f"batch_job {job_id}",
            context=Context(),  # a trace of its own: hours of requests, apart from the creator's
            kind=SpanKind.INTERNAL,
            links=links,
            attributes={semconv.BATCH_ID: job_id, semconv.REQUEST_MODEL: model},
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        span.end()
        return carrier.get("traceparent")

    @contextmanager
    def request_span(self, trace_parent: str | None, job_id: str, custom_id: str) -> Iterator[Span]:
        """The span of one batch request (the current span while it runs: the request's own
        generation span), a child of its job's."""
        parent = _PROPAGATOR.extract({"traceparent": trace_parent}) if trace_parent else None
        with self._tracer.start_as_current_span(
            "batch_request",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes={semconv.BATCH_ID: job_id, semconv.BATCH_CUSTOM_ID: custom_id},
        ) as span:
            yield span

    def request_ended(self, state: str, model: str) -> None:
        self._requests.add(1, {semconv.BATCH_REQUEST_STATE: state, semconv.REQUEST_MODEL: model})

    def watch(
        self, jobs: Callable[[], Mapping[str, int]], waiting: Callable[[], Mapping[str, int]]
    ) -> None:
        """Observe jobs by state and waiting requests per model (the runner's last reading
        of the store) at each export."""
        self._meter.create_observable_gauge(
            semconv.BATCH_JOBS,
            per_attribute(semconv.BATCH_JOB_STATE, jobs),
            unit="{job}",
            description="Batch jobs by state.",
        )
        self._meter.create_observable_gauge(
            semconv.BATCH_QUEUE_DEPTH,
            per_attribute(semconv.REQUEST_MODEL, waiting),
            unit="{request}",
            description="Batch requests waiting to run, per model.",
        )
