"""aiconfigurator's tables read into measured-kernel rows: shapes, dtypes, timing and held-out groups by hand."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pytest

from hw_models.calibration import as_timed
from hw_models.registry import load_device
from kernels.aiconfigurator_import import read_aiconfigurator
from kernels.measured import MeasuredKernel, read_table, write_table
from workloads.errors import InputError

GEMM = ["framework", "version", "device", "op_name", "kernel_source", "gemm_dtype", "m", "n", "k", "latency"]
ATTN = ["framework", "version", "device", "op_name", "kernel_source", "batch_size", "isl", "num_heads",
        "num_key_value_heads", "head_dim", "beam_width", "attn_dtype", "kv_cache_dtype", "step", "window_size",
        "latency"]


def _write(path, columns, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


@pytest.fixture
def folder(tmp_path):
    base = tmp_path / "h200_sxm"
    _write(base / "gemm/vllm/0.24.0/gemm_perf.csv.gz", GEMM, [
        ["VLLM", "0.24.0", "NVIDIA H200", "gemm", "torch.nn.functional.linear", "bfloat16", 1, 4096, 4096, 0.0126],
        ["VLLM", "0.24.0", "NVIDIA H200", "gemm", "CutlassFP8ScaledMMLinearKernel", "fp8", 16, 4096, 4096, 0.0103],
        ["VLLM", "0.24.0", "NVIDIA H200", "gemm", "DeepGemmFp8BlockScaledMMKernel", "fp8_block", 128, 4096, 4096,
         0.0857]])
    attn = base / "attention/vllm/0.24.0"
    _write(attn / "generation_attention_perf.csv.gz", ATTN, [
        ["VLLM", "0.24.0", "NVIDIA H200", "generation_attention", "fa3", 32, 1, 64, 8, 128, 1, "bfloat16", "fp8",
         1023, 0, 0.05],
        ["VLLM", "0.24.0", "NVIDIA H200", "generation_attention", "fa3", 32, 1, 64, 8, 128, 1, "bfloat16", "bfloat16",
         1023, 1024, 0.04]])  # windowed: skipped
    _write(attn / "context_attention_perf.csv.gz", ATTN, [
        ["VLLM", "0.24.0", "NVIDIA H200", "context_attention", "fa3", 2, 2048, 32, 8, 128, 1, "bfloat16",
         "bfloat16", 0, 0, 0.3]])
    return tmp_path


def test_rows_by_hand(folder, tmp_path):
    rows = read_aiconfigurator(folder)
    by_kind = {(r.kernel, r.dtype, r.variant): r for r in rows}
    assert len(rows) == 5  # the windowed decode row is left out
    bf16 = by_kind[("gemm", "bf16", "")]
    assert (bf16.m, bf16.n, bf16.k, bf16.device, bf16.timing) == (1, 4096, 4096, "h200", "graph")
    assert bf16.time_s == pytest.approx(12.6e-6)  # milliseconds in the data
    assert by_kind[("gemm", "fp8", "tensor")].timing == "graph"
    assert by_kind[("gemm", "fp8", "block128")].timing == "eager"  # launched from the host, not a graph
    decode = by_kind[("attention_decode", "bf16", "")]
    # One new token attending to isl + step = 1 + 1023 cached tokens; the KV cache in fp8.
    assert (decode.seq_len, decode.kv_len, decode.kv_dtype, decode.batch) == (1, 1024, "fp8", 32)
    prefill = by_kind[("attention_prefill", "bf16", "")]
    assert (prefill.seq_len, prefill.kv_len) == (2048, 2048)
    # Held-out groups: one weight shape per GEMM source, one head configuration per attention source.
    assert bf16.source == "aiconfigurator:h200_sxm:gemm:bfloat16:n4096:k4096"
    assert decode.source == "aiconfigurator:h200_sxm:attention_decode:fa3:h64:kv8:d128"
    # The new columns survive a round trip through the table.
    path = tmp_path / "t.csv.gz"
    write_table(path, rows)
    assert read_table(path) == rows


MOE = ["framework", "version", "device", "op_name", "kernel_source", "moe_dtype", "num_tokens", "hidden_size",
       "inter_size", "topk", "num_experts", "moe_tp_size", "moe_ep_size", "distribution", "latency"]


def test_weight_only_moe_rows_by_hand(tmp_path):
    """Marlin's int4 MoE and gpt-oss's MXFP4 MoE read as w4a16 layers with their weights' storage as the variant,
    held out by layout; the MXFP4 x MXFP8 layers as w4a8 ones (fp8 math), likewise."""
    _write(tmp_path / "b200_sxm/moe/vllm/0.24.0/moe_perf.csv.gz", MOE, [
        ["VLLM", "0.24.0", "NVIDIA B200", "moe", "vllm_compressedtensorswna16marlinmoe_marlin_marlinexperts",
         "int4_wo", 1, 7168, 2048, 8, 384, 2, 1, "balanced", 0.0683],
        ["VLLM", "0.24.0", "NVIDIA B200", "moe", "vllm_gptossmxfp4moe_flashinfer_trtllm_mxfp4_bf16_"
         "trtllmmxfp4expertsmonolithic", "w4a16_mxfp4", 1, 2880, 2880, 4, 128, 1, 4, "power_law_1.2", 0.05],
        ["VLLM", "0.24.0", "NVIDIA B200", "moe", "vllm_mxfp4moe_flashinfer_trtllm_mxfp4_mxfp8_"
         "trtllmmxfp4expertsmodular", "w4a8_mxfp4_mxfp8", 1, 4096, 2048, 6, 256, 1, 1, "balanced", 0.04]])
    rows = read_aiconfigurator(tmp_path)
    assert [(r.dtype, r.variant) for r in rows] == [("w4a16", "group32"), ("w4a16", "mxfp4"), ("w4a8", "mxfp4_mxfp8")]
    int4, fp4, w4a8 = rows
    # 1 token, top-6 of 256: 6 experts x 3 matrices of 4096 x 2048, e2m1 + an e8m0 scale per 32 (4.25 bits), fp8 math.
    assert w4a8.source.endswith(":h4096:i2048:top6:e256:tp1:ep1")
    assert w4a8.to_kernel().weight_bytes == pytest.approx(6 * 3 * 4096 * 2048 * 4.25 / 8)
    assert w4a8.to_kernel().dtype == "fp8"
    # n is one expert's intermediate size on the device: 2048 / TP 2; the layout names the held-out group.
    assert (int4.m, int4.n, int4.k, int4.topk, int4.experts, int4.expert_parallel) == (1, 1024, 7168, 8, 384, 1)
    assert int4.source == ("aiconfigurator:b200_sxm:moe:int4_wo:vllm_compressedtensorswna16marlinmoe_marlin_"
                           "marlinexperts:h7168:i2048:top8:e384:tp2:ep1")
    assert fp4.source.endswith(":h2880:i2880:top4:e128:tp1:ep4") and fp4.routing == "power_law_1.2"
    assert (int4.time_s, int4.timing, int4.device) == (pytest.approx(68.3e-6), "graph", "b200")
    # 1 token, top-8: 8 experts x 3 matrices of 7168 x 1024 at 4 bits + a bf16 scale per 32 (4.5 bits), bf16 math.
    kernel = int4.to_kernel()
    assert kernel.weight_bytes == pytest.approx(8 * 3 * 7168 * 1024 * 4.5 / 8)
    assert kernel.flops == pytest.approx(2 * 8 * 3 * 7168 * 1024) and kernel.dtype == "bf16"
    path = tmp_path / "t.csv.gz"
    write_table(path, rows)
    assert read_table(path) == rows


def test_fp8_kv_moves_half_the_kv_bytes():
    row = MeasuredKernel(device="h200", kernel="attention_decode", dtype="bf16", time_s=1e-5, source="s", batch=4,
                         seq_len=1, kv_len=1000, heads=32, kv_heads=8, head_dim=128)
    fp8 = MeasuredKernel(**{**row.__dict__, "kv_dtype": "fp8"})
    # K and V: 2 x 4 sequences x 8 heads x 1000 tokens x 128 x 2 bytes = 16.384 MB at bf16, half at fp8.
    assert row.to_kernel().kv_bytes == pytest.approx(16.384e6)
    assert fp8.to_kernel().kv_bytes == pytest.approx(8.192e6)


def test_rows_are_compared_as_their_source_timed_them():
    device = load_device("h100-sxm", calibrated=False)
    launch, node = device.host_s("eager"), device.host_s("graphs")
    device_s = np.array([0.5e-6, 10e-6, 0.5e-6, 10e-6, 10e-6])
    timings = np.array(["graph", "graph", "eager", "isolated", "kernel"])
    np.testing.assert_allclose(as_timed(device, device_s, timings),
                               [node, 10e-6, launch, 10e-6 + launch, 10e-6])


def test_not_a_folder_is_one_line(tmp_path):
    with pytest.raises(InputError, match="not an aiconfigurator data folder"):
        read_aiconfigurator(tmp_path)
