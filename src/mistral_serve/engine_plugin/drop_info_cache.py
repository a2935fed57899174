"""vLLM #58145: the streaming parser's special-token terminals, built once per tokenizer
instead of once per chat request (the memoization of vLLM PR #58172, open).

With a Mistral tokenizer and Mistral's tool parser, vLLM's API server builds a
``StreamingParserEngine`` for every chat request, twice for a stream, tools or not, and each
build compiles one regular expression per special token (750 for a v3 tokenizer) on the event
loop: 89 % of the API server's CPU under streaming load here, 55 ms a parser. What it builds
depends only on the parser's config (one cached object per format) and the tokenizer (one per
server), and is read, never written, by the parsers that use it (``LexerShape`` says it is made
to be shared); the per-request state (scanner, lexer buffer) stays on each parser.

Remove this module, and its line in ``PATCHES``, once vLLM ships the fix.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from packaging.specifiers import SpecifierSet

from mistral_serve.engine_plugin.guard import Patch

# 0.32.0 measured here (the CPU build); 0.33.0 read: its streaming_parser_engine.py is
# byte-for-byte 0.32.0's.
VERIFIED = SpecifierSet(">=0.32.0,<0.34")
TARGET = "_build_drop_info"


class DropInfoCache:
    """``_build_drop_info(config, tokenizer)`` remembered per (config, tokenizer) object, the
    last ``size`` pairs. The entries hold both objects, so their ids cannot be reused by others
    while remembered; a server has one tokenizer and one config per parser format."""

    def __init__(self, build: Callable[[Any, Any], Any], size: int = 16) -> None:
        self.build = build
        self.size = size
        self._entries: OrderedDict[tuple[int, int], tuple[Any, Any, Any]] = OrderedDict()

    def __call__(self, config: Any, tokenizer: Any) -> Any:
        key = (id(config), id(tokenizer))
        entry = self._entries.get(key)
        if entry is None:
            entry = (config, tokenizer, self.build(config, tokenizer))
            self._entries[key] = entry
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return entry[2]


def _module():
    from vllm.parser.engine import streaming_parser_engine

    return streaming_parser_engine


def applies() -> bool:
    """The builder is a module function that the engine's constructor looks up by name."""
    module = _module()
    build = getattr(module, TARGET, None)
    init = module.StreamingParserEngine.__init__
    return callable(build) and TARGET in init.__code__.co_names


def apply() -> None:
    module = _module()
    if not isinstance(getattr(module, TARGET), DropInfoCache):
        setattr(module, TARGET, DropInfoCache(getattr(module, TARGET)))


PATCH = Patch(
    name="parser-drop-info-cache",
    bug="vLLM #58145; fix proposed in vLLM PR #58172",
    verified=VERIFIED,
    applies=applies,
    apply=apply,
)
