"""Which NVIDIA GPUs are visible, and how they are split between engine replicas.

Found with ``nvidia-smi`` rather than by importing torch: it answers in milliseconds and works
in the gateway's environment, which need not have CUDA libraries.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping

from mistral_serve.config import Settings
from mistral_serve.errors import ConfigError


def visible_gpus(env: Mapping[str, str]) -> list[str]:
    """The GPU ids engines may use: CUDA_VISIBLE_DEVICES in ``env`` (the CLI's environment) if
    set, else every GPU nvidia-smi sees."""
    found = _nvidia_smi_indexes()
    if not found:
        return []
    restricted = env.get("CUDA_VISIBLE_DEVICES")
    if restricted is None:
        return found
    return [part.strip() for part in restricted.split(",") if part.strip() not in ("", "-1")]


def _nvidia_smi_indexes() -> list[str]:
    return [row[0] for row in _nvidia_smi("index")]


def gpu_memory_gib(gpu_ids: list[str]) -> float | None:
    """The smallest total memory among ``gpu_ids`` (GiB), as nvidia-smi reports it; None when
    it cannot be read. (An H100 80GB HBM3 answers ``0, 81559``: 79.6 GiB; checked on one.)"""
    rows = _nvidia_smi("index,memory.total", "--format=csv,noheader,nounits")
    sizes = [
        int(row[1]) / 1024
        for row in rows
        if len(row) == 2 and row[0] in gpu_ids and row[1].isdigit()
    ]
    return min(sizes) if sizes else None


def _nvidia_smi(fields: str, form: str = "--format=csv,noheader") -> list[list[str]]:
    """nvidia-smi's answer to ``--query-gpu=fields``, one list of values per GPU."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        result = subprocess.run(
            [binary, f"--query-gpu={fields}", form],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [
        [value.strip() for value in line.split(",")]
        for line in result.stdout.splitlines()
        if line.strip()
    ]


def replica_count(settings: Settings, gpu_ids: list[str]) -> int:
    """How many engines to start: ENGINE_REPLICAS, or as many as the GPUs hold ('auto')."""
    tp = settings.tensor_parallel_size
    if not gpu_ids:
        if tp > 1:
            raise ConfigError(
                f"TENSOR_PARALLEL_SIZE: {tp} needs GPUs, but none is visible "
                "(engines on the CPU run with 1)"
            )
        return 1 if settings.engine_replicas == "auto" else settings.engine_replicas
    if tp > len(gpu_ids):
        raise ConfigError(
            f"TENSOR_PARALLEL_SIZE: {tp} GPUs per engine, but only {len(gpu_ids)} visible"
        )
    if settings.engine_replicas == "auto":
        return len(gpu_ids) // tp
    return settings.engine_replicas


def slice_gpus(gpu_ids: list[str], replicas: int, tensor_parallel_size: int) -> list[list[str]]:
    """Replica i gets GPUs [i*tp, (i+1)*tp): disjoint slices, in the order they are visible."""
    needed = replicas * tensor_parallel_size
    if needed > len(gpu_ids):
        raise ConfigError(
            f"ENGINE_REPLICAS: {replicas} engines x TENSOR_PARALLEL_SIZE {tensor_parallel_size} "
            f"need {needed} GPUs, but {len(gpu_ids)} are visible"
        )
    tp = tensor_parallel_size
    return [gpu_ids[i * tp : (i + 1) * tp] for i in range(replicas)]
