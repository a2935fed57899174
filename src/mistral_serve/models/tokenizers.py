"""The served model's own Mistral tokenizer, for what the gateway encodes itself:
fill-in-the-middle prompts, which vLLM's OpenAI server has no endpoint for.

The tokenizer is read from the checkpoint's folder (a local path, or the repo's snapshot in
the Hugging Face cache): ``tekken.json``, else the highest ``tokenizer.model.vN``. Only Mistral's
tokenizers of v2 and later have the FIM control tokens; mistral_common's ``encode_fim`` is the
encoding (``[BOS] [SUFFIX] suffix [PREFIX] prompt``, as Mistral's API builds it).
"""

from __future__ import annotations

import re
from pathlib import Path

from mistral_common.exceptions import TokenizerException
from mistral_common.protocol.fim.request import FIMRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from mistral_serve.models.hub import local_folder


def tokenizer_file(folder: Path) -> Path | None:
    """The Mistral tokenizer a checkpoint folder ships, if any."""
    if (folder / "tekken.json").is_file():
        return folder / "tekken.json"
    versioned = [
        (int(found.group(1)), path)
        for path in folder.glob("tokenizer.model.v*")
        if (found := re.search(r"\.v(\d+)$", path.name))
    ]
    return max(versioned)[1] if versioned else None


def fim_tokenizer(root: str) -> MistralTokenizer | None:
    """The tokenizer of the model served from ``root`` (an engine's --model), when it is on
    this machine and has FIM tokens; None otherwise. Reads files: call it off the event loop."""
    folder = local_folder(root)
    path = tokenizer_file(folder) if folder is not None else None
    if path is None:
        return None
    tokenizer = MistralTokenizer.from_file(str(path))
    try:
        encode_fim(tokenizer, "", "")
    except TokenizerException:  # v1: no [PREFIX]/[SUFFIX] tokens
        return None
    return tokenizer


def encode_fim(tokenizer: MistralTokenizer, prompt: str, suffix: str | None) -> list[int]:
    """The token ids of a fill-in-the-middle request."""
    return tokenizer.encode_fim(FIMRequest(prompt=prompt, suffix=suffix)).tokens
