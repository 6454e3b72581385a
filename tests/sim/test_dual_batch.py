"""Dual-batch overlap of data-parallel ranks' all-to-alls (`overlap` dual_batch: sim/data_parallel.py
ExpertRanks.dual_batch and micro_batches, IterationCostModel._micro_batch_chain) against schedules worked by hand and
vLLM's rule for when a batch splits.

The tiny Mixtral (2 layers, each with experts) on two H100s joined by NVLink 4, as tests/sim/test_data_parallel.py
builds it. Each micro-batch is a chain: its head h (the embedding), then in each layer its dense part d (attention
included), its dispatch a, its experts x and its combine a, then its tail t (final norm, LM head, sampling); the two
micro-batches take turns on the devices' compute, the all-to-alls on the link, first come first served (the first
micro-batch first on a tie). Worked by hand for two alike micro-batches over L layers:

- where an all-to-all is no longer than either compute segment (a <= d, a <= x), the compute never waits after the
  heads: h0 h1 d0 d1 x0 x1 d0 d1 ... x0 x1 t0 t1, the last combine hidden behind the first micro-batch's tail unless
  longer: T = 2h + 2L (d + x) + t + max(t, a);
- where an all-to-all is longer than every compute segment (a >= d, x, t), the link never waits after the first
  dense part: h0 h1 d0, then D0 D1 C0 C1 per layer back to back on the link, then the second's tail:
  T = 2h + d + 4 L a + t.

vLLM's rule (vllm-project/vllm vllm/v1/worker/ubatch_utils.py at 015d6f9 check_ubatch_thresholds,
is_last_ubatch_empty; dp_utils.py at 0074614 _post_process_ubatch; thresholds vllm/config/parallel.py at 00193b8): a
rank asks to split from 32 tokens of a decode-only batch or 512 of one with a prefill; every rank must ask (an idle
rank's one-token dummy batch never does); the rank with the fewest tokens must exceed half the most any rank runs.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from hw_models.link import load_link_model
from hw_models.registry import load_device
from hw_models.system import SystemModel
from kernels.mixed_layers import model_template
from kernels.shapes import PLACE_HEAD, PLACE_LAYERS, PLACE_TAIL, StepShape, step_shape
from sim.costs import KERNEL_CLASS_NAMES, IterationCostModel
from sim.data_parallel import ExpertRanks
from tests.explore import test_deepseek_points as deepseek_points
from tests.sim.test_data_parallel import (  # noqa: F401 (templates: the tiny Mixtral's fixture)
    DISPATCH_B_PER_TOKEN,
    LAYERS,
    RANKS,
    _dense_s,
    _experts_s,
    _template,
    split_experts,
    templates,
)
from workloads.model_config import config_from_hf

# Each rank decoding 32 sequences of 100 keys: vLLM's decode threshold exactly, halved into 16 and 16.
DECODES = step_shape(decode_kv=[100] * 32, sampled=32)
HALF = step_shape(decode_kv=[100] * 16, sampled=16)


def _system(overrides: dict | None = None) -> SystemModel:
    """Two H100s over NVLink 4: its fitted collectives, or its datasheet model with `overrides` (a link slower than
    any compute segment)."""
    link = (load_link_model("nvlink4") if overrides is None else
            load_link_model("nvlink4", overrides, calibrated=False))
    return SystemModel(load_device("h100-sxm"), RANKS, link)


def _costs(templates, overlap: str, system: SystemModel | None = None,  # noqa: F811
           execution: str = "graphs") -> IterationCostModel:
    dense, experts = templates
    system = system or _system()
    return IterationCostModel(system, dense, execution=execution, overlap=overlap,
                              experts=ExpertRanks(system, experts, DISPATCH_B_PER_TOKEN, LAYERS))


def _places_s(templates, shape: StepShape) -> tuple[float, float, float]:  # noqa: F811
    """A rank's head, decoder layers and tail of `shape` on one H100 replayed from graphs: its rows' costs by where
    they run in the pass."""
    dense = templates[0]
    table, counts = dense.stage_table(shape, 1)
    time_s = load_device("h100-sxm").cost_table(table, "graphs").time_s * counts[0]
    places = dense.row_places(shape, len(table))
    return tuple(float(time_s[places == place].sum()) for place in (PLACE_HEAD, PLACE_LAYERS, PLACE_TAIL))


def _all_to_all_s(system: SystemModel, tokens: int) -> float:
    """One all-to-all of a rank's `tokens` tokens (each rank's send buffer its tokens' copies to their experts)."""
    return float(system.link.collective_time_s("all_to_all", tokens * DISPATCH_B_PER_TOKEN, RANKS))


def test_where_compute_hides_the_all_to_alls_the_iteration_is_both_micro_batches_compute(templates):  # noqa: F811
    """a = 7 us against d, x of tens of microseconds: T = 2h + 2L (d + x) + t + max(t, a), each micro-batch 16 decodes
    on each rank, the experts on both ranks' 32 tokens."""
    h, layers_s, t = _places_s(templates, HALF)
    assert h + layers_s + t == pytest.approx(_dense_s(templates, HALF), rel=1e-9)  # the parts are the whole
    d, x, a = layers_s / LAYERS, _experts_s(templates, 2 * HALF.tokens) / LAYERS, _all_to_all_s(_system(), 16)
    assert a <= min(d, x)
    expected = 2 * h + 2 * LAYERS * (d + x) + t + max(t, a)
    assert _costs(templates, "dual_batch").price_ranks((DECODES, DECODES)).time_s == pytest.approx(expected, rel=1e-9)


# Links slower than any compute segment, and each rank's decodes: every step of an all-to-all 5 ms long beside 32, or
# 0.1 GB/s (1 Gb Ethernet) without latency beside 512 (a 256-token all-to-all: 55 kB, half of it crossing, 0.27 ms).
SLOW_LINKS = {"latency-bound": ({"latency_us": 5000.0}, 32),
              "bandwidth-bound": ({"bandwidth_GBps": 0.1, "latency_us": 0.0}, 512)}


@pytest.mark.parametrize("name", sorted(SLOW_LINKS))
def test_where_the_all_to_alls_outlast_the_compute_the_link_sets_the_pace(templates, name):  # noqa: F811
    """T = 2h + d + 4 L a + t. Against the whole batch (its parts, then 2 L all-to-alls of both halves' tokens), the
    split hides all compute but the heads, one dense part and a tail behind the link: faster where an all-to-all's
    time is its bytes, but slower where it is its latency, which each micro-batch's all-to-alls pay again."""
    overrides, decodes = SLOW_LINKS[name]
    system = _system(overrides)
    rank, half = (step_shape(decode_kv=[100] * n, sampled=n) for n in (decodes, decodes // 2))
    h, layers_s, t = _places_s(templates, half)
    d, x, a = layers_s / LAYERS, _experts_s(templates, 2 * half.tokens) / LAYERS, _all_to_all_s(system, half.tokens)
    assert a >= max(d, x, t)
    expected = 2 * h + d + 4 * LAYERS * a + t
    cost = _costs(templates, "dual_batch", system).price_ranks((rank, rank))
    assert cost.time_s == pytest.approx(expected, rel=1e-9)
    whole = _costs(templates, "none", system).price_ranks((rank, rank))
    assert whole.time_s == pytest.approx(_dense_s(templates, rank) + _experts_s(templates, 2 * rank.tokens)
                                         + 2 * LAYERS * _all_to_all_s(system, rank.tokens), rel=1e-9)
    assert (cost.time_s < whole.time_s) == (name == "bandwidth-bound")


# Ranks' batches vLLM keeps whole: under a threshold, an idle rank (its one-token dummy batch), a rank with no more
# than half the busiest rank's tokens (its second micro-batch would be padding alone), a prefill under 512 tokens.
WHOLE = {
    "31 decodes each": (step_shape(decode_kv=[100] * 31, sampled=31),) * 2,
    "an idle rank": (DECODES,),
    "32 beside 64 decodes": (DECODES, step_shape(decode_kv=[100] * 64, sampled=64)),
    "a 511-token prefill": (step_shape([(511, 0)], sampled=1), step_shape([(511, 0)], sampled=1)),
}
# ... and batches it splits: at the thresholds, and 33 tokens beside 64 (33 > 64 // 2).
SPLIT = {
    "32 decodes each": (DECODES, DECODES),
    "33 beside 64 decodes": (step_shape(decode_kv=[100] * 33, sampled=33),
                             step_shape(decode_kv=[100] * 64, sampled=64)),
    "512-token prefills": (step_shape([(512, 0)], sampled=1), step_shape([(500, 0)], sampled=1,
                                                                         decode_kv=[100] * 12)),
}


@pytest.mark.parametrize("name", sorted(WHOLE))
@pytest.mark.parametrize("execution", ["graphs", "eager"])
def test_batches_vllm_keeps_whole_cost_what_they_cost_without_overlap(templates, name, execution):  # noqa: F811
    shapes = WHOLE[name]
    split = _costs(templates, "dual_batch", execution=execution).price_ranks(shapes)
    whole = _costs(templates, "none", execution=execution).price_ranks(shapes)
    assert split.time_s == whole.time_s and split.compute_J == whole.compute_J and split.memory_J == whole.memory_J
    assert (split.class_time_s == whole.class_time_s).all()


@pytest.mark.parametrize("name", sorted(SPLIT))
def test_a_split_reads_the_weights_twice_and_is_bounded_by_its_busiest_unit(templates, name):  # noqa: F811
    """Above the thresholds the batch splits whether or not that is faster (vLLM's rule): each micro-batch reads every
    rank's weights and every device's experts again, so it moves more bytes than the whole batch; its time is at least
    the compute of both micro-batches (the ranks' parts and the experts) and at most that plus every all-to-all."""
    shapes = SPLIT[name]
    costs = _costs(templates, "dual_batch")
    split, whole = costs.price_ranks(shapes), _costs(templates, "none").price_ranks(shapes)
    assert split.memory_J > whole.memory_J * (1 + 1e-6)
    first, second = costs.experts.micro_batches(costs.experts.rank_shapes(shapes, costs._launch)[0])
    compute_s = sum(max(_dense_s(templates, shape) for shape in micro) + _experts_s(templates, sum(
        shape.tokens for shape in micro)) for micro in (first, second))
    link_s = sum(2 * LAYERS * _all_to_all_s(_system(), max(shape.tokens for shape in micro))
                 for micro in (first, second))
    assert compute_s * (1 - 1e-9) <= split.time_s <= (compute_s + link_s) * (1 + 1e-9)


def test_each_micro_batch_holds_half_the_padded_tokens_of_every_rank(templates):  # noqa: F811
    """vLLM pads every rank to the busiest rank's tokens where they split, and cuts at half of them: 33 and 64
    decodes run as 32 + 32 tokens each, the 33's second micro-batch 16 decodes and 15 padding."""
    costs = _costs(templates, "dual_batch", execution="eager")
    shapes = SPLIT["33 beside 64 decodes"]
    assert costs.experts.dual_batch(shapes)
    first, second = costs.experts.micro_batches(shapes)
    assert [shape.tokens for shape in first] == [32, 32] and [shape.tokens for shape in second] == [32, 32]
    assert (first[0].decode_seqs, first[0].padding, second[0].decode_seqs, second[0].padding) == (17, 15, 16, 16)
    assert sum(shape.decode_kv for shape in (first[0], second[0])) == 33 * 100


def test_dual_batch_is_refused_where_there_are_no_all_to_alls(templates, split_experts):  # noqa: F811
    """Tensor parallelism's ranks (no experts of their own) and experts split over the ranks (an all-gather and a
    reduce-scatter): vLLM's dual-batch overlap runs beside expert parallelism's all-to-alls only."""
    dense, _ = templates
    with pytest.raises(ValueError, match="overlap: found 'dual_batch' with no data-parallel ranks"):
        IterationCostModel(load_device("h100-sxm"), dense, overlap="dual_batch")
    system = _system()
    with pytest.raises(ValueError, match="overlap: found 'dual_batch' with experts split over the ranks"):
        IterationCostModel(system, dense, overlap="dual_batch",
                           experts=ExpertRanks(system, split_experts, 128.0, LAYERS, exchange="gather"))
    with pytest.raises(ValueError, match="overlap none or dual_batch"):
        IterationCostModel(system, dense, overlap="token_split",
                           experts=ExpertRanks(system, templates[1], DISPATCH_B_PER_TOKEN, LAYERS))


def test_the_time_by_class_counts_both_micro_batches_exchanges(templates):  # noqa: F811
    """The communication class holds every micro-batch's dispatches and combines, 2 L all-to-alls of 16 tokens each."""
    cost = _costs(templates, "dual_batch").price_ranks((DECODES, DECODES))
    assert cost.class_time_s[KERNEL_CLASS_NAMES.index("communication")] == pytest.approx(
        2 * 2 * LAYERS * _all_to_all_s(_system(), 16), rel=1e-9)


# The tiny DeepSeek-V2 of tests/explore/test_deepseek_points.py grown to 4 layers, the first 2 dense
# (first_k_dense_replace), the other 2 each 4 routed experts (2 a token, 2 on each device) and a shared one: a dense
# layer runs its MLP (3 x 64 x 512), an MoE layer its router, top-k and shared expert (64 x 4, 3 x 64 x 32) beside its
# experts, so the two kinds' parts outside the experts differ.
TINY_DEEPSEEK = {**deepseek_points.TINY_DEEPSEEK, "num_hidden_layers": 4, "first_k_dense_replace": 2,
                 "intermediate_size": 512}


def _deepseek_template(config, trace_of, ep: int | None = None):
    """A DeepSeek config's step template as the explorer builds it (its layer kinds and MLA forms mixed:
    kernels/mixed_layers.py model_template), whole (ep None) or one of two devices' with its experts spread (ep 2)."""
    return model_template(lambda variant: _template(variant, trace_of, ep), config)


def test_the_dense_first_layers_run_before_the_first_all_to_all(trace_of):  # noqa: F811
    """Each micro-batch runs its 2 dense layers (D each) after its head and before its first MoE layer's part m, as
    the model orders them: on a link slower than every compute segment, T = 2 (h + 2 D) + m + 4 M a + t (M = 2 MoE
    layers). D and m are the per-layer parts of the same model with every layer dense and with every layer MoE, priced
    apart; spreading the dense layers' work evenly over the layers would be off by 1.5 (D - m)."""
    config = config_from_hf(TINY_DEEPSEEK, name="tiny-deepseek")
    assert (config.dense_layers, config.moe_layers) == (2, 2)
    whole, spread = _deepseek_template(config, trace_of), _deepseek_template(config, trace_of, ep=RANKS)
    system = _system({"latency_us": 5000.0})
    costs = IterationCostModel(system, whole.select_rows(~whole.expert_mask), execution="graphs",
                               overlap="dual_batch",
                               experts=ExpertRanks(system, spread.select_rows(spread.expert_mask),
                                                   DISPATCH_B_PER_TOKEN, config.moe_layers))
    parts = {}
    for name, kind in (("dense", config.num_layers), ("moe", 0)):
        variant = _deepseek_template(replace(config, dense_layers=kind), trace_of)
        parts[name] = _places_s((variant.select_rows(~variant.expert_mask), None), HALF)
    h, t = parts["moe"][0], parts["moe"][2]
    assert (h, t) == pytest.approx((parts["dense"][0], parts["dense"][2]), rel=1e-9)  # the same head and tail
    dense_s, moe_s = parts["dense"][1] / config.num_layers, parts["moe"][1] / config.num_layers
    # At these sizes each kernel is launch-bound, so the MoE layer, launching more kernels, is the longer: either way
    # the dense layers' place in the chain sets the time.
    assert abs(dense_s - moe_s) > 0.05 * moe_s
    routed = IterationCostModel(system, spread.select_rows(spread.expert_mask), execution="graphs").price(
        StepShape(prefill_tokens=2 * HALF.tokens, positions=1)).time_s
    a = _all_to_all_s(system, HALF.tokens)
    assert a >= max(dense_s, moe_s, routed / config.moe_layers, t)
    expected = 2 * (h + config.dense_layers * dense_s) + moe_s + 4 * config.moe_layers * a + t
    assert costs.price_ranks((DECODES, DECODES)).time_s == pytest.approx(expected, rel=1e-9)
