"""What an engine reports about itself on ``/metrics``.

The counters (tokens generated and prefilled, engine steps) are how the gateway sees an engine
make progress even when no stream of its own is open; the gauges (running, waiting, KV-cache
usage) and prefix-cache counters are what load-aware routing reads. vLLM exposes a few hundred
lines (55 KB); only the samples named here are read.

The gateway scrapes every engine every second, so reading must be cheap: Prometheus' own parser
(pure Python, character by character through the labels) took 0.83 ms a scrape over just these
samples, most of it in the cache-config line's forty labels. So a sample's value is read
straight off its line (``name{labels} value [timestamp]``: the labels are not needed), and
only the cache-config line, whose labels are the point, goes through Prometheus' parser, once
per distinct line.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from prometheus_client.parser import text_string_to_metric_families

# vLLM's sample names (v1 engine, vllm/v1/metrics/loggers.py).
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"  # a fraction, 0..1, despite the name
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
ITERATIONS = "vllm:iteration_tokens_total_count"  # one observation per engine step
#: An info metric whose labels are the engine's cache config: its KV capacity in blocks.
CACHE_CONFIG = "vllm:cache_config_info"
#: prometheus_client's process collector in vLLM's API server: the memory that process holds,
#: so a leak in it (docs/architecture.md, "Engine patches") shows before it kills the engine.
RESIDENT_MEMORY = "process_resident_memory_bytes"
#: An info metric of an engine run with LoRA: its ``max_lora`` label is how many adapters it
#: holds at once (--max-loras); it appears once the engine has run a step.
LORA_INFO = "vllm:lora_requests_info"
_MAX_LORA = 'max_lora="'

_SUMMED = (
    RUNNING,
    WAITING,
    PREFIX_CACHE_QUERIES,
    PREFIX_CACHE_HITS,
    PROMPT_TOKENS,
    GENERATION_TOKENS,
    ITERATIONS,
)
_WANTED = frozenset((*_SUMMED, KV_CACHE_USAGE, CACHE_CONFIG, RESIDENT_MEMORY, LORA_INFO))
_WANTED_PREFIXES = tuple(_WANTED)  # str.startswith takes a tuple: one C call per line


@dataclass(frozen=True)
class EngineStats:
    """One scrape of one engine (summed over its data-parallel ranks, if any)."""

    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.0  # the fullest rank's
    prefix_cache_queries: float = 0.0
    prefix_cache_hits: float = 0.0
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    iterations: float = 0.0
    #: Tokens its KV cache holds (the smallest rank's); 0 when it does not say.
    kv_capacity_tokens: float = 0.0
    #: Bytes its API server process holds in memory; None when it does not say.
    resident_memory_bytes: float | None = None
    #: How many LoRA adapters it holds at once; None when it does not say (LoRA off, or no
    #: step run yet).
    adapter_slots: int | None = None

    def progressed_since(self, earlier: EngineStats) -> bool:
        """Whether the engine did work between two scrapes: a step ran, tokens were made."""
        return (
            self.iterations > earlier.iterations
            or self.generation_tokens > earlier.generation_tokens
            or self.prompt_tokens > earlier.prompt_tokens
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "running": self.running,
            "waiting": self.waiting,
            "kv_cache_usage": round(self.kv_cache_usage, 4),
            "prefix_cache_queries": self.prefix_cache_queries,
            "prefix_cache_hits": self.prefix_cache_hits,
            "prompt_tokens": self.prompt_tokens,
            "generation_tokens": self.generation_tokens,
            "kv_capacity_tokens": self.kv_capacity_tokens,
            "api_server_resident_bytes": self.resident_memory_bytes,
            "adapter_slots": self.adapter_slots,
        }


def parse_stats(text: str) -> EngineStats:
    """The statistics in a Prometheus text exposition; absent samples read as 0. Raises
    ValueError for a wanted sample whose line is malformed."""
    totals = dict.fromkeys(_SUMMED, 0.0)
    kv_cache_usage = 0.0
    capacities = []
    resident = None
    adapter_slots = None
    for line in text.splitlines():
        if not line.startswith(_WANTED_PREFIXES):
            continue
        name, value = _sample(line)
        if name == KV_CACHE_USAGE:
            kv_cache_usage = max(kv_cache_usage, value)
        elif name == CACHE_CONFIG:
            capacities.append(_kv_capacity_of_line(line))
        elif name == RESIDENT_MEMORY:
            resident = value
        elif name == LORA_INFO:
            adapter_slots = _max_lora(line)
        elif name in totals:
            totals[name] += value
    return EngineStats(
        running=totals[RUNNING],
        waiting=totals[WAITING],
        kv_cache_usage=kv_cache_usage,
        prefix_cache_queries=totals[PREFIX_CACHE_QUERIES],
        prefix_cache_hits=totals[PREFIX_CACHE_HITS],
        prompt_tokens=totals[PROMPT_TOKENS],
        generation_tokens=totals[GENERATION_TOKENS],
        iterations=totals[ITERATIONS],
        kv_capacity_tokens=min((c for c in capacities if c > 0), default=0.0),
        resident_memory_bytes=resident,
        adapter_slots=adapter_slots,
    )


def _sample(line: str) -> tuple[str, float]:
    """A sample line's name and value (``name{labels} value [timestamp]``). The labels end at
    the line's last ``}``: label values may hold braces, the value and timestamp cannot."""
    labels = line.find("{")
    if labels < 0:
        name, _, rest = line.partition(" ")
    else:
        name, rest = line[:labels], line[line.rfind("}") + 1 :]
    fields = rest.split()
    if not fields:
        raise ValueError(f"no value in sample line {line[:80]!r}")
    return name, float(fields[0])  # float() says ValueError for a malformed value


def _max_lora(line: str) -> int | None:
    """The ``max_lora`` label of a LoRA info line (one label, read without a parser)."""
    start = line.find(_MAX_LORA)
    if start < 0:
        return None
    start += len(_MAX_LORA)
    value = line[start : line.find('"', start)]
    return int(value) if value.isdigit() else None


@lru_cache(maxsize=64)  # the line repeats on every scrape of an engine
def _kv_capacity_of_line(line: str) -> float:
    capacity = 0.0
    for family in text_string_to_metric_families(line + "\n"):
        for sample in family.samples:
            capacity = _kv_capacity_tokens(sample.labels)
    return capacity


def _kv_capacity_tokens(labels: dict[str, str]) -> float:
    """Blocks × block size; ``kv_cache_size_tokens`` where only that is given."""
    try:
        return float(labels["num_gpu_blocks"]) * float(labels["block_size"])
    except (KeyError, ValueError):
        pass
    try:
        return float(labels["kv_cache_size_tokens"])
    except (KeyError, ValueError):
        return 0.0
