"""Step templates (kernels/shapes.py) against the tracer: re-shaping a model's traced kernels to an iteration must
give what tracing that iteration gives.

The reference is an independent trace of the same pass (trace_model at the shape asked for, lowered and put under
the same numeric format): B prompts of P tokens into an empty cache, or one decode step of B sequences after C
cached tokens. The template is built from four traces at TEMPLATE_PROMPT and batches 1-2 (MoE: enough that every
expert gets a token), so the shapes below are not among the ones it was fitted on. The template merges identical
rows with a count, so what is compared is what pricing sees: column sums weighted by the counts, and the time and
energy a device of each kind charges for the whole pass.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.cascade_merge import MERGE_OP
from kernels.formats import NumericFormat
from kernels.kernel import KernelKind
from kernels.kv_eviction import D2O, H2O, eviction
from kernels.kv_policy import KVPolicy
from kernels.lowering import lower_trace
from kernels.parallel import shard_tensor_parallel, stage_of_layer
from kernels.shapes import PLACE_LAYERS, TEMPLATE_PROMPT, StepShape, StepTemplate, step_shape
from kernels.table import KIND_CODE, KernelTable
from workloads.model_config import ModelConfig, balanced_expert_load
from workloads.op_costs import causal_pairs

FMT = NumericFormat()
# One preset of every device kind: a GPU, the NeuPIMs NPU (with PIM units), a CPU and the FlightLLM FPGA; and H200,
# whose reductions take their serial loads' floor (hw_models/gpu_reduction.py), from their rows in the template.
DEVICES = ("h100-sxm", "neupims", "ampere-altra", "alveo-u280", "h200")
COLUMNS = ("flops", "weight_bytes", "act_bytes", "kv_bytes", "reduce_rows")
# (batch, prompt or context): none is a shape the template traced (batches 1-2 at TEMPLATE_PROMPT tokens).
SHAPES = ((1, 7), (1, 100), (3, 40), (8, 7), (8, 100))
PREFILL_ATTENTION = KIND_CODE[KernelKind.ATTENTION_PREFILL]
DECODE_ATTENTION = KIND_CODE[KernelKind.ATTENTION_DECODE]


def _tracer(trace_of, config: ModelConfig):
    """trace(phase, batch, prompt) as the evaluator captures it: a prefill of `prompt` tokens, or one decode token
    after `prompt` cached tokens."""
    def trace(phase: str, batch: int, prompt: int):
        if phase == "decode":
            return trace_of(config, "decode", batch, 1, prompt)
        return trace_of(config, "prefill", batch, prompt)
    return trace


def _table(trace) -> KernelTable:
    return KernelTable.from_kernels(lower_trace(trace)).with_format(FMT)


@pytest.fixture(scope="module")
def devices():
    loaded = {name: load_device(name) for name in DEVICES}
    assert {device.kind for device in loaded.values()} == {"gpu", "npu", "cpu", "fpga"}
    return loaded


@pytest.fixture(scope="module")
def models(tiny_llama, tiny_opt, tiny_mixtral):
    return {"llama": tiny_llama, "opt": tiny_opt, "mixtral": tiny_mixtral}


@pytest.fixture(scope="module")
def templates(models, trace_of):
    return {name: StepTemplate.from_model(config, FMT, _tracer(trace_of, config)) for name, config in models.items()}


def _reference(trace_of, config, phase: str, batch: int, length: int) -> KernelTable:
    return _table(_tracer(trace_of, config)(phase, batch, length))


def _shape(phase: str, batch: int, length: int, window: int | None = None):
    """The iteration a traced pass is: B whole prompts, or B decode tokens each attending its C cached keys and
    itself."""
    if phase == "prefill":
        return step_shape([(length, 0)] * batch, sampled=batch)
    return step_shape(decode_kv=[length + 1] * batch, sampled=batch, window=window)


def _assert_same_pass(template_table: KernelTable, count: np.ndarray, reference: KernelTable, devices) -> None:
    for column in COLUMNS:
        got = float(getattr(template_table, column) @ count)
        want = float(getattr(reference, column).sum())
        assert got == pytest.approx(want, rel=1e-9), column
    for name, device in devices.items():
        got, want = device.cost_table(template_table), device.cost_table(reference)
        for part in ("time_s", "compute_J", "memory_J", "energy_J"):
            assert float(getattr(got, part) @ count) == pytest.approx(float(getattr(want, part).sum()), rel=1e-9), \
                (name, part)


# One decode token of the MoE model leaves experts idle: test_moe_with_idle_experts_matches_the_trace.
PASSES = [(model, phase, batch, length) for model in ("llama", "opt", "mixtral") for phase in ("prefill", "decode")
          for batch, length in SHAPES if not (model == "mixtral" and phase == "decode" and batch == 1)]


@pytest.mark.parametrize("model,phase,batch,length", PASSES)
def test_template_reproduces_a_traced_pass(models, templates, devices, trace_of, model, phase, batch, length):
    reference = _reference(trace_of, models[model], phase, batch, length)
    table, count = templates[model].table(_shape(phase, batch, length))
    assert count.sum() == len(reference)  # every traced kernel is stood for once
    _assert_same_pass(table, count, reference, devices)


def test_moe_idle_experts_launch_nothing(models, templates, trace_of):
    """One decode token of a model with 4 experts, 2 per token: 2 experts run, 2 launch no kernel. The template
    launches as many kernels as the trace, and exactly the experts balanced routing gives tokens to."""
    config = models["mixtral"]
    assert (config.num_experts, config.experts_per_token) == (4, 2)
    reference = _reference(trace_of, config, "decode", 1, 40)
    table, count = templates["mixtral"].table(_shape("decode", 1, 40))
    assert count.sum() == len(reference)

    def experts(kernels) -> set[int]:
        return {int(k.module.split(".experts.")[1].split(".")[0]) for k in kernels if ".experts." in k.module}

    assert experts(reference.kernels) == experts(table.kernels) == {0, 1}
    assert balanced_expert_load(1, 2, 4) == [1, 1, 0, 0]
    # With every expert busy (3 tokens: 6 assignments over 4 experts), the count is larger by 2 experts' kernels.
    busy = _reference(trace_of, config, "decode", 3, 40)
    assert templates["mixtral"].table(_shape("decode", 3, 40))[1].sum() == len(busy) > len(reference)


def test_moe_with_idle_experts_matches_the_trace(models, templates, devices, trace_of):
    reference = _reference(trace_of, models["mixtral"], "decode", 1, 40)
    table, count = templates["mixtral"].table(_shape("decode", 1, 40))
    _assert_same_pass(table, count, reference, devices)


@pytest.mark.parametrize("ep", [1, 2])
def test_a_tensor_parallel_moe_layer_all_reduces_though_its_last_expert_idles(models, trace_of, devices, ep):
    """On 2 devices every layer all-reduces twice, after attention and after its MoE block, whichever experts got
    tokens. The MoE block's all-reduce follows its last expert in the trace, whose module it takes, but one decode
    token of the tiny Mixtral (4 experts, 2 per token) leaves experts 2 and 3 idle: the template still launches both
    all-reduces of each of the 2 layers, each of the token's hidden state (64 values of 2 B), as the sharded trace
    of that step does."""
    config = models["mixtral"]
    assert (config.num_layers, config.hidden_size, config.dtype) == (2, 64, "bfloat16")

    def shard(table: KernelTable) -> KernelTable:
        return shard_tensor_parallel(table, 2, config, ep)

    template = StepTemplate.from_model(config, FMT, _tracer(trace_of, config), shard=shard)
    reference = shard(_reference(trace_of, config, "decode", 1, 40))
    table, count = template.table(_shape("decode", 1, 40))
    reduces = table.kind == KIND_CODE[KernelKind.ALL_REDUCE]
    assert count[reduces].sum() == 2 * 2 == int((reference.kind == KIND_CODE[KernelKind.ALL_REDUCE]).sum())
    np.testing.assert_allclose(table.act_bytes[reduces], 64 * 2, rtol=1e-9)
    for column in COLUMNS:
        assert float(getattr(table, column) @ count) == pytest.approx(float(getattr(reference, column).sum()),
                                                                      rel=1e-9), column

def test_sliding_window_caps_what_a_decode_token_reads(tiny_llama, trace_of, devices):
    """A 24-token sliding window: a decode step after 60 cached tokens reads 24 keys per sequence, as the trace of
    that step does; without the window it would read 61. The template was traced below the window (17 keys)."""
    window = 24
    config = replace(tiny_llama, name="tiny-mistral", model_type="mistral", sliding_window=window)
    template = StepTemplate.from_model(config, FMT, _tracer(trace_of, config))
    assert TEMPLATE_PROMPT + 1 < window
    batch, context = 2, 60
    shape = _shape("decode", batch, context, window=window)
    assert shape.decode_kv == batch * window
    table, count = template.table(shape)
    _assert_same_pass(table, count, _reference(trace_of, config, "decode", batch, context), devices)
    # By hand: K and V of 2 KV heads of 16 values at 2 bytes, per key and layer; 2 layers.
    key_B = 2 * config.num_kv_heads * config.head_dim * 2
    attention = table.kind == DECODE_ATTENTION
    assert float(table.kv_bytes[attention] @ count[attention]) == batch * window * key_B * config.num_layers
    # Under the window nothing is capped: the same table as without a window.
    short = _shape("decode", batch, 10, window=window)
    assert short == _shape("decode", batch, 10)


def test_sliding_window_caps_what_a_prefill_query_attends_to(tiny_llama, trace_of, devices):
    """A 24-token sliding window over a 60-token prompt: query i attends to min(i + 1, 24) keys (Mistral's window, as
    FlashAttention's window_size runs it), in the traced prefill and in the template's, for whole prompts and for a
    chunk after a cached prefix; counted here key by key."""
    window, batch, prompt = 24, 2, 60
    config = replace(tiny_llama, name="tiny-mistral", model_type="mistral", sliding_window=window)
    template = StepTemplate.from_model(config, FMT, _tracer(trace_of, config))
    assert template.sliding_window == window
    pairs = sum(min(i + 1, window) for i in range(prompt))
    assert pairs == 24 * 25 // 2 + 36 * 24  # against 60 * 61 / 2 = 1,830 without the window
    flops_per_pair = 2 * config.num_heads * 2 * config.head_dim  # QK^T and PV, 2 FLOPs a multiply-add
    reference = _reference(trace_of, config, "prefill", batch, prompt)
    attention = reference.kind == PREFILL_ATTENTION
    assert float(reference.flops[attention].sum()) == batch * pairs * flops_per_pair * config.num_layers
    whole = step_shape([(prompt, 0)] * batch, sampled=batch, prefill_window=template.sliding_window)
    assert whole.prefill_pairs == batch * pairs
    table, count = template.table(whole)
    _assert_same_pass(table, count, reference, devices)
    # A chunk of 10 new tokens after 30 cached: query i sits at position 30 + i and sees min(31 + i, 24) keys.
    chunk = step_shape([(10, 30)], sampled=1, prefill_window=window)
    assert chunk.prefill_pairs == 10 * window
    assert step_shape([(10, 5)], sampled=1, prefill_window=window).prefill_pairs == sum(
        min(5 + i + 1, window) for i in range(10))


def test_a_chunk_with_a_cached_prefix_by_hand(tiny_llama, templates):
    """Prefill chunks of 5 new tokens after 20 cached and of 8 after 30: query i of a chunk with c cached tokens
    sees c + i + 1 keys; the attention reads each chunk's cached keys back from the KV cache."""
    chunks = [(5, 20), (8, 30)]
    shape = step_shape(chunks, sampled=1)
    pairs = sum(cached + i + 1 for new, cached in chunks for i in range(new))
    assert pairs == 5 * 20 + 15 + 8 * 30 + 36
    assert (shape.prefill_seqs, shape.prefill_tokens, shape.prefill_pairs, shape.prefill_cached) == (2, 13, pairs, 50)
    assert (shape.decode_seqs, shape.tokens, shape.positions, shape.sampled) == (0, 13, 8, 1)
    table, count = templates["llama"].table(shape)
    attention = table.kind == PREFILL_ATTENTION
    assert count[attention].tolist() == [tiny_llama.num_layers]
    # K and V, 2 KV heads of 16 dimensions at 2 bytes: 128 bytes per cached key and layer.
    key_B = 2 * tiny_llama.num_kv_heads * tiny_llama.head_dim * 2
    assert key_B == 128
    assert float(table.kv_bytes[attention] @ count[attention]) == 50 * key_B * tiny_llama.num_layers
    # Attention FLOPs: QK^T and PV (2 x head_dim multiply-adds per pair and head, 2 FLOPs each).
    flops_per_pair = 2 * tiny_llama.num_heads * 2 * tiny_llama.head_dim
    assert float(table.flops[attention] @ count[attention]) == pairs * flops_per_pair * tiny_llama.num_layers


def test_a_chunk_against_its_trace(tiny_llama, templates, trace_of):
    """A traced chunk (one step of 8 new tokens after 30 cached, for 2 sequences) moves the same bytes as the
    template's chunk. Its attention is traced non-causal (every query sees all 38 keys), so its FLOPs exceed the
    template's causal pairs by exactly the masked pairs; and it counts the chunk's own new keys as KV reads where
    the template counts them as activations (as in a prefill), so only the total traffic is comparable."""
    batch, new, cached = 2, 8, 30
    reference = _table(trace_of(tiny_llama, "decode", batch, new, cached))
    table, count = templates["llama"].table(step_shape([(new, cached)] * batch, sampled=batch))
    assert count.sum() == len(reference)
    traffic = ("weight_bytes", "act_bytes", "kv_bytes")
    assert sum(float(getattr(table, c) @ count) for c in traffic) == sum(getattr(reference, c).sum() for c in traffic)
    masked = new * (cached + new) - causal_pairs(new, cached + new)
    assert masked == new * (new - 1) // 2
    flops_per_pair = 2 * tiny_llama.num_heads * 2 * tiny_llama.head_dim
    excess = batch * masked * flops_per_pair * tiny_llama.num_layers
    assert float(table.flops @ count) == pytest.approx(reference.flops.sum() - excess, rel=1e-12)


def test_step_shape_sums_over_sequences():
    shape = step_shape([(16, 0), (4, 12)], decode_kv=[10, 50, 300], sampled=4, window=100)
    assert shape.prefill_seqs == 2 and shape.prefill_tokens == 20
    assert shape.prefill_pairs == 16 * 17 // 2 + (4 * 12 + 10)
    assert shape.prefill_cached == 12
    assert shape.decode_seqs == 3 and shape.decode_kv == 10 + 50 + 100  # the window caps the 300
    assert shape.tokens == 23 and shape.positions == 16 and shape.sampled == 4
    empty = step_shape(decode_kv=[5], sampled=1)
    assert empty.positions == 1 and empty.prefill_pairs == 0 and empty.tokens == 1


def test_template_prices_one_layer_of_rows(templates, tiny_llama):
    """Identical kernels of every layer are one row with a count: the layers multiply, the rows do not."""
    template = templates["llama"]
    table, count = template.table(_shape("decode", 4, 40))
    assert template.attention_layers == tiny_llama.num_layers
    assert len(table) < count.sum()
    assert np.all(count >= 1)


def test_layout_flags_follow_the_iteration(models, templates, trace_of):
    """Whether a pointwise kernel takes the contiguous loop can depend on the shape (kernels.lowering.general_layout):
    RoPE's sum of products is over dense tensors at a decode step's one position and over transposed views in a
    prompt. The template gives each iteration the flags of the traced pass it is like, as tracing it would."""
    for phase, batch, length in (("decode", 3, 40), ("prefill", 3, 40)):
        reference = _reference(trace_of, models["llama"], phase, batch, length)
        table, _ = templates["llama"].table(_shape(phase, batch, length))
        rope_add = {bool(k.general_layout) for k in reference.kernels
                    if k.kind == KernelKind.ROPE_PART and k.op == "add"}
        assert rope_add == {phase == "prefill"}
        rows = [i for i, k in enumerate(table.kernels) if k.kind == KernelKind.ROPE_PART and k.op == "add"]
        assert rows and set(table.general_layout[rows].tolist()) == rope_add


def test_duoattention_streaming_heads_window_the_prefill_chunks():
    """A chunk's pairs under a KVPolicy by hand: a quarter of the heads (retrieval) compute every causal pair, the
    rest those inside a 2-token window; a StreamingLLM policy (no retrieval heads) leaves the chunk whole."""
    from kernels.kv_policy import KVPolicy

    duo = KVPolicy(window=2, full_heads=0.25)
    # 4 new tokens, nothing cached: 1+2+3+4 = 10 pairs whole, 1+2+2+2 = 7 windowed; 0.25*10 + 0.75*7 = 7.75
    assert step_shape([(4, 0)], sampled=1, window=duo).prefill_pairs == 8
    # 2 new tokens after 2 cached: 3+4 = 7 whole, 2+2 = 4 windowed; 0.25*7 + 0.75*4 = 4.75
    assert step_shape([(2, 2)], sampled=1, window=duo).prefill_pairs == 5
    assert step_shape([(4, 0)], sampled=1, window=KVPolicy(window=2, full_heads=0.0)).prefill_pairs == 10
    assert step_shape([(4, 0)], sampled=1, window=2).prefill_pairs == 10


def _stage_reference(reference: KernelTable, layers: int, stages: int) -> np.ndarray:
    """The pipeline stage of each traced kernel, found from the trace alone: a decoder layer's kernels on the stage
    stage_of_layer gives the layer, a kernel outside the layers on the first stage if the trace runs it before the
    first layer (the embedding), else on the last."""
    layer = [k.layer for k in reference.kernels]
    first = next(i for i, value in enumerate(layer) if value is not None)
    return np.array([stage_of_layer(value, layers, stages) if value is not None else 0 if i < first else stages - 1
                     for i, value in enumerate(layer)])


@pytest.mark.parametrize("stages", [1, 2, 3, 5])
@pytest.mark.parametrize("model", ["llama", "opt", "mixtral"])
@pytest.mark.parametrize("phase,batch,length", [("prefill", 3, 40), ("decode", 8, 100)])
def test_each_pipeline_stage_runs_the_kernels_of_its_layers(models, trace_of, devices, model, stages, phase, batch,
                                                           length):
    """A five-layer model split over 1-5 stages: each stage's rows of the template, weighted by its counts, carry the
    FLOPs and bytes, and cost the time, of the traced kernels that stage runs (its layers, and the embedding or the
    LM head), and every traced kernel is on exactly one stage."""
    config = replace(models[model], num_layers=5)
    template = StepTemplate.from_model(config, FMT, _tracer(trace_of, config))
    reference = _reference(trace_of, config, phase, batch, length)
    on_stage = _stage_reference(reference, config.num_layers, stages)
    table, counts = template.stage_table(_shape(phase, batch, length), stages)
    assert counts.shape == (stages, len(table))
    assert counts.sum() == len(reference)
    for stage in range(stages):
        _assert_same_pass(table, counts[stage], reference.select(np.flatnonzero(on_stage == stage)),
                          {"h100-sxm": devices["h100-sxm"]})


def test_cascade_attention_reads_the_shared_prefix_once_and_computes_the_same_pairs(templates, devices):
    """Eight sequences decoding after a 96-token shared prefix: cascade attention (its prefix kernel plus the
    per-sequence kernel over each own suffix) computes every (query, key) pair paged attention computes, and reads
    the prefix's keys and values once instead of eight times: 7 x 96 keys x K and V x 2 KV heads x 16 dims x 2 B
    fewer per layer."""
    kv, prefix = [130, 150, 170, 190, 210, 230, 250, 270], 96
    paged = step_shape(decode_kv=kv, sampled=8)
    cascade = step_shape(decode_kv=kv, sampled=8, shared_prefix=prefix)
    assert (cascade.decode_shared_kv, cascade.decode_shared_seqs) == (prefix, 8)
    assert cascade.decode_kv == sum(kv) - 8 * prefix
    template = templates["llama"]
    (paged_table, paged_count), (table, count) = template.table(paged), template.table(cascade)
    attention = np.isin(table.kind, [PREFILL_ATTENTION, DECODE_ATTENTION])
    paged_attention = np.isin(paged_table.kind, [PREFILL_ATTENTION, DECODE_ATTENTION])
    assert attention.sum() == 2 and paged_attention.sum() == 1
    assert float(table.flops[attention] @ count[attention]) == pytest.approx(
        float(paged_table.flops[paged_attention] @ paged_count[paged_attention]), rel=1e-9)
    per_layer_saved_B = 7 * prefix * 2 * 2 * 16 * 2
    saved_B = float(paged_table.kv_bytes @ paged_count) - float(table.kv_bytes @ count)
    assert saved_B == pytest.approx(per_layer_saved_B * template.attention_layers, rel=1e-9)
    # The merge of the two kernels' outputs, in every layer: each of the 8 queries' 4 heads reads two outputs of 16
    # 2-byte values and two 4-byte log-sum-exps and writes one of each (FlashInfer's merge_state_in_place).
    merge = np.array([kernel.op == MERGE_OP for kernel in table.kernels])
    assert merge.sum() == 1 and table.kind[merge][0] == KIND_CODE[KernelKind.ELEMENTWISE]
    assert float(table.act_bytes[merge][0]) == 8 * 4 * 3 * (16 * 2 + 4)
    assert count[merge][0] == template.attention_layers
    # Everything else is the iteration's as paged attention prices it.
    rest = ~attention & ~merge
    assert float(table.flops[rest] @ count[rest]) == float(paged_table.flops[~paged_attention] @
                                                           paged_count[~paged_attention])


def test_the_cascade_merge_runs_over_every_decoding_query_of_the_batch(templates):
    """Eight decoding sequences, six of which share a 96-token prefix and two hold their own copies (group -1): the
    merge runs over all eight queries, as FlashInfer's MultiLevelCascadeAttentionWrapper.run merges every level's
    output for the whole query tensor q it is given (flashinfer/cascade.py: merge_state_in_place(out, lse, out_i,
    lse_i) over every query; a query with no prefix in a level merges an empty state), not over the six alone: each
    query's 4 heads read two outputs of 16 2-byte values and two 4-byte log-sum-exps and write one of each."""
    kv, groups = [130, 150, 170, 190, 210, 230, 250, 270], [0, 0, 0, 0, 0, 0, -1, -1]
    cascade = step_shape(decode_kv=kv, sampled=8, shared_prefix=96, prefix_groups=groups)
    assert (cascade.decode_shared_seqs, cascade.decode_seqs) == (6, 8)
    table, _ = templates["llama"].table(cascade)
    merge = np.array([kernel.op == MERGE_OP for kernel in table.kernels])
    assert float(table.act_bytes[merge][0]) == 8 * 4 * 3 * (16 * 2 + 4)


def test_d2o_merges_nothing_in_a_step_below_its_budget(templates):
    """A budget of 64 kept by H2O's or D2O's scores (the tiny Llama: 4 query heads over 2 KV heads of 16 dims):
    decodes at 50 keys evict nothing, so D2O merges nothing (Wan et al., Section 3.3: it merges evicted tokens) and
    its attention computes what H2O's does; a decode at 100 keys evicts a token a step, and D2O's similarity row adds
    2 x 16 FLOPs per kept key and KV head over H2O's: 64 x 2 x 16 x 2 = 4,096 FLOPs a layer. Before, a step's D2O
    FLOPs took their ratio one token past the budget at every length (its bytes were exact)."""
    template = templates["llama"]
    policies = {method: KVPolicy(window=64, eviction=eviction(method, heads=4, kv_heads=2, head_dim=16,
                                                               kv_element_B=2.0)) for method in (H2O, D2O)}

    def flops(method: str, kv: list[int]) -> float:
        table, count = template.table(step_shape(decode_kv=kv, sampled=len(kv), window=policies[method]))
        rows = table.kind == DECODE_ATTENTION
        return float(table.flops[rows] @ count[rows]) / template.attention_layers

    assert flops(D2O, [50, 50]) == pytest.approx(flops(H2O, [50, 50]), rel=1e-12)
    assert flops(D2O, [100]) - flops(H2O, [100]) == pytest.approx(4096, rel=1e-9)


def test_cascade_attention_pays_off_where_the_prefix_dominates_the_reads(templates, devices):
    """128 sequences after a 4,096-token shared prefix, each with 100 tokens of its own: paged attention reads 128
    copies of the prefix (67 MB a layer of the tiny model), cascade one, and the step is faster on a GPU, though
    it launches two kernels more, the prefix kernel and the merge of the two kernels' outputs (on a step of short
    caches or few sequences those can cost more than the bytes they save, which is why engines cascade only long
    prefixes: here at 64 sequences)."""
    kv = [4096 + 100] * 128
    template, gpu = templates["llama"], devices["h100-sxm"]

    def step_s(shape) -> float:
        table, count = template.table(shape)
        return float(gpu.cost_table(table).time_s @ count)

    paged = step_s(step_shape(decode_kv=kv, sampled=128))
    cascade = step_s(step_shape(decode_kv=kv, sampled=128, shared_prefix=4096))
    assert cascade < paged


def test_cascade_over_three_groups_reads_each_prefix_once_for_its_sequences(templates):
    """Three groups of four sequences decoding after their group's 96-token prefix: the prefix kernel reads three
    prefixes' keys and values, not twelve (3 x 96 keys x K and V x 2 KV heads x 16 dims x 2 B a layer), and computes
    the twelve sequences' queries against 96 keys each (4 heads x 16 dims x 4 FLOPs a pair: QK^T and PV); each
    sequence reads its own tokens past the prefix."""
    prefix, own = 96, [10, 20, 30, 40] * 3
    kv = [prefix + n for n in own]
    shape = step_shape(decode_kv=kv, sampled=12, shared_prefix=prefix, prefix_groups=[0] * 4 + [1] * 4 + [2] * 4)
    assert (shape.decode_shared_groups, shape.decode_shared_kv, shape.decode_shared_seqs) == (3, prefix, 12)
    assert shape.decode_kv == sum(own)
    template = templates["llama"]
    table, count = template.table(shape)
    prefix_row = np.flatnonzero(table.kind == PREFILL_ATTENTION)
    assert len(prefix_row) == 1
    row = prefix_row[0]
    assert float(table.kv_bytes[row]) == pytest.approx(3 * prefix * 2 * 2 * 16 * 2, rel=1e-9)
    assert float(table.flops[row]) == pytest.approx(12 * prefix * 4 * 16 * 4, rel=1e-9)
    assert (float(table.batch[row]), float(table.q_len[row]), float(table.kv_len[row])) == (3.0, 4.0, prefix)
    assert count[row] == template.attention_layers
    # Paged, each of the twelve reads its copy: the same pairs, and twelve prefixes' bytes.
    paged_table, paged_count = template.table(shape.paged())
    assert shape.paged() == step_shape(decode_kv=kv, sampled=12)
    attention = np.isin(table.kind, [PREFILL_ATTENTION, DECODE_ATTENTION])
    paged_attention = np.isin(paged_table.kind, [PREFILL_ATTENTION, DECODE_ATTENTION])
    assert float(table.flops[attention] @ count[attention]) == pytest.approx(
        float(paged_table.flops[paged_attention] @ paged_count[paged_attention]), rel=1e-9)
    saved_B = float(paged_table.kv_bytes @ paged_count) - float(table.kv_bytes @ count)
    assert saved_B == pytest.approx((12 - 3) * prefix * 2 * 2 * 16 * 2 * template.attention_layers, rel=1e-9)


def test_a_group_of_one_sequence_reads_its_prefix_paged():
    """Two sequences of group 0 and one of group 5: group 0's prefix is read once for its two, the lone sequence
    reads its copy with its own tokens; a sequence that does not share the whole prefix (-1) reads its copy too."""
    prefix = 64
    kv = [prefix + 10, prefix + 20, prefix + 30, prefix + 40]
    shape = step_shape(decode_kv=kv, sampled=4, shared_prefix=prefix, prefix_groups=[0, 0, 5, -1])
    assert (shape.decode_shared_groups, shape.decode_shared_seqs) == (1, 2)
    assert shape.decode_kv == 10 + 20 + (prefix + 30) + (prefix + 40)
    alone = step_shape(decode_kv=kv, sampled=4, shared_prefix=prefix, prefix_groups=[0, 1, 2, -1])
    assert alone == step_shape(decode_kv=kv, sampled=4)


@pytest.mark.parametrize("labels", [None, [0] * 8, [7] * 8])
def test_one_group_is_the_one_shared_prefix(templates, labels):
    """Every sequence in one group (or no groups given) gives the one-prefix shape and table, field for field."""
    kv, prefix = [130, 150, 170, 190, 210, 230, 250, 270], 96
    shape = step_shape(decode_kv=kv, sampled=8, shared_prefix=prefix, prefix_groups=labels)
    assert (shape.decode_shared_groups, shape.decode_shared_kv, shape.decode_shared_seqs) == (1, prefix, 8)
    assert shape.decode_kv == sum(kv) - 8 * prefix
    table = templates["llama"].table(shape)[0]
    row = np.flatnonzero(table.kind == PREFILL_ATTENTION)[0]
    assert (float(table.batch[row]), float(table.q_len[row])) == (1.0, 8.0)
    assert float(table.kv_bytes[row]) == pytest.approx(prefix * 2 * 2 * 16 * 2, rel=1e-9)


def test_a_shape_cascading_prefixes_needs_two_sequences_a_prefix():
    with pytest.raises(ValueError, match="two or more sequences a prefix"):
        StepShape(decode_seqs=3, decode_kv=30, decode_shared_kv=8, decode_shared_seqs=3, decode_shared_groups=2)
    with pytest.raises(ValueError, match="two or more sequences a prefix"):
        StepShape(decode_seqs=4, decode_kv=40, decode_shared_kv=8, decode_shared_seqs=4)


@pytest.mark.parametrize("case", ["one sequence", "past the window", "no prefix"])
def test_cascade_attention_shares_only_what_two_or_more_sequences_read_whole(case):
    """One sequence has no one to share with; a sequence whose sliding window has moved past the prefix no longer
    reads it; without a prefix there is nothing to share. Each is priced as paged attention."""
    kv, window, prefix = {"one sequence": ([200], None, 96), "past the window": ([200, 150], 180, 96),
                          "no prefix": ([200, 150], None, 0)}[case]
    shape = step_shape(decode_kv=kv, sampled=len(kv), window=window, shared_prefix=prefix)
    assert shape == step_shape(decode_kv=kv, sampled=len(kv), window=window)


def test_a_block_sparse_prefill_leaves_cascade_decode_as_it_is():
    """SALE's selection (prefill_kept) picks prefill pairs only; decode reads every cached token, so the shared prefix
    is read once as without a policy (2 x 100 tokens of the sequences' own after a 96-token prefix), while a
    selection, which reads tokens of its own choosing, still reads it per sequence."""
    from kernels.block_sparse import PrefillSelection
    from kernels.kv_policy import KVPolicy
    from kernels.token_select import token_selection

    kv, prefix = [196, 196], 96
    sale = KVPolicy(prefill=PrefillSelection(0.5))
    shape = step_shape(decode_kv=kv, sampled=2, window=sale, shared_prefix=prefix)
    assert (shape.decode_shared_kv, shape.decode_shared_seqs, shape.decode_kv) == (96, 2, 200)
    assert shape == step_shape(decode_kv=kv, sampled=2, shared_prefix=prefix)
    picked = KVPolicy(selection=token_selection("quest", 0.5, layers=4, heads=4, kv_heads=4, head_dim=64,
                                                kv_element_B=2.0))
    assert step_shape(decode_kv=kv, sampled=2, window=picked, shared_prefix=prefix).decode_shared_seqs == 0


def test_token_halves_split_a_prompt_at_its_middle():
    """A 1,000-token prompt after 200 cached tokens, beside four decodes: halves of 500 new tokens; the first reads
    the 200 cached, the second those and the first half's 500; the causal pairs by hand, 500 x 200 + 500 x 501 / 2 =
    225,250 and 500 x 700 + 125,250 = 475,250 (of 700,500); the decodes two and two, and the prompt's sampled token
    in the second half, where the prompt ends."""
    shape = step_shape([(1000, 200)], [100, 200, 300, 400], sampled=5)
    first, second = shape.token_halves()
    assert (first.prefill_tokens, second.prefill_tokens) == (500, 500)
    assert (first.prefill_cached, second.prefill_cached) == (200, 700)
    assert (first.prefill_pairs, second.prefill_pairs) == (225_250, 475_250)
    assert first.prefill_pairs + second.prefill_pairs == shape.prefill_pairs == 700_500
    assert (first.decode_seqs, second.decode_seqs) == (2, 2) and first.decode_kv + second.decode_kv == 1000
    assert (first.sampled, second.sampled) == (2, 3) and first.tokens + second.tokens == shape.tokens


def test_token_halves_of_a_decode_deal_its_sequences():
    shape = step_shape([], [64] * 8, sampled=8)
    assert shape.token_halves() == shape.shares(2)
    assert step_shape([], [64], sampled=1).token_halves() == (step_shape([], [64], sampled=1),)


def test_every_row_of_an_iteration_has_its_place_in_the_pass(templates):
    """row_places gives each row of stage_table(shape, 1) its place, the attention rows of every part included (a
    D2O prefill's merge of what it evicts, a cascade's prefix and merge rows, a speculative verification): a row
    without a place broke an NPU+PIM chain of layers (an IndexError on neupims, 48 rows against 47 places, for a D2O
    prefill past its budget)."""
    from hw_models.registry import load_device
    from sim.costs import IterationCostModel

    template, neupims = templates["llama"], load_device("neupims")
    d2o = KVPolicy(window=64, eviction=eviction(D2O, heads=4, kv_heads=2, head_dim=16, kv_element_B=2.0))
    shapes = [step_shape([(100, 0)], [80, 90], sampled=3, window=d2o, finished=[100]),
              step_shape([(30, 0)], [130, 150, 170], sampled=4, shared_prefix=96),
              step_shape(decode_kv=[105, 201], sampled=10, decode_query=5)]
    assert shapes[0].prefill_merges == 1 and shapes[1].decode_shared_seqs == 3
    for shape in shapes:
        table, _ = template.stage_table(shape, 1)
        places = template.row_places(shape, len(table))
        attention = template.attention_table(shape)
        assert (places[len(table) - len(attention):] == PLACE_LAYERS).all()
        # NeuPIMs chains an iteration's layers by these places: it prices every such iteration.
        assert IterationCostModel(neupims, template).price(shape).time_s > 0
