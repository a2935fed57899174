"""The patches against vLLM's own Mistral parser (the installed vLLM, the demo's real v3
tokenizer): what a parser does with them is exactly what it does without them (the requests
it adjusts, the deltas it streams, the calls it parses, for every tool_choice), and what they
fix is fixed: a parser is freed with its request, the special-token terminals are built once
per tokenizer, and streamed arguments are JSON however the stream is cut."""

from __future__ import annotations

import copy
import gc
import json
import weakref
from collections.abc import Iterator

import pytest
import vllm
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.parser.engine import streaming_parser_engine
from vllm.parser.mistral import MistralParser
from vllm.parser.parser_manager import ParserManager
from vllm.tokenizers.registry import get_tokenizer

from mistral_serve.engine_plugin import PATCHES, arguments_start, drop_info_cache, parser_cycle
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
    for target in (parser_cycle.TARGET, arguments_start.TARGET):
        patching.setattr(MistralParser, target, MistralParser.__dict__[target])
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


def adjusted_request(parser_cls, tokenizer, tool_choice) -> ChatCompletionRequest:
    """A streamed chat request with tools, as the chat server hands it to its parsers."""
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    request = ChatCompletionRequest(**body, tool_choice=tool_choice, stream=True)
    return parser_cls(tokenizer, request.tools, chat_template_kwargs={}).adjust_request(request)


def stream(parser_cls, tokenizer, request, pieces: list[tuple[str, list[int]]]) -> list:
    """The deltas one parser makes of the pieces, as the chat server feeds them."""
    parser = parser_cls(tokenizer, request.tools, chat_template_kwargs={})
    return [
        parser.parse_delta(text, ids, request, prompt_token_ids=[1], finished=i == len(pieces) - 1)
        for i, (text, ids) in enumerate(pieces)
    ]


def behaviour(parser_cls, tokenizer, tool_choice, output: str) -> dict:
    """Everything a chat request sees of the parser: its adjusted request, its streamed
    deltas and its parse of the whole output (random tool-call ids left out)."""
    request = adjusted_request(parser_cls, tokenizer, tool_choice)
    adjusted = request.model_dump(include=ADJUSTED)
    pieces = deltas(output, tokenizer)
    streamed = [
        delta.model_dump(exclude_none=True, exclude={"tool_calls": {"__all__": {"id"}}})
        for delta in stream(parser_cls, tokenizer, request, pieces)
        if delta is not None
    ]
    reasoning, content, calls = parser_cls(tokenizer, request.tools, chat_template_kwargs={}).parse(
        output,
        request,
        enable_auto_tools=True,
        model_output_token_ids=[i for _, ids in pieces for i in ids],
    )
    parsed = (reasoning, content, [(call.name, call.arguments) for call in calls or []])
    return {"adjusted": adjusted, "streamed": streamed, "parsed": parsed}


def separator_stripped(streamed: list[dict]) -> list[dict]:
    """The streamed deltas with each call's first piece of arguments stripped of what may
    precede the value (what the arguments-start patch fixes), other pieces as they were."""
    begun: set[int] = set()
    deltas_out = []
    for delta in streamed:
        delta = copy.deepcopy(delta)
        for call in delta.get("tool_calls", []):
            arguments = call.get("function", {}).get("arguments")
            if arguments is not None and call["index"] not in begun:
                begun.add(call["index"])
                call["function"]["arguments"] = arguments.lstrip(arguments_start.SEPARATOR)
        deltas_out.append(delta)
    return deltas_out


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("tool_choice", TOOL_CHOICES, ids=["auto", "required", "named", "none"])
def test_a_parser_behaves_exactly_as_without_the_patches(
    parser_cls, tokenizer, tool_choice, output, monkeypatch
):
    """Except for the one fix in what it streams: these deltas cut a call between its
    ``"arguments"`` key and the colon, and without the patches the arguments begin ``: {``."""
    before = behaviour(parser_cls, tokenizer, tool_choice, OUTPUTS[output])
    with monkeypatch.context() as patching:
        apply_reversibly(patching)
        after = behaviour(parser_cls, tokenizer, tool_choice, OUTPUTS[output])
    assert after["streamed"] == separator_stripped(before["streamed"])
    assert {**after, "streamed": None} == {**before, "streamed": None}
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


#: Calls as the guided schema (required, named) or the model (auto, after the marker) may
#: space them; the last has two calls.
CALLS = [
    '[{"name":"get_weather","arguments":{"city":"Paris"}}]',
    '[{"name": "get_weather" , "arguments" : {"city": "Paris"}}]',
    f'[{CALL}, {{"name": "get_time", "arguments":{{}}}}]',
]
#: The tool choices that stream calls, and the marker before a call in each (none: guided).
GUIDED_OR_MARKED = {"auto": ("auto", "[TOOL_CALLS]"), "required": ("required", ""),
                    "named": (TOOL_CHOICES[2], "")}  # fmt: skip


def cut_in_two(output: str, tokenizer, marker: str) -> Iterator[list[tuple[str, list[int]]]]:
    """The output as a stream of two deltas, at every place it can be cut (after the
    tool-call marker, where the request has one): which tokens a delta ends at depends on the
    tokens sampled and on how many of them the engine merges into one delta."""
    head = [(marker, [tokenizer.get_vocab()[marker]])] if marker else []
    for cut in range(1, len(output)):
        yield [*head, (output[:cut], [1001]), (output[cut:], [1002])]


def streamed_calls(deltas_streamed: list) -> list[tuple[str, str]]:
    """(name, arguments) of each call, put together from its deltas as a client does."""
    calls: dict[int, list[str]] = {}
    for delta in deltas_streamed:
        for call in (delta.tool_calls if delta else None) or []:
            name, arguments = calls.setdefault(call.index, ["", ""])
            calls[call.index] = [
                name + (call.function.name or ""),
                arguments + (call.function.arguments or ""),
            ]
    return [(name, arguments) for _, (name, arguments) in sorted(calls.items())]


def cuts_that_break_the_arguments(parser_cls, tokenizer, tool_choice: str) -> int:
    """How many of the two-delta cuts of ``CALLS`` stream arguments that are not the call's
    JSON."""
    choice, marker = GUIDED_OR_MARKED[tool_choice]
    request = adjusted_request(parser_cls, tokenizer, choice)
    broken = 0
    for output in CALLS:
        expected = [(c["name"], c["arguments"]) for c in json.loads(output)]
        for pieces in cut_in_two(output, tokenizer, marker):
            calls = streamed_calls(stream(parser_cls, tokenizer, request, pieces))
            try:
                ok = [(name, json.loads(arguments)) for name, arguments in calls] == expected
            except json.JSONDecodeError:
                ok = False
            broken += not ok
    return broken


def test_without_the_patch_streamed_arguments_can_begin_with_the_colon(parser_cls, tokenizer):
    """The bug on this vLLM (when this fails, vLLM strips the separator: remove the patch)."""
    request = adjusted_request(parser_cls, tokenizer, "required")
    pieces = [('[{"name": "get_weather", "arguments"', [1001]), (': {"city": "Paris"}}]', [1002])]
    assert streamed_calls(stream(parser_cls, tokenizer, request, pieces)) == [
        ("get_weather", ': {"city": "Paris"}')
    ]


@pytest.mark.parametrize("tool_choice", GUIDED_OR_MARKED)
def test_with_the_patches_every_cut_of_a_stream_streams_the_calls_arguments(
    parser_cls, tokenizer, tool_choice, patched
):
    assert cuts_that_break_the_arguments(parser_cls, tokenizer, tool_choice) == 0


def test_each_patch_is_verified_on_the_installed_vllm():
    """The suite runs the vLLM this project pins: every patch applies to it."""
    for patch in PATCHES:
        assert patch.applies(), patch.name
