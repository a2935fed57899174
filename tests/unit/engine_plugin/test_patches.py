"""The patches against vLLM's own Mistral parser (the installed vLLM, the demo's real v3
tokenizer): what a parser does with them is exactly what it does without them (the requests
it adjusts, the deltas it streams, the calls it parses, for every tool_choice), and what they
fix is fixed: a parser is freed with its request, and the special-token terminals are built
once per tokenizer."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import vllm
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.parser.engine import streaming_parser_engine
from vllm.parser.mistral import MistralParser
from vllm.parser.parser_manager import ParserManager
from vllm.tokenizers.registry import get_tokenizer

from mistral_serve.engine_plugin import PATCHES, drop_info_cache, parser_cycle
from mistral_serve.engine_plugin.drop_info_cache import DropInfoCache
from mistral_serve.engine_plugin.guard import apply_patches

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
TOOL_CHOICES = [
    "auto",
    "required",
    {"type": "function", "function": {"name": "get_weather"}},
    "none",
]
ADJUSTED = {"structured_outputs", "response_format", "skip_special_tokens", "tool_choice"}
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
OUTPUTS = {
    "content": "It is sunny in Paris today.",
    "one call": f"[TOOL_CALLS][{CALL}]",
    "two calls": f'[TOOL_CALLS][{CALL}, {{"name": "get_time", "arguments": {{}}}}]',
}


@pytest.fixture(scope="module")
def tokenizer(built):
    return get_tokenizer(str(built["v3"]), tokenizer_mode="mistral")


@pytest.fixture(scope="module")
def parser_cls(tokenizer):
    """The class vLLM's chat server builds its parsers from, as the project's flags make it."""
    return ParserManager.get_parser(
        tool_parser_name="mistral", enable_auto_tools=True, tokenizer=tokenizer, model_name="demo"
    )


def apply_reversibly(patching: pytest.MonkeyPatch) -> None:
    """Every patch applied as the plugin applies it; ``patching`` puts vLLM back afterwards."""
    patching.setattr(
        streaming_parser_engine, drop_info_cache.TARGET, streaming_parser_engine._build_drop_info
    )
    patching.setattr(
        MistralParser, parser_cycle.TARGET, MistralParser.__dict__[parser_cycle.TARGET]
    )
    assert all(outcome.applied for outcome in apply_patches(PATCHES, vllm.__version__))


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    apply_reversibly(monkeypatch)
    yield


def deltas(text: str, tokenizer) -> list[tuple[str, list[int]]]:
    """The model's output as a stream would bring it: the tool-call marker as its own special
    token, then the text a few characters at a time (ids of ordinary tokens)."""
    marker = "[TOOL_CALLS]"
    pieces: list[tuple[str, list[int]]] = []
    if text.startswith(marker):
        pieces.append((marker, [tokenizer.get_vocab()[marker]]))
        text = text[len(marker) :]
    pieces += [(text[i : i + 3], [1000 + i]) for i in range(0, len(text), 3)]
    return pieces


def behaviour(parser_cls, tokenizer, tool_choice, output: str) -> dict:
    """Everything a chat request sees of the parser: its adjusted request, its streamed
    deltas and its parse of the whole output (random tool-call ids left out)."""
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    request = ChatCompletionRequest(**body, tool_choice=tool_choice, stream=True)
    request = parser_cls(tokenizer, request.tools, chat_template_kwargs={}).adjust_request(request)
    adjusted = request.model_dump(include=ADJUSTED)

    parser = parser_cls(tokenizer, request.tools, chat_template_kwargs={})
    pieces = deltas(output, tokenizer)
    streamed = []
    for index, (text, ids) in enumerate(pieces):
        delta = parser.parse_delta(
            text, ids, request, prompt_token_ids=[1], finished=index == len(pieces) - 1
        )
        if delta is not None:
            streamed.append(
                delta.model_dump(exclude_none=True, exclude={"tool_calls": {"__all__": {"id"}}})
            )
    reasoning, content, calls = parser_cls(tokenizer, request.tools, chat_template_kwargs={}).parse(
        output,
        request,
        enable_auto_tools=True,
        model_output_token_ids=[i for _, ids in pieces for i in ids],
    )
    parsed = (reasoning, content, [(call.name, call.arguments) for call in calls or []])
    return {"adjusted": adjusted, "streamed": streamed, "parsed": parsed}


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("tool_choice", TOOL_CHOICES, ids=["auto", "required", "named", "none"])
def test_a_parser_behaves_exactly_as_without_the_patches(
    parser_cls, tokenizer, tool_choice, output, monkeypatch
):
    before = behaviour(parser_cls, tokenizer, tool_choice, OUTPUTS[output])
    with monkeypatch.context() as patching:
        apply_reversibly(patching)
        after = behaviour(parser_cls, tokenizer, tool_choice, OUTPUTS[output])
    assert after == before
    if output != "content" and tool_choice != "none":
        assert before["parsed"][2], "the case parses a tool call at all"


SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}}
RESPONSE_FORMATS = {
    "json_schema": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}},
    "json_object": {"type": "json_object"},
}


@pytest.mark.parametrize("response_format", RESPONSE_FORMATS)
def test_structured_output_requests_are_adjusted_as_without_the_patches(
    parser_cls, tokenizer, response_format, monkeypatch
):
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": RESPONSE_FORMATS[response_format],
    }

    def adjusted() -> dict:
        parser = parser_cls(tokenizer, None, chat_template_kwargs={})
        request = parser.adjust_request(ChatCompletionRequest(**body))
        return request.model_dump(include=ADJUSTED)

    before = adjusted()
    with monkeypatch.context() as patching:
        apply_reversibly(patching)
        assert adjusted() == before
    assert before["response_format"]["type"] == response_format


def test_without_the_patch_a_parser_outlives_its_request(tokenizer):
    """The bug on this vLLM (when this fails, vLLM has broken the cycle: remove the patch)."""
    parser = MistralParser(tokenizer, None)
    alive = weakref.ref(parser)
    del parser
    gc.collect()
    assert alive() is not None


def test_with_the_patches_a_parser_is_freed_with_its_request(tokenizer, patched):
    parser = MistralParser(tokenizer, None)
    assert parser.parse_coro is not None  # the v3 tokenizer takes the pre-v11 path
    alive = weakref.ref(parser)
    del parser
    assert alive() is None  # by reference counting alone: no collection needed


def test_the_special_token_terminals_are_built_once_per_tokenizer(tokenizer, built, patched):
    cache = streaming_parser_engine._build_drop_info
    assert isinstance(cache, DropInfoCache)
    builds = []
    original = cache.build
    cache.build = lambda config, tok: builds.append(tok) or original(config, tok)
    first = [MistralParser(tokenizer, None)._engine for _ in range(5)]
    assert len({id(engine._lexer._shape) for engine in first}) == 1
    other = get_tokenizer(str(built["v3"]), tokenizer_mode="mistral")
    MistralParser(other, None)
    assert len(builds) <= 2 and builds[-1] is other


def test_the_cache_keeps_its_last_entries_only():
    cache = DropInfoCache(lambda config, tokenizer: (config, tokenizer), size=2)
    keys = [object() for _ in range(3)]
    tokenizer = object()
    for key in keys:
        cache(key, tokenizer)
    assert len(cache._entries) == 2
    assert cache(keys[2], tokenizer) == (keys[2], tokenizer)


def test_each_patch_is_verified_on_the_installed_vllm():
    """The suite runs the vLLM this project pins: every patch applies to it."""
    for patch in (drop_info_cache.PATCH, parser_cycle.PATCH):
        assert patch.applies(), patch.name
