"""Reading an engine's /metrics: the samples routing and progress need, nothing else."""

from __future__ import annotations

import pytest

from mistral_serve.engines.stats import EngineStats, parse_stats

# An excerpt of vLLM 0.32's /metrics after one request (demo model, CPU), with two engine
# ranks added to the gauges to show how ranks combine.
EXPOSITION = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12046.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="demo"} 3.0
vllm:num_requests_running{engine="1",model_name="demo"} 2.0
vllm:num_requests_waiting{engine="0",model_name="demo"} 1.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="demo",reason="capacity"} 7.0
vllm:kv_cache_usage_perc{engine="0",model_name="demo"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="demo"} 0.5
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="demo"} 4.0
vllm:prefix_cache_queries_created{engine="0",model_name="demo"} 1.7956320151737847e+09
vllm:prefix_cache_hits_total{engine="0",model_name="demo"} 2.0
vllm:prompt_tokens_total{engine="0",model_name="demo"} 4.0
vllm:prompt_tokens_by_source_total{engine="0",model_name="demo",source="local_compute"} 4.0
vllm:generation_tokens_total{engine="0",model_name="demo"} 5.0
# TYPE vllm:iteration_tokens_total histogram
vllm:iteration_tokens_total_bucket{engine="0",le="1.0",model_name="demo"} 4.0
vllm:iteration_tokens_total_count{engine="0",model_name="demo"} 5.0
vllm:iteration_tokens_total_sum{engine="0",model_name="demo"} 9.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 7.71686912e+08
"""


def test_the_samples_that_matter_are_read_and_ranks_combined():
    stats = parse_stats(EXPOSITION)
    assert stats == EngineStats(
        running=5,
        waiting=1,  # waiting_by_reason is another sample, not counted twice
        kv_cache_usage=0.5,  # the fullest rank
        prefix_cache_queries=4,
        prefix_cache_hits=2,
        prompt_tokens=4,
        generation_tokens=5,
        iterations=5,
        resident_memory_bytes=771686912,  # the API server's own process
    )
    assert stats.as_dict()["api_server_resident_bytes"] == 771686912


def test_missing_samples_read_as_zero():
    assert parse_stats("") == EngineStats()
    assert parse_stats("# nothing but comments\n") == EngineStats()


def test_progress_is_any_counter_moving():
    before = parse_stats(EXPOSITION)
    assert not before.progressed_since(before)
    one_more_step = EXPOSITION.replace(
        'iteration_tokens_total_count{engine="0",model_name="demo"} 5.0',
        'iteration_tokens_total_count{engine="0",model_name="demo"} 6.0',
    )
    assert parse_stats(one_more_step).progressed_since(before)
    # gauges moving is not progress: requests can queue on a hung engine
    more_waiting = EXPOSITION.replace(
        'num_requests_waiting{engine="0",model_name="demo"} 1.0',
        'num_requests_waiting{engine="0",model_name="demo"} 9.0',
    )
    assert not parse_stats(more_waiting).progressed_since(before)


def test_the_kv_capacity_is_read_from_the_cache_config_labels():
    config = (
        'vllm:cache_config_info{block_size="128",cache_dtype="auto",engine="0",'
        'num_gpu_blocks="2048",prefix_caching_hash_algo="sha256"} 1.0\n'
    )
    assert parse_stats(EXPOSITION + config).kv_capacity_tokens == 2048 * 128
    # vLLM versions that say only the token count
    tokens_only = 'vllm:cache_config_info{engine="0",kv_cache_size_tokens="4096"} 1.0\n'
    assert parse_stats(tokens_only).kv_capacity_tokens == 4096


def test_values_are_read_whatever_the_labels_hold():
    braces = 'vllm:num_requests_running{engine="0",model_name="a}b {c} 9"} 2.0 1700000000000\n'
    assert parse_stats(braces).running == 2  # the timestamp after the value is not the value
    assert parse_stats("process_resident_memory_bytes 1e+09\n").resident_memory_bytes == 1e9


def test_a_wanted_sample_without_a_number_is_malformed():
    with pytest.raises(ValueError):
        parse_stats('vllm:generation_tokens_total{engine="0"} one\n')
    with pytest.raises(ValueError):
        parse_stats("vllm:generation_tokens_total\n")


def test_the_adapter_slots_are_read_from_the_lora_info_line():
    lines = (
        'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a,b",'
        'waiting_lora_adapters=""} 1.7e9\n'
        'vllm:lora_requests_info{max_lora="2",running_lora_adapters="",'
        'waiting_lora_adapters=""} 1.6e9\n'
    )
    assert parse_stats(lines).adapter_slots == 2
    assert parse_stats("vllm:num_requests_running 1\n").adapter_slots is None  # LoRA off
