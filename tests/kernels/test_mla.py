"""Multi-head latent attention (DeepSeek's MLA) traced and priced: the absorbed decode form computes what the
decompressed form computes, one attention kernel of each form by hand, tensor-parallel sharding of the latent, and
an engine's fused kernels of the latent block and of DeepSeek-V3's router."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hw_models.gpu_attention import attention_shapes
from kernels.kernel import KernelKind
from kernels.lowering import lower_trace
from kernels.parallel import shard_tensor_parallel
from kernels.table import KIND_CODE, KernelTable
from workloads.model_config import config_from_hf, load_model_config

PRESETS = Path(__file__).resolve().parents[2] / "workloads" / "presets"
PREFILL, DECODE = KIND_CODE[KernelKind.ATTENTION_PREFILL], KIND_CODE[KernelKind.ATTENTION_DECODE]
BMM = KIND_CODE[KernelKind.BATCHED_GEMM]


def _tiny(**changes):
    """DeepSeek-V3's config at toy sizes: query compression, 8 routed experts in 4 groups (2 chosen), 2 a token, a
    shared expert, sigmoid scores with the noaux_tc bias, 4 layers of which the first is dense."""
    cfg = json.loads((PRESETS / "deepseek-v3.json").read_text())
    cfg.update(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8, n_group=4,
               topk_group=2, num_experts_per_tok=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=24,
               kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6, num_hidden_layers=4,
               first_k_dense_replace=1, vocab_size=50, max_position_embeddings=512, torch_dtype="float32")
    cfg.update(changes)
    return config_from_hf(cfg, name="tiny-deepseek")


@pytest.mark.parametrize("q_lora_rank", [24, None])
def test_the_absorbed_decode_computes_what_the_decompressed_form_computes(q_lora_rank):
    """One decode token after six cached ones (absorbed: W_UK into the query, attention over the latent, W_UV after)
    against a prefill of all seven (decompressed), on real tensors: the last position's logits agree to float32
    rounding. Dense layers only: the MoE layer routes by balanced load, which depends on the pass's token count."""
    import torch

    from workloads.decoder import DecoderModel, KVCache

    config = replace(_tiny(q_lora_rank=q_lora_rank), dense_layers=4)
    torch.manual_seed(0)
    model = DecoderModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
        ids = torch.randint(0, 50, (2, 7))
        cache = KVCache(config, 2, 7, torch.float32)
        model(ids[:, :6], cache, 0)
        decoded = model(ids[:, 6:], cache, 6)
        whole = model(ids, KVCache(config, 2, 7, torch.float32), 0)
    assert torch.allclose(decoded, whole, atol=1e-5)
    assert whole.abs().max() > 0.1  # not trivially zero


@pytest.mark.parametrize("name", ["deepseek-v2-lite", "deepseek-v3"])
def test_param_count_equals_module(name):
    """The module's parameters (first layers: 2 dense and 3 MoE for V3, 1 and 2 for V2-Lite) against
    ModelConfig.param_count, written independently."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from workloads.decoder import DecoderModel

    config = load_model_config(name)
    config = replace(config, num_layers=config.dense_layers + 2)
    with FakeTensorMode():
        counted = sum(p.numel() for p in DecoderModel(config).parameters())
    assert counted == config.param_count()


def _one_layer_v3(trace_of, phase: str, batch: int, length: int):
    """DeepSeek-V3's first layer (dense) as a model of one layer: a prefill of `length` tokens, or one decode token
    after `length - 1` cached ones."""
    config = replace(load_model_config("deepseek-v3"), num_layers=1)
    trace = trace_of(config, phase, batch, length) if phase == "prefill" else trace_of(config, phase, batch, 1,
                                                                                          length - 1)
    return config, KernelTable.from_kernels(lower_trace(trace))


def test_one_absorbed_decode_attention_by_hand(trace_of):
    """Batch 1, 4,096 keys: 128 query heads over one latent head of 576 (512 + 64 RoPE) keys and 512 values:
    2 x 128 x 4,096 x (576 + 512) = 1,140,850,688 FLOPs; the cache read once, 4,096 x 576 x 2 B = 4,718,592 B (its
    value is the key's leading 512 columns, not read again). The two bmms: 2 x 128 x 128 x 512 FLOPs each, reading
    kv_b_proj's halves (128 x 128 x 512 x 2 B each)."""
    _, table = _one_layer_v3(trace_of, "decode", 1, 4096)
    attention = table.select(table.kind == DECODE)
    assert len(attention) == 1
    assert attention.flops[0] == 2 * 128 * 4096 * (576 + 512) == 1_140_850_688
    assert attention.kv_bytes[0] == 4096 * 576 * 2 == 4_718_592
    assert (attention.heads[0], attention.kv_heads[0], attention.head_dim[0]) == (128, 1, 576)
    assert (attention.v_head_dim[0], attention.kv_width[0]) == (512, 576)
    bmm = table.select(table.kind == BMM)
    assert list(bmm.flops) == [2 * 128 * 128 * 512] * 2
    assert list(bmm.weight_bytes) == [128 * 128 * 512 * 2] * 2
    writes = table.select((table.kv_bytes > 0) & (table.kind != DECODE))
    assert writes.kv_bytes.sum() == 576 * 2  # the new token's latent and RoPE key


def test_one_decompressed_prefill_attention_by_hand(trace_of):
    """One prompt of 1,024 tokens: 128 heads of 192-wide queries and keys (128 + 64 RoPE) and 128-wide values over
    the causal pairs, 1,024 x 1,025 / 2: 2 x 128 x 524,800 x (192 + 128) = 42,991,616,000 FLOPs; the keys and values
    are the pass's own activations (no cache read); kv_b_proj up-projects every token's latent (2 x 1,024 x 512 x
    128 x 256 FLOPs)."""
    _, table = _one_layer_v3(trace_of, "prefill", 1, 1024)
    attention = table.select(table.kind == PREFILL)
    assert attention.flops[0] == 2 * 128 * (1024 * 1025 // 2) * (192 + 128) == 42_991_616_000
    assert attention.kv_bytes[0] == 0
    assert (attention.heads[0], attention.kv_heads[0], attention.head_dim[0], attention.v_head_dim[0]) == (
        128, 128, 192, 128)
    up = table.select(np.array([k.module.endswith("kv_b_proj") for k in table.kernels]))
    assert up.flops[0] == 2 * 1024 * 512 * 128 * 256
    assert not (table.kind == BMM).any()


@pytest.mark.parametrize("kv_bits, value_bits", [(8, 8 * 576 + 16 * 5), (4, 4 * 576 + 16 * 5)])
def test_a_static_prefill_writes_the_latent_at_its_own_groups(evaluator, kv_bits, value_bits):
    """DeepSeek-V2-Lite's static prefill of 512 tokens at kv_bits 8 and 4, groups of 128, on its first two layers (its
    dense one and an MoE one: the whole model's 27 take seconds to trace): each layer writes a token's 576-wide latent
    and RoPE key with ceil(576 / 128) = 5 16-bit scales (4,688 and 2,384 bits), whatever the width of the
    decompressed form's 192-wide heads (ceil(192 / 128) = 2 scales a head would give 4,704 and 2,400)."""
    from kernels.formats import NumericFormat

    config = replace(load_model_config("deepseek-v2-lite"), num_layers=2)
    assert config.dense_layers == 1
    tables = evaluator.tables(config, 1, 512, NumericFormat(kv_bits=kv_bits, group_size=128))
    writes = (tables.prefill.kv_bytes > 0) & ~tables.prefill.attention_mask
    assert tables.prefill.kv_bytes[writes].sum() == pytest.approx(512 * 2 * value_bits / 8)


def test_the_gpu_prices_a_pair_by_its_key_and_value_widths():
    """A pair's QK^T and PV: 2 x (576 + 512) FLOPs for the absorbed decode, 2 x (192 + 128) for the prefill (4 x
    head_dim would count 2,304 and 768). A 16-bit latent (576 elements a key) is not an fp8 cache; an 8-bit one is.
    A prefill without cache reads streams its 192-wide keys and 128-wide values at 16 bits."""
    one = np.array([1.0])
    decode = dict(batch=one, heads=one * 128, kv_heads=one, q_len=one, kv_len=one * 4096, head_dim=one * 576,
                  v_head_dim=one * 512, kv_width=one * 576, flops=one, act_bytes=one)
    shapes = attention_shapes(kv_bytes=one * 4096 * 576 * 2, **decode)
    assert shapes.mma_flops[0] == 2 * (576 + 512)
    assert shapes.variant[0] % 2 == 0  # not the fp8-KV fit
    assert attention_shapes(kv_bytes=one * 4096 * 576, **decode).variant[0] % 2 == 1
    prefill = attention_shapes(kv_bytes=one * 0, batch=one, heads=one * 128, kv_heads=one * 128, q_len=one * 1024,
                               kv_len=one * 1024, head_dim=one * 192, v_head_dim=one * 128, flops=one, act_bytes=one)
    assert prefill.mma_flops[0] == 2 * (192 + 128)
    assert prefill.keys_values[0] == 2 * 128 * 1024 * (192 + 128)


def test_tensor_parallel_ranks_split_the_heads_and_hold_the_whole_latent(trace_of):
    """tp 8 (vLLM's DeepseekV2MLAAttention): q_a_proj and kv_a_proj_with_mqa replicated, q_b_proj column-parallel,
    the bmms over 16 of the 128 heads, attention of 16 query heads over the whole latent (every rank reads all of
    it), o_proj row-parallel followed by the layer's attention all-reduce."""
    config, table = _one_layer_v3(trace_of, "decode", 1, 4096)
    sharded = shard_tensor_parallel(table, 8, config)
    by_module = {k.module.rsplit(".", 1)[-1]: i for i, k in enumerate(sharded.kernels) if k.op == "mm"}
    for whole in ("q_a_proj", "kv_a_proj_with_mqa"):
        assert sharded.n[by_module[whole]] == table.n[[i for i, k in enumerate(table.kernels)
                                                       if k.module.endswith(whole)][0]]
    assert sharded.n[by_module["q_b_proj"]] == 128 * 192 / 8
    assert sharded.k[by_module["o_proj"]] == 128 * 128 / 8
    bmm = sharded.select(sharded.kind == BMM)
    assert list(bmm.batch) == [16, 16] and list(bmm.weight_bytes) == [16 * 128 * 512 * 2] * 2
    attention = sharded.select(sharded.kind == DECODE)
    assert (attention.heads[0], attention.kv_heads[0]) == (16, 1)
    assert attention.kv_bytes[0] == 4096 * 576 * 2
    assert attention.flops[0] == 2 * 16 * 4096 * (576 + 512)


def test_an_engine_runs_the_latent_block_as_vllm_does(trace_of):
    """vLLM's DeepseekV2MLAAttention, 16 decode tokens of DeepSeek-V3: q_a_proj and kv_a_proj_with_mqa one GEMM of
    N = 1,536 + 576; one rotary kernel in place on the query's RoPE parts (16 x 128 x 64) and the key's (16 x 64),
    read and written at 2 B, with one cos/sin row of 64 values a token; one write of 16 x 576 latent and RoPE key
    values (concat_and_cache_mla)."""
    from kernels.fusion import fuse

    _, table = _one_layer_v3(trace_of, "decode", 16, 33)
    fused = fuse(table, "engine")
    ops = {k.op: i for i, k in enumerate(fused.kernels) if k.layer == 0}
    modules = {k.module.rsplit(".", 1)[-1]: i for i, k in enumerate(fused.kernels)}
    assert "q_a_proj" not in modules and fused.n[modules["fused_qkv_a_proj"]] == 1536 + 576
    assert [k.op for k in fused.kernels if k.layer == 0].count("rotary_embedding") == 1
    assert fused.act_bytes[ops["rotary_embedding"]] == 2 * (16 * 128 * 64 + 16 * 64) * 2 + 16 * 64 * 2
    assert fused.kv_bytes[ops["concat_and_cache_mla"]] == 16 * 576 * 2


def test_an_engine_routes_deepseek_v3_in_one_grouped_topk_kernel(trace_of):
    """DeepSeek-V3's router past its GEMM (sigmoid scores, the noaux_tc bias, the best 4 of 8 groups by their best
    two, top 8, the unbiased scores gathered, renormalized and scaled by 2.5): 15 eager kernels, one in vLLM
    (grouped_topk), moving what the sigmoid moves: 32 tokens' 256 float32 logits read and scores written."""
    from kernels.fusion import fuse

    config = replace(load_model_config("deepseek-v3"), num_layers=1, dense_layers=0)
    table = KernelTable.from_kernels(lower_trace(trace_of(config, "decode", 32, 1, 16)))
    fused = fuse(table, "engine")
    router = [i for i, k in enumerate(fused.kernels) if k.module == "layers.0.mlp" and k.op != "add"]
    assert [fused.kernels[i].op for i in router] == ["grouped_topk"]
    assert fused.act_bytes[router[0]] == 2 * 32 * 256 * 4
