"""capture() works on any nn.Module: a plain MLP, and (when installed) a Hugging Face Llama built from a config."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from torch import nn

from workloads.capture import capture

GEMM_OPS = {"mm", "addmm", "bmm"}


def test_plain_sequential():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    x = torch.randn(4, 16)
    trace = capture(model, (x,), model="mlp", phase="prefill", batch=4, seq_len=1)
    assert trace.ops
    gemms = [op for op in trace.ops if op.short_name in GEMM_OPS]
    assert len(gemms) == 2
    # 2 x rows x in x out per linear: 2 x 4 x 16 x 32 + 2 x 4 x 32 x 8 = 4096 + 2048.
    assert sum(op.flops for op in gemms) == 6144
    # Parameters: 16 x 32 + 32 + 32 x 8 + 8 = 808 fp32 values = 3232 bytes, each read once.
    assert trace.param_count == 808
    assert trace.param_bytes == 3232
    assert trace.bytes_by_role()["weight"] == 3232
    assert trace.dtype == "float32"
    # Weights are tagged: each GEMM has a weight operand (the transposed view keeps the role) and a bias.
    for op in gemms:
        roles = [t.role for t in op.inputs]
        assert roles.count("weight") == 2 and roles.count("activation") == 1
    # The ReLU is one pass over 4 x 32 values.
    (relu,) = [op for op in trace.ops if op.short_name == "relu"]
    assert relu.flops == 4 * 32
    assert relu.bytes_read == {"activation": 4 * 32 * 4} and relu.bytes_written == {"activation": 4 * 32 * 4}
    # Peak live activations: while the ReLU runs, its 4 x 32 fp32 input and output are both alive (512 + 512 B);
    # later the ReLU output and the final 4 x 8 output make only 512 + 128 B.
    assert trace.peak_activation_bytes == 1024


def test_sequential_fake_equals_real():
    from torch._subclasses.fake_tensor import FakeTensorMode

    def run():
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
        return capture(model, (torch.randn(4, 16),), model="mlp", phase="prefill", batch=4, seq_len=1)

    real = run()
    with FakeTensorMode():
        fake = run()
    assert [(op.name, op.inputs, op.flops, op.bytes_read, op.bytes_written) for op in fake.ops] == [
        (op.name, op.inputs, op.flops, op.bytes_read, op.bytes_written) for op in real.ops]
    assert fake.peak_activation_bytes == real.peak_activation_bytes


def test_hugging_face_llama():
    try:
        importlib.metadata.version("kernels")
        pytest.skip("Hugging Face's `kernels` distribution is installed: its import name is our kernels/ package's, "
                    "and transformers would import ours (pyproject.toml pins transformers below 5.25, which needs it)")
    except importlib.metadata.PackageNotFoundError:
        pass
    transformers = pytest.importorskip("transformers", exc_type=ImportError)
    hidden, inter, layers, heads, kv_heads, vocab = 64, 128, 2, 4, 2, 128
    config = transformers.LlamaConfig(
        hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, vocab_size=vocab, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()  # random weights, nothing downloaded
    batch, tokens = 1, 8
    ids = torch.zeros((batch, tokens), dtype=torch.long)
    trace = capture(model, (ids,), {"use_cache": False}, model="hf-llama", phase="prefill", batch=batch,
                    seq_len=tokens)
    assert trace.ops
    head_dim = hidden // heads
    # Linear parameters: q, o (h x heads*d), k, v (h x kv_heads*d), gate/up/down (h x f) per layer, and the
    # LM head (h x vocab), which Hugging Face applies to every position.
    per_layer = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + 3 * hidden * inter
    linear_params = layers * per_layer + hidden * vocab
    assert linear_params == 2 * (8192 + 4096 + 24576) + 8192 == 81_920
    gemm_flops = sum(op.flops for op in trace.ops if op.short_name in GEMM_OPS)
    assert gemm_flops == 2 * batch * tokens * linear_params
    # Every parameter is a weight: the trace's parameter count is the module's.
    assert trace.param_count == sum(p.numel() for p in model.parameters())
    for op in trace.ops:
        if op.short_name in GEMM_OPS:
            assert [t.role for t in op.inputs].count("weight") == 1, op.module
    embedding = [op for op in trace.ops if op.short_name == "embedding"]
    assert embedding and embedding[0].inputs[0].role == "weight"
