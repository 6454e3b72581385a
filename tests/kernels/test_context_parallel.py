"""Decode context parallelism (kernels/parallel.py context_parallel): a device's decode attention over every dcp-th key
with the group's query heads, the exchanges that merge the partial outputs, and the system pricing them over the
group, against hand counts from the model's shapes.

The tiny MLA model: 4 query heads, a latent of 16 and a RoPE key of 4 (20 cached values a token a layer, 16 the
value's width), 2 layers. At tp 4 every device holds the whole latent (one KV "head" for four devices).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hw_models.link import load_link_model
from hw_models.registry import load_device
from hw_models.system import SystemModel
from kernels.kernel import Kernel, KernelKind
from kernels.lowering import lower_trace
from kernels.parallel import check_decode_context_parallel, kv_replication, sharded_rows
from kernels.table import KIND_CODE, KernelTable
from workloads.model_config import config_from_hf

DECODE, PREFILL = KIND_CODE[KernelKind.ATTENTION_DECODE], KIND_CODE[KernelKind.ATTENTION_PREFILL]
GATHER, SCATTER = KIND_CODE[KernelKind.ALL_GATHER], KIND_CODE[KernelKind.REDUCE_SCATTER]
HEADS, LATENT, ROPE = 4, 16, 4
BATCH, CONTEXT = 3, 40


@pytest.fixture(scope="module")
def tiny_mla():
    return config_from_hf({
        "model_type": "deepseek_v2", "architectures": ["DeepseekV2ForCausalLM"], "hidden_size": 64,
        "intermediate_size": 96, "moe_intermediate_size": 32, "num_hidden_layers": 2, "first_k_dense_replace": 1,
        "n_routed_experts": 4, "num_experts_per_tok": 2, "num_attention_heads": HEADS, "num_key_value_heads": HEADS,
        "q_lora_rank": None, "kv_lora_rank": LATENT, "qk_nope_head_dim": 8, "qk_rope_head_dim": ROPE,
        "v_head_dim": 6, "vocab_size": 128, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
        "torch_dtype": "bfloat16", "hidden_act": "silu"}, name="tiny-mla")


def _whole(trace_of, config, phase: str = "decode") -> KernelTable:
    seq, context = (1, CONTEXT) if phase == "decode" else (CONTEXT, 0)
    return KernelTable.from_kernels(lower_trace(trace_of(config, phase, BATCH, seq, context)))


@pytest.mark.parametrize("dcp", [2, 4])
def test_a_decode_step_attends_over_every_dcp_th_key_with_the_group_s_heads(tiny_mla, trace_of, dcp):
    """Each attention row: 4 / 4 x dcp query heads over ceil(41 / dcp) of the 41 keys of each of 3 sequences (20
    two-byte values each), its queries and outputs those of the group's heads."""
    whole = _whole(trace_of, tiny_mla)
    tensor, _ = sharded_rows(whole, 4, tiny_mla)
    split, _ = sharded_rows(whole, 4, tiny_mla, dcp=dcp)
    keys = math.ceil((CONTEXT + 1) / dcp)
    rows = split.kind == DECODE
    assert rows.sum() == tiny_mla.num_layers
    assert np.all(split.heads[rows] == dcp) and np.all(split.kv_len[rows] == keys)
    assert np.all(split.kv_bytes[rows] == BATCH * keys * (LATENT + ROPE) * 2)
    # Query (20 wide) and output (16 wide) of dcp heads, 2 bytes each, for each sequence.
    assert np.all(split.act_bytes[rows] == BATCH * dcp * (LATENT + ROPE + LATENT) * 2)
    # (query, key) pairs: dcp heads x ceil(41 / dcp) keys, against one head x 41 keys under tp alone.
    assert np.allclose(split.flops[rows], tensor.flops[tensor.kind == DECODE] * dcp * keys / (CONTEXT + 1))
    assert all(split.kernels[i].context_split == dcp for i in np.flatnonzero(rows))


@pytest.mark.parametrize("dcp", [2, 4])
def test_three_exchanges_a_layer_merge_the_partial_outputs(tiny_mla, trace_of, dcp):
    """Per layer, over the dcp devices: the queries all-gathered before the attention (3 tokens x dcp heads x 20
    values x 2 B), the fp32 log-sum-exps all-gathered after it (dcp copies of 3 x dcp x 4 B), and the 16-wide 16-bit
    outputs reduce-scattered (3 x dcp x 16 x 2 B): the gathered tensor, the scattered one (hw_models/link.py)."""
    split, _ = sharded_rows(_whole(trace_of, tiny_mla), 4, tiny_mla, dcp=dcp)
    kinds = split.kind.tolist()
    for layer_row in np.flatnonzero(split.kind == DECODE):
        assert kinds[layer_row - 1:layer_row + 3] == [GATHER, DECODE, GATHER, SCATTER]
        assert split.act_bytes[layer_row - 1] == BATCH * dcp * (LATENT + ROPE) * 2
        assert split.act_bytes[layer_row + 1] == dcp * BATCH * dcp * 4
        assert split.act_bytes[layer_row + 2] == BATCH * dcp * LATENT * 2
        assert np.all(split.batch[layer_row - 1:layer_row + 3:2] == dcp)  # the group's devices, not tp's 4
    assert (split.kind == GATHER).sum() == 2 * tiny_mla.num_layers
    assert (split.kind == SCATTER).sum() == tiny_mla.num_layers


def test_a_prefill_writes_a_dcp_th_of_the_cache_and_attends_as_before(tiny_mla, trace_of):
    whole = _whole(trace_of, tiny_mla, "prefill")
    tensor, _ = sharded_rows(whole, 4, tiny_mla)
    split, _ = sharded_rows(whole, 4, tiny_mla, dcp=4)
    writes = (tensor.kv_bytes > 0) & ~tensor.tensor_core
    # The latent (16) and RoPE key (4) of 3 x 40 prompt tokens, 2 B each, a quarter on each device.
    assert tensor.kv_bytes[writes].sum() == tiny_mla.num_layers * BATCH * CONTEXT * (LATENT + ROPE) * 2
    assert split.kv_bytes[writes].sum() == tensor.kv_bytes[writes].sum() / 4
    attention = tensor.kind == PREFILL
    assert np.array_equal(split.flops[attention], tensor.flops[attention])
    assert not np.isin(split.kind, (GATHER, SCATTER)).any()


def test_one_device_of_a_group_writes_a_static_batch_s_new_tokens(tiny_mla, trace_of):
    """Every sequence of a static batch is at the same position: its new token's KV lands on one device of the group
    (every dcp-th position on each), so that device writes all 3."""
    whole = _whole(trace_of, tiny_mla)
    tensor, _ = sharded_rows(whole, 4, tiny_mla)
    split, _ = sharded_rows(whole, 4, tiny_mla, dcp=4)
    writes = (tensor.kv_bytes > 0) & ~tensor.tensor_core
    assert split.kv_bytes[~np.isin(split.kind, (GATHER, SCATTER, DECODE))].sum() == tensor.kv_bytes[writes].sum()


@pytest.mark.parametrize("dcp", [2, 4])
def test_a_decode_step_at_another_context_reads_the_device_s_keys(tiny_mla, trace_of, dcp):
    """Re-sized to 1,000 keys a sequence (KernelTable.at_kv_lengths), a device reads ceil(1000 / dcp) of them: never
    more than tensor parallelism's whole cache, and its (query, key) pairs as many up to the rounding."""
    tensor, _ = sharded_rows(_whole(trace_of, tiny_mla), 4, tiny_mla)
    split, _ = sharded_rows(_whole(trace_of, tiny_mla), 4, tiny_mla, dcp=dcp)
    lens = np.array([1000.0, 1001.0])
    before, after = tensor.at_kv_lengths(lens), split.at_kv_lengths(lens)
    held = np.ceil(lens / dcp)
    assert np.array_equal(after.kv_len, np.repeat(held, tiny_mla.num_layers))
    assert np.allclose(after.kv_bytes, np.repeat(BATCH * held * (LATENT + ROPE) * 2, tiny_mla.num_layers))
    assert np.all(after.kv_bytes <= before.kv_bytes / dcp * (1 + dcp / 1000))
    assert np.allclose(after.flops, before.flops * np.repeat(dcp * held / lens, tiny_mla.num_layers))


def test_dcp_1_is_tensor_parallelism(tiny_mla, tiny_llama, trace_of):
    for config in (tiny_mla, tiny_llama):
        whole = _whole(trace_of, config)
        tensor, rows = sharded_rows(whole, 2, config)
        same, same_rows = sharded_rows(whole, 2, config, dcp=1)
        assert np.array_equal(rows, same_rows) and tensor.kernels == same.kernels
        for name in ("flops", "act_bytes", "kv_bytes", "heads", "kv_len", "batch"):
            assert np.array_equal(getattr(tensor, name), getattr(same, name))


def test_gqa_splits_the_copies_of_each_kv_head(tiny_llama, trace_of):
    """The tiny llama's 2 KV heads at tp 4: two devices hold each head; dcp 2 splits its tokens between them (each
    device's query heads, 1, gathered to the 2 sharing the KV head) and one copy of the cache remains."""
    assert kv_replication(tiny_llama, 4) == 2 and kv_replication(tiny_llama, 4, 2) == 1
    split, _ = sharded_rows(_whole(trace_of, tiny_llama), 4, tiny_llama, dcp=2)
    rows = split.kind == DECODE
    assert np.all(split.heads[rows] == 2) and np.all(split.kv_heads[rows] == 1)
    assert np.all(split.kv_len[rows] == math.ceil((CONTEXT + 1) / 2))
    # A key and a value of 16 per token of the device's KV head, 2 B each.
    assert np.all(split.kv_bytes[rows] == BATCH * math.ceil((CONTEXT + 1) / 2) * 2 * 16 * 2)


@pytest.mark.parametrize("config_name, tp, dcp, allowed", [
    ("tiny_llama", 2, 2, "a divisor of the 1 tp devices"),  # one device a KV head: no copies to split
    ("tiny_llama", 4, 4, "a divisor of the 2 tp devices"),
    ("tiny_mla", 4, 3, "a divisor of the 4 tp devices"),
    ("tiny_opt", 4, 2, "a divisor of the 1 tp devices"),
])
def test_dcp_must_split_the_copies_of_a_kv_head(request, config_name, tp, dcp, allowed):
    config = request.getfixturevalue(config_name)
    with pytest.raises(ValueError, match=f"found {dcp}, allowed: {allowed}"):
        check_decode_context_parallel(config, tp, dcp)


def test_a_system_prices_a_group_s_collectives_over_its_devices():
    """An all-gather and a reduce-scatter of 1 MB over 2 of 8 H100s on the datasheet NVLink 4 (450 GB/s a direction,
    the preset's latency a step): (n - 1) / n x S / B + (n - 1) x a with n = 2, not 8."""
    link = load_link_model("nvlink4", calibrated=False)
    system = SystemModel(load_device("h100-sxm"), 8, link)
    after = Kernel(kind=KernelKind.ELEMENTWISE, op="add", flops=0.0, weight_bytes=0.0, act_bytes=8.0, kv_bytes=0.0,
                   dtype="bf16", tensor_core=False)
    rows = [Kernel(kind=kind, op=kind.value, flops=0.0, weight_bytes=0.0, act_bytes=1e6, kv_bytes=0.0, dtype="bf16",
                   tensor_core=False, batch=2) for kind in (KernelKind.ALL_GATHER, KernelKind.REDUCE_SCATTER)]
    costs = system.cost_table(KernelTable.from_kernels([after, *rows]))
    by_hand = 0.5 * 1e6 / (link.spec.bandwidth_GBps * 1e9) + 1 * link.spec.latency_us * 1e-6
    assert costs.time_s[1:] == pytest.approx([by_hand, by_hand], rel=1e-12)
