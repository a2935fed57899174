"""Mistral's fill-in-the-middle request (``POST /v1/fim/completions``): the text before the
gap (``prompt``) and after it (``suffix``); the answer is a chat completion whose content
fills the gap."""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictStr

from mistral_serve.protocol.mistral import MAX_SEED
from mistral_serve.protocol.openai import GenerationRequest


class FIMCompletionRequest(GenerationRequest):
    prompt: StrictStr
    suffix: StrictStr | None = None
    random_seed: int | None = Field(None, ge=0, le=MAX_SEED, strict=True)
    metadata: dict[StrictStr, Any] | None = None
