"""Where each engine of a fleet runs: which GPUs, and what share of their memory.

vLLM lets several engines share a GPU, each taking the share of its memory given by
``--gpu-memory-utilization`` (a 7B chat engine at 0.70 and an embedding engine at 0.20 on one
H100). The placement:

1. gives every engine its share: the models file's ``gpu_memory_share``, or else the least
   that holds its weights, the runtime's reserve and :data:`planner.BATCH_TARGET` sequences of
   its MAX_MODEL_LEN (rounded up to 0.05);
2. places the engines, widest and largest first (so tensor-parallel groups find whole GPUs),
   each on the emptiest GPU (or aligned group of tensor-parallel GPUs) that holds it: replicas
   spread over the GPUs, and small engines fill in beside large ones; every GPU holds at
   most :data:`MAX_GPU_SHARE` in all;
3. grows the generative engines whose share the file did not give into what their GPUs have
   left, in proportion to what they took, so no GPU memory is left idle (more KV cache is
   more concurrent sequences; an embedding engine keeps its least: it decodes nothing);
4. sizes each engine at its share with the planner's arithmetic (weights, KV tokens,
   sequences).

A fleet that does not fit is refused with what would make it fit. Pure arithmetic: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mistral_serve.models.checkpoint import Architecture, Kind
from mistral_serve.models.planner import (
    BATCH_TARGET,
    GIB,
    RUNTIME_RESERVE_GIB,
    Dtype,
    Gpus,
    Layout,
    layout,
    per_gpu,
)

#: What all the engines on one GPU may take together: the rest is for each process's CUDA
#: context outside vLLM's own account, and the driver.
MAX_GPU_SHARE = 0.95
#: Shares are given in steps of this much.
STEP = 0.05


@dataclass(frozen=True)
class Demand:
    """What one model of the fleet asks for."""

    model: str
    architecture: Architecture
    kind: Kind
    replicas: int
    tensor_parallel: int
    share: float | None  # None: the placement decides
    max_model_len: int
    dtype: Dtype = "bf16"
    adapters: tuple[str, ...] = ()
    max_loras: int = 0  # adapters one engine holds at once (their memory is not counted)


@dataclass(frozen=True)
class PlacedEngine:
    model: str
    kind: Kind
    replica: int
    gpus: tuple[int, ...]
    share: float  # of each of its GPUs' memory: its --gpu-memory-utilization
    max_model_len: int
    layout: Layout
    adapters: tuple[str, ...] = ()
    max_loras: int = 0


@dataclass(frozen=True)
class Placement:
    gpus: Gpus
    engines: tuple[PlacedEngine, ...]

    def used(self, gpu: int) -> float:
        return round(sum(each.share for each in self.engines if gpu in each.gpus), 2)


class PlacementError(ValueError):
    """The fleet does not fit; the message says why and what would make it fit."""


def minimum_share(demand: Demand, gpus: Gpus) -> float:
    """The least share, in steps of :data:`STEP`, at which one engine of ``demand`` holds
    its weights, the runtime's reserve and BATCH_TARGET sequences of its MAX_MODEL_LEN."""
    weights, kv_per_token = per_gpu(demand.architecture, demand.tensor_parallel, demand.dtype)
    need = weights + RUNTIME_RESERVE_GIB * GIB + kv_per_token * demand.max_model_len * BATCH_TARGET
    return _step_up(need / (gpus.gpu.memory_gib * GIB))


def place(demands: list[Demand], gpus: Gpus) -> Placement:
    """Every engine of ``demands`` on ``gpus``; PlacementError when they do not fit."""
    wanted = [(demand, demand.share or minimum_share(demand, gpus)) for demand in demands]
    for demand, share in wanted:
        if share > MAX_GPU_SHARE:
            raise PlacementError(_too_big(demand, share, gpus))
        if demand.tensor_parallel > gpus.count:
            raise PlacementError(
                f"{demand.model}: tensor_parallel_size {demand.tensor_parallel} needs "
                f"{demand.tensor_parallel} GPUs, {gpus} has {gpus.count}"
            )
    where, used, failed = _assign(wanted, gpus.count)
    if failed is not None:
        demand, replica, share = failed
        raise PlacementError(_no_room(demand, replica, share, where, gpus, wanted))
    grown = _grow(where, used)
    placed = tuple(
        PlacedEngine(
            model=demand.model,
            kind=demand.kind,
            replica=replica,
            gpus=group,
            share=share,
            max_model_len=demand.max_model_len,
            adapters=demand.adapters,
            max_loras=demand.max_loras,
            layout=layout(
                demand.architecture,
                gpus.gpu,
                demand.tensor_parallel,
                1,
                dtype=demand.dtype,
                max_model_len=demand.max_model_len,
                utilization=share,
            ),
        )
        for (demand, replica, _, group), share in zip(where, grown, strict=True)
    )
    for engine in placed:
        if not engine.layout.fits:
            raise PlacementError(
                f"{engine.model}: at gpu_memory_share {engine.share:g} an engine holds no "
                f"sequence of {engine.max_model_len} tokens; at "
                f"{minimum_share(_demand_of(engine, demands), gpus):g} it holds {BATCH_TARGET}"
            )
    return Placement(gpus, placed)


Assigned = list[tuple[Demand, int, float, tuple[int, ...]]]


def _assign(
    wanted: list[tuple[Demand, float]], count: int
) -> tuple[Assigned, list[float], tuple[Demand, int, float] | None]:
    """Each engine on its GPUs, widest and largest first: what was placed, what each GPU
    holds, and the first engine that found no room (None when all did)."""
    engines = [(d, replica, share) for d, share in wanted for replica in range(d.replicas)]
    engines.sort(key=lambda each: (-each[0].tensor_parallel, -each[2]))
    used = [0.0] * count
    where: Assigned = []
    for demand, replica, share in engines:
        group = _emptiest_fit(used, demand.tensor_parallel, share)
        if group is None:
            return where, used, (demand, replica, share)
        for gpu in group:
            used[gpu] += share
        where.append((demand, replica, share, group))
    return where, used, None


def _emptiest_fit(used: list[float], width: int, share: float) -> tuple[int, ...] | None:
    """The emptiest aligned group of ``width`` GPUs that holds ``share`` more on each."""
    groups = [
        tuple(range(start, start + width)) for start in range(0, len(used) - width + 1, width)
    ]
    fitting = [g for g in groups if all(used[gpu] + share <= MAX_GPU_SHARE + 1e-9 for gpu in g)]
    return min(fitting, key=lambda g: (max(used[gpu] for gpu in g), g[0]), default=None)


def _grow(where: Assigned, used: list[float]) -> list[float]:
    """Each engine's final share: as given, or (a generative engine's) grown into what its GPUs
    have left, split between the growing engines on a GPU in proportion to what they took."""
    growing_on = [0.0] * len(used)
    for demand, _, share, group in where:
        if _grows(demand):
            for gpu in group:
                growing_on[gpu] += share
    shares = []
    for demand, _, share, group in where:
        if not _grows(demand):
            shares.append(share)
            continue
        extra = min((MAX_GPU_SHARE - used[gpu]) * share / growing_on[gpu] for gpu in group)
        shares.append(math.floor((share + extra) * 100 + 1e-6) / 100)
    return shares


def _grows(demand: Demand) -> bool:
    return demand.share is None and demand.kind == "generate"


def _step_up(share: float) -> float:
    return round(math.ceil(share / STEP - 1e-9) * STEP, 2)


def _too_big(demand: Demand, share: float, gpus: Gpus) -> str:
    given = "its gpu_memory_share" if demand.share else "it needs"
    hint = (
        f"tensor_parallel_size {demand.tensor_parallel * 2}"
        if demand.tensor_parallel * 2 <= gpus.count
        else "a shorter max_model_len or fp8 weights"
    )
    return (
        f"{demand.model}: {given} {share:g} of a {gpus.gpu.name}'s memory per engine, over the "
        f"{MAX_GPU_SHARE:g} one GPU gives; try {hint}"
    )


def _no_room(
    demand: Demand,
    replica: int,
    share: float,
    where: Assigned,
    gpus: Gpus,
    wanted: list[tuple[Demand, float]],
) -> str:
    held = "; ".join(
        f"GPU {gpu}: " + ", ".join(f"{d.model} {s:g}" for d, _, s, group in where if gpu in group)
        for gpu in range(gpus.count)
    )
    more = next(
        (
            count
            for count in range(gpus.count + 1, 4 * gpus.count + 9)
            if _assign(wanted, count)[2] is None
        ),
        None,
    )
    hint = f"it would fit on {more}x{gpus.gpu.name}" if more else "it needs far more GPUs"
    return (
        f"the fleet does not fit on {gpus}: no room for {demand.model} engine {replica} "
        f"({share:g} of {demand.tensor_parallel} GPU(s)) with {held}. Give the models smaller "
        f"gpu_memory_share values or fewer replicas; {hint}"
    )


def _demand_of(engine: PlacedEngine, demands: list[Demand]) -> Demand:
    return next(demand for demand in demands if demand.model == engine.model)


def _adapters(engine: PlacedEngine) -> str:
    if not engine.adapters:
        return "–"
    return f"{', '.join(engine.adapters)} ({min(engine.max_loras, len(engine.adapters))})"


def render(placement: Placement) -> str:
    """The placement as `mistral-serve plan --fleet` prints it."""
    gpus = placement.gpus
    lines = [
        f"on {gpus} ({gpus.gpu.memory_gib:g} GiB each); share: of each of its GPUs' memory "
        "(the engine's --gpu-memory-utilization)",
        "",
        "| model | engine | kind | GPUs | share | weights per GPU | KV cache | KV tokens "
        "| sequences of its MAX_MODEL_LEN | LoRA adapters (held at once) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for each in placement.engines:
        lines.append(
            f"| {each.model} | {each.replica} | {each.kind} | {','.join(map(str, each.gpus))} "
            f"| {each.share:.2f} | {each.layout.weights_gib_per_gpu:g} GiB "
            f"| {each.layout.kv_gib_per_engine:g} GiB | {each.layout.kv_tokens_per_engine:,} "
            f"| {each.layout.sequences_per_engine:,} of {each.max_model_len} "
            f"| {_adapters(each)} |"
        )
    lines.append("")
    lines.append(
        "GPUs used: "
        + ", ".join(f"{gpu}: {placement.used(gpu):.2f}" for gpu in range(gpus.count))
        + f" (at most {MAX_GPU_SHARE:g} each)"
    )
    return "\n".join(lines)
