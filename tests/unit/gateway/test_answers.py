"""Reading an engine's error answer."""

from __future__ import annotations

from mistral_serve.gateway.answers import engine_message


def test_an_engines_reason_is_read_from_either_error_shape():
    assert engine_message(b'{"error": {"message": "no such file"}}') == "no such file"
    assert engine_message(b'{"object": "error", "message": "LoRA off"}') == "LoRA off"
    assert engine_message(b"Internal Server Error") == "Internal Server Error"
    assert engine_message(b"") == "no details"
