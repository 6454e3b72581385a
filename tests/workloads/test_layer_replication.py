"""A fake trace built from the model's distinct layers, their ops repeated, is the trace of the whole model."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.workloads.same_trace import PASSES, assert_same_trace
from workloads.capture import trace_model
from workloads.layer_replication import layer_plan
from workloads.model_config import load_model_config, preset_names


def _shrunk(name: str):
    """The preset with at most 2 dense first layers and 3 layers after them: every kind of layer (dense, MoE, the
    last) traced, and at least one layer of each kind repeated from another (a dense model's layer 1 from its 0).
    Windows that differ by layer (gpt-oss's) alternate over 5 layers, the sliding ones 4 keys wide: fewer than a
    decode pass's 7, so that a sliding layer's ops differ from a full one's."""
    config = load_model_config(name)
    dense = min(config.dense_layers, 2)
    if config.layer_windows:
        return replace(config, num_layers=5, layer_windows=tuple(w and 4 for w in config.layer_windows[:5]))
    return replace(config, dense_layers=dense, num_layers=dense + 3)


@pytest.mark.parametrize("phase", PASSES)
@pytest.mark.parametrize("name", preset_names())
def test_the_replicated_trace_is_the_full_models(name, phase):
    """Every field of the trace (each op's name, shapes, roles, FLOPs, bytes, module path and layer, the parameters,
    the peak of live activations) equals the trace of the model run layer by layer. The presets cover learned
    positions (OPT), a sliding window (Mistral), windows in every other layer (gpt-oss), MLA with dense first layers
    (DeepSeek), Qwen3's head norms and MoE."""
    config, shape = _shrunk(name), PASSES[phase]
    assert_same_trace(trace_model(config, **shape), trace_model(config, replicate_layers=False, **shape))


@pytest.mark.parametrize("name, traced, sources", [
    ("llama-2-7b", 2, (0,) * 31 + (1,)),  # the first layer for 31, the last
    ("mixtral-8x7b", 2, (0,) * 31 + (1,)),
    ("deepseek-v3", 3, (0,) * 3 + (1,) * 57 + (2,)),  # 3 dense first layers, 58 MoE ones, the last of them apart
    ("deepseek-v2-lite", 3, (0,) + (1,) * 25 + (2,)),  # first_k_dense_replace 1, 27 layers
    ("gpt-oss-120b", 3, (0, 1) * 17 + (0, 2)),  # layer_types: sliding, full, ... (36 layers): the last a full one
])
def test_the_plan_traces_the_first_layer_of_each_kind_and_the_last(name, traced, sources):
    """The traced model holds the first dense layer, the first MoE layer (the first sliding and the first full one
    where windows differ by layer) and the last; each layer repeats its kind's first traced layer, the last its own
    (the counts are the models' config.json num_hidden_layers, first_k_dense_replace and layer_types)."""
    plan = layer_plan(load_model_config(name))
    assert plan.config.num_layers == traced
    assert plan.sources == sources


def test_a_full_size_trace_weighs_every_layer():
    """DeepSeek-V3's decode step traced from its 3 distinct layers holds 671,026,419,200 parameters, the count its
    shapes give by hand (tests/workloads/test_deepseek_config.py), and ops in all 61 layers."""
    trace = trace_model(load_model_config("deepseek-v3"), phase="decode", batch=1, seq_len=1, context_len=8)
    assert trace.param_count == 671_026_419_200
    assert {op.layer for op in trace.ops} == set(range(61)) | {None}


@pytest.mark.parametrize("name", ["deepseek-v3", "gpt-oss-20b"])
def test_a_layer_traces_outline_is_its_expanded_trace_without_the_ops(name):
    """LayerTrace.outline (what a point's memory reads: parameters, peak, windows) is expanded()'s every field but
    the ops, none: DeepSeek-V3's 671,026,419,200 parameters (above) from its 3 distinct layers, gpt-oss's window of
    each layer."""
    from workloads.capture import trace_layers

    layers = trace_layers(load_model_config(name), phase="decode", batch=1, seq_len=1, context_len=8)
    outline = layers.outline()
    assert outline.ops == () and outline == replace(layers.expanded(), ops=())
    assert name != "deepseek-v3" or outline.param_count == 671_026_419_200
    assert name != "gpt-oss-20b" or outline.layer_windows == load_model_config(name).layer_windows
