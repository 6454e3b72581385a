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
