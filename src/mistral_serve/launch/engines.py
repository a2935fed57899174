"""The engines `up` starts: one model from MODEL_ID (today's variables), or the fleet of a models
file (MODELS_FILE), each engine a command, an environment and a loopback URL, placed on the
visible GPUs (or the CPU) before anything loads.

This is `up`'s orchestration above the supervisor: it reads the models layer (what to serve,
where it fits) and writes the engines layer's specs (vLLM's arguments), which the supervisor
runs. It sits above both, as they may not import each other.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

from mistral_serve.config import Settings
from mistral_serve.engines.gpus import gpu_memory_gib, replica_count, slice_gpus, visible_gpus
from mistral_serve.engines.supervisor import EngineSpec, free_port
from mistral_serve.engines.vllm_args import (
    build_vllm_args,
    engine_command,
    engine_patches_env,
    engine_telemetry_env,
)
from mistral_serve.errors import ConfigError
from mistral_serve.models import planner
from mistral_serve.models.catalog import UnknownModelError, architecture_of
from mistral_serve.models.fleet import Fleet, ModelEntry, demands_of, kind_of_entry, load_fleet
from mistral_serve.models.placement import Placement, PlacementError, place
from mistral_serve.models.profiles import (
    ServedModel,
    locate,
    locate_adapter,
    resolve_model,
    served_model,
)

log = logging.getLogger("mistral_serve")


def plan_engines(
    settings: Settings, environ: Mapping[str, str]
) -> tuple[list[EngineSpec], list[str]]:
    """The engines `up` starts, and the URLs of engines run elsewhere that the gateway also
    routes to (a models file's ``engine_urls``)."""
    if settings.models_file is None:
        return plan_up(settings, environ), []
    fleet = load_fleet(settings.models_file)
    remote = [url for entry in fleet.models for url in entry.engine_urls]
    return fleet_specs(settings, fleet, environ), remote


def engine_specs(
    settings: Settings,
    model: ServedModel,
    gpu_slices: Sequence[Sequence[str]] | None,
    replicas: int,
    environ: Mapping[str, str],
) -> list[EngineSpec]:
    """One spec per replica: a loopback port (free, or ENGINE_BASE_PORT + replica) and, on GPUs,
    its own slice of them. Engines run in ``environ`` (this process's) plus their own."""
    return [
        engine_spec(
            settings,
            model,
            index,
            None if gpu_slices is None else gpu_slices[index],
            _base_env(settings, environ, on_gpu=gpu_slices is not None),
        )
        for index in range(replicas)
    ]


def engine_spec(
    settings: Settings,
    model: ServedModel,
    index: int,
    gpus: Sequence[str] | None,
    base_env: Mapping[str, str],
    *,
    name: str | None = None,
    extra_args: Sequence[str] = (),
) -> EngineSpec:
    """Engine ``index`` of what `up` starts: ``model`` on ``gpus`` (None: the CPU), with
    ``settings``' engine flags (per model, for a fleet) and ``extra_args`` after the model's."""
    port = free_port() if settings.engine_base_port is None else settings.engine_base_port + index
    env = {**base_env, **engine_telemetry_env(settings, index)}
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    args = build_vllm_args(
        settings,
        model=model.source,
        served_names=model.served_names,
        mistral_format=model.mistral_format,
        model_args=(*model.engine_args, *extra_args),
        port=port,
        on_gpu=gpus is not None,
    )
    name = name or f"engine {index}"
    return EngineSpec(name, engine_command(args), env, f"http://127.0.0.1:{port}")


def _base_env(settings: Settings, environ: Mapping[str, str], *, on_gpu: bool) -> dict[str, str]:
    """Every engine's environment: this process's, the hub token and caches, the patches."""
    base_env = dict(environ)
    base_env.update(PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore::DeprecationWarning")
    if settings.hugging_face_hub_token is not None:
        token = settings.hugging_face_hub_token.get_secret_value()
        base_env.update(HF_TOKEN=token, HUGGING_FACE_HUB_TOKEN=token)
    for name, folder in (("HF_HUB_CACHE", settings.hf_hub_cache), ("HF_HOME", settings.hf_home)):
        if folder is not None:  # also when only .env says it: engines look where the gateway does
            base_env[name] = str(folder)
    base_env.update(engine_patches_env(settings, environ))
    if not on_gpu:
        base_env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of host memory for KV cache
    return base_env


def fleet_specs(settings: Settings, fleet: Fleet, environ: Mapping[str, str]) -> list[EngineSpec]:
    """Every engine of the models file's models started here, placed on the visible GPUs by
    the planner (its GPUs as CUDA_VISIBLE_DEVICES, its share as --gpu-memory-utilization), or
    on the CPU when none is visible. A fleet that does not fit is refused before anything
    loads."""
    gpus = visible_gpus(environ)
    where = _placed(settings, fleet, gpus) if gpus else {}
    base_env = _base_env(settings, environ, on_gpu=bool(gpus))
    # Adapters added at run time (/admin/adapters) reach the engines through vLLM's runtime
    # endpoints, which only the gateway calls (engines listen on loopback).
    base_env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    specs: list[EngineSpec] = []
    for entry in fleet.models:
        if not entry.started_here:
            continue
        if not gpus and entry.tensor_parallel_size > 1:
            raise ConfigError(
                f"models file: {entry.name}: tensor_parallel_size {entry.tensor_parallel_size} "
                "needs GPUs, but none is visible (engines on the CPU run with 1)"
            )
        assert entry.source is not None
        model = served_model(settings, entry.source, entry.names)
        kind = kind_of_entry(entry, model.source, settings.hub_cache)
        for replica in range(entry.replicas):
            placed = where.get((entry.name, replica))
            per_model = settings.model_copy(
                update={
                    "tensor_parallel_size": entry.tensor_parallel_size,
                    "max_model_len": entry.max_model_len,
                    "gpu_memory_utilization": placed[1] if placed else None,
                }
            )
            specs.append(
                engine_spec(
                    per_model,
                    model,
                    len(specs),
                    placed[0] if placed else None,
                    base_env,
                    name=f"{entry.name} {replica}",
                    extra_args=_entry_args(settings, entry, kind),
                )
            )
    log.info(
        "serving %d model(s) as %d engine(s) %s",
        len([entry for entry in fleet.models if entry.started_here]),
        len(specs),
        f"on GPUs {','.join(gpus)}" if gpus else "on the CPU (no NVIDIA GPU visible)",
    )
    return specs


def _placed(
    settings: Settings, fleet: Fleet, gpus: list[str]
) -> dict[tuple[str, int], tuple[list[str], float]]:
    """Each engine's GPU ids and memory share, by (model, replica), from the planner."""
    memory = gpu_memory_gib(gpus)
    if memory is None:
        raise ConfigError("models file: the GPUs' memory cannot be read (nvidia-smi)")
    try:
        placement = place_fleet(
            settings, fleet, planner.Gpus(len(gpus), planner.Gpu("GPU", memory))
        )
    except PlacementError as exc:
        raise ConfigError(f"models file: {exc}") from None
    return {
        (engine.model, engine.replica): ([gpus[index] for index in engine.gpus], engine.share)
        for engine in placement.engines
    }


def place_fleet(settings: Settings, fleet: Fleet, gpus: planner.Gpus) -> Placement:
    """The planner's placement of every engine of ``fleet`` on ``gpus`` (`plan --fleet`, and
    `up` on the GPUs it sees); PlacementError when it does not fit."""
    demands = demands_of(fleet, settings.hub_cache, lambda source: locate(settings, source))
    return place(demands, gpus)


def _entry_args(settings: Settings, entry: ModelEntry, kind: str) -> list[str]:
    """vLLM flags of one model of the fleet: its runner, its LoRA adapters, its own flags."""
    args = ["--runner", "pooling"] if kind == "embed" else []
    if entry.takes_adapters:
        args += ["--enable-lora", "--max-loras", str(entry.max_loras)]
    if entry.adapters:
        args.append("--lora-modules")
        args += [
            f"{adapter.name}={locate_adapter(settings, adapter.path)}" for adapter in entry.adapters
        ]
    return args + list(entry.engine_args)


def plan_up(settings: Settings, environ: Mapping[str, str]) -> list[EngineSpec]:
    """The engines `up` starts, in ``environ`` (this process's: CUDA_VISIBLE_DEVICES too)."""
    gpus = visible_gpus(environ)
    replicas = replica_count(settings, gpus)
    slices = slice_gpus(gpus, replicas, settings.tensor_parallel_size) if gpus else None
    model = resolve_model(settings, has_gpu=bool(gpus))
    if model.note:
        log.warning("%s", model.note)
    if gpus:
        check_fits(settings, model, gpus)
    where = (
        f"{replicas} engine(s) x {settings.tensor_parallel_size} GPU(s) on GPUs {','.join(gpus)}"
        if gpus
        else f"{replicas} engine(s) on the CPU (no NVIDIA GPU visible)"
    )
    log.info("serving %s as %s: %s", model.source, ", ".join(model.served_names), where)
    return engine_specs(settings, model, slices, replicas, environ)


def check_fits(settings: Settings, model: ServedModel, gpus: list[str]) -> None:
    """Refuse at once a layout whose engines cannot hold the model (the planner's arithmetic),
    instead of failing after minutes of loading. A model the planner cannot size, or GPUs
    whose memory nvidia-smi does not tell, are left to vLLM."""
    try:
        architecture = architecture_of(model.source, settings.hub_cache)
    except UnknownModelError as exc:
        log.info("not sizing the model before loading it: %s", exc)
        return
    memory = gpu_memory_gib(gpus)
    if memory is None:
        return
    refusal = planner.check_layout(
        architecture,
        planner.Gpus(len(gpus), planner.Gpu("GPU", memory)),
        settings.tensor_parallel_size,
        dtype=_weights_dtype(settings),
        max_model_len=settings.max_model_len,
        utilization=settings.gpu_memory_utilization or planner.DEFAULT_UTILIZATION,
    )
    if refusal is not None:
        raise ConfigError(refusal)


def _weights_dtype(settings: Settings) -> planner.Dtype:
    if re.search(r"--quantization[= ]fp8", settings.engine_extra_args):
        return "fp8"
    return {"float16": "fp16", "float32": "fp32"}.get(settings.dtype, "bf16")
