"""`explore import-vidur`, `explore import-aiconfigurator`, `explore calibrate` and `explore validate`: fit GPU
efficiency, score predictions."""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from explore.cli import print_json
from explore.out_paths import check_out_file, check_out_folder
from explore.progress_line import ProgressLine
from hw_models.calibration import (
    _ATTENTION_PARAMETERS,
    ATTENTION_KINDS,
    GEMM_KINDS,
    MOE_KIND,
    MOE_PARAMETERS,
    QUANTIZE_BYTES_PER_INPUT,
    STREAM_FIT_CLASSES,
    calibration_path,
    error_summary,
    fit_calibration,
    gemm_key,
    load_calibration,
    predict,
    quantized_gemm,
    stream_class,
    tables_training_sources,
    write_calibration,
)
from hw_models.collective_tables import is_collective_table, score_collectives
from hw_models.gpu import GPUModel
from hw_models.registry import device_base, load_device, preset_names
from kernels.measured import (
    BATCH_RUN,
    DECODE_STEP,
    GENERAL_LAYOUT,
    PREFILL_STEP,
    ROW_DTYPE_BITS,
    TABLE_SUFFIXES,
    MeasuredKernel,
    read_table,
    write_table,
)
from workloads.errors import InputError


def cmd_import_vidur(args) -> int:
    from kernels.vidur_import import read_vidur

    check_out_file("-o", args.output, TABLE_SUFFIXES)
    rows = read_vidur(args.folder)
    write_table(args.output, rows)
    print(f"{args.output}: {len(rows)} measured kernels from {args.folder}")
    return 0


def cmd_import_aiconfigurator(args) -> int:
    from kernels.aiconfigurator_import import read_aiconfigurator

    check_out_file("-o", args.output, TABLE_SUFFIXES)
    rows = read_aiconfigurator(args.folder)
    write_table(args.output, rows)
    print(f"{args.output}: {len(rows)} measured kernels from {args.folder}")
    return 0


def own_rows(rows: list[MeasuredKernel], device: str, name: str) -> list[MeasuredKernel]:
    """The rows of a table that --device names: its device column the preset, or a device file as given or by the
    file's `name:` (as `explore measure --device-name` wrote it), each row named `device` for the commands after."""
    return [row if row.device == device else replace(row, device=device) for row in rows
            if row.device in (device, name)]


def no_rows_of(tables: str, device: str, rows: list[MeasuredKernel], kernels_only: bool = False) -> InputError:
    """The refusal of a --device the tables have no rows of (no kernel rows: the ones a fit takes), naming the
    devices whose rows they do have."""
    counts = Counter(row.device for row in rows if not (kernels_only and row.is_step))
    found = ", ".join(f"{name} ({n} row{'s' * (n != 1)})" for name, n in sorted(counts.items())) or "none"
    steps = sum(row.is_step for row in rows) if kernels_only else 0
    found += f" (and {steps} whole-step or run rows, which validate scores and no fit takes)" if steps else ""
    what = "kernel rows" if kernels_only else "rows"
    return InputError(f"{tables}: --device: no {what} of {device!r}; found {what} of {found}; allowed: a device "
                      f"whose {what} the tables hold")


def unknown_devices(tables: list[list[MeasuredKernel]], device: str, name: str) -> str:
    """The device names of a table's rows that are no preset, no device file on disk and not `device` (or its
    `name:`), with their row counts ('' where none): most likely a typo, whose rows no fit would see."""
    counts: dict[str, int] = defaultdict(int)
    for row in (row for table in tables for row in table):
        counts[row.device] += 1
    known = set(preset_names()) | {device, name}
    unknown = {d: n for d, n in counts.items() if d not in known and not Path(d).is_file()}
    return ", ".join(f"{d!r} ({n} row{'s' * (n != 1)})" for d, n in sorted(unknown.items()))


def require_gpu(device: str, model, why: str) -> None:
    """Refuse a --device that is no GPU, saying `why` a GPU is needed."""
    if model.kind != "gpu":
        article = "an" if model.kind in ("npu", "fpga") else "a"  # the kinds as said: an NPU, an FPGA
        raise InputError(f"--device: found {device!r} ({article} {model.kind} preset), allowed: a GPU preset "
                         f"({why}): {', '.join(preset_names('gpu'))}")


def cmd_calibrate(args) -> int:
    # Refit from the datasheet roofline, not on top of a previous calibration.
    base = load_device(args.device, calibrated=False)
    require_gpu(args.device, base, "calibration fits the GPU efficiency models")
    is_file = args.device not in preset_names()
    if is_file and (on := device_base(args.device)):
        raise InputError(f"--device: {args.device} is a what-if of preset {on!r} (base:) and prices with its fits; "
                         f"allowed: a preset, or a device file of its own (without base:; sibling: lends the classes "
                         f"it has no rows of)")
    if is_file and not args.out:
        raise InputError(f"--out: missing for device file {args.device}; allowed: a path for its calibration, which "
                         f"the file then names (calibration: PATH)")
    if args.out:
        check_out_file("--out", args.out, makes_folder=True)
    tables = [read_table(table) for table in args.table]
    if unknown := unknown_devices(tables, args.device, base.name):
        print(f"explore: notice: {', '.join(map(str, args.table))}: rows of {unknown} name no preset, device file or "
              f"--device {args.device}; they are left out", file=sys.stderr)
    if is_file:  # the fits and their provenance name the device by its file's name
        tables = [[replace(r, device=base.name) for r in own_rows(table, args.device, base.name)] for table in tables]
    rows = [row for table in tables for row in table]
    if not 0 < args.train_fraction <= 1:
        raise InputError(f"--train-fraction: found {args.train_fraction}, allowed: a number in (0, 1]")
    own = [[r for r in table if r.device == base.name and not r.is_step] for table in tables]
    if not any(own):
        raise no_rows_of(", ".join(map(str, args.table)), args.device, rows, kernels_only=True)
    train = tables_training_sources(own, args.train_fraction)
    check_rows_per_fit(rows, base.name, train, ", ".join(map(str, args.table)), args.train_fraction)
    command = "explore " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "explore calibrate"
    cal = fit_calibration(base, rows, table_path=[str(t) for t in args.table], train_fraction=args.train_fraction,
                          command=command, train=train)
    check_training_error(GPUModel(base.spec, base.reference, cal), rows, train, ", ".join(map(str, args.table)))
    out = Path(args.out) if args.out else calibration_path(args.device)
    write_calibration(cal, out)
    prov = cal.provenance
    sources = prov["train_sources"]
    shown = ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
    print(f"{out}: fitted on {prov['rows_used']} of {prov['rows_for_device']} rows for {base.name} "
          f"({len(sources)} sources: {shown})")
    named = getattr(base.spec, "calibration", None)
    if is_file and (named is None or (Path(args.device).parent / named).resolve() != out.resolve()):
        print(f"to price {args.device} with it, name it in the file: calibration: "
              f"{os.path.relpath(out.resolve(), Path(args.device).resolve().parent)}")
    return 0


def fit_group(row: MeasuredKernel) -> str | None:
    """The fit fit_calibration makes a training row part of ('gemm fp8', 'attention decode kv 8-bit', 'moe', 'norm',
    ...), or None where no fit takes it (a quantized 'wXaY' GEMM, a kind without a fit)."""
    if row.kernel in GEMM_KINDS and not quantized_gemm(row):
        return f"gemm {gemm_key(row)}".rstrip()
    if row.kernel == MOE_KIND:
        return f"moe {gemm_key(row)}".rstrip()
    if row.kernel in ATTENTION_KINDS:
        phase = "decode" if row.kernel == "attention_decode" or row.seq_len <= 1 else "prefill"
        kv = " kv 8-bit" if row.kv_dtype in ("fp8", "int8", "fp4") else ""
        return f"attention {phase}{kv}"
    if row.kernel in STREAM_FIT_CLASSES:
        return stream_class(row)
    return None


def fit_groups(rows: list[MeasuredKernel]) -> dict[str, tuple[int, int]]:
    """The fits fit_calibration makes of a device's training rows: each one's rows and parameters (a GEMM per
    dtype fit, with a quantization kernel's two and an eager host interval's one where they apply; attention
    per family of prefill or decode and 16-bit or 8-bit KV; a fused-MoE fit per dtype; a stream fit per kernel
    class)."""
    groups: dict[str, list[MeasuredKernel]] = defaultdict(list)
    for r in rows:
        name = fit_group(r)
        if name is not None:
            groups[name].append(r)
    counts = {}
    for name, group in groups.items():
        if name.startswith("gemm"):
            quantize = QUANTIZE_BYTES_PER_INPUT.get(gemm_key(group[0]), 0.0)
            parameters = 5 + 2 * bool(quantize) + any(r.timing == "eager" for r in group)
        elif name.startswith("moe"):
            parameters = len(MOE_PARAMETERS)
        else:
            parameters = len(_ATTENTION_PARAMETERS) if name.startswith("attention") else 2
        counts[name] = (len(group), parameters)
    return counts


def check_rows_per_fit(rows: list[MeasuredKernel], device: str, train: list[str], tables: str,
                       train_fraction: float) -> None:
    """Each fit needs at least as many training rows as it has parameters: fewer leave it undetermined (one row
    fits any curve through it), and the written calibration would price every shape from one point."""
    own = [r for r in rows if r.device == device and not r.is_step]
    train = set(train)
    for name, (count, parameters) in fit_groups([r for r in own if r.source in train]).items():
        if count < parameters:
            raise InputError(f"{tables}: {name} rows for {device}: found {count} to fit on (of the training share "
                             f"--train-fraction {train_fraction:g} of the sources), allowed: at least {parameters}, "
                             f"the {name} fit's parameters")


# The most a fit may miss the rows it was fitted on (median |predicted / measured - 1|). The shipped fits miss their
# held-out rows by at most 20% in the median (README, Accuracy); a fit that misses its own rows by half has met a
# bound of its parameters (every fraction at its floor, every latency at its cap): times in milliseconds or
# microseconds written as seconds, or rows of another chip than the preset's peaks.
MAX_TRAINING_ERROR = 0.5


def check_training_error(model: GPUModel, rows: list[MeasuredKernel], train: list[str], tables: str) -> None:
    """Refuse a calibration whose fits cannot follow the rows they were fitted on (MAX_TRAINING_ERROR), before it is
    written: priced with it, every design point would inherit the slip."""
    train = set(train)
    fitted = [r for r in rows if r.device == model.name and not r.is_step and r.source in train]
    names = np.array([fit_group(r) or "" for r in fitted], dtype=object)
    kept = names != ""
    predicted = predict(model, [r for r, k in zip(fitted, kept, strict=True) if k])
    measured = np.array([r.time_s for r, k in zip(fitted, kept, strict=True) if k])
    names = names[kept]
    for name in sorted(set(names.tolist())):
        summary = error_summary(predicted[names == name], measured[names == name])
        if summary["median_abs_err"] > MAX_TRAINING_ERROR:
            bias = summary["median_bias"]
            raise InputError(f"{tables}: {name} rows for {model.name}: its fit misses the {summary['n']} rows it was "
                             f"fitted on by a median {summary['median_abs_err']:.0%} (predicted "
                             f"{abs(bias):.0%} {'faster' if bias < 0 else 'slower'} than measured), allowed: at most "
                             f"{MAX_TRAINING_ERROR:.0%}: is time_s in seconds (not milliseconds or microseconds), and "
                             f"are the rows timed on a chip with {model.name}'s peaks? Nothing was written")


def _score(rows: list[MeasuredKernel], include_train: bool, where: str,
           origin: dict[int, str] | None = None) -> tuple[dict, dict, list[str], dict]:
    """Errors by device and kernel class, the (predicted, measured, group) arrays, notes on what was scored, and
    the scored rows of each device (in the arrays' order). `origin`: the table each whole-step row came from, by
    id(row), where several were given: their runs are grouped per table (each a published source of its own)."""
    summary: dict[str, dict] = {}
    pairs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    scored_rows: dict[str, list[MeasuredKernel]] = {}
    notes = []
    by_device: dict[str, list[MeasuredKernel]] = defaultdict(list)
    for row in rows:
        by_device[row.device].append(row)
    for name, device_rows in sorted(by_device.items()):
        try:
            device = load_device(name)
        except InputError as err:
            raise InputError(f"{where}: device column: {err}") from None
        cal = device.calibration
        train = set((cal.provenance or {}).get("train_sources", [])) if cal else set()
        if cal is None:
            notes.append(f"{name}: no fitted calibration; scoring the preset's own rates (a roofline)")
        elif include_train:
            notes.append(f"{name}: scoring on training data too (--include-train): errors are optimistic")
        scored = [r for r in device_rows if r.is_step or include_train or r.source not in train]
        if not scored:
            notes.append(f"{name}: every row was used for fitting; nothing held out to score")
            continue
        steps = np.array([r.is_step for r in scored])
        predicted = np.empty(len(scored))
        predicted[~steps] = predict(device, [r for r in scored if not r.is_step])
        if steps.any():
            from explore.evaluate import Evaluator

            step_rows, evaluator = [r for r in scored if r.is_step], Evaluator()  # one tracer for both uses
            predicted[steps] = predict_steps(name, step_rows, where, evaluator)
            notes.append(f"{name}: decode_step, prefill_step and batch_run rows are compared with the simulated step "
                         f"or run, launched as each was timed (eagerly, replayed from CUDA graphs, or as a serving "
                         f"engine)")
            host = host_dispatch_note(device, step_rows, predicted[steps], evaluator)
            if host:
                notes.append(f"{name}: {host}")
        measured = np.array([r.time_s for r in scored])
        kinds = np.array([f"{row_group(r)} ({origin[id(r)]})" if origin and r.is_step else row_group(r)
                          for r in scored])
        summary[name] = {k: error_summary(predicted[kinds == k], measured[kinds == k]) for k in sorted(set(kinds))}
        pairs[name] = (predicted, measured, kinds)
        scored_rows[name] = scored
    return summary, pairs, notes, scored_rows


def row_group(row: MeasuredKernel) -> str:
    """The group a row's error is reported in: its kernel, with the dtype fit of a GEMM or MoE layer below 16 bits
    and the KV dtype of attention over a quantized cache ('gemm fp8', 'moe fp8/block128', 'moe bf16/w4int',
    'attention_decode kv fp8'), decode steps replayed from CUDA graphs apart from eager ones and quantized
    steps apart ('decode_step graph', 'decode_step w4a16 graph'), whole runs by format, devices and how they ran
    ('batch_run w4a8 kv int4 engine', 'batch_run tp4 engine', 'batch_run tp8 custom engine': custom all-reduces),
    and pointwise rows off the contiguous loop apart ('elementwise general')."""
    if row.kernel in (*GEMM_KINDS, MOE_KIND) and gemm_key(row):
        return f"{row.kernel} {gemm_key(row)}"
    if row.is_step:  # quantized weights and KV caches apart, and graph-replayed and engine runs apart from eager
        quantized = f" {row.dtype}" if row.run_format is not None else ""
        kv = f" kv {row.kv_dtype}" if row.kv_dtype and row.kv_dtype != row.dtype else ""
        devices = f" tp{row.tp}{' custom' * (row.backend == 'custom')}" if row.tp > 1 else ""
        return f"{row.kernel}{quantized}{kv}{devices}{f' {row.timing}' * (row.timing in ('graph', 'engine'))}"
    if row.kv_dtype and row.kv_dtype != row.dtype:
        return f"{row.kernel} kv {row.kv_dtype}"
    if row.variant == GENERAL_LAYOUT:
        return f"{row.kernel} {GENERAL_LAYOUT}"
    return row.kernel


def _has_fit(cal, row: MeasuredKernel, borrowed: frozenset[str] = frozenset()) -> bool:
    """Whether a fit of the calibration prices the row (rather than the roofline). `borrowed`: the streaming classes
    its preset prices on a sibling's fits, which its elementwise fallback (Calibration.stream) does not stand in for."""
    if row.kernel in GEMM_KINDS:
        key = "" if quantized_gemm(row) else gemm_key(row)  # a quantized GEMM is priced on the 16-bit fit
        return (cal.gemm_dtypes or {}).get(key) is not None if key else cal.gemm is not None
    if row.kernel in ATTENTION_KINDS:
        return cal.attention is not None
    if row.kernel == MOE_KIND:
        key = gemm_key(row)
        return (cal.moe_dtypes or {}).get(key) is not None if key else cal.moe is not None
    kind = stream_class(row)
    return cal.stream(kind) is not None and kind not in borrowed


def _refuse_fitted_rows(rows: list[MeasuredKernel], device_name: str, from_name: str, cal, tables: list[str]) -> None:
    """Refuse a cross-source check on rows the other preset's fits were made on: a table whose bytes it was fitted on
    (its provenance's sha256), or rows of a training source (train_sources) in any file, such as a decompressed or
    filtered copy of that table."""
    never_saw = "a cross-source check scores rows its fit never saw: give a table from another source"
    fitted_on = set(str((cal.provenance or {}).get("sha256", "")).split(", "))
    for table in tables:
        if hashlib.sha256(Path(table).read_bytes()).hexdigest() in fitted_on:
            raise InputError(f"--cross-from: {from_name} was fitted on {table}; {never_saw}")
    train = set((cal.provenance or {}).get("train_sources", []))
    fitted = Counter(r.source for r in rows if r.device == device_name and r.source in train)
    if fitted:
        source, count = fitted.most_common(1)[0]
        others = f", and {len(fitted) - 1} more" if len(fitted) > 1 else ""
        raise InputError(f"--cross-from: {', '.join(tables)}: found {sum(fitted.values())} {device_name} rows of "
                         f"sources {from_name}'s fits were made on ({source!r}: {count} rows{others}); {never_saw}")


def cross_source(rows: list[MeasuredKernel], device_name: str, from_name: str, tables: list[str]) -> tuple[dict, str]:
    """Errors by group of another preset's shipped fits moved onto this device's peaks (the sibling transfer),
    on every kernel row of this device: rows the fit never saw, which the check makes sure of (none of the
    tables may be one the fit was made on). Returns the summary and a note saying what was compared."""
    cal = load_calibration(from_name)
    if cal is None:
        raise InputError(f"--cross-from: {from_name!r} has no shipped calibration; allowed: "
                         f"{', '.join(n for n in preset_names('gpu') if load_calibration(n))}")
    base = load_device(device_name, calibrated=False)
    require_gpu(device_name, base, f"--cross-from moves {from_name}'s GPU fits onto its peaks")
    _refuse_fitted_rows(rows, device_name, from_name, cal, tables)
    transferred = GPUModel(base.spec, base.reference, replace(cal, device=device_name))
    # Only rows a fit of the other preset prices as that preset does: the rest would be scored on the roofline, or
    # (a class it borrows from its sibling, as H200 its RoPE from H100) on a fallback it never prices them by.
    borrowed = frozenset(load_device(from_name).calibration.borrowed)
    scored = [r for r in rows if r.device == device_name and not r.is_step and _has_fit(cal, r, borrowed)]
    if not scored:
        raise InputError(f"{', '.join(tables)}: no {device_name!r} kernel rows of a class {from_name} has a fit for "
                         f"({', '.join(cal.fitted_classes)})")
    predicted, measured = predict(transferred, scored), np.array([r.time_s for r in scored])
    groups = np.array([row_group(r) for r in scored])
    summary = {g: error_summary(predicted[groups == g], measured[groups == g]) for g in sorted(set(groups))}
    note = (f"{device_name}: cross-source: {from_name}'s fits (from {(cal.provenance or {}).get('table', '?')}) "
            f"on {device_name}'s peaks, scored on all {len(scored)} of its kernel rows")
    return summary, note


def predict_steps(device: str, rows: list[MeasuredKernel], where: str, evaluator=None) -> np.ndarray:
    """Simulated time of each whole-step row, as `explore run` prices it (fits in memory or not), launched as the row
    was timed (replayed from CUDA graphs for a 'graph' row, as a serving engine for an 'engine' one, eagerly for the
    others): a decode_step row is the one decode step of a design point whose prompt puts its new tokens at the
    row's kv_len (its TPOT); a prefill_step row the prefill of a point with the row's batch and prompt (its TTFT); a
    batch_run row the whole run of a point with the row's batch, prompt, output, format and tensor parallelism (its
    makespan, e2e_s).
    `evaluator`: an explore.evaluate.Evaluator whose traces to reuse (default: a new one)."""
    from explore.evaluate import Evaluator

    evaluator = evaluator or Evaluator()
    times = []
    progress = ProgressLine()
    for done, row in enumerate(rows, 1):
        point, metric = step_point(device, row, where, evaluator)
        times.append(evaluator.evaluate(point, price_infeasible=True).result.metrics()[metric])
        # Each row is a simulated run of seconds: say how far along they are.
        progress.show(f"{device}: {done}/{len(rows)} whole steps and runs simulated", last=done == len(rows))
    return np.array(times, dtype=float)


STEP_METRICS = {DECODE_STEP: "tpot_s", PREFILL_STEP: "ttft_s", BATCH_RUN: "e2e_s"}
ROW_EXECUTION = {"graph": "graphs", "engine": "engine"}  # how a row was timed -> how its point runs (else eager)
SIXTEEN_BIT = ("bf16", "fp16")  # one tensor-core rate and one width


def step_point(device: str, row: MeasuredKernel, where: str, evaluator):
    """(design point, metric) that prices a whole-step row (predict_steps)."""
    from explore.design_point import DesignPoint
    from kernels.harness import table_dtype
    from kernels.parallel import check_tensor_parallel

    decode = row.kernel == DECODE_STEP
    length = f"kv_len {row.kv_len}" if decode else f"seq_len {row.seq_len}"
    step = f"{where}: {row.kernel} of {row.model} (batch {row.batch}, {length})"
    try:
        config = evaluator.config(row.model)
    except InputError as err:
        raise InputError(f"{step}: model: {str(err).removeprefix('model: ')}") from None
    native = table_dtype(config.dtype)
    execution = ROW_EXECUTION.get(row.timing, "eager")
    if row.kernel == BATCH_RUN:  # any format: the run's weights, activations and KV cache as the row gives them
        fmt = row.run_format  # a 16-bit run in either 16-bit type prices as the model's own
        if fmt is None and row.dtype != native and not (row.dtype in SIXTEEN_BIT and native in SIXTEEN_BIT):
            raise InputError(f"{step}: dtype: found {row.dtype!r}, allowed: the model's own {native!r}"
                             f"{' (or the other 16-bit type)' * (native in SIXTEEN_BIT)}, fp8 or a quantized 'wXaY'")
        try:
            check_tensor_parallel(config, max(row.tp, 1))
        except ValueError as err:
            raise InputError(f"{step}: tp: {err}") from None
        parts = _format_point(fmt, ROW_DTYPE_BITS[row.kv_dtype] if row.kv_dtype else 16)
        if row.backend == "custom":  # its engine's own all-reduce kernels (a knob at its default is left out)
            parts["knobs"] = tuple(sorted((*parts.get("knobs", ()), ("allreduce", row.backend))))
        point = DesignPoint(model=row.model, device=device, batch=row.batch, prompt=row.seq_len,
                            output=row.kv_len - row.seq_len, execution=execution, tp=max(row.tp, 1), **parts)
        return point, STEP_METRICS[row.kernel]
    fmt = row.numeric_format
    weight_only = fmt is not None and fmt.weight_only and native in SIXTEEN_BIT
    if native != row.dtype and not weight_only:
        raise InputError(f"{step}: dtype: found {row.dtype!r}, allowed: the model's own {native!r} (a step is "
                         f"traced at its config's dtype) or, for a 16-bit model, a weight-only 'wXa16' (its "
                         f"linears at X bits)")
    bits = {"weight_bits": fmt.weight_bits} if weight_only else {}
    if decode and row.kv_len < 2:
        raise InputError(f"{step}: kv_len: found {row.kv_len}, allowed: at least 2 (a cached token and the new one)")
    # A decode step is the second of two generated tokens after a prompt of kv_len - 1; a prefill is a run of one.
    prompt, output = (row.kv_len - 1, 2) if decode else (row.seq_len, 1)
    return DesignPoint(model=row.model, device=device, batch=row.batch, prompt=prompt, output=output,
                       execution=execution, **bits), STEP_METRICS[row.kernel]


def _format_point(fmt, kv_bits: int) -> dict:
    """A design point's format fields for a row's weights (None: 16-bit) and KV bits: the widths, and each format
    knob where the row's format differs from the default."""
    from explore.knobs import knobs
    from kernels.formats import NumericFormat

    if fmt is None:
        return {"kv_bits": kv_bits}
    default = NumericFormat(weight_bits=fmt.weight_bits, act_bits=fmt.act_bits)
    set_knobs = tuple(sorted((k.name, getattr(fmt, k.name)) for k in knobs() if k.applies == "format"
                             and hasattr(fmt, k.name) and getattr(fmt, k.name) != getattr(default, k.name)))
    return {"weight_bits": fmt.weight_bits, "act_bits": fmt.act_bits, "kv_bits": kv_bits, "knobs": set_knobs}


def host_dispatch_note(device, rows: list[MeasuredKernel], predicted_s: np.ndarray, evaluator) -> str:
    """What the eagerly launched steps among `rows` say of the host that ran them: where the model prices a step at
    its host's dispatch (every kernel's framework time, more than the device's), the measured time over the kernels
    the step launches is that host's dispatch per kernel ('' where no eager step is host-bound in the model).
    `evaluator`: the explore.evaluate.Evaluator that priced the steps (its traces give their kernels)."""
    from hw_models.device import dispatch_s

    per_kernel_s = dispatch_s(device, "eager")
    if not per_kernel_s:
        return ""
    implied_s = []
    for row, predicted in zip(rows, predicted_s, strict=True):
        if row.timing == "graph" or row.kernel == BATCH_RUN:  # a run's time holds more than its steps' dispatch
            continue
        decode = row.kernel == DECODE_STEP
        kernels = len(evaluator.lowered(row.model, "decode" if decode else "prefill", row.batch,
                                        row.kv_len - 1 if decode else row.seq_len))
        if abs(predicted - kernels * per_kernel_s) <= 1e-9 * predicted:  # the host's time, not the device's
            implied_s.append(row.time_s / kernels)
    if not implied_s:
        return ""
    us = np.array(implied_s) * 1e6
    return (f"{len(us)} eager steps are host-bound as priced; their measured times over the kernels each launches put "
            f"this host at a median {np.median(us):.1f} us per kernel ({us.min():.1f}-{us.max():.1f}), against "
            f"{per_kernel_s * 1e6:.1f} us priced (overhead.framework_dispatch_us: a device file or a sweep's "
            f"overrides set a host's own)")


# The summary row of a profile that holds every kernel.
PROFILE_TOTAL = "all kernels"


# How far a profiled GPU's memory may lie from its preset's: drivers report GiB-rounded totals less reserved memory
# (an H200's 141 GB reads 150.1e9 B, an H100 SXM's 80 GB 85.0e9 B), while 80 and 141 GB boards differ by far more.
PROFILED_MEMORY_TOLERANCE = 0.10


def _is_profiled_gpu(gpu, spec) -> bool:
    """Whether a GPU preset's spec is the GPU a profile was recorded on: its SM count, and its memory within
    PROFILED_MEMORY_TOLERANCE."""
    return (getattr(spec, "kind", "") == "gpu" and spec.compute.sm_count == gpu.sm_count
            and abs(gpu.memory_bytes / spec.memory_bytes - 1) <= PROFILED_MEMORY_TOLERANCE)


def _refuse_another_gpu(path: str, device_name: str) -> None:
    """Refuse comparing a GPU profile with a preset of another GPU (another SM count or memory size)."""
    from workloads.profiler_import import profiled_gpu

    gpu, spec = profiled_gpu(path), load_device(device_name).spec
    if gpu is None or _is_profiled_gpu(gpu, spec):
        return
    own = [n for n in preset_names("gpu") if _is_profiled_gpu(gpu, load_device(n).spec)]
    has = (f"{spec.compute.sm_count} SMs and {spec.memory_bytes / 1e9:.1f} GB" if getattr(spec, "kind", "") == "gpu"
           else f"kind {getattr(spec, 'kind', '?')}")
    raise InputError(f"{path}: --device: found {device_name!r} ({has}) for a profile recorded on {gpu.name} "
                     f"({gpu.sm_count} SMs, {gpu.memory_bytes / 1e9:.1f} GB), allowed: "
                     f"{', '.join(own) if own else 'a device file of that GPU'}")


def _score_profile(path: str, device_name: str) -> tuple[dict, dict, list[str]]:
    """Errors of a profiled run, op by op: each op is lowered as a captured trace's would be and priced, and the
    errors are summarized by kernel kind (gemm, attention_decode, norm_part, rope_part, activation, elementwise,
    ...), as a measured table's rows are by their kernel. Each kind also gets its measured and predicted time summed
    over the run (`measured_s`, `predicted_s`), and a row 'all kernels' sums them all: what the kinds weigh in the
    step, which a median of per-op errors does not say."""
    from kernels.lowering import lower_op
    from kernels.table import KernelTable
    from workloads.profiler_import import profile_to_trace

    _refuse_another_gpu(path, device_name)  # before the profile's ops are read (and torch imported): seconds
    trace = profile_to_trace(path)
    pairs = [(kernel, op.attrs["measured_time_s"]) for op in trace.ops
             if op.attrs.get("measured_time_s") and (kernel := lower_op(op, trace.dtype)) is not None]
    if not pairs:
        raise InputError(f"{path}: no profiled op with a measured time to compare")
    device = load_device(device_name)
    table = KernelTable.from_kernels([k for k, _ in pairs])
    predicted = device.cost_table(table, execution="device").time_s
    measured = np.array([t for _, t in pairs])
    kinds = np.array([k.kind.value for k, _ in pairs])
    groups = {k: kinds == k for k in sorted(set(kinds))} | {PROFILE_TOTAL: np.ones(len(kinds), dtype=bool)}
    summary = {device_name: {k: error_summary(predicted[rows], measured[rows]) | {
        "measured_s": float(measured[rows].sum()), "predicted_s": float(predicted[rows].sum())}
        for k, rows in groups.items()}}
    notes = [f"{device_name}: {len(pairs)} profiled ops from {path}, compared op by op (kernel time only); "
             f"measured and predicted: each kind's time summed over the run"]
    return summary, {device_name: (predicted, measured, kinds)}, notes


def cmd_validate(args) -> int:
    if bool(args.table) == bool(args.profile):
        raise InputError("validate: give measured-kernel TABLEs or --profile TRACE.json (one of them)")
    check_out_folder("--out", args.out, "a folder for the plots (new, or one to write into)")
    if args.profile:
        if not args.device:
            raise InputError("--device: missing; a profile is compared against one device preset")
        for flag, given in (("--cross-from", args.cross_from), ("--include-train", args.include_train)):
            if given:  # they choose which table rows to score and with which fits: a profile has neither
                raise InputError(f"{flag}: found with --profile, allowed: with measured-kernel tables only")
        summary, pairs, notes = _score_profile(args.profile, args.device)
        return _report_validation(args, summary, pairs, notes, {})
    collective = [table for table in args.table if Path(table).suffix == ".csv" and Path(table).is_file()
                  and is_collective_table(table)]
    if collective:
        if len(collective) != len(args.table) or args.device or args.cross_from:
            raise InputError(f"validate: found the collective table{'s' if len(collective) > 1 else ''} "
                             f"{', '.join(collective)} with other tables or --device/--cross-from, allowed: collective "
                             f"tables alone")
        return _validate_collectives(args, collective)
    read = [(table, read_table(table)) for table in args.table]
    rows = [row for _, table_rows in read for row in table_rows]
    tables = ", ".join(args.table)
    # Whole runs of several tables are grouped per table (each table one published source).
    origin = {id(row): Path(table).name.removesuffix(".gz").removesuffix(".csv") for table, table_rows in read
              for row in table_rows} if len(read) > 1 else None
    if args.device:
        # a preset or a device YAML, as a table's device column may name (a file by its path or its name)
        own = own_rows(rows, args.device, load_device(args.device).name)
        if not own:
            raise no_rows_of(tables, args.device, rows)
        rows = own
    if args.cross_from:  # first: a refused check refuses before the in-source scoring's minute
        if not args.device:
            raise InputError("--cross-from: needs --device, the preset whose rows the other preset's fits score")
        cross, note = cross_source(rows, args.device, args.cross_from, list(args.table))
    summary, pairs, notes, scored_rows = _score(rows, args.include_train, tables, origin)
    if args.cross_from:
        for group, errors in cross.items():
            summary.setdefault(args.device, {}).setdefault(group, {})["cross_source"] = errors
        notes.append(note)
    return _report_validation(args, summary, pairs, notes, scored_rows)


def _validate_collectives(args, tables: list[str]) -> int:
    """Published collective timings against the link models (hw_models/collective_tables.py): each device's groups
    (collective, backend, what priced it), with their errors."""
    summary: dict[str, dict] = {}
    pairs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    notes: list[str] = []
    for table in tables:
        scored, table_notes = score_collectives(table)
        notes += table_notes
        for device, groups in scored.items():
            for group, (predicted, measured) in groups.items():
                summary.setdefault(device, {})[group] = error_summary(predicted, measured)
                before = pairs.get(device, (np.array([]), np.array([]), np.array([], dtype=object)))
                pairs[device] = (np.append(before[0], predicted), np.append(before[1], measured),
                                 np.append(before[2], np.full(len(predicted), group, dtype=object)))
    notes.append("nccl groups are scored by the link's NCCL fit, made on another system's measurements "
                 "(cross-source); nvls all_reduce by the fit made on this table (hw_models/nvls.py), its held-out and "
                 "fitted rows apart")
    return _report_validation(args, summary, pairs, notes, {}, scored="rows by group")


def _report_validation(args, summary: dict, pairs: dict, notes: list[str], scored_rows: dict,
                       scored: str = "held-out rows") -> int:
    out = Path(args.out)
    figures = _write_figures(out, pairs, scored)
    table = _write_scored_rows(out, pairs, scored_rows)
    if args.json:
        print_json(summary)
    else:
        print(_text_table(summary))
        for note in notes:
            print(f"note: {note}")
        print(f"figures: {', '.join(str(f) for f in figures)}")
        if table:
            print(f"rows: {table} (each scored row with its group, predicted_s and error)")
    return 0


SCORED_ROWS = "rows.csv.gz"


def _write_scored_rows(out: Path, pairs: dict, scored_rows: dict) -> Path | None:
    """Every scored row as a measured-kernel table, with the group its error is reported in, the predicted time and
    the signed error (predicted / measured - 1) beside it: which rows a group's summary is made of."""
    if not scored_rows:
        return None
    rows, extra = [], {"group": [], "predicted_s": [], "error": []}
    for device, device_rows in scored_rows.items():
        predicted, measured, groups = pairs[device]
        rows += device_rows
        extra["group"] += list(groups)
        extra["predicted_s"] += [f"{t:.6g}" for t in predicted]
        extra["error"] += [f"{e:+.4f}" for e in predicted / measured - 1]
    path = out / SCORED_ROWS
    write_table(path, rows, extra)
    return path


def _text_table(summary: dict) -> str:
    """In-source errors per device and group, and cross-source errors beside them where they were asked for (a
    profile's summed times instead)."""
    cross = any("cross_source" in s for kinds in summary.values() for s in kinds.values())
    sums = any("measured_s" in s for kinds in summary.values() for s in kinds.values())
    width = max([30] + [len(kind) + 2 for kinds in summary.values() for kind in kinds])  # the longest group fits
    device_width = max([16] + [len(device) + 2 for device in summary])  # a device file's path too
    head = f"{'device':<{device_width}}{'kernel':<{width}}"
    head += f"{'n':>8}{'median |err|':>14}{'p90 |err|':>11}{'median bias':>13}"
    head += f"{'cross n':>9}{'cross median':>14}{'cross p90':>11}{'cross bias':>12}" if cross else ""
    lines = [head + (f"{'measured ms':>13}{'predicted ms':>14}" if sums else "")]
    for device, kinds in summary.items():
        for kind, s in kinds.items():
            line = f"{device:<{device_width}}{kind:<{width}}"
            line += (f"{s['n']:>8}{s['median_abs_err']:>14.1%}{s['p90_abs_err']:>11.1%}{s['median_bias']:>+13.1%}"
                     if "n" in s else f"{'-':>8}{'-':>14}{'-':>11}{'-':>13}")
            if c := s.get("cross_source"):
                line += f"{c['n']:>9}{c['median_abs_err']:>14.1%}{c['p90_abs_err']:>11.1%}{c['median_bias']:>+12.1%}"
            if "measured_s" in s:
                line += f"{s['measured_s'] * 1e3:>13.3f}{s['predicted_s'] * 1e3:>14.3f}"
            lines.append(line)
    return "\n".join(lines)


def _write_figures(out: Path, pairs: dict, scored: str = "held-out rows") -> list[Path]:
    from explore.plots import figure_png, validation_figure

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for device, (predicted, measured, kinds) in pairs.items():
        # A device given as a YAML path is named by its file.
        name = Path(device).stem if device.endswith((".yaml", ".yml")) else device
        path = out / f"validate-{name}.png"
        path.write_bytes(figure_png(validation_figure(device, predicted, measured, kinds, scored)))
        paths.append(path)
    return paths


def add_parsers(add) -> None:
    """Register the three commands on the explore command parser (`add` makes a subparser)."""
    vidur = add("import-vidur", "Convert the Vidur profiling data into a measured-kernel table.",
                "explore import-vidur ../shared/data/vidur -o vidur-kernels.csv.gz")
    vidur.add_argument("folder", help="Vidur data folder (gemm_points.csv.gz, profiling/compute/)")
    vidur.add_argument("-o", "--output", required=True, help="table path (.csv or .csv.gz), in an existing folder")

    aic = add("import-aiconfigurator",
              "Convert aiconfigurator's measured H200/L40S/B200 kernels into a measured-kernel table.",
              "explore import-aiconfigurator ../shared/data/aiconfigurator -o aic-kernels.csv.gz")
    aic.add_argument("folder", help="aiconfigurator data folder (<gpu>/gemm/..., <gpu>/attention/..., <gpu>/moe/...)")
    aic.add_argument("-o", "--output", required=True, help="table path (.csv or .csv.gz), in an existing folder")

    cal = add("calibrate", "Fit a GPU preset's efficiency models on measured-kernel tables.",
              "explore calibrate vidur-kernels.csv.gz --device h100-sxm --out my-h100.yaml\n  "
              "explore calibrate my-4090.csv --device rtx-4090.yaml --out rtx-4090-fits.yaml  # a GPU of your own\n  "
              "explore calibrate aic-kernels.csv.gz data/measured/h200-2026-12-04/h200-attention.csv.gz "
              "data/measured/h200-2026-12-04/h200-pointwise-warm.csv.gz --device h200 --out my-h200.yaml  # as "
              "shipped (README, Accuracy)")
    cal.add_argument("table", nargs="+", help="measured-kernel tables (.csv or .csv.gz), read as one")
    cal.add_argument("--device", required=True,
                     help="GPU preset name, or a GPU device file of your own (not on a base: preset; its rows are "
                          "those whose device column is the file or its name:), which then names the fits "
                          "(calibration: PATH)")
    cal.add_argument("--train-fraction", type=float, default=0.5,
                     help="share of the table's sources (models) to fit on; the rest is held out (default 0.5)")
    cal.add_argument("--out", help="calibration file (default: hw_models/calibration/DEVICE.yaml, the shipped one, "
                                   "which this rewrites; needed for a device file)")

    val = add("validate", "Predict every row of a measured-kernel table (kernels, whole steps, whole batch runs) and "
                          "report the error per GPU and kernel.",
              "explore validate vidur-kernels.csv.gz --device h100-sxm --json\n  "
              "explore validate data/published/qserve-throughput.csv")
    val.add_argument("table", nargs="*", help="measured-kernel tables (.csv or .csv.gz), read as one")
    val.add_argument("--profile", metavar="TRACE.json",
                     help="instead of a table: a torch.profiler Chrome trace, compared op by op (needs --device)")
    val.add_argument("--device", help="only this preset's rows (the preset to compare a profile against)")
    val.add_argument("--json", action="store_true", help="print {device: {kernel: {n, median_abs_err, ...}}}")
    val.add_argument("--include-train", action="store_true", help="also score rows the calibration was fitted on")
    val.add_argument("--cross-from", metavar="PRESET",
                     help="also score --device's rows with PRESET's shipped fits on --device's peaks (fits made on "
                          "another source: the sibling transfer), printed beside the in-source error")
    val.add_argument("--out", default="out/validate", help="folder for the scatter and residual plots")
