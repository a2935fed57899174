"""FIM encoding is mistral_common's, with the served checkpoint's own tokenizer."""

from __future__ import annotations

from pathlib import Path

from mistral_common.protocol.fim.request import FIMRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from mistral_serve.models.tokenizers import encode_fim, fim_tokenizer, tokenizer_file


def test_the_demo_v3_checkpoint_encodes_fim_as_mistral_common_does(built):
    tokenizer = fim_tokenizer(str(built["v3"]), None)
    reference = MistralTokenizer.from_file(str(built["v3"] / "tokenizer.model.v3"))
    ids = encode_fim(tokenizer, "def add(a, b):\n    return ", "\n\nprint(add(1, 2))")
    expected = reference.encode_fim(
        FIMRequest(prompt="def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))")
    ).tokens
    assert ids == expected
    inner = reference.instruct_tokenizer
    assert ids[:2] == [inner.BOS, inner.SUFFIX] and inner.PREFIX in ids  # [BOS][SUFFIX]…[PREFIX]…
    assert encode_fim(tokenizer, "x = ", None)[:2] == [inner.BOS, inner.SUFFIX]


def test_no_fim_without_a_mistral_tokenizer_of_v2_or_later(built, tmp_path: Path):
    assert fim_tokenizer(str(built["v1"]), None) is None  # Hugging Face format
    assert fim_tokenizer(str(tmp_path), None) is None  # no tokenizer at all
    assert fim_tokenizer("acme/not-downloaded", tmp_path) is None


def test_a_hub_id_is_read_from_the_hub_cache_it_is_given(built, tmp_path: Path):
    """As Hugging Face lays a snapshot out: models--ORG--NAME/snapshots/REVISION/."""
    snapshot = tmp_path / "models--acme--coder" / "snapshots" / "abc123"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(built["v3"], target_is_directory=True)
    assert fim_tokenizer("acme/coder", tmp_path) is not None
    assert fim_tokenizer("acme/coder", None) is None  # no cache given: folders only


def test_the_newest_tokenizer_file_is_read(tmp_path: Path):
    for name in ("tokenizer.model.v1", "tokenizer.model.v3", "tokenizer.model.v11"):
        (tmp_path / name).write_text("")
    assert tokenizer_file(tmp_path).name == "tokenizer.model.v11"
    (tmp_path / "tekken.json").write_text("{}")
    assert tokenizer_file(tmp_path).name == "tekken.json"
