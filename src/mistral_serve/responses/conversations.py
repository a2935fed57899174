"""OpenAI's conversations (``/v1/conversations``): a conversation's items kept in the store,
which responses read as their context (``conversation`` on ``/v1/responses``) and add their
input and output to.

Mistral's conversations (:mod:`mistral_serve.responses.mistral`) share the store and the
paths; a conversation remembers which API made it and is answered in that API's shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from mistral_serve.errors import InvalidRequestError, NotFoundError
from mistral_serve.gateway.pipeline import Gateway, decode_body, validated
from mistral_serve.protocol.openai_responses import (
    AddItems,
    CreateConversation,
    UpdateConversation,
)
from mistral_serve.responses.items import Item, input_items, new_id
from mistral_serve.responses.pages import Page, page_of
from mistral_serve.store import WallClock, utc_now
from mistral_serve.store.conversations import ConversationRecord, ConversationRecords
from mistral_serve.tenancy.auth import Caller

OPENAI, MISTRAL = "openai", "mistral"


def conversation_not_found(conversation_id: str, param: str = "conversation_id") -> NotFoundError:
    return NotFoundError(f"No conversation with id `{conversation_id}` was found.", param=param)


def openai_conversation(record: ConversationRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "conversation",
        "created_at": int(record.created_at.timestamp()),
        "metadata": record.metadata,
    }


class Conversations:
    """OpenAI's conversation routes, and the conversations responses read and extend."""

    def __init__(
        self,
        gateway: Gateway,
        records: ConversationRecords | None,
        *,
        ttl: timedelta = timedelta(days=30),
        clock: WallClock = utc_now,
    ) -> None:
        self._gateway = gateway
        self.records = records
        self._ttl = ttl
        self._clock = clock

    # -- for responses ---------------------------------------------------------------------------
    async def owned(
        self, conversation_id: str, caller: Caller, param: str = "conversation_id"
    ) -> ConversationRecord:
        """The caller's conversation (a 404 otherwise, naming ``param``)."""
        record = None
        if self.records is not None:
            record = await self.records.get(conversation_id, caller.owner)
        if record is None:
            raise conversation_not_found(conversation_id, param)
        return record

    async def items_of(self, conversation_id: str) -> list[Item]:
        assert self.records is not None
        return await self.records.items(conversation_id)

    async def extend(self, conversation_id: str, items: Sequence[Item]) -> None:
        """A response's input and output, added to its conversation."""
        assert self.records is not None
        await self.records.append(conversation_id, items)

    # -- OpenAI's routes -------------------------------------------------------------------------
    async def create(self, document: dict[str, Any], caller: Caller) -> dict[str, Any]:
        request: CreateConversation = validated(CreateConversation, document)
        records = self._records()
        record = await records.create(
            new_id("conv"),
            caller.owner,
            OPENAI,
            metadata=request.metadata or {},
            settings={},
            items=input_items(request.items, param="items"),
            expires_at=self._clock() + self._ttl,
        )
        return openai_conversation(record)

    async def update(
        self, conversation_id: str, document: dict[str, Any], caller: Caller
    ) -> dict[str, Any]:
        request: UpdateConversation = validated(UpdateConversation, document)
        await self.owned(conversation_id, caller)
        updated = await self._records().update(
            conversation_id, caller.owner, metadata=request.metadata
        )
        if updated is None:
            raise conversation_not_found(conversation_id)
        return openai_conversation(updated)

    async def delete(self, conversation_id: str, caller: Caller) -> dict[str, Any]:
        if not await self._records().delete(conversation_id, caller.owner):
            raise conversation_not_found(conversation_id)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    async def list_items(self, conversation_id: str, page: Page, caller: Caller) -> dict[str, Any]:
        await self.owned(conversation_id, caller)
        return page_of(await self.items_of(conversation_id), page)

    async def add_items(self, conversation_id: str, body: bytes, caller: Caller) -> dict[str, Any]:
        request: AddItems = validated(AddItems, decode_body(body))
        await self.owned(conversation_id, caller)
        items = input_items(request.items, param="items")
        await self.extend(conversation_id, items)
        return {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"],
            "last_id": items[-1]["id"],
            "has_more": False,
        }

    async def item(self, conversation_id: str, item_id: str, caller: Caller) -> Item:
        await self.owned(conversation_id, caller)
        item = await self._records().item(conversation_id, item_id)
        if item is None:
            raise NotFoundError(f"No item with id `{item_id}` was found.", param="item_id")
        return item

    async def delete_item(
        self, conversation_id: str, item_id: str, caller: Caller
    ) -> dict[str, Any]:
        record = await self.owned(conversation_id, caller)
        if not await self._records().delete_item(conversation_id, item_id):
            raise NotFoundError(f"No item with id `{item_id}` was found.", param="item_id")
        return openai_conversation(record)

    def _records(self) -> ConversationRecords:
        if self.records is None:
            raise InvalidRequestError(
                "Conversations are not stored on this server (RESPONSES_STORE=off).",
                param="conversation_id",
            )
        return self.records

    async def expire(self) -> int:
        if self.records is None:
            return 0
        total = 0
        while gone := await self.records.expire():
            total += gone
        return total
