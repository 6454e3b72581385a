"""Full models' passes captured from their distinct layers, and their op-by-op tables, shared by
tests/kernels/test_layer_kernels.py and test_layer_kernels_prepared.py: read once per test process, here, because a
test module imported by another is a second module object (pytest imports each test file under its own name), so a
cache kept in one test module is filled twice. Capturing and lowering the five presets' two passes takes seconds."""

from __future__ import annotations

import functools
from dataclasses import replace

from kernels.lowering import lower_trace
from kernels.table import KernelTable
from workloads.layer_replication import LayerTrace
from workloads.model_config import ModelConfig, load_model_config

PASSES = {
    "prefill": dict(phase="prefill", batch=2, seq_len=24),
    "decode": dict(phase="decode", batch=2, seq_len=1, context_len=24),
}


def preset_config(name: str) -> ModelConfig:
    """The preset; windows that differ by layer cut to 16 keys, fewer than PASSES' 24, so that a sliding layer's
    kernels differ from a full one's in both passes."""
    config = load_model_config(name)
    return replace(config, layer_windows=tuple(w and 16 for w in config.layer_windows))


@functools.cache
def captured(name: str, phase: str) -> LayerTrace:
    """A preset's pass of PASSES captured from its distinct layers."""
    from workloads.capture import trace_layers

    return trace_layers(preset_config(name), **PASSES[phase])


@functools.cache
def op_by_op(name: str, phase: str) -> KernelTable:
    """The op-by-op lowering of a captured pass's expanded trace."""
    return KernelTable.from_kernels(lower_trace(captured(name, phase).expanded()))
