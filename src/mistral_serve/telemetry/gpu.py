"""GPU metrics from NVML under the hardware conventions' names (hw.gpu.*, hw.power,
hw.temperature), observed at each metric export.

Without an NVIDIA driver (or without nvidia-ml-py) nothing is registered: the metrics are
absent, not zero. A GPU whose reading fails mid-run is skipped for that reading.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from mistral_serve.telemetry import semconv
from mistral_serve.telemetry.setup import Telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuReading:
    index: int
    uuid: str
    name: str
    utilization: float  # 0..1
    memory_used: int  # bytes
    memory_total: int  # bytes
    power_w: float
    temperature_c: float


class Nvml:
    """The few NVML calls used, behind one small interface (tests replace it)."""

    def __init__(self, module: Any) -> None:
        self._nvml = module

    @classmethod
    def open(cls) -> Nvml | None:
        """NVML if a driver answers, else None."""
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError:
            return None
        return cls(pynvml)

    def device_count(self) -> int:
        return int(self._nvml.nvmlDeviceGetCount())

    def read(self, index: int) -> GpuReading:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        name = nvml.nvmlDeviceGetName(handle)
        uuid = nvml.nvmlDeviceGetUUID(handle)
        return GpuReading(
            index=index,
            uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
            name=name.decode() if isinstance(name, bytes) else str(name),
            utilization=nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
            memory_used=int(memory.used),
            memory_total=int(memory.total),
            power_w=nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,  # milliwatts
            temperature_c=float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        )

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class GpuMetrics:
    """Observable instruments over one NVML session; readings are taken once per export."""

    def __init__(self, nvml: Nvml) -> None:
        self._nvml = nvml
        self._count = nvml.device_count()

    def readings(self) -> Iterator[GpuReading]:
        for index in range(self._count):
            try:
                yield self._nvml.read(index)
            except Exception as exc:  # NVML errors vary by driver; one bad GPU skips a beat
                log.debug("gpu %d: NVML reading failed: %s", index, exc)

    def register(self, meter: Meter) -> None:
        def gauge(value: Callable[[GpuReading], float], extra: dict[str, str] | None = None):
            def callback(options: CallbackOptions) -> Iterable[Observation]:
                return [
                    Observation(value(reading), {**_attributes(reading), **(extra or {})})
                    for reading in self.readings()
                ]

            return [callback]

        hw_type = {semconv.HW_TYPE: "gpu"}
        meter.create_observable_gauge(
            semconv.HW_GPU_UTILIZATION,
            gauge(lambda r: r.utilization),
            unit="1",
            description="Fraction of time the GPU was busy.",
        )
        meter.create_observable_up_down_counter(
            semconv.HW_GPU_MEMORY_USAGE,
            gauge(lambda r: r.memory_used),
            unit="By",
            description="GPU memory in use.",
        )
        meter.create_observable_up_down_counter(
            semconv.HW_GPU_MEMORY_LIMIT,
            gauge(lambda r: r.memory_total),
            unit="By",
            description="GPU memory size.",
        )
        meter.create_observable_gauge(
            semconv.HW_GPU_MEMORY_UTILIZATION,
            gauge(lambda r: r.memory_used / r.memory_total if r.memory_total else 0.0),
            unit="1",
            description="Fraction of GPU memory in use.",
        )
        meter.create_observable_gauge(
            semconv.HW_POWER,
            gauge(lambda r: r.power_w, hw_type),
            unit="W",
            description="GPU power draw.",
        )
        meter.create_observable_gauge(
            semconv.HW_TEMPERATURE,
            gauge(lambda r: r.temperature_c, hw_type),
            unit="Cel",
            description="GPU temperature.",
        )


def _attributes(reading: GpuReading) -> dict[str, str]:
    return {
        semconv.HW_ID: reading.uuid,
        semconv.HW_NAME: f"gpu{reading.index}",
        semconv.HW_VENDOR: "NVIDIA",
        "hw.model": reading.name,
    }


def register_gpu_metrics(telemetry: Telemetry, nvml: Nvml | None = None) -> bool:
    """Register the GPU instruments if NVML sees a GPU; True when it did."""
    nvml = nvml or Nvml.open()
    if nvml is None:
        return False
    try:
        count = nvml.device_count()
    except Exception:
        count = 0
    if count == 0:
        nvml.close()
        return False
    GpuMetrics(nvml).register(telemetry.meter)
    telemetry.add_shutdown(nvml.close)
    log.info("telemetry: GPU metrics from NVML for %d GPU(s)", count)
    return True
