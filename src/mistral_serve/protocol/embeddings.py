"""Embedding requests, in OpenAI's shape and Mistral's, and Mistral's output types.

OpenAI: ``input`` (a text, texts, tokens or lists of tokens), ``encoding_format`` (``float``
or ``base64``: little-endian float32), ``dimensions``. Mistral: the same ``input`` (its SDK
names it ``inputs`` and sends ``input``), ``output_dimension`` (OpenAI's ``dimensions``) and
``output_dtype``:

- ``float``: the vector as it is;
- ``uint8``: each value of the (unit-length) vector mapped linearly from [-1, 1] onto [0, 255]
  and rounded; ``int8``: the same less 128 (-128 to 127);
- ``binary`` / ``ubinary``: one bit per value (1 where it is positive), packed eight to a byte,
  most significant bit first, so a vector of D values becomes D/8 numbers; ``ubinary`` reads
  each byte as unsigned (0–255), ``binary`` as signed (the unsigned value less 128).

Mistral documents the ranges and the bit packing; the scale of ``int8``/``uint8`` is this
project's choice, said here.
"""

from __future__ import annotations

import base64
import struct
from typing import Literal

from pydantic import Field, StrictInt, StrictStr, ValidationInfo, field_validator

from mistral_serve.protocol.openai import GenerationRequest

OutputDtype = Literal["float", "int8", "uint8", "binary", "ubinary"]


class EmbeddingRequest(GenerationRequest):
    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]] = Field(
        min_length=1
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: StrictInt | None = Field(None, ge=1)
    #: Mistral's
    output_dimension: StrictInt | None = Field(None, ge=1)
    output_dtype: OutputDtype | None = None

    @field_validator("stream")
    @classmethod
    def _not_streamed(cls, stream: bool | None) -> bool | None:
        if stream:
            raise ValueError("embeddings are not streamed")
        return stream

    @field_validator("output_dimension")
    @classmethod
    def _one_dimension(cls, dimension: int | None, info: ValidationInfo) -> int | None:
        if dimension is not None and info.data.get("dimensions") is not None:
            raise ValueError("give dimensions or output_dimension, not both")
        return dimension

    @property
    def output_limit(self) -> int | None:
        return 0  # nothing is generated

    def text_count(self) -> int:
        """How many inputs it embeds."""
        if isinstance(self.input, str) or (self.input and isinstance(self.input[0], int)):
            return 1
        return len(self.input)


def converted(vector: list[float], dtype: OutputDtype) -> list[float] | list[int]:
    """``vector`` as Mistral's ``output_dtype`` gives it (the module's docstring says how)."""
    if dtype == "float":
        return vector
    if dtype in ("int8", "uint8"):
        unsigned = [max(0, min(255, round((value + 1.0) * 127.5))) for value in vector]
        return unsigned if dtype == "uint8" else [byte - 128 for byte in unsigned]
    packed = _packed_bits(vector)
    return packed if dtype == "ubinary" else [byte - 128 for byte in packed]


def _packed_bits(vector: list[float]) -> list[int]:
    bits = [1 if value > 0 else 0 for value in vector]
    bits += [0] * (-len(bits) % 8)
    return [
        int("".join(str(bit) for bit in bits[start : start + 8]), 2)
        for start in range(0, len(bits), 8)
    ]


def encoded(values: list[float] | list[int], dtype: OutputDtype) -> str:
    """``values`` as ``encoding_format: base64``: little-endian float32 for floats (OpenAI's),
    one byte each for Mistral's integer types."""
    if dtype == "float":
        raw = struct.pack(f"<{len(values)}f", *values)
    else:
        signed = dtype in ("int8", "binary")
        raw = struct.pack(f"<{len(values)}{'b' if signed else 'B'}", *values)
    return base64.b64encode(raw).decode()
