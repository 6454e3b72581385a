"""A group size is checked against the k of every GEMM a device runs: under tensor parallelism the row-parallel
projections' shards, but an MoE model's routed experts spread whole over the devices (expert parallelism) keep
their whole width."""

from __future__ import annotations

import pytest

from explore.format_checks import check_format, gemm_k_dims
from workloads.model_config import load_model_config


def test_experts_spread_whole_keep_their_width_in_the_group_size_check():
    """Qwen3-30B-A3B: experts 768 wide (its config's moe_intermediate_size). Split over 8 devices each holds 96
    columns of every expert, which a group of 64 does not divide; spread whole (ep 8) each expert's down projection
    reads k = 768 = 12 x 64."""
    config = load_model_config("qwen3-30b-a3b")
    assert gemm_k_dims(config, tp=8)["MLP down"] == 96
    assert gemm_k_dims(config, tp=8, ep=8)["MLP down"] == 768
    parts = {"weight_bits": 4, "group_size": 64}
    with pytest.raises(ValueError, match="group_size: found 64, which does not divide qwen3-30b-a3b's MLP down k=96"):
        check_format(parts, config, tp=8)
    check_format(parts, config, tp=8, ep=8)


def test_a_dense_layers_and_shared_experts_stay_sharded_under_expert_parallelism():
    """DeepSeek-V2-Lite: its dense first layer (10,944 wide) and its two shared experts (2 x 1,408) run as
    tensor-parallel MLPs beside the spread experts (vLLM's DeepseekV2MLP), so their shards are k / tp."""
    config = load_model_config("deepseek-v2-lite")
    dims = gemm_k_dims(config, tp=2, ep=2)
    assert dims["MLP down"] == 1408
    assert dims["dense layers' MLP down"] == 10944 // 2
    assert dims["shared experts' MLP down"] == 2 * 1408 // 2


def test_data_parallel_attention_runs_all_but_the_routed_experts_whole():
    """DeepSeek-V3 in its block fp8 (128 x 128 blocks) on 32 devices: with data-parallel attention each device runs
    its dense first layers (18,432 wide), shared expert (2,048) and attention output (128 heads x 128) whole, as SGLang
    and vLLM's data-parallel ranks do, so a block of 128 divides every k; tensor parallelism shards the dense layers
    to 18,432 / 32 = 576 = 4.5 blocks, which vLLM's block-fp8 layers refuse too."""
    config = load_model_config("deepseek-v3")
    parts = {"weight_bits": 8, "act_bits": 8, "weight_type": "fp8_e4m3", "act_type": "fp8_e4m3",
             "scale_type": "fp32", "scale_granularity": "block", "group_size": 128}
    dims = gemm_k_dims(config, tp=32, ep=32, data_parallel=True)
    assert (dims["dense layers' MLP down"], dims["shared experts' MLP down"], dims["attention output"],
            dims["MLP down"]) == (18432, 2048, 128 * 128, 2048)
    check_format(parts, config, tp=32, ep=32, data_parallel=True)
    with pytest.raises(ValueError, match="dense layers' MLP down k=576"):
        check_format(parts, config, tp=32, ep=32)
