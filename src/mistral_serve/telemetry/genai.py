"""One generation request as the GenAI conventions see it: span attributes and metrics.

The gateway reads the protocol (request fields, the engine's answer or stream) and reports
facts here: the response's id and model, the first chunk, finish reasons, usage, errors. This
module turns them into attributes on the request's SERVER span (opened by the api layer's
middleware), an upstream CLIENT span per engine call, and the metrics, recorded once when the
request ends. With telemetry off the spans are non-recording and the meter is a no-op; the
timings are still kept, because the gateway's timing headers use them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import orjson
from opentelemetry import trace
from opentelemetry.metrics import Meter, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mistral_serve.errors import (
    CLIENT_CLOSED,
    CLIENT_CLOSED_STATUS,
    EngineError,
    MistralServeError,
    NoReadyEngineError,
)
from mistral_serve.protocol.embeddings import EmbeddingRequest
from mistral_serve.protocol.fim import FIMCompletionRequest
from mistral_serve.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    GenerationRequest,
)
from mistral_serve.telemetry import semconv
from mistral_serve.telemetry.setup import Telemetry

log = logging.getLogger(__name__)
_PROPAGATOR = TraceContextTextMapPropagator()


class GatewayMetrics:
    """Every instrument the gateway records, created once per app."""

    def __init__(self, meter: Meter) -> None:
        self.request_duration = meter.create_histogram(
            semconv.REQUEST_DURATION,
            unit="s",
            description="Generative AI server request duration such as time-to-last byte.",
        )
        self.time_to_first_token = meter.create_histogram(
            semconv.TIME_TO_FIRST_TOKEN,
            unit="s",
            description="Time to generate first token for successful responses.",
        )
        self.time_per_output_token = meter.create_histogram(
            semconv.TIME_PER_OUTPUT_TOKEN,
            unit="s",
            description="Time per output token generated after the first token.",
        )
        self.token_usage = meter.create_histogram(
            semconv.TOKEN_USAGE, unit="{token}", description="Number of input and output tokens."
        )
        self.active_requests = meter.create_up_down_counter(
            semconv.ACTIVE_REQUESTS,
            unit="{request}",
            description="Generation requests in flight in the gateway.",
        )
        self.rejections = meter.create_counter(
            semconv.REJECTIONS,
            unit="{request}",
            description="Requests refused before or by an engine, by reason.",
        )
        self.upstream_errors = meter.create_counter(
            semconv.UPSTREAM_ERRORS,
            unit="{error}",
            description="Failed engine calls, by error.type.",
        )
        self.share_error = meter.create_histogram(
            semconv.ROUTING_SHARE_ERROR,
            unit="1",
            description="The routing's predicted prefix share minus the share the engine's "
            "cache served, per request.",
        )
        self.migrations = meter.create_counter(
            semconv.MIGRATIONS,
            unit="{request}",
            description="Requests that left a failed engine for another, by kind.",
        )
        self.queue_duration = meter.create_histogram(
            semconv.QUEUE_DURATION,
            unit="s",
            description="Time requests waited in the gateway for a free engine (0 for none).",
        )


@dataclass
class Timings:
    """perf_counter() stamps of one request; None until reached."""

    started: float = field(default_factory=time.perf_counter)
    sent: float | None = None  # sent to an engine (the gateway's queue time ends)
    first_chunk: float | None = None
    finished: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    events: int = 0  # SSE events forwarded: the output estimate when a stream is cut short

    @property
    def queue_s(self) -> float | None:
        return None if self.sent is None else self.sent - self.started

    @property
    def time_to_first_chunk_s(self) -> float | None:
        return None if self.first_chunk is None else self.first_chunk - self.started

    @property
    def time_per_output_token_s(self) -> float | None:
        """Decode time per token after the first (needs a first-chunk time and 2+ tokens)."""
        if self.first_chunk is None or self.finished is None or not self.output_tokens:
            return None
        if self.output_tokens < 2:
            return None
        return (self.finished - self.first_chunk) / (self.output_tokens - 1)


class QueuedTenant(NamedTuple):
    """One tenant waiting in one model's line, as the metrics show it (counts only)."""

    model: str
    tenant: str
    priority: int
    waiting: int
    share: float


class GenAIObserver:
    """Makes a :class:`Generation` per request; holds the tracer, instruments and options."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.tracer = telemetry.tracer
        self._meter = telemetry.meter
        self.metrics = GatewayMetrics(telemetry.meter)
        self.capture_content = telemetry.capture_content

    def watch_ready_engines(self, count: Callable[[], int]) -> None:
        """Observe how many engines are ready at each export."""
        self._meter.create_observable_gauge(
            semconv.READY_ENGINES,
            _single(count),
            unit="{engine}",
            description="Engines that pass their health check and serve requests.",
        )

    def watch_queue_depths(self, depths: Callable[[], Mapping[str, int]]) -> None:
        """Observe how many requests wait for an engine, per model, at each export."""
        self._meter.create_observable_gauge(
            semconv.QUEUE_DEPTH,
            per_attribute(semconv.REQUEST_MODEL, depths),
            unit="{request}",
            description="Requests waiting in the gateway for a free engine, per model.",
        )

    def watch_queue_shares(self, shares: Callable[[], Iterable[QueuedTenant]]) -> None:
        """Observe each waiting tenant's requests and share of its model's line."""

        def observe(value: Callable[[QueuedTenant], float]) -> list[Callable[[Any], Any]]:
            return [
                lambda options: [
                    Observation(
                        value(queued),
                        {
                            semconv.REQUEST_MODEL: queued.model,
                            semconv.TENANT: queued.tenant,
                            semconv.PRIORITY: queued.priority,
                        },
                    )
                    for queued in shares()
                ]
            ]

        self._meter.create_observable_gauge(
            semconv.QUEUE_TENANT_WAITING,
            observe(lambda queued: queued.waiting),
            unit="{request}",
            description="Requests of each tenant waiting for a free engine, per model.",
        )
        self._meter.create_observable_gauge(
            semconv.QUEUE_TENANT_SHARE,
            observe(lambda queued: queued.share),
            unit="1",
            description="Each waiting tenant's weighted share of its priority's queued tokens.",
        )

    def watch_tenancy(
        self,
        key_store_errors: Callable[[], int],
        limits_store_errors: Callable[[], int],
        ledger_rows: Callable[[], Mapping[str, int]] | None = None,
        ledger_pending: Callable[[], int] | None = None,
    ) -> None:
        """Observe the key store's and limit counters' failures, and the ledger's rows."""
        meter = self._meter
        meter.create_observable_counter(
            semconv.KEY_STORE_ERRORS,
            _single(key_store_errors),
            unit="{error}",
            description="Failed refreshes of the key cache (known keys kept being served).",
        )
        meter.create_observable_counter(
            semconv.LIMITS_STORE_ERRORS,
            _single(limits_store_errors),
            unit="{error}",
            description="Failed checks or settlements of per-key limits (LIMITS_ON_STORE_ERROR).",
        )
        if ledger_rows is not None:
            meter.create_observable_counter(
                semconv.LEDGER_ROWS,
                per_attribute(semconv.LEDGER_OUTCOME, ledger_rows),
                unit="{row}",
                description="Usage ledger rows written to the database, or spooled to a file.",
            )
        if ledger_pending is not None:
            meter.create_observable_gauge(
                semconv.LEDGER_PENDING,
                _single(ledger_pending),
                unit="{row}",
                description="Usage ledger rows waiting for the next batch.",
            )

    def start(self, operation: str, request_id: str, route: str | None = None) -> Generation:
        """One request's ``Generation``; ``route``: the gateway's path it came in on (the
        ledger's endpoint), when not the operation's own."""
        return Generation(self, operation, request_id, route)


def _single(value: Callable[[], int]) -> list[Callable[[Any], list[Observation]]]:
    """An observable instrument's callback for one value."""
    return [lambda options: [Observation(value())]]


def per_attribute(
    attribute: str, values: Callable[[], Mapping[str, int]]
) -> list[Callable[[Any], list[Observation]]]:
    """An observable instrument's callback for a value per ``attribute`` value (the batch
    metrics use it too)."""
    return [
        lambda options: [Observation(count, {attribute: name}) for name, count in values().items()]
    ]


class Generation:
    """What one request did, reported by the gateway as it happens; ends exactly once."""

    def __init__(
        self, observer: GenAIObserver, operation: str, request_id: str, route: str | None = None
    ) -> None:
        self._observer = observer
        self.timings = Timings()
        self.operation = operation
        #: The gateway path it came in on (``/v1/responses`` is a ``chat`` operation).
        self.route = route or operation
        #: The id the client knows its answer by, when the gateway gives one (a response's
        #: ``resp_…``): the engine's own completion id does not replace it on the span.
        self._answer_id: str | None = None
        self.request_id = request_id
        self.span: Span = trace.get_current_span()  # the middleware's SERVER span
        self._recording = self.span.is_recording()
        self._upstream: Span | None = None
        self._metric_attributes: dict[str, Any] = self._base_attributes()
        self._finish_reasons: dict[int, str] = {}
        self._prefix_share: float | None = None  # the routing's prediction
        self._cached_tokens: int | None = None  # what the engine's cache served
        self._output_text: dict[int, list[str]] = {}
        self._key_id: str | None = None
        self._ended = False
        self._listeners: list[Callable[[Generation], None]] = []
        #: How the request ended (set when it does): the HTTP status, and error.type if any.
        self.status: int | None = None
        self.error_type: str | None = None
        #: The engine of the last attempt, if any.
        self.engine_name: str | None = None
        #: The batch job it is one of, if any.
        self.batch_id: str | None = None
        observer.metrics.active_requests.add(1, self._base_attributes())
        if self._recording:
            self.span.update_name(operation)
            self.span.set_attributes(
                {
                    semconv.OPERATION_NAME: operation,
                    semconv.PROVIDER_NAME: semconv.PROVIDER,
                    semconv.REQUEST_ID: request_id,
                }
            )

    def _base_attributes(self) -> dict[str, str]:
        return {semconv.OPERATION_NAME: self.operation, semconv.PROVIDER_NAME: semconv.PROVIDER}

    # -- the request ---------------------------------------------------------------------------
    def request(self, request: GenerationRequest, *, as_sent: bool = True) -> None:
        """The validated request: its model names the span, its parameters become attributes,
        and with content capture on its prompt the input messages. ``as_sent`` False: the
        engine's form of a request translated from Mistral's dialect, whose parameters (a
        ``random_seed`` is its ``seed``) replace the client's, while the prompt recorded stays
        the client's (a FIM prompt is text and a suffix, not the token ids sent)."""
        self._metric_attributes[semconv.REQUEST_MODEL] = request.model
        if not self._recording:
            return
        self.span.update_name(f"{self.operation} {request.model}")
        max_tokens = request.output_limit
        attributes = {
            semconv.REQUEST_MODEL: request.model,
            semconv.REQUEST_STREAM: request.is_stream,
            semconv.REQUEST_MAX_TOKENS: max_tokens,
            semconv.REQUEST_TEMPERATURE: request.temperature,
            semconv.REQUEST_TOP_P: request.top_p,
            semconv.REQUEST_SEED: request.seed,
            semconv.REQUEST_PRESENCE_PENALTY: request.presence_penalty,
            semconv.REQUEST_FREQUENCY_PENALTY: request.frequency_penalty,
            semconv.REQUEST_CHOICE_COUNT: request.n if request.n not in (None, 1) else None,
            semconv.REQUEST_STOP_SEQUENCES: (
                [request.stop] if isinstance(request.stop, str) else request.stop
            ),
        }
        self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        if as_sent and self._observer.capture_content:
            self.span.set_attribute(semconv.INPUT_MESSAGES, _input_messages(request))

    # -- the caller, admission and routing --------------------------------------------------------
    def caller(self, key_id: str | None) -> None:
        """The API key's id (never the secret) on the span and on token usage; None when no
        key is required. Keys are few and made by an operator, so the id is a bounded
        metric attribute."""
        self._key_id = key_id
        if key_id is not None and self._recording:
            self.span.set_attribute(semconv.KEY_ID, key_id)

    def queued(self, waited_s: float, outcome: str) -> None:
        """Admission is over: the request waited ``waited_s`` (a child span when it waited at
        all), then was ``admitted``, ``rejected`` (429, 503) or ``abandoned`` (client left)."""
        self._observer.metrics.queue_duration.record(
            waited_s, {**self._metric_attributes, semconv.ADMISSION_OUTCOME: outcome}
        )
        if not self._recording or waited_s <= 0.0005:  # no span for no wait
            return
        end = time.time_ns()
        span = self._observer.tracer.start_span(
            "queue",
            context=trace.set_span_in_context(self.span),
            start_time=end - int(waited_s * 1e9),
        )
        span.set_attribute(semconv.ADMISSION_OUTCOME, outcome)
        span.end(end_time=end)

    def routed(self, policy: str, engine: str, reason: str, prefix_share: float | None) -> None:
        """The routing decision on the span: which policy chose which engine, and why."""
        self._prefix_share = prefix_share
        if not self._recording:
            return
        attributes: dict[str, str | float] = {
            semconv.ROUTING_POLICY: policy,
            semconv.ROUTING_REASON: reason,
            semconv.ENGINE_NAME: engine,
        }
        if prefix_share is not None:
            attributes[semconv.ROUTING_PREFIX_SHARE] = round(prefix_share, 3)
        self.span.set_attributes(attributes)

    def adapter(self, name: str, *, resident: bool) -> None:
        """The request names a LoRA adapter; whether its engine held it when chosen."""
        if self._recording:
            self.span.set_attributes(
                {semconv.ADAPTER_NAME: name, semconv.ADAPTER_RESIDENT: resident}
            )

    def adapter_waited(self, seconds: float) -> None:
        """The request waited ``seconds`` for its engine to load its adapter."""
        if self._recording:
            self.span.set_attribute(semconv.ADAPTER_LOAD_WAIT, round(seconds, 4))

    # -- the engine call -----------------------------------------------------------------------
    def upstream_started(self, engine_name: str, url: str, method: str = "POST") -> dict[str, str]:
        """Open the CLIENT span of one engine call; returns the headers that carry it."""
        self._end_upstream()  # a retry on another engine: the last attempt is over
        self.timings.sent = time.perf_counter()
        parent = trace.set_span_in_context(self.span)
        target = urlsplit(url)
        span = self._observer.tracer.start_span(
            f"{method} {target.path}", context=parent, kind=SpanKind.CLIENT
        )
        self._upstream = span
        carrier: dict[str, str] = {}
        if span.is_recording():
            span.set_attributes(
                {
                    semconv.HTTP_REQUEST_METHOD: method,
                    semconv.URL_FULL: url,
                    semconv.SERVER_ADDRESS: target.hostname or "",
                    semconv.SERVER_PORT: target.port or 80,
                    semconv.ENGINE_NAME: engine_name,
                }
            )
            _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        if self._recording:
            self.span.set_attribute(semconv.ENGINE_NAME, engine_name)
        self.engine_name = engine_name
        return carrier

    def upstream_answered(self, status: int) -> None:
        """The engine sent its status line."""
        if self._upstream is not None and self._upstream.is_recording():
            self._upstream.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, status)
            if status >= 400:
                self._upstream.set_attribute(semconv.ERROR_TYPE, str(status))
                self._upstream.set_status(Status(StatusCode.ERROR))

    def upstream_failed(self, error: MistralServeError) -> None:
        if self._upstream is not None:
            self._upstream.set_attribute(semconv.ERROR_TYPE, error.label)
            self._upstream.set_status(Status(StatusCode.ERROR, error.message))
        self._observer.metrics.upstream_errors.add(
            1, {**self._metric_attributes, semconv.ERROR_TYPE: error.label}
        )
        self._end_upstream()

    def migrated(self, left: str, to: str | None, carried: int, kind: str) -> None:
        """The request left engine ``left`` (failed) for ``to`` (None: it could not go on),
        carrying ``carried`` tokens already sent; ``kind``: continued, restarted, impossible."""
        self._observer.metrics.migrations.add(
            1, {**self._metric_attributes, semconv.MIGRATION_KIND: kind}
        )
        if not self._recording:
            return
        attributes: dict[str, str | int] = {
            semconv.MIGRATION_KIND: kind,
            semconv.MIGRATION_ENGINE_LEFT: left,
            semconv.MIGRATION_TOKENS_CARRIED: carried,
        }
        if to is not None:
            attributes[semconv.ENGINE_NAME] = to
        self.span.add_event(semconv.MIGRATION_EVENT, attributes)

    # -- the answer ----------------------------------------------------------------------------
    def answered_as(self, response_id: str, conversation_id: str | None) -> None:
        """The ids the client knows this answer by (the Responses API's ``resp_…`` and its
        conversation or chain), on the span in place of the engine's completion id."""
        self._answer_id = response_id
        if self._recording:
            self.span.set_attribute(semconv.RESPONSE_ID, response_id)
            if conversation_id is not None:
                self.span.set_attribute(semconv.CONVERSATION_ID, conversation_id)

    def batch(self, batch_id: str) -> None:
        """The request is one of a batch job's (its ledger row and span name the job)."""
        self.batch_id = batch_id
        if self._recording:
            self.span.set_attribute(semconv.BATCH_ID, batch_id)

    def first_chunk(self) -> None:
        if self.timings.first_chunk is None:
            self.timings.first_chunk = time.perf_counter()

    def response(self, response_id: object, model: object) -> None:
        if isinstance(model, str):
            self._metric_attributes[semconv.RESPONSE_MODEL] = model
        if self._recording:
            if isinstance(response_id, str) and self._answer_id is None:
                self.span.set_attribute(semconv.RESPONSE_ID, response_id)
            if isinstance(model, str):
                self.span.set_attribute(semconv.RESPONSE_MODEL, model)

    def finish_reason(self, index: int, reason: str) -> None:
        self._finish_reasons[index] = reason

    def usage(
        self, input_tokens: object, output_tokens: object, cached_tokens: object = None
    ) -> None:
        if isinstance(input_tokens, int):
            self.timings.input_tokens = input_tokens
        if isinstance(output_tokens, int):
            self.timings.output_tokens = output_tokens
        if isinstance(cached_tokens, int):
            self._cached_tokens = cached_tokens

    @property
    def wants_output_text(self) -> bool:
        return self._recording and self._observer.capture_content

    def output_text(self, index: int, text: str) -> None:
        if not self.wants_output_text:
            return  # content is recorded only when opted in
        self._output_text.setdefault(index, []).append(text)

    # -- the end -------------------------------------------------------------------------------
    def succeeded(self) -> None:
        self._end(status=200, error_type=None)

    def failed(self, error: MistralServeError) -> None:
        """A request that ends in one of our errors (raised here or by the engine)."""
        if self._ended:
            return
        metrics = self._observer.metrics
        if isinstance(error, EngineError):
            if self._upstream is not None:
                self.upstream_failed(error)
            else:
                metrics.upstream_errors.add(
                    1, {**self._metric_attributes, semconv.ERROR_TYPE: error.label}
                )
        elif error.status < 500 or isinstance(error, NoReadyEngineError):
            metrics.rejections.add(
                1, {**self._metric_attributes, semconv.REJECTION_REASON: error.label}
            )
        self._end(status=error.status, error_type=error.label, message=error.message)

    def engine_refused(self, status: int) -> None:
        """The engine answered 4xx (bad input it judged): passed through, counted as refused."""
        if self._ended:
            return
        self._observer.metrics.rejections.add(
            1, {**self._metric_attributes, semconv.REJECTION_REASON: "engine_rejected"}
        )
        self._end(status=status, error_type=str(status))

    def client_left(self) -> None:
        self._end(status=CLIENT_CLOSED_STATUS, error_type=CLIENT_CLOSED)

    def on_end(self, listener: Callable[[Generation], None]) -> None:
        """Call ``listener`` once the request has ended (the ledger and limits settle then)."""
        self._listeners.append(listener)

    @property
    def first_finish_reason(self) -> str | None:
        return self._finish_reasons[min(self._finish_reasons)] if self._finish_reasons else None

    def _end(self, *, status: int, error_type: str | None, message: str | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self.status, self.error_type = status, error_type
        timings = self.timings
        timings.finished = time.perf_counter()
        self._end_upstream()
        metrics = self._observer.metrics
        attributes = dict(self._metric_attributes)
        metrics.active_requests.add(-1, self._base_attributes())
        if error_type is not None:
            attributes[semconv.ERROR_TYPE] = error_type
        metrics.request_duration.record(timings.finished - timings.started, attributes)
        if error_type is None:
            if timings.time_to_first_chunk_s is not None:
                metrics.time_to_first_token.record(timings.time_to_first_chunk_s, attributes)
            if timings.time_per_output_token_s is not None:
                metrics.time_per_output_token.record(timings.time_per_output_token_s, attributes)
        for token_type, count in (
            (semconv.TOKEN_INPUT, timings.input_tokens),
            (semconv.TOKEN_OUTPUT, timings.output_tokens),
        ):
            if count is not None:
                usage = {**attributes, semconv.TOKEN_TYPE: token_type}
                if self._key_id is not None:
                    usage[semconv.KEY_ID] = self._key_id  # token usage by key
                metrics.token_usage.record(count, usage)
        cached_share = self._cached_share()
        if cached_share is not None and self._prefix_share is not None:
            metrics.share_error.record(
                round(self._prefix_share - cached_share, 4),
                {semconv.REQUEST_MODEL: attributes.get(semconv.REQUEST_MODEL, "")},
            )
        if self._recording:
            self._annotate_span(error_type, message)
            if cached_share is not None:
                self.span.set_attributes(
                    {
                        semconv.USAGE_CACHE_READ_TOKENS: self._cached_tokens or 0,
                        semconv.ROUTING_CACHED_SHARE: round(cached_share, 3),
                    }
                )
        # One line per request (with its trace and span ids in JSON logs and over OTLP).
        log.info(
            "request %s: %s %s %s in %.0f ms, tokens in/out %s/%s",
            self.request_id,
            self.operation,
            attributes.get(semconv.REQUEST_MODEL, "-"),
            error_type or "ok",
            (timings.finished - timings.started) * 1000,
            timings.input_tokens if timings.input_tokens is not None else "-",
            timings.output_tokens if timings.output_tokens is not None else "-",
        )
        # Handed over, not kept: a listener's closure holds this request's objects, and a
        # reference back to them from here would leave a cycle for the garbage collector.
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            try:
                listener(self)
            except Exception:  # accounting must never break an answer
                log.exception("request %s: end listener failed", self.request_id)

    def _cached_share(self) -> float | None:
        """The share of the prompt the engine's prefix cache served, when it said."""
        prompt = self.timings.input_tokens
        if self._cached_tokens is None or not prompt:
            return None
        return min(1.0, self._cached_tokens / prompt)

    def _annotate_span(self, error_type: str | None, message: str | None) -> None:
        span, timings = self.span, self.timings
        if self._finish_reasons:
            reasons = [self._finish_reasons[i] for i in sorted(self._finish_reasons)]
            span.set_attribute(semconv.RESPONSE_FINISH_REASONS, reasons)
        if timings.input_tokens is not None:
            span.set_attribute(semconv.USAGE_INPUT_TOKENS, timings.input_tokens)
        if timings.output_tokens is not None:
            span.set_attribute(semconv.USAGE_OUTPUT_TOKENS, timings.output_tokens)
        ttfc = timings.time_to_first_chunk_s
        if ttfc is not None:
            span.set_attribute(semconv.RESPONSE_TIME_TO_FIRST_CHUNK, ttfc)
        if self._output_text:
            span.set_attribute(semconv.OUTPUT_MESSAGES, self._output_messages())
        if error_type is not None:
            span.set_attribute(semconv.ERROR_TYPE, error_type)
            if error_type != CLIENT_CLOSED:
                span.set_status(Status(StatusCode.ERROR, message))

    def _end_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.end()
            self._upstream = None

    def _output_messages(self) -> str:
        return orjson.dumps(
            [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": "".join(self._output_text[index])}],
                    "finish_reason": self._finish_reasons.get(index, ""),
                }
                for index in sorted(self._output_text)
            ]
        ).decode()


def _input_messages(request: GenerationRequest) -> str:
    """The prompt in the conventions' message shape (only with content capture on). A FIM
    request is one user message: its prompt, then its suffix as a part of its own; token ids
    sent as a prompt are a part holding them, not text."""
    if isinstance(request, ChatCompletionRequest):
        messages = [
            {"role": message["role"], "parts": _parts(message.get("content"))}
            for message in request.messages
        ]
    elif isinstance(request, FIMCompletionRequest) or (
        isinstance(request, CompletionRequest) and request.suffix is not None
    ):
        parts = [_prompt_part(_prompts(request.prompt)[0])]
        if request.suffix is not None:
            parts.append({"type": "suffix", "content": request.suffix})
        messages = [{"role": "user", "parts": parts}]
    elif isinstance(request, CompletionRequest):
        messages = [{"role": "user", "parts": [_prompt_part(p)]} for p in _prompts(request.prompt)]
    elif isinstance(request, EmbeddingRequest):  # each input a message of its own
        messages = [{"role": "user", "parts": [_prompt_part(p)]} for p in _prompts(request.input)]
    else:
        raise TypeError(f"no message shape for {type(request).__name__}")
    return orjson.dumps(messages).decode()


def _prompts(prompt: object) -> list[object]:
    """A completion's prompts: one text or token list, or a list of them."""
    if isinstance(prompt, list) and not (prompt and isinstance(prompt[0], int)):
        return list(prompt)
    return [prompt]


def _prompt_part(prompt: object) -> Mapping[str, Any]:
    if isinstance(prompt, list):
        return {"type": "token_ids", "content": prompt}
    return _text_part(str(prompt))


def _text_part(text: str) -> Mapping[str, Any]:
    return {"type": "text", "content": text}


def _parts(content: object) -> list[Mapping[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    return [
        {"type": "text", "content": part.get("text", "")}
        if isinstance(part, dict) and part.get("type") == "text"
        else {"type": str(part.get("type", "unknown")) if isinstance(part, dict) else "unknown"}
        for part in content  # type: ignore[union-attr]
    ]
