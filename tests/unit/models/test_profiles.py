from pathlib import Path

from mistral_serve.config import DEFAULT_MODEL_ID, Settings
from mistral_serve.models.checkpoint import is_mistral_format_dir
from mistral_serve.models.profiles import DEMO_ENGINE_ARGS, resolve_model


def settings(tmp_path: Path, **values) -> Settings:
    return Settings(_env_file=None, cache_dir=tmp_path, **values)


def test_no_gpu_and_no_model_serves_the_demo_under_the_default_name_too(tmp_path):
    served = resolve_model(settings(tmp_path), has_gpu=False)
    assert served.is_demo
    assert served.served_names == ("demo", DEFAULT_MODEL_ID)
    assert served.mistral_format
    assert "DEMO" in served.note
    assert Path(served.source, "params.json").exists()


def test_gpu_and_no_model_serves_the_default_model(tmp_path):
    served = resolve_model(settings(tmp_path), has_gpu=True)
    assert served.source == DEFAULT_MODEL_ID
    assert served.served_names == (DEFAULT_MODEL_ID,)
    assert not served.mistral_format  # v0.1 is served in HF format with its chat template
    assert served.note is None


def test_demo_ids(tmp_path):
    v3 = resolve_model(settings(tmp_path, model_id="demo"), has_gpu=True)
    v1 = resolve_model(settings(tmp_path, model_id="demo-v1"), has_gpu=False)
    assert (v3.served_names, v3.mistral_format) == (("demo",), True)
    assert (v1.served_names, v1.mistral_format) == (("demo-v1",), False)
    assert v3.engine_args == DEMO_ENGINE_ARGS


def test_served_model_name_wins(tmp_path):
    served = resolve_model(
        settings(
            tmp_path,
            model_id="mistralai/Mistral-Small-24B-Instruct-2501",
            served_model_name="small",
        ),
        has_gpu=True,
    )
    assert served.served_names == ("small",)
    assert served.mistral_format


def test_hub_ids_in_mistral_format():
    for repo, expected in [
        ("mistralai/Mistral-7B-Instruct-v0.3", True),
        ("mistralai/Ministral-8B-Instruct-2410", True),
        ("mistralai/Mistral-7B-Instruct-v0.1", False),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", False),
        ("someone/Mistral-7B-Instruct-v0.3-GPTQ", False),
    ]:
        served = resolve_model(Settings(_env_file=None, model_id=repo), has_gpu=True)
        assert served.mistral_format is expected, repo


def test_local_folders_are_detected_by_their_files(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert not is_mistral_format_dir(folder)
    for name in ("params.json", "consolidated.safetensors", "tekken.json"):
        (folder / name).write_text("{}")
    assert is_mistral_format_dir(folder)
    served = resolve_model(Settings(_env_file=None, model_id=str(folder)), has_gpu=True)
    assert served.source == str(folder.resolve())
    assert served.mistral_format
