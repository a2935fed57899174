"""Routable text, chained block hashes, the home key and the per-engine index."""

from __future__ import annotations

from dataclasses import dataclass

from mistral_serve.routing.prefix import (
    BLOCK_BYTES,
    BLOCK_ENDS,
    TOKENS_PER_BYTE,
    PrefixIndex,
    chain_hashes,
    covered,
    rendezvous,
    route_key,
)

TEXT = "The quick brown fox jumps over the lazy dog. " * 40


@dataclass(eq=False)
class FakeEngine:
    url: str
    incarnation: int = 0


def chat(*messages: dict) -> dict:
    return {"model": "demo", "messages": list(messages)}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def test_blocks_are_chained_so_one_hash_stands_for_its_whole_prefix():
    a = chain_hashes(b"m", (TEXT + "A" * 600).encode())
    b = chain_hashes(b"m", (TEXT + "B" * 600).encode())
    shared = len(TEXT.encode()) // BLOCK_BYTES
    assert a[:shared] == b[:shared]
    assert set(a[shared:]).isdisjoint(b[shared:])  # after the divergence nothing matches again


def test_only_full_blocks_are_hashed():
    assert chain_hashes(b"m", b"x" * (BLOCK_BYTES - 1)) == ()
    assert len(chain_hashes(b"m", b"x" * (3 * BLOCK_BYTES + 5))) == 3


def test_the_model_is_in_the_first_hash():
    assert route_key("a", {"prompt": TEXT}).blocks[0] != route_key("b", {"prompt": TEXT}).blocks[0]


def test_every_message_counts_not_only_the_first():
    base = [{"role": "system", "content": TEXT}, user(TEXT)]
    one = route_key("demo", chat(*base, {"role": "assistant", "content": "yes " * 100}))
    two = route_key("demo", chat(*base, {"role": "assistant", "content": "no " * 100}))
    assert one.blocks != two.blocks
    assert one.home == two.home  # same opening (system + first user message)


def test_roles_and_tool_calls_are_part_of_the_text():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    then = user(TEXT)  # what follows, so the difference is not in a last partial block
    plain = route_key("demo", chat(user(TEXT), {"role": "assistant", "content": TEXT}, then))
    calls = route_key(
        "demo",
        chat(user(TEXT), {"role": "assistant", "content": TEXT, "tool_calls": [call]}, then),
    )
    as_system = route_key("demo", chat(user(TEXT), {"role": "system", "content": TEXT}, then))
    assert len({plain.blocks, calls.blocks, as_system.blocks}) == 3


def test_the_home_key_stays_the_same_from_turn_to_turn():
    first = route_key("demo", chat(user(TEXT)))
    later = route_key(
        "demo", chat(user(TEXT), {"role": "assistant", "content": "ok"}, user("and?"))
    )
    other = route_key("demo", chat(user(TEXT + "!")))
    assert first.home == later.home != other.home
    assert later.blocks[: len(first.blocks) - 1] == first.blocks[:-1]


def test_a_named_session_is_the_home_key():
    one = route_key("demo", chat(user("a")), session="s1")
    two = route_key("demo", chat(user("b")), session="s1")
    assert one.session and one.home == two.home
    assert route_key("demo", chat(user("a")), session="s2").home != one.home


def test_completions_route_by_their_prompt():
    one, batch = route_key("demo", {"prompt": TEXT}), route_key("demo", {"prompt": [TEXT]})
    assert one.blocks == batch.blocks
    assert route_key("demo", {"prompt": list(range(200))}).blocks  # token ids too
    assert route_key("demo", {"prompt": TEXT}).size == len(TEXT.encode())


def test_rendezvous_agrees_across_engine_objects_and_moves_only_the_removed_engines_keys():
    first = [FakeEngine(f"http://e{i}") for i in range(3)]
    second = [FakeEngine(f"http://e{i}") for i in range(3)]
    keys = [route_key("demo", chat(user(f"{i} {TEXT}"))).home for i in range(60)]
    assert [rendezvous(k, first).url for k in keys] == [rendezvous(k, second).url for k in keys]
    without_e2 = first[:2]
    for key in keys:
        if rendezvous(key, first).url != "http://e2":
            assert rendezvous(key, without_e2) is rendezvous(key, first)


def test_the_index_is_an_lru_bounded_by_the_engines_kv_capacity():
    index, engine = PrefixIndex(), FakeEngine("http://e0")
    capacity_blocks = 10
    capacity_tokens = capacity_blocks * BLOCK_BYTES * TOKENS_PER_BYTE
    old = route_key("demo", {"prompt": "o" * (6 * BLOCK_BYTES)})
    new = route_key("demo", {"prompt": "n" * (6 * BLOCK_BYTES)})
    index.learn(engine, old.blocks, capacity_tokens, old.home)
    assert index.matched(engine, old.blocks) == 6
    index.learn(engine, new.blocks, capacity_tokens, new.home)
    assert index.size(engine) == capacity_blocks
    assert index.matched(engine, new.blocks) == 6
    assert index.matched(engine, old.blocks) == 0  # its first blocks were the oldest


def test_a_block_sent_for_two_conversations_counts_as_held_everywhere():
    index = PrefixIndex()
    a, b = FakeEngine("http://a"), FakeEngine("http://b")
    one = route_key("demo", chat(user(TEXT + "one?")))
    two = route_key("demo", chat(user(TEXT + "two?")))
    index.learn(a, one.blocks, 1e6, one.home)
    assert index.matched(b, two.blocks) == 0
    index.learn(a, two.blocks, 1e6, two.home)  # a second conversation with the same start
    assert index.matched(b, two.blocks) == len(TEXT.encode()) // BLOCK_BYTES


def test_blocks_grow_with_their_offset_so_a_long_prompt_is_a_hundred_hashes():
    assert BLOCK_ENDS[:3] == (BLOCK_BYTES, 2 * BLOCK_BYTES, 3 * BLOCK_BYTES)
    sizes = [end - start for start, end in zip((0, *BLOCK_ENDS), BLOCK_ENDS, strict=False)]
    assert sizes == sorted(sizes) and all(size % BLOCK_BYTES == 0 for size in sizes)
    for start, size in zip((0, *BLOCK_ENDS), sizes, strict=False):
        assert size <= max(BLOCK_BYTES, start / 16)  # about 6 % of where it starts, at most
    long = route_key("demo", {"prompt": "x" * 220 * 1024})
    assert 90 <= len(long.blocks) <= 110


def test_the_share_counts_bytes_not_blocks():
    key = route_key("demo", {"prompt": "x" * 64 * 1024})
    half = max(n for n in range(len(key.blocks) + 1) if covered(n) <= 32 * 1024)
    assert key.share(half) == covered(half) / covered(len(key.blocks))
    assert 0.45 < key.share(half) <= 0.5 < half / len(key.blocks)


def test_a_long_first_message_gives_the_same_home_on_every_turn_and_differs_from_another():
    opening = "y" * 50_000
    first = route_key("demo", chat(user(opening)))
    later = route_key("demo", chat(user(opening), {"role": "assistant", "content": "a"}, user("b")))
    other = route_key("demo", chat(user(opening[:-1] + "z")))  # differs in its last byte
    assert first.home == later.home != other.home


def test_the_index_holds_as_many_bytes_as_the_kv_cache_whatever_the_block_sizes():
    index, engine = PrefixIndex(), FakeEngine("http://e0")
    capacity_bytes = 100 * 1024
    key = route_key("demo", {"prompt": "z" * 200 * 1024})
    index.learn(engine, key.blocks, capacity_bytes * TOKENS_PER_BYTE, key.home)
    assert 0 < index.size(engine) < len(key.blocks)
    assert index.matched(engine, key.blocks) == 0  # the oldest (first) blocks went
