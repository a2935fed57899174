"""Engine state as telemetry: which state each engine is in, and the events that move them.

``mistral_serve.engines.state`` reports, for every engine and every state, 1 when the engine is
in it and 0 otherwise, so "how many engines are stalled" is a sum and a series never vanishes
mid-graph. Stalls, ejections and restarts are counters per engine; each engine's API-server
memory is a gauge. The registry and the
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

    def stalled(self, engine: str) -> None:
        self._stalls.add(1, {semconv.ENGINE_NAME: engine})

    def ejected(self, engine: str) -> None:
        self._ejections.add(1, {semconv.ENGINE_NAME: engine})

    def restarted(self, engine: str, reason: str) -> None:
        self._restarts.add(1, {semconv.ENGINE_NAME: engine, semconv.RESTART_REASON: reason})
