"""The measured-kernel table: one row per measured kernel, shared by calibrate, validate and the harness.

CSV (optionally gzipped) with the columns of DESIGN.md; readers accept extra columns and ignore them.
Besides kernels, a row may time a whole decode step of a model (`kernel` decode_step, the model in `model`,
`batch` sequences each attending to `kv_len` keys, its own new one included), a whole prefill (`kernel`
prefill_step: `batch` prompts of `seq_len` tokens into an empty cache): what a user's step costs, or a whole static
batch run (`kernel` batch_run: `batch` prompts of `seq_len` tokens prefilled and decoded until each sequence holds
`kv_len` tokens, `time_s` the run's makespan; its weights' format in `dtype` and `variant`, its KV cache's in
`kv_dtype`, `tp` its tensor-parallel devices, `backend` how their all-reduces ran (nccl, the default, or an
engine's custom kernels), and `timing` engine for a serving engine): what a published serving
benchmark reports as throughput, batch x (kv_len - seq_len) / time_s.
A fused MoE layer (`kernel` moe) has `m` tokens, `k` the hidden size, `n` one expert's intermediate size on the
device (after tensor parallelism), `topk` experts per token of `experts` in all, spread over `expert_parallel`
devices (the row times the first, holding experts 0 .. experts/expert_parallel - 1), and the `routing` that
sent tokens to them (kernels/aiconfigurator_routing.py); `backend` names the kernels that ran it (kernels/moe.py
reads whether they keep caches of every routed row; an attention row timed through torch's
scaled_dot_product_attention says TORCH_SDPA_BACKEND).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from kernels.formats import DTYPE_BITS, NumericFormat, named_moe_kernel
from kernels.kernel import TORCH_SDPA_OP, Kernel, KernelKind
from kernels.parallel import ALLREDUCE_IMPLEMENTATIONS
from workloads.atomic_write import replacing
from workloads.csv_rows import table_rows
from workloads.errors import InputError
from workloads.op_costs import attention_flops

COLUMNS = ("device", "kernel", "m", "n", "k", "batch", "seq_len", "kv_len", "heads", "kv_heads", "head_dim",
           "bytes", "dtype", "time_s", "source", "model", "kv_dtype", "variant", "timing", "topk", "experts",
           "expert_parallel", "routing", "backend", "tp", "replay_copies")
# Columns written only when some row uses them (a table without them keeps its bytes, and its SHA-256).
OPTIONAL_COLUMNS = ("model", "kv_dtype", "variant", "timing", "topk", "experts", "expert_parallel", "routing",
                    "backend", "tp", "replay_copies")
KERNEL_NAMES = tuple(k.value for k in KernelKind)
DECODE_STEP = "decode_step"  # a whole decode step of `model`, not one kernel
PREFILL_STEP = "prefill_step"  # a whole prefill of `batch` prompts of `seq_len` tokens of `model`, not one kernel
BATCH_RUN = "batch_run"  # a whole static batch run of `model`, prompts of `seq_len` tokens decoded to `kv_len`
STEP_KINDS = (DECODE_STEP, PREFILL_STEP, BATCH_RUN)
# A quantized GEMM's dtype, e.g. 'w4a16' (4-bit weights, 16-bit activations); other rows use DTYPE_BITS names.
QUANTIZED_DTYPE = re.compile(r"^w([0-9]+)a([0-9]+)$")
QUANTIZED_BASE_DTYPE = "fp16"  # the 16-bit type such a GEMM's activations and outputs are in
ROW_KINDS = (*KERNEL_NAMES, *STEP_KINDS)
# How a source timed its kernels. kernel: a profiler's kernel durations (device time only); graph: a CUDA
# graph of the kernels replayed back to back and timed with events, divided by the kernels in it (device
# time, or the graph's per-node launch interval where that is longer); eager: host launches back to back,
# timed over the loop (device time, or the host's launch interval where that is longer); isolated: one call
# between events on an idle device (device time plus the host launch); engine: a serving engine's whole run
# (batch_run rows: fused kernels, decode replayed from CUDA graphs).
TIMINGS = ("kernel", "graph", "eager", "isolated", "engine")
# How a quantized row's ('wXaY') operands are stored, beyond NumericFormat's defaults (integer values,
# a 16-bit scale per 128): 'group32', a 16-bit scale per 32 (Kimi-K2.5's native INT4, Marlin MoE:
# kernels/aiconfigurator_import.py); 'mxfp4', fp4 e2m1 values with an e8m0 scale per 32 (OCP MX v1.0, Table 1);
# 'mxfp4_mxfp8', those weights meeting MXFP8 activations (fp8 e4m3, an e8m0 scale per 32, the same table) in a 'w4a8'
# row; 'channel', a scale per output channel (SmoothQuant's W8A8, QServe's per-channel W4A8); 'two_level', QServe's
# 8-bit group scales under fp16 channel scales.
WEIGHT_VARIANTS = {"group32": {"group_size": 32}, "channel": {"scale_granularity": "channel"},
                   "two_level": {"scale_type": "two_level"},
                   "mxfp4": {"weight_type": "fp4_e2m1", "scale_type": "e8m0", "group_size": 32},
                   "mxfp4_mxfp8": {"weight_type": "fp4_e2m1", "act_type": "fp8_e4m3", "scale_type": "e8m0",
                                   "group_size": 32}}
# Implementation variants of a GEMM at one dtype: how its low-precision operands are scaled.
GEMM_VARIANTS = ("tensor", "block128", "nvfp4", *WEIGHT_VARIANTS)
# The variant of a streaming row whose operands leave the contiguous vectorized loop (a cast, a broadcast, a strided
# operand: kernels.lowering.general_layout), priced apart from contiguous streams.
GENERAL_LAYOUT = "general"
ROW_VARIANTS = (*GEMM_VARIANTS, GENERAL_LAYOUT)
# Bits per value of each dtype a measured row may name (fp4: e2m1 values).
ROW_DTYPE_BITS = {**DTYPE_BITS, "fp4": 4}
# Scale bytes a variant stores per weight value: an fp32 scale per 128 x 128 block (DeepSeek-V3's block-scaled
# fp8), an e4m3 scale per 16 values (NVFP4). Counted for MoE rows, whose weights dominate their traffic.
VARIANT_SCALE_BYTES = {"block128": 4.0 / (128 * 128), "nvfp4": 1.0 / 16}
MOE = KernelKind.MOE.value  # the measured-table name of a fused MoE layer
# An 'fp8' batch_run: fp8 e4m3 weights and activations, one scale per tensor (TensorRT-LLM's FP8 engines).
FP8_RUN = NumericFormat(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3",
                        scale_granularity="tensor")
# The backend of an attention row timed through torch's scaled_dot_product_attention (the harness's rows): priced
# by a device's fit of torch's kernels where it has one (hw_models/gpu_attention.py), not an engine's.
TORCH_SDPA_BACKEND = "torch-sdpa"


@dataclass(frozen=True, kw_only=True)
class MeasuredKernel:
    """A kernel's shape, dtype and median measured time; zero where a shape field does not apply."""

    device: str
    kernel: str
    dtype: str
    time_s: float
    source: str
    m: int = 0
    n: int = 0
    k: int = 0
    batch: int = 0
    seq_len: int = 0
    kv_len: int = 0
    heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    bytes: float = 0.0
    model: str = ""  # decode_step rows: the model preset name or config path
    kv_dtype: str = ""  # attention rows: the KV cache's dtype where it differs from `dtype`
    variant: str = ""  # GEMM rows: a GEMM_VARIANTS scaling of low-precision operands ("" for 16-bit GEMMs);
    # streaming rows: GENERAL_LAYOUT for operands off the contiguous vectorized loop
    timing: str = "kernel"  # how the source timed the kernel (TIMINGS)
    topk: int = 0  # moe rows: experts per token, of `experts`, over `expert_parallel` devices (module docstring)
    experts: int = 0
    expert_parallel: int = 0  # 0 or 1: every expert on the device
    routing: str = ""  # moe rows: kernels/aiconfigurator_routing.py ('' is balanced)
    backend: str = ""  # the implementation that ran the kernel, as its source names it (moe rows: kernels/moe.py;
    # batch_run rows: how the run's tensor-parallel all-reduces ran, kernels/parallel.py ALLREDUCE_IMPLEMENTATIONS;
    # attention rows: TORCH_SDPA_BACKEND)
    tp: int = 0  # batch_run rows: the tensor-parallel devices the run spread its model over (0 or 1: one device)
    # GEMM rows: how many copies of the GEMM (its own weights and output) the benchmark runs in turn on the same
    # tensors between two calls of one, so that their operands stay in the L2 cache where all copies fit (0: none
    # stay, the benchmark rotates or flushes them, or its source does not say)
    replay_copies: int = 0

    @property
    def numeric_format(self) -> NumericFormat | None:
        """The format of a quantized 'wXaY' row, its WEIGHT_VARIANTS storage applied and, for a fused MoE layer, the
        kernel its backend names (None for other dtypes)."""
        fmt = quantized_format(self.dtype)
        if fmt and self.variant in WEIGHT_VARIANTS:
            fmt = replace(fmt, **WEIGHT_VARIANTS[self.variant])
        kernel = named_moe_kernel(self.backend) if fmt and self.kernel == MOE else ""
        return replace(fmt, moe_kernel=kernel) if kernel else fmt

    @property
    def run_format(self) -> NumericFormat | None:
        """The format of a whole step's or run's weights: a 'wXaY' row's numeric_format, fp8 e4m3 weights and
        activations with a scale per tensor for an 'fp8' row (as its GEMM rows are: variant 'tensor'), None for a
        16-bit one."""
        return FP8_RUN if self.dtype == "fp8" else self.numeric_format

    @property
    def is_step(self) -> bool:
        """A whole decode step, prefill or batch run, priced by simulating the model (not by to_kernel)."""
        return self.kernel in STEP_KINDS

    def to_kernel(self) -> Kernel:
        """The Kernel a cost model prices for this row (traffic at the row's dtype; a quantized GEMM 'wXaY'
        moves X-bit weights with their group scales and Y-bit inputs, and computes as NumericFormat says)."""
        if self.is_step:
            raise ValueError(f"a {self.kernel} row of {self.model} is a whole step, not one kernel")
        kind = KernelKind(self.kernel)
        if kind == KernelKind.MOE:
            return self._moe_kernel()
        fmt = self.numeric_format
        dtype = fmt.gemm_dtype(QUANTIZED_BASE_DTYPE) if fmt else self.dtype
        width = ROW_DTYPE_BITS.get(self.dtype, 16) / 8
        if kind in (KernelKind.GEMM, KernelKind.BATCHED_GEMM):
            batch = max(self.batch, 1)
            flops = 2.0 * batch * self.m * self.n * self.k
            if fmt is None:
                # A plain row's B operand is an input like A (the harness makes both fresh for every run): no
                # cost model may treat it as a weight (kept in a cache across a pass, quantized, sparse). A GEMM
                # below 16 bits writes its output at 16 bits (scaled-mm kernels return bf16).
                out_width = max(width, 2.0)
                weights = 0.0
                acts = batch * ((self.m * self.k + self.k * self.n) * width + self.m * self.n * out_width)
            else:
                weights = batch * self.k * self.n * width * fmt.weight_scale
                acts = batch * (self.m * self.k * fmt.act_scale + self.m * self.n) * width
            return Kernel(kind=kind, op=self.kernel, flops=flops, weight_bytes=weights, act_bytes=acts, kv_bytes=0.0,
                          dtype=dtype, tensor_core=True, m=self.m, n=self.n, k=self.k, batch=batch)
        if kind in (KernelKind.ATTENTION_PREFILL, KernelKind.ATTENTION_DECODE):
            causal = kind == KernelKind.ATTENTION_PREFILL
            q_len = self.seq_len or 1
            flops = attention_flops(self.batch, self.heads, q_len, self.kv_len, self.head_dim, self.head_dim,
                                    causal=causal)
            kv_width = ROW_DTYPE_BITS[self.kv_dtype] / 8 if self.kv_dtype else width
            kv = 2.0 * self.batch * self.kv_heads * self.kv_len * self.head_dim * kv_width
            act = 2.0 * self.batch * self.heads * q_len * self.head_dim * width
            op = TORCH_SDPA_OP if self.backend == TORCH_SDPA_BACKEND else self.kernel
            return Kernel(kind=kind, op=op, flops=flops, weight_bytes=0.0, act_bytes=act, kv_bytes=kv,
                          dtype=dtype, tensor_core=True, batch=self.batch, heads=self.heads,
                          kv_heads=self.kv_heads, q_len=q_len, kv_len=self.kv_len, head_dim=self.head_dim,
                          causal=causal)
        # Streaming kernels (norm, elementwise, softmax, embedding): one pass over `bytes`.
        return Kernel(kind=kind, op=self.kernel, flops=self.bytes / width, weight_bytes=0.0, act_bytes=self.bytes,
                      kv_bytes=0.0, dtype=dtype, tensor_core=False, general_layout=self.variant == GENERAL_LAYOUT)


    def _moe_kernel(self) -> Kernel:
        """A fused MoE layer: the experts of the first device touched by the row's routing, each whole; 16-bit
        activations (the layer's input and output, and vLLM's intermediate caches, are bf16 on every path)."""
        from kernels.aiconfigurator_routing import BALANCED, routed_on_rank0
        from kernels.moe import caches_every_row, fused_moe_kernel

        touched, routed = routed_on_rank0(self.m, self.topk, self.experts, max(self.expert_parallel, 1),
                                          self.routing or BALANCED)
        fmt = self.numeric_format
        if fmt is None:
            weight_width = ROW_DTYPE_BITS[self.dtype] / 8 + VARIANT_SCALE_BYTES.get(self.variant, 0.0)
            dtype = self.dtype
        else:  # quantized weights with their scales; the math in the format's GEMM dtype (bf16 for weight-only)
            weight_width, dtype = fmt.weight_storage_bits / 8, fmt.gemm_dtype("bf16")
        return fused_moe_kernel(tokens=self.m, routed=routed, touched=touched, hidden=self.k, inter=self.n,
                                weight_width=weight_width, act_width=2.0, dtype=dtype,
                                routed_all=float(self.m * self.topk) if caches_every_row(self.backend) else None,
                                expert_parallel=max(self.expert_parallel, 1))


def quantized_format(dtype: str) -> NumericFormat | None:
    """The numeric format of a 'wXaY' dtype (ValueError for bit widths NumericFormat does not allow), else None."""
    match = QUANTIZED_DTYPE.match(dtype)
    return NumericFormat(weight_bits=int(match[1]), act_bits=int(match[2])) if match else None


def _open_text(path: Path, mode: str, gzipped: bool | None = None):
    """The table at path as text; gzipped as its name says, unless `gzipped` says (a temporary name says nothing)."""
    if path.suffix == ".gz" if gzipped is None else gzipped:
        # No name or time in the gzip header: the same rows always give the same bytes (and SHA-256).
        raw = gzip.GzipFile(filename="", fileobj=path.open(mode + "b"), mode=mode + "b", mtime=0)
        return io.TextIOWrapper(raw, newline="")
    return path.open(mode, newline="")


# Limits of a row's numbers: a typo or a unit slip must not be scored or fitted. A dimension up to 2^24
# (16,777,216) is 128x the longest context measured (131,072 keys) and 512x the largest GEMM m (32,768); 10 TB
# moved by one kernel is more than any one device holds (B300: 288 GB). A kernel takes at least a nanosecond
# (a few clock cycles; no timer resolves less) and at most a day (longer is milliseconds read as seconds).
MAX_DIMENSION = 1 << 24
MAX_BYTES = 1e13
TIME_RANGE_S = (1e-9, 86_400.0)
# The shape fields each kind of row needs (at least 1); a streaming kernel needs bytes instead.
NEEDED = {"gemm": ("m", "n", "k"), "batched_gemm": ("m", "n", "k"),
          "attention_prefill": ("batch", "heads", "kv_heads", "kv_len", "head_dim"),
          "attention_decode": ("batch", "heads", "kv_heads", "kv_len", "head_dim"),
          MOE: ("m", "n", "k", "topk", "experts")}


def _number(name: str, kind: type, raw: str, where: str) -> int | float:
    """A shape field: a whole number from 0 (does not apply) to MAX_DIMENSION; bytes: 0 to MAX_BYTES; time_s."""
    try:
        value = float(raw)
        found = repr(value)
    except ValueError:
        value, found = math.nan, repr(raw)
    if name == "time_s":
        low, high = TIME_RANGE_S
        if not low <= value <= high:
            raise InputError(f"{where}: time_s: found {found}, allowed: {low:g} to {high:,.0f} seconds (a "
                             f"nanosecond to a day)")
        return value
    if kind is float:
        if not 0 <= value <= MAX_BYTES:
            raise InputError(f"{where}: {name}: found {found}, allowed: a number of bytes from 0 to {MAX_BYTES:g}")
        return value
    if not (0 <= value <= MAX_DIMENSION and value == int(value)):
        found = f"{value:g}" if math.isfinite(value) else found
        raise InputError(f"{where}: {name}: found {found}, allowed: a whole number from 0 to {MAX_DIMENSION:,} "
                         f"(0 or empty where it does not apply)")
    return int(value)


def _cell(row: dict, name: str, values: dict) -> str:
    """A shape cell as a message shows it: its number, or that the cell is empty or the table has no such column."""
    raw = row.get(name)
    return "(no such column)" if raw is None else "(empty cell)" if raw == "" else f"{values[name]:g}"


def _parse(row: dict, where: str) -> MeasuredKernel:
    values = {}
    for f in fields(MeasuredKernel):
        raw = row.get(f.name)
        if raw in (None, ""):
            if f.name in ("device", "kernel", "dtype", "time_s"):
                raise InputError(f"{where}: {f.name}: missing (required)")
            continue
        values[f.name] = raw if f.type == "str" else _number(f.name, float if f.type == "float" else int, raw, where)
    if values["kernel"] not in ROW_KINDS:
        raise InputError(f"{where}: kernel: found {values['kernel']!r}, allowed: {', '.join(ROW_KINDS)}")
    if values["kernel"] in STEP_KINDS:
        length = "kv_len" if values["kernel"] == DECODE_STEP else "seq_len"
        if not (values.get("model") and values.get("batch") and values.get(length)):
            raise InputError(f"{where}: {values['kernel']}: model, batch and {length}: found {values.get('model')!r}, "
                             f"{values.get('batch')!r}, {values.get(length)!r}; allowed: a model and positive counts")
        if values["kernel"] == BATCH_RUN and values.get("kv_len", 0) <= values["seq_len"]:
            raise InputError(f"{where}: kv_len: found {values.get('kv_len', 0)} with seq_len {values['seq_len']}, "
                             f"allowed: more than seq_len (a batch_run decodes kv_len - seq_len tokens a sequence)")
        if values["kernel"] == BATCH_RUN and values["dtype"] == "fp8" and values.get("variant", "tensor") != "tensor":
            raise InputError(f"{where}: variant: found {values['variant']!r} for an fp8 batch_run, allowed: tensor "
                             f"(or empty): fp8 weights and activations with a scale per tensor")
    try:
        quantized = quantized_format(values["dtype"])
    except ValueError as err:  # wXaY with bit widths no format allows
        raise InputError(f"{where}: dtype: {err}") from None
    if values["dtype"] not in ROW_DTYPE_BITS and quantized is None:
        raise InputError(f"{where}: dtype: found {values['dtype']!r}, allowed: {', '.join(ROW_DTYPE_BITS)} or wXaY "
                         f"(e.g. w4a16)")
    if values["kernel"] == BATCH_RUN and values.get("backend", "nccl") not in ALLREDUCE_IMPLEMENTATIONS:
        raise InputError(f"{where}: backend: found {values['backend']!r} for a batch_run, allowed: "
                         f"{', '.join(ALLREDUCE_IMPLEMENTATIONS)} (how its all-reduces ran; empty: nccl)")
    for key, allowed in (("kv_dtype", ROW_DTYPE_BITS), ("variant", ROW_VARIANTS), ("timing", TIMINGS)):
        if values.get(key) and values[key] not in allowed:
            raise InputError(f"{where}: {key}: found {values[key]!r}, allowed: {', '.join(allowed)}")
    needed = NEEDED.get(values["kernel"], () if values["kernel"] in STEP_KINDS else ("bytes",))
    missing = [name for name in needed if not values.get(name)]
    if missing:
        shown = ", ".join(f"{name} {_cell(row, name, values)}" for name in needed)
        raise InputError(f"{where}: {', '.join(missing)}: found {shown}, allowed: at least 1 in each of "
                         f"{', '.join(needed)} for {values['kernel']} rows")
    if values["kernel"] == MOE:
        _check_moe(values, where)
    values.setdefault("source", "")
    return MeasuredKernel(**values)


def _check_moe(values: dict, where: str) -> None:
    """An MoE row routes to at most its experts, spread evenly over its devices, by a routing the replay knows."""
    from kernels.aiconfigurator_routing import routing_names_ok

    if values.get("routing") and not routing_names_ok(values["routing"]):
        raise InputError(f"{where}: routing: found {values['routing']!r}, allowed: balanced or power_law_<alpha> "
                         f"with alpha > 1 (e.g. power_law_1.2)")
    ep, experts, topk = values.get("expert_parallel") or 1, values["experts"], values["topk"]
    if experts % ep or topk > experts:
        raise InputError(f"{where}: experts, topk, expert_parallel: found {experts}, {topk}, {ep}; allowed: top-k "
                         f"at most the experts, and experts a multiple of expert_parallel")


# The names a measured-kernel table takes: plain CSV, or gzipped (_open_text writes gzip for .gz).
TABLE_SUFFIXES = (".csv", ".csv.gz")


def read_table(path: str | Path) -> list[MeasuredKernel]:
    """All rows of a measured-kernel CSV (.csv or .csv.gz)."""
    rows, _ = read_table_columns(path, ())
    if not rows:
        raise InputError(f"{path}: no rows (only a header), allowed: a table of at least one measured kernel")
    return rows


def read_table_columns(path: str | Path, names: Sequence[str]) -> tuple[list[MeasuredKernel], dict[str, list[str]]]:
    """The rows of a measured-kernel table (none for a header alone) and the cells of its extra columns `names`, one
    per row as write_table's `extra` wrote them ('' where the table has no such column)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such measured-kernel table")
    try:
        with _open_text(path, "r") as f:
            header, lines = table_rows(f, str(path))
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise InputError(f"{path}: not a UTF-8 CSV table ({err}); allowed: a .csv or .csv.gz measured-kernel "
                         f"table") from None
    missing = [c for c in ("device", "kernel", "time_s") if c not in header]
    if missing:
        raise InputError(f"{path}: columns {', '.join(missing)} missing; a measured-kernel table has "
                         f"{', '.join(COLUMNS)}")
    cells = [(_parse(row, f"{path}:{line}"), row) for line, row in lines]
    return [kernel for kernel, _ in cells], {name: [row.get(name) or "" for _, row in cells] for name in names}


def write_table(path: str | Path, rows: list[MeasuredKernel], extra: dict[str, list] | None = None) -> None:
    """Write rows with the standard columns (empty cells for fields that do not apply), then any `extra` columns,
    one value per row (a reader of the table ignores them)."""
    path = Path(path)
    extra = extra or {}
    for name, values in extra.items():
        if name in COLUMNS or len(values) != len(rows):
            raise ValueError(f"extra column {name!r}: {len(values)} values for {len(rows)} rows, or a standard name")
    used = {c for c in OPTIONAL_COLUMNS if any(getattr(r, c) not in ("", "kernel", 0) for r in rows)}
    columns = tuple(c for c in COLUMNS if c not in OPTIONAL_COLUMNS or c in used)
    # Written beside it, then renamed over it: a command killed while writing leaves the earlier table whole.
    with replacing(path) as tmp, _open_text(tmp, "w", gzipped=path.suffix == ".gz") as f:
        writer = csv.DictWriter(f, fieldnames=(*columns, *extra))
        writer.writeheader()
        for i, row in enumerate(rows):
            values = asdict(row)
            writer.writerow({k: ("" if values[k] in (0, 0.0, "") and k != "time_s" else values[k]) for k in columns}
                            | {name: column[i] for name, column in extra.items()})
