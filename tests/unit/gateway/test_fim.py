"""Fill-in-the-middle encoding: Mistral's FIM request, and OpenAI's text completion with a
suffix, over the demo checkpoint's real tokenizer."""

from __future__ import annotations

import pytest
from mistral_common.protocol.fim.request import FIMRequest

from mistral_serve.errors import InvalidRequestError
from mistral_serve.gateway.fim import FimEncoder
from mistral_serve.models.tokenizers import fim_tokenizer

BEFORE, AFTER = "def add(a, b):", "print(add(1, 2))"


async def test_a_completion_with_a_suffix_is_encoded_and_its_answer_left_alone(built):
    root = str(built["v3"])
    document = {"model": "demo", "prompt": [BEFORE], "suffix": AFTER, "max_tokens": 4, "n": 2}
    translation = await FimEncoder().completion_with_suffix(document, root)
    expected = fim_tokenizer(root, None).encode_fim(FIMRequest(prompt=BEFORE, suffix=AFTER))
    assert translation.document == {
        "model": "demo",
        "prompt": expected.tokens,
        "max_tokens": 4,
        "n": 2,
    }
    assert translation.answer is None  # a text completion, as the engine answers it


async def test_a_suffix_needs_one_text_and_a_model_with_fim_tokens(built):
    encoder = FimEncoder()
    tokens = {"model": "demo", "prompt": [1, 2], "suffix": AFTER}
    with pytest.raises(InvalidRequestError) as refused:
        await encoder.completion_with_suffix(tokens, str(built["v3"]))
    assert refused.value.param == "prompt"
    text = {"model": "demo-v1", "prompt": BEFORE, "suffix": AFTER}
    with pytest.raises(InvalidRequestError, match="`demo-v1` does not support fill-in") as old:
        await encoder.completion_with_suffix(text, str(built["v1"]))
    assert old.value.param == "model"
