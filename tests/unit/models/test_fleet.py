"""The models file: a valid fleet is read as written, and each kind of mistake is refused
with one line naming the entry and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mistral_serve.errors import ConfigError
from mistral_serve.models.fleet import demands_of, load_fleet

EXAMPLE = Path(__file__).parents[3] / "config" / "models.example.yaml"

CHAT = {"name": "chat", "source": "mistralai/Mistral-7B-Instruct-v0.3"}
EMBED = {"name": "e5", "source": "intfloat/e5-mistral-7b-instruct", "max_model_len": 4096}


def write(tmp_path: Path, *models: dict) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": list(models)}))
    return path


def test_the_example_file_is_a_valid_fleet():
    fleet = load_fleet(EXAMPLE)
    chat = fleet.model("mistral-small-latest")  # an alias finds its model
    assert chat.name == "mistral-7b-instruct" and chat.replicas == 2
    assert [adapter.name for adapter in chat.adapters] == ["support-bot", "sql-writer"]
    assert fleet.model("e5-mistral").kind == "embed"


def test_a_fleet_is_read_as_written(tmp_path: Path):
    remote = {"name": "code", "engine_urls": ["http://10.0.0.7:8000/"]}
    chat = {**CHAT, "engine_args": "--max-num-seqs 64 --seed 1", "gpu_memory_share": 0.7}
    fleet = load_fleet(write(tmp_path, chat, EMBED, remote))
    entry = fleet.model("chat")
    assert entry.engine_args == ("--max-num-seqs", "64", "--seed", "1")
    assert (entry.gpu_memory_share, entry.tensor_parallel_size, entry.kind) == (0.7, 1, None)
    code = fleet.model("code")
    assert code.engine_urls == ("http://10.0.0.7:8000",) and not code.started_here
    assert fleet.model("nothing") is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**CHAT, "replicas": 0}, "models[0] (chat): replicas: Input should be greater than"),
        ({**CHAT, "tensor_parallel_size": 3}, "models[0] (chat): tensor_parallel_size: "),
        ({**CHAT, "gpu_memory_share": 1.0}, "models[0] (chat): gpu_memory_share: Input should "),
        ({**CHAT, "kind": "rerank"}, "models[0] (chat): kind: Input should be 'generate' or"),
        ({**CHAT, "max_model_len": 8}, "models[0] (chat): max_model_len: "),
        ({**CHAT, "temperature": 1}, "models[0] (chat): temperature: Extra inputs are not"),
        ({**CHAT, "name": "has space"}, "models[0] (has space): name: String should match"),
        ({"source": "x"}, "models[0]: name: Field required"),
        ({"name": "nowhere"}, "models[0] (nowhere): give either source"),
        ({**CHAT, "engine_urls": ["http://x:1"]}, "models[0] (chat): give either source"),
        ({"name": "r", "engine_urls": ["x:1"]}, "models[0] (r): engine_urls: 'x:1' is not an http"),
        (
            {**EMBED, "kind": "embed", "adapters": [{"name": "a", "path": "/a"}]},
            "models[0] (e5): adapters: an embedding model takes no LoRA adapters",
        ),
        (
            {**CHAT, "adapters": [{"name": "a"}]},
            "models[0] (chat): adapters.0.path: Field required",
        ),
    ],
)
def test_each_mistake_is_named_by_entry_and_field(tmp_path: Path, entry, message):
    with pytest.raises(ConfigError) as refused:
        load_fleet(write(tmp_path, entry))
    text = str(refused.value)
    assert text.startswith(f"MODELS_FILE {tmp_path / 'models.yaml'}: ")
    assert message in text, text
    assert "\n" not in text


def test_names_are_unique_across_models_aliases_and_adapters(tmp_path: Path):
    twice = {**EMBED, "aliases": ["chat"]}
    with pytest.raises(ConfigError, match="the name 'chat' is used twice"):
        load_fleet(write(tmp_path, CHAT, twice))
    adapter = {**CHAT, "adapters": [{"name": "e5", "path": "/a"}]}
    with pytest.raises(ConfigError, match="the name 'e5' is used twice"):
        load_fleet(write(tmp_path, adapter, EMBED))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [", "not valid YAML at line"),
        ("- a list", "should be a mapping with a 'models' list"),
        ("models: []", "models: Tuple should have at least 1 item"),
    ],
)
def test_a_file_that_is_no_fleet_is_refused(tmp_path: Path, text, message):
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_fleet(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_fleet(tmp_path / "missing.yaml")


def test_demands_read_each_models_shape_and_kind(tmp_path: Path):
    remote = {"name": "code", "engine_urls": ["http://10.0.0.7:8000"]}
    fleet = load_fleet(write(tmp_path, {**CHAT, "replicas": 2}, EMBED, remote))
    chat, embed = demands_of(fleet, tmp_path)  # the remote engines are placed elsewhere
    assert (chat.model, chat.kind, chat.replicas, chat.max_model_len) == (
        "chat",
        "generate",
        2,
        32768,
    )
    assert (embed.kind, embed.max_model_len) == ("embed", 4096)  # known by its family
    unknown = load_fleet(write(tmp_path, {"name": "x", "source": "acme/unknown"}))
    with pytest.raises(ConfigError, match="models file: x: 'acme/unknown' is not a local"):
        demands_of(unknown, tmp_path)
    adapters = {**EMBED, "adapters": [{"name": "a", "path": "/a"}]}  # kind read, not given
    with pytest.raises(ConfigError, match="e5: an embedding model takes no adapters"):
        demands_of(load_fleet(write(tmp_path, adapters)), tmp_path)
