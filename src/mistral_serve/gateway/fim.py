"""Fill-in-the-middle, which vLLM's OpenAI server has no endpoint for.

The gateway encodes ``prompt`` and ``suffix`` with the served model's own Mistral tokenizer
(:mod:`mistral_serve.models.tokenizers`, mistral_common's FIM encoding) and sends the token ids
to the engine's ``/v1/completions``; the answer comes back as Mistral's API gives it, a chat
completion (:class:`~mistral_serve.gateway.reshape.ChatFromCompletion`). ``random_seed`` is
the engine's ``seed``; every other field (``max_tokens``, ``min_tokens``, ``stop``,
``temperature``, ``top_p``, vLLM's own) goes as sent. A model whose tokenizer has no FIM tokens,
or is not on the gateway's machine, is a 400 naming the model.

OpenAI's text completion with a ``suffix`` (the ``openai`` SDK's ``completions.create(suffix=
…)``, which vLLM refuses) is encoded the same way; its answer stays a text completion.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from mistral_serve.errors import InvalidRequestError
from mistral_serve.gateway.dialect import Translation, seed_from_random_seed
from mistral_serve.gateway.reshape import ChatFromCompletion
from mistral_serve.models.tokenizers import encode_fim, fim_tokenizer

#: Fields of Mistral's FIM request that are not the engine's.
_NOT_SENT = ("prompt", "suffix", "random_seed", "metadata")


class FimEncoder:
    """``hub_cache``: the Hugging Face cache a served hub id's tokenizer is read from (None:
    only models served from a folder)."""

    def __init__(self, hub_cache: Path | None = None) -> None:
        self._hub_cache = hub_cache
        # A model's tokenizer is read once (off the event loop); None: it has no FIM tokens.
        self._tokenizers: dict[str, asyncio.Future[MistralTokenizer | None]] = {}

    async def translate(self, document: dict[str, Any], root: str) -> Translation:
        """The engine's text completion request for a FIM request to the model at ``root``."""
        tokenizer = await self._fim_tokenizer(document["model"], root)
        engine = {key: value for key, value in document.items() if key not in _NOT_SENT}
        engine["prompt"] = encode_fim(tokenizer, document["prompt"], document.get("suffix"))
        seed_from_random_seed(document, engine)
        return Translation.of(engine, ChatFromCompletion())

    async def completion_with_suffix(self, document: dict[str, Any], root: str) -> Translation:
        """The engine's request for OpenAI's text completion with a ``suffix``: its prompt
        (one text) and suffix encoded as FIM, every other field as sent, the answer as the
        engine gives it."""
        prompt = document["prompt"]
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise InvalidRequestError(
                "`suffix` needs `prompt` to be one text: fill-in-the-middle encodes the text "
                "before and after the completion.",
                param="prompt",
            )
        tokenizer = await self._fim_tokenizer(document["model"], root)
        engine = {key: value for key, value in document.items() if key != "suffix"}
        engine["prompt"] = encode_fim(tokenizer, prompt, document["suffix"])
        return Translation(engine, None)

    async def _fim_tokenizer(self, model: str, root: str) -> MistralTokenizer:
        tokenizer = await self._tokenizer(root)
        if tokenizer is None:
            raise InvalidRequestError(
                f"The model `{model}` does not support fill-in-the-middle: its tokenizer has no "
                "FIM tokens (Mistral's tokenizers from v2 on, e.g. Codestral's), or it is not on "
                "the gateway's machine.",
                param="model",
            )
        return tokenizer

    async def _tokenizer(self, root: str) -> MistralTokenizer | None:
        loading = self._tokenizers.get(root)
        if loading is None:
            loading = asyncio.ensure_future(asyncio.to_thread(fim_tokenizer, root, self._hub_cache))
            self._tokenizers[root] = loading
        try:
            return await asyncio.shield(loading)
        except Exception:
            self._tokenizers.pop(root, None)  # a broken file: try again next time
            raise
