"""Engine state as telemetry: which state each engine is in, and the events that move them.

``mistral_serve.engines.state`` reports, for every engine and every state, 1 when the engine is
in it and 0 otherwise, so "how many engines are stalled" is a sum and a series never vanishes
mid-graph. Stalls, ejections and restarts are counters per engine; each engine's API-server
memory is a gauge. LoRA adapters: loads and evictions per engine and adapter, the loads'
duration, and which adapters each engine holds. The registry and the
supervisor report here; neither knows about instruments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import Meter, Observation

from mistral_serve.telemetry import semconv


class EngineTelemetry:
    """The engine-state instruments of one process, created once."""

    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        self._stalls = meter.create_counter(
            semconv.ENGINE_STALLS,
            unit="{stall}",
            description="Engines found with requests in flight and no progress.",
        )
        self._ejections = meter.create_counter(
            semconv.ENGINE_EJECTIONS,
            unit="{ejection}",
            description="Engines taken out of rotation after consecutive failed requests.",
        )
        self._restarts = meter.create_counter(
            semconv.ENGINE_RESTARTS,
            unit="{restart}",
            description="Engine processes restarted by the supervisor, by reason.",
        )
        self._adapter_loads = meter.create_counter(
            semconv.ADAPTER_LOADS,
            unit="{load}",
            description="LoRA adapters loaded on an engine, by reason (request, sync, admin) "
            "and outcome (loaded, failed).",
        )
        self._adapter_load_duration = meter.create_histogram(
            semconv.ADAPTER_LOAD_DURATION,
            unit="s",
            description="How long an engine took to load a LoRA adapter.",
        )
        self._adapter_evictions = meter.create_counter(
            semconv.ADAPTER_EVICTIONS,
            unit="{eviction}",
            description="LoRA adapters an engine dropped to make room for another.",
        )

    def watch_states(
        self, states: Iterable[str], current: Callable[[], Iterable[tuple[str, str]]]
    ) -> None:
        """Observe ``current()`` — (engine name, state) pairs — at each export."""
        every_state = tuple(states)

        def observe(options: object) -> list[Observation]:
            return [
                Observation(
                    int(state == now_in),
                    {semconv.ENGINE_NAME: name, semconv.ENGINE_STATE_ATTRIBUTE: state},
                )
                for name, now_in in current()
                for state in every_state
            ]

        self._meter.create_observable_gauge(
            semconv.ENGINE_STATE,
            [observe],
            unit="{engine}",
            description="1 for the state each engine is in (ready, loading, stalled, ejected, "
            "down), 0 for the others.",
        )

    def watch_memory(self, current: Callable[[], Iterable[tuple[str, float]]]) -> None:
        """Observe ``current()`` — (engine name, bytes its API server holds) — at each export."""

        def observe(options: object) -> list[Observation]:
            return [Observation(rss, {semconv.ENGINE_NAME: name}) for name, rss in current()]

        self._meter.create_observable_gauge(
            semconv.ENGINE_MEMORY,
            [observe],
            unit="By",
            description="Resident memory of each engine's API server process, from its /metrics "
            "(process_resident_memory_bytes): a leak shows here before it kills the engine.",
        )

    def watch_adapters(self, current: Callable[[], Iterable[tuple[str, str, bool]]]) -> None:
        """Observe ``current()`` — (engine name, adapter, whether it holds it) — at each export."""

        def observe(options: object) -> list[Observation]:
            return [
                Observation(int(held), {semconv.ENGINE_NAME: name, semconv.ADAPTER_NAME: adapter})
                for name, adapter, held in current()
            ]

        self._meter.create_observable_gauge(
            semconv.ADAPTER_RESIDENCY,
            [observe],
            unit="{adapter}",
            description="1 for each LoRA adapter an engine of its base holds, 0 for one it does "
            "not.",
        )

    def adapter_loaded(
        self, engine: str, adapter: str, reason: str, seconds: float, *, loaded: bool
    ) -> None:
        attributes = {
            semconv.ENGINE_NAME: engine,
            semconv.ADAPTER_NAME: adapter,
            semconv.ADAPTER_LOAD_REASON: reason,
            semconv.ADAPTER_LOAD_OUTCOME: "loaded" if loaded else "failed",
        }
        self._adapter_loads.add(1, attributes)
        if loaded:
            self._adapter_load_duration.record(seconds, {semconv.ENGINE_NAME: engine})

    def adapter_evicted(self, engine: str, adapter: str) -> None:
        self._adapter_evictions.add(1, {semconv.ENGINE_NAME: engine, semconv.ADAPTER_NAME: adapter})

    def stalled(self, engine: str) -> None:
        self._stalls.add(1, {semconv.ENGINE_NAME: engine})

    def ejected(self, engine: str) -> None:
        self._ejections.add(1, {semconv.ENGINE_NAME: engine})

    def restarted(self, engine: str, reason: str) -> None:
        self._restarts.add(1, {semconv.ENGINE_NAME: engine, semconv.RESTART_REASON: reason})
