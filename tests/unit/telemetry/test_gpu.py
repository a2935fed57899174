"""GPU metrics under the hardware conventions' names, from a stand-in for NVML (no GPU here;
the real NVML path is checked on a GPU machine, see docs/observability.md)."""

from __future__ import annotations

from types import SimpleNamespace

from mistral_serve.telemetry import gpu, semconv


class FakeNvmlModule:
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, count: int = 2) -> None:
        self.count = count
        self.shut = False

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index):
        if index == 1 and self.count == 3:
            raise RuntimeError("GPU is lost")
        return index

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=20 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{handle}"

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=75)

    def nvmlDeviceGetPowerUsage(self, handle):
        return 350_000  # milliwatts

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 61

    def nvmlShutdown(self):
        self.shut = True


def test_each_gpu_reports_the_conventions_metrics(captured):
    module = FakeNvmlModule()
    assert gpu.register_gpu_metrics(captured.telemetry, gpu.Nvml(module))
    metrics = captured.metrics()
    expected = {
        semconv.HW_GPU_UTILIZATION: ("1", 0.75),
        semconv.HW_GPU_MEMORY_USAGE: ("By", 20 * 2**30),
        semconv.HW_GPU_MEMORY_LIMIT: ("By", 80 * 2**30),
        semconv.HW_GPU_MEMORY_UTILIZATION: ("1", 0.25),
        semconv.HW_POWER: ("W", 350.0),
        semconv.HW_TEMPERATURE: ("Cel", 61.0),
    }
    for name, (unit, value) in expected.items():
        metric = metrics[name]
        assert metric.unit == unit, name
        points = list(metric.data.data_points)
        assert [p.attributes[semconv.HW_ID] for p in points] == ["GPU-0", "GPU-1"]
        assert all(p.value == value for p in points), name
    power = next(iter(metrics[semconv.HW_POWER].data.data_points))
    assert power.attributes[semconv.HW_TYPE] == "gpu"
    captured.telemetry.shutdown()
    assert module.shut


def test_a_failing_gpu_is_skipped_not_fatal(captured):
    gpu.register_gpu_metrics(captured.telemetry, gpu.Nvml(FakeNvmlModule(count=3)))
    points = captured.metrics()[semconv.HW_POWER].data.data_points
    assert [p.attributes[semconv.HW_ID] for p in points] == ["GPU-0", "GPU-2"]


def test_no_gpu_means_no_gpu_metrics(captured, monkeypatch):
    monkeypatch.setattr(gpu.Nvml, "open", classmethod(lambda cls: None))
    assert not gpu.register_gpu_metrics(captured.telemetry)
    assert not gpu.register_gpu_metrics(captured.telemetry, gpu.Nvml(FakeNvmlModule(count=0)))
    assert not any(name.startswith("hw.") for name in captured.metrics())


def test_opening_nvml_never_raises():
    nvml = gpu.Nvml.open()  # None without a driver (as on CI); a session with one
    if nvml is not None:
        assert nvml.device_count() >= 0
        nvml.close()
