"""Capture a Trace by running a PyTorch module under a __torch_dispatch__ interceptor.

Full-size models run on fake tensors (FakeTensorMode: real shapes and dtypes, no memory, CPU dispatch
so the op sequence equals a real CPU run); small models can run on real CPU tensors.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from workloads import op_costs
from workloads.layer_replication import LayerTrace, layer_plan
from workloads.model_config import ModelConfig
from workloads.real_memory import check_real_memory
from workloads.trace import DTYPE_BYTES, Op, TensorMeta, Trace, layer_index, moved_ops


@functools.cache
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@functools.cache
def _element_bytes(dtype: torch.dtype) -> int:
    return DTYPE_BYTES.get(_dtype_name(dtype), dtype.itemsize)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * _element_bytes(t.dtype)


@dataclass(frozen=True)
class _Schema:
    """What an aten op's schema says about its recording: its names, the arguments it writes, whether it is a view."""

    name: str  # "aten.mm.default"
    short: str  # "mm"
    mutated: tuple[int, ...]
    is_view: bool


@functools.cache
def _schema(func) -> _Schema:
    """An op overload's _Schema, read once (the schema's Python objects cost more than the op's record)."""
    short = func.overloadpacket.__name__
    mutated = tuple(i for i, a in enumerate(func._schema.arguments)
                    if a.alias_info is not None and a.alias_info.is_write)
    aliasing_return = any(r.alias_info is not None for r in func._schema.returns)
    return _Schema(name=str(func), short=short, mutated=mutated,
                   is_view=short in op_costs.VIEW_OPS or (aliasing_return and not mutated))


_layer_of = functools.cache(layer_index)  # a handful of module paths, each looked up for thousands of ops


class ModuleTracker:
    """Keeps the path of the innermost module running, through forward pre- and post-hooks; `on_enter(path)` and
    `on_leave()`, where given, run as each module's forward starts and ends (the root's path is "")."""

    def __init__(self, module: torch.nn.Module, on_enter: Callable[[str], None] | None = None,
                 on_leave: Callable[[], None] | None = None):
        self.stack: list[str] = [""]
        self._on_enter, self._on_leave = on_enter, on_leave
        self._handles = []
        for name, sub in module.named_modules():
            self._handles.append(sub.register_forward_pre_hook(self._enter(name)))
            self._handles.append(sub.register_forward_hook(self._leave))

    def _enter(self, name: str):
        def hook(_module, _args):
            self.stack.append(name)
            if self._on_enter is not None:
                self._on_enter(name)
        return hook

    def _leave(self, _module, _args, _out):
        self.stack.pop()
        if self._on_leave is not None:
            self._on_leave()

    @property
    def current(self) -> str:
        return self.stack[-1]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class _Recorder(TorchDispatchMode):
    """Records every aten op with shapes, roles, FLOPs and bytes, and the lifetime of every activation.

    An activation lives from the op that writes it to the last op that reads it or a view of it (the
    schedule an allocator that frees at last use achieves). Lifetimes come from the op sequence, not from
    when Python frees objects, so the peak is the same in any process (a profiler or garbage collector
    holding a frame a moment longer cannot change it).
    """

    def __init__(self, roles: dict[int, str], module: torch.nn.Module):
        super().__init__()
        self.roles = roles
        self.tracker = ModuleTracker(module, on_enter=self._enter, on_leave=self._leave)
        self._paths = {id(sub): name for name, sub in module.named_modules()}
        self.ops: list[Op] = []
        self._reads: list[list[int]] = []  # the buffers each op reads, by op position
        # Each module's last run (copy_module's source): its first and past-the-end op and buffer, by path.
        self._spans: dict[str, tuple[int, int, int, int]] = {}
        self._running: list[tuple[str, int, int]] = []  # the modules running: path, first op, first buffer
        # Every tensor seen stays referenced while capture runs, so ids in `roles` and `_buffer` stay unique.
        self._alive: list[torch.Tensor] = []
        self._buffer: dict[int, int] = {}  # id of an activation (or a view of one) -> its buffer index
        self._buffer_bytes: list[int] = []
        self._born: list[int] = []  # op position that writes each buffer
        self._last_use: list[int] = []  # last op position that reads it
        self._metas: dict[tuple, TensorMeta] = {}

    def role(self, t: torch.Tensor) -> str:
        return self.roles.get(id(t), "activation")

    def _mark(self, t: torch.Tensor, role: str) -> None:
        self.roles[id(t)] = role
        self._alive.append(t)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.namespace == "aten":
            self._record(func, args, kwargs, out)
        return out

    def _record(self, func, args, kwargs, out) -> None:
        schema = _schema(func)
        short, mutated, is_view = schema.short, schema.mutated, schema.is_view
        ins = _unique_tensors((args, kwargs))
        outs = _unique_tensors(out)
        in_roles = [self.role(t) for t in ins]
        self._reads.append(self.use(ins))
        if is_view:
            role = in_roles[0] if in_roles else "activation"
            if role != "activation":
                for t in outs:
                    self._mark(t, role)
            elif ins and id(ins[0]) in self._buffer:
                for t in outs:  # a view keeps its base buffer alive
                    self._buffer[id(t)] = self._buffer[id(ins[0])]
                    self._alive.append(t)
            read, written = {}, {}
        else:
            read, written = self._bytes(short, args, ins, in_roles, outs, mutated)
            if not mutated:
                self._allocate(outs)
        module = self.tracker.current
        self.ops.append(Op(
            name=schema.name, inputs=tuple(self._meta(t, r) for t, r in zip(ins, in_roles, strict=True)),
            outputs=tuple(self._meta(t, self.role(t)) for t in outs),
            flops=0.0 if is_view else self._flops(func, short, args, kwargs, out, ins, outs),
            bytes_read=read, bytes_written=written, layer=_layer_of(module),
            module=module, is_view=is_view, attrs=_attrs(func, short, args, kwargs),
        ))

    def _meta(self, t: torch.Tensor, role: str) -> TensorMeta:
        """The TensorMeta of `t` in `role`; equal ones are one shared (frozen) object, built once."""
        key = (tuple(t.shape), t.dtype, role, t.is_contiguous())
        meta = self._metas.get(key)
        if meta is None:
            meta = self._metas[key] = TensorMeta(shape=key[0], dtype=_dtype_name(t.dtype), role=role,
                                                 contiguous=key[3])
        return meta

    def _bytes(self, short, args, ins, in_roles, outs, mutated):
        read: dict[str, int] = {}
        written: dict[str, int] = {}

        def add(d, role, n):
            d[role] = d.get(role, 0) + n

        if short in op_costs.FACTORY_OPS:
            pass
        elif short in op_costs.GATHER_OPS and ins:
            # Only the gathered rows of the table are read, plus the indices.
            add(read, in_roles[0], sum(_nbytes(t) for t in outs))
            for t, r in zip(ins[1:], in_roles[1:], strict=True):
                add(read, r, _nbytes(t))
        elif short in op_costs.SCATTER_ADD_OPS and len(ins) >= 3:
            # The rows the source adds into are read and written, plus the source and the index.
            source = ins[-1]
            add(read, in_roles[0], _nbytes(source))
            for t, r in zip(ins[1:], in_roles[1:], strict=True):
                add(read, r, _nbytes(t))
            add(written, self.role(ins[0]), _nbytes(source))
            return read, written
        elif mutated:
            targets = [args[i] for i in mutated if i < len(args) and isinstance(args[i], torch.Tensor)]
            target_ids = {id(t) for t in targets}
            for t, r in zip(ins, in_roles, strict=True):
                # copy_ overwrites its destination without reading it; other in-place ops read it too.
                if id(t) not in target_ids or short != "copy_":
                    add(read, r, _nbytes(t))
            for t in targets:
                add(written, self.role(t), _nbytes(t))
            return read, written
        else:
            for t, r in zip(ins, in_roles, strict=True):
                if not (short in op_costs.ATTENTION_OPS and _inside_another(t, ins)):
                    add(read, r, _nbytes(t))
        for t in outs:
            # The memory-efficient attention op returns its dropout RNG's seed and offset (0-dim), unused without
            # dropout: not written.
            if not (short in op_costs.ATTENTION_OPS and t.dim() == 0):
                add(written, "activation", _nbytes(t))
        return read, written

    def _flops(self, func, short, args, kwargs, out, ins, outs) -> float:
        if short in op_costs.ATTENTION_OPS:
            q, k, v = args[0], args[1], args[2]
            return op_costs.attention_flops(q.shape[0], q.shape[1], q.shape[-2], k.shape[-2], q.shape[-1],
                                            v.shape[-1])
        flops = op_costs.registry_flops(func, args, kwargs, out)
        if flops is not None:
            return flops
        if short in op_costs.SCATTER_ADD_OPS and len(ins) >= 3:
            return float(math.prod(ins[-1].shape))  # one add per source element
        return op_costs.generic_flops(short, [math.prod(t.shape) for t in ins], [math.prod(t.shape) for t in outs])

    def _allocate(self, outs) -> None:
        for t in outs:
            self._buffer[id(t)] = len(self._buffer_bytes)
            self._alive.append(t)
            self._buffer_bytes.append(_nbytes(t))
            self._born.append(len(self.ops))
            self._last_use.append(len(self.ops))

    def use(self, tensors, position: int | None = None) -> list[int]:
        """Tensors read at op `position` (default: the op being recorded) extend their buffers' lifetimes; returns
        those buffers."""
        position = len(self.ops) if position is None else position
        buffers = []
        for t in tensors:
            buffer = self._buffer.get(id(t))
            if buffer is not None:
                self._last_use[buffer] = max(self._last_use[buffer], position)
                buffers.append(buffer)
        return buffers

    def _enter(self, path: str) -> None:
        self._running.append((path, len(self.ops), len(self._buffer_bytes)))

    def _leave(self) -> None:
        path, first_op, first_buffer = self._running.pop()
        self._spans[path] = (first_op, len(self.ops), first_buffer, len(self._buffer_bytes))

    def copy_module(self, source: torch.nn.Module, target: torch.nn.Module) -> None:
        """Record `target` running as `source` last ran, without running it: source's ops under target's path, and
        the activations they write and read, as though target had dispatched them now (copied_ops)."""
        old, new = self._paths[id(source)], self._paths[id(target)]
        first_op, end_op, first_buffer, end_buffer = self._spans[old]
        shift, buffer_shift = len(self.ops) - first_op, len(self._buffer_bytes) - first_buffer
        if any(self._last_use[b] >= end_op for b in range(first_buffer, end_buffer)):
            raise ValueError(f"module {old}: an activation it writes is read after it ran, which a copy of its ops "
                             f"cannot repeat")
        for b in range(first_buffer, end_buffer):  # what source allocated, allocated again at the copies
            self._buffer_bytes.append(self._buffer_bytes[b])
            self._born.append(self._born[b] + shift)
            self._last_use.append(self._last_use[b] + shift)
        for position in range(first_op, end_op):
            reads = [b + buffer_shift if b >= first_buffer else b for b in self._reads[position]]
            for b in reads:  # buffers from before source ran (its input, the rows it adds to) are read again
                self._last_use[b] = max(self._last_use[b], position + shift)
            self._reads.append(reads)
        self._spans[new] = (len(self.ops), len(self.ops) + end_op - first_op, len(self._buffer_bytes) - end_buffer
                            + first_buffer, len(self._buffer_bytes))
        self.ops.extend(moved_ops(self.ops[first_op:end_op], old, new, _layer_of(new)))

    @property
    def peak_bytes(self) -> int:
        """Most activation bytes alive at once during any op."""
        if not self._buffer_bytes:
            return 0
        live = np.zeros(len(self.ops) + 2, dtype=np.int64)
        np.add.at(live, self._born, self._buffer_bytes)
        np.add.at(live, np.array(self._last_use) + 1, -np.array(self._buffer_bytes))
        return int(np.cumsum(live).max())


# The capture running, on fake tensors: what records a module's run as a copy of another's (_Recorder.copy_module).
_COPIER: ContextVar[Callable[[torch.nn.Module, torch.nn.Module], None] | None] = ContextVar("copier", default=None)


def copied_ops(source: torch.nn.Module, target: torch.nn.Module) -> bool:
    """Whether the capture running recorded `target`'s run as a copy of `source`'s last one (source's ops under
    target's module path), without running it: the caller's promise that target would dispatch exactly source's ops,
    and that nothing it computes is read but by its own ops and the buffers it writes in place. False where nothing
    is captured, or the capture is of real tensors (the caller then runs target)."""
    copier = _COPIER.get()
    if copier is None:
        return False
    copier(source, target)
    return True


def _inside_another(t: torch.Tensor, tensors: list[torch.Tensor]) -> bool:
    """Whether `t` is a view of the same buffer as a larger one of `tensors`, which a fused kernel reads once for both
    (MLA's value: the leading columns of the cached latent its key is)."""
    base = t._base if t._base is not None else t
    return any(u is not t and (u._base if u._base is not None else u) is base and u.numel() > t.numel()
               for u in tensors)


def _unique_tensors(tree) -> list[torch.Tensor]:
    """The distinct tensors in nested tuples, lists and dicts (an op's arguments or results), in order: the leaves
    torch.utils._pytree.tree_flatten gives, found without its per-node bookkeeping."""
    found: dict[int, torch.Tensor] = {}
    _collect_tensors(tree, found)
    return list(found.values())


def _collect_tensors(tree, found: dict[int, torch.Tensor]) -> None:
    if isinstance(tree, torch.Tensor):
        found.setdefault(id(tree), tree)
    elif isinstance(tree, list | tuple):
        for x in tree:
            _collect_tensors(x, found)
    elif isinstance(tree, dict):
        for x in tree.values():
            _collect_tensors(x, found)


def _attrs(func, short, args, kwargs) -> dict:
    """Non-tensor arguments that change an op's cost (only attention's causality so far)."""
    if short not in op_costs.ATTENTION_OPS:
        return {}
    names = [a.name for a in func._schema.arguments]
    bound = dict(zip(names, args, strict=False)) | kwargs
    return {"is_causal": bool(bound.get("is_causal", False))}


def capture(module: torch.nn.Module, args: tuple = (), kwargs: dict | None = None, *, model: str, phase: str,
            batch: int, seq_len: int, context_len: int = 0, kv_tensors=(),
            sliding_window: int | None = None, layer_windows: tuple[int | None, ...] = (),
            copy_repeats: bool = True) -> Trace:
    """Run module(*args, **kwargs) once and return the Trace of the aten ops it dispatched.

    Works for any nn.Module: parameters are tagged as weights, `kv_tensors` as KV cache, everything else
    as activations. Call inside FakeTensorMode (with the module built there) for a full-size fake capture; there,
    with `copy_repeats`, a module that asks to repeat another's ops (copied_ops) has them copied, not dispatched.
    """
    from torch._subclasses.fake_tensor import FakeTensor

    params = list(module.parameters())
    capture_mode = "fake" if params and isinstance(params[0], FakeTensor) else "real"
    roles = {id(p): "weight" for p in module.parameters()}
    roles.update({id(t): "kv" for t in kv_tensors})
    recorder = _Recorder(roles, module)
    # Only fake tensors let a module's ops be copied: real ones compute values the copy would not.
    copier = _COPIER.set(recorder.copy_module if capture_mode == "fake" and copy_repeats else None)
    try:
        with torch.no_grad(), recorder:
            result = module(*args, **(kwargs or {}))
        # What the module returns is alive at its end.
        recorder.use(_unique_tensors(result), position=len(recorder.ops))
        del result
    finally:
        _COPIER.reset(copier)
        recorder.tracker.remove()
    dtype = _dtype_name(params[0].dtype) if params else "float32"
    return Trace(
        model=model, phase=phase, batch=batch, seq_len=seq_len, context_len=context_len,
        ops=tuple(recorder.ops), param_count=sum(p.numel() for p in params),
        param_bytes=sum(_nbytes(p) for p in params), peak_activation_bytes=recorder.peak_bytes,
        dtype=dtype, capture_mode=capture_mode, sliding_window=sliding_window, layer_windows=layer_windows,
    )


def check_sampled(sampled: int, seq_len: int) -> None:
    """Refuse logits at positions a pass does not run (ValueError): 1 to seq_len a sequence."""
    if not 1 <= sampled <= seq_len:
        raise ValueError(f"sampled: found {sampled}, allowed: 1 to seq_len ({seq_len})")


def trace_model(config: ModelConfig, *, phase: str, batch: int, seq_len: int, context_len: int = 0,
                sampled: int = 1, fake: bool = True, seed: int = 0, replicate_layers: bool = True,
                copy_experts: bool = True) -> Trace:
    """Build our decoder for `config` and capture one prefill or one decode step.

    prefill: batch sequences of seq_len prompt tokens into an empty cache.
    decode: batch sequences of seq_len (normally 1) new tokens after context_len cached tokens.
    Logits are computed at each sequence's last `sampled` positions (a speculative verification's: all seq_len).
    On fake tensors with `replicate_layers`, only the model's distinct layers are built and run, and their ops
    repeated for the layers like them (trace_layers, workloads/layer_replication.py): the same trace, op for op, in a
    fraction of the time. On fake tensors with `copy_experts`, an MoE layer runs one expert of each row count and
    copies its ops for the others given as many rows (decoder.py MoE). Real tensors run every layer and expert.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    if fake and replicate_layers:
        return trace_layers(config, phase=phase, batch=batch, seq_len=seq_len, context_len=context_len,
                            sampled=sampled, copy_experts=copy_experts).expanded()
    start = _pass_start(phase, seq_len, context_len, sampled)
    if fake:
        with FakeTensorMode():
            return _run(config, config, phase=phase, batch=batch, seq_len=seq_len, start=start, sampled=sampled,
                        copy_experts=copy_experts)[0]
    check_real_memory(config, batch, start + seq_len, seq_len)
    torch.manual_seed(seed)
    return _run(config, config, phase=phase, batch=batch, seq_len=seq_len, start=start, sampled=sampled)[0]


def trace_layers(config: ModelConfig, *, phase: str, batch: int, seq_len: int, context_len: int = 0,
                 sampled: int = 1, copy_experts: bool = True) -> LayerTrace:
    """trace_model's fake trace of `config` (the same arguments) as captured, before its distinct layers' ops are
    repeated for the layers like them: what the trace cache stores; its expanded() is trace_model's trace."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    start = _pass_start(phase, seq_len, context_len, sampled)
    plan = layer_plan(config)
    with FakeTensorMode():
        trace, model = _run(config, plan.config, phase=phase, batch=batch, seq_len=seq_len, start=start,
                            sampled=sampled, copy_experts=copy_experts)
        sizes = tuple(_param_sizes(layer) for layer in model.layers)
    return LayerTrace(traced=trace, sources=plan.sources, layer_sizes=sizes)


def _pass_start(phase: str, seq_len: int, context_len: int, sampled: int) -> int:
    """The position a pass's first token takes (0 for a prefill, context_len for a decode step); ValueError for a
    phase or `sampled` a pass cannot have."""
    if phase not in ("prefill", "decode"):
        raise ValueError(f"phase: found {phase!r}, allowed: 'prefill', 'decode'")
    check_sampled(sampled, seq_len)
    return 0 if phase == "prefill" else context_len


def _run(config: ModelConfig, built: ModelConfig, *, phase: str, batch: int, seq_len: int, start: int,
         sampled: int, copy_experts: bool = True) -> tuple[Trace, torch.nn.Module]:
    """The trace of `built` (config or the distinct layers of it) run for one pass, under config's name, and the model
    it built (in the tensor mode of the caller)."""
    from workloads.decoder import DecoderModel, KVCache

    model = DecoderModel(built, max_tokens=batch * seq_len)
    cache = KVCache(built, batch, start + seq_len, model.dtype)
    ids = torch.zeros((batch, seq_len), dtype=torch.long)
    trace = capture(model, (ids, cache, start, sampled), model=config.name, phase=phase, batch=batch,
                    seq_len=seq_len, context_len=start, kv_tensors=cache.tensors(),
                    sliding_window=config.sliding_window, layer_windows=built.layer_windows,
                    copy_repeats=copy_experts)
    return trace, model


def _param_sizes(module: torch.nn.Module) -> tuple[int, int]:
    """A module's parameter count and bytes."""
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(_nbytes(p) for p in params)
