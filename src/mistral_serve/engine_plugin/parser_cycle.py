"""Mistral's tool parser freed with its request: on vLLM 0.32 every ``MistralParser`` for a
pre-v11 Mistral tokenizer (v1, v2, v3, v7: Mistral-7B-Instruct-v0.3, Nemo, Small 3, the demo)
lives until the process ends. Found here; not yet reported upstream.

The parser keeps an ijson coroutine (``self.parse_coro``) that feeds a generator method of the
parser, ``update_stream_state_pre_v11_tokenizer``, whose frame holds ``self``: a reference
cycle. ijson's C backend (yajl2_c, the one installed) does not take part in Python's garbage
collection (``gc.is_tracked`` is False for its coroutine), so the collector never sees the
cycle and never frees it. Two parsers per streamed chat request, each with its scanner, lexer
and (without the drop-info patch) 750 compiled expressions: 2.7 MB per request measured.

The fix binds the generator to a weak proxy of the parser, so the parser owns the coroutine
and nothing owns the parser back; the generator runs only while the parser feeds it.

Remove this module, and its line in ``PATCHES``, once vLLM breaks the cycle itself.
"""

from __future__ import annotations

import functools
import weakref

from packaging.specifiers import SpecifierSet

from mistral_serve.engine_plugin.guard import Patch

# 0.32.0 measured here (the CPU build); 0.33.0 read: its parser/mistral.py is byte-for-byte
# 0.32.0's.
VERIFIED = SpecifierSet(">=0.32.0,<0.34")
TARGET = "update_stream_state_pre_v11_tokenizer"


def _parser_class():
    from vllm.parser.mistral import MistralParser

    return MistralParser


def applies() -> bool:
    """The generator method exists and the constructor starts it, as in 0.32."""
    parser = _parser_class()
    return callable(getattr(parser, TARGET, None)) and TARGET in parser.__init__.__code__.co_names


def apply() -> None:
    parser = _parser_class()
    original = getattr(parser, TARGET)
    if getattr(original, "weakly_bound", False):
        return

    @functools.wraps(original)
    def weakly_bound(self):
        return original(weakref.proxy(self))

    weakly_bound.weakly_bound = True
    setattr(parser, TARGET, weakly_bound)


PATCH = Patch(
    name="mistral-parser-cycle",
    bug="found by mistral-serve: MistralParser's ijson coroutine cycle is never collected",
    verified=VERIFIED,
    applies=applies,
    apply=apply,
)
