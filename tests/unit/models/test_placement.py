"""Placement of a fleet's engines on GPUs, against cases worked by hand: shares, shared GPUs,
tensor-parallel groups, and refusals that say what would fit."""

from __future__ import annotations

import pytest

from mistral_serve.models.catalog import known_architecture
from mistral_serve.models.placement import (
    MAX_GPU_SHARE,
    Demand,
    PlacementError,
    minimum_share,
    place,
    render,
)
from mistral_serve.models.planner import Gpus

H100S = Gpus.parse("2xH100")
MISTRAL_7B = known_architecture("mistralai/Mistral-7B-Instruct-v0.3")
E5 = known_architecture("intfloat/e5-mistral-7b-instruct")
MIXTRAL = known_architecture("mistralai/Mixtral-8x7B-Instruct-v0.1")


def chat(replicas=1, share=None, tp=1, length=32768, model=MISTRAL_7B, name="chat") -> Demand:
    return Demand(name, model, "generate", replicas, tp, share, length)


def embed(replicas=1, share=None) -> Demand:
    return Demand("e5", E5, "embed", replicas, 1, share, 4096)


def test_the_least_share_holds_the_weights_the_reserve_and_four_sequences():
    # Mistral 7B on an H100: 13.50 GiB of weights + 3 GiB + 4 × 32768 × 128 KiB (16 GiB)
    # = 32.50 GiB of 79.6: 0.408, up to the next 0.05
    assert minimum_share(chat(), H100S) == 0.45
    # e5: 13.24 GiB + 3 GiB + 4 × 4096 × 128 KiB (2 GiB) = 18.24 GiB: 0.229
    assert minimum_share(embed(), H100S) == 0.25
    # at TP=2 each GPU holds half the weights and half the KV heads
    assert minimum_share(chat(tp=2), H100S) == 0.25


def test_replicas_spread_and_the_embedding_engine_fills_in_beside_one():
    placed = place([chat(replicas=2), embed()], H100S)
    by_name = {(each.model, each.replica): each for each in placed.engines}
    assert by_name["chat", 0].gpus == (0,) and by_name["chat", 1].gpus == (1,)
    assert by_name["e5", 0].gpus == (0,) and by_name["e5", 0].share == 0.25  # kept its least
    # the chat engines grew into what was left: 0.95 − 0.25 beside e5, all 0.95 alone
    assert (by_name["chat", 0].share, by_name["chat", 1].share) == (0.70, MAX_GPU_SHARE)
    assert placed.used(0) == placed.used(1) == MAX_GPU_SHARE
    # at 0.70: 0.70 × 79.6 GiB − 13.50 − 3 = 39.22 GiB of KV cache, 321,256 tokens of 128 KiB
    assert by_name["chat", 0].layout.kv_tokens_per_engine == 321_256
    assert by_name["chat", 0].layout.sequences_per_engine == 9


def test_given_shares_are_kept_and_two_engines_share_one_gpu():
    placed = place([chat(share=0.7), embed(share=0.25)], Gpus.parse("1xH100"))
    assert [(each.model, each.gpus, each.share) for each in placed.engines] == [
        ("chat", (0,), 0.7),
        ("e5", (0,), 0.25),
    ]


def test_tensor_parallel_engines_take_an_aligned_group_first():
    four = Gpus.parse("4xH100")
    placed = place([embed(), chat(tp=2, model=MIXTRAL, name="mixtral")], four)
    mixtral, e5 = placed.engines
    assert mixtral.gpus == (0, 1) and e5.gpus == (2,)


def test_a_fleet_too_large_is_refused_with_what_would_fit():
    with pytest.raises(PlacementError) as refused:
        place([chat(replicas=2, share=0.8), embed(replicas=2)], H100S)
    message = str(refused.value)
    assert "no room for e5 engine 0 (0.25 of 1 GPU(s))" in message
    assert "GPU 0: chat 0.8; GPU 1: chat 0.8" in message
    assert message.endswith("it would fit on 3xH100")


def test_an_engine_larger_than_a_gpu_is_told_to_widen_or_shrink():
    # 87.0 GiB of weights + 3 + 16 of KV = 106 GiB of 79.6: 1.33, up to 1.35
    with pytest.raises(PlacementError, match=r"mixtral: it needs 1\.35 of a H100's .* try "
                       r"tensor_parallel_size 2"):  # fmt: skip
        place([chat(model=MIXTRAL, name="mixtral")], H100S)
    with pytest.raises(PlacementError, match="tensor_parallel_size 4 needs 4 GPUs, 2xH100 has 2"):
        place([chat(tp=4)], H100S)


def test_a_given_share_too_small_for_one_sequence_is_refused():
    with pytest.raises(PlacementError, match=r"e5: at gpu_memory_share 0\.2 an engine holds no "
                       r"sequence of 4096 tokens; at 0\.25 it holds 4"):  # fmt: skip
        place([embed(share=0.2)], H100S)


def test_the_plan_prints_every_engine_and_each_gpus_total():
    text = render(place([chat(replicas=2), embed()], H100S))
    assert (
        "| chat | 0 | generate | 0 | 0.70 | 13.5 GiB | 39.2 GiB | 321,256 | 9 of 32768 | – |"
        in text
    )
    assert "| e5 | 0 | embed | 0 | 0.25 |" in text
    assert text.endswith("GPUs used: 0: 0.95, 1: 0.95 (at most 0.95 each)")
