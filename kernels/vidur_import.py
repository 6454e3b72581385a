"""Read the Vidur profiling data (../shared/data/vidur) into measured-kernel rows.

GEMMs come from gemm_points.csv.gz; norms, activations, residual adds, RoPE and embedding lookups from
the per-model profiling/compute/<gpu>/<model>/mlp.csv.gz (median times in ms, fp16, one transformer
layer). Bytes of streaming kernels are one pass over their inputs and outputs, from the shapes in the
data's README: T tokens, hidden h, F FFN width, H and KV heads of size hd, TP-way tensor parallelism.
Each row's `source` names the model ("vidur:<model>"), so fits can hold whole models out.

How they were timed (Vidur's profiler, `vidur/profiling/common/cuda_timer.py`): an op runs under a PyTorch
(Kineto) profiler and its time is the sum of the device durations of every CUDA kernel it launched
(`aggregation_fn=sum`), the median over 20 steps. So a row is device time without host gaps (timing `kernel`),
and an op that launches two kernels (a cuBLAS split-K GEMM and its reduction) counts both, as aiconfigurator's
graph replays of a whole layer do. Its smallest GEMMs take 4 us on H100 where aiconfigurator's H200 GEMMs go down
to 2.4 us, but that floor is the device's, not the timing's: Vidur's smallest GEMMs stream 4.2 MB of weights (m up
to 64, k 512, n 4096: 4 us; aiconfigurator's H200, 3.5 us), and on GEMMs of m <= 16 and at least that much weight
both sources' times lie on a line of the same intercept, 4.2 us (H100) and 4.1 us (H200), at 0.89 and 0.85 of
each datasheet bandwidth (tests/hw_models/test_gemm_cross_source.py). aiconfigurator's 2.4 us GEMMs move
kilobytes, which Vidur never timed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kernels.measured import MeasuredKernel
from kernels.source_rows import source_rows
from workloads.errors import InputError

# Vidur's GPU names and our presets: its profiles were taken on DGX A100 80 GB and DGX H100 (SXM) nodes
# (network profiles under profiling/network/a100_dgx, h100_dgx) and an A40.
GPU_PRESETS = {"a100": "a100-sxm-80gb", "h100": "h100-sxm", "a40": "a40"}
FP16_BYTES = 2


def _gemm_rows(path: Path) -> Iterator[MeasuredKernel]:
    for row in source_rows(path):
        yield MeasuredKernel(
            device=GPU_PRESETS[row["gpu"]], kernel="gemm", dtype="fp16", time_s=row.number("median_ms") * 1e-3,
            source=f"vidur:{row['model']}", m=row.whole("m"), k=row.whole("k"), n=row.whole("n"),
        )


def stream_bytes(op: str, shape: dict[str, float]) -> tuple[str, float] | None:
    """Kernel class and bytes moved of one of Vidur's token-parallel streaming ops, or None to skip it."""
    t, h, tp = shape["num_tokens"], shape["n_embd"], shape["num_tensor_parallel_workers"]
    hd = h / shape["n_head"]
    if op in ("input_layernorm", "post_attention_layernorm"):
        return "norm", 2 * t * h * FP16_BYTES  # read the activation, write the normalized one
    if op == "add":
        return "elementwise", 3 * t * h * FP16_BYTES  # two inputs, one output
    if op == "mlp_act":
        width = shape["n_expanded_embd"] / tp
        inputs = 2 if shape["use_gated_mlp"] else 1  # gated: act(gate) * up reads two halves
        return "activation", (inputs + 1) * t * width * FP16_BYTES
    if op == "attn_rope":
        heads = (shape["n_head"] + shape["n_kv_head"]) / tp
        return "rope", 2 * t * heads * hd * FP16_BYTES  # rotate q and k in place: read and write
    if op == "emb" and tp == 1:  # vocab-parallel embeddings under TP mask and reduce: not one gather
        return "embedding", 2 * t * h * FP16_BYTES  # gather T rows, write them
    return None


STREAM_OPS = ("emb", "input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add")


def _stream_rows(path: Path, gpu: str, model: str) -> Iterator[MeasuredKernel]:
    for row in source_rows(path):
        shape = {k: (row.number(k) if k != "use_gated_mlp" else row[k] == "True")
                 for k in ("num_tokens", "n_embd", "n_head", "n_kv_head", "n_expanded_embd", "use_gated_mlp",
                           "num_tensor_parallel_workers")}
        for op in STREAM_OPS:
            found = stream_bytes(op, shape)
            median = f"time_stats.{op}.median"
            if found is None or not row.get(median):  # an op the model does not run has no time
                continue
            kind, nbytes = found
            yield MeasuredKernel(device=GPU_PRESETS[gpu], kernel=kind, dtype="fp16",
                                 time_s=row.number(median) * 1e-3, source=f"vidur:{model}", bytes=nbytes)


def read_vidur(folder: str | Path) -> list[MeasuredKernel]:
    """Every GEMM and streaming kernel measured in a Vidur data folder, as measured-kernel rows."""
    folder = Path(folder)
    gemms = folder / "gemm_points.csv.gz"
    compute = folder / "profiling" / "compute"
    if not gemms.is_file() or not compute.is_dir():
        raise InputError(f"{folder}: not a Vidur data folder (needs gemm_points.csv.gz and profiling/compute/)")
    rows = list(_gemm_rows(gemms))
    for path in sorted(compute.glob("*/*/*/mlp.csv.gz")):
        gpu, org, name = path.parts[-4], path.parts[-3], path.parts[-2]
        if gpu in GPU_PRESETS:
            rows.extend(_stream_rows(path, gpu, f"{org}/{name}"))
    return rows
