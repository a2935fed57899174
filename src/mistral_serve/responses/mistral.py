"""Mistral's conversations (the ``mistralai`` SDK's ``beta.conversations``): start, append,
restart from an entry, get, list, history and messages, streamed or not, in Mistral's shapes.

A conversation is kept as OpenAI's is (the same store, items in Responses form); Mistral's
entries are the same items under other names (``message.input`` / ``message.output`` /
``function.call`` / ``function.result``). Each turn is a chat completion run through the
gateway's pipeline, as a response is (ledger endpoint ``/v1/conversations``). OpenAI's and
Mistral's conversations share ``/v1/conversations``: a body with ``inputs`` is Mistral's
(:func:`is_mistral`); a conversation remembers which API made it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import orjson

from mistral_serve.errors import InvalidRequestError, NotFoundError
from mistral_serve.gateway.pipeline import JSON, Endpoint, Gateway, validated
from mistral_serve.gateway.responses import GatewayResponse
from mistral_serve.protocol import sse as sse_framing
from mistral_serve.protocol.mistral_conversations import (
    AppendConversation,
    CompletionArgs,
    RestartConversation,
    StartConversation,
    Turn,
)
from mistral_serve.protocol.openai import with_usage_requested
from mistral_serve.protocol.openai_responses import ResponseRequest
from mistral_serve.responses.conversations import MISTRAL, Conversations
from mistral_serve.responses.events import Event, ResponseEvents
from mistral_serve.responses.items import (
    Item,
    chat_messages,
    message_item,
    new_id,
    required_str,
)
from mistral_serve.responses.output import Frame, output_of
from mistral_serve.responses.stream import ChatEvents, ResponseStream
from mistral_serve.store import WallClock, utc_now
from mistral_serve.store.conversations import ConversationRecord, ConversationRecords
from mistral_serve.tenancy.auth import Caller

#: What a conversation keeps from its start for every later turn.
_SETTINGS = ("model", "instructions", "tools", "completion_args", "name", "description")


def is_mistral(document: dict[str, Any]) -> bool:
    """A ``/v1/conversations`` body is Mistral's when it carries ``inputs`` (or an agent):
    OpenAI's create and update carry only ``items`` and ``metadata``."""
    return "inputs" in document or "agent_id" in document or "from_entry_id" in document


# -- entries and items -----------------------------------------------------------------------------
def items_of_inputs(inputs: str | list[dict[str, Any]] | None) -> list[Item]:
    """Mistral's ``inputs`` (a text, or entries) as items."""
    if inputs is None:
        return []
    if isinstance(inputs, str):
        return [message_item("user", [{"type": "input_text", "text": inputs}])]
    return [_item_of_entry(entry, f"inputs.{index}") for index, entry in enumerate(inputs)]


def _item_of_entry(entry: dict[str, Any], where: str) -> Item:
    kind = entry.get("type") or ("message.input" if "role" in entry else None)
    if kind in ("message.input", "message.output"):
        role = entry.get("role") or ("assistant" if kind == "message.output" else "user")
        if role not in ("user", "assistant", "system"):
            raise InvalidRequestError(
                f"{where}.role: user, assistant or system.", param=f"{where}.role"
            )
        text = _text(entry.get("content"), f"{where}.content")
        part = "output_text" if role == "assistant" else "input_text"
        return message_item(role, [{"type": part, "text": text}], entry.get("id"))
    if kind == "function.call":
        arguments = entry.get("arguments")
        if isinstance(arguments, dict):
            arguments = orjson.dumps(arguments).decode()
        return {
            "type": "function_call",
            "id": entry.get("id") or new_id("fc"),
            "call_id": required_str(entry, "tool_call_id", where),
            "name": required_str(entry, "name", where),
            "arguments": arguments if isinstance(arguments, str) else "{}",
            "status": "completed",
        }
    if kind == "function.result":
        return {
            "type": "function_call_output",
            "id": entry.get("id") or new_id("fco"),
            "call_id": required_str(entry, "tool_call_id", where),
            "output": required_str(entry, "result", where),
            "status": "completed",
        }
    raise InvalidRequestError(
        f"{where}.type: `{kind}` entries are not served here (agents and their tools are "
        "Mistral's hosted products): message.input, message.output, function.call and "
        "function.result are.",
        param=f"{where}.type",
    )


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(chunk, dict) and chunk.get("type") == "text" for chunk in content
    ):
        return "".join(str(chunk.get("text", "")) for chunk in content)
    raise InvalidRequestError(f"{where}: a text, or text chunks.", param=where)


def entry_of(item: Item, model: str | None = None) -> dict[str, Any] | None:
    """An item as Mistral's entry (None for what Mistral's conversations have no entry for)."""
    kind = item.get("type")
    if kind == "message":
        text = "".join(
            part.get("text") or part.get("refusal") or "" for part in item.get("content", ())
        )
        if item.get("role") == "assistant":
            entry = {"type": "message.output", "role": "assistant", "content": text}
            if model:
                entry["model"] = model
        else:
            role = "system" if item.get("role") == "developer" else item.get("role")
            entry = {"type": "message.input", "role": role, "content": text}
    elif kind == "function_call":
        entry = {
            "type": "function.call",
            "tool_call_id": item["call_id"],
            "name": item["name"],
            "arguments": item["arguments"],
        }
    elif kind == "function_call_output":
        entry = {
            "type": "function.result",
            "tool_call_id": item["call_id"],
            "result": item["output"],
        }
    else:
        return None
    return {"object": "entry", "id": item.get("id"), **entry}


def entries_of(items: list[Item], model: str | None = None) -> list[dict[str, Any]]:
    return [entry for item in items if (entry := entry_of(item, model)) is not None]


def _usage(chat_usage: Any) -> dict[str, Any]:
    usage = chat_usage if isinstance(chat_usage, dict) else {}
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    details = usage.get("prompt_tokens_details") or {}
    return _mistral_usage(prompt, completion, details.get("cached_tokens"))


def _mistral_usage(prompt: int, completion: int, cached: int | None) -> dict[str, Any]:
    """Mistral's usage; the prompt tokens the engine's cache served as its own API reports
    them (``prompt_tokens_details.cached_tokens``)."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def mistral_conversation(record: ConversationRecord) -> dict[str, Any]:
    """Mistral's conversation object (a model's; agents are not served here)."""
    settings = record.settings
    return {
        "object": "conversation",
        "id": record.id,
        "created_at": _iso(record.created_at),
        "updated_at": _iso(record.updated_at),
        "model": settings.get("model") or "",
        "instructions": settings.get("instructions"),
        "tools": settings.get("tools") or [],
        "completion_args": settings.get("completion_args") or {},
        "name": settings.get("name"),
        "description": settings.get("description"),
        "metadata": record.metadata or None,
    }


# -- the turn's chat request -----------------------------------------------------------------------
def chat_of(
    settings: dict[str, Any], items: list[Item], args: CompletionArgs | None
) -> dict[str, Any]:
    """A turn's chat request: the conversation's model, instructions and tools over its items;
    ``args`` (the turn's) over the conversation's completion arguments."""
    document: dict[str, Any] = {
        "model": settings["model"],
        "messages": chat_messages(items, settings.get("instructions")),
    }
    tools = settings.get("tools") or []
    for index, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise InvalidRequestError(
                f"tools.{index}.type: `{tool.get('type')}` is one of Mistral's hosted tools, "
                "which are not served here: give function tools (your code runs them).",
                param=f"tools.{index}.type",
            )
    if tools:
        document["tools"] = tools
    merged = {**(settings.get("completion_args") or {})}
    if args is not None:
        merged.update(args.model_dump(exclude_none=True))
    for name in (
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
    ):
        if merged.get(name) is not None:
            document[name] = merged[name]
    if merged.get("random_seed") is not None:
        document["seed"] = merged["random_seed"]
    choice = merged.get("tool_choice")
    if choice is not None:
        document["tool_choice"] = "required" if choice == "any" else choice
    return document


class MistralConversations:
    def __init__(
        self,
        gateway: Gateway,
        conversations: Conversations,
        *,
        ttl: timedelta = timedelta(days=30),
        clock: WallClock = utc_now,
    ) -> None:
        self._gateway = gateway
        self._conversations = conversations
        self._ttl = ttl
        self._clock = clock

    def _records(self) -> ConversationRecords:
        records = self._conversations.records
        if records is None:
            raise InvalidRequestError(
                "Conversations are not stored on this server (RESPONSES_STORE=off).",
                param="store",
            )
        return records

    # -- turns -----------------------------------------------------------------------------------
    async def start(
        self,
        document: dict[str, Any],
        caller: Caller,
        request_id: str,
        *,
        client: str | None = None,
    ) -> GatewayResponse:
        request: StartConversation = validated(StartConversation, document)
        if request.agent_id is not None:
            raise NotFoundError(
                f"No agent `{request.agent_id}`: agents are Mistral's hosted product and are "
                "not served here; start a conversation with a `model`.",
                param="agent_id",
            )
        if request.model is None:
            raise InvalidRequestError("model: a conversation needs a model.", param="model")
        self._gateway.check_model(caller, request.model)
        settings = {
            "model": request.model,
            "instructions": request.instructions,
            "tools": request.tools,
            "completion_args": (
                request.completion_args.model_dump(exclude_none=True)
                if request.completion_args
                else None
            ),
            "name": request.name,
            "description": request.description,
        }
        new = items_of_inputs(request.inputs)
        conversation_id = new_id("conv")
        chat = chat_of(settings, new, None)  # checked before anything is stored
        if request.store is not False:
            await self._create(conversation_id, caller, request.metadata or {}, settings, [])
        return await self._turn(conversation_id, chat, new, caller, request_id, request, client)

    async def append(
        self,
        conversation_id: str,
        document: dict[str, Any],
        caller: Caller,
        request_id: str,
        *,
        client: str | None = None,
    ) -> GatewayResponse:
        request: AppendConversation = validated(AppendConversation, document)
        record = await self._conversations.owned(conversation_id, caller)
        self._gateway.check_model(caller, record.settings.get("model") or "")
        earlier = await self._conversations.items_of(conversation_id)
        new = items_of_inputs(request.inputs)
        chat = chat_of(record.settings, [*earlier, *new], request.completion_args)
        return await self._turn(conversation_id, chat, new, caller, request_id, request, client)

    async def restart(
        self,
        conversation_id: str,
        document: dict[str, Any],
        caller: Caller,
        request_id: str,
        *,
        client: str | None = None,
    ) -> GatewayResponse:
        """A new conversation: this one's entries through ``from_entry_id``, then the new
        inputs."""
        request: RestartConversation = validated(RestartConversation, document)
        record = await self._conversations.owned(conversation_id, caller)
        self._gateway.check_model(caller, record.settings.get("model") or "")
        kept = await self._records().items(conversation_id, upto=request.from_entry_id)
        if not kept:
            raise NotFoundError(
                f"No entry `{request.from_entry_id}` in conversation `{conversation_id}`.",
                param="from_entry_id",
            )
        new = items_of_inputs(request.inputs)
        chat = chat_of(record.settings, [*kept, *new], request.completion_args)
        restarted = new_id("conv")
        if request.store is not False:
            metadata = request.metadata if request.metadata is not None else record.metadata
            await self._create(restarted, caller, metadata, record.settings, kept)
        return await self._turn(restarted, chat, new, caller, request_id, request, client)

    async def _create(
        self,
        conversation_id: str,
        caller: Caller,
        metadata: dict[str, Any],
        settings: dict[str, Any],
        items: list[Item],
    ) -> None:
        await self._records().create(
            conversation_id,
            caller.owner,
            MISTRAL,
            metadata=metadata,
            settings=settings,
            items=items,
            expires_at=self._clock() + self._ttl,
        )

    async def _turn(
        self,
        conversation_id: str,
        chat: dict[str, Any],
        new: list[Item],
        caller: Caller,
        request_id: str,
        turn: Turn,
        client: str | None,
    ) -> GatewayResponse:
        """One turn: the chat request through the pipeline, answered in Mistral's shape (or
        its events), its input and output added to the conversation (unless ``store`` is
        false); ``client``: the caller's address (anonymous traffic's turn in admission)."""
        store = turn.store is not False
        if turn.stream:
            chat = with_usage_requested({**chat, "stream": True})
        answer = await self._gateway.generate_chat(
            caller,
            chat,
            request_id,
            session=conversation_id,
            answer_id=conversation_id,
            conversation_id=conversation_id,
            endpoint=Endpoint.CONVERSATIONS,
            client=client,
        )
        if answer.status != 200:
            return answer
        model = chat["model"]

        async def keep(output: list[Item]) -> None:
            if store:
                await self._conversations.extend(conversation_id, [*new, *output])

        if answer.stream is None:
            completion = orjson.loads(answer.body)
            output, _ = output_of(completion)
            await keep(output)
            body = {
                "object": "conversation.response",
                "conversation_id": conversation_id,
                "outputs": entries_of(output, model),
                "usage": _usage(completion.get("usage")),
            }
            return GatewayResponse(
                200, JSON, answer.headers, body=orjson.dumps(body), raw_headers=answer.raw_headers
            )
        events = ResponseEvents(
            Frame(conversation_id, int(self._clock().timestamp()), ResponseRequest(model=model))
        )

        async def ended(finished: ResponseEvents) -> None:
            if finished.status in ("completed", "incomplete"):
                await keep(finished.output)

        chat_events = ChatEvents(
            answer.stream, events, ended=ended, clock=lambda: int(self._clock().timestamp())
        )
        started = {
            "type": "conversation.response.started",
            "conversation_id": conversation_id,
            "created_at": _iso(self._clock()),
        }
        source = _mistral_events(chat_events, events, model)
        stream_out = ResponseStream(source, opening=[started], close=chat_events.aclose)
        headers = {**answer.headers, **sse_framing.STREAM_HEADERS}
        return GatewayResponse(
            200, sse_framing.MEDIA_TYPE, headers, stream=stream_out, raw_headers=answer.raw_headers
        )

    # -- reads -----------------------------------------------------------------------------------
    async def history(self, conversation_id: str, caller: Caller) -> dict[str, Any]:
        record = await self._conversations.owned(conversation_id, caller)
        items = await self._conversations.items_of(conversation_id)
        return {
            "object": "conversation.history",
            "conversation_id": conversation_id,
            "entries": entries_of(items, record.settings.get("model")),
        }

    async def messages(self, conversation_id: str, caller: Caller) -> dict[str, Any]:
        record = await self._conversations.owned(conversation_id, caller)
        items = await self._conversations.items_of(conversation_id)
        messages = [item for item in items if item.get("type") == "message"]
        return {
            "object": "conversation.messages",
            "conversation_id": conversation_id,
            "messages": entries_of(messages, record.settings.get("model")),
        }

    async def list(self, page: int, page_size: int, caller: Caller) -> list[dict[str, Any]]:
        if page < 0 or not 1 <= page_size <= 1000:
            raise InvalidRequestError("page: 0 or more; page_size: 1 to 1000.", param="page_size")
        records = await self._records().list(
            caller.owner, page * page_size, page_size, dialect=MISTRAL
        )
        return [mistral_conversation(record) for record in records]


async def _mistral_events(
    chat: ChatEvents, events: ResponseEvents, model: str
) -> AsyncIterator[list[dict[str, Any]]]:
    """The Responses events of a chat stream, as Mistral's conversation events."""
    async for batch in chat:
        made = [event for each in batch if (event := _mistral_event(each, events, model))]
        if made:
            yield made


def _mistral_event(event: Event, events: ResponseEvents, model: str) -> dict[str, Any] | None:
    kind = event["type"]
    if kind == "response.output_text.delta":
        return {
            "type": "message.output.delta",
            "id": event["item_id"],
            "content": event["delta"],
            "role": "assistant",
            "output_index": event["output_index"],
            "content_index": 0,
            "model": model,
        }
    if kind == "response.function_call_arguments.delta":
        item = events.output[event["output_index"]]
        return {
            "type": "function.call.delta",
            "id": item["id"],
            "name": item["name"],
            "tool_call_id": item["call_id"],
            "arguments": event["delta"],
            "output_index": event["output_index"],
            "model": model,
        }
    if kind in ("response.completed", "response.incomplete"):
        usage = event["response"].get("usage") or {}
        prompt, completion = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
        cached = (usage.get("input_tokens_details") or {}).get("cached_tokens")
        return {
            "type": "conversation.response.done",
            "usage": _mistral_usage(prompt, completion, cached),
        }
    if kind == "response.failed":
        error = event["response"].get("error") or {}
        return {
            "type": "conversation.response.error",
            "message": error.get("message") or "The engine failed.",
            "code": 500,
        }
    return None
