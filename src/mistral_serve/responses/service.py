"""The Responses API: ``/v1/responses`` and its stored responses.

A response is a chat completion the gateway asks for on the client's behalf: its context
(every earlier response of its chain, in order, then its new input) becomes chat messages
(:mod:`~mistral_serve.responses.items`), its fields chat's
(:mod:`~mistral_serve.responses.translate`), and the chat request runs through the gateway's
pipeline exactly as a client's would: the caller's limits, admission, routing (the chain's
first response is the routing session, so a chain stays on the engine holding its prefix),
the ledger (endpoint ``/v1/responses``) and the span (``gen_ai.response.id`` is the
response's). The answer comes back as the response object, or as the Responses API's events.

Stored responses (``store``, the default) live in the gateway's store, so any gateway, after
any restart, continues a chain (``previous_response_id``) on any engine; each key sees only
its own.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import orjson

from mistral_serve.errors import InvalidRequestError, NotFoundError
from mistral_serve.gateway.pipeline import JSON, Gateway, decode_body, validated
from mistral_serve.gateway.responses import GatewayResponse
from mistral_serve.protocol import sse as sse_framing
from mistral_serve.protocol.openai import with_usage_requested
from mistral_serve.protocol.openai_responses import (
    InputTokensRequest,
    ResponseRequest,
)
from mistral_serve.responses.background import BackgroundRuns, ChatStarter, stored_events
from mistral_serve.responses.conversations import Conversations
from mistral_serve.responses.events import ResponseEvents
from mistral_serve.responses.items import Item, chat_messages, input_items, new_id
from mistral_serve.responses.output import Frame, output_of, usage_of
from mistral_serve.responses.pages import Page, page_of
from mistral_serve.responses.stream import ChatEvents, ResponseStream
from mistral_serve.responses.translate import chat_document
from mistral_serve.responses.truncation import fitted
from mistral_serve.responses.writer import ResponseWriter
from mistral_serve.store import WallClock, utc_now
from mistral_serve.store.responses import RUNNING, ResponseRecords, StoredResponse
from mistral_serve.tenancy.auth import Caller


@dataclass(frozen=True)
class ResponsesOptions:
    """RESPONSES_STORE and RESPONSES_TTL_DAYS."""

    store: bool = True
    ttl: timedelta = timedelta(days=30)
    lost_after_s: float = 30.0


def not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"No response with id `{response_id}` was found.", param="response_id")


@dataclass
class _Context:
    """What a new response reads: the chain before it, and its own new items."""

    earlier: list[Item]
    new: list[Item]
    previous_response_id: str | None
    root_id: str | None
    conversation_id: str | None


class Responses:
    def __init__(
        self,
        gateway: Gateway,
        records: ResponseRecords | None,
        options: ResponsesOptions = ResponsesOptions(),
        *,
        conversations: Conversations | None = None,
        clock: WallClock = utc_now,
    ) -> None:
        self._gateway = gateway
        self._records = records if options.store else None
        self._conversations = conversations or Conversations(gateway, None)
        self._options = options
        self._clock = clock
        self._writer = ResponseWriter(self._records) if self._records is not None else None
        #: The background responses this gateway runs (None: nothing is stored).
        self._runs = (
            BackgroundRuns(self._records, clock, lost_after_s=options.lost_after_s)
            if self._records is not None
            else None
        )

    def start(self) -> None:
        """Look for background responses lost with their gateway (from now on)."""
        if self._runs is not None:
            self._runs.watch()

    async def stop(self, grace_s: float) -> None:
        """Let this gateway's background responses finish for up to ``grace_s``, then fail
        the rest."""
        if self._runs is not None:
            await self._runs.stop(grace_s)

    # -- create --------------------------------------------------------------------------------
    async def create(
        self, body: bytes, request_id: str, *, authorization: str | None, client: str | None = None
    ) -> GatewayResponse:
        """``client``: the caller's address (anonymous traffic's turn in admission)."""
        request: ResponseRequest = validated(ResponseRequest, decode_body(body))
        caller = await self._gateway.authenticate(authorization)
        return await self.create_for(caller, request, request_id, client=client)

    async def create_for(
        self,
        caller: Caller,
        request: ResponseRequest,
        request_id: str,
        *,
        client: str | None = None,
        batch_id: str | None = None,
    ) -> GatewayResponse:
        """A response for a known caller (``batch_id``: one request of that batch job, run
        after every interactive request; never in the background)."""
        if batch_id is not None and request.background:
            raise InvalidRequestError(
                "background: a batch's responses are not run in the background.",
                param="background",
            )
        self._check_storage(request)
        self._gateway.check_model(caller, request.model)
        context = await self._context(request, caller)
        frame = Frame(
            new_id("resp"),
            self._now(),
            request,
            context.previous_response_id,
            context.conversation_id,
        )
        messages = chat_messages([*context.earlier, *context.new], request.instructions)
        # The model's card only when a field needs it (making it reads every engine's card).
        card = self._card(request) if request.reasoning or request.truncation == "auto" else {}
        reasons = bool((card.get("capabilities") or {}).get("reasoning"))
        document = chat_document(request, messages, reasons=reasons)
        context_length = card.get("max_context_length")
        if request.truncation == "auto" and isinstance(context_length, int):

            async def count(candidate: dict[str, Any]) -> int:
                return await count_tokens(self._gateway, candidate, caller)

            document["messages"] = await fitted(
                document, context_length, count, keep_first=bool(request.instructions)
            )
        root_id = context.root_id or frame.id

        def chat(streamed: bool) -> Coroutine[Any, Any, GatewayResponse]:
            """The chat request through the pipeline, the chain's first response (or the
            conversation, or the client's prompt_cache_key) its routing session."""
            sent = with_usage_requested({**document, "stream": True}) if streamed else document
            return self._gateway.generate_chat(
                caller,
                sent,
                request_id,
                session=request.prompt_cache_key or root_id,
                answer_id=frame.id,
                conversation_id=context.conversation_id or root_id,
                client=client,
                batch_id=batch_id,
            )

        if request.background:
            return await self._background(request, caller, frame, context, partial(chat, True))
        answer = await chat(bool(request.stream))
        if answer.status != 200:
            return answer  # the engine's own 4xx (or a limit's), as chat's would be
        stored = None
        if request.stores or context.conversation_id is not None:
            stored = _Storing(self, caller, frame, context.new, root_id, keep=request.stores)
        if answer.stream is not None:
            return self._streamed(answer, frame, stored)
        return await self._answered(answer, frame, stored)

    async def _background(
        self,
        request: ResponseRequest,
        caller: Caller,
        frame: Frame,
        context: _Context,
        start: ChatStarter,
    ) -> GatewayResponse:
        """Store the response as queued and run it in a task (responses/background.py), its
        chat streamed (``start``): the answer is the queued response, or a stream that follows
        the run."""
        assert self._runs is not None  # _check_storage: background responses are stored
        root_id = context.root_id or frame.id
        events = ResponseEvents(frame, status="queued")
        storing = _Storing(self, caller, frame, context.new, root_id, keep=True)
        await storing.put(events.snapshot())
        opening = [events.created(), events.queued()]
        run = self._runs.start(events, opening, start, ended=storing.extend_conversation)
        if not request.stream:
            return GatewayResponse(200, JSON, body=orjson.dumps(opening[0]["response"]))
        return _event_stream(ResponseStream(run.follow(after=-1)))

    def _card(self, request: ResponseRequest | InputTokensRequest) -> dict[str, Any]:
        return self._gateway.card(request.model) or {}

    def _check_storage(self, request: ResponseRequest) -> None:
        if request.background and not request.stores:
            raise InvalidRequestError(
                "background: a background response is stored (send `store: true`, the "
                "default), so that it can be retrieved and cancelled.",
                param="background",
            )
        if self._records is not None:
            return
        if request.stores:
            raise InvalidRequestError(
                "store: responses are not stored on this server (RESPONSES_STORE=off): send "
                "`store: false`.",
                param="store",
            )
        if request.previous_response_id is not None:
            raise InvalidRequestError(
                "previous_response_id: responses are not stored on this server "
                "(RESPONSES_STORE=off): send the whole conversation as `input`.",
                param="previous_response_id",
            )

    async def _context(self, request: ResponseRequest, caller: Caller) -> _Context:
        new = input_items(request.input)
        earlier: list[Item] = []
        root_id = None
        previous = request.previous_response_id
        conversation = request.conversation_id
        if conversation is not None:
            if previous is not None:
                raise InvalidRequestError(
                    "conversation: continue a conversation or a previous response, not both.",
                    param="conversation",
                )
            await self._conversations.owned(conversation, caller, param="conversation")
            earlier = await self._conversations.items_of(conversation)
            if not new and not earlier:
                raise InvalidRequestError("input: a response needs some input.", param="input")
            return _Context(earlier, new, None, conversation, conversation)
        if previous is not None:
            assert self._records is not None  # _check_storage
            chain = await self._records.chain(previous, caller.owner)
            if chain is None:
                raise NotFoundError(
                    f"No response with id `{previous}` was found.", param="previous_response_id"
                )
            for stored in chain:
                earlier += stored.input_items
                earlier += stored.response.get("output") or []
            root_id = chain[0].root_id
        if not new and not earlier:
            raise InvalidRequestError("input: a response needs some input.", param="input")
        return _Context(earlier, new, previous, root_id, None)

    async def _answered(
        self, answer: GatewayResponse, frame: Frame, stored: _Storing | None
    ) -> GatewayResponse:
        completion = orjson.loads(answer.body)
        output, incomplete = output_of(completion)
        response = frame.response(
            "incomplete" if incomplete else "completed",
            output,
            usage_of(completion.get("usage")),
            incomplete_reason=incomplete,
            completed_at=self._now(),
        )
        if stored is not None:
            await stored.write(response)
        return GatewayResponse(
            200, JSON, answer.headers, body=orjson.dumps(response), raw_headers=answer.raw_headers
        )

    def _streamed(
        self, answer: GatewayResponse, frame: Frame, stored: _Storing | None
    ) -> GatewayResponse:
        assert answer.stream is not None
        events = ResponseEvents(frame)
        opening = [events.created(), *events.in_progress()]

        async def ended(finished: ResponseEvents) -> None:
            if stored is not None:
                await stored.write(finished.final())

        chat = ChatEvents(answer.stream, events, ended=ended, clock=self._now)
        stream = ResponseStream(chat.__aiter__(), opening=opening, close=chat.aclose)
        headers = {**answer.headers, **sse_framing.STREAM_HEADERS}
        return GatewayResponse(
            200, sse_framing.MEDIA_TYPE, headers, stream=stream, raw_headers=answer.raw_headers
        )

    def _now(self) -> int:
        return int(self._clock().timestamp())

    # -- stored responses ----------------------------------------------------------------------
    async def retrieve(self, response_id: str, *, authorization: str | None) -> dict[str, Any]:
        stored = await self._stored(response_id, authorization)
        run = self._runs.get(response_id) if self._runs is not None else None
        return run.events.final() if run is not None else stored.response

    async def resume(
        self, response_id: str, after: int, *, authorization: str | None
    ) -> GatewayResponse:
        """A background response's stream from after sequence number ``after``: followed in
        memory when it runs here, else from the store."""
        stored = await self._stored(response_id, authorization)
        if not stored.response.get("background"):
            raise InvalidRequestError(
                "stream: only a background response's stream can be resumed.", param="stream"
            )
        assert self._records is not None and self._runs is not None
        run = self._runs.get(response_id)
        source = (
            run.follow(after) if run is not None else stored_events(self._records, stored, after)
        )
        return _event_stream(ResponseStream(source))

    async def cancel(self, response_id: str, *, authorization: str | None) -> dict[str, Any]:
        """Cancel a background response (its engine request is aborted); a response already
        over is given back as it is."""
        stored = await self._stored(response_id, authorization)
        if not stored.response.get("background"):
            raise InvalidRequestError(
                "Only a background response can be cancelled.", param="response_id"
            )
        assert self._records is not None and self._runs is not None
        cancelled = await self._runs.cancel(response_id)
        if cancelled is not None:  # it ran here
            return cancelled
        if stored.status not in RUNNING:
            return stored.response
        # Another gateway runs it: the store says cancelled, and its next write stops it.
        response = {**stored.response, "status": "cancelled"}
        if await self._records.advance(response_id, "cancelled", response, key_id=stored.key_id):
            return response
        return (await self._stored(response_id, authorization)).response

    async def delete(self, response_id: str, *, authorization: str | None) -> dict[str, Any]:
        caller = await self._gateway.authenticate(authorization)
        if self._records is None or not await self._records.delete(response_id, caller.owner):
            raise not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def input_items(
        self, response_id: str, page: Page, *, authorization: str | None
    ) -> dict[str, Any]:
        """The response's own input items, a page at a time (OpenAI's cursor pagination)."""
        stored = await self._stored(response_id, authorization)
        return page_of(stored.input_items, page)

    async def _stored(self, response_id: str, authorization: str | None) -> StoredResponse:
        caller = await self._gateway.authenticate(authorization)
        stored = None
        if self._records is not None:
            stored = await self._records.get(response_id, caller.owner)
        if stored is None:
            raise not_found(response_id)
        return stored

    async def input_tokens(self, body: bytes, *, authorization: str | None) -> dict[str, Any]:
        """How many tokens a response with this input would read (the engine's tokenizer,
        the model's chat format, the tools)."""
        request: InputTokensRequest = validated(InputTokensRequest, decode_body(body))
        caller = await self._gateway.authenticate(authorization)
        earlier: list[Item] = []
        if request.previous_response_id is not None:
            if self._records is None:
                raise not_found(request.previous_response_id)
            chain = await self._records.chain(request.previous_response_id, caller.owner)
            if chain is None:
                raise NotFoundError(
                    f"No response with id `{request.previous_response_id}` was found.",
                    param="previous_response_id",
                )
            for stored in chain:
                earlier += stored.input_items + (stored.response.get("output") or [])
        messages = chat_messages([*earlier, *input_items(request.input)], request.instructions)
        if not messages:
            raise InvalidRequestError("input: nothing to count.", param="input")
        card = self._card(request) if request.reasoning else {}
        reasons = bool((card.get("capabilities") or {}).get("reasoning"))
        document = chat_document(request, messages, reasons=reasons)
        count = await count_tokens(self._gateway, document, caller)
        return {"object": "response.input_tokens", "input_tokens": count}

    # -- expiry --------------------------------------------------------------------------------
    async def expire(self) -> int:
        """Delete every expired response; how many went."""
        if self._records is None:
            return 0
        total = 0
        while True:
            gone = await self._records.expire()
            total += gone
            if gone == 0:
                return total


async def count_tokens(gateway: Gateway, document: dict[str, Any], caller: Caller) -> int:
    """The prompt tokens of a chat request (vLLM's ``/tokenize`` of its messages and tools)."""
    body: dict[str, Any] = {"model": document["model"], "messages": document["messages"]}
    if document.get("tools"):
        body["tools"] = document["tools"]
    answer = await gateway.tokens("/tokenize", orjson.dumps(body), new_id("tok"), caller=caller)
    counted = orjson.loads(answer.body)
    if answer.status != 200 or not isinstance(counted.get("count"), int):
        error = counted.get("error") if isinstance(counted, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        raise InvalidRequestError(f"input: {message or 'could not be counted'}", param="input")
    return counted["count"]


def _event_stream(stream: ResponseStream) -> GatewayResponse:
    return GatewayResponse(
        200, sse_framing.MEDIA_TYPE, dict(sse_framing.STREAM_HEADERS), stream=stream
    )


class _Storing:
    """Writes one response when it ends: the response with its input items (``keep``: it is
    stored), and its input and output added to its conversation, if it has one."""

    def __init__(
        self,
        responses: Responses,
        caller: Caller,
        frame: Frame,
        new: list[Item],
        root_id: str,
        *,
        keep: bool,
    ) -> None:
        self._responses = responses
        self._caller = caller
        self._frame = frame
        self._new = new
        self._root_id = root_id
        self._keep = keep

    async def write(self, response: dict[str, Any]) -> None:
        if self._keep:
            await self.put(response)
        await self.extend_conversation(response)

    async def extend_conversation(self, response: dict[str, Any]) -> None:
        """A response that answered adds its input and output to its conversation."""
        conversation = self._frame.conversation_id
        if conversation is None or response["status"] not in ("completed", "incomplete"):
            return
        output = response.get("output") or []
        await self._responses._conversations.extend(conversation, [*self._new, *output])

    async def put(self, response: dict[str, Any]) -> None:
        responses, frame = self._responses, self._frame
        assert responses._writer is not None
        await responses._writer.write(
            StoredResponse(
                id=frame.id,
                key_id=self._caller.owner,
                status=response["status"],
                model=frame.request.model,
                previous_response_id=frame.previous_response_id,
                root_id=self._root_id,
                conversation_id=frame.conversation_id,
                input_items=self._new,
                response=response,
                expires_at=responses._clock() + responses._options.ttl,
            )
        )
