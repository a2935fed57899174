"""The gateway's request pipeline: parse once → auth → validate → limits → admission → route
→ proxy → usage.

A caller's key may carry limits (:mod:`mistral_serve.tenancy.limiter`): before admission the
request reserves its prompt estimate plus max_tokens; when it ends (answered, failed, or left
by its client, streams included) the reservation settles to the usage the engine reported and
the request's row goes to the usage ledger. A limited key's answers carry x-ratelimit-*.

A request starts when an engine serving its model is below its concurrency target; otherwise
it waits in its model's admission line (:mod:`mistral_serve.admission`), and the engine is
chosen when a slot frees, by the routing policy (:mod:`mistral_serve.routing`).

Each attempt holds a :class:`~mistral_serve.engines.registry.Lease` on its engine: the request
counts as in flight there, its bytes are the engine's progress, and its end is the engine's
success or failure. While nothing has reached the client, a failed attempt (refused, 5xx,
broken, or taken back because the engine stalled) moves to another ready engine: once, except
that a refused connection, which never reached an engine, does not use up the move.

The client's original bytes are what the engine receives: the gateway reads the few fields it
needs (model, stream) and checks types, but does not re-encode the body, so every vLLM extension
field passes through unchanged. One exception: a stream whose client did not ask for usage is
sent with ``stream_options.include_usage`` set, so that token counts are known for telemetry;
the stream tap removes that usage event before the client sees it.

Each request is a :class:`~mistral_serve.telemetry.genai.Generation`: the pipeline reports
what happened (request, engine call, answer, failure) and that records spans and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import partial
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from mistral_serve.admission import (
    BATCH_PRIORITY,
    MIN_WEIGHT,
    Admission,
    AdmissionLimits,
    Ticket,
)
from mistral_serve.engines.client import EngineClient, EngineConnectError
from mistral_serve.engines.registry import Engine, EngineRegistry, Lease
from mistral_serve.errors import (
    EngineError,
    InvalidRequestError,
    MistralServeError,
    ModelNotFoundError,
    NoReadyEngineError,
)
from mistral_serve.gateway import embeddings
from mistral_serve.gateway.accounting import Accounting
from mistral_serve.gateway.adapters import AdapterKeeper
from mistral_serve.gateway.answers import engine_message, report_answer
from mistral_serve.gateway.cards import CardMaker
from mistral_serve.gateway.dialect import Translation, translate
from mistral_serve.gateway.fim import FimEncoder
from mistral_serve.gateway.migration import Continuation, Moved, TokenTrail, why_not, with_token_ids
from mistral_serve.gateway.reshape import MistralAnswer, reshaped
from mistral_serve.gateway.responses import GatewayResponse
from mistral_serve.gateway.streaming import ProxyStream
from mistral_serve.gateway.timing import timing_headers
from mistral_serve.protocol import sse
from mistral_serve.protocol.embeddings import EmbeddingRequest
from mistral_serve.protocol.fim import FIMCompletionRequest
from mistral_serve.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    GenerationRequest,
    TokenizeRequest,
    usage_requested,
)
from mistral_serve.routing import RouteKey, RoutingPolicy, route_key
from mistral_serve.routing.adapters import ADAPTER_LOAD, AdapterRoute, route_adapter
from mistral_serve.telemetry.genai import GenAIObserver, Generation, QueuedTenant
from mistral_serve.telemetry.setup import disabled_telemetry
from mistral_serve.tenancy.auth import ANYONE, Authenticator, Caller
from mistral_serve.tenancy.limiter import Reservation
from mistral_serve.tenancy.limits import RawHeaders, text_headers

log = logging.getLogger(__name__)

Validated = TypeVar("Validated", bound=BaseModel)

JSON = "application/json"


class Endpoint(Enum):
    CHAT = ("/v1/chat/completions", "/v1/chat/completions", ChatCompletionRequest, "chat")
    COMPLETIONS = ("/v1/completions", "/v1/completions", CompletionRequest, "text_completion")
    #: Mistral's fill-in-the-middle: encoded here, sent to the engine as a text completion.
    FIM = ("/v1/fim/completions", "/v1/completions", FIMCompletionRequest, "text_completion")
    #: OpenAI's and Mistral's embeddings (Mistral's output types made here).
    EMBEDDINGS = ("/v1/embeddings", "/v1/embeddings", EmbeddingRequest, "embeddings")
    #: The Responses API and conversations (:mod:`mistral_serve.responses`), translated there
    #: into a chat completion: routed, admitted, limited and metered as chat, and entered in
    #: the ledger under its own path.
    RESPONSES = ("/v1/responses", "/v1/chat/completions", ChatCompletionRequest, "chat")
    #: Mistral's conversations, likewise (:mod:`mistral_serve.responses.mistral`).
    CONVERSATIONS = ("/v1/conversations", "/v1/chat/completions", ChatCompletionRequest, "chat")

    def __init__(
        self, route: str, path: str, schema: type[GenerationRequest], operation: str
    ) -> None:
        self.route = route  # the gateway's
        self.path = path  # the engine's
        self.schema = schema
        self.operation = operation  # gen_ai.operation.name
        #: The kind of model that answers it (an engine's ``kind``).
        self.kind = "embed" if operation == "embeddings" else "generate"
        #: The request's field holding what the model reads.
        self.text_field = {"chat": "messages", "embeddings": "input"}.get(operation, "prompt")
        if route == "/v1/responses":  # a response's client sent items, not messages
            self.text_field = "input"
        elif route == "/v1/conversations":  # and a Mistral conversation's, inputs
            self.text_field = "inputs"

    @property
    def engine_schema(self) -> type[GenerationRequest]:
        """The request as the engine receives it (after Mistral's dialect is translated)."""
        return CompletionRequest if self is Endpoint.FIM else self.schema


def decode_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; anything else is a 400."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError.not_json(exc) from None
    if not isinstance(document, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    return document


def validate_request(endpoint: Endpoint, document: dict[str, Any]) -> GenerationRequest:
    """Type-check a decoded body; any problem is a 400 naming the field."""
    return validated(endpoint.schema, document)


def validated(schema: type[Validated], document: dict[str, Any]) -> Validated:
    try:
        return schema.model_validate(document)
    except ValidationError as exc:
        raise InvalidRequestError.from_validation(exc.errors(include_url=False)) from None


@dataclass
class _Call:
    """One request as every attempt at it sends it."""

    endpoint: Endpoint
    request: GenerationRequest
    body: bytes
    request_id: str
    generation: Generation
    strip_usage: bool
    key: RouteKey
    priority: int  # the admission queue's order: the key's, else the request's
    ticket: Ticket  # its tenant's turn within that priority
    #: Its hold on its key's limits, if the key has any.
    reservation: Reservation | None = None
    #: How the engine's answer becomes the one the client's API promises (Mistral's dialect).
    reshape: MistralAnswer | None = None
    #: Its engine said it has no such adapter once, and loaded it again (at most once).
    adapter_reloaded: bool = False
    #: The request as the engine reads it (a continuation copies its sampling settings).
    document: dict[str, Any] = field(default_factory=dict)
    #: A stream that can go on from another engine if its own fails (gateway/migration.py).
    movable: bool = False
    #: Times its stream went on from another engine.
    migrations: int = 0

    @property
    def limit_headers(self) -> RawHeaders:
        """x-ratelimit-* of a limited key (encoded), on every answer."""
        return self.reservation.headers if self.reservation is not None else []


#: How often the lines move while requests wait for room other workers hold.
SIBLING_POLL_S = 0.005


@dataclass(frozen=True)
class RetryAdvice:
    """How long clients are told to wait when no engine is ready."""

    seconds: int = 5


class Gateway:
    def __init__(
        self,
        registry: EngineRegistry,
        client: EngineClient,
        policy: RoutingPolicy,
        *,
        admission: AdmissionLimits | None = None,
        authenticator: Authenticator | None = None,
        observer: GenAIObserver | None = None,
        accounting: Accounting | None = None,
        retry: RetryAdvice = RetryAdvice(),
        fim: FimEncoder | None = None,
        workers: tuple[int, int] = (0, 1),
        adapters: AdapterKeeper | None = None,
        migration_limit: int = 1,
    ) -> None:
        self._registry = registry
        self._workers = workers  # (this worker's index, how many serve the port)
        self._accounting = accounting or Accounting()
        self._authenticator = authenticator
        self._client = client
        self._policy = policy
        self._observer = observer or GenAIObserver(disabled_telemetry())
        self._retry = retry
        #: How many times one stream may go on from another engine (ENGINE_MIGRATION_LIMIT).
        self._migration_limit = migration_limit
        self._cards = CardMaker()
        self._fim = fim or FimEncoder()
        #: Loads LoRA adapters where requests need them (None: only engines holding one serve it).
        self._adapters = adapters
        limits = admission or AdmissionLimits()
        self.admission: Admission[Lease] = Admission(limits, release=Lease.release)
        self._sibling_watch: asyncio.Task[None] | None = None
        registry.on_capacity(self._capacity_changed)

    # -- generation --------------------------------------------------------------------------
    async def generate(
        self,
        endpoint: Endpoint,
        body: bytes,
        request_id: str,
        *,
        session: str | None = None,
        authorization: str | None = None,
        client: str | None = None,
    ) -> GatewayResponse:
        """Answer one request. ``session``: the client's x-session-id header, if any;
        ``authorization``: its Authorization header; ``client``: its address (anonymous
        traffic takes its turns in the line by it)."""
        generation = self._observer.start(endpoint.operation, request_id, endpoint.route)

        async def work() -> GatewayResponse:
            caller = await self.authenticate(authorization)
            generation.caller(caller.key_id)
            document = decode_body(body)
            return await self._generate(
                endpoint, document, body, request_id, generation, session, caller, client
            )

        return await self._observed(generation, work())

    async def generate_chat(
        self,
        caller: Caller,
        document: dict[str, Any],
        request_id: str,
        *,
        session: str | None,
        answer_id: str,
        conversation_id: str | None = None,
        endpoint: Endpoint = Endpoint.RESPONSES,
        client: str | None = None,
        batch_id: str | None = None,
    ) -> GatewayResponse:
        """A chat completion made by the gateway itself for an API built on chat (the
        Responses API): ``document`` is the chat request, ``caller`` already known. It runs
        exactly as a client's chat request does (limits, admission, routing by ``session``,
        ledger, span), under ``endpoint``'s path, the span naming ``answer_id`` and
        ``conversation_id``; ``batch_id``: as one request of that batch job (see
        :meth:`generate_batch`)."""
        return await self._generate_as(
            caller,
            endpoint,
            document,
            request_id,
            session=session,
            client=client,
            batch_id=batch_id,
            answer=(answer_id, conversation_id),
        )

    async def generate_batch(
        self,
        caller: Caller,
        endpoint: Endpoint,
        document: dict[str, Any],
        request_id: str,
        *,
        batch_id: str,
    ) -> GatewayResponse:
        """One request of a batch job (:mod:`mistral_serve.batch`), run as a client's request
        is (limits, routing, ledger, span) but after every interactive one: at
        :data:`BATCH_PRIORITY` in the admission line and in the engine's own scheduler, as
        the batch's tenant; its span and ledger row name the batch."""
        return await self._generate_as(caller, endpoint, document, request_id, batch_id=batch_id)

    async def _generate_as(
        self,
        caller: Caller,
        endpoint: Endpoint,
        document: dict[str, Any],
        request_id: str,
        *,
        session: str | None = None,
        client: str | None = None,
        batch_id: str | None = None,
        answer: tuple[str, str | None] | None = None,
    ) -> GatewayResponse:
        """A request the gateway makes itself for a known caller (``answer``: the ids the
        client knows it by)."""
        generation = self._observer.start(endpoint.operation, request_id, endpoint.route)
        generation.caller(caller.key_id)
        if answer is not None:
            generation.answered_as(*answer)
        if batch_id is not None:
            generation.batch(batch_id)
            document = {**document, "priority": BATCH_PRIORITY}
        work = self._generate(
            endpoint,
            document,
            orjson.dumps(document),
            request_id,
            generation,
            session,
            caller,
            client,
            batch_id=batch_id,
        )
        return await self._observed(generation, work)

    @staticmethod
    async def _observed(
        generation: Generation, work: Coroutine[Any, Any, GatewayResponse]
    ) -> GatewayResponse:
        """``work``'s answer; its failure (or the client leaving) is the generation's end."""
        try:
            return await work
        except MistralServeError as error:
            generation.failed(error)
            raise
        except asyncio.CancelledError:
            generation.client_left()
            raise
        except Exception:
            generation.failed(MistralServeError("unexpected error"))
            raise

    async def _generate(
        self,
        endpoint: Endpoint,
        document: dict[str, Any],
        body: bytes,
        request_id: str,
        generation: Generation,
        session: str | None,
        caller: Caller,
        client: str | None,
        *,
        batch_id: str | None = None,
    ) -> GatewayResponse:
        request = validate_request(endpoint, document)
        generation.request(request)
        Authenticator.check_model(caller, request.model)
        self._check_kind(endpoint, request.model)
        reshape: MistralAnswer | None = None
        translation = await self._translate(endpoint, request, document)
        if translation is not None:  # Mistral's dialect: the engine gets OpenAI's
            document, body, reshape = (
                translation.document,
                orjson.dumps(translation.document),
                translation.answer,
            )
            request = validated(endpoint.engine_schema, document)
            generation.request(request, as_sent=False)  # random_seed is the engine's seed
        strip_usage = request.is_stream and not (
            request.stream_options and request.stream_options.include_usage
        )
        if strip_usage:
            body = usage_requested(body, document)
        session = session or request.prompt_cache_key or request.user
        key = route_key(request.model, document, session=session)
        priority = caller.priority if caller.priority is not None else request.priority or 0
        tenant, weight = caller.tenant(request.user, client), caller.weight
        if batch_id is not None:
            # After everyone, as a tenant of its own whose fair share is next to nothing: while
            # it fills the engines, any interactive request is under its share and may start in
            # their headroom (admission/queue.py) instead of waiting for a batch request to end.
            priority, tenant, weight = BATCH_PRIORITY, f"batch:{batch_id}", MIN_WEIGHT
        accounting = self._accounting
        ticket = Ticket(tenant, weight, accounting.reserved_tokens(request, key.size))
        movable = (
            request.is_stream and self._migration_limit > 0 and why_not(request, document) is None
        )
        if movable:  # its engine's token ids are what a continuation carries
            body = with_token_ids(body)
        call = _Call(
            endpoint, request, body, request_id, generation, strip_usage, key, priority, ticket
        )
        call.reshape, call.document, call.movable = reshape, document, movable
        if accounting.active:
            generation.on_end(  # settles the reservation, writes the ledger row
                lambda ended: accounting.ended(ended, caller, request, key.size, call.reservation)
            )
            call.reservation = await accounting.reserve(caller, request, request_id, key.size)
        try:
            return await self._serve(call)
        except MistralServeError as error:
            error.extra_headers.update(text_headers(call.limit_headers))
            raise

    def _check_kind(self, endpoint: Endpoint, model: str) -> None:
        """A chat model asked for embeddings, or an embedding model asked to generate: a 400
        naming the model, before anything is spent on it."""
        kind = self._registry.model_kind(model)
        if kind is None or kind == endpoint.kind:
            return
        if kind == "embed":
            message = f"The model `{model}` is an embedding model: it answers /v1/embeddings only."
        else:
            message = (
                f"The model `{model}` generates text and makes no embeddings: ask an embedding "
                "model (GET /v1/models lists them)."
            )
        raise InvalidRequestError(message, param="model")

    async def _translate(
        self, endpoint: Endpoint, request: GenerationRequest, document: dict[str, Any]
    ) -> Translation | None:
        if endpoint is Endpoint.CHAT:
            return translate(document)
        if endpoint is Endpoint.EMBEDDINGS:
            return embeddings.translate(document)
        with_suffix = endpoint is Endpoint.COMPLETIONS and document.get("suffix") is not None
        if endpoint is not Endpoint.FIM and not with_suffix:
            return None
        if not self._registry.is_known(request.model):
            raise self._no_engine(request.model)
        root = self._registry.model_root(request.model)
        if endpoint is Endpoint.FIM:
            return await self._fim.translate(document, root)
        return await self._fim.completion_with_suffix(document, root)

    async def _serve(self, call: _Call) -> GatewayResponse:
        """Admit, route and proxy the request, moving it once if its engine fails early."""
        request, request_id, generation = call.request, call.request_id, call.generation
        tried: set[Engine] = set()  # engines hash by identity
        moved = False
        lease = await self._admit(call)
        while True:
            tried.add(lease.engine)
            try:
                return await self._attempt(call, lease)
            except EngineError as error:
                lease.finish(error)
                # Nothing has reached the client: another engine may take the request. A refused
                # connection never reached an engine, so it does not use up the one move.
                refused = isinstance(error, EngineConnectError)
                if (refused or not moved) and self._another_candidate(request.model, tried):
                    generation.upstream_failed(error)
                    log.info(
                        "request %s: moved off %s: %s", request_id, lease.engine.name, error.message
                    )
                    moved = moved or not refused
                    left = lease.engine.name
                    # A move is not a new admission: it was admitted once, and waits for nobody.
                    lease = self._start(call, exclude=tried, within_target=False)
                    if not refused:  # it reached an engine: sent again whole, nothing was sent
                        generation.migrated(left, lease.engine.name, 0, "restarted")
                    continue
                raise
            except BaseException:
                lease.release()
                raise

    async def _attempt(self, call: _Call, lease: Lease) -> GatewayResponse:
        """Send the request to the lease's engine and answer from it; the lease ends with the
        answer (a stream's, when the stream ends). Raises EngineError while nothing has been
        sent to the client."""
        engine, generation = lease.engine, call.generation
        if lease.adapter is not None and self._adapters is not None:
            waited = await self._adapters.ready(engine, lease.adapter)
            if waited is not None:
                generation.adapter_waited(waited)
        url = engine.url + call.endpoint.path
        headers = {
            "content-type": JSON,
            "x-request-id": call.request_id,
            **generation.upstream_started(engine.name, url),
        }
        upstream = await lease.send(self._client, url, call.body, headers)
        generation.upstream_answered(upstream.status)
        if upstream.status != 200:
            body = await upstream.read()
            if self._adapter_lost(call, lease, upstream.status, body):
                return await self._attempt(call, lease)  # loaded again, then sent again
            body = _named_for_the_client(body, call.endpoint)
            refusal = self._engine_refusal(upstream.status, body, lease, generation)
            refusal.raw_headers = call.limit_headers
            return refusal
        if call.request.is_stream and upstream.content_type.startswith(sse.MEDIA_TYPE):
            trail = None
            if call.movable:
                trail = TokenTrail(shown=call.document.get("return_token_ids") is True)
            stream = ProxyStream(
                upstream,
                generation,
                strip_usage=call.strip_usage,
                lease=lease,
                request_id=call.request_id,
                reshape=call.reshape,
                trail=trail,
                mover=partial(self._migrate, call, trail) if trail is not None else None,
            )
            await stream.start()
            headers = {**sse.STREAM_HEADERS, **timing_headers(generation.timings, streamed=True)}
            return GatewayResponse(
                200, sse.MEDIA_TYPE, headers, stream=stream, raw_headers=call.limit_headers
            )
        payload = await upstream.read()
        lease.finish()
        report_answer(generation, payload)
        generation.succeeded()
        if call.reshape is not None:
            payload = reshaped(call.reshape, payload)
        headers = timing_headers(generation.timings, streamed=False)
        return GatewayResponse(
            200, upstream.content_type, headers, body=payload, raw_headers=call.limit_headers
        )

    async def _migrate(
        self, call: _Call, trail: TokenTrail, failed: Lease, error: MistralServeError
    ) -> Moved | None:
        """A stream's engine failed after it began: go on from another ready engine of its
        model with the prompt and exactly the tokens sent (gateway/migration.py); None when it
        cannot (no other engine, no move left, nothing known yet to continue from)."""
        generation = call.generation
        generation.upstream_failed(error)
        if call.migrations >= self._migration_limit or not trail.ready:
            generation.migrated(failed.engine.name, None, 0, "impossible")
            return None
        cards = failed.engine.model_cards
        lengths = [c.get("max_model_len") for c in cards if c.get("id") == call.request.model]
        continuation = Continuation(
            call.request, call.document, trail, lengths[0] if lengths else None
        )
        if continuation.remaining <= 0:
            generation.migrated(failed.engine.name, None, len(continuation.carried), "impossible")
            return None
        try:
            lease = self._start(call, exclude={failed.engine}, within_target=False)
        except MistralServeError:  # no other engine serves the model now
            generation.migrated(failed.engine.name, None, len(continuation.carried), "impossible")
            return None
        assert lease is not None  # not held to the target: there is always a lease
        call.migrations += 1
        url = lease.engine.url + Endpoint.COMPLETIONS.path
        headers = {
            "content-type": JSON,
            "x-request-id": call.request_id,
            **generation.upstream_started(lease.engine.name, url),
        }
        try:
            upstream = await lease.send(self._client, url, continuation.body(), headers)
            generation.upstream_answered(upstream.status)
            if upstream.status != 200:
                answer = await upstream.read()
                raise EngineError(
                    f"The engine failed ({upstream.status}): {engine_message(answer)}"
                )
        except EngineError as second:
            lease.finish(second)
            generation.upstream_failed(second)
            generation.migrated(failed.engine.name, None, len(continuation.carried), "impossible")
            return None
        except BaseException:
            lease.release()
            raise
        generation.migrated(
            failed.engine.name, lease.engine.name, len(continuation.carried), "continued"
        )
        return Moved(upstream, lease, continuation)

    def _adapter_lost(self, call: _Call, lease: Lease, status: int, body: bytes) -> bool:
        """Whether the engine answered that it has no such model for an adapter this gateway
        thought it held (another gateway evicted it since the last listing); once a request,
        the adapter is then loaded again there."""
        adapter = lease.adapter
        if status != 404 or adapter is None or self._adapters is None or call.adapter_reloaded:
            return False
        if f"`{adapter}`".encode() not in body and f"'{adapter}'".encode() not in body:
            return False
        call.adapter_reloaded = True
        self._adapters.lost(lease.engine, adapter)
        return True

    def _another_candidate(self, model: str, tried: set[Engine]) -> bool:
        return any(engine not in tried for engine in self._registry.candidates(model))

    # -- admission and routing -----------------------------------------------------------------
    async def _admit(self, call: _Call) -> Lease:
        """A lease on the engine chosen for ``call``, at once or after waiting in line."""
        model = call.request.model
        if not self._registry.is_known(model):  # no line is made for a name nobody serves
            raise self._no_engine(model)
        queue = self.admission.queue(model)
        started = time.perf_counter()
        outcome = "rejected"
        try:
            lease = await queue.admit(
                lambda headroom: self._start(call, within_target=True, headroom=headroom),
                call.priority,
                call.ticket,
            )
            outcome = "admitted"
            call.generation.on_end(lambda ended: queue.ended(call.ticket))
            return lease
        except asyncio.CancelledError:
            outcome = "abandoned"  # the client left while waiting
            raise
        finally:
            call.generation.queued(time.perf_counter() - started, outcome)

    def _start(
        self,
        call: _Call,
        *,
        exclude: set[Engine] | None = None,
        within_target: bool,
        headroom: bool = False,
    ) -> Lease | None:
        """A lease on the engine the policy chooses among the ready ones serving the model
        (below their concurrency target, ``within_target``, or past it into the fair
        headroom, ``headroom``); None when all are at it. Raises when no engine can serve the
        model at all."""
        model, registry = call.request.model, self._registry
        candidates = registry.candidates(model)
        adapter = model if model in registry.adapter_catalog else None
        if adapter is not None and self._adapters is None:  # nothing here can load it
            candidates = [engine for engine in candidates if engine.holds(adapter)]
        if exclude:
            candidates = [engine for engine in candidates if engine not in exclude]
        if not candidates:
            raise self._no_engine(model)
        with registry.choosing():  # the load read and the lease: one worker at a time
            now = time.monotonic()
            if within_target:
                candidates = [e for e in candidates if registry.has_room(e, now, headroom=headroom)]
                if not candidates:
                    self._watch_siblings()
                    return None
            load = False
            if adapter is not None:
                route = self._route_adapter(candidates, adapter, now, within_target)
                if route is None:
                    return None  # every engine of the base is busy with its adapters: wait
                candidates, load = route.engines, route.load
            decision = self._policy.choose(candidates, call.key, now)
            if load:
                decision = replace(decision, reason=ADAPTER_LOAD)
            lease = registry.lease(decision.engine, call.key.size, adapter)
        if load and self._adapters is not None:
            self._adapters.begin(decision.engine, model)
        call.generation.routed(
            self._policy.name, decision.engine.name, decision.reason, decision.prefix_share
        )
        if adapter is not None:
            call.generation.adapter(adapter, resident=not load)
        return lease

    def _route_adapter(
        self, candidates: list[Engine], adapter: str, now: float, within_target: bool
    ) -> AdapterRoute | None:
        """Where a request for a LoRA adapter may go (routing/adapters.py). A request moving
        off a failed engine does not wait: with no room anywhere, the least loaded engine
        loads it anyway (vLLM then swaps adapters itself)."""
        max_age_s = self._registry.stats_max_age_s

        def load_of(engine: Engine) -> float:
            return engine.load(now, max_age_s)

        route = route_adapter(candidates, adapter, load_of)
        if route is None and not within_target:
            engine = min(candidates, key=load_of)
            route = AdapterRoute([engine], load=not engine.holds(adapter))
        return route

    def _watch_siblings(self) -> None:
        """Requests wait for room that other workers hold: their ends are not seen here, so
        the lines are moved every few milliseconds while anything waits (no timer otherwise)."""
        if self._registry.shared is None or self._sibling_watch is not None:
            return

        async def watch() -> None:
            try:
                while any(self.admission.depths().values()):
                    await asyncio.sleep(SIBLING_POLL_S)
                    self.admission.wake(set(self.admission.depths()))
            finally:
                self._sibling_watch = None

        self._sibling_watch = asyncio.get_running_loop().create_task(watch())

    def _no_engine(self, model: str) -> MistralServeError:
        if not self._registry.ready_engines() or self._registry.is_known(model):
            return NoReadyEngineError(
                f"No engine serving `{model}` is ready; try again shortly.",
                retry_after_s=self._retry.seconds,
            )
        return ModelNotFoundError(model)

    def _capacity_changed(self, engine: Engine, request_ended: bool) -> None:
        """An engine may take more work (or left rotation): its models' lines move."""
        lines = self._registry.lines_of(engine)
        if request_ended:
            self.admission.completed(lines)
        else:
            self.admission.wake(lines)

    def drain(self) -> None:
        """Shutting down: requests waiting for an engine are answered 503 now."""
        self.admission.close()

    @staticmethod
    def _engine_refusal(
        status: int, body: bytes, lease: Lease, generation: Generation
    ) -> GatewayResponse:
        """An engine's own error: its 4xx reaches the client intact (the engine is fine, the
        request was not); a 5xx is an EngineError (a 502, unless another engine takes it)."""
        if 400 <= status < 500:
            lease.finish()
            generation.engine_refused(status)
            return GatewayResponse(status, JSON, body=body)
        raise EngineError(f"The engine failed ({status}): {engine_message(body)}")

    # -- tokens ------------------------------------------------------------------------------
    async def tokens(
        self,
        path: str,
        body: bytes,
        request_id: str,
        *,
        authorization: str | None = None,
        caller: Caller | None = None,
    ) -> GatewayResponse:
        """``/tokenize`` or ``/detokenize`` (``path``) by the model's own tokenizer: passed to
        the least loaded ready engine of the model (every worker's requests and other
        gateways' counted), as sent. Light work for an engine: no
        admission line, no ledger row; the key and its model allow-list hold as for
        generation."""
        schema = TokenizeRequest if path == "/tokenize" else DetokenizeRequest
        document = decode_body(body)
        request = validated(schema, document)
        if caller is None:  # else known already (a request the gateway makes for a key)
            caller = await self.authenticate(authorization)
        Authenticator.check_model(caller, request.model)
        registry = self._registry
        candidates = registry.candidates(request.model)
        if not candidates:
            raise self._no_engine(request.model)
        adapter = registry.adapter_catalog.get(request.model)
        if adapter is not None:  # an adapter tokenizes as its base does (vLLM: the base's)
            holders = [engine for engine in candidates if request.model in engine.adapters]
            if holders:
                candidates = holders
            else:  # no engine lists it now: ask for the base, rather than load it for this
                body = orjson.dumps({**document, "model": adapter.base})
        with registry.choosing():
            now = time.monotonic()
            engine = min(candidates, key=lambda each: each.load(now, registry.stats_max_age_s))
            lease = registry.lease(engine)
        headers = {"content-type": JSON, "x-request-id": request_id}
        try:
            upstream = await lease.send(self._client, engine.url + path, body, headers)
            answer = await upstream.read()
        except EngineError as error:
            lease.finish(error)
            raise
        except BaseException:
            lease.release()
            raise
        if upstream.status >= 500:
            failed = EngineError(f"The engine failed ({upstream.status}): {engine_message(answer)}")
            lease.finish(failed)  # judged as a generation's 5xx is
            raise failed
        lease.finish()
        return GatewayResponse(upstream.status, JSON, body=answer)

    # -- callers, models and readiness -------------------------------------------------------
    async def authenticate(self, authorization: str | None) -> Caller:
        """Who sent a request with this Authorization header (raises InvalidApiKeyError)."""
        if self._authenticator is None:
            return ANYONE
        return await self._authenticator.authenticate(authorization)

    async def models(self, authorization: str | None = None) -> dict[str, Any]:
        """The models of the ready engines that the caller may use."""
        caller = await self.authenticate(authorization)
        return {"object": "list", "data": self._cards_for(caller)}

    async def model(self, model_id: str, authorization: str | None = None) -> dict[str, Any]:
        """One model's card (a 404 when no ready engine serves it for this caller)."""
        for card in self._cards_for(await self.authenticate(authorization)):
            if card["id"] == model_id:
                return card
        raise ModelNotFoundError(model_id)

    def check_model(self, caller: Caller, model: str) -> None:
        """The caller may use ``model`` and an engine serves it (raises the 403, 404 or 503
        a request for it would get)."""
        Authenticator.check_model(caller, model)
        if not self._registry.is_known(model):
            raise self._no_engine(model)

    def check_batch(self, caller: Caller, endpoint: Endpoint, model: str) -> None:
        """A batch of ``endpoint`` requests for ``model`` could run: the caller may use the
        model, an engine serves it, and it is the right kind (raises the 4xx that each of its
        requests would get)."""
        self.check_model(caller, model)
        self._check_kind(endpoint, model)

    def batch_capacity(self, model: str) -> tuple[int, int, int]:
        """The model's engine slots (their concurrency targets), how many are free now (every
        gateway's requests counted), and how many requests wait in its line: what a batch
        may take (batch/share.py)."""
        registry, now = self._registry, time.monotonic()
        engines = registry.candidates(model)
        slots = sum(engine.max_inflight for engine in engines)
        free = sum(
            max(0, engine.max_inflight - math.ceil(engine.load(now, registry.stats_max_age_s)))
            for engine in engines
        )
        return slots, free, self.admission.depths().get(model, 0)

    def on_capacity(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever an engine may take more work."""
        self._registry.on_capacity(lambda engine, ended: listener())

    def card(self, model: str) -> dict[str, Any] | None:
        """The model's card (capabilities, ``max_context_length``) if a ready engine serves it."""
        for card in self._cards.cards(self._registry.model_cards()):
            if card["id"] == model:
                return card
        return None

    def _cards_for(self, caller: Caller) -> list[dict[str, Any]]:
        cards = self._cards.cards(self._registry.model_cards())
        return [card for card in cards if caller.may_use(card["id"])]

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        engines = self._registry.readiness()
        ready = any(engine["ready"] for engine in engines)
        detail = {
            "status": "ready" if ready else "not ready",
            "routing_policy": self._policy.name,
            "engines": engines,
            "waiting": self.admission.depths(),
            # Who waits, in the order their priorities are served: counts, never secrets.
            "queues": {
                model: [share._asdict() for share in shares]
                for model, shares in self.admission.shares().items()
            },
        }
        index, count = self._workers
        if count > 1:  # engines' outstanding counts are every worker's; waiting is this one's
            detail["workers"] = {"count": count, "this": index}
        return ready, detail

    def queued_tenants(self) -> list[QueuedTenant]:
        """Every tenant waiting in a line, for the metrics."""
        return [
            QueuedTenant(model, share.tenant, share.priority, share.waiting, share.share)
            for model, shares in self.admission.shares().items()
            for share in shares
        ]

    @property
    def retry_after_s(self) -> int:
        return self._retry.seconds


#: The names vLLM gives a request's text in its length errors.
_VLLM_TEXT_PARAMS = ("input_tokens", "input_text")


def _named_for_the_client(body: bytes, endpoint: Endpoint) -> bytes:
    """An engine's error about the request's length, naming the client's own field
    (``messages``, ``prompt``, ``input``) where vLLM names its internal one, as an OpenAI
    ``invalid_request_error``; any other body as it is."""
    try:
        error = orjson.loads(body)["error"]
        if error.get("param") not in _VLLM_TEXT_PARAMS:
            return body
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return body
    error = {**error, "param": endpoint.text_field, "type": "invalid_request_error"}
    return orjson.dumps({"error": error})
