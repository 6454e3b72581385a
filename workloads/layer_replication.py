"""A full model's trace from a trace of its distinct decoder layers, their ops repeated for the layers like them.

Our decoder (workloads/decoder.py DecoderModel) runs its layers one after another, each on the previous one's output,
the RoPE tables computed before the stack and a KV cache of its own; a layer's kind is all that sets its ops: an MoE
model's dense first layers, then MoE layers, and its attention window (ModelConfig.layer_window: Mistral's every
layer's, gpt-oss's every other layer's). So layer i dispatches the ops of any other layer of its kind, op for op, with
its own number in its module paths. Dispatching an op on fake tensors and recording it costs about 0.23 ms, copying it
about 1 us (explore/commands.py TRACE_S_PER_OP, TRACE_S_PER_OP_COPIED): DeepSeek-V3's 512-token prefill, 245,096 ops,
took 64 s of CPU layer by layer and 2.9 s from its 3 distinct layers (bench/bench_trace_replication.py).

Which layers are traced: the first of each kind, and the last layer. The last is traced apart because its context
differs: the RoPE tables die inside it (no later layer reads them), so the activation bytes alive during its MLP
are less than during any other layer's; every other layer has one of the traced first layers' profile of live bytes
op by op (the input it reads is the embedding's output or a layer's, the same shape and dtype, read at the same
ops). The full model's live bytes are thus the traced model's, region by region, repeated: the same peak.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from workloads.collector import collector_paused
from workloads.model_config import ModelConfig
from workloads.trace import Op, Trace, moved_ops


@dataclass(frozen=True, kw_only=True)
class LayerPlan:
    """The model whose layers are traced (`config`: the distinct layers only) and, for each layer of the full model,
    the traced layer whose ops it repeats (`sources`, indices into the traced model's layers)."""

    config: ModelConfig
    sources: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class LayerTrace:
    """A full model's fake trace as captured, before its layers are repeated: the distinct layers' trace (`traced`),
    for each layer of the full model the traced layer it repeats (`sources`, LayerPlan.sources) and the traced layers'
    parameter counts and bytes (`layer_sizes`). The trace cache stores this (DeepSeek-V3's 3 traced layers of 61, a
    twentieth of the ops) and expands it on load."""

    traced: Trace
    sources: tuple[int, ...]
    layer_sizes: tuple[tuple[int, int], ...]

    def expanded(self) -> Trace:
        """The full model's trace (replicated)."""
        return replicated(self.traced, self.sources, self.layer_sizes)

    def outline(self) -> Trace:
        """expanded() without its ops: the full model's parameters, peak and windows, no op copied."""
        return _outline(self.traced, self.sources, self.layer_sizes)


def _kind(config: ModelConfig, index: int) -> tuple[bool, int | None]:
    """Whether layer `index` is an MoE layer (decoder.py DecoderLayer's choice), and its attention window."""
    return config.is_moe and index >= config.dense_layers, config.layer_window(index)


def layer_plan(config: ModelConfig) -> LayerPlan:
    """The layers to trace for `config`: the first of each kind and the last one (see the module docstring)."""
    last = config.num_layers - 1
    firsts = {_kind(config, i): i for i in reversed(range(config.num_layers))}
    traced = sorted(set(firsts.values()) | {last})
    position = {index: k for k, index in enumerate(traced)}
    sources = tuple(position[i if i == last else firsts[_kind(config, i)]] for i in range(config.num_layers))
    dense = sum(1 for i in traced if not _kind(config, i)[0]) if config.is_moe else config.dense_layers
    windows = tuple(config.layer_windows[i] for i in traced) if config.layer_windows else ()
    return LayerPlan(config=replace(config, num_layers=len(traced), dense_layers=dense, layer_windows=windows),
                     sources=sources)


def layer_regions(ops: tuple[Op, ...], layers: int) -> tuple[tuple[Op, ...], list[tuple[Op, ...]], tuple[Op, ...]]:
    """The ops before the layer stack, each layer's, and those after it; ValueError where the layers' ops are not one
    run each, in order, between ops outside the stack, or a layer has none (the structure replication relies on)."""
    first = next((i for i, op in enumerate(ops) if op.layer is not None), len(ops))
    bounds = [first]
    for k in range(layers):
        end = bounds[-1]
        while end < len(ops) and ops[end].layer == k:
            end += 1
        bounds.append(end)
    if any(op.layer is not None for op in ops[bounds[-1]:]) or len(set(bounds)) <= layers:
        raise ValueError(f"trace: its layers' ops are not {layers} runs in order, found layers "
                         f"{sorted({op.layer for op in ops if op.layer is not None})}")
    runs = [ops[bounds[k]:bounds[k + 1]] for k in range(layers)]
    for k, run in enumerate(runs):
        prefix = f"layers.{k}"
        for op in run:
            if not (op.module == prefix or op.module.startswith(prefix + ".")):
                raise ValueError(f"op {op.name}: module: found {op.module!r}, allowed: a path under {prefix!r}")
    return ops[:first], runs, ops[bounds[-1]:]


def _renumbered(run: tuple[Op, ...], source: int, layer: int) -> list[Op]:
    """Layer `source`'s ops as layer `layer`'s: its number in their module paths ("layers.<n>...") and `layer`; new
    Op objects with dicts of their own, so nothing is shared between layers."""
    return moved_ops(run, f"layers.{source}", f"layers.{layer}", layer)


def replicated(trace: Trace, sources: tuple[int, ...], layer_sizes: tuple[tuple[int, int], ...]) -> Trace:
    """The full model's trace from `trace`, its distinct layers' (LayerPlan.config's), whose layers' parameter counts
    and bytes are `layer_sizes`: each layer's ops from its source (`sources`, LayerPlan.sources), renumbered, between
    the ops before and after the stack; the parameters of the layers each source stands for added; the peak as traced
    (module docstring)."""
    before, runs, after = layer_regions(trace.ops, len(layer_sizes))
    ops = list(before)
    with collector_paused():  # 240,000 copies for DeepSeek-V3's prefill, no reference cycles among them
        for layer, source in enumerate(sources):
            if layer == source:  # its number as traced: the traced ops themselves
                ops.extend(runs[source])
            else:
                ops.extend(_renumbered(runs[source], source, layer))
    ops.extend(after)
    return replace(_outline(trace, sources, layer_sizes), ops=tuple(ops))


def _outline(trace: Trace, sources: tuple[int, ...], layer_sizes: tuple[tuple[int, int], ...]) -> Trace:
    """replicated's trace without its ops."""
    # The traced model's parameters less its layers' are those outside the stack (embedding, norm, head), once each.
    count = trace.param_count + sum(layer_sizes[s][0] for s in sources) - sum(n for n, _ in layer_sizes)
    nbytes = trace.param_bytes + sum(layer_sizes[s][1] for s in sources) - sum(b for _, b in layer_sizes)
    windows = tuple(trace.layer_windows[s] for s in sources) if trace.layer_windows else ()
    return replace(trace, ops=(), param_count=count, param_bytes=nbytes, layer_windows=windows)
