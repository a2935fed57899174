"""Streamed tool-call arguments that begin at their opening brace: on vLLM 0.32, a pre-v11
Mistral tokenizer's streamed ``arguments`` start with the colon (``:{"city": "Paris"}``, not
JSON) whenever one delta ends with the ``"arguments"`` key and the next brings its colon. Found
here (a sampled, streamed named tool call on the demo model); not yet reported upstream.

Mistral's pre-v11 stream parser cuts each delta where the next ijson event can happen; after the
``"arguments"`` key it waits for the opening brace and, once that arrives, sends everything up
to it as the first piece of the arguments, stripped of spaces only. When the colon came with the
key it was cut off with it; when it comes in the next delta it is sent on. Every tool_choice
(auto, required, named) takes this path; which cuts a stream has depends on the tokens sampled
and on how many of them the engine merges into one delta, so the same request breaks now and
then (5 of the 204 two-delta cuts of the unit test's calls, for each tool_choice; 624 of 13,218
three-delta cuts).

The fix feeds the separator (spaces and the colon) that begins such a delta to the JSON parser
on its own, then hands vLLM the rest, which starts at the brace: the parser sees the same bytes
in the same order, and the arguments get none of the separator.

Remove this module, and its line in ``PATCHES``, once vLLM strips the separator itself.
"""

from __future__ import annotations

import functools

from packaging.specifiers import SpecifierSet

from mistral_serve.engine_plugin.guard import Patch

# 0.32.0 measured here (the CPU build); 0.33.0 read: its parser/mistral.py is byte-for-byte
# 0.32.0's.
VERIFIED = SpecifierSet(">=0.32.0,<0.34")
TARGET = "_extract_tool_calls_streaming_pre_v11_tokenizer"
SEPARATOR = " \t\r\n:"  # what JSON allows between a key and its value


def _parser_module():
    from vllm.parser import mistral

    return mistral


def applies() -> bool:
    """The method cuts deltas and feeds the parser's ijson coroutine, and the state it waits in
    after the key is there, as in 0.32."""
    module = _parser_module()
    method = getattr(module.MistralParser, TARGET, None)
    names = getattr(getattr(method, "__code__", None), "co_names", ())
    return (
        hasattr(module.StreamingState, "WAITING_FOR_ARGUMENTS_START")
        and "_split_delta" in names
        and "parse_coro" in names
    )


def apply() -> None:
    module = _parser_module()
    original = getattr(module.MistralParser, TARGET)
    if getattr(original, "separator_fed_apart", False):
        return
    waiting = module.StreamingState.WAITING_FOR_ARGUMENTS_START

    @functools.wraps(original)
    def separator_fed_apart(self, delta_text, delta_token_ids):
        if (
            self.streaming_state == waiting
            and self.bot_token not in delta_text
            and self.bot_token_id not in delta_token_ids
        ):
            value = delta_text.lstrip(SEPARATOR)
            if len(value) < len(delta_text):
                self.parse_coro.send(delta_text[: len(delta_text) - len(value)].encode("utf-8"))
                delta_text = value
        return original(self, delta_text=delta_text, delta_token_ids=delta_token_ids)

    separator_fed_apart.separator_fed_apart = True
    setattr(module.MistralParser, TARGET, separator_fed_apart)


PATCH = Patch(
    name="tool-arguments-start",
    bug="found by mistral-serve: pre-v11 streamed tool-call arguments can begin with ':'",
    verified=VERIFIED,
    applies=applies,
    apply=apply,
)
