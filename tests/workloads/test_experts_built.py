"""A traced pass builds only the MoE experts its tokens reach, and its trace is the whole model's."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from workloads.capture import capture, trace_model
from workloads.decoder import DecoderModel, KVCache
from workloads.mtp import MTPModule


def test_one_token_builds_the_two_experts_it_reaches_and_counts_all_four(tiny_mixtral):
    # tiny-mixtral: 4 experts a layer, top-2. One token reaches experts 0 and 1 (balanced load [1, 1, 0, 0]).
    # Its parameters by hand: embedding and LM head 2 x 128 x 64, a layer's attention 64 x 64 x 2 (q, o) and
    # 64 x 32 x 2 (k, v), 2 norms of 64, router 64 x 4, 4 experts of 3 x 64 x 128; 2 layers and the final norm:
    # 16,384 + 2 x (12,288 + 128 + 256 + 98,304) + 64 = 238,400, the two unbuilt experts' included.
    with FakeTensorMode():
        model = DecoderModel(tiny_mixtral, max_tokens=1)
    assert [len(layer.mlp.experts) for layer in model.layers] == [2, 2]
    assert sum(p.numel() for p in model.parameters()) == 238_400
    # 3 tokens x 2 = 6 assignments over 4 experts reach all of them: nothing is left unbuilt.
    with FakeTensorMode():
        model = DecoderModel(tiny_mixtral, max_tokens=3)
    assert [len(layer.mlp.experts) for layer in model.layers] == [4, 4]
    assert not hasattr(model.layers[0].mlp, "unbuilt_experts")


def test_a_pass_of_more_tokens_than_built_for_is_refused(tiny_mixtral):
    with FakeTensorMode():
        model = DecoderModel(tiny_mixtral, max_tokens=1)
        cache = KVCache(tiny_mixtral, 2, 1, model.dtype)
        with pytest.raises(ValueError, match="tokens: found 2, allowed: at most"):
            model(torch.zeros((2, 1), dtype=torch.long), cache, 0)


@pytest.mark.parametrize("phase, batch, seq_len, context", [("decode", 1, 1, 4), ("decode", 3, 1, 4),
                                                            ("prefill", 1, 2, 0)])
def test_the_trace_equals_the_whole_models(tiny_mixtral, phase, batch, seq_len, context):
    # Every op (shapes, bytes, FLOPs, roles, module), the parameters' count and bytes and the activation peak.
    traced = trace_model(tiny_mixtral, phase=phase, batch=batch, seq_len=seq_len, context_len=context)
    with FakeTensorMode():
        model = DecoderModel(tiny_mixtral)
        cache = KVCache(tiny_mixtral, batch, context + seq_len, model.dtype)
        whole = capture(model, (torch.zeros((batch, seq_len), dtype=torch.long), cache, context),
                        model=tiny_mixtral.name, phase=phase, batch=batch, seq_len=seq_len, context_len=context,
                        kv_tensors=cache.tensors())
    assert traced == whole


def test_an_mtp_module_builds_the_experts_one_token_reaches(tiny_mixtral):
    # The MTP module's one MoE layer: one token reaches 2 of the 4 experts; its parameters still count all four.
    config = tiny_mixtral.mtp_module()
    with FakeTensorMode():
        lazy, whole = MTPModule(config, max_tokens=1), MTPModule(config)
    assert len(lazy.layers[0].mlp.experts) == 2
    assert sum(p.numel() for p in lazy.parameters()) == sum(p.numel() for p in whole.parameters())
