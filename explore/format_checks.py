"""Checks of a numeric format against itself and the model: combinations of format parts no kernel runs (fp4 with 8
bits, an unknown element type), a group size that does not divide a GEMM's k dimension of the model and edge layers
more than the model has, each a one-line error naming the flag (`explore run`) or the sweep key."""

from __future__ import annotations

import functools
import itertools
from typing import Any

from explore.knobs import knobs
from hw_models.mixed_precision import takes
from hw_models.npu_spec import PIMSpec as BankPIMSpec
from kernels.block_estimate import ESTIMATE_DTYPE
from kernels.formats import DTYPE_SHORT, NumericFormat, check_edge_layers, check_group_size, check_hot_experts
from kernels.sparsity import sparsity_notice, sparsity_use
from workloads.errors import InputError
from workloads.model_config import ModelConfig, load_model_config


def format_knob_names() -> list[str]:
    """The knobs whose values build a point's NumericFormat (DesignPoint.numeric_format)."""
    typed = ("weight_bits", "act_bits", "kv_bits", "sparsity")
    return [k.name for k in knobs(section="format") if k.name in typed or k.applies == "format"]


def gemm_k_dims(config: ModelConfig, tp: int = 1, ep: int = 1, data_parallel: bool = False) -> dict[str, int]:
    """The k (reduction) dimension of each weight GEMM of a decoder layer on one of `tp` tensor-parallel devices:
    column-parallel projections read the whole hidden state, row-parallel ones their shard (kernels/parallel.py);
    an MoE model's routed experts spread whole over the devices (`ep` = tp) keep their whole width, and with
    data-parallel attention (`data_parallel`) everything but the routed experts runs whole on every device
    (kernels/data_parallel.py)."""
    value_dim = config.v_head_dim if config.is_mla else config.head_dim
    experts_whole = config.num_experts > 0 and ep > 1
    shards = 1 if data_parallel else tp  # how many devices split the parts that are not routed experts
    dims = {"hidden (QKV, MLP up, LM head)": config.hidden_size,
            "attention output": config.num_heads * value_dim // shards,
            "MLP down": config.intermediate_size // (1 if experts_whole else tp)}
    # MLA's up-projections read the query's and the key/value latents (column-parallel: whole on every device).
    if config.q_lora_rank:
        dims["query latent (q_b_proj)"] = config.q_lora_rank
    if config.is_mla:
        dims["latent (kv_b_proj)"] = config.kv_lora_rank
    if config.dense_layers:
        dims["dense layers' MLP down"] = config.dense_intermediate_size // shards
    if config.shared_experts:
        dims["shared experts' MLP down"] = config.shared_experts * config.intermediate_size // shards
    return dims


def check_format(parts: dict[str, Any], config: ModelConfig, tp: int = 1, ep: int = 1,
                 data_parallel: bool = False) -> NumericFormat:
    """The format of these parts; ValueError ('<field>: found X, allowed: Y') for a combination no kernel runs or a
    group size that does not fit the model on `tp` devices with its experts split (`ep` 1) or spread (`ep` = tp),
    its attention tensor- or (`data_parallel`) data-parallel."""
    # Before the format's own checks: on a dense model, the bits of hot experts it does not have do not matter.
    check_hot_experts(parts.get("hot_experts", 0), config.num_experts, config.name)
    fmt = NumericFormat(**parts)
    check_group_size(fmt, gemm_k_dims(config, tp, ep, data_parallel), config.name)
    check_edge_layers(fmt, config.num_layers, config.name)
    return fmt


def check_sweep_formats(sweep, located) -> None:
    """Every combination of a sweep's format values, derived format knobs computed at each (edge_layer_bits from
    weight_bits), on every model and tensor-parallel degree: InputError naming the format: or derived: key of the
    part at fault."""
    dims = sweep.dimensions()
    names = [name for name in format_knob_names() if name in dims]
    derived = [name for name in format_knob_names() if name in sweep.derived]
    read, chain = {}, set()
    for target in derived:
        target_dims, target_chain = sweep.derived_inputs(target)
        read.update(target_dims)
        chain.update(target_chain)
    inputs = names + [name for name in read if name not in names]
    order = [target for target in sweep.derived if target in chain]  # file order: each may read those above it
    tps = dims.get("tp", [1])
    spreads = dict.fromkeys(value == "spread" for value in dims.get("ep", [1]))  # experts split over tp or spread
    data = dict.fromkeys(value == "data" for value in dims.get("attention_parallel", ["tensor"]))
    for model in dims["model"]:
        config = load_model_config(model)
        seen = set()
        for combo in itertools.product(*(dims[name] for name in inputs)):
            values = dict(zip(inputs, combo, strict=True))
            parts = {name: values[name] for name in names}
            if derived:
                computed = sweep.derive(values, order)
                parts.update((name, computed[name]) for name in derived)
            if (key := tuple(parts.items())) in seen:
                continue
            seen.add(key)
            for tp, spread, data_parallel in itertools.product(tps, spreads, data):
                try:
                    check_format(parts, config, tp, tp if spread else 1, data_parallel)
                except ValueError as err:
                    raise _format_error(err, parts, names, derived, dims, located, tp) from None


def _format_error(err: ValueError, parts: dict[str, Any], names: list[str], derived: list[str], dims: dict,
                  located, tp: int) -> InputError:
    """check_format's error at one combination, on the line of the format: (or derived:) key at fault."""
    field, _, rest = str(err).partition(": ")
    if field in derived:
        section, key = "derived", field
    else:
        section, key = ("format", field) if field in names else \
            ("format", names[0]) if names else ("derived", next(iter(derived), field))
    shown = ", ".join(f"{k}={v}" for k, v in parts.items() if k in derived or len(dims[k]) > 1 or k == field)
    at = f" (at {shown}{f', tp={tp}' if tp != 1 else ''})" if shown else ""
    return InputError(f"{located.where((section, key))}: {section}.{field}: {rest}{at}")


# Weight element types a CPU's kernels are counted for (hw_models/cpu.py prices weights by their width alone):
# integers (llama.cpp's formats, T-MAC's lookups) and ternary weights in 2 bits (T-MAC runs BitNet's as 2-bit
# integers).
CPU_COUNTED_TYPES = ("int", "ternary")


def format_notice(device, fmt: NumericFormat, head_dim: int) -> str:
    """What a device (or a system of them) does with a format it cannot run as it is ('' when it runs it natively):
    a GPU emulating a dtype it has no tensor cores for (hw_models/gpu_quant.py), for each weight width of a mixed
    format; GEMMs no measured GEMM of their kind prices (unmeasured_gemms); sparsity the device does not exploit,
    run dense (kernels/sparsity.py); `head_dim`, the model's head size, says whether a sparse KV cache is packed."""
    notices = [plan.notice for plan in _plans(device, fmt) if plan.notice]
    model = getattr(device, "device", device)  # a system of devices: its devices' model
    wider = _array_fallbacks(model, fmt)
    if wider:
        notices.append(", ".join(f"{dtype} GEMMs run at the {math} rate{where}" for dtype, math, where in wider)
                       + f" on {model.name}: {model.weight_gemm_why}")
    if getattr(model, "kind", "") == "cpu" and fmt.weight_bits < 16 and fmt.weight_type not in CPU_COUNTED_TYPES:
        # hw_models/cpu.py dequant_lane_ops: the unpacking counted is that of llama.cpp's integer formats by width.
        notices.append(f"{fmt.weight_type} weights on {model.name} are priced as integer weights of "
                       f"{fmt.weight_bits:g} bits (llama.cpp's unpacking, or lookups where faster): no CPU kernel of "
                       f"that element type is counted")
    if getattr(model, "kind", "") == "gpu" and fmt.act_bits < 16 <= fmt.weight_bits:
        # kernels/formats.py gemm_dtype: 16-bit weights keep the GEMMs' math at 16 bits whatever the activations.
        notices.append(f"{fmt.act_bits}-bit activations beside 16-bit weights on {model.name}: no kernel multiplies "
                       f"them in fewer bits, so the GEMMs run in 16-bit math and only the activations' bytes shrink")
    unmeasured = unmeasured_gemms(model, fmt)
    if unmeasured:
        notices.append(f"GEMMs with no measurement of their own on {model.name}, priced on another fit: {unmeasured}")
    notices.append(sparsity_notice(model.sparsity_patterns, model.name, fmt))
    pim = getattr(model.spec, "pim", None)
    if not isinstance(pim, BankPIMSpec):  # attention in HBM-PIM banks; a CPU's SRAM arrays (SAIL) run only GEMVs
        pim = None
    if pim is not None and fmt.kv_bits < 8 * pim.element_bytes:  # hw_models/npu.py prices bank MACs per element
        article = "an" if fmt.kv_bits == 8 else "a"
        notices.append(f"{article} {fmt.kv_bits}-bit KV cache on {model.name} takes less memory, but its banks' "
                       f"multipliers take one {8 * pim.element_bytes:g}-bit element a MAC, so attention in the banks "
                       f"takes as long as at {8 * pim.element_bytes:g} bits")
    if pim is not None and fmt.kv_sparsity and fmt.kv_packing(head_dim) < 1.0:
        notices.append(f"a bitmap-packed sparse KV cache (kv_sparsity {fmt.kv_sparsity:g}) on {model.name} is priced "
                       f"as its packed bytes read in the banks, as if they expanded the bitmap for free; their "
                       f"multipliers still take one element a MAC, pruned ones included")
    return "; ".join(dict.fromkeys(n for n in notices if n))


def estimate_notice(device, prefill_kept: float) -> str:
    """Where a device has no int4 matrix rate for a block-sparse prefill's 4-bit estimate (prefill_kept below 1,
    kernels/block_sparse.py) and prices its Q.K at the next wider dtype it has, as it prices any row of a dtype it lacks
    ('' where it has one, or the prefill is dense)."""
    if prefill_kept >= 1.0:
        return ""
    model = getattr(device, "device", device)  # a system of devices: its devices' model
    # the type the device's matrix math runs it as (a GPU's rate table, an NPU's or FPGA's units, a CPU's lanes)
    matrix_dtype = getattr(model.spec, "matrix_dtype", None)
    math = matrix_dtype(ESTIMATE_DTYPE) if matrix_dtype is not None else ESTIMATE_DTYPE
    if math == ESTIMATE_DTYPE:
        return ""
    return (f"prefill_kept's 4-bit Q.K estimate runs at the {math} rate on {model.name}: it has no int4 matrix "
            f"mode (the 4-bit operands' conversion to {math} is not priced)")


def sixteen_bit_notice(device, model_dtype: str) -> str:
    """Where a GPU has no tensor-core rate for a model's 16-bit type (bf16 on a V100) and runs its math at the other
    one's ('' where it has it, and on other kinds)."""
    model = getattr(device, "device", device)  # a system of devices: its devices' model
    rates = getattr(getattr(model.spec, "compute", None), "peak_TFLOPS", None)
    dtype = DTYPE_SHORT.get(model_dtype, model_dtype)
    if getattr(model, "kind", "") != "gpu" or rates is None or dtype not in ("fp16", "bf16") or dtype in rates:
        return ""
    other = "fp16" if dtype == "bf16" else "bf16"
    return (f"{dtype} math runs at the {other} rate on {model.name}: it has no {dtype} tensor cores (an engine would "
            f"cast the model to {other})")


def unmeasured_gemms(device, fmt: NumericFormat) -> str:
    """Each weight width's GEMMs that no measured GEMM of their kind prices on the device, with what prices them
    instead ('w8a8 (int8): 16-bit fit'), or '' (hw_models/gpu.py GPUModel.gemm_pricing_unmeasured)."""
    model = getattr(device, "device", device)  # a system of devices: its devices' model
    priced_by = getattr(model, "gemm_pricing_unmeasured", None)
    if priced_by is None:
        return ""
    parts = (f"w{width.weight_bits}a{width.act_bits} ({plan.dtype}): {how}"
             for width, plan in _width_plans(model, fmt) if (how := priced_by(plan)))
    return ", ".join(dict.fromkeys(parts))


def emulated_gemms(device, fmt: NumericFormat) -> str:
    """The GEMM dtypes of a format that a device emulates, each with the dtype it runs in ('fp8 as bf16'), or ''
    where every GEMM runs natively."""
    return ", ".join(f"{dtype} as {math}{where}" for dtype, math, where in gemms_run_as(device, fmt))


def gemms_run_as(device, fmt: NumericFormat) -> list[tuple[str, str, str]]:
    """(GEMM dtype, the dtype whose rate prices it, where: '' or ' where ...') of each quantized weight width of a
    format that a device runs in another dtype than its own: a GPU's quant plan (weight-only at the 16-bit rate, or
    emulated at a wider dtype), another device's _array_fallbacks."""
    emulated = [(plan.dtype, plan.math_dtype, "") for plan in _plans(device, fmt) if plan.emulated]
    return list(dict.fromkeys(emulated + _array_fallbacks(getattr(device, "device", device), fmt)))


def _array_fallbacks(model, fmt: NumericFormat) -> list[tuple[str, str, str]]:
    """(GEMM dtype, dtype it runs as, where it does: '' or ' where ...') of each quantized weight width whose math the
    device's cost model prices in another dtype (DeviceModel.weight_gemm_dtype: an NPU's or FPGA's matrix units the
    next wider one they have, a CPU's SIMD kernels int8 dot products), unless their mixed-precision unit takes the width
    (hw_models/mixed_precision.py takes: not one switched off, nor an activation dtype it has no rate for). A CPU whose
    LUT kernels take the width runs each GEMM the faster way (hw_models/cpu.py): the int8 path only where its table
    lookups are slower, which the third element says apart so that a sentence can put it after the rate."""
    runs_in = getattr(model, "weight_gemm_dtype", None)
    if runs_in is None or fmt.weight_bits >= 16:
        return []
    unit = getattr(model.spec, "mixed_precision", None)
    pairs = []
    for bits in fmt.weight_widths:
        width = fmt if bits == fmt.weight_bits else fmt.at_bits(bits)
        if width.weight_bits >= 16:
            continue
        dtype = width.gemm_dtype("fp16")
        if unit is not None and takes(unit, width.weight_bits, dtype):
            continue
        if (math := runs_in(width.weight_bits, dtype)) != dtype:
            lut = getattr(model.spec, "lut", None)
            looked_up = lut is not None and width.weight_bits <= lut.max_weight_bits
            pairs.append((dtype, math, " where table lookups are slower" if looked_up else ""))
    return list(dict.fromkeys(pairs))


def _plans(device, fmt: NumericFormat) -> list:
    """The device's plan of each weight width of the format (none for devices without quantization plans)."""
    return [plan for _, plan in _width_plans(device, fmt)]


def _width_plans(device, fmt: NumericFormat) -> list:
    """(uniform format, plan) of each quantized weight width of the format on the device."""
    device = getattr(device, "device", device)  # a system of devices: its devices' model
    plan_of = getattr(device, "quant_plan", None)
    if plan_of is None:
        return []
    widths = [fmt if bits == fmt.weight_bits else fmt.at_bits(bits) for bits in fmt.weight_widths]
    return [(width, plan) for width in widths if (plan := plan_of(width)) is not None]


@functools.lru_cache(maxsize=256)
def _device_model(name: str, overrides: tuple, calibrated: bool):
    from hw_models.registry import load_device

    return load_device(name, dict(overrides), calibrated=calibrated)


def point_sparsity_use(point) -> str:
    """How a design point's device runs the sparsity of its format (kernels/sparsity.py sparsity_use; '' when dense)."""
    fmt = point.numeric_format
    if fmt.sparsity == "dense" and fmt.act_kept >= 1.0:
        return ""
    device = _device_model(point.device, point.overrides, point.use_calibration)
    # A serving point's batch is its sequence limit (max_seqs): its steps run at most that many.
    return sparsity_use(device.sparsity_patterns, device.name, fmt, point.batch, at_most=point.serving is not None)


def point_unmeasured_gemms(point) -> str:
    """unmeasured_gemms of a design point (explore.design_point.DesignPoint): its format on its device as
    overridden."""
    return unmeasured_gemms(_device_model(point.device, point.overrides, point.use_calibration), point.numeric_format)


def point_emulated_gemms(point) -> str:
    """emulated_gemms of a design point (explore.design_point.DesignPoint): its format on its device as overridden."""
    return emulated_gemms(_device_model(point.device, point.overrides, point.use_calibration), point.numeric_format)
