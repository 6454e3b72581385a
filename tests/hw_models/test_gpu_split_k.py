"""Split-K in the GPU GEMM model (Kernel.split_k): the padded work of its waves by hand, nothing changed for unsplit
GEMMs, and vLLM's split punica shrink (kernels/lora.py) never priced below its roofline floor."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.gpu_efficiency import padded_flops
from hw_models.registry import load_device, preset_names, read_device_yaml
from kernels.lora import LoraKernels
from tests.kernels.test_lora import LAYER

ONE = np.array([1.0])


def test_split_k_waves_by_hand():
    """Llama-3-8B's qkv shrink at a decode of 32 tokens on one adapter: C is 32 x 48 (3 slices of rank 16), k = 4,096.
    Unsplit, one 64 x 64 tile (the menu's least padded) loops over all of k in one wave of 132 SM slots: 132 x 2 x 64
    x 64 x 4,096 = 4,429,185,024 FLOPs. Split 64 ways (vLLM's SPLIT_K below 128 rows), 64 blocks of 4,096 / 64 = 64
    each, still one wave: 132 x 8,192 x 64 = 69,206,016. Three adapters' tiles split 64 ways are 192 blocks, two
    waves: 138,412,032."""
    m, n, k = np.array([32.0]), np.array([48.0]), np.array([4096.0])
    assert padded_flops(m, n, k, ONE, 132)[0] == 4_429_185_024
    assert padded_flops(m, n, k, ONE, 132, split_k=np.array([64.0]))[0] == 69_206_016
    assert padded_flops(m, n, k, np.array([3.0]), 132, split_k=np.array([64.0]))[0] == 138_412_032
    # k not a multiple of the split: each block loops over ceil(14,336 / 64) = 224 (down_proj's shrink).
    assert padded_flops(m, np.array([16.0]), np.array([14336.0]), ONE, 132, split_k=np.array([64.0]))[0] == \
        132 * 8192 * 224


def test_split_k_under_a_tile_policy_by_hand():
    """vLLM's SM90 fp8 dispatch picks its tile by the whole GEMM (m = 8 -> 16 x 64); split 4 ways, 4 blocks of
    1,024 / 4 = 256 in one wave: 2 x 132 x 16 x 64 x 256."""
    m, n, k = np.array([8.0]), np.array([64.0]), np.array([1024.0])
    policy = "vllm-cutlass-fp8/sm90"
    assert padded_flops(m, n, k, ONE, 132, tile_policy=policy, split_k=np.array([4.0]))[0] == 2 * 132 * 16 * 64 * 256


def test_unsplit_gemms_are_unchanged():
    """A split of 1 (every kernel but the shrink) gives the same padded work, to the bit, as no split at all."""
    rng = np.random.default_rng(7)
    m, n, k = (np.round(10 ** rng.uniform(0, 4.5, 200)) for _ in range(3))
    batch = np.round(10 ** rng.uniform(0, 1.5, 200))
    assert np.array_equal(padded_flops(m, n, k, batch, 132, split_k=np.ones(200)), padded_flops(m, n, k, batch, 132))


@pytest.mark.parametrize("name", preset_names("gpu"))
@pytest.mark.parametrize(("tokens", "adapters"), [(1, 1), (32, 1), (64, 4), (127, 8), (128, 1), (2048, 4)])
def test_lora_kernels_never_below_their_roofline_floor(name, tokens, adapters):
    """Every shrink and expand row of a pass, split or not, takes at least its bytes (the atomic adds included) at the
    preset's datasheet DRAM bandwidth and its FLOPs at the fastest datasheet peak it has (bf16 runs as fp16 where there
    is no bf16)."""
    raw, _ = read_device_yaml(name)
    rows = LoraKernels.of(LAYER, 16).at(tokens, adapters)
    floor = np.maximum(rows.flops / (max(raw["compute"]["peak_TFLOPS"].values()) * 1e12),
                       rows.bytes / (raw["memory"]["bandwidth_GBps"] * 1e9))
    for calibrated in (True, False):
        costs = load_device(name, calibrated=calibrated).cost_table(rows, "device")
        assert np.all(costs.time_s >= floor * (1 - 1e-12))


def test_split_shrink_runs_faster_than_one_block_a_tile():
    """On an H100 a decode's shrink split 64 ways fills more of a wave than one tile looping over k: its time falls,
    the expand's (never split) stays; the split's atomic adds are in its bytes."""
    gpu = load_device("h100-sxm")
    rows = LoraKernels.of(LAYER, 16).at(32, 1)
    shrink = np.array([k.op == "lora_shrink" for k in rows.kernels])
    assert set(rows.split_k[shrink].tolist()) == {64.0} and set(rows.split_k[~shrink].tolist()) == {1.0}
    split = gpu.cost_table(rows, "device").time_s
    whole = gpu.cost_table(rows.with_columns(split_k=np.ones(len(rows))), "device").time_s
    assert np.all(split[shrink] < whole[shrink])
    assert np.array_equal(split[~shrink], whole[~shrink])
