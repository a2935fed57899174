"""What an engine reports about itself on ``/metrics``, read with Prometheus' own text parser.

The counters (tokens generated and prefilled, engine steps) are how the gateway sees an engine
make progress even when no stream of its own is open; the gauges (running, waiting, KV-cache
usage) and prefix-cache counters are what load-aware routing reads. vLLM exposes a few hundred
lines; only the samples named here are parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

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

_SUMMED = (
    RUNNING,
    WAITING,
    PREFIX_CACHE_QUERIES,
    PREFIX_CACHE_HITS,
    PROMPT_TOKENS,
    GENERATION_TOKENS,
    ITERATIONS,
)
_WANTED = frozenset((*_SUMMED, KV_CACHE_USAGE, CACHE_CONFIG, RESIDENT_MEMORY))


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
        }


def parse_stats(text: str) -> EngineStats:
    """The statistics in a Prometheus text exposition; absent samples read as 0."""
    wanted = "\n".join(line for line in text.splitlines() if _sample_name(line) in _WANTED)
    totals = dict.fromkeys(_SUMMED, 0.0)
    kv_cache_usage = 0.0
    capacities = []
    resident = None
    for family in text_string_to_metric_families(wanted + "\n"):
        for sample in family.samples:
            if sample.name == KV_CACHE_USAGE:
                kv_cache_usage = max(kv_cache_usage, sample.value)
            elif sample.name == CACHE_CONFIG:
                capacities.append(_kv_capacity_tokens(sample.labels))
            elif sample.name == RESIDENT_MEMORY:
                resident = sample.value
            elif sample.name in totals:
                totals[sample.name] += sample.value
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
    )


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


def _sample_name(line: str) -> str:
    end = len(line)
    for separator in ("{", " "):
        found = line.find(separator)
        if 0 <= found < end:
            end = found
    return line[:end]
