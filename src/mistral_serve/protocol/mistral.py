"""Mistral's API where it differs from OpenAI's: its chat fields, the guardrail prompt of
``safe_prompt``, and what a model card says a model can do.

The official ``mistralai`` SDK (client-python) and Mistral's API reference are the
specification. docs/mistral-api.md says, field by field, what the gateway maps, accepts and
ignores, or refuses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

#: The system prompt Mistral's API prepends when a request sets ``safe_prompt`` (as Mistral
#: documents it under "Guardrailing").
SAFE_PROMPT = (
    "Always assist with care, respect, and truth. Respond with utmost utility yet securely. "
    "Avoid harmful, unethical, prejudiced, or negative content. "
    "Ensure replies promote fairness and positivity."
)

#: Largest seed an engine takes (a signed 64-bit integer).
MAX_SEED = 2**63 - 1


class MistralChatFields(BaseModel):
    """The chat fields only Mistral's API has (types and ranges; their meaning is the Mistral
    dialect's, in the gateway)."""

    model_config = ConfigDict(extra="allow", strict=True)

    random_seed: StrictInt | None = Field(None, ge=0, le=MAX_SEED)
    safe_prompt: StrictBool | None = None
    prompt_mode: Literal["reasoning"] | None = None
    parallel_tool_calls: StrictBool | None = None
    metadata: dict[StrictStr, Any] | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a served model can do, as Mistral's model cards say it (``capabilities``); only
    what is true of the model and the way it is served."""

    completion_chat: bool = False
    function_calling: bool = False
    completion_fim: bool = False
    vision: bool = False
    reasoning: bool = False

    def to_card(self) -> dict[str, bool]:
        """The card's ``capabilities`` object: every field the SDK knows, false where absent."""
        return {**_NEVER, **asdict(self)}


#: The capabilities a self-hosted generative model never has here (served by other products).
_NEVER = {
    name: False
    for name in (
        "fine_tuning",
        "ocr",
        "classification",
        "moderation",
        "audio",
        "audio_transcription",
        "audio_transcription_realtime",
        "audio_speech",
        "unified_resources",
    )
}
