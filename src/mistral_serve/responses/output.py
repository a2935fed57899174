"""What a chat answer becomes in the Responses API: output items, the status, the usage, and
the ``response`` object around them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mistral_serve.protocol.openai_responses import ResponseRequest
from mistral_serve.responses.items import Item, new_id

#: Chat's finish reasons that leave a response incomplete, and why (OpenAI's reasons).
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(frozen=True)
class Frame:
    """What every form of one response says, whatever its status: the request as echoed."""

    id: str
    created_at: int
    request: ResponseRequest
    previous_response_id: str | None = None
    conversation_id: str | None = None

    def response(
        self,
        status: str,
        output: list[Item] | None = None,
        usage: dict[str, Any] | None = None,
        *,
        error: dict[str, Any] | None = None,
        incomplete_reason: str | None = None,
        completed_at: int | None = None,
    ) -> dict[str, Any]:
        """The ``response`` object (as OpenAI's SDK types it)."""
        request = self.request
        text = request.text.model_dump(by_alias=True, exclude_none=True) if request.text else {}
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": bool(request.background),
            "completed_at": completed_at,
            "error": error,
            "incomplete_details": (
                {"reason": incomplete_reason} if incomplete_reason is not None else None
            ),
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": request.model,
            "output": output or [],
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": self.previous_response_id,
            "conversation": {"id": self.conversation_id} if self.conversation_id else None,
            "prompt_cache_key": request.prompt_cache_key,
            "reasoning": {"effort": None, "summary": None},
            "safety_identifier": request.safety_identifier,
            "service_tier": "default",
            "store": request.stores,
            "temperature": request.temperature if request.temperature is not None else 1.0,
            "text": {"format": text.get("format", {"type": "text"})},
            "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
            "tools": [tool.model_dump(exclude_none=True) for tool in request.tools or ()],
            "top_logprobs": request.top_logprobs or 0,
            "top_p": request.top_p if request.top_p is not None else 1.0,
            "truncation": request.truncation or "disabled",
            "usage": usage,
            "user": request.user,
            "metadata": request.metadata or {},
        }


def usage_of(chat_usage: Any) -> dict[str, Any] | None:
    """Chat's usage as a response's (cached prompt tokens when the engine reports them)."""
    if not isinstance(chat_usage, dict):
        return None
    details = chat_usage.get("prompt_tokens_details") or {}
    completion_details = chat_usage.get("completion_tokens_details") or {}
    input_tokens = chat_usage.get("prompt_tokens") or 0
    output_tokens = chat_usage.get("completion_tokens") or 0
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": details.get("cached_tokens") or 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": completion_details.get("reasoning_tokens") or 0
        },
        "total_tokens": input_tokens + output_tokens,
    }


def text_part(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def output_message(
    text: str, status: str, item_id: str | None = None, logprobs: list[Any] | None = None
) -> Item:
    return {
        "type": "message",
        "id": item_id or new_id("msg"),
        "status": status,
        "role": "assistant",
        "content": [text_part(text, logprobs)],
    }


def function_call(
    call_id: str, name: str, arguments: str, status: str, item_id: str | None = None
) -> Item:
    return {
        "type": "function_call",
        "id": item_id or new_id("fc"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def reasoning(text: str, item_id: str | None = None) -> Item:
    return {
        "type": "reasoning",
        "id": item_id or new_id("rs"),
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def reasoning_text(message: dict[str, Any]) -> str | None:
    """A chat message's (or delta's) reasoning, under the name this vLLM gives it."""
    text = message.get("reasoning_content")
    return text if text is not None else message.get("reasoning")


def output_of(completion: dict[str, Any]) -> tuple[list[Item], str | None]:
    """A chat completion's first choice as output items, and why it is incomplete (None:
    it is complete)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    incomplete = INCOMPLETE.get(choice.get("finish_reason") or "")
    status = "incomplete" if incomplete else "completed"
    items: list[Item] = []
    thought = reasoning_text(message)
    if thought:
        items.append(reasoning(thought))
    content = message.get("content")
    if content:
        logprobs = (choice.get("logprobs") or {}).get("content")
        items.append(output_message(content, status, logprobs=logprobs))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        items.append(
            function_call(
                call.get("id") or new_id("call"),
                function.get("name") or "",
                function.get("arguments") or "",
                "completed",
            )
        )
    return items, incomplete


def output_text(output: list[Item]) -> str:
    """The answer's text (the SDK's ``output_text``): every output_text part, in order."""
    return "".join(
        part.get("text", "")
        for item in output
        if item.get("type") == "message"
        for part in item.get("content", ())
        if part.get("type") == "output_text"
    )
