"""Mistral's embedding dialect translated for the engine, and its answer converted."""

from __future__ import annotations

from mistral_serve.gateway.embeddings import translate
from mistral_serve.protocol.embeddings import converted, encoded

ANSWER = {
    "object": "list",
    "model": "e",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.5, 0.1]}],
    "usage": {"prompt_tokens": 3, "total_tokens": 3},
}


def test_openais_shape_goes_as_sent():
    assert translate({"model": "e", "input": "a", "dimensions": 8}) is None


def test_output_dimension_is_the_engines_dimensions_and_float_needs_no_change():
    translation = translate({"model": "e", "input": "a", "output_dimension": 8, "metadata": {}})
    assert translation.document == {"model": "e", "input": "a", "dimensions": 8}
    assert translation.answer is None


def test_an_integer_type_is_made_from_the_engines_floats():
    document = {"model": "e", "input": "a", "output_dtype": "int8", "encoding_format": "base64"}
    translation = translate(document)
    assert translation.document == {"model": "e", "input": "a", "encoding_format": "float"}
    answer = translation.answer.whole(ANSWER)
    expected = encoded(converted([0.5, -0.5, 0.1], "int8"), "int8")
    assert answer["data"][0]["embedding"] == expected
    assert answer["usage"] == ANSWER["usage"]
    plain = translate({"model": "e", "input": "a", "output_dtype": "ubinary"})
    assert plain.answer.whole(ANSWER)["data"][0]["embedding"] == [0b10100000]
