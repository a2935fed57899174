"""The planner's arithmetic against cases computed by hand, and the model facts it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mistral_serve.models import planner
from mistral_serve.models.planner import (
    GIB,
    Architecture,
    Gpu,
    Gpus,
    PlanError,
    architecture_of,
    check_layout,
    known_architecture,
    plan,
)

H100 = Gpu("H100", 79.6)
MISTRAL_7B = known_architecture("mistralai/Mistral-7B-Instruct-v0.3")
MIXTRAL = known_architecture("mistralai/Mixtral-8x7B-Instruct-v0.1")
LARGE = known_architecture("mistralai/Mistral-Large-Instruct-2411")


def test_mistral_7b_keeps_128_kib_of_kv_cache_per_token():
    # 32 layers × 8 KV heads × 128 × 2 (K and V) × 2 bytes
    assert MISTRAL_7B.kv_bytes_per_token() == 131072


def test_mistral_7b_on_one_h100_by_hand():
    # 79.6 GiB × 0.9 = 71.64 GiB usable; weights 7.25e9 × 2 B = 13.504 GiB; 3 GiB runtime.
    one = plan(MISTRAL_7B, Gpus(1, H100), max_model_len=32768).layouts[0]
    free = 79.6 * 0.9 * GIB - 7.25e9 * 2 - 3 * GIB
    assert one.kv_tokens_per_engine == int(free // 131072) == 451672
    assert one.sequences_per_engine == 451672 // 32768 == 13
    assert one.weights_gib_per_gpu == 13.5


def test_two_h100s_give_7b_two_engines_and_mixtral_one_of_two_gpus():
    seven = plan(MISTRAL_7B, Gpus.parse("2xH100"), max_model_len=32768)
    assert [(each.engines, each.tensor_parallel) for each in seven.layouts] == [(2, 1), (1, 2)]
    assert (seven.recommended.engines, seven.recommended.tensor_parallel) == (2, 1)
    mixtral = plan(MIXTRAL, Gpus.parse("2xH100"))
    assert not mixtral.layouts[0].fits  # 87 GiB of weights on one 80 GB GPU
    assert mixtral.recommended.tensor_parallel == 2
    # Per GPU: 71.64 − 46.7e9 × 2 / 2 B − 3 GiB, over 64 KiB (half the KV heads) per token.
    free = 79.6 * 0.9 * GIB - 46.7e9 - 3 * GIB
    assert mixtral.recommended.kv_tokens_per_engine == int(free // 65536)


def test_mistral_large_does_not_fit_two_h100s_in_bf16_and_says_what_would():
    result = plan(LARGE, Gpus.parse("2xH100"))
    assert result.recommended is None and not any(each.fits for each in result.layouts)
    assert "With fp8 weights, MAX_MODEL_LEN up to" in result.reason
    assert plan(LARGE, Gpus.parse("8xH100")).recommended.tensor_parallel == 8
    fp8 = plan(LARGE, Gpus.parse("2xH100"), dtype="fp8", max_model_len=32768)
    assert fp8.recommended.tensor_parallel == 2


def test_tensor_parallel_must_divide_the_heads_and_few_kv_heads_are_repeated():
    odd = Architecture("odd", 1e9, 10, 1536, 12, 2, 128, 8192)
    assert [each.tensor_parallel for each in plan(odd, Gpus.parse("8xL4")).layouts] == [1, 2, 4]
    # 2 KV heads over 4 GPUs: each GPU keeps one whole head, not half of one.
    four = planner.layout(
        odd, Gpu("L4", 22.5), 4, 2, dtype="bf16", max_model_len=8192, utilization=0.9
    )
    per_token_per_gpu = 10 * 1 * 128 * 2 * 2
    free = 22.5 * 0.9 * GIB - 1e9 * 2 / 4 - 3 * GIB
    assert four.kv_tokens_per_engine == int(free // per_token_per_gpu)


def test_a_longer_max_model_len_than_the_model_is_refused():
    with pytest.raises(PlanError, match="over Mistral 7B's 32768"):
        plan(MISTRAL_7B, Gpus.parse("H100"), max_model_len=65536)


@pytest.mark.parametrize(
    ("text", "count", "name"),
    [
        ("2xH100", 2, "H100"),
        ("H100", 1, "H100"),
        ("4xA100-80GB", 4, "A100-80GB"),
        ("3×l40s", 3, "L40S"),
    ],
)
def test_gpus_are_named_count_x_name(text, count, name):
    gpus = Gpus.parse(text)
    assert (gpus.count, gpus.gpu.name) == (count, name)


def test_an_unknown_gpu_is_named_with_the_known_ones():
    with pytest.raises(PlanError, match=r"unknown GPU 'TPU'.*H100"):
        Gpus.parse("TPU")


def test_up_is_told_the_tensor_parallel_size_that_fits():
    refusal = check_layout(
        MIXTRAL, Gpus(2, H100), 1, dtype="bf16", max_model_len=None, utilization=0.9
    )
    assert refusal.startswith("Mixtral 8x7B needs 94 GiB per engine")
    assert "at GPU_MEMORY_UTILIZATION 0.9, one 80 GiB GPU holds 72" in refusal
    assert refusal.endswith("set TENSOR_PARALLEL_SIZE=2")
    assert (
        check_layout(MIXTRAL, Gpus(2, H100), 2, dtype="bf16", max_model_len=None, utilization=0.9)
        is None
    )
    nowhere = check_layout(
        LARGE, Gpus(2, H100), 2, dtype="bf16", max_model_len=None, utilization=0.9
    )
    assert "does not fit on 2xH100" in nowhere


# -- reading a model's facts ---------------------------------------------------------------------
#: Mistral-7B-Instruct-v0.3's config.json (the fields the planner reads).
MISTRAL_7B_CONFIG = {
    "architectures": ["MistralForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "tie_word_embeddings": False,
    "vocab_size": 32768,
}


def test_a_hugging_face_folder_is_sized_from_its_config(tmp_path: Path):
    folder = tmp_path / "Mistral-7B-Instruct-v0.3"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(MISTRAL_7B_CONFIG))
    architecture = architecture_of(str(folder))
    assert architecture.parameters == pytest.approx(7.248e9, rel=0.001)  # published: 7.25 B
    assert architecture.kv_bytes_per_token() == 131072


def test_a_mixture_counts_every_expert(tmp_path: Path):
    folder = tmp_path / "mixtral"
    folder.mkdir()
    config = {**MISTRAL_7B_CONFIG, "num_local_experts": 8, "vocab_size": 32000}
    (folder / "config.json").write_text(json.dumps(config))
    assert architecture_of(str(folder)).parameters == pytest.approx(46.70e9, rel=0.001)


def test_a_mistral_format_folder_is_sized_from_params_json(built):
    demo = architecture_of(str(built["v3"]))  # the demo checkpoint writes params.json
    params = json.loads((built["v3"] / "params.json").read_text())
    assert (demo.layers, demo.kv_heads, demo.head_dim) == (
        params["n_layers"],
        params["n_kv_heads"],
        params["head_dim"],
    )


def test_a_model_in_the_hugging_face_cache(tmp_path: Path):
    snapshot = tmp_path / "models--acme--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({**MISTRAL_7B_CONFIG, "num_hidden_layers": 2}))
    assert architecture_of("acme/tiny", hf_cache=tmp_path).layers == 2


def test_published_models_are_known_by_name_and_others_are_refused(tmp_path: Path):
    assert architecture_of("mixtral-8x22b", hf_cache=tmp_path).experts == 8
    assert architecture_of("mistralai/Pixtral-Large-Instruct-2411", hf_cache=tmp_path).layers == 88
    with pytest.raises(PlanError, match="not one of Mistral's published models"):
        architecture_of("acme/unknown", hf_cache=tmp_path)


def test_the_sizing_table_in_the_deploy_docs_is_the_planners():
    page = (Path(__file__).parents[3] / "docs" / "deploy.md").read_text()
    begin = page.index("<!-- sizing-table: generated by mistral_serve.models.planner -->\n")
    end = page.index("\n<!-- /sizing-table -->")
    assert page[begin:end].split("\n", 1)[1] == planner.sizing_table()
