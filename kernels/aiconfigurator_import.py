"""Read aiconfigurator's measured-performance database (../shared/data/aiconfigurator) into measured-kernel rows.

GEMMs (bf16, per-tensor fp8, block-scaled fp8, NVFP4) come from `<gpu>/gemm/<framework>/<version>/gemm_perf.csv.gz`;
prefill ("context") and decode ("generation") attention from `.../attention/...`, with a bf16 or fp8 KV cache.
Latencies are milliseconds per kernel call.

How they were timed (aiconfigurator's collector, `collector/helper.py: benchmark_with_power` and
`collector/vllm/collect_*.py`): the op is captured in a CUDA graph (GEMMs: six copies of the layer, each
with its own weights: GEMM_REPLAY_COPIES), the graph is replayed and timed with CUDA events, and the time is
divided by the kernels in it. So a row is a kernel's device time back to back, with no host launch in it: the same
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
kernels/aiconfigurator_routing.py). bf16, per-tensor fp8, block-scaled fp8 and NVFP4 layers are read, and the
layers of 4-bit weights meeting wider activations (QUANTIZED_MOE_DTYPES: rows of a 'wXaY' dtype with the weights'
storage as their variant): weight-only ones (w4a16: dequantized to bf16 for bf16 math) and B200's MXFP4 x MXFP8 ones
(w4a8: fp8 math). Their kernel_source names the kernel that ran: Marlin's MoE (vLLM's
CompressedTensorsWNA16MarlinMoEMethod and MarlinExperts) for int4_wo on every GPU, and for MXFP4 on L40S and beside
the others on H200 and B200; OpenAI's Triton MXFP4 MoE (OAITritonMxfp4Experts) on H200; FlashInfer's TensorRT-LLM
MXFP4 x bf16 MoE on B200; and for w4a8_mxfp4_mxfp8 FlashInfer's TensorRT-LLM MXFP4 x MXFP8 MoE (vLLM's Mxfp4MoEMethod,
trtllmmxfp4expertsmodular; an sm_100 kernel, so B200 alone has the rows). Each of these dtypes was measured on one to
three model shapes, too few to hold out by shape, so their sources also name the TP and EP layout: a fit holds out
whole layouts (other expert counts and intermediate shards per device) of the shapes it saw.

Each row's `source` names a group a fit can hold out whole: the GPU, the kernel, its dtype and the
weight shape (GEMM), the head configuration and attention backend (attention), or the MoE backend and model
shape (hidden, intermediate, top-k, experts; its TP and EP layouts and token counts together). Windowed
attention rows (window_size > 0) are skipped: the measured-kernel table has no window column.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kernels.measured import MeasuredKernel
from kernels.source_rows import source_rows
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
# 4-bit-weight MoE dtypes: (our 'wXaY' dtype, the operands' storage: kernels/measured.WEIGHT_VARIANTS).
# int4_wo: symmetric int4 with a bf16 scale per 32 weights. The collector builds the layer as vLLM loads
# moonshotai/Kimi-K2.5 (its shape: hidden 7168, intermediate 2048, top-8 of 384), whose experts are natively INT4
# with a scale per 32 (Moonshot's K2-Thinking INT4 note: "quant scale of 1x32"; ~4.5 bits a weight). An earlier
# collector revision (ai-dynamo/aiconfigurator collector/vllm/collect_moe.py, kernel_source vllm_marlin_int4_moe)
# used a scale per 128 instead: 4.125 bits, 8% less weight traffic. w4a16_mxfp4: gpt-oss's MXFP4 experts (e2m1
# values, an e8m0 scale per 32; vLLM's Mxfp4Config) with bf16 activations. w4a8_mxfp4_mxfp8: the same weights with
# activations quantized to MXFP8 (e4m3, an e8m0 scale per 32) for FlashInfer's TensorRT-LLM MoE, which takes them as
# MxE2m1 weights and MxE4m3 activations (flashinfer csrc/trtllm_fused_moe_kernel_launcher.cu, the block-scale MoE's
# dtype checks).
QUANTIZED_MOE_DTYPES = {"int4_wo": ("w4a16", "group32"), "w4a16_mxfp4": ("w4a16", "mxfp4"),
                        "w4a8_mxfp4_mxfp8": ("w4a8", "mxfp4_mxfp8")}
# The collector replays GEMMs and attention from CUDA graphs except block-scaled fp8 GEMMs (see above).
EAGER_GEMM_DTYPES = frozenset({"fp8_block"})
# Copies of a GEMM layer the collector runs in turn between two calls of one (collector/vllm/collect_gemm.py
# `outside_loop_count`, "independent GEMM instances for L2 cache flush"): six for bf16 and per-tensor fp8 GEMMs in
# every revision of the file. Where six copies' weights and outputs fit in the L2 they stay there (L40S's 96 MB:
# GEMMs of up to 16 MB of weights stream faster than its DRAM can deliver). Block-scaled fp8 and NVFP4 GEMMs ran six
# copies in earlier revisions and one in later ones, and the data do not say which: unknown (0).
GEMM_REPLAY_COPIES = {"bfloat16": 6, "fp8": 6}


def _gemm_rows(path: Path, device: str, gpu: str) -> Iterator[MeasuredKernel]:
    for row in source_rows(path):
        if row["gemm_dtype"] not in GEMM_DTYPES:
            continue
        dtype, variant = GEMM_DTYPES[row["gemm_dtype"]]
        m, n, k = row.whole("m"), row.whole("n"), row.whole("k")
        yield MeasuredKernel(
            device=device, kernel="gemm", dtype=dtype, variant=variant, time_s=row.number("latency") * 1e-3,
            timing="eager" if row["gemm_dtype"] in EAGER_GEMM_DTYPES else "graph",
            replay_copies=GEMM_REPLAY_COPIES.get(row["gemm_dtype"], 0),
            source=f"aiconfigurator:{gpu}:gemm:{row['gemm_dtype']}:n{n}:k{k}", m=m, n=n, k=k)


def _attention_rows(path: Path, device: str, gpu: str, decode: bool) -> Iterator[MeasuredKernel]:
    kernel = "attention_decode" if decode else "attention_prefill"
    for row in source_rows(path):
        if row.whole("window_size") != 0 or row["kv_cache_dtype"] not in KV_DTYPES:
            continue
        heads, kv_heads, head_dim = row.whole("num_heads"), row.whole("num_key_value_heads"), row.whole("head_dim")
        isl = row.whole("isl")
        # Decode: one new token attending to the isl + step cached ones (the data's README); prefill: isl tokens.
        q_len, kv_len = (1, isl + row.whole("step")) if decode else (isl, isl)
        yield MeasuredKernel(
            device=device, kernel=kernel, dtype="bf16", kv_dtype=KV_DTYPES[row["kv_cache_dtype"]],
            time_s=row.number("latency") * 1e-3, timing="graph",
            source=f"aiconfigurator:{gpu}:{kernel}:{row['kernel_source']}:h{heads}:kv{kv_heads}:d{head_dim}",
            batch=row.whole("batch_size"), seq_len=q_len, kv_len=kv_len, heads=heads, kv_heads=kv_heads,
            head_dim=head_dim)


def _moe_rows(path: Path, device: str, gpu: str) -> Iterator[MeasuredKernel]:
    for row in source_rows(path):
        moe_dtype = row["moe_dtype"]
        if moe_dtype not in MOE_DTYPES and moe_dtype not in QUANTIZED_MOE_DTYPES:
            continue
        dtype, variant = MOE_DTYPES.get(moe_dtype) or QUANTIZED_MOE_DTYPES[moe_dtype]
        hidden, inter, topk, experts = (row.whole(c) for c in ("hidden_size", "inter_size", "topk", "num_experts"))
        tp, ep = row.whole("moe_tp_size"), row.whole("moe_ep_size")
        layout = f":tp{tp}:ep{ep}" if moe_dtype in QUANTIZED_MOE_DTYPES else ""  # held out by layout (above)
        yield MeasuredKernel(
            device=device, kernel="moe", dtype=dtype, variant=variant, time_s=row.number("latency") * 1e-3,
            timing="graph", m=row.whole("num_tokens"), n=inter // tp, k=hidden, topk=topk,
            experts=experts, expert_parallel=ep, routing=row["distribution"], backend=row["kernel_source"],
            source=f"aiconfigurator:{gpu}:moe:{moe_dtype}:{row['kernel_source']}:h{hidden}:i{inter}:"
                   f"top{topk}:e{experts}{layout}")


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
