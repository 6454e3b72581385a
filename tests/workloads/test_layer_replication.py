"""A fake trace built from the model's distinct layers, their ops repeated, is the trace of the whole model."""

from __future__ import annotations

from dataclasses import replace

import pytest

from workloads.capture import trace_model
from workloads.layer_replication import layer_plan
from workloads.model_config import load_model_config, preset_names

# A prefill of two sequences, and a decode step verifying 2 tokens (logits at both) after 5 cached: few tokens, so that
# an MoE layer's tokens reach few experts (each a dozen ops).
PASSES = {"prefill": dict(phase="prefill", batch=2, seq_len=2),
          "decode": dict(phase="decode", batch=1, seq_len=2, context_len=5, sampled=2)}


def _shrunk(name: str):
    """The preset with at most 2 dense first layers and 3 layers after them: every kind of layer (dense, MoE, the
    last) traced, and at least one layer of each kind repeated from another (a dense model's layer 1 from its 0)."""
    config = load_model_config(name)
    dense = min(config.dense_layers, 2)
    return replace(config, dense_layers=dense, num_layers=dense + 3)


@pytest.mark.parametrize("phase", PASSES)
@pytest.mark.parametrize("name", preset_names())
def test_the_replicated_trace_is_the_full_models(name, phase):
    """Every field of the trace (each op's name, shapes, roles, FLOPs, bytes, module path and layer, the parameters,
    the peak of live activations) equals the trace of the model run layer by layer. The presets cover learned
    positions (OPT), a sliding window (Mistral), MLA with dense first layers (DeepSeek), Qwen3's head norms and MoE."""
    config = _shrunk(name)
    full = trace_model(config, replicate_layers=False, **PASSES[phase]).to_dict()
    replicated = trace_model(config, **PASSES[phase]).to_dict()
    assert replicated.keys() == full.keys()
    for key, value in full.items():
        if key != "ops":
            assert replicated[key] == value, key
    assert len(replicated["ops"]) == len(full["ops"])
    for i, (ours, theirs) in enumerate(zip(replicated["ops"], full["ops"], strict=True)):
        assert ours == theirs, f"op {i}"


@pytest.mark.parametrize("name, traced, sources", [
    ("llama-2-7b", 2, (0,) * 31 + (1,)),  # the first layer for 31, the last
    ("mixtral-8x7b", 2, (0,) * 31 + (1,)),
    ("deepseek-v3", 3, (0,) * 3 + (1,) * 57 + (2,)),  # 3 dense first layers, 58 MoE ones, the last of them apart
    ("deepseek-v2-lite", 3, (0,) + (1,) * 25 + (2,)),  # first_k_dense_replace 1, 27 layers
])
def test_the_plan_traces_the_first_layer_of_each_kind_and_the_last(name, traced, sources):
    """The traced model holds the first dense layer, the first MoE layer and the last; each layer repeats its kind's
    first traced layer, the last its own (the counts are the models' config.json num_hidden_layers and
    first_k_dense_replace)."""
    plan = layer_plan(load_model_config(name))
    assert plan.config.num_layers == traced
    assert plan.sources == sources


def test_a_full_size_trace_weighs_every_layer():
    """DeepSeek-V3's decode step traced from its 3 distinct layers holds 671,026,419,200 parameters, the count its
    shapes give by hand (tests/workloads/test_deepseek_config.py), and ops in all 61 layers."""
    trace = trace_model(load_model_config("deepseek-v3"), phase="decode", batch=1, seq_len=1, context_len=8)
    assert trace.param_count == 671_026_419_200
    assert {op.layer for op in trace.ops} == set(range(61)) | {None}
