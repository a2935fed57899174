"""GPU metrics under the hardware conventions' names, from a stand-in for NVML. The real NVML
path has not been read on a GPU yet (docs/architecture.md): the one test that reads it is
GPU-only, and skipped, with the suite's one accepted reason, where no GPU is visible."""

from __future__ import annotations

import ctypes
import os
from types import SimpleNamespace

import pytest

from mistral_serve.engines.gpus import visible_gpus
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


def test_opening_nvml_answers_whether_a_driver_is_there():
    """Never raises: None without NVIDIA's library (this machine, CI), a session where
    nvidia-smi sees a GPU."""
    nvml = gpu.Nvml.open()
    try:
        ctypes.CDLL("libnvidia-ml.so.1")  # what nvidia-ml-py loads
    except OSError:
        assert nvml is None
    if visible_gpus(os.environ):
        assert nvml is not None and nvml.device_count() >= 1
    if nvml is not None:
        nvml.close()


@pytest.mark.gpu
def test_a_real_gpu_is_read_through_nvml(captured):
    """On a machine with an NVIDIA GPU: each visible GPU reports plausible readings."""
    assert gpu.register_gpu_metrics(captured.telemetry)
    metrics = captured.metrics()
    limits = list(metrics[semconv.HW_GPU_MEMORY_LIMIT].data.data_points)
    assert len(limits) >= len(visible_gpus({}))
    assert all(point.value > 2**30 for point in limits)  # more than a GiB each
    for point in metrics[semconv.HW_GPU_UTILIZATION].data.data_points:
        assert 0.0 <= point.value <= 1.0
    for point in metrics[semconv.HW_TEMPERATURE].data.data_points:
        assert 0.0 < point.value < 120.0
    captured.telemetry.shutdown()
