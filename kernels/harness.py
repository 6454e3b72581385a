"""Measurement harness: time real kernels on CUDA or CPU and produce measured-kernel table rows.

Each timing warms up, then runs the kernel many times on freshly made inputs and keeps the median. GEMMs and
attention find their inputs as a model's pass does, not in the caches (weights and KV caches no kernel has just
written): the caches are flushed in between (a read of a buffer larger than the last-level cache). Pointwise kernels
find theirs warm, as the kernel that made them left them: in a pass each reads what the one before wrote. On CUDA
the time is taken by device events around the call; on CPU by the wall clock around it (CPU ops are synchronous).

On CUDA the flush (256 MiB read, tens of microseconds of device time), or for warm inputs a device sleep, is queued
ahead of the start event, so the host's dispatch of the call happens while the device is busy and stays out of the
time; the device's own launch of the kernel stays in ('isolated' rows: a fit's device time plus the preset's
kernel_launch_us). Checked on an H200 (2026-12-04, torch 2.11, a flush that wrote its buffer): with a device
sleep queued ahead of the start event as well, which hides any dispatch, the times moved by a median 0.26 us over
200 GEMMs, 0.04 us over 22 attention cases and 0.00 us over 36 norm, SiLU and add sizes.

torch is imported inside the functions, so kernels/ imports without it.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import itertools
import json
import logging
import platform
import shutil
import statistics
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from time import perf_counter_ns
from typing import TYPE_CHECKING

from kernels.formats import DTYPE_SHORT
from kernels.measured import GENERAL_LAYOUT, TORCH_SDPA_BACKEND, MeasuredKernel
from workloads.model_config import TORCH_DTYPES
from workloads.profiler_import import MODULE_ANNOTATION

if TYPE_CHECKING:
    from workloads.model_config import ModelConfig

log = logging.getLogger(__name__)

# The dtypes the harness times: torch names -> table names (kernels.formats' short names), and back.
TABLE_DTYPE_NAMES = {name: DTYPE_SHORT[name] for name in TORCH_DTYPES}
TORCH_DTYPE_NAMES = {short: name for name, short in TABLE_DTYPE_NAMES.items()}

# Bytes read between runs to evict the inputs of the previous run from the caches. H100's L2 is 50 MiB
# (H200 the same); 256 MiB is what triton.testing.do_bench uses. CPU last-level caches are at most tens of MiB.
FLUSH_BYTES = {"cuda": 256 * 2**20, "cpu": 64 * 2**20}
MAX_RUNS_FACTOR = 100  # with min_time_s, at most repeats x this many timed runs
# Device cycles a sleep holds the stream ahead of the start event (about 100 us at an H200's 1.98 GHz): longer than
# the host takes to dispatch one pointwise op, so the time starts when the device is already waiting on the kernel.
SLEEP_CYCLES = 200_000

GemmShape = tuple[int, int, int]  # (m, n, k): C[m, n] = A[m, k] @ B[k, n]
AttentionCase = tuple[int, int, int, int, int, int]  # (batch, heads, kv_heads, q_len, kv_len, head_dim)
StreamingSize = tuple[int, int]  # (rows, hidden): an activation of rows x hidden elements
DecodeCase = tuple[int, int]  # (batch, context_len): batch new tokens after context_len cached ones
PrefillCase = tuple[int, int]  # (batch, prompt_len): batch prompts of prompt_len tokens into an empty cache
# The largest bf16 KV cache (keys and values) a GPU attention case makes: each timed run makes its inputs afresh.
ATTENTION_KV_BYTES_MAX = 8 * 10**9


def _torch():
    import torch

    return torch


def torch_dtype(dtype: str):
    """The torch dtype for a table dtype name ('bf16') or a torch one ('bfloat16')."""
    torch = _torch()
    name = TORCH_DTYPE_NAMES.get(dtype, dtype)
    if name not in TABLE_DTYPE_NAMES:
        allowed = ", ".join(list(TORCH_DTYPE_NAMES) + list(TABLE_DTYPE_NAMES))
        raise ValueError(f"dtype: found {dtype!r}, allowed: {allowed}")
    return getattr(torch, name)


def table_dtype(dtype: str) -> str:
    """The table's short dtype name ('bf16') for either spelling."""
    return TABLE_DTYPE_NAMES.get(TORCH_DTYPE_NAMES.get(dtype, dtype), dtype)


def _is_cuda(device: str) -> bool:
    return _torch().device(device).type == "cuda"


def device_name(device: str) -> str:
    """The hardware name: torch.cuda.get_device_name on CUDA, the CPU model name otherwise."""
    if _is_cuda(device):
        return _torch().cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown cpu"


def driver_version() -> str:
    """The NVIDIA driver version from nvidia-smi, or 'unknown'."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "unknown"
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def harness_setup(device: str) -> str:
    """What the harness's timings depend on, beyond the shape: 'harness torch V; DEVICE; cuda V; driver V' on CUDA,
    'harness torch V; CPU; threads N' on the CPU."""
    torch = _torch()
    parts = [f"harness torch {torch.__version__}", device_name(device)]
    if _is_cuda(device):
        parts += [f"cuda {torch.version.cuda}", f"driver {driver_version()}"]
    else:
        parts.append(f"threads {torch.get_num_threads()}")
    return "; ".join(parts)


def harness_source(device: str) -> str:
    """Provenance of harness rows: harness_setup and the date, 'harness torch V; DEVICE; cuda V; driver V; DATE'."""
    return f"{harness_setup(device)}; {datetime.datetime.now(datetime.UTC).date().isoformat()}"


class _CacheFlusher:
    """Reads a buffer larger than the device's last-level cache, leaving the cache full of clean lines.

    A flush that writes its buffer leaves the cache full of dirty lines, and the timed kernel, whose reads evict
    them, pays their write-back to DRAM: up to a cache's worth of extra traffic on a memory-bound kernel. A read
    evicts the previous run's inputs the same way and leaves nothing to write back.
    """

    def __init__(self, device: str):
        torch = _torch()
        kind = "cuda" if _is_cuda(device) else "cpu"
        # Written once here, so that every page is backed (an untouched CPU page reads as the shared zero page).
        self._buffer = torch.ones(FLUSH_BYTES[kind], dtype=torch.uint8, device=device)

    def __call__(self) -> None:
        self._buffer.amax()


class _DeviceSleep:
    """In a flush's place where a kernel is to find its inputs warm: a device sleep queued ahead of the start event,
    which keeps the host's dispatch out of the time as the flush does and leaves the caches as they are (a no-op on
    a CPU, timed synchronously)."""

    def __init__(self, device: str):
        self._cuda = _is_cuda(device)

    def __call__(self) -> None:
        if self._cuda:
            _torch().cuda._sleep(SLEEP_CYCLES)


def _time_cpu(fn: Callable, inputs: tuple) -> float:
    start = perf_counter_ns()
    fn(*inputs)
    return (perf_counter_ns() - start) * 1e-9


def _time_cuda(fn: Callable, inputs: tuple) -> float:
    torch = _torch()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn(*inputs)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e-3  # elapsed_time is in milliseconds


def time_op(fn: Callable, make_inputs: Callable[[], tuple], *, device: str, warmup: int = 3, repeats: int = 20,
            min_time_s: float = 0.0, pool: int = 0, flush: bool = True) -> float:
    """Median seconds of fn(*make_inputs()) over at least `repeats` timed runs (more until min_time_s is spent).

    Each run gets inputs made fresh for the run (pool=0), or, where making them is slow, taken in turn from `pool`
    input sets made up front. With `flush` they are not in the caches when the run starts (a read of a buffer larger
    than the last-level cache in between); without it, inputs made fresh are as warm as the kernel that made them
    left them, and on CUDA a device sleep hides the host's dispatch instead (_DeviceSleep). Runs under
    torch.no_grad().
    """
    if repeats < 1 or warmup < 0 or pool < 0:
        raise ValueError(f"repeats >= 1, warmup >= 0, pool >= 0 required; found {repeats}, {warmup}, {pool}")
    torch = _torch()
    cuda = _is_cuda(device)
    timer = _time_cuda if cuda else _time_cpu
    next_inputs = itertools.cycle([make_inputs() for _ in range(pool)]).__next__ if pool else make_inputs
    flusher = _CacheFlusher(device) if flush else _DeviceSleep(device)
    times: list[float] = []
    with torch.no_grad():
        for _ in range(warmup):
            fn(*next_inputs())
        if cuda:
            torch.cuda.synchronize(device)
        while len(times) < repeats or (sum(times) < min_time_s and len(times) < repeats * MAX_RUNS_FACTOR):
            inputs = next_inputs()
            flusher()
            times.append(timer(fn, inputs))
    return statistics.median(times)


def write_check(path: str | Path, rows: list[dict], torch_device: str) -> str:
    """Write a check's rows (bench/gpu/check_*.py: dicts of one set of keys) to a CSV at `path`, each with the
    harness's provenance in a `source` column; returns that provenance."""
    import csv

    source = harness_source(torch_device)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0], "source"])
        writer.writeheader()
        writer.writerows({**row, "source": source} for row in rows)
    return source


def run_check(argv: list[str], rows: Callable[[str, bool], Iterable[dict]]) -> int:
    """The command line of a bench/gpu/check_*.py, `OUT.csv [--cpu]`: rows(torch device, on the CPU) timed into OUT
    with the harness's provenance (write_check), each row printed by the check as it is timed."""
    out, cpu = argv[0], "--cpu" in argv[1:]
    device = "cpu" if cpu else "cuda"
    measured = list(rows(device, cpu))
    source = write_check(out, measured, device)
    print(f"{out}: {len(measured)} rows ({source})")
    return 0


def _row(kernel: str, *, device: str, dtype: str, time_s: float, source: str, **shape) -> MeasuredKernel:
    # One call between events on an idle device ('isolated'): on CUDA the cache flush queued ahead of the start
    # event keeps the host's dispatch out of the time (module docstring), the device's own launch stays in.
    return MeasuredKernel(device=device, kernel=kernel, dtype=table_dtype(dtype), time_s=time_s, source=source,
                          timing="isolated", **shape)


def _setup(torch_device: str, dtype: str, source: str | None) -> tuple:
    return _torch(), torch_dtype(dtype), source or harness_source(torch_device)


# GEMMs below 16 bits the harness times, as the table names their dtype, each through the torch op that runs it:
#   fp8    torch._scaled_mm of e4m3 operands with per-tensor fp32 scales, bf16 out (cuBLASLt; rows of variant
#          'tensor', as aiconfigurator's per-tensor fp8 GEMMs);
#   w8a8   torch._int_mm of int8 operands, int32 out (cuBLASLt; on CUDA it takes m > 16 only);
#   w4a16  torch._weight_int4pack_mm: bf16 activations times int4 weights with a bf16 scale and zero per
#          W4A16_GROUP_SIZE along k, the tinygemm kernel gpt-fast's int4 runs (on the CPU its CPU twin).
QUANTIZED_GEMM_DTYPES = ("fp8", "w8a8", "w4a16")
# The quantized dtype a whole decode step or prefill can run its linears in (int4_linears).
STEP_WEIGHT_DTYPES = ("w4a16",)
W4A16_GROUP_SIZE = 128  # NumericFormat's default group (kernels/formats.py), so a 'w4a16' row needs no variant
TINYGEMM_INNER_K_TILES = 8  # gpt-fast's choice (quantize.py WeightOnlyInt4QuantHandler, inner_k_tiles=8)
# Input sets a quantized GEMM cycles through: packing int4 weights for every run would take longer than the runs.
QUANTIZED_GEMM_POOL = 2


def _gemm_case(torch, dtype: str, m: int, n: int, k: int, torch_device: str) -> tuple[Callable, Callable, str, int]:
    """(make inputs, op, row variant, input pool) timing C[m, n] = A[m, k] @ B[k, n] at table dtype `dtype`."""
    if dtype not in QUANTIZED_GEMM_DTYPES:
        tdtype = torch_dtype(dtype)
        return (lambda: (torch.randn(m, k, device=torch_device, dtype=tdtype),
                         torch.randn(k, n, device=torch_device, dtype=tdtype)), torch.mm, "", 0)

    def weights_nk(dtype):  # B stored as [n, k] and used transposed: the column-major operand cuBLASLt takes
        if dtype == torch.int8:
            return torch.randint(-128, 128, (n, k), device=torch_device, dtype=torch.int8).t()
        return torch.randn(n, k, device=torch_device).to(dtype).t()

    if dtype == "fp8":
        e4m3, one = torch.float8_e4m3fn, torch.ones((), device=torch_device)

        def scaled_mm(a, b, scale_a, scale_b):
            return torch._scaled_mm(a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)

        return (lambda: (torch.randn(m, k, device=torch_device).to(e4m3), weights_nk(e4m3), one, one),
                scaled_mm, "tensor", 0)
    if dtype == "w8a8":
        return (lambda: (torch.randint(-128, 128, (m, k), device=torch_device, dtype=torch.int8),
                         weights_nk(torch.int8)), torch._int_mm, "", 0)

    def make_w4a16():
        return (torch.randn(m, k, device=torch_device, dtype=torch.bfloat16),
                *_int4_weights(torch, n, k, torch_device))

    return make_w4a16, _int4_mm(torch, torch_device), "", QUANTIZED_GEMM_POOL


def _int4_weights(torch, n: int, k: int, torch_device: str) -> tuple:
    """Random int4 weights of an [n, k] linear packed for tinygemm, and its bf16 scale and zero per group."""
    if _is_cuda(torch_device):  # two 4-bit values per byte, [n, k / 2]
        packed = torch._convert_weight_to_int4pack(
            torch.randint(0, 256, (n, k // 2), device=torch_device, dtype=torch.uint8), TINYGEMM_INNER_K_TILES)
    else:
        packed = torch._convert_weight_to_int4pack_for_cpu(
            torch.randint(0, 16, (n, k), device=torch_device, dtype=torch.int32), TINYGEMM_INNER_K_TILES)
    return packed, torch.randn(k // W4A16_GROUP_SIZE, n, 2, device=torch_device, dtype=torch.bfloat16)


def _int4_mm(torch, torch_device: str) -> Callable:
    """tinygemm's x[m, k] @ W^T for packed int4 W (the CPU twin off CUDA): fn(x, packed, scales_and_zeros)."""
    mm = torch._weight_int4pack_mm if _is_cuda(torch_device) else torch._weight_int4pack_mm_for_cpu
    return lambda x, packed, scales: mm(x, packed, W4A16_GROUP_SIZE, scales)


def int4_linears(model, torch_device: str) -> int:
    """Replace every bias-free nn.Linear of `model` (the LM head included) by tinygemm's int4 linear with random
    weights, as gpt-fast's int4 weight-only quantization does (WeightOnlyInt4Linear); returns how many. The
    16-bit weights are freed."""
    torch = _torch()
    mm = _int4_mm(torch, torch_device)

    class Int4Linear(torch.nn.Module):
        def __init__(self, n: int, k: int):
            super().__init__()
            self.n = n
            self.packed, self.scales = _int4_weights(torch, n, k, torch_device)

        def forward(self, x):
            return mm(x.reshape(-1, x.shape[-1]), self.packed, self.scales).reshape(*x.shape[:-1], self.n)

    linears = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if isinstance(child, torch.nn.Linear) and child.bias is None]
    for parent, name, child in linears:
        if child.in_features % W4A16_GROUP_SIZE or child.out_features % 8:  # int4_refusal checks configs
            raise ValueError(f"{name}: [{child.out_features}, {child.in_features}] weights; allowed for int4: "
                             f"in_features a multiple of {W4A16_GROUP_SIZE} and out_features of 8")
        setattr(parent, name, Int4Linear(child.out_features, child.in_features))
    return len(linears)


def measure_gemms(shapes: Sequence[GemmShape], *, device: str, dtype: str, torch_device: str = "cpu",
                  source: str | None = None, repeats: int = 20) -> list[MeasuredKernel]:
    """Time a GEMM A[m, k] x B[k, n] for each (m, n, k); rows have kernel 'gemm'. A 16- or 32-bit dtype runs
    torch.mm; a QUANTIZED_GEMM_DTYPES one its torch op, and a shape that op refuses is left out and logged.

    `device` is the preset name written in the rows; `torch_device` is where the kernels run ('cpu', 'cuda').
    """
    torch, source = _torch(), source or harness_source(torch_device)
    rows = []
    for m, n, k in shapes:
        make, op, variant, pool = _gemm_case(torch, dtype, m, n, k, torch_device)
        try:
            t = time_op(op, make, device=torch_device, repeats=repeats, pool=pool)
        except RuntimeError as error:  # e.g. torch._int_mm on CUDA below 17 rows
            log.info("gemm %s m=%d n=%d k=%d: left out, %s", dtype, m, n, k, str(error).splitlines()[0])
            continue
        log.info("gemm %s m=%d n=%d k=%d: %.3e s", dtype, m, n, k, t)
        # The source names the weight shape: a calibration holds out whole shapes (as Vidur's whole models).
        rows.append(_row("gemm", device=device, dtype=dtype, time_s=t, source=f"{source}; op=mm[k{k} n{n}]",
                         m=m, n=n, k=k, variant=variant))
    return rows


def _attention_kind(q_len: int, kv_len: int) -> str:
    if q_len == 1:
        return "attention_decode"
    if q_len == kv_len:
        return "attention_prefill"
    raise ValueError(f"attention case: q_len {q_len}, kv_len {kv_len}; allowed: q_len == 1 (decode) or "
                     f"q_len == kv_len (causal prefill)")


def measure_attention(cases: Sequence[AttentionCase], *, device: str, dtype: str, torch_device: str = "cpu",
                      source: str | None = None, repeats: int = 20) -> list[MeasuredKernel]:
    """Time F.scaled_dot_product_attention (GQA) for each (batch, heads, kv_heads, q_len, kv_len, head_dim).

    q_len == kv_len is a causal prefill ('attention_prefill'); q_len == 1 a non-causal decode step over
    kv_len cached keys ('attention_decode').
    """
    torch, tdtype, source = _setup(torch_device, dtype, source)
    import torch.nn.functional as F

    rows = []
    for batch, heads, kv_heads, q_len, kv_len, head_dim in cases:
        kind = _attention_kind(q_len, kv_len)
        causal = kind == "attention_prefill"

        def make(b=batch, h=heads, kvh=kv_heads, q=q_len, s=kv_len, d=head_dim):
            return (torch.randn(b, h, q, d, device=torch_device, dtype=tdtype),
                    torch.randn(b, kvh, s, d, device=torch_device, dtype=tdtype),
                    torch.randn(b, kvh, s, d, device=torch_device, dtype=tdtype))

        def run(q, k, v, causal=causal, gqa=heads != kv_heads):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

        t = time_op(run, make, device=torch_device, repeats=repeats)
        log.info("%s b=%d h=%d kvh=%d q=%d kv=%d d=%d: %.3e s", kind, batch, heads, kv_heads, q_len, kv_len,
                 head_dim, t)
        # One source per case: a calibration fits on half of the cases and scores the other half.
        case = f"b{batch} h{heads}/{kv_heads} q{q_len} kv{kv_len} d{head_dim}"
        rows.append(_row(kind, device=device, dtype=dtype, time_s=t,
                         source=f"{source}; op=sdpa[{case}]", batch=batch, seq_len=q_len, kv_len=kv_len, heads=heads,
                         kv_heads=kv_heads, head_dim=head_dim, backend=TORCH_SDPA_BACKEND))
    return rows


def _streaming_ops(torch, hidden: int, tdtype, torch_device: str) -> list[tuple[str, str, int, Callable, int]]:
    """(kernel, op, tensor inputs, fn, bytes per element moved / element size) of each streaming op."""
    import torch.nn.functional as F

    weight = torch.ones(hidden, dtype=tdtype, device=torch_device)

    def norm(x):
        # torch's own RMSNorm, one fused kernel where the build has one (CUDA), as engines run it; a module of
        # pow/mean/rsqrt/mul ops would time several eager launches instead of the 'norm' kernel.
        return F.rms_norm(x, (hidden,), weight, 1e-5)

    return [("norm", "rms_norm", 1, norm, 2), ("activation", "silu", 1, F.silu, 2),
            ("elementwise", "add", 2, torch.add, 3)]


def _general_ops(torch, tdtype, torch_device: str) -> list[tuple[str, Callable, Callable, Callable]]:
    """(op, make(rows, hidden), fn, bytes(rows, hidden)) of pointwise ops off the contiguous vectorized loop, one per
    cause (kernels.lowering.general_layout), as an eager decoder runs them: a cast (the eager RMSNorm's upcast to
    fp32, or to bf16 from fp32), a product with a per-row broadcast (the RMSNorm's scaling) and a negation of a
    strided half (RoPE's rotate_half). Bytes: each operand read and the output written once."""
    other = torch.bfloat16 if tdtype == torch.float32 else torch.float32
    width, other_width = (torch.empty((), dtype=t).element_size() for t in (tdtype, other))

    def one(r, h):
        return (torch.randn(r, h, device=torch_device, dtype=tdtype),)

    def with_row_scale(r, h):
        return (torch.randn(r, h, device=torch_device, dtype=tdtype), torch.randn(r, 1, device=torch_device,
                                                                                 dtype=tdtype))

    return [("cast", one, lambda x: x.to(other), lambda r, h: float(r * h * (width + other_width))),
            ("mul_row", with_row_scale, torch.mul, lambda r, h: float((2 * r * h + r) * width)),
            ("neg_half", one, lambda x: torch.neg(x[:, x.shape[1] // 2:]), lambda r, h: float(r * h * width))]


def measure_streaming(sizes: Sequence[StreamingSize], *, device: str, dtype: str, torch_device: str = "cpu",
                      source: str | None = None, repeats: int = 20, flush: bool = False) -> list[MeasuredKernel]:
    """Time RMSNorm ('norm'), SiLU ('activation') and add ('elementwise') over activations of rows x hidden, and the
    pointwise ops of _general_ops ('elementwise' rows of variant GENERAL_LAYOUT).

    `bytes` is one pass of device-memory traffic: 2 x numel x element size for RMSNorm and SiLU
    (read + write), 3 x numel x element size for add (two reads, one write); _general_ops gives the others'. The
    inputs are warm, as the kernel that made them left them (no flush): inside a model's pass a pointwise kernel
    reads what the kernel before it wrote (an H200 check, bench/gpu/check_warm.py: warm small ones take 0.2-1 us
    less than after a flush, large ones the same). GEMMs and attention read weights and KV caches no kernel of
    the pass has just written, and are timed after a flush. With `flush` the inputs are timed cold, as a stream
    from memory (what a CPU preset's memory bandwidth is, hw_models/cpu_host.py).
    """
    torch, tdtype, source = _setup(torch_device, dtype, source)
    width = torch.empty((), dtype=tdtype).element_size()
    source = f"{source}; {'inputs flushed from the caches' if flush else 'warm inputs'}"
    rows = []
    for n_rows, hidden in sizes:
        for kernel, op, n_inputs, fn, passes in _streaming_ops(torch, hidden, tdtype, torch_device):
            def make(r=n_rows, h=hidden, n=n_inputs):
                return tuple(torch.randn(r, h, device=torch_device, dtype=tdtype) for _ in range(n))

            t = time_op(fn, make, device=torch_device, repeats=repeats, flush=flush)
            nbytes = float(passes * n_rows * hidden * width)
            log.info("%s [%d x %d]: %.3e s", op, n_rows, hidden, t)
            rows.append(_row(kernel, device=device, dtype=dtype, time_s=t, bytes=nbytes,
                             source=f"{source}; op={op}[{n_rows}x{hidden}]"))
        for op, make_general, fn, nbytes in _general_ops(torch, tdtype, torch_device):
            t = time_op(fn, lambda r=n_rows, h=hidden, make=make_general: make(r, h), device=torch_device,
                        repeats=repeats, flush=flush)
            log.info("%s [%d x %d]: %.3e s", op, n_rows, hidden, t)
            rows.append(_row("elementwise", device=device, dtype=dtype, time_s=t, variant=GENERAL_LAYOUT,
                             bytes=nbytes(n_rows, hidden),
                             source=f"{source}; op={op}[{n_rows}x{hidden}]"))
    return rows


def measure_decode_step(config: ModelConfig, *, batch: int, context_len: int, device: str, dtype: str,
                        warmup: int = 2, repeats: int = 10, graph: bool = False, new_tokens: int = 1,
                        int4: bool = False) -> float:
    """Median seconds of one forward step (batch x new_tokens tokens after context_len cached ones) of a full-size
    model: a decode step (one new token), or a prefill (context_len 0, the prompt's tokens new).

    The model is built from `config` with random weights on `device` (a torch device); use small configs
    on CPU. With `graph` (CUDA only) the step is captured once in a CUDA graph and each timed run copies its
    token ids into the graph's input and replays it, as a serving engine's decode does: the same kernels
    without the host's per-kernel dispatch. With `int4` its linears run tinygemm's int4 weight-only GEMMs
    (int4_linears; `dtype` bf16, the only one tinygemm takes).
    """
    torch = _torch()
    from workloads.decoder import DecoderModel, KVCache

    if batch < 1 or context_len < 0 or new_tokens < 1:
        raise ValueError(f"batch >= 1, context_len >= 0 and new_tokens >= 1 required; found {batch}, {context_len}, "
                         f"{new_tokens}")
    if why := step_refusal(config):
        raise ValueError(f"{config.name}: {why}")
    tdtype = torch_dtype(dtype)
    # Factory calls in the model (its parameters, the cache, positions in forward) land on `device`.
    with torch.device(device), torch.no_grad():
        model = DecoderModel(config, tdtype).eval()
        if int4:
            int4_linears(model, device)
        cache = KVCache(config, batch, context_len + new_tokens, tdtype)

        def make():
            return (torch.randint(0, config.vocab_size, (batch, new_tokens), device=device),)

        def step(ids):
            return model(ids, cache, context_len)

        if graph:
            step = _graph_step(step, make()[0], device)
        return time_op(step, make, device=device, warmup=warmup, repeats=repeats)


def _graph_step(step: Callable, ids, device: str) -> Callable:
    """step captured in a CUDA graph: a function that copies its ids into the captured input and replays."""
    torch = _torch()
    if not _is_cuda(device):
        raise ValueError(f"graph: found device {device!r}, allowed: a CUDA device (CUDA graphs)")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # capture needs the step's lazy setup (handles, workspaces) done on a side stream
        for _ in range(2):
            step(ids)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(ids)

    def replay(new_ids, graph=graph, ids=ids):
        ids.copy_(new_ids)
        graph.replay()

    return replay


def measure_decode_steps(model: str, config: ModelConfig, cases: Sequence[DecodeCase], *, device: str,
                         torch_device: str = "cpu", source: str | None = None, repeats: int = 10,
                         weights: str = "") -> list[MeasuredKernel]:
    """Time whole decode steps of `config` at its own dtype, one row ('decode_step') per (batch, context_len),
    launched eagerly (timing 'isolated'); on CUDA each case is timed replayed from a CUDA graph too (timing
    'graph'). With `weights` 'w4a16' (STEP_WEIGHT_DTYPES) the linears run int4 weights (int4_linears) and the rows
    have that dtype.

    `model` is written in the rows (the preset name or config path the model came from); each row's kv_len
    counts the keys a new token attends to, its own included (context_len + 1), as in a simulated step.
    """
    dtype, activations, int4 = _step_dtypes(config, weights)
    source = source or harness_source(torch_device)
    modes = (False, True) if _is_cuda(torch_device) else (False,)
    rows = []
    for batch, context_len in cases:
        for graph in modes:
            try:
                t = measure_decode_step(config, batch=batch, context_len=context_len, device=torch_device,
                                        dtype=activations, repeats=repeats, graph=graph, int4=int4)
            except RuntimeError as err:
                if not graph:
                    raise
                # A step the machine's torch cannot capture still has its eager row; the log says why not this one.
                log.warning("decode step %s batch=%d context=%d: no CUDA graph row: %s", model, batch, context_len,
                            str(err).splitlines()[0])
                continue
            log.info("decode step %s batch=%d context=%d%s: %.3e s", model, batch, context_len,
                     " (CUDA graph)" if graph else "", t)
            row = _row("decode_step", device=device, dtype=dtype, time_s=t, batch=batch, kv_len=context_len + 1,
                       model=model, source=f"{source}; op=decode_step[{model}]")
            rows.append(replace(row, timing="graph") if graph else row)
    return rows


def measure_prefill_steps(model: str, config: ModelConfig, cases: Sequence[PrefillCase], *, device: str,
                          torch_device: str = "cpu", source: str | None = None, repeats: int = 10,
                          weights: str = "") -> list[MeasuredKernel]:
    """Time whole prefills of `config` at its own dtype, one row ('prefill_step') per (batch, prompt_len): batch
    prompts of prompt_len tokens run through the model into an empty KV cache, launched eagerly (timing 'isolated');
    `weights` as for measure_decode_steps."""
    dtype, activations, int4 = _step_dtypes(config, weights)
    source = source or harness_source(torch_device)
    rows = []
    for batch, prompt_len in cases:
        t = measure_decode_step(config, batch=batch, context_len=0, new_tokens=prompt_len, device=torch_device,
                                dtype=activations, repeats=repeats, int4=int4)
        log.info("prefill %s batch=%d prompt=%d: %.3e s", model, batch, prompt_len, t)
        rows.append(_row("prefill_step", device=device, dtype=dtype, time_s=t, batch=batch, seq_len=prompt_len,
                         kv_len=prompt_len, model=model, source=f"{source}; op=prefill_step[{model}]"))
    return rows


def step_refusal(config: ModelConfig) -> str:
    """Why whole steps of `config` run here would not time the kernels the simulator prices for them ('' when they
    would): multi-head latent attention runs on real tensors through SDPA with its values zero-padded to its keys'
    width (workloads/decoder.py latent_attention), where a trace records the fused op of narrower values that a
    step's prediction prices."""
    if config.is_mla:
        return ("its multi-head latent attention runs here through SDPA with its values zero-padded to the keys' "
                "width (workloads/decoder.py latent_attention), not the kernel its simulated step prices")
    return ""


def int4_refusal(config: ModelConfig) -> str:
    """Why tinygemm cannot run `config`'s linears as int4 ('' when it can): each one's inputs a multiple of
    W4A16_GROUP_SIZE and its outputs of 8."""
    d = config.head_dim
    inputs = {"hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
              "num_attention_heads x head_dim": config.num_heads * d}
    outputs = {"num_key_value_heads x head_dim": config.num_kv_heads * d, "vocab_size": config.vocab_size}
    for name, size in inputs.items():
        if size % W4A16_GROUP_SIZE:
            return f"{name} {size} is not a multiple of tinygemm's group of {W4A16_GROUP_SIZE}"
    for name, size in outputs.items():
        if size % 8:
            return f"{name} {size} is not a multiple of 8"
    return ""


def _step_dtypes(config: ModelConfig, weights: str) -> tuple[str, str, bool]:
    """(the table dtype of a model's step rows, the dtype its activations run in, whether its linears run int4
    weights). Under tinygemm's int4 linears the activations are bf16, the only dtype it takes (an fp16 model's step
    costs the same at bf16: both 16-bit, at one tensor-core rate)."""
    if weights not in ("", *STEP_WEIGHT_DTYPES):
        raise ValueError(f"weights: found {weights!r}, allowed: '' (the config's dtype) or "
                         f"{', '.join(STEP_WEIGHT_DTYPES)}")
    if not weights:
        return table_dtype(config.dtype), table_dtype(config.dtype), False
    if table_dtype(config.dtype) not in ("bf16", "fp16"):
        raise ValueError(f"weights: found {weights!r} for a {config.dtype} model, allowed: a 16-bit model")
    return weights, "bf16", True


def default_gemm_grid() -> list[GemmShape]:
    """GPU grid: M from 1 to 8192 (powers of two and a few odd sizes) x (K, N) of Llama 7B/8B/70B layers."""
    ms = [2**i for i in range(14)] + [3, 7, 24, 100, 1000, 3000]
    # (k, n): attention q/o, GQA k/v, MLP up/gate and down at hidden 4096 (7B/8B) and 8192 (70B).
    kn = [(4096, 4096), (4096, 1024), (4096, 14336), (14336, 4096), (4096, 11008), (11008, 4096),
          (8192, 8192), (8192, 1024), (8192, 28672), (28672, 8192)]
    return [(m, n, k) for m in sorted(ms) for k, n in kn]


def cpu_gemm_grid() -> list[GemmShape]:
    """CPU grid: small enough to run in well under 20 s on two cores."""
    return [(m, n, k) for m in (1, 16, 128, 512) for k, n in ((512, 512), (1024, 1024), (1024, 2048))]


def default_attention_cases() -> list[AttentionCase]:
    """GPU cases over five head layouts (heads, KV heads, head_dim): Llama-3-8B (32, 8, 128), Llama-2-7B MHA
    (32, 32, 128), Llama-3-70B (64, 8, 128), Llama-3.2-1B (32, 8, 64) and Gemma-2-9B (16, 8, 256); causal prefills
    of 128-16,384 tokens and decode steps of batch 1-64 over 512-32,768 cached keys, each KV cache at most 8 GB."""
    layouts = [(32, 8, 128), (32, 32, 128), (64, 8, 128), (32, 8, 64), (16, 8, 256)]
    prefill = [(b, h, kvh, s, s, d) for h, kvh, d in layouts
               for b, s in ((1, 128), (1, 512), (1, 1024), (1, 2048), (1, 4096), (1, 8192), (4, 2048))]
    prefill += [(1, 32, 8, 16384, 16384, 128)]
    decode = [(b, h, kvh, 1, s, d) for h, kvh, d in layouts for b in (1, 8, 32, 64) for s in (512, 2048, 8192, 32768)
              if 2 * b * kvh * s * d * 2 <= ATTENTION_KV_BYTES_MAX]
    decode += [(b, 32, 32, 1, 4096, 128) for b in (1, 8)]
    return prefill + decode


def cpu_attention_cases() -> list[AttentionCase]:
    """CPU cases: a few small prefill and decode shapes."""
    return [(1, 8, 2, 64, 64, 64), (1, 8, 2, 256, 256, 64), (1, 8, 2, 1, 256, 64), (4, 8, 2, 1, 1024, 64)]


def default_decode_cases() -> list[DecodeCase]:
    """GPU cases: batch 1, 8 and 32 at 512 and 2048 cached tokens (a 7-8B model fits an 80 GB GPU at all)."""
    return [(b, c) for b in (1, 8, 32) for c in (512, 2048)]


def cpu_decode_cases() -> list[DecodeCase]:
    """CPU cases: batch 1 and 4 over short contexts."""
    return [(1, 128), (4, 512)]


def default_prefill_cases() -> list[PrefillCase]:
    """GPU cases: one prompt of 128 to 4,096 tokens (Llama-2's whole context), and 4 of 2,048 and 16 of 512 (8,192
    tokens each)."""
    return [(1, 128), (1, 512), (1, 2048), (1, 4096), (4, 2048), (16, 512)]


def cpu_prefill_cases() -> list[PrefillCase]:
    """CPU cases: short prompts."""
    return [(1, 64), (2, 128)]


def default_streaming_sizes() -> list[StreamingSize]:
    """GPU sizes: tokens from 1 to 16384 at hidden 4096 and 8192."""
    return [(r, h) for h in (4096, 8192) for r in (1, 16, 128, 1024, 4096, 16384)]


def cpu_streaming_sizes() -> list[StreamingSize]:
    """CPU sizes: a few small activations."""
    return [(1, 1024), (64, 1024), (512, 1024)]


@contextlib.contextmanager
def _module_annotations(model):
    """Every module's forward inside a profiler range named MODULE_ANNOTATION + its path ('layers.0.mlp'), so that
    a profile says which module ran each op, as a captured trace does (workloads.profiler_import reads them)."""
    torch = _torch()
    from workloads.capture import ModuleTracker

    spans: list = []

    def open_span(path: str) -> None:
        span = torch.profiler.record_function(MODULE_ANNOTATION + path)
        span.__enter__()
        spans.append(span)

    tracker = ModuleTracker(model, on_enter=open_span, on_leave=lambda: spans.pop().__exit__(None, None, None))
    try:
        yield
    finally:
        tracker.remove()


def profile_decode_step(config: ModelConfig, path: str | Path, *, batch: int, context_len: int, device: str,
                        warmup: int = 2, new_tokens: int = 1) -> int:
    """Profile one eagerly launched forward step of a full-size model (random weights): batch x new_tokens tokens
    after context_len cached ones (a decode step; a prefill with context_len 0 and the prompt's tokens new), into a
    Chrome trace at `path` (.json or .json.gz): every op with its input shapes, the module that ran it and, on
    CUDA, the device kernels it launched, as workloads.profiler_import reads it. Returns the number of device
    kernels (ops on the CPU) in the trace."""
    torch = _torch()
    from torch.profiler import ProfilerActivity, profile

    from workloads.decoder import DecoderModel, KVCache

    tdtype = torch_dtype(table_dtype(config.dtype))
    cuda = _is_cuda(device)
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda
    with torch.device(device), torch.no_grad():
        model = DecoderModel(config, tdtype).eval()
        cache = KVCache(config, batch, context_len + new_tokens, tdtype)
        ids = torch.randint(0, config.vocab_size, (batch, new_tokens), device=device)
        for _ in range(warmup):
            model(ids, cache, context_len)
        if cuda:
            torch.cuda.synchronize(device)
        with profile(activities=activities, record_shapes=True) as prof, _module_annotations(model):
            model(ids, cache, context_len)
            if cuda:
                torch.cuda.synchronize(device)
    path = Path(path)
    plain = path.with_suffix("") if path.suffix == ".gz" else path
    prof.export_chrome_trace(str(plain))
    exported = plain.read_bytes()
    if plain != path:
        path.write_bytes(gzip.compress(exported))
        plain.unlink()
    # Counted in the file: the module ranges are events of the profile too, but neither kernels nor ops.
    counted = "kernel" if cuda else "cpu_op"
    return sum(1 for e in json.loads(exported)["traceEvents"] if isinstance(e, dict) and e.get("cat") == counted)
