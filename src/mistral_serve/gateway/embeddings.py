"""Embeddings in Mistral's dialect: ``output_dimension`` is the engine's ``dimensions``, and an
``output_dtype`` other than float is made here from the engine's float vectors (vLLM knows
only floats), then base64-encoded if the client asked for it. Requests in OpenAI's shape go
to the engine as sent."""

from __future__ import annotations

from typing import Any

from mistral_serve.gateway.dialect import Translation
from mistral_serve.gateway.reshape import Document, MistralAnswer
from mistral_serve.protocol.embeddings import OutputDtype, converted, encoded

#: Mistral's fields the engine does not take.
_MISTRAL_ONLY = ("output_dimension", "output_dtype", "metadata")


def translate(document: dict[str, Any]) -> Translation | None:
    """The engine's request for an embedding request; None when it goes as sent."""
    if not any(field in document for field in _MISTRAL_ONLY):
        return None
    engine = {key: value for key, value in document.items() if key not in _MISTRAL_ONLY}
    if document.get("output_dimension") is not None:
        engine["dimensions"] = document["output_dimension"]
    dtype: OutputDtype = document.get("output_dtype") or "float"
    if dtype == "float":
        return Translation(engine, None)
    engine["encoding_format"] = "float"  # the gateway converts, and encodes if asked
    shape = AsDtype(dtype, base64=document.get("encoding_format") == "base64")
    return Translation(engine, MistralAnswer(shape))


class AsDtype:
    """Each vector of a whole answer as ``dtype``'s numbers (or their base64 bytes)."""

    def __init__(self, dtype: OutputDtype, *, base64: bool) -> None:
        self._dtype = dtype
        self._base64 = base64

    def whole(self, answer: Document) -> Document:
        data = []
        for item in answer.get("data") or []:
            values = converted(item["embedding"], self._dtype)
            embedding = encoded(values, self._dtype) if self._base64 else values
            data.append({**item, "embedding": embedding})
        return {**answer, "data": data}

    def event(self, chunk: Document) -> Document:
        return chunk  # embeddings are never streamed
