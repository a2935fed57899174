"""What a request shares with earlier ones: its routable text cut into hashed blocks, and an
index of the blocks each engine has been sent.

An engine's prefix cache holds the KV of prompts it has seen, in fixed-size blocks keyed by a
hash chained over everything before them. The gateway cannot see that cache, but it made every
decision that filled it, so it keeps a model of it: the same idea over its own text. The
routable text is every message in order (role, content, tool calls, tool results), or the
prompt of a completion; it is cut into blocks, and each block's hash covers the model and every
block before it, so one hash stands for a whole prefix. Blocks are :data:`BLOCK_BYTES` at the
start and grow with their offset (a sixteenth of it, :data:`BLOCK_ENDS`): where two prompts
part matters to the byte near the start (a system prompt, a first turn) and to a few percent
deep in a long one, so a 220 KB prompt is about a hundred hashes, not 1,700 (the hashing runs
on the event loop; it cost 1.3 ms there before). Each engine's index is an LRU of those hashes,
as large as the engine's KV cache (its ``vllm:cache_config_info``) in the bytes they stand for,
learned from the gateway's own choices and forgotten when the engine restarts.

Gateways that have never seen a conversation must still agree where it goes (Kubernetes runs
several over the same engines). So every request also has a *home key*: the conversation's
opening (messages up to and including the first user message), which does not change from one
turn to the next, or the session the client named. Rendezvous hashing of that key over the
engines' URLs gives every replica the same home engine, and the same one again next turn.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from weakref import WeakKeyDictionary

import orjson

#: Bytes of routable text per block at the start: about 32 tokens of English (4 bytes a
#: token), two of vLLM's 16-token KV blocks. Finer costs hashing time; coarser blurs the share.
BLOCK_BYTES = 128
#: Past the start a block is this fraction of its offset (in whole BLOCK_BYTES): the share's
#: resolution stays about 6 % however long the prompt, and the hash count grows with its log.
BLOCK_GROWTH = 16
#: How many tokens one byte of routable text stands for, to size an index from a KV cache.
TOKENS_PER_BYTE = 0.25
#: An engine whose KV capacity is not known yet is assumed to hold this many tokens.
DEFAULT_CAPACITY_TOKENS = 200_000
#: Routable text hashed at most: 256 KiB, about 64k tokens. Two requests that agree that far
#: are the same conversation (or share that document), which is all routing needs to know;
#: the rest is not hashed, encoded or copied. Hashing runs on the event loop, and before this
#: bound a 7.5 MB message took 94 ms of it and 200,000 short messages 309 ms.
MAX_ROUTED_BYTES = 256 * 1024


def _block_ends(limit: int) -> tuple[int, ...]:
    """Where each block ends: BLOCK_BYTES each up to 2 KiB, then a sixteenth of the offset."""
    ends, offset = [], 0
    while True:
        size = max(BLOCK_BYTES, offset // BLOCK_GROWTH // BLOCK_BYTES * BLOCK_BYTES)
        if offset + size > limit:
            return tuple(ends)
        offset += size
        ends.append(offset)


#: The end offset of every block up to MAX_ROUTED_BYTES (the same for every request, so two
#: texts that agree up to a block's end agree on its hash).
BLOCK_ENDS = _block_ends(MAX_ROUTED_BYTES)


def covered(blocks: int) -> int:
    """Bytes of text the first ``blocks`` blocks stand for."""
    return BLOCK_ENDS[blocks - 1] if blocks > 0 else 0


_RECORD = b"\x1e"  # between messages
_UNIT = b"\x1f"  # between a message's parts


_blake2b = hashlib.blake2b
#: The blocks' hash: SHA-1 runs on the CPU's SHA instructions where it has them (twice
#: BLAKE2b's speed on this machine's long prompts); a routing hint, not a security boundary.
_block_hash = functools.partial(hashlib.sha1, usedforsecurity=False)


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

    def share(self, matched: int) -> float:
        """The part of the hashed text the first ``matched`` blocks stand for (0..1)."""
        return covered(matched) / covered(len(self.blocks)) if self.blocks else 0.0


def route_key(model: str, document: Mapping[str, Any], *, session: str | None = None) -> RouteKey:
    """The route key of a chat (``messages``), completion (``prompt``) or embedding (``input``)
    request body."""
    messages = document.get("messages")
    if isinstance(messages, list):
        parts, size = _routed_messages(messages)
        text = _RECORD.join(parts)
        opening = _opening_length(messages, parts)
    else:
        text = _prompt_bytes(document.get("prompt", document.get("input")))
        opening = min(len(text), BLOCK_BYTES)
        size = len(text)
    seed = model.encode() + b"\x00"
    blocks = chain_hashes(seed, text)
    if session:
        home = _digest(seed + b"session\x00" + session.encode())
        return RouteKey(blocks, home, session=True, size=size)
    return RouteKey(blocks, _home(seed, text, opening, blocks), size=size)


def _home(seed: bytes, text: bytes, opening: int, blocks: tuple[bytes, ...]) -> bytes:
    """The hash of the text's first ``opening`` bytes, from the chained hash of the last block
    inside them and the few bytes after it: a long first message is not hashed twice."""
    inside = min(bisect.bisect_right(BLOCK_ENDS, opening), len(blocks))
    prefix = blocks[inside - 1] if inside else b""
    return _digest(seed + prefix + text[covered(inside) : opening])


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
    copy of the text, no call per block."""
    hashes = []
    append = hashes.append
    view = memoryview(text)
    length = len(view)
    previous, start = seed, 0
    for end in BLOCK_ENDS:
        if end > length:
            break
        previous = _block_hash(previous + view[start:end]).digest()[:8]
        append(previous)
        start = end
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


def _opening_length(messages: list[Any], parts: list[bytes]) -> int:
    """Bytes of the routed text up to and including the first user message (the
    conversation's opening: the same on every turn)."""
    count = len(parts)
    for index, message in enumerate(messages[:count]):
        if isinstance(message, dict) and message.get("role") == "user":
            count = index + 1
            break
    return sum(len(part) for part in parts[:count]) + max(0, count - 1)


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
    __slots__ = ("blocks", "bytes", "incarnation")

    def __init__(self, incarnation: int) -> None:
        self.incarnation = incarnation
        #: block → the bytes of text it stands for (blocks grow with their offset)
        self.blocks: OrderedDict[bytes, int] = OrderedDict()
        self.bytes = 0


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
        start = 0
        for block, end in zip(blocks, BLOCK_ENDS, strict=False):
            if block in cached:
                cached.move_to_end(block)
            else:
                cached[block] = end - start
                held.bytes += end - start
            start = end
            owner = owners.get(block, home)
            owners[block] = owner if owner == home else None
            owners.move_to_end(block)
        capacity = max(BLOCK_BYTES, int(capacity_tokens / TOKENS_PER_BYTE))
        while held.bytes > capacity and cached:
            held.bytes -= cached.popitem(last=False)[1]
        while len(owners) > _OWNERS_PER_BLOCK * max(1, len(cached)):
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
