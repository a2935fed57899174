import pytest
from pydantic import ValidationError

from mistral_serve.config import DEFAULT_MODEL_ID, Settings, describe_validation_error


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """Settings must come from this test's environment only: no .env, no inherited variables."""
    monkeypatch.chdir(tmp_path)
    for name in [*Settings.model_fields, "MISTRAL_SERVE_CACHE_DIR"]:
        monkeypatch.delenv(name.upper(), raising=False)


def problem(**env) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**env)
    return describe_validation_error(caught.value)


def test_defaults():
    settings = Settings()
    assert settings.model_id is None  # chosen at start: the default model, or the demo on CPU
    assert DEFAULT_MODEL_ID == "mistralai/Mistral-7B-Instruct-v0.1"
    assert settings.port == 8000
    assert settings.host == "0.0.0.0"
    assert settings.tensor_parallel_size == 1
    assert settings.engine_replicas == "auto"
    assert settings.engine_urls == []
    assert settings.log_format == "text"


def test_reads_environment_and_dotenv(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("PORT=9001\nMODEL_ID=demo-v1\nLOG_LEVEL=debug\n")
    monkeypatch.setenv("PORT", "9002")  # the environment wins over .env
    settings = Settings()
    assert settings.port == 9002
    assert settings.model_id == "demo-v1"
    assert settings.log_level == "DEBUG"


def test_engine_urls_are_split_and_checked(monkeypatch):
    monkeypatch.setenv("ENGINE_URLS", " http://a:8001/, http://b:8002 ")
    assert Settings().engine_urls == ["http://a:8001", "http://b:8002"]
    monkeypatch.setenv("ENGINE_URLS", "a:8001")
    with pytest.raises(ValidationError):
        Settings()


def test_engine_urls_take_dns_names_with_a_port(monkeypatch):
    monkeypatch.setenv("ENGINE_URLS", "dns://engines.default.svc:8000,http://c:8003")
    assert Settings().engine_urls == ["dns://engines.default.svc:8000", "http://c:8003"]
    for bad in ("dns://engines", "dns://engines:port", "dns://:8000", "dns://engines:8000/v1"):
        monkeypatch.setenv("ENGINE_URLS", bad)
        with pytest.raises(ValidationError, match="dns://name:port"):
            Settings()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PORT", "abc", "PORT: Input should be a valid integer"),
        ("PORT", "70000", "PORT: Input should be less than or equal to 65535"),
        ("TENSOR_PARALLEL_SIZE", "0", "TENSOR_PARALLEL_SIZE: Input should be greater than"),
        ("ENGINE_REPLICAS", "0", "ENGINE_REPLICAS: must be 'auto' or a whole number"),
        ("ENGINE_REPLICAS", "two", "ENGINE_REPLICAS: must be 'auto' or a whole number"),
        ("GPU_MEMORY_UTILIZATION", "1.5", "GPU_MEMORY_UTILIZATION: Input should be less than"),
        ("DTYPE", "fp8", "DTYPE: Input should be"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT: Input should be 'text' or 'json'"),
        ("ENGINE_EXTRA_ARGS", "--x 'unclosed", "ENGINE_EXTRA_ARGS: cannot be split"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp", "OTEL_EXPORTER_OTLP_PROTOCOL: Input should be"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "OTEL_EXPORTER_OTLP_ENDPOINT: must be"),
        ("OTEL_RESOURCE_ATTRIBUTES", "a=1,oops", "OTEL_RESOURCE_ATTRIBUTES: must be key=value"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "=x", "OTEL_EXPORTER_OTLP_HEADERS: must be key=value"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    message = problem()
    assert message.startswith(expected), message
    assert "\n" not in message


def test_secrets_are_never_echoed(monkeypatch):
    token = Settings(hugging_face_hub_token="hf_very_secret").hugging_face_hub_token
    assert "hf_very_secret" not in repr(token)
    assert "hf_very_secret" not in str(Settings(hugging_face_hub_token="hf_very_secret"))


def test_bad_otlp_headers_are_not_echoed(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "signoz-ingestion-key")
    assert "signoz-ingestion-key" not in problem()


def test_replicas_auto_or_number(monkeypatch):
    monkeypatch.setenv("ENGINE_REPLICAS", "2")
    assert Settings().engine_replicas == 2
    monkeypatch.setenv("ENGINE_REPLICAS", "AUTO")
    assert Settings().engine_replicas == "auto"


def test_blank_optional_values_mean_unset(monkeypatch):
    monkeypatch.setenv("MODEL_ID", "")
    monkeypatch.setenv("MAX_MODEL_LEN", "")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "")
    settings = Settings()
    assert settings.model_id is None
    assert settings.max_model_len is None
    assert settings.hugging_face_hub_token is None


def test_extra_args_are_shell_words(monkeypatch):
    monkeypatch.setenv("ENGINE_EXTRA_ARGS", "--max-num-seqs 64 --chat-template '/a b/t.jinja'")
    assert Settings().engine_extra_argv == [
        "--max-num-seqs",
        "64",
        "--chat-template",
        "/a b/t.jinja",
    ]


def test_sample_env_documents_every_setting():
    from pathlib import Path

    sample = Path(__file__).parents[2] / "config" / "sample.env"
    text = sample.read_text()
    documented = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in text.splitlines()
        if "=" in line and line.lstrip("# ").split("=", 1)[0].strip().isupper()
    }
    aliased = {"cache_dir", "data_dir"}  # read as MISTRAL_SERVE_CACHE_DIR / _DATA_DIR
    expected = {name.upper() for name in Settings.model_fields if name not in aliased}
    expected |= {"MISTRAL_SERVE_CACHE_DIR", "MISTRAL_SERVE_DATA_DIR"}
    assert expected <= documented, f"missing from sample.env: {sorted(expected - documented)}"


def test_sample_env_copied_to_dotenv_is_valid(tmp_path):
    from pathlib import Path

    sample = Path(__file__).parents[2] / "config" / "sample.env"
    (tmp_path / ".env").write_text(sample.read_text())
    settings = Settings()
    assert settings.model_id is None
    assert settings.port == 8000
    assert settings.engine_urls == []
    assert "~" not in str(settings.cache_dir)


def test_the_hugging_face_cache_is_where_its_own_variables_say(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings().hub_cache == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", "~/hf")
    assert Settings().hub_cache == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert Settings().hub_cache == tmp_path / "elsewhere"
