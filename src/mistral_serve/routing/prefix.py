"""What a request shares with earlier ones: its routable text cut into hashed blocks, and an
index of the blocks each engine has been sent.

An engine's prefix cache holds the KV of prompts it has seen, in fixed-size blocks keyed by a
hash chained over everything before them. The gateway cannot see that cache, but it made every
decision that filled it, so it keeps a model of it: the same idea over its own text. The
routable text is every message in order (role, content, tool calls, tool results), or the
prompt of a completion; it is cut into blocks of :data:`BLOCK_BYTES`, and each block's hash
covers the model and every block before it, so one hash stands for a whole prefix. Each
engine's index is an LRU of those hashes, as large as the engine's KV cache (its
``vllm:cache_config_info``), learned from the gateway's own choices and forgotten when the
engine restarts.

Gateways that have never seen a conversation must still agree where it goes (Kubernetes runs
several over the same engines). So every request also has a *home key*: the conversation's
opening (messages up to and including the first user message), which does not change from one
turn to the next, or the session the client named. Rendezvous hashing of that key over the
engines' URLs gives every replica the same home engine, and the same one again next turn.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from weakref import WeakKeyDictionary

import orjson

#: Bytes of routable text per block: about 32 tokens of English (4 bytes a token), two of
#: vLLM's 16-token KV blocks. Finer costs hashing time on long prompts; coarser blurs the share.
BLOCK_BYTES = 128
#: How many tokens one byte of routable text stands for, to size an index from a KV cache.
TOKENS_PER_BYTE = 0.25
#: An engine whose KV capacity is not known yet is assumed to hold this many tokens.
DEFAULT_CAPACITY_TOKENS = 200_000
#: Routable text hashed at most: 256 KiB, about 64k tokens. Two requests that agree that far
#: are the same conversation (or share that document), which is all routing needs to know;
#: the rest is not hashed, encoded or copied. Hashing runs on the event loop, and before this
#: bound a 7.5 MB message took 94 ms of it and 200,000 short messages 309 ms.
MAX_ROUTED_BYTES = 256 * 1024

_RECORD = b"\x1e"  # between messages
_UNIT = b"\x1f"  # between a message's parts


_blake2b = hashlib.blake2b


def _digest(data: bytes) -> bytes:
    return _blake2b(data, digest_size=8).digest()


@dataclass(frozen=True)
class RouteKey:
    """What routing knows about one request's text."""

    #: Chained hashes of the routable text's full blocks; ``blocks[i]`` stands for blocks 0..i.
    blocks: tuple[bytes, ...]
    #: The conversation's opening (or the named session): the same on every turn and replica.
    home: bytes
    #: Whether ``home`` is a session the client named (x-session-id, ``user``, prompt_cache_key).
    session: bool = False
    #: Bytes of routable text (the gateway counts the prompt size in flight per engine).
    size: int = 0


def route_key(model: str, document: Mapping[str, Any], *, session: str | None = None) -> RouteKey:
    """The route key of a chat (``messages``), completion (``prompt``) or embedding (``input``)
    request body."""
    messages = document.get("messages")
    if isinstance(messages, list):
        parts, size = _routed_messages(messages)
        opening = _opening(messages, parts)
        text = _RECORD.join(parts)
    else:
        text = _prompt_bytes(document.get("prompt", document.get("input")))
        opening = text[:BLOCK_BYTES]
        size = len(text)
    seed = model.encode() + b"\x00"
    blocks = chain_hashes(seed, text)
    if session:
        home = _digest(seed + b"session\x00" + session.encode())
        return RouteKey(blocks, home, session=True, size=size)
    return RouteKey(blocks, _digest(seed + opening), size=size)


def _routed_messages(messages: list[Any]) -> tuple[list[bytes], int]:
    """The routable bytes of the messages up to :data:`MAX_ROUTED_BYTES`, and the size of all
    of them. Text past the bound is neither encoded nor copied, only counted (in characters:
    the size is an estimate's input, and encoding a long text twice cost more than hashing)."""
    parts: list[bytes] = []
    routed = unrouted = 0
    for message in messages:
        length = _text_length(message)
        if routed < MAX_ROUTED_BYTES:
            budget = MAX_ROUTED_BYTES - routed
            part = _message_bytes(message, budget)
            parts.append(part)
            routed += len(part) + 1
            unrouted += max(0, length - budget)
        else:
            unrouted += length + 1
    return parts, max(0, routed - 1) + unrouted


def _text_length(message: object) -> int:
    content = message.get("content") if isinstance(message, dict) else None
    return len(content) if isinstance(content, str) else 0


def chain_hashes(seed: bytes, text: bytes) -> tuple[bytes, ...]:
    """The chained hash of every full block of ``text`` (up to :data:`MAX_ROUTED_BYTES`); the
    first covers ``seed`` too. The loop is :func:`_digest` inlined over a view of the text: no
    copy of the text, no call per block (a third of the time on long prompts)."""
    hashes = []
    append = hashes.append
    view = memoryview(text)[:MAX_ROUTED_BYTES]
    previous = seed
    for start in range(0, len(view) - BLOCK_BYTES + 1, BLOCK_BYTES):
        previous = _blake2b(previous + view[start : start + BLOCK_BYTES], digest_size=8).digest()
        append(previous)
    return tuple(hashes)


def _message_bytes(message: object, limit: int = MAX_ROUTED_BYTES) -> bytes:
    """A message's routable bytes; text content past ``limit`` characters is left out."""
    if not isinstance(message, dict):
        return orjson.dumps(message)
    content = message.get("content")
    parts = [str(message.get("role", "")).encode(), _content_bytes(content, limit)]
    for field in ("tool_calls", "tool_call_id", "name"):
        value = message.get(field)
        if value is not None:
            parts.append(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    return _UNIT.join(parts)


def _content_bytes(content: object, limit: int) -> bytes:
    if isinstance(content, str):
        return (content[:limit] if len(content) > limit else content).encode()
    if content is None:
        return b""
    # Parts (text, image_url, …): their JSON, keys sorted so equal parts give equal bytes.
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


def _opening(messages: list[Any], parts: list[bytes]) -> bytes:
    """The messages up to and including the first user message: the same on every turn."""
    for index, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _RECORD.join(parts[: index + 1])
    return _RECORD.join(parts)


def _prompt_bytes(prompt: object) -> bytes:
    if isinstance(prompt, str):
        return prompt.encode()
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        return _prompt_bytes(prompt[0])  # a batch is routed by its first prompt
    if isinstance(prompt, list):  # token ids: routed by their JSON, which is as stable
        return orjson.dumps(prompt)
    return b""


class Keyed(Protocol):
    """What an index needs of an engine: a stable address and a count of restarts."""

    url: str
    incarnation: int


def rendezvous(key: bytes, engines: Sequence[Keyed]) -> Keyed:
    """The engine with the highest hash of ``key`` and its URL: every replica that sees the
    same engines picks the same one, and removing an engine moves only its own keys."""
    return max(engines, key=lambda engine: _digest(key + engine.url.encode()))


class _EngineBlocks:
    __slots__ = ("blocks", "incarnation")

    def __init__(self, incarnation: int) -> None:
        self.incarnation = incarnation
        self.blocks: OrderedDict[bytes, None] = OrderedDict()


#: Blocks whose owners are remembered, per block an engine's index holds.
_OWNERS_PER_BLOCK = 4


class PrefixIndex:
    """The blocks each engine has been sent, most recent last, bounded by its KV capacity.

    A block sent for two different conversations (two home keys) is *shared*: a system prompt
    or a document many sessions start with. Every engine is assumed to hold a shared block, so
    such a prefix does not pull every conversation onto the engine that saw it first; each
    engine computes it once, and conversations spread by their own text and home engines.
    """

    def __init__(self) -> None:
        self._engines: WeakKeyDictionary[Keyed, _EngineBlocks] = WeakKeyDictionary()
        #: block → the home key it was first sent for, or None once a second one sent it.
        self._owners: OrderedDict[bytes, bytes | None] = OrderedDict()

    def matched(self, engine: Keyed, blocks: Sequence[bytes]) -> int:
        """How many leading blocks of ``blocks`` the engine should still hold."""
        held = self._held(engine)
        owners = self._owners
        count = 0
        for block in blocks:
            if (held is None or block not in held.blocks) and not (
                block in owners and owners[block] is None
            ):
                break
            count += 1
        return count

    def learn(
        self, engine: Keyed, blocks: Sequence[bytes], capacity_tokens: float, home: bytes
    ) -> None:
        """``blocks`` were just sent to ``engine`` for a conversation whose home key is
        ``home``: they are its most recent."""
        held = self._held(engine)
        if held is None:
            held = self._engines[engine] = _EngineBlocks(engine.incarnation)
        cached, owners = held.blocks, self._owners
        for block in blocks:
            cached[block] = None
            cached.move_to_end(block)
            owner = owners.get(block, home)
            owners[block] = owner if owner == home else None
            owners.move_to_end(block)
        capacity = max(1, int(capacity_tokens / (BLOCK_BYTES * TOKENS_PER_BYTE)))
        while len(cached) > capacity:
            cached.popitem(last=False)
        while len(owners) > _OWNERS_PER_BLOCK * capacity:
            owners.popitem(last=False)

    def size(self, engine: Keyed) -> int:
        held = self._held(engine)
        return 0 if held is None else len(held.blocks)

    def _held(self, engine: Keyed) -> _EngineBlocks | None:
        """The engine's blocks, unless it has restarted since (an empty cache)."""
        held = self._engines.get(engine)
        if held is not None and held.incarnation != engine.incarnation:
            del self._engines[engine]
            return None
        return held
