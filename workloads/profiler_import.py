"""Import a torch.profiler Chrome/Kineto trace: measured kernel durations attributed to the aten ops that ran them.

A trace written by `torch.profiler.profile(...).export_chrome_trace(path)` holds CPU-side op events
(cat "cpu_op", with "Input Dims" and "Input type" when profiled with record_shapes=True) and, on a GPU,
device events (cat "kernel", "gpu_memcpy", "gpu_memset") whose "External id" names the innermost op that
launched them (or whose "correlation" names the runtime launch call, which carries that id).

On a CPU-only trace there are no device events; the "kernels" are then the ops that do work themselves
(not views, allocations or composite wrappers such as aten::linear), each timed by its self time: its
duration less its child ops' durations, so that the times do not overlap.

Kernels launched inside a fused attention op (flash, memory-efficient, math fallback) are attributed to
that op, whose inputs are the [batch, heads, seq, head_dim] query, key and value.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from workloads import op_costs
from workloads.errors import InputError, found_json
from workloads.trace import Op, TensorMeta, Trace, layer_index

DEVICE_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})
RUNTIME_CATEGORIES = frozenset({"cuda_runtime", "cuda_driver", "runtime"})

# The profiler's "Input type" strings (C++ type names) -> trace dtype names.
PROFILER_DTYPES = {
    "float": "float32", "double": "float64", "c10::Half": "float16", "c10::BFloat16": "bfloat16",
    "c10::Float8_e4m3fn": "float8_e4m3fn", "c10::Float8_e5m2": "float8_e5m2", "long int": "int64",
    "int": "int32", "short int": "int16", "signed char": "int8", "unsigned char": "uint8", "bool": "bool",
}

# Ops that launch no kernel and do no work on the CPU: views, allocations and dispatch wrappers whose work,
# if any, is a child op.
NO_WORK_OPS = op_costs.VIEW_OPS | frozenset({
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "resize_", "result_type",
    "resolve_conj", "resolve_neg", "to", "contiguous", "lift_fresh", "detach", "alias", "set_", "size",
    "stride", "dim", "numel", "is_same_size", "_has_compatible_shallow_copy_type",
})

GEMM_FLOP_OPS = frozenset({"mm", "addmm", "bmm", "baddbmm"})
# Name prefix of the profiler ranges that say which module ran the ops inside them (kernels.harness opens one around
# every submodule's forward): "module: layers.0.self_attn.q_proj".
MODULE_ANNOTATION = "module: "
ANNOTATION_CATEGORIES = frozenset({"user_annotation"})

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ProfiledKernel:
    """One measured kernel and the aten op it is attributed to (tensor inputs only, in argument order)."""

    op: str  # profiler name of the aten op, e.g. "aten::mm"
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtypes: tuple[str, ...]  # trace dtype names ("bfloat16"); "unknown" for members of a tensor list
    time_s: float
    # Whether each input is dense in row-major order, from 'Input Strides' (True where the trace records none)
    input_contiguous: tuple[bool, ...] = ()
    # A reduction's output shape, from its dims and keepdim arguments ('Concrete Inputs'); None for other ops
    reduced_shape: tuple[int, ...] | None = None
    kernel: str  # device kernel name; the op name on a CPU-only trace
    op_id: int | None  # the op call's External id (kernels of one call share it); None: no op found
    start_s: float  # kernel start, seconds from the trace's first kernel
    is_causal: bool | None = None  # attention ops: the is_causal argument, where the trace records it
    module: str = ""  # the innermost module that ran the op, where the trace names modules (MODULE_ANNOTATION)


@dataclass
class _CpuOp:
    name: str
    ts: float
    dur: float
    args: dict
    parent: int | None = None
    module: str = ""


@dataclass(frozen=True, kw_only=True)
class ProfiledGPU:
    """The GPU a trace was recorded on, as its deviceProperties give it (the first device)."""

    name: str
    sm_count: int
    memory_bytes: int


def profiled_gpu(path: str | Path) -> ProfiledGPU | None:
    """The GPU of a torch.profiler Chrome trace (.json or .json.gz), or None for a trace without deviceProperties
    (a CPU-only profile)."""
    path = Path(path)
    devices = _read_trace(path).get("deviceProperties")
    first = devices[0] if isinstance(devices, list) and devices and isinstance(devices[0], dict) else {}
    name, sms, memory = first.get("name"), first.get("numSms"), first.get("totalGlobalMem")
    if not (isinstance(name, str) and isinstance(sms, int) and isinstance(memory, int)):
        return None
    return ProfiledGPU(name=name, sm_count=sms, memory_bytes=memory)


def _read_events(path: Path) -> list:
    """traceEvents of a Chrome trace (.json or .json.gz), or InputError naming what is wrong."""
    return _read_trace(path)["traceEvents"]


def _read_trace(path: Path) -> dict:
    """A Chrome trace (.json or .json.gz) as an object with a traceEvents list, or InputError naming what is wrong."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        data = json.loads(raw)
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        # The system's reason alone ('No such file or directory'): its text would name the path a second time.
        why = err.strerror if isinstance(err, OSError) and err.strerror else " ".join(str(err).split())
        raise InputError(f"{path}: cannot read profiler trace: {why}") from None
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise InputError(f"{path}: traceEvents: missing; a torch.profiler Chrome trace (export_chrome_trace) "
                         f"is an object with a traceEvents list")
    return data


def _number(event: dict, key: str, where: str) -> float:
    value = event.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: {key}: found {found_json(value)}, allowed: a number of microseconds")
    return float(value)


def _category(event: dict) -> str:
    return str(event.get("cat", "")).lower()


def _split(events: list, path: Path) -> tuple[list[_CpuOp], list[dict], dict[int, int]]:
    """cpu ops (nested by thread), device events and runtime correlation -> External id."""
    by_thread: dict[tuple, list[_CpuOp]] = {}
    modules: dict[tuple, list[_CpuOp]] = {}
    device, runtime_ids = [], {}
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise InputError(f"{path}: traceEvents[{i}]: found {type(event).__name__}, allowed: an event object")
        if event.get("ph") != "X":
            continue
        cat, where = _category(event), f"{path}: traceEvents[{i}] ({event.get('name')!r})"
        args = event.get("args") if isinstance(event.get("args"), dict) else {}
        name = str(event.get("name", ""))
        if cat == "cpu_op":
            op = _CpuOp(name, _number(event, "ts", where), _number(event, "dur", where), args)
            by_thread.setdefault((event.get("pid"), event.get("tid")), []).append(op)
        elif cat in ANNOTATION_CATEGORIES and name.startswith(MODULE_ANNOTATION):
            span = _CpuOp(name, _number(event, "ts", where), _number(event, "dur", where), args)
            modules.setdefault((event.get("pid"), event.get("tid")), []).append(span)
        elif cat in DEVICE_CATEGORIES:
            for key in ("ts", "dur"):
                _number(event, key, where)
            device.append(event)
        elif cat in RUNTIME_CATEGORIES and "correlation" in args:
            runtime_ids[args["correlation"]] = args.get("External id")
    ops: list[_CpuOp] = []
    for thread, thread_ops in by_thread.items():
        _name_modules(thread_ops, modules.get(thread, []))
        ops.extend(_nest(thread_ops, offset=len(ops)))
    return ops, device, runtime_ids


def _name_modules(ops: list[_CpuOp], spans: list[_CpuOp]) -> None:
    """Set each op's module: the innermost module range (MODULE_ANNOTATION) of its thread that holds its start."""
    spans = sorted(spans, key=lambda s: (s.ts, -s.dur))
    open_spans: list[_CpuOp] = []
    at = 0
    for op in sorted(ops, key=lambda o: o.ts):
        while at < len(spans) and spans[at].ts <= op.ts:
            open_spans.append(spans[at])
            at += 1
        open_spans = [s for s in open_spans if op.ts < s.ts + s.dur]
        if open_spans:
            op.module = open_spans[-1].name.removeprefix(MODULE_ANNOTATION)


def _nest(ops: list[_CpuOp], offset: int) -> list[_CpuOp]:
    """Sort one thread's ops by start and set each op's parent (index into the combined list)."""
    ops = sorted(ops, key=lambda o: (o.ts, -o.dur))
    stack: list[int] = []
    for i, op in enumerate(ops):
        while stack and op.ts >= ops[stack[-1]].ts + ops[stack[-1]].dur:
            stack.pop()
        op.parent = stack[-1] + offset if stack else None
        stack.append(i)
    return ops


def _short(name: str) -> str:
    return name.split("::", 1)[-1]


def _attention_ancestor(ops: list[_CpuOp], index: int) -> int:
    """The nearest enclosing fused attention op, or the op itself."""
    i: int | None = index
    while i is not None:
        if _short(ops[i].name) in op_costs.ATTENTION_OPS:
            return i
        i = ops[i].parent
    return index


@functools.cache
def _is_composite(short: str) -> bool:
    """Whether an aten op only dispatches to other ops (CompositeImplicitAutograd for all its non-out overloads)."""
    import torch

    packet = getattr(torch.ops.aten, short, None)
    if packet is None:
        return False
    names = [o for o in packet.overloads() if not o.endswith("out")]
    try:
        return bool(names) and all(torch._C._dispatch_has_kernel_for_dispatch_key(
            f"aten::{short}" + ("" if o == "default" else f".{o}"), "CompositeImplicitAutograd") for o in names)
    except RuntimeError:
        return False


def _cpu_kernels(ops: list[_CpuOp]) -> list[tuple[int, float]]:
    """(op index, self time in us) of the ops that do work: not views, allocations or composite wrappers.

    An op's self time is its duration less its child ops' durations, so the times do not overlap.
    """
    in_children = [0.0] * len(ops)
    for op in ops:
        if op.parent is not None:
            in_children[op.parent] += op.dur
    kernels = []
    for i, op in enumerate(ops):
        short = _short(op.name)
        if short in NO_WORK_OPS or (op.name.startswith("aten::") and _is_composite(short)):
            continue
        if op.dur - in_children[i] > 0:
            kernels.append((i, op.dur - in_children[i]))
    return kernels


def _tensor_inputs(args: dict) -> tuple[tuple[tuple[int, ...], ...], tuple[str, ...], tuple[bool, ...]]:
    """Shapes, dtypes and contiguity of an op's tensor arguments from 'Input Dims', 'Input type' and 'Input
    Strides' (contiguous where the trace records no strides)."""
    shapes, dtypes, contiguous = [], [], []
    strides = args.get("Input Strides", [])
    for i, (dims, kind) in enumerate(zip(args.get("Input Dims", []), args.get("Input type", []), strict=False)):
        if not isinstance(dims, list):
            continue
        stride = strides[i] if i < len(strides) else None
        if kind == "TensorList":
            members = [d for d in dims if isinstance(d, list) and all(isinstance(x, int) for x in d)]
            shapes.extend(tuple(d) for d in members)
            dtypes.extend("unknown" for _ in members)
            member_strides = stride if isinstance(stride, list) and len(stride) == len(members) else [None] * len(
                members)
            contiguous.extend(_dense(d, st) for d, st in zip(members, member_strides, strict=True))
        elif kind in PROFILER_DTYPES and all(isinstance(x, int) for x in dims):
            shapes.append(tuple(dims))
            dtypes.append(PROFILER_DTYPES[kind])
            contiguous.append(_dense(dims, stride))
    return tuple(shapes), tuple(dtypes), tuple(contiguous)


def _dense(shape: list[int], strides) -> bool:
    """Whether strides lay a tensor of this shape out densely in row-major order, as torch's is_contiguous says
    (size-1 dims carry any stride); True where the trace records no strides of the shape's length."""
    if not isinstance(strides, list) or len(strides) != len(shape):
        return True
    expected = 1
    for size, stride in zip(reversed(shape), reversed(strides), strict=True):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def _reduced_shape(op: _CpuOp, shapes: tuple[tuple[int, ...], ...]) -> tuple[int, ...] | None:
    """The output shape of a reduction over dims (mean(x, [-1], keepdim=True)): its first input's shape with the
    reduced dims of size 1 (keepdim) or dropped; None for other ops, or where the trace records no dims."""
    concrete = op.args.get("Concrete Inputs", [])
    if _short(op.name) not in op_costs.REDUCTION_OPS or not shapes or len(concrete) < 2:
        return None
    try:
        dims = [int(d) for d in str(concrete[1]).strip("[]").split(",") if d.strip()]
    except ValueError:
        return None
    shape = shapes[0]
    reduced = {d % len(shape) for d in dims} if dims and shape else set(range(len(shape)))
    keep = len(concrete) > 2 and str(concrete[2]) in ("True", "1")
    return tuple(1 if i in reduced else n for i, n in enumerate(shape) if keep or i not in reduced)


def _is_causal(op: _CpuOp) -> bool | None:
    """The is_causal argument of an attention op, from 'Concrete Inputs' and the op's schema."""
    if _short(op.name) not in op_costs.ATTENTION_OPS or "Concrete Inputs" not in op.args:
        return None
    import torch

    try:
        names = [a.name for a in torch._C._get_schema(op.name, "").arguments]
    except RuntimeError:
        return None
    concrete = op.args["Concrete Inputs"]
    if "is_causal" not in names or names.index("is_causal") >= len(concrete):
        return None
    value = concrete[names.index("is_causal")]
    return {"True": True, "False": False, "1": True, "0": False}.get(str(value))


def _record(op: _CpuOp, *, time_s: float, kernel: str, op_id: int, start_s: float) -> ProfiledKernel:
    shapes, dtypes, contiguous = _tensor_inputs(op.args)
    return ProfiledKernel(op=op.name, input_shapes=shapes, input_dtypes=dtypes, input_contiguous=contiguous,
                          reduced_shape=_reduced_shape(op, shapes), time_s=time_s, kernel=kernel, op_id=op_id,
                          start_s=start_s, is_causal=_is_causal(op), module=op.module)


def _device_records(ops: list[_CpuOp], device: list[dict], runtime_ids: dict[int, int]) -> list[ProfiledKernel]:
    by_id = {op.args["External id"]: i for i, op in enumerate(ops) if "External id" in op.args}
    t0 = min(float(e["ts"]) for e in device)
    records = []
    for event in sorted(device, key=lambda e: float(e["ts"])):
        args = event.get("args") if isinstance(event.get("args"), dict) else {}
        ext = args.get("External id")
        if ext not in by_id:
            ext = runtime_ids.get(args.get("correlation"))
        if ext in by_id:
            i = _attention_ancestor(ops, by_id[ext])
            records.append(_record(ops[i], time_s=float(event["dur"]) * 1e-6, kernel=str(event.get("name", "")),
                                   op_id=int(ops[i].args.get("External id", ext)),
                                   start_s=(float(event["ts"]) - t0) * 1e-6))
        else:
            records.append(ProfiledKernel(op="unknown", input_shapes=(), input_dtypes=(),
                                          time_s=float(event["dur"]) * 1e-6, kernel=str(event.get("name", "")),
                                          op_id=None, start_s=(float(event["ts"]) - t0) * 1e-6))
    return [r for r in records if r.time_s > 0]


def _cpu_records(ops: list[_CpuOp]) -> list[ProfiledKernel]:
    kernels = sorted(_cpu_kernels(ops), key=lambda k: ops[k[0]].ts)
    if not kernels:
        return []
    t0 = ops[kernels[0][0]].ts
    records = []
    for i, self_us in kernels:
        owner = _attention_ancestor(ops, i)
        # Ops without an External id (older traces) get a negative id, which profiler ids never are.
        records.append(_record(ops[owner], time_s=self_us * 1e-6, kernel=ops[i].name,
                               op_id=int(ops[owner].args.get("External id", -1 - owner)),
                               start_s=(ops[i].ts - t0) * 1e-6))
    return records


def import_profile(path: str | Path) -> list[ProfiledKernel]:
    """Measured kernels of a torch.profiler Chrome trace, in start order, with the aten ops that ran them.

    GPU traces give one record per device kernel; CPU-only traces one per working cpu op (its self time).
    """
    path = Path(path)
    ops, device, runtime_ids = _split(_read_events(path), path)
    if device:
        return _device_records(ops, device, runtime_ids)
    if ops and not any("Input Dims" in op.args for op in ops):
        log.warning("%s: no Input Dims on any cpu_op (profiled without record_shapes=True): shapes unknown", path)
    return _cpu_records(ops)


def _gemm_output(short: str, shapes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    a, b = shapes[-2], shapes[-1]  # addmm and baddbmm take the bias / input first
    if short in ("mm", "addmm") and len(a) == 2 and len(b) == 2:
        return (a[0], b[1])
    if short in ("bmm", "baddbmm") and len(a) == 3 and len(b) == 3:
        return (a[0], a[1], b[2])
    return None


def _broadcast(shapes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The broadcast shape of pointwise inputs, or None where they do not broadcast."""
    ndim = max(len(s) for s in shapes)
    out = []
    for axis in range(ndim):
        sizes = {s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0} - {1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _gather_output(short: str, shapes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """Output shape of a lookup into a table (the first input) by an index (the second): embedding's index shape
    by the table's row, gather's index shape, index_select's index length by the table's row (a profile records
    no dim argument among the shapes; the selection along the table's first dim is the embedding lookup)."""
    table, index = shapes[0], shapes[1]
    if short == "embedding":
        return index + table[1:]
    if short == "gather":
        return index
    if short == "index_select":
        return (math.prod(index),) + table[1:]
    return None


def _output_shape(short: str, shapes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """Output shape: exact for GEMMs, attention and table lookups, the broadcast (or largest) input for the rest."""
    if not shapes:
        return None
    if short in GEMM_FLOP_OPS and len(shapes) >= 2:
        return _gemm_output(short, shapes)
    if short in op_costs.ATTENTION_OPS and len(shapes) >= 3:
        return shapes[0][:-1] + shapes[2][-1:]
    if short in op_costs.GATHER_OPS and len(shapes) >= 2 and (out := _gather_output(short, shapes)) is not None:
        return out
    return _broadcast(shapes) or max(shapes, key=math.prod)


def _flops(short: str, ins: list[TensorMeta], out: TensorMeta | None) -> float:
    shapes = [t.shape for t in ins]
    if short in GEMM_FLOP_OPS and out is not None:
        return 2.0 * math.prod(out.shape) * shapes[-2][-1]
    if short in op_costs.ATTENTION_OPS and len(shapes) >= 3 and len(shapes[0]) == 4:
        q, k, v = shapes[:3]
        return op_costs.attention_flops(q[0], q[1], q[2], k[2], q[3], v[3])
    return op_costs.generic_flops(short, [t.numel for t in ins], [out.numel] if out else [])


def _op(group: list[ProfiledKernel], default_dtype: str) -> Op:
    first = group[0]
    short = _short(first.op)
    known = [d for d in first.input_dtypes if d != "unknown"]
    dense = first.input_contiguous or (True,) * len(first.input_shapes)
    ins = [TensorMeta(shape=s, dtype=d if d != "unknown" else (known[0] if known else default_dtype), contiguous=c)
           for s, d, c in zip(first.input_shapes, first.input_dtypes, dense, strict=True)]
    in_place = short.endswith("_") and bool(ins)
    out_shape = None if in_place else first.reduced_shape or _output_shape(short, [t.shape for t in ins])
    out = TensorMeta(shape=out_shape, dtype=ins[0].dtype if ins else default_dtype) if out_shape else None
    if short in op_costs.GATHER_OPS and out is not None and out.shape != ins[0].shape:
        # Only the gathered rows of the table are read, plus the index (and no out= argument).
        read = out.nbytes + ins[1].nbytes
    elif short in op_costs.FACTORY_OPS:
        read = 0
    else:
        read = sum(t.nbytes for t in (ins[1:] if short == "copy_" else ins))
    written = ins[0].nbytes if in_place else (out.nbytes if out else 0)
    attrs: dict = {"measured_time_s": sum(r.time_s for r in group), "profiler_op": first.op,
                   "kernels": [r.kernel for r in group]}
    if short in op_costs.ATTENTION_OPS and len(ins) >= 2:
        q_len, kv_len = ins[0].shape[-2], ins[1].shape[-2]
        attrs["is_causal"] = first.is_causal if first.is_causal is not None else (q_len == kv_len and q_len > 1)
    return Op(name=f"aten.{short}", inputs=tuple(ins), outputs=(out,) if out else (),
              flops=_flops(short, ins, out), bytes_read={"activation": read}, bytes_written={"activation": written},
              layer=layer_index(first.module), module=first.module, attrs=attrs)


def _trace_dtype(records: list[ProfiledKernel]) -> str:
    floats = Counter(d for r in records for d in r.input_dtypes if d.startswith(("float", "bfloat")))
    return floats.most_common(1)[0][0] if floats else "float32"


def profile_to_trace(profile: str | Path | list[ProfiledKernel], *, model: str = "profile", phase: str = "decode",
                     batch: int = 1, seq_len: int = 1, context_len: int = 0) -> Trace:
    """A Trace with one op per profiled aten op call, its measured time in attrs["measured_time_s"].

    The op's kernels' durations are summed. Shapes and FLOPs come from the recorded inputs; bytes are exact
    for GEMMs and attention and estimated (broadcast of the inputs) for other ops; roles are unknown, so all
    traffic counts as activation. Kernels not attributed to any op are left out (logged).
    """
    records = import_profile(profile) if isinstance(profile, (str, Path)) else list(profile)
    unknown = [r for r in records if r.op_id is None]
    if unknown:
        log.warning("%d kernels (%.3e s) not attributed to any aten op: left out of the trace", len(unknown),
                    sum(r.time_s for r in unknown))
    groups: dict[int, list[ProfiledKernel]] = {}
    for r in records:
        if r.op_id is not None:
            groups.setdefault(r.op_id, []).append(r)
    dtype = _trace_dtype(records)
    ops = tuple(_op(group, dtype) for group in groups.values())
    return Trace(model=model, phase=phase, batch=batch, seq_len=seq_len, context_len=context_len, ops=ops,
                 param_count=0, param_bytes=0, peak_activation_bytes=0, dtype=dtype, capture_mode="profile")
