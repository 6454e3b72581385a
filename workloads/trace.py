"""Trace: the aten ops one forward pass executed, with shapes, FLOPs, bytes, layer and phase."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

from workloads.errors import InputError, found_key

TRACE_FORMAT = "llm-codesign-trace"
TRACE_VERSION = 3

# Tensor roles: what a tensor is to the model, so that numeric formats can scale each kind of traffic.
ROLES = ("weight", "activation", "kv")

DTYPE_BYTES = {
    "float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
}


@dataclass(frozen=True, kw_only=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: str
    role: str = "activation"
    # Dense in row-major order, as torch's is_contiguous says (the strides of size-1 dims do not matter): a
    # transposed view or a slice is not, unless its sizes make it so (one position of a decode step).
    contiguous: bool = True

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES.get(self.dtype, 4)


def layer_index(module_path: str) -> int | None:
    """The decoder layer a module belongs to: the first numeric part of its path ('layers.3.mlp' -> 3)."""
    for part in module_path.split("."):
        if part.isdigit():
            return int(part)
    return None


@dataclass(frozen=True, kw_only=True)
class Op:
    """One dispatched aten op. Views have zero FLOPs and zero bytes."""

    name: str  # "aten.mm.default"
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    flops: float
    bytes_read: dict[str, int]  # by role
    bytes_written: dict[str, int]  # by role
    layer: int | None  # decoder layer index; None outside the layer stack (embedding, final norm, head)
    module: str  # path of the innermost module that ran it, e.g. "layers.3.mlp.up_proj"
    is_view: bool = False
    attrs: dict = field(default_factory=dict)  # op arguments that matter for cost, e.g. {"is_causal": True}

    @property
    def short_name(self) -> str:
        """'mm' for 'aten.mm.default'."""
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 else parts[0]

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_read.values()) + sum(self.bytes_written.values())


def moved_ops(ops: Iterable[Op], old: str, new: str, layer: int | None) -> list[Op]:
    """`ops`, each run by the module at path `old` or one inside it, as the module at path `new` runs them, in decoder
    layer `layer`: new Op objects with dicts of their own, so nothing is shared between the copies."""
    cut = len(old)
    make, assign = object.__new__, object.__setattr__
    out = []
    for op in ops:
        # The fields copied as one dict: Op's frozen __init__ sets them one by one, 3x as long (1.8 us against 0.7).
        fields = op.__dict__.copy()
        fields["layer"], fields["module"] = layer, new + op.module[cut:]
        fields["bytes_read"], fields["bytes_written"] = dict(op.bytes_read), dict(op.bytes_written)
        fields["attrs"] = dict(op.attrs)
        moved = make(Op)
        assign(moved, "__dict__", fields)
        out.append(moved)
    return out


@dataclass(frozen=True, kw_only=True)
class Trace:
    """All ops of one forward pass: a prefill (batch x seq_len new tokens) or one decode step."""

    model: str
    phase: str  # "prefill" or "decode"
    batch: int
    seq_len: int  # new tokens per sequence in this pass (the prompt, or 1 for decode)
    context_len: int  # tokens already in the KV cache before this pass
    ops: tuple[Op, ...]
    param_count: int
    param_bytes: int
    peak_activation_bytes: int  # peak bytes of live activation tensors during the pass
    dtype: str = "bfloat16"
    sliding_window: int | None = None  # attention window of the model, where it has one
    # Each layer's attention window where layers differ (ModelConfig.layer_windows); (): sliding_window for every one.
    layer_windows: tuple[int | None, ...] = ()
    capture_mode: str = "fake"  # "fake" (full size, no memory) or "real" (executed on real tensors)

    def window_of(self, layer: int | None) -> int | None:
        """The attention window of an op of layer `layer` (None outside the layer stack)."""
        if self.layer_windows:
            return None if layer is None else self.layer_windows[layer]
        return self.sliding_window

    @property
    def flops(self) -> float:
        return sum(op.flops for op in self.ops)

    def bytes_by_role(self) -> dict[str, int]:
        """Bytes moved (read + written) per tensor role, summed over ops."""
        totals = dict.fromkeys(ROLES, 0)
        for op in self.ops:
            for part in (op.bytes_read, op.bytes_written):
                for role, n in part.items():
                    totals[role] += n
        return totals

    def to_dict(self) -> dict:
        """The trace as plain data, as dataclasses.asdict gives it, built field by field: asdict's generic recursion
        was most of the time a full-size trace of ~175,000 ops took to store."""
        data = {name.name: getattr(self, name.name) for name in fields(self)}
        data["ops"] = tuple(_op_dict(op) for op in self.ops)
        data["format"] = TRACE_FORMAT
        data["version"] = TRACE_VERSION
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), separators=(",", ":")))

    @classmethod
    def from_dict(cls, data: dict, where: str = "trace") -> Trace:
        if not isinstance(data, dict):
            raise InputError(f"{where}: found {type(data).__name__}, allowed: a trace object")
        if data.get("format") != TRACE_FORMAT:
            raise InputError(f"{where}: format: {found_key(data, 'format', json=True)}, allowed: {TRACE_FORMAT!r}")
        if data.get("version") != TRACE_VERSION:
            raise InputError(f"{where}: version: {found_key(data, 'version', json=True)}, allowed: {TRACE_VERSION}")
        fields = {k: v for k, v in data.items() if k not in ("format", "version", "ops")}
        if isinstance(fields.get("layer_windows"), list):  # JSON's array, the dataclass's tuple
            fields["layer_windows"] = tuple(fields["layer_windows"])
        try:
            tensors: dict[tuple, TensorMeta] = {}
            ops = tuple(_op_from_dict(op, tensors) for op in data["ops"])
            return cls(**fields, ops=ops)
        except (KeyError, TypeError, AttributeError) as err:
            raise InputError(f"{where}: malformed trace ({type(err).__name__}: {err})") from None

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError, RecursionError) as err:  # RecursionError: nested too deeply
            raise InputError(f"{path}: cannot read trace: {err}") from None
        return cls.from_dict(data, where=str(path))


def _tensor_from_dict(d: dict, tensors: dict[tuple, TensorMeta]) -> TensorMeta:
    """The tensor a dict describes, one object for each distinct tensor of a trace (`tensors`, by value): a full-size
    trace's 170,000 tensors are a few hundred distinct ones, and TensorMeta is frozen."""
    shape = tuple(d["shape"])
    if any(n.__class__ is not int for n in shape):  # made apart: a float equal to an int is kept for checks to name
        return TensorMeta(shape=shape, dtype=d["dtype"], role=d["role"], contiguous=d["contiguous"])
    key = (shape, d["dtype"], d["role"], d["contiguous"])
    tensor = tensors.get(key)
    if tensor is None:
        tensor = tensors[key] = TensorMeta(shape=shape, dtype=d["dtype"], role=d["role"], contiguous=d["contiguous"])
    return tensor


def _tensor_dict(t: TensorMeta) -> dict:
    return {"shape": t.shape, "dtype": t.dtype, "role": t.role, "contiguous": t.contiguous}


def _op_dict(op: Op) -> dict:
    return {"name": op.name, "inputs": tuple(_tensor_dict(t) for t in op.inputs),
            "outputs": tuple(_tensor_dict(t) for t in op.outputs), "flops": op.flops,
            "bytes_read": dict(op.bytes_read), "bytes_written": dict(op.bytes_written), "layer": op.layer,
            "module": op.module, "is_view": op.is_view, "attrs": copy.deepcopy(op.attrs) if op.attrs else {}}


def _op_from_dict(d: dict, tensors: dict[tuple, TensorMeta]) -> Op:
    return Op(
        name=d["name"], inputs=tuple(_tensor_from_dict(t, tensors) for t in d["inputs"]),
        outputs=tuple(_tensor_from_dict(t, tensors) for t in d["outputs"]), flops=d["flops"],
        bytes_read=d["bytes_read"], bytes_written=d["bytes_written"], layer=d["layer"],
        module=d["module"], is_view=d["is_view"], attrs=d["attrs"],
    )
