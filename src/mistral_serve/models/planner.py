"""Will a model fit, and how should the GPUs be split: the arithmetic behind `mistral-serve plan`
and the check `up` makes before it loads anything.

For each layout (engines × tensor parallel size) that the GPUs allow:

- weights per GPU: parameters × bytes per parameter (2 in bf16, 1 in fp8) / TP;
- KV cache bytes per token: layers × KV heads × head size × 2 (K and V) × 2 bytes (the cache
  stays bf16 here), of which each GPU holds 1/TP (KV heads are split between the GPUs, or
  repeated when there are fewer heads than GPUs);
- what a GPU gives the KV cache: its memory × GPU_MEMORY_UTILIZATION, less its share of the
  weights and :data:`RUNTIME_RESERVE_GIB` for the CUDA context, activations and CUDA graphs;
- KV tokens per engine, and the most sequences of MAX_MODEL_LEN it holds at once.

A layout fits when every GPU holds its weights and the engine holds at least one sequence of
MAX_MODEL_LEN. The recommendation is the smallest TP that holds :data:`BATCH_TARGET` sequences
at once: more engines of fewer GPUs each serve more requests (no all-reduce between GPUs on
every layer), and a model too big for that gets as many GPUs per engine as it needs.
Reference: Mistral 7B in bf16 keeps 32 × 8 × 128 × 2 × 2 = 128 KiB per token.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from mistral_serve.models.catalog import known_architecture
from mistral_serve.models.checkpoint import KV_BYTES, Architecture

GIB = 1024**3
#: Per GPU, outside the weights and the KV cache: CUDA context, activations at the engine's
#: batch size, CUDA graphs, NCCL buffers (vLLM profiles the real figure at start).
RUNTIME_RESERVE_GIB = 3.0
#: Sequences of MAX_MODEL_LEN an engine should hold at once. Each one as long as allowed is the
#: worst case: a chat of a few thousand tokens takes a small part of one.
BATCH_TARGET = 4
DEFAULT_UTILIZATION = 0.9

Dtype = Literal["bf16", "fp16", "fp32", "fp8"]
WEIGHT_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "fp8": 1.0}


class PlanError(ValueError):
    """A model or GPU the planner cannot size; the message says what to give instead."""


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float  # as nvidia-smi reports the total


#: GPUs by the names `--gpus` takes (memory.total as nvidia-smi reports it).
GPUS: dict[str, Gpu] = {
    gpu.name.lower(): gpu
    for gpu in (
        Gpu("H100", 79.6),
        Gpu("H200", 140.4),
        Gpu("B200", 179.1),
        Gpu("A100-80GB", 80.0),
        Gpu("A100-40GB", 40.0),
        Gpu("L40S", 45.0),
        Gpu("L4", 22.5),
        Gpu("A10G", 22.5),
    )
}


@dataclass(frozen=True)
class Gpus:
    count: int
    gpu: Gpu

    @classmethod
    def parse(cls, text: str) -> Gpus:
        """``2xH100``, ``4xA100-80GB``, ``L40S`` (one)."""
        found = re.fullmatch(r"(?:(\d+)\s*[x×]\s*)?(.+)", text.strip(), re.IGNORECASE)
        name = found.group(2).lower() if found else ""
        if name not in GPUS:
            known = ", ".join(gpu.name for gpu in GPUS.values())
            raise PlanError(f"unknown GPU {text!r}: give COUNTxNAME, NAME one of {known}")
        count = int(found.group(1) or 1) if found else 1
        if count < 1:
            raise PlanError("the GPU count must be at least 1")
        return cls(count, GPUS[name])

    def __str__(self) -> str:
        return f"{self.count}x{self.gpu.name}"


@dataclass(frozen=True)
class Layout:
    engines: int
    tensor_parallel: int
    weights_gib_per_gpu: float
    kv_gib_per_engine: float
    kv_tokens_per_engine: int
    sequences_per_engine: int  # of MAX_MODEL_LEN, at once

    @property
    def fits(self) -> bool:
        return self.sequences_per_engine >= 1


@dataclass(frozen=True)
class Plan:
    model: Architecture
    gpus: Gpus
    dtype: Dtype
    max_model_len: int
    utilization: float
    kv_bytes_per_token: int
    layouts: tuple[Layout, ...]  # every TP the GPUs allow, fitting or not
    recommended: Layout | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "model": asdict(self.model),
            "gpus": str(self.gpus),
            "dtype": self.dtype,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.utilization,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "layouts": [{**asdict(layout), "fits": layout.fits} for layout in self.layouts],
            "recommended": asdict(self.recommended) if self.recommended else None,
            "reason": self.reason,
        }


def per_gpu(model: Architecture, tensor_parallel: int, dtype: Dtype) -> tuple[float, float]:
    """Bytes each GPU of an engine of ``tensor_parallel`` GPUs holds: its share of the weights,
    and of the KV cache per token (its share of the KV heads, all of a head when there are
    fewer heads than GPUs)."""
    weights = model.parameters * WEIGHT_BYTES[dtype] / tensor_parallel
    heads_per_gpu = max(1.0, model.kv_heads / tensor_parallel)
    return weights, model.layers * heads_per_gpu * model.head_dim * 2 * KV_BYTES


def layout(
    model: Architecture,
    gpu: Gpu,
    tensor_parallel: int,
    engines: int,
    *,
    dtype: Dtype,
    max_model_len: int,
    utilization: float,
) -> Layout:
    """One layout's arithmetic."""
    weights, kv_per_token_per_gpu = per_gpu(model, tensor_parallel, dtype)
    free_per_gpu = gpu.memory_gib * GIB * utilization - weights - RUNTIME_RESERVE_GIB * GIB
    tokens = max(0, int(free_per_gpu // kv_per_token_per_gpu))
    return Layout(
        engines=engines,
        tensor_parallel=tensor_parallel,
        weights_gib_per_gpu=round(weights / GIB, 1),
        kv_gib_per_engine=round(max(0.0, free_per_gpu) * tensor_parallel / GIB, 1),
        kv_tokens_per_engine=tokens,
        sequences_per_engine=tokens // max_model_len,
    )


def plan(
    model: Architecture,
    gpus: Gpus,
    *,
    dtype: Dtype = "bf16",
    max_model_len: int | None = None,
    utilization: float = DEFAULT_UTILIZATION,
) -> Plan:
    length = max_model_len or model.max_context
    if length > model.max_context:
        raise PlanError(f"MAX_MODEL_LEN {length} is over {model.name}'s {model.max_context}")
    sizes = [tp for tp in (1, 2, 4, 8) if tp <= gpus.count and model.attention_heads % tp == 0]
    layouts = tuple(
        layout(
            model,
            gpus.gpu,
            tp,
            gpus.count // tp,
            dtype=dtype,
            max_model_len=length,
            utilization=utilization,
        )
        for tp in sizes
    )
    fitting = [each for each in layouts if each.fits]
    recommended, reason = _recommend(model, gpus, fitting, length)
    if recommended is None:
        reason += _what_would_fit(model, gpus, layouts, dtype, length, utilization)
    return Plan(
        model=model,
        gpus=gpus,
        dtype=dtype,
        max_model_len=length,
        utilization=utilization,
        kv_bytes_per_token=model.kv_bytes_per_token(),
        layouts=layouts,
        recommended=recommended,
        reason=reason,
    )


def _recommend(
    model: Architecture, gpus: Gpus, fitting: list[Layout], length: int
) -> tuple[Layout | None, str]:
    if not fitting:
        return None, (
            f"{model.name} does not fit on {gpus}: even with all {gpus.count} GPU(s) in one "
            f"engine, there is no room for one sequence of {length} tokens."
        )
    for candidate in fitting:  # smallest TP first
        if candidate.sequences_per_engine >= BATCH_TARGET:
            spare = gpus.count - candidate.engines * candidate.tensor_parallel
            note = f" ({spare} GPU(s) left over)" if spare else ""
            return candidate, (
                f"the smallest tensor parallel size whose engines hold at least {BATCH_TARGET} "
                f"sequences of {length} tokens at once: {candidate.engines} engine(s) × "
                f"TP={candidate.tensor_parallel}{note}; more engines of fewer GPUs each serve "
                "more requests than one engine over all of them"
            )
    best = max(fitting, key=lambda each: each.sequences_per_engine * each.engines)
    return best, (
        f"no layout holds {BATCH_TARGET} sequences of {length} tokens per engine; "
        f"{best.engines} engine(s) × TP={best.tensor_parallel} hold the most in all "
        f"({best.sequences_per_engine * best.engines}). A smaller MAX_MODEL_LEN holds more."
    )


def check_layout(
    model: Architecture,
    gpus: Gpus,
    tensor_parallel: int,
    *,
    dtype: Dtype,
    max_model_len: int | None,
    utilization: float,
) -> str | None:
    """Why engines of ``tensor_parallel`` GPUs cannot hold ``model`` (None when they can):
    what `up` says at once instead of failing after minutes of loading."""
    length = max_model_len or model.max_context
    engines = gpus.count // tensor_parallel
    chosen = layout(
        model,
        gpus.gpu,
        tensor_parallel,
        engines,
        dtype=dtype,
        max_model_len=length,
        utilization=utilization,
    )
    if chosen.fits:
        return None
    weights = model.parameters * WEIGHT_BYTES[dtype] / GIB
    sequence = model.kv_bytes_per_token() * length / GIB
    need = weights + sequence + RUNTIME_RESERVE_GIB * tensor_parallel
    have = gpus.gpu.memory_gib * utilization * tensor_parallel
    memory = f"{gpus.gpu.memory_gib:.0f} GiB"
    given = (
        f"one {memory} GPU holds"
        if tensor_parallel == 1
        else f"{tensor_parallel} GPUs of {memory} hold"
    )
    message = (
        f"{model.name} needs {need:.0f} GiB per engine ({dtype} weights {weights:.0f} GiB, one "
        f"sequence of {length} tokens {sequence:.1f} GiB, {RUNTIME_RESERVE_GIB:g} GiB per GPU "
        f"for the runtime); at GPU_MEMORY_UTILIZATION {utilization:g}, {given} {have:.0f}"
    )
    wider = plan(model, gpus, dtype=dtype, max_model_len=length, utilization=utilization)
    if wider.recommended is not None:
        return f"{message}: set TENSOR_PARALLEL_SIZE={wider.recommended.tensor_parallel}"
    return f"{message}. {wider.reason}"


def render(plan: Plan) -> str:
    """The plan as `mistral-serve plan` prints it."""
    model = plan.model
    experts = f", {model.experts} experts" if model.experts else ""
    lines = [
        f"{model.name}: {model.parameters / 1e9:.1f}B parameters{experts}, {model.layers} "
        f"layers, {model.kv_heads} KV heads × {model.head_dim}",
        f"on {plan.gpus} ({plan.gpus.gpu.memory_gib:g} GiB each), {plan.dtype} weights, "
        f"MAX_MODEL_LEN {plan.max_model_len}, GPU_MEMORY_UTILIZATION {plan.utilization:g}",
        f"KV cache per token: {plan.kv_bytes_per_token / 1024:g} KiB "
        f"({model.layers} layers × {model.kv_heads} KV heads × {model.head_dim} × 2 × "
        f"{KV_BYTES} bytes)",
        "",
        "| engines × TP | weights per GPU | KV cache per engine | KV tokens per engine "
        "| sequences of MAX_MODEL_LEN per engine | fits |",
        "|---|---|---|---|---|---|",
    ]
    for each in plan.layouts:
        lines.append(
            f"| {each.engines} × {each.tensor_parallel} | {each.weights_gib_per_gpu:g} GiB "
            f"| {each.kv_gib_per_engine:g} GiB | {each.kv_tokens_per_engine:,} "
            f"| {each.sequences_per_engine:,} | {'yes' if each.fits else 'no'} |"
        )
    lines.append("")
    if plan.recommended is None:
        lines.append(f"does not fit: {plan.reason}")
    else:
        chosen = plan.recommended
        lines.append(
            f"recommended: ENGINE_REPLICAS={chosen.engines} "
            f"TENSOR_PARALLEL_SIZE={chosen.tensor_parallel}: {plan.reason}"
        )
    return "\n".join(lines)


def _what_would_fit(
    model: Architecture,
    gpus: Gpus,
    layouts: tuple[Layout, ...],
    dtype: Dtype,
    length: int,
    utilization: float,
) -> str:
    """A hint for a model that does not fit: a shorter MAX_MODEL_LEN, fp8 weights, or both."""
    shorter = _longest_that_fits(layouts)
    if shorter:
        return f" {shorter} fits."
    if dtype == "fp8":
        return ""
    fp8 = plan(model, gpus, dtype="fp8", max_model_len=length, utilization=utilization)
    if fp8.recommended is not None:
        chosen = fp8.recommended
        return f" fp8 weights fit: {chosen.engines} engine(s) × TP={chosen.tensor_parallel}."
    shorter = _longest_that_fits(fp8.layouts)
    return f" With fp8 weights, {shorter} fits." if shorter else ""


def _longest_that_fits(layouts: tuple[Layout, ...]) -> str | None:
    roomiest = max(layouts, key=lambda each: each.kv_tokens_per_engine, default=None)
    if roomiest is None or roomiest.kv_tokens_per_engine < 1024:
        return None
    return f"MAX_MODEL_LEN up to {roomiest.kv_tokens_per_engine} with TP={roomiest.tensor_parallel}"


# -- the sizing table in docs/deploy.md ---------------------------------------------------------
#: The models docs/deploy.md sizes, on the reference box.
TABLE_MODELS = (
    "Mistral-7B-Instruct-v0.3",
    "Ministral-8B-Instruct-2410",
    "Mistral-Nemo-Instruct-2407",
    "Pixtral-12B-2409",
    "Codestral-22B-v0.1",
    "Mistral-Small-3.1-24B-Instruct-2503",
    "Mixtral-8x7B-Instruct-v0.1",
    "Mixtral-8x22B-Instruct-v0.1",
    "Mistral-Large-Instruct-2411",
)
TABLE_GPUS = "2xH100"
TABLE_LENGTH = 32768


def sizing_table() -> str:
    """docs/deploy.md's sizing table (`python -m mistral_serve.models.planner` prints it; a
    unit test keeps the page equal to it)."""
    gpus = Gpus.parse(TABLE_GPUS)
    lines = [
        f"| model | parameters | weights, bf16 | KV cache per token | on {gpus}, "
        f"MAX_MODEL_LEN {TABLE_LENGTH}: layout | KV tokens per engine | sequences of "
        f"{TABLE_LENGTH} per engine |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in TABLE_MODELS:
        model = known_architecture(name)
        assert model is not None, name
        length = min(TABLE_LENGTH, model.max_context)
        result = plan(model, gpus, max_model_len=length)
        dtype = "bf16"
        if result.recommended is None:
            result, dtype = plan(model, gpus, dtype="fp8", max_model_len=length), "fp8"
        weights = model.parameters * WEIGHT_BYTES["bf16"] / GIB
        chosen = result.recommended
        row = f"| {name} | {model.parameters / 1e9:.1f} B | {weights:.1f} GiB "
        row += f"| {model.kv_bytes_per_token() // 1024} KiB "
        if chosen is None:
            lines.append(row + "| does not fit, even in fp8 | | |")
            continue
        layout_text = f"{chosen.engines} × TP={chosen.tensor_parallel}"
        if dtype == "fp8":
            layout_text += ", fp8 weights (bf16 does not fit)"
        lines.append(
            row + f"| {layout_text} | {chosen.kv_tokens_per_engine:,} "
            f"| {chosen.sequences_per_engine} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(sizing_table())
