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

from mistral_common.protocol.fim.request import FIMRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from mistral_serve.models.hub import local_folder


def tokenizer_file(folder: Path) -> Path | None:
    """The Mistral tokenizer a checkpoint folder ships, if any."""
    if (folder / "tekken.json").is_file():
        return folder / "tekken.json"
    versioned = [
        (version, path)
        for path in folder.glob("tokenizer.model.v*")
        if (version := _version(path)) is not None
    ]
    return max(versioned)[1] if versioned else None


def has_fim_tokens(folder: Path) -> bool:
    """Whether a checkpoint folder's Mistral tokenizer has the FIM control tokens (every
    tekken tokenizer, and the SentencePiece ones from v2 on), judged by the file's name."""
    path = tokenizer_file(folder)
    return path is not None and (path.name == "tekken.json" or (_version(path) or 0) >= 2)


def _version(path: Path) -> int | None:
    found = re.search(r"\.v(\d+)$", path.name)
    return int(found.group(1)) if found else None


def fim_tokenizer(root: str, hub_cache: Path | None) -> MistralTokenizer | None:
    """The tokenizer of the model served from ``root`` (an engine's --model), when it is on
    this machine (a folder, or in the Hugging Face ``hub_cache``) and has FIM tokens; None
    otherwise. Reads files: call it off the event loop."""
    folder = local_folder(root, hub_cache)
    if folder is None or not has_fim_tokens(folder):
        return None
    return MistralTokenizer.from_file(str(tokenizer_file(folder)))


def encode_fim(tokenizer: MistralTokenizer, prompt: str, suffix: str | None) -> list[int]:
    """The token ids of a fill-in-the-middle request."""
    return tokenizer.encode_fim(FIMRequest(prompt=prompt, suffix=suffix)).tokens
