import sys

from mistral_serve.config import Settings
from mistral_serve.engines.vllm_args import (
    MISTRAL_FORMAT_ARGS,
    VLLM_SERVER_MODULE,
    build_vllm_args,
    engine_command,
    engine_patches_env,
    engine_telemetry_env,
)


def build(on_gpu: bool, mistral_format: bool = False, model_args=(), **values) -> list[str]:
    return build_vllm_args(
        Settings(_env_file=None, **values),
        model="mistralai/Mistral-7B-Instruct-v0.1",
        served_names=["mistral-7b", "alias"],
        mistral_format=mistral_format,
        model_args=model_args,
        port=41000,
        on_gpu=on_gpu,
    )


def value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_gpu_engine_defaults():
    args = build(on_gpu=True)
    assert value(args, "--model") == "mistralai/Mistral-7B-Instruct-v0.1"
    assert args[args.index("--served-model-name") + 1 : args.index("--served-model-name") + 3] == [
        "mistral-7b",
        "alias",
    ]
    assert value(args, "--host") == "127.0.0.1"  # engines are never exposed
    assert value(args, "--port") == "41000"
    assert value(args, "--dtype") == "bfloat16"
    assert value(args, "--gpu-memory-utilization") == "0.9"
    assert value(args, "--tensor-parallel-size") == "1"
    assert "--enable-prefix-caching" in args
    assert "--enforce-eager" not in args
    assert "--max-model-len" not in args
    assert "--tokenizer-mode" not in args


def test_cpu_engine_uses_eager_mode_and_a_smaller_memory_share():
    args = build(on_gpu=False)
    assert "--enforce-eager" in args
    assert value(args, "--gpu-memory-utilization") == "0.3"
    assert value(args, "--dtype") == "auto"


def test_settings_are_passed_through():
    args = build(
        on_gpu=True,
        tensor_parallel_size=2,
        gpu_memory_utilization=0.8,
        max_model_len=16384,
        dtype="float16",
    )
    assert value(args, "--tensor-parallel-size") == "2"
    assert value(args, "--gpu-memory-utilization") == "0.8"
    assert value(args, "--max-model-len") == "16384"
    assert value(args, "--dtype") == "float16"


def test_mistral_format_checkpoints_use_mistral_tokenizer_config_and_loader():
    args = build(on_gpu=True, mistral_format=True)
    joined = " ".join(args)
    assert " ".join(MISTRAL_FORMAT_ARGS) in joined
    assert value(args, "--tokenizer-mode") == "mistral"
    assert value(args, "--config-format") == "mistral"
    assert value(args, "--load-format") == "mistral"


def test_extra_args_come_last_so_they_win():
    args = build(
        on_gpu=True,
        model_args=["--seed", "1"],
        engine_extra_args="--max-num-seqs 8 --gpu-memory-utilization 0.5",
    )
    assert args[-4:] == ["--max-num-seqs", "8", "--gpu-memory-utilization", "0.5"]
    assert args[-6:-4] == ["--seed", "1"]


def test_engine_command_runs_the_server_module_with_this_python():
    assert engine_command(["--port", "1"]) == [
        sys.executable,
        "-m",
        VLLM_SERVER_MODULE,
        "--port",
        "1",
    ]


def test_engines_export_their_spans_where_the_gateway_does():
    assert "--otlp-traces-endpoint" not in build(on_gpu=True)
    http = build(on_gpu=True, otel_exporter_otlp_endpoint="http://collector:4318")
    assert value(http, "--otlp-traces-endpoint") == "http://collector:4318/v1/traces"
    grpc = build(
        on_gpu=True,
        otel_exporter_otlp_endpoint="http://collector:4317",
        otel_exporter_otlp_protocol="grpc",
    )
    assert value(grpc, "--otlp-traces-endpoint") == "http://collector:4317"


def test_engine_telemetry_env_names_the_engine_and_carries_protocol_and_headers():
    assert engine_telemetry_env(Settings(_env_file=None), 0) == {}
    settings = Settings(
        _env_file=None,
        otel_exporter_otlp_endpoint="https://ingest.eu.signoz.cloud:443",
        otel_exporter_otlp_protocol="grpc",
        otel_exporter_otlp_headers="signoz-ingestion-key=k=1",
        otel_service_name="llm",
        otel_resource_attributes="deployment.environment.name=prod",
    )
    assert engine_telemetry_env(settings, 1) == {
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_SERVICE_NAME": "llm-engine",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod,"
        "mistral_serve.engine.replica=1",
        "OTEL_EXPORTER_OTLP_HEADERS": "signoz-ingestion-key=k%3D1",
    }


def test_engines_are_told_whether_to_patch_vllm():
    assert engine_patches_env(Settings(_env_file=None), {}) == {"ENGINE_PATCHES": "on"}
    off = Settings(_env_file=None, engine_patches="off")
    assert engine_patches_env(off, {"VLLM_PLUGINS": "a"}) == {"ENGINE_PATCHES": "off"}


def test_a_list_of_allowed_vllm_plugins_gets_the_patches_added():
    on = Settings(_env_file=None)
    assert (
        engine_patches_env(on, {"VLLM_PLUGINS": "a,b"})["VLLM_PLUGINS"]
        == "a,b,mistral_serve_patches"
    )
    assert engine_patches_env(on, {"VLLM_PLUGINS": ""})["VLLM_PLUGINS"] == "mistral_serve_patches"
    assert "VLLM_PLUGINS" not in engine_patches_env(on, {"VLLM_PLUGINS": "mistral_serve_patches"})
