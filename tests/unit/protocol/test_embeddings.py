"""Mistral's embedding output types against vectors converted by hand, and the request's
checks."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from mistral_serve.protocol.embeddings import EmbeddingRequest, converted, encoded

VECTOR = [1.0, -1.0, 0.0, 0.5, -0.5, 0.25, -0.25, 0.1, 0.9]


def test_uint8_and_int8_map_minus_one_to_one_linearly():
    # (v + 1) × 127.5, rounded (half to even): 255, 0, 128 (127.5), 191 (191.25), 64 (63.75) …
    assert converted(VECTOR, "uint8") == [255, 0, 128, 191, 64, 159, 96, 140, 242]
    assert converted(VECTOR, "int8") == [127, -128, 0, 63, -64, 31, -32, 12, 114]


def test_binary_packs_one_bit_per_value_most_significant_first():
    # positive? 1 0 0 1 0 1 0 1 | 1 (padded with seven zeros)
    assert converted(VECTOR, "ubinary") == [0b10010101, 0b10000000]  # 149, 128
    assert converted(VECTOR, "binary") == [149 - 128, 128 - 128]
    assert converted([0.1] * 16, "ubinary") == [255, 255]


def test_float_is_unchanged_and_base64_is_little_endian():
    assert converted(VECTOR, "float") is VECTOR
    assert base64.b64decode(encoded([1.0], "float")) == b"\x00\x00\x80\x3f"
    assert base64.b64decode(encoded([-128, 127], "int8")) == b"\x80\x7f"
    assert base64.b64decode(encoded([255, 0], "ubinary")) == b"\xff\x00"


def test_the_request_checks_what_the_engine_would_not():
    request = EmbeddingRequest.model_validate({"model": "e", "input": ["a", "b"], "n": 1})
    assert request.text_count() == 2 and request.output_limit == 0
    assert EmbeddingRequest.model_validate({"model": "e", "input": [1, 2]}).text_count() == 1
    bad = [
        ({"model": "e", "input": "a", "stream": True}, "stream"),
        ({"model": "e", "input": []}, "input"),
        ({"model": "e", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "e", "input": "a", "output_dtype": "float16"}, "output_dtype"),
        ({"model": "e", "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": "e", "input": "a", "dimensions": 8, "output_dimension": 8}, "output_dimension"),
    ]
    for document, field in bad:
        with pytest.raises(ValidationError) as refused:
            EmbeddingRequest.model_validate(document)
        assert refused.value.errors()[0]["loc"][0] == field, document
