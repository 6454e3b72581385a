"""Read aiconfigurator's measured-performance database (../shared/data/aiconfigurator) into measured-kernel rows.

GEMMs (bf16, per-tensor fp8, block-scaled fp8, NVFP4) come from `<gpu>/gemm/<framework>/<version>/gemm_perf.csv.gz`;
prefill ("context") and decode ("generation") attention from `.../attention/...`, with a bf16 or fp8 KV cache.
Latencies are milliseconds per kernel call.

How they were timed (aiconfigurator's collector, `collector/helper.py: benchmark_with_power` and
`collector/vllm/collect_*.py`): the op is captured in a CUDA graph (GEMMs: six copies of the layer, each
with its own weights), the graph is replayed and timed with CUDA events, and the time is divided by the
kernels in it. So a row is a kernel's device time back to back, with no host launch in it: the same
quantity a profiler's kernel durations measure, up to the small gap between graph nodes (rows time
`graph`). Block-scaled fp8 GEMMs were allowed to fall back to eager launches in collector versions of the
time, so those rows may carry a host launch each (`eager`). A GEMM row times the layer's whole forward
(collector/vllm/collect_gemm.py: vLLM's RowParallelLinear), so a per-tensor fp8 row includes the static input
quantization kernel vLLM runs before the scaled GEMM; the six copies of the layer share one input tensor.

Fused MoE layers come from `.../moe/<framework>/<version>/moe_perf.csv.gz` (collector/vllm/collect_moe.py:
vLLM's `fused_experts` and the FlashInfer CUTLASS / TensorRT-LLM MoE kernels it dispatches to, timed from a
CUDA graph like the GEMMs, graph capture falling back to eager launches only where it fails: `graph`). A row
is a layer on the first of moe_ep_size devices: `m` tokens, hidden size `k`, each expert's intermediate size
on the device `n` = inter_size / moe_tp_size (the collector's local_inter_size), the top-k of `experts`, the
EP size and the routing (`distribution`: the collector's balanced or power-law expert ids, replayed by
kernels/aiconfigurator_routing.py). bf16, per-tensor fp8, block-scaled fp8 and NVFP4 layers are read; int4
and MXFP4 layers (one or two model shapes each, nothing to hold out) are skipped.

Each row's `source` names a group a fit can hold out whole: the GPU, the kernel, its dtype and the
weight shape (GEMM), the head configuration and attention backend (attention), or the MoE backend and model
shape (hidden, intermediate, top-k, experts; its TP and EP layouts and token counts together). Windowed
attention rows (window_size > 0) are skipped: the measured-kernel table has no window column.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from pathlib import Path

from kernels.measured import MeasuredKernel
from workloads.errors import InputError

# aiconfigurator's GPU folders and our presets.
GPU_PRESETS = {"h200_sxm": "h200", "l40s": "l40s", "b200_sxm": "b200"}
# Its GEMM dtypes: (our compute dtype, the GEMM's scaling variant); NVFP4 is e2m1 values with an e4m3 scale
# per 16 (the collector's `tensor_group` scheme, group_size 16).
GEMM_DTYPES = {"bfloat16": ("bf16", ""), "fp8": ("fp8", "tensor"), "fp8_block": ("fp8", "block128"),
               "nvfp4": ("fp4", "nvfp4")}
KV_DTYPES = {"bfloat16": "bf16", "fp8": "fp8"}
# Its MoE dtypes read (as GEMM_DTYPES: weights and math; activations enter and leave in bf16).
MOE_DTYPES = GEMM_DTYPES
# The collector replays GEMMs and attention from CUDA graphs except block-scaled fp8 GEMMs (see above).
EAGER_GEMM_DTYPES = frozenset({"fp8_block"})


def _rows(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", newline="") as f:
        yield from csv.DictReader(f)


def _gemm_rows(path: Path, device: str, gpu: str) -> Iterator[MeasuredKernel]:
    for row in _rows(path):
        if row["gemm_dtype"] not in GEMM_DTYPES:
            continue
        dtype, variant = GEMM_DTYPES[row["gemm_dtype"]]
        m, n, k = int(row["m"]), int(row["n"]), int(row["k"])
        yield MeasuredKernel(
            device=device, kernel="gemm", dtype=dtype, variant=variant, time_s=float(row["latency"]) * 1e-3,
            timing="eager" if row["gemm_dtype"] in EAGER_GEMM_DTYPES else "graph",
            source=f"aiconfigurator:{gpu}:gemm:{row['gemm_dtype']}:n{n}:k{k}", m=m, n=n, k=k)


def _attention_rows(path: Path, device: str, gpu: str, decode: bool) -> Iterator[MeasuredKernel]:
    kernel = "attention_decode" if decode else "attention_prefill"
    for row in _rows(path):
        if int(row["window_size"]) != 0 or row["kv_cache_dtype"] not in KV_DTYPES:
            continue
        heads, kv_heads, head_dim = int(row["num_heads"]), int(row["num_key_value_heads"]), int(row["head_dim"])
        isl = int(row["isl"])
        # Decode: one new token attending to the isl + step cached ones (the data's README); prefill: isl tokens.
        q_len, kv_len = (1, isl + int(row["step"])) if decode else (isl, isl)
        yield MeasuredKernel(
            device=device, kernel=kernel, dtype="bf16", kv_dtype=KV_DTYPES[row["kv_cache_dtype"]],
            time_s=float(row["latency"]) * 1e-3, timing="graph",
            source=f"aiconfigurator:{gpu}:{kernel}:{row['kernel_source']}:h{heads}:kv{kv_heads}:d{head_dim}",
            batch=int(row["batch_size"]), seq_len=q_len, kv_len=kv_len, heads=heads, kv_heads=kv_heads,
            head_dim=head_dim)


def _moe_rows(path: Path, device: str, gpu: str) -> Iterator[MeasuredKernel]:
    for row in _rows(path):
        if row["moe_dtype"] not in MOE_DTYPES:
            continue
        dtype, variant = MOE_DTYPES[row["moe_dtype"]]
        hidden, inter, topk, experts = (int(row[c]) for c in ("hidden_size", "inter_size", "topk", "num_experts"))
        yield MeasuredKernel(
            device=device, kernel="moe", dtype=dtype, variant=variant, time_s=float(row["latency"]) * 1e-3,
            timing="graph", m=int(row["num_tokens"]), n=inter // int(row["moe_tp_size"]), k=hidden, topk=topk,
            experts=experts, expert_parallel=int(row["moe_ep_size"]), routing=row["distribution"],
            backend=row["kernel_source"],
            source=f"aiconfigurator:{gpu}:moe:{row['moe_dtype']}:{row['kernel_source']}:h{hidden}:i{inter}:"
                   f"top{topk}:e{experts}")


def read_aiconfigurator(folder: str | Path) -> list[MeasuredKernel]:
    """Every GEMM, (unwindowed) attention kernel and fused MoE layer measured in an aiconfigurator data folder."""
    folder = Path(folder)
    gpus = [p for p in sorted(folder.iterdir()) if p.name in GPU_PRESETS] if folder.is_dir() else []
    if not gpus:
        raise InputError(f"{folder}: not an aiconfigurator data folder (needs one of "
                         f"{', '.join(GPU_PRESETS)}/ with gemm/ and attention/ tables)")
    rows: list[MeasuredKernel] = []
    for gpu_dir in gpus:
        gpu, device = gpu_dir.name, GPU_PRESETS[gpu_dir.name]
        for path in sorted(gpu_dir.glob("gemm/*/*/gemm_perf.csv.gz")):
            rows.extend(_gemm_rows(path, device, gpu))
        for path in sorted(gpu_dir.glob("attention/*/*/context_attention_perf.csv.gz")):
            rows.extend(_attention_rows(path, device, gpu, decode=False))
        for path in sorted(gpu_dir.glob("attention/*/*/generation_attention_perf.csv.gz")):
            rows.extend(_attention_rows(path, device, gpu, decode=True))
        for path in sorted(gpu_dir.glob("moe/*/*/moe_perf.csv.gz")):
            rows.extend(_moe_rows(path, device, gpu))
    return rows
