"""Fit a GPU preset's efficiency models on measured kernels, score predictions, and store calibrations.

Fits minimize the squared log ratio of predicted to measured kernel time (so a 10% miss on a 5 us
kernel weighs as much as on a 5 ms one) with bounded least squares. Rows are split by their `source`
(for the Vidur data, one model each; for aiconfigurator's, one weight shape, attention head
configuration or MoE model shape each, and for its 4-bit-weight MoE layers one TP/EP layout of a model shape),
so held-out rows come from groups the fit never saw. MoE layers of quantized weights meeting wider activations
(weight-only W4A16, MXFP4 x MXFP8) have fits of their own by math dtype, weight element and kernel (gemm_key:
'bf16/w4int', 'bf16/w4fp4', 'fp8/w4fp4', 'bf16/w4fp4/oaitriton'), priced and fitted as a point of that format prices
them (_table). Fused-MoE sources are split on their own (the same rule over them alone), so that adding them left
every other kernel's split, and its fits, as they were.

A row is compared as its source timed it (MeasuredKernel.timing): the model's device time, plus the host
launch where the timing includes one. Device time and the launch gap are separate terms: the fit's
latencies are device-side; launch costs come from the preset's overhead figures.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import math
from dataclasses import asdict, replace
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from hw_models.gpu import GPUModel
from hw_models.gpu_efficiency import AttentionFit, Calibration, GemmFit, MoeFit, StreamFit
from hw_models.gpu_gemm_configs import tile_policy
from hw_models.gpu_moe import ALIGNMENT, quantized_weight_key
from kernels.formats import named_moe_kernel
from kernels.measured import GENERAL_LAYOUT, MOE, TORCH_SDPA_BACKEND, MeasuredKernel
from kernels.moe import MATRICES
from kernels.table import KernelTable
from workloads.atomic_write import replacing
from workloads.errors import InputError

STREAM_FIT_CLASSES = ("norm", "elementwise", "activation", "rope", "embedding")
GEMM_KINDS = ("gemm", "batched_gemm")
LOW_PRECISION_DTYPES = ("fp8", "fp4")
ATTENTION_KINDS = ("attention_prefill", "attention_decode")
MOE_KIND = MOE
CALIBRATION_FOLDER = "calibration"
# Bytes the input-quantization kernel before a low-precision GEMM moves per input element (GemmFit): it reads the
# 16-bit value and writes the narrow one: fp8 per-tensor (vLLM scaled_fp8_quant, one scale per tensor), fp8 with
# an fp32 scale per 128-element group (per_token_group_quant_fp8), NVFP4 (4-bit values, an fp8 scale per 16).
# 'fp8/block128' is 2 bytes read and the 8.25 bits an activation of DeepSeek-V3's format moves (kernels/formats.py:
# scale_type fp32, scale_granularity block); a point of another block-scaled fp8 format (fp16 scales per 128, the
# default, or MXFP8's e8m0 per 32) is priced on the same fitted kernel, these bytes included.
QUANTIZE_BYTES_PER_INPUT = {"fp8": 3.0, "fp8/block128": 3.0 + 4 / 128, "fp4/nvfp4": 2.5 + 1 / 16}
# The GEMM library whose shape dispatch picks the tile of a dtype key's measured rows (hw_models/gpu_gemm_configs.py):
# aiconfigurator's per-tensor fp8 rows are vLLM's CutlassFP8ScaledMMLinearKernel (its collector, ai-dynamo/
# aiconfigurator collector/vllm/collect_gemm.py: Fp8Config with a static activation scale, so the input
# quantization is the one static_scaled_fp8_quant pass of QUANTIZE_BYTES_PER_INPUT['fp8']).
GEMM_TILE_LIBRARY = {"fp8": "vllm-cutlass-fp8"}
# GEMM fits whose epilogue writes the 16-bit output at a fitted bandwidth of its own (GemmFit.
# output_bandwidth_fraction): per-tensor fp8, whose measured rows are slower than bf16 rows of the same shape where
# the output's write bounds the GEMM, on H200, L40S and B200 (tests/hw_models/test_gemm_fp8_per_tensor.py). Block-scaled
# fp8 and NVFP4 fits did not gain from the term (held-out error within 0.1 point), so they keep one rate.
OUTPUT_RATE_FITS = frozenset({"fp8"})
# GEMM fits whose input quantization kernel runs one thread block per input row (GemmFit.quantize_row_s): vLLM's
# static per-tensor scaled_fp8_quant (vllm-project/vllm csrc/quantization/fp8/common.cu: `dim3 grid(num_tokens)`).
# The block-scaled path's per-token-group kernel lays its blocks out by groups and does not fit it.
ROW_GRID_QUANTIZE_FITS = frozenset({"fp8"})


def train_sources(sources: set[str], train_fraction: float) -> list[str]:
    """A deterministic share of the sources for fitting: the first by SHA-256 of their names."""
    ranked = sorted(sources, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    count = min(len(ranked), max(1, math.ceil(train_fraction * len(ranked))))
    return sorted(ranked[:count])


def training_sources(rows: list[MeasuredKernel], train_fraction: float) -> list[str]:
    """The sources of `rows` to fit on: train_sources of all sources but the fused-MoE ones, and of the fused-MoE
    sources of each MoE fit (dtype and variant) apart, so each MoE fit trains on its own share of model shapes."""
    moe: dict[str, set[str]] = {}
    for r in rows:
        if r.kernel == MOE_KIND:
            moe.setdefault(gemm_key(r), set()).add(r.source)
    others = {r.source for r in rows if r.kernel != MOE_KIND}.difference(*moe.values())
    picked = train_sources(others, train_fraction) if others else []
    for key in sorted(moe):
        picked += train_sources(moe[key], train_fraction)
    return sorted(set(picked))


def tables_training_sources(tables: list[list[MeasuredKernel]], train_fraction: float) -> list[str]:
    """training_sources of each table apart: adding a table to a calibration leaves the split of the others as it
    was (ranked together, new sources would move the cut among the old ones)."""
    return sorted(set().union(*(training_sources(rows, train_fraction) for rows in tables if rows)))


def _table(rows: list[MeasuredKernel]) -> tuple[KernelTable, np.ndarray]:
    """The rows as a kernel table and their measured times. Quantized rows, MoE layers and GEMMs of a 'wXaY' dtype
    (of one format, as fit and predict group them), are the 16-bit kernel under their format, as a point with that
    format prices them: the weights' traffic at their bits with the scales, the format's math dtype and, where the
    GPU's tensor cores do not take the weights as they are, the CUDA cores' dequantization (hw_models/gpu_quant.py)."""
    measured = np.array([r.time_s for r in rows])
    formats = {r.numeric_format for r in rows if r.numeric_format is not None}
    if not formats:
        return KernelTable.from_kernels([r.to_kernel() for r in rows]), measured
    if len(formats) > 1 or not all(r.numeric_format is not None for r in rows):
        raise ValueError(f"_table: quantized rows of formats {sorted(f.label for f in formats)} mixed with other "
                         f"rows; allowed: one quantized format per table")
    fmt = formats.pop()
    return KernelTable.from_kernels([_traced_kernel(r) for r in rows]).with_format(fmt), measured


def _traced_kernel(row: MeasuredKernel):
    """The 16-bit kernel a model traces where a quantized row runs: its layer, or its GEMM with B as the weights
    (a plain 16-bit row's B is an input like A, which no format quantizes)."""
    kernel = replace(row, dtype="bf16", variant="").to_kernel()
    if row.kernel == MOE_KIND:
        return kernel
    weight_bytes = kernel.batch * row.k * row.n * 2.0
    return replace(kernel, weight_bytes=weight_bytes, act_bytes=kernel.act_bytes - weight_bytes)


def _quantized_moe(row: MeasuredKernel) -> bool:
    """A fused MoE row of a quantized 'wXaY' dtype (weight-only W4A16, MXFP4 x MXFP8 W4A8)."""
    return row.kernel == MOE_KIND and row.numeric_format is not None


def quantized_gemm(row: MeasuredKernel) -> bool:
    """A GEMM row of a quantized 'wXaY' dtype (the harness's tinygemm W4A16 and int8 W8A8): it scores how a point of
    that format is priced (hw_models/gpu_quant.py, on the device's 16-bit and low-precision fits), and no fit is
    made of it."""
    return row.kernel in GEMM_KINDS and row.numeric_format is not None


def gemm_key(row: MeasuredKernel) -> str:
    """The GEMM or MoE fit a row belongs to: its dtype, or 'dtype/variant' for a scaling variant fitted apart;
    quantized-weight MoE layers by their math dtype, their weights' width and element type and, where it is not the
    one a point runs, their kernel (gpu_moe.quantized_weight_key: 'bf16/w4int', 'fp8/w4fp4', 'bf16/w4fp4/oaitriton');
    quantized 'wXaY' GEMM rows, which no fit is made of (quantized_gemm), by their dtype and variant ('w4a16',
    'w4a16:group32'); other 16-bit rows share the default fit, key ''."""
    if _quantized_moe(row):
        fmt = row.numeric_format
        return quantized_weight_key(fmt.weight_bits, fmt.weight_type, fmt.gemm_dtype("bf16"),
                                    named_moe_kernel(row.backend))
    if quantized_gemm(row):
        return f"{row.dtype}:{row.variant}" if row.variant else row.dtype
    if row.dtype not in LOW_PRECISION_DTYPES:
        return ""
    return row.dtype if row.variant in ("", "tensor") else f"{row.dtype}/{row.variant}"


def as_timed(device: GPUModel, device_s: np.ndarray, timings: np.ndarray, host_interval_s=0.0) -> np.ndarray:
    """Device times read as each row's source timed them (see kernels.measured.TIMINGS). An eagerly launched
    call whose fit has a host interval of its own (GemmFit.host_interval_s) takes at least that."""
    launch, node = device.host_s("eager"), device.host_s("graphs")
    eager = np.maximum(launch, host_interval_s)
    return np.select([timings == "isolated", timings == "eager", timings == "graph"],
                     [device_s + launch, np.maximum(device_s, eager), np.maximum(device_s, node)], device_s)


def predict(device: GPUModel, rows: list[MeasuredKernel]) -> np.ndarray:
    """Predicted times of measured kernel rows, as their sources timed them (a GEMM or MoE variant fitted apart
    is priced with its own fit)."""
    predicted, host = np.empty(len(rows)), np.zeros(len(rows))
    keys = np.array([gemm_key(r) if r.kernel in (*GEMM_KINDS, MOE_KIND) else "" for r in rows], dtype=object)
    gemm = np.array([r.kernel in GEMM_KINDS for r in rows])
    for key in dict.fromkeys(keys.tolist()):
        index = np.flatnonzero(keys == key)
        model = device
        if "/" in key and device.calibration is not None:
            model = GPUModel(device.spec, device.reference, device.calibration.with_variant(key))
        for part, table, copies in _replay_groups([rows[i] for i in index]):
            predicted[index[part]] = model.replaying(copies).cost_table(table, execution="device").time_s
        fit = device.calibration.gemm_fit(key) if device.calibration is not None else None
        host[index[gemm[index]]] = fit.host_interval_s if fit else 0.0
    return as_timed(device, predicted, np.array([r.timing for r in rows]), host)


def _replay_groups(rows: list[MeasuredKernel]) -> list[tuple[np.ndarray, KernelTable, int]]:
    """The rows by how many copies of a GEMM their benchmark replays (MeasuredKernel.replay_copies): each group's
    indices into `rows`, its kernel table and its copies."""
    copies = np.array([r.replay_copies for r in rows])
    groups = []
    for count in dict.fromkeys(copies.tolist()):
        part = np.flatnonzero(copies == count)
        groups.append((part, _table([rows[i] for i in part])[0], count))
    return groups


# A fit's parameters: name -> (start, lower bound, upper bound, scale to SI). Each is fitted scaled near 1.
Parameters = dict[str, tuple[float, float, float, float]]


def _fit(base: GPUModel, rows: list[MeasuredKernel], params: Parameters, build, to_calibration):
    """build({name: value in SI}) of the parameters that minimize the squared log error of the model priced with
    to_calibration(build(...)) on the rows (bounded least squares)."""
    from scipy.optimize import least_squares  # here: scipy.optimize takes ~0.5 s to import, and every CLI command
    # imports this module for its parser, while only fitting needs it

    x0, lower, upper, scale = (np.array([v[i] for v in params.values()]) for i in range(4))
    measured = np.array([r.time_s for r in rows])
    groups = _replay_groups(rows)
    timings = np.array([r.timing for r in rows])

    def make(x):
        return build({n: float(v * c) for n, v, c in zip(params, x, scale, strict=True)})

    def residual(x):
        fit = make(x)
        model = GPUModel(base.spec, base.reference, Calibration(device=base.name, **to_calibration(fit)))
        device_s = np.empty(len(rows))
        for part, table, copies in groups:
            device_s[part] = model.replaying(copies).cost_table(table, execution="device").time_s
        return np.log(as_timed(model, device_s, timings, getattr(fit, "host_interval_s", 0.0)) / measured)

    x = least_squares(residual, x0=x0, bounds=(lower, upper), x_scale="jac").x
    return make([float(v) for v in x])


def fit_gemm(base: GPUModel, rows: list[MeasuredKernel], latencies_from: GemmFit | None = None) -> GemmFit:
    """One GEMM fit on rows of one dtype (the rows' dtype picks the peak rate), tiled as its library dispatches
    where GEMM_TILE_LIBRARY names one. A low-precision GEMM with a
    quantization kernel before it (QUANTIZE_BYTES_PER_INPUT) also fits that kernel's latency and bandwidth (and its
    time per input row where ROW_GRID_QUANTIZE_FITS names it); OUTPUT_RATE_FITS also fit the output's write rate;
    rows launched eagerly (timing 'eager') also fit the call's host interval, and take their device latencies from
    `latencies_from` (eager_latencies) instead of fitting them."""
    key = gemm_key(rows[0])
    quantize = QUANTIZE_BYTES_PER_INPUT.get(key, 0.0)
    policy = tile_policy(GEMM_TILE_LIBRARY[key], base.name) if key in GEMM_TILE_LIBRARY else ""
    eager = any(r.timing == "eager" for r in rows)
    # The quantization kernel's and host terms only where they apply.
    params: Parameters = {
        "compute_fraction": (0.8, 0.05, 1.0, 1.0), "bandwidth_fraction": (0.8, 0.05, 1.0, 1.0),
        "latency_s": (5.0, 0.0, 1000.0, 1e-6), "blend": (4.0, 1.0, 50.0, 1.0), "padding_share": (0.5, 0.0, 1.0, 1.0),
        **({"sm_bandwidth_share": (2.0, 0.01, 100.0, 1.0)} if policy else {}),
        **({"quantize_latency_s": (2.0, 0.0, 1000.0, 1e-6),
            "quantize_bandwidth_fraction": (0.5, 0.01, 1.0, 1.0)} if quantize else {}),
        **({"host_interval_s": (20.0, 0.0, 1000.0, 1e-6)} if eager else {}),
        **({"output_bandwidth_fraction": (0.5, 0.01, 1.0, 1.0)} if key in OUTPUT_RATE_FITS else {}),
        **({"quantize_row_s": (1.0, 0.0, 1000.0, 1e-9)} if quantize and key in ROW_GRID_QUANTIZE_FITS else {}),
        # Only where some row's copies all fit in the L2 (as fit_moe's cache_speedup).
        **({"cache_speedup": (2.0, 1.0, 20.0, 1.0)} if any(stays_in_l2(base, r) for r in rows) else {})}
    fixed: dict[str, float] = {}
    if eager:
        # An eager loop's floor is the host's or the device's, which the rows cannot tell apart: any device
        # latency up to the host interval fits them alike, and a fitted one lands anywhere in that range (a
        # host-sized latency then charged as device time in every execution mode). So the device's fixed
        # latencies are not fitted here but taken from an identifiable, graph-timed fit of the same GPU.
        if latencies_from is None:
            raise ValueError(f"fit_gemm: rows of {key or 'bf16'!r} are timed eagerly; their device latencies come "
                             f"from a graph-timed fit of the GPU (latencies_from), and none was given")
        fixed = eager_latencies(latencies_from, quantize)
        for name in fixed:
            del params[name]

    def build(values: dict[str, float]) -> GemmFit:
        return GemmFit(quantize_bytes_per_input=quantize, tile_policy=policy, **values, **fixed)
    return _fit(base, rows, params, build, lambda fit: {"gemm": fit})


def stays_in_l2(base: GPUModel, row: MeasuredKernel) -> bool:
    """Whether a GEMM row's benchmark keeps its operands in the L2 between calls: all its replay_copies fit."""
    working_set_B = row.to_kernel().total_bytes * row.replay_copies
    return bool(row.replay_copies) and working_set_B <= base.spec.memory.l2_cache_MB * 1e6


def eager_latencies(sibling: GemmFit, quantize_bytes_per_input: float) -> dict[str, float]:
    """The device latencies an eagerly timed GEMM fit takes from a graph-timed fit of the same GPU: its GEMM
    latency, and, where the eager kernel has an input quantization kernel, the sibling's quantization kernel's
    latency (or, where the sibling has none, its GEMM latency: one kernel's fixed time on that GPU). Both add to
    every row, so the sibling's rows identify their sum, not its split; taking both carries that sum over."""
    if not quantize_bytes_per_input:
        return {"latency_s": sibling.latency_s}
    quantize_s = sibling.quantize_latency_s if sibling.quantize_bytes_per_input else sibling.latency_s
    return {"latency_s": sibling.latency_s, "quantize_latency_s": quantize_s}


def latency_sibling(key: str, graph_timed: dict[str, GemmFit]) -> str | None:
    """The graph-timed GEMM fit whose device latencies an eagerly timed fit of dtype key `key` takes: the same
    dtype's default scaling ('fp8' for 'fp8/block128': the same GPU's nearest kernel, its latency identifiable
    since graph replay hides the host), else the GPU's 16-bit fit ('': a GEMM's fixed time on that GPU), else
    none."""
    for candidate in (key.split("/")[0], ""):
        if candidate != key and candidate in graph_timed:
            return candidate
    return None


# MoeFit parameters (Parameters). Fractions stay at or below 1. The unaligned slowdown starts at none: a fit
# without unaligned rows leaves it there.
MOE_PARAMETERS: Parameters = {
    "compute_fraction": (0.7, 0.02, 1.0, 1.0), "bandwidth_fraction": (0.8, 0.02, 1.0, 1.0),
    "act_bandwidth_fraction": (0.8, 0.02, 1.0, 1.0), "latency_s": (20.0, 0.0, 1000.0, 1e-6),
    "blend": (4.0, 1.0, 50.0, 1.0), "padding_share": (0.5, 0.0, 1.0, 1.0),
    "cta_bandwidth_Bps": (20.0, 0.1, 1e4, 1e9), "unaligned_slowdown": (0.0, 0.0, 10.0, 1.0),
    "cache_speedup": (2.0, 1.0, 20.0, 1.0), "ep_latency_s": (5.0, 0.0, 1000.0, 1e-6),
}


def fit_moe(base: GPUModel, rows: list[MeasuredKernel]) -> MoeFit:
    """One fused-MoE fit on rows of one dtype key (the rows' dtype picks the peak rate). A term no row exercises
    is left out, at its no-effect value: the unaligned slowdown without unaligned intermediate sizes (block-scaled
    fp8 needs multiples of 128), the L2 speed-up without a layer small enough to stay in the L2 when replayed, the
    expert-parallel fixed time without a layer whose experts are spread over devices."""
    kernels = [r.to_kernel() for r in rows]
    unused = set()
    if not any(k.expert_parallel > 1 for k in kernels):
        unused.add("ep_latency_s")
    if not any(round(k.n / MATRICES) % ALIGNMENT for k in kernels):
        unused.add("unaligned_slowdown")
    if not any(k.total_bytes <= base.spec.memory.l2_cache_MB * 1e6 for k in kernels):
        unused.add("cache_speedup")
    params = {name: v for name, v in MOE_PARAMETERS.items() if name not in unused}
    return _fit(base, rows, params, lambda values: MoeFit(**values), lambda fit: {"moe": fit})


STREAM_PARAMETERS: Parameters = {"bandwidth_fraction": (0.7, 0.01, 1.0, 1.0), "latency_s": (3.0, 0.0, 1000.0, 1e-6)}


def stream_class(row: MeasuredKernel) -> str:
    """The streaming fit a streaming row belongs to: its kernel kind's, or, for a row off the contiguous vectorized
    loop (variant GENERAL_LAYOUT), that one class of its own whatever its kind."""
    return GENERAL_LAYOUT if row.variant == GENERAL_LAYOUT else row.kernel


def fit_stream(base: GPUModel, kernel_class: str, rows: list[MeasuredKernel]) -> StreamFit:
    return _fit(base, rows, STREAM_PARAMETERS, lambda values: StreamFit(**values),
                lambda fit: {"streams": {kernel_class: fit}})


# AttentionFit parameters (Parameters). Fractions stay at or below 1.
_ATTENTION_PARAMETERS: Parameters = {
    "compute_fraction": (0.6, 0.05, 1.0, 1.0), "bandwidth_fraction": (0.8, 0.05, 1.0, 1.0),
    "latency_s": (8.0, 0.0, 1000.0, 1e-6), "block_s": (2.0, 0.0, 100.0, 1e-6), "sequence_s": (2.0, 0.0, 100.0, 1e-6),
    "block_bandwidth_Bps": (50.0, 1.0, 1e4, 1e9), "softmax_flops": (256.0, 0.0, 4096.0, 1.0),
    "softmax_overlap": (4.0, 1.0, 50.0, 1.0), "blend": (4.0, 1.0, 50.0, 1.0), "cache_speedup": (2.0, 1.0, 20.0, 1.0),
}


def _fit_attention_family(base: GPUModel, rows: list[MeasuredKernel], packs_gqa: bool) -> tuple[AttentionFit, float]:
    """One AttentionFit on rows of one kernel family, and its sum of squared log errors."""
    fit = _fit(base, rows, _ATTENTION_PARAMETERS, lambda values: AttentionFit(packs_gqa=packs_gqa, **values),
               lambda fit: {"attention": fit})
    model = GPUModel(base.spec, base.reference, Calibration(device=base.name, attention=fit))
    return fit, float(np.sum(np.log(predict(model, rows) / np.array([r.time_s for r in rows])) ** 2))


def fit_attention(base: GPUModel, rows: list[MeasuredKernel]) -> AttentionFit:
    """Attention fits by library and kernel family. Rows timed through torch's scaled_dot_product_attention
    (TORCH_SDPA_BACKEND) are the `torch_sdpa` fit, the others (an engine's kernels) the top level; where only
    torch's were measured, their fit is the top level and prices every attention kernel."""
    torch_rows = [r for r in rows if r.backend == TORCH_SDPA_BACKEND]
    engine_rows = [r for r in rows if r.backend != TORCH_SDPA_BACKEND]
    torch_fit = _fit_attention_families(base, torch_rows) if torch_rows else None
    if not engine_rows:
        if torch_fit is None:
            raise ValueError("fit_attention: no attention rows")
        return torch_fit
    return replace(_fit_attention_families(base, engine_rows), torch_sdpa=torch_fit)


def _fit_attention_families(base: GPUModel, rows: list[MeasuredKernel]) -> AttentionFit:
    """Attention fits of one library by kernel family: prefill and decode, each with a 16-bit and an fp8 KV cache
    where rows have them (the first present of prefill, decode is the top-level fit, the others its variants).
    Decode packs the query heads of a KV head into one block; for prefill both layouts are fitted and the better
    kept."""
    families: dict[tuple[bool, bool], AttentionFit] = {}
    for decode in (False, True):
        for fp8_kv in (False, True):
            group = [r for r in rows if (r.kernel == "attention_decode" or r.seq_len <= 1) == decode
                     and (r.kv_dtype in ("fp8", "int8", "fp4")) == fp8_kv]
            if group:
                layouts = (True,) if decode else (True, False)
                families[decode, fp8_kv] = min((_fit_attention_family(base, group, p) for p in layouts),
                                               key=lambda pair: pair[1])[0]
    def joined(fp8_kv: bool) -> AttentionFit | None:
        prefill, decode = families.get((False, fp8_kv)), families.get((True, fp8_kv))
        top = prefill or decode
        return replace(top, decode=decode if prefill and decode else None) if top else None
    top, fp8 = joined(False), joined(True)
    return replace(top, fp8_kv=fp8) if top else fp8


def fit_calibration(base: GPUModel, rows: list[MeasuredKernel], *, table_path: str | list[str],
                    train_fraction: float, command: str, train: list[str] | None = None) -> Calibration:
    """Fit every kernel class that has measurements on this device, on the training share of sources.

    `table_path` names the table (or tables) the rows came from; the provenance records each one's SHA-256.
    `train` is the sources to fit on (default: training_sources of the rows; tables_training_sources when the
    rows come from several tables).
    """
    paths = [table_path] if isinstance(table_path, str) else list(table_path)
    table_path = ", ".join(paths)
    rows = [r for r in rows if r.device == base.name and not r.is_step]  # whole steps are validated, not fitted
    if not rows:
        raise InputError(f"{table_path}: no kernel rows for device {base.name!r}")
    train = training_sources(rows, train_fraction) if train is None else train
    fitting = [r for r in rows if r.source in set(train)]
    gemm_rows: dict[str, list[MeasuredKernel]] = {}
    moe_rows: dict[str, list[MeasuredKernel]] = {}
    for r in fitting:
        if r.kernel in GEMM_KINDS and not quantized_gemm(r):
            gemm_rows.setdefault(gemm_key(r), []).append(r)
        elif r.kernel == MOE_KIND:
            moe_rows.setdefault(gemm_key(r), []).append(r)
    eager = {key for key, group in gemm_rows.items() if any(r.timing == "eager" for r in group)}
    # An eager fit's sibling is looked up among the graph-timed fits alone: another eager fit's latencies are not
    # identified by its own rows, and the provenance says the sibling is graph-timed.
    graph_timed = {key: fit_gemm(base, group) for key, group in sorted(gemm_rows.items()) if key not in eager}
    gemms = dict(graph_timed)
    notes: dict[str, str] = {}
    for key in sorted(eager):
        sibling = latency_sibling(key, graph_timed)
        if sibling is None:
            raise InputError(f"{table_path}: GEMM rows of {key!r} on {base.name!r} are timed eagerly, and no "
                             f"graph-timed GEMM rows of that device give their device latency; allowed: a table "
                             f"with graph-timed {key.split('/')[0]!r} or 16-bit GEMM rows of {base.name!r}")
        gemms[key] = fit_gemm(base, gemm_rows[key], graph_timed[sibling])
        taken = " and ".join(eager_latencies(graph_timed[sibling], gemms[key].quantize_bytes_per_input))
        notes[key] = (f"rows timed eagerly (host and device floors alike): {taken} taken from this GPU's "
                      f"graph-timed GEMM fit {sibling or '16-bit'!r}, not fitted")
    gemms = dict(sorted(gemms.items()))
    moes = {key: fit_moe(base, group) for key, group in sorted(moe_rows.items())}
    stream_rows: dict[str, list[MeasuredKernel]] = {}
    for r in fitting:
        if r.kernel in STREAM_FIT_CLASSES:
            stream_rows.setdefault(stream_class(r), []).append(r)
    streams = {c: fit_stream(base, c, group) for c, group in stream_rows.items()}
    attention = [r for r in fitting if r.kernel in ATTENTION_KINDS]
    provenance = {
        "table": table_path, "sha256": ", ".join(hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths),
        "rows_used": len(fitting), "rows_for_device": len(rows), "train_fraction": train_fraction,
        "train_sources": train, "date": datetime.date.today().isoformat(), "command": command,
        **({"fixed_latencies": notes} if notes else {}),
    }
    return Calibration(device=base.name, gemm=gemms.pop("", None), gemm_dtypes=gemms or None, streams=streams or None,
                       attention=fit_attention(base, attention) if attention else None, moe=moes.pop("", None),
                       moe_dtypes=moes or None, provenance=provenance)


def error_summary(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Count, median and p90 of |predicted / measured - 1|, and the median signed error."""
    err = predicted / measured - 1.0
    return {"n": int(len(err)), "median_abs_err": float(np.median(np.abs(err))),
            "p90_abs_err": float(np.percentile(np.abs(err), 90)), "median_bias": float(np.median(err))}


def calibration_path(device: str) -> Path:
    return Path(str(resources.files("hw_models"))) / CALIBRATION_FOLDER / f"{device}.yaml"


def write_calibration(cal: Calibration, path: Path) -> None:
    data = {"device": cal.device, "provenance": cal.provenance,
            "gemm": asdict(cal.gemm) if cal.gemm else None,
            "gemm_dtypes": {k: asdict(v) for k, v in (cal.gemm_dtypes or {}).items()},
            "streams": {k: asdict(v) for k, v in (cal.streams or {}).items()},
            "attention": asdict(cal.attention) if cal.attention else None,
            **({"moe": asdict(cal.moe) if cal.moe else None,
                "moe_dtypes": {k: asdict(v) for k, v in (cal.moe_dtypes or {}).items()}}
               if cal.moe or cal.moe_dtypes else {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Fitted by `explore calibrate` (see provenance): efficiency of hw_models/gpu_efficiency.py's\n"
              "# models for this preset. Do not edit by hand: rerun the command.\n")
    text = header + yaml.safe_dump(data, sort_keys=False)
    with replacing(path) as tmp:  # every run of the preset reads it: a killed rewrite leaves the earlier file whole
        tmp.write_text(text)


def read_calibration(path: Path) -> Calibration:
    try:
        # libyaml's parser where installed: a shipped fit file takes ~80 ms in pure-Python YAML, most of a cached
        # `explore run`; the objects built are the same (both use the safe constructor)
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        return Calibration(
            device=data["device"], provenance=data.get("provenance"),
            gemm=GemmFit(**data["gemm"]) if data.get("gemm") else None,
            gemm_dtypes={k: GemmFit(**v) for k, v in (data.get("gemm_dtypes") or {}).items()} or None,
            streams={k: StreamFit(**v) for k, v in (data.get("streams") or {}).items()} or None,
            attention=AttentionFit(**data["attention"]) if data.get("attention") else None,
            moe=MoeFit(**data["moe"]) if data.get("moe") else None,
            moe_dtypes={k: MoeFit(**v) for k, v in (data.get("moe_dtypes") or {}).items()} or None,
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise InputError(f"{path}: not a calibration file ({type(err).__name__}: {err})") from None


def load_calibration(device: str) -> Calibration | None:
    """The shipped calibration of a preset, if it has one (read once per file version: sweeps load a preset
    once per override value)."""
    path = calibration_path(device)
    return _read_calibration_version(path, path.stat().st_mtime_ns) if path.is_file() else None


def read_calibration_file(path: Path) -> Calibration:
    """A calibration file given by path (a device file's own), read once per file version."""
    path = path.resolve()
    return _read_calibration_version(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _read_calibration_version(path: Path, mtime_ns: int) -> Calibration:
    return read_calibration(path)
