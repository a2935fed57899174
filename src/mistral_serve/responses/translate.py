"""A response request as the chat completion an engine answers.

Every field of :class:`~mistral_serve.protocol.openai_responses.ResponseRequest` is either
mapped to chat's, kept for the stored response alone (``metadata``, ``store``…), or refused
with a 400 naming it: nothing is dropped in silence.
"""

from __future__ import annotations

from typing import Any

from mistral_serve.errors import InvalidRequestError
from mistral_serve.protocol.openai_responses import (
    FunctionTool,
    InputTokensRequest,
    ResponseRequest,
    TextOptions,
)

#: The one ``include`` a chat answer can fill: the output text's log probabilities.
LOGPROBS = "message.output_text.logprobs"
_SERVICE_TIERS = (None, "auto", "default")


def chat_document(
    request: ResponseRequest | InputTokensRequest,
    messages: list[dict[str, Any]],
    *,
    reasons: bool,
) -> dict[str, Any]:
    """The chat request for ``request`` over ``messages`` (its context, made by the caller).
    ``reasons``: the model thinks before it answers (a Magistral), so ``reasoning`` is
    meaningful."""
    document: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        document["tools"] = [_tool(tool, index) for index, tool in enumerate(request.tools)]
    if request.tool_choice is not None:
        document["tool_choice"] = _tool_choice(request.tool_choice)
    if request.parallel_tool_calls is not None:
        document["parallel_tool_calls"] = request.parallel_tool_calls
    if request.text is not None:
        response_format = _response_format(request.text)
        if response_format is not None:
            document["response_format"] = response_format
    _check_reasoning(request, reasons)
    if isinstance(request, ResponseRequest):
        _sampling(request, document)
    return document


def _sampling(request: ResponseRequest, document: dict[str, Any]) -> None:
    if request.max_tool_calls is not None:
        raise InvalidRequestError(
            "max_tool_calls: limits OpenAI's built-in tools, which are not served here.",
            param="max_tool_calls",
        )
    if request.prompt is not None:
        raise InvalidRequestError(
            "prompt: reusable prompts are kept by OpenAI's dashboard, not here: send "
            "`instructions` and `input`.",
            param="prompt",
        )
    if request.service_tier not in _SERVICE_TIERS:
        raise InvalidRequestError(
            f"service_tier: `{request.service_tier}` is not offered here (auto or default).",
            param="service_tier",
        )
    for name in ("temperature", "top_p", "seed"):
        value = getattr(request, name)
        if value is not None:
            document[name] = value
    if request.max_output_tokens is not None:
        document["max_tokens"] = request.max_output_tokens
    user = request.user or request.safety_identifier
    if user is not None:
        document["user"] = user
    includes = request.include or []
    for index, name in enumerate(includes):
        if name != LOGPROBS:
            raise InvalidRequestError(
                f"include.{index}: `{name}` is not served here (only `{LOGPROBS}`).",
                param=f"include.{index}",
            )
    if LOGPROBS in includes or request.top_logprobs is not None:
        document["logprobs"] = True
        if request.top_logprobs is not None:
            document["top_logprobs"] = request.top_logprobs


def _tool(tool: FunctionTool, index: int) -> dict[str, Any]:
    if tool.type != "function":
        raise InvalidRequestError(
            f"tools.{index}.type: `{tool.type}` is one of OpenAI's built-in tools, which are "
            "not served here: give function tools (your code runs them).",
            param=f"tools.{index}.type",
        )
    if not tool.name:
        raise InvalidRequestError(
            f"tools.{index}.name: a function tool needs a name.", param=f"tools.{index}.name"
        )
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = tool.parameters or {"type": "object", "properties": {}}
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice in ("auto", "none", "required"):
            return choice
    elif choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequestError(
        'tool_choice: auto, none, required, or {"type": "function", "name": …} (a '
        "function tool of the request's).",
        param="tool_choice",
    )


def _response_format(text: TextOptions) -> dict[str, Any] | None:
    if text.verbosity is not None:
        raise InvalidRequestError(
            "text.verbosity: not a setting of Mistral's models.", param="text.verbosity"
        )
    form = text.format
    if form is None or form.type == "text":
        return None
    if form.type == "json_object":
        return {"type": "json_object"}
    if not form.name or form.schema_ is None:
        raise InvalidRequestError(
            "text.format: a json_schema format needs a `name` and a `schema`.",
            param="text.format",
        )
    schema: dict[str, Any] = {"name": form.name, "schema": form.schema_}
    if form.description is not None:
        schema["description"] = form.description
    if form.strict is not None:
        schema["strict"] = form.strict
    return {"type": "json_schema", "json_schema": schema}


def _check_reasoning(request: ResponseRequest | InputTokensRequest, reasons: bool) -> None:
    reasoning = request.reasoning
    if reasoning is None or not reasoning.model_fields_set:
        return
    if not reasons:
        raise InvalidRequestError(
            f"reasoning: `{request.model}` does not reason (Magistral models do).",
            param="reasoning",
        )
    if reasoning.effort is not None:
        raise InvalidRequestError(
            "reasoning.effort: Mistral's reasoning models always think; they take no effort level.",
            param="reasoning.effort",
        )
