import pytest

from mistral_serve.config import Settings
from mistral_serve.engines import gpus
from mistral_serve.errors import ConfigError


def settings(**values) -> Settings:
    return Settings(_env_file=None, **values)


def test_gpus_split_into_disjoint_slices_per_replica():
    assert gpus.slice_gpus(["0", "1"], 2, 1) == [["0"], ["1"]]
    assert gpus.slice_gpus(["0", "1"], 1, 2) == [["0", "1"]]
    assert gpus.slice_gpus(["0", "1", "2", "3"], 2, 2) == [["0", "1"], ["2", "3"]]
    assert gpus.slice_gpus(["4", "7"], 1, 1) == [["4"]]  # a subset may stay idle


def test_more_replicas_than_gpus_is_a_config_error_naming_the_variable():
    with pytest.raises(ConfigError) as caught:
        gpus.slice_gpus(["0", "1"], 3, 1)
    assert caught.value.message.startswith("ENGINE_REPLICAS: 3 engines")
    assert "need 3 GPUs, but 2 are visible" in caught.value.message


def test_auto_replicas_fill_the_gpus():
    assert gpus.replica_count(settings(), ["0", "1"]) == 2
    assert gpus.replica_count(settings(tensor_parallel_size=2), ["0", "1"]) == 1
    assert gpus.replica_count(settings(tensor_parallel_size=2), ["0", "1", "2"]) == 1


def test_explicit_replicas_are_kept_for_slicing_to_check():
    assert gpus.replica_count(settings(engine_replicas=3), ["0", "1"]) == 3


def test_tensor_parallel_wider_than_the_gpus_is_refused():
    with pytest.raises(ConfigError, match="TENSOR_PARALLEL_SIZE: 4 GPUs per engine"):
        gpus.replica_count(settings(tensor_parallel_size=4), ["0", "1"])


def test_without_gpus_one_cpu_engine_and_no_tensor_parallelism():
    assert gpus.replica_count(settings(), []) == 1
    assert gpus.replica_count(settings(engine_replicas=2), []) == 2
    with pytest.raises(ConfigError, match="TENSOR_PARALLEL_SIZE: 2 needs GPUs"):
        gpus.replica_count(settings(tensor_parallel_size=2), [])


def test_visible_gpus_honours_cuda_visible_devices(monkeypatch):
    monkeypatch.setattr(gpus, "_nvidia_smi_indexes", lambda: ["0", "1", "2", "3"])
    assert gpus.visible_gpus({}) == ["0", "1", "2", "3"]
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    monkeypatch.setattr(gpus, "_nvidia_smi_indexes", lambda: [])
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "0"}) == []  # no driver, no GPU


def test_gpu_memory_is_the_smallest_visible_gpus(tmp_path, monkeypatch):
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\nprintf '0, 81559\\n1, 40960\\n2, 81559\\n'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpus.gpu_memory_gib(["0", "2"]) == 81559 / 1024
    assert gpus.gpu_memory_gib(["0", "1"]) == 40
    assert gpus.gpu_memory_gib(["7"]) is None
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert gpus.gpu_memory_gib(["0"]) is None
