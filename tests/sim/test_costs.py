"""The iteration cost model's choices (sim/costs.py): an iteration that may cascade a shared prefix does so only
where that is the cheaper, as an engine decides per step."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.shapes import StepShape, step_shape
from sim.costs import IterationCostModel
from sim.step_costs import pass_execution


@pytest.mark.parametrize(("seqs", "prefix", "own"), [(2, 32, 4), (8, 96, 40), (64, 1024, 100), (64, 4096, 100)])
def test_a_cascadable_iteration_costs_the_cheaper_of_cascade_and_paged(costs, seqs, prefix, own):
    """The tiny Llama's decode of `seqs` sequences after a shared prefix: priced as the cheaper of reading the prefix
    once (one kernel more) and per sequence; where the extra kernel's launch outweighs the bytes it saves (short
    prefixes, few sequences) that is the paged price exactly, as vLLM's use_cascade_attention declines to cascade."""
    kv = [prefix + own] * seqs
    cascade = step_shape(decode_kv=kv, sampled=seqs, shared_prefix=prefix)
    paged = step_shape(decode_kv=kv, sampled=seqs)
    assert cascade.paged() == paged
    assert costs.price(cascade).time_s == min(costs.price(paged).time_s, costs._price_kernels(cascade).time_s)
    if seqs == 2:
        assert costs.price(cascade).time_s == costs.price(paged).time_s


def test_a_long_prefix_over_many_sequences_cascades(costs):
    """64 sequences after 8,192 shared tokens: reading the prefix once is the cheaper, and the cost model takes it
    (after 4,096 the tiny model's prefix kernel and the merge of the two kernels' outputs cost about what they
    save)."""
    kv = [8192 + 100] * 64
    cascade = step_shape(decode_kv=kv, sampled=64, shared_prefix=8192)
    assert costs.price(cascade).time_s < costs.price(step_shape(decode_kv=kv, sampled=64)).time_s


@pytest.mark.parametrize("groups", [1, 2, 4, 8, 16, 32])
@pytest.mark.parametrize("prefix", [32, 1024, 4096])
def test_cascade_over_groups_is_never_slower_than_paged(costs, groups, prefix):
    """64 sequences after `groups` prefixes (each its share of them): the step is priced as the cheaper of the
    prefixes read once per group and every sequence reading its copy, so never slower than paged."""
    kv = [prefix + 100] * 64
    shape = step_shape(decode_kv=kv, sampled=64, shared_prefix=prefix, prefix_groups=[i % groups for i in range(64)])
    assert shape.decode_shared_groups == groups
    paged = costs.price(step_shape(decode_kv=kv, sampled=64)).time_s
    assert costs.price(shape).time_s == min(paged, costs._price_kernels(shape).time_s) <= paged


def test_more_groups_read_more_prefix_bytes_and_are_priced_apart(costs):
    """64 sequences after an 8,192-token prefix, in one group and in eight: the same keys attended (the memo must not
    take one for the other), eight prefixes' bytes read instead of one, so eight groups cost more, and both less
    than paged."""
    kv = [8192 + 100] * 64
    one = step_shape(decode_kv=kv, sampled=64, shared_prefix=8192)
    eight = step_shape(decode_kv=kv, sampled=64, shared_prefix=8192, prefix_groups=[i % 8 for i in range(64)])
    bucketed = IterationCostModel(costs.device, costs.template, execution=costs.execution, kv_bucket_tokens=16)
    for model in (costs, bucketed):
        assert model._bucket(one) != model._bucket(eight)
        assert model._representative(model._bucket(eight)) == eight
    paged = costs.price(one.paged()).time_s
    assert costs.price(one).time_s < costs.price(eight).time_s < paged
    assert costs.price(one).memory_J < costs.price(eight).memory_J


@pytest.mark.parametrize("first, second, execution", [
    # The final norm and LM head run on the sampled sequences: a chunk that finishes its prompt, and one that does not.
    (StepShape(prefill_seqs=2, prefill_tokens=64, prefill_pairs=1056, decode_seqs=8, decode_kv=4000, sampled=10,
               positions=32),
     StepShape(prefill_seqs=2, prefill_tokens=64, prefill_pairs=1056, decode_seqs=8, decode_kv=4000, sampled=9,
               positions=32), "graphs"),
    # The rotary table has a row per position of the longest query: chunks of 32 + 32 tokens, and of 40 + 24.
    (StepShape(prefill_seqs=2, prefill_tokens=64, prefill_pairs=1056, sampled=2, positions=32),
     StepShape(prefill_seqs=2, prefill_tokens=64, prefill_pairs=1056, sampled=2, positions=40), "graphs"),
])
def test_rows_outside_attention_are_kept_apart_by_sampled_sequences_and_positions(costs, first, second, execution):
    """The rows outside attention are priced once per tokens, sampled sequences, longest query and launch mode, and
    kept (IterationCostModel._whole_rows; an engine's passes of equal tokens launch those rows alike, from graphs
    within its largest captured size and from its host beyond it): two iterations of the same tokens that differ in one
    of the others, priced one after the other, each cost what it costs on a model that priced nothing before, and the
    rows outside attention of the two do cost apart (a key that left that one out would give the second the first's)."""
    model = IterationCostModel(costs.device, costs.template, execution=execution)
    assert first.tokens == second.tokens
    linear = [costs.device.cost_table(costs.template.linear_table(shape)[0], pass_execution(
        costs.device, execution, decode_only=shape.prefill_seqs == 0, tokens=shape.tokens)).time_s
        for shape in (first, second)]
    assert not np.array_equal(*linear)
    model.price(first)
    fresh = IterationCostModel(costs.device, costs.template, execution=execution).price(second)
    kept = model.price(second)
    assert (kept.time_s, kept.compute_J, kept.memory_J) == (fresh.time_s, fresh.compute_J, fresh.memory_J)
    assert np.array_equal(kept.class_time_s, fresh.class_time_s)



# Iterations of 68 tokens, 5 sampled sequences and a longest query of 64 (the rows outside attention the same), whose
# attention differs in one term each or in the kernels it runs, and one more.
_PREFILL_DECODE = StepShape(prefill_seqs=1, prefill_tokens=64, prefill_pairs=2080, decode_seqs=4, decode_kv=800,
                            sampled=5, positions=64)
_ATTENTION_VARIANTS = (
    _PREFILL_DECODE,
    replace(_PREFILL_DECODE, prefill_cached=512),  # the chunk reads a cached prefix: its keys and KV bytes
    replace(_PREFILL_DECODE, decode_kv=3200),  # the decodes read four times the keys
    replace(_PREFILL_DECODE, prefill_seqs=2, prefill_pairs=1056),  # two chunks of 32: their sequences and query length
    replace(_PREFILL_DECODE, estimate_pairs=1024),  # a block-sparse prefill's estimate runs first
    replace(_PREFILL_DECODE, prefill_scored_share=0.5, prefill_score_B=4.0),  # half the heads keep their scores
    replace(_PREFILL_DECODE, decode_shared_kv=512, decode_shared_seqs=4, decode_shared_groups=1),  # a cascade
    replace(_PREFILL_DECODE, decode_shared_kv=2048, decode_shared_seqs=4, decode_shared_groups=1),
    replace(_PREFILL_DECODE, decode_shared_kv=512, decode_shared_seqs=4, decode_shared_groups=2),
    StepShape(prefill_seqs=1, prefill_tokens=68, prefill_pairs=2346, sampled=5, positions=64),  # a prefill alone
    replace(_PREFILL_DECODE, decode_query=2, decode_seqs=2, decode_kv=400),  # two sequences verify two tokens each
    # The chunk (the last 64 tokens of a prompt, every head D2O's) ends it past a budget of 3,000 and merges the 1,000
    # tokens it evicts, or 2,000 past one of 2,000, or its 1,000 at an 8-bit cache's keys.
    *(replace(_PREFILL_DECODE, prefill_scored_share=1.0, prefill_score_B=10.0, prefill_merges=1,
              prefill_evicted=evicted, prefill_budget=budget, prefill_key_B=key_B)
      for evicted, budget, key_B in ((1000, 3000, 2.0), (2000, 2000, 2.0), (1000, 3000, 1.0))),
    # Decodes alone, cascaded: three kernels, as many as the estimate, the prefill and the decodes above.
    StepShape(decode_seqs=8, decode_kv=1600, decode_shared_kv=1024, decode_shared_seqs=8, decode_shared_groups=2,
              sampled=8),
)


@pytest.mark.parametrize("device", ["h100-sxm", "neupims", "ampere-altra", "alveo-u280"])
def test_iterations_differing_in_one_attention_term_each_cost_what_a_fresh_model_prices(costs, device):
    """Iterations whose rows outside attention are the same and whose attention differs in one term each (a cached
    prefix, the decodes' keys, the chunks' sequences, a shared prefix's length or groups) or in the kernels it runs
    (a block-sparse estimate, scored heads, a cascade and its merge, D2O's merge of what a prefill evicts, no
    decodes), priced one after the other by one
    model, each cost what a model of a fresh template (no kept attention rows, no kept rows outside attention)
    prices for it alone, on a GPU, NeuPIMs, a CPU and an FPGA: a kept attention frame or kept class masks and counts
    that one of these terms or parts should have set (a wrong key, a column not refilled) would give an iteration
    another's attention. The iterations cost apart, so that taking one for another shows."""
    model = IterationCostModel(load_device(device), costs.template, execution=costs.execution)
    # Each iteration as it runs (its cascade, where it has one), and as price weighs it against its paged iteration.
    kept = [(model._price(shape), model.price(shape)) for shape in _ATTENTION_VARIANTS]
    for shape, costs_kept in zip(_ATTENTION_VARIANTS, kept, strict=True):
        fresh = IterationCostModel(model.device, replace(costs.template), execution=costs.execution)
        for cost, alone in zip(costs_kept, (fresh._price(shape), fresh.price(shape)), strict=True):
            assert (cost.time_s, cost.compute_J, cost.memory_J) == (alone.time_s, alone.compute_J, alone.memory_J)
            assert np.array_equal(cost.class_time_s, alone.class_time_s), shape
    # NeuPIMs' banks run each query as one GEMV over its keys, so two iterations reading as many keys a query cost
    # alike there: the two-token verifications beside the single decodes (0 and 10), and a shared prefix read in one
    # group or two (6 and 8). Every other device tells all fifteen apart.
    alike = 2 if device == "neupims" else 0
    assert len({(run.time_s, run.memory_J) for run, _ in kept}) == len(kept) - alike


# ---- sub-batch interleaving on a device of several units (NeuPIMs: NPU and PIM) ----------------------------------


@pytest.fixture(scope="module")
def neupims(evaluator):
    """GPT-3 7B on one NeuPIMs device (with the paper's four devices' memory: no timing depends on it), its serving
    iterations' cost model, and a function giving the static path's decode step (sim/step_costs.py price_passes:
    the traced kernels in their order, sub-batches scheduled segment by segment)."""
    from explore.design_point import DesignPoint
    from sim.serving_spec import ServingSpec
    from sim.step_costs import price_passes
    from sim.workload import BatchWorkload

    what_if = (("memory.capacity_GB", 128),)
    point = DesignPoint(model="gpt3-7b", device="neupims", batch=512, prompt=0, output=0,
                        serving=ServingSpec(max_seqs=512), overrides=what_if)
    costs = evaluator.cost_model(point, point.numeric_format)

    def static_step_s(batch: int, context: int) -> float:
        static = DesignPoint(model="gpt3-7b", device="neupims", batch=batch, prompt=context, output=2,
                             overrides=what_if)
        device = evaluator.point_device(static)
        passes = price_passes(device, evaluator.point_tables(static, device),
                              BatchWorkload(batch=batch, prompt_len=context, output_len=2))
        return max(passes.decode_offsets_s)  # one decode step, its sub-batches' last to finish

    return costs, static_step_s


@pytest.mark.parametrize(("batch", "context", "split"), [(64, 272, False), (512, 272, True), (256, 1024, True)])
def test_a_neupims_decode_iteration_interleaves_as_the_static_path_does(neupims, batch, context, split):
    """A serving decode iteration on NeuPIMs takes the static path's decode step within 2%, whether both interleave
    two sub-batches (one's attention in the PIM banks while the other's GEMMs run on the NPU) or, at a small batch
    where each sub-batch's second weight read costs more than the overlap saves, both decode whole. The static path
    schedules the traced kernels in their order; a serving iteration schedules each layer's NPU work then its PIM
    work (sim/costs.py), so they differ by where in a layer its work after the attention runs."""
    costs, static_step_s = neupims
    shape = step_shape([], [context] * batch, sampled=batch)
    iteration_s = costs.price(shape).time_s
    assert iteration_s == pytest.approx(static_step_s(batch, context), rel=0.02)
    whole_s = costs._price_whole(shape).time_s
    assert (iteration_s < 0.9 * whole_s) if split else (iteration_s == whole_s)


def test_an_interleaved_iteration_is_bounded_by_its_busiest_unit_and_sums_its_energy(neupims):
    """Two sub-batches of 256 of a 512-sequence decode: no schedule beats the busiest unit's total work nor a
    sub-batch's own chain; the energy is the two sub-batches' priced apart, summed."""
    costs, _ = neupims
    shape = step_shape([], [272] * 512, sampled=512)
    interleaved = costs._price_interleaved(shape, 2)
    halves = [costs._price_whole(share) for share in shape.shares(2)]
    assert interleaved.time_s >= max(half.time_s for half in halves)
    busy = {}  # each unit's work over both halves, from the kernels' own costs
    for share in shape.shares(2):
        table, counts = costs.template.stage_table(share, 1)
        priced = costs.device.cost_table(table, "eager")
        for unit in set(priced.unit_index.tolist()):
            busy[unit] = busy.get(unit, 0.0) + float((priced.time_s * counts[0])[priced.unit_index == unit].sum())
    assert interleaved.time_s >= max(busy.values()) * (1 - 1e-12)
    assert interleaved.compute_J == pytest.approx(sum(half.compute_J for half in halves))
    assert interleaved.memory_J == pytest.approx(sum(half.memory_J for half in halves))
    assert interleaved.class_time_s.sum() == pytest.approx(sum(half.class_time_s.sum() for half in halves))


# ---- token splitting on tensor-parallel devices (TokenWeave) ------------------------------------------------------


@pytest.fixture(scope="module")
def tokenweave(evaluator):
    """Llama-3-70B over eight H100s all-reducing through the NVSwitch (TokenWeave's setting), its serving iterations'
    cost model with token splitting and without."""
    from explore.design_point import DesignPoint, with_knobs
    from sim.serving_spec import ServingSpec

    def model(overlap: str):
        point = DesignPoint(**with_knobs(dict(model="llama-3-70b", device="h100-sxm", batch=1, prompt=0, output=0,
                                              serving=ServingSpec(), execution="engine", tp=8, allreduce="nvls",
                                              overlap=overlap)))
        return evaluator.cost_model(point, point.numeric_format)

    return model("token_split"), model("none")


def test_a_split_prefill_overlaps_all_reduces_and_is_bounded_by_its_busiest_unit(tokenweave):
    """An 8,192-token prefill in two halves: faster than run whole, yet never faster than the halves' compute alone
    nor their all-reduces alone (each unit serves one half at a time), nor a half's own chain; its energy and busy
    time by class are the halves' run whole, summed."""
    from kernels.kernel import KernelKind
    from kernels.table import KIND_CODE
    from sim.step_costs import pass_execution

    split_model, whole_model = tokenweave
    mode = pass_execution(split_model.device, "engine", decode_only=False, tokens=8192)
    shape = step_shape([(8192, 0)], [], sampled=1)
    # Priced as it is, not as its bucket's representative (price() rounds the causal pairs to a KV bucket).
    split, whole = split_model._price_kernels(shape), whole_model._price_kernels(shape)
    assert split.time_s < 0.9 * whole.time_s
    halves = [split_model._price_whole(half) for half in shape.token_halves()]
    assert split.time_s >= max(half.time_s for half in halves)
    busy = [0.0, 0.0]  # the devices' compute and the link's all-reduces, over both halves, from the kernels' costs
    for half in shape.token_halves():
        table, counts = split_model.template.stage_table(half, 1)
        time_s = split_model.device.cost_table(table, mode).time_s * counts[0]
        reduces = table.kind == KIND_CODE[KernelKind.ALL_REDUCE]
        busy[0] += float(time_s[~reduces].sum())
        busy[1] += float(time_s[reduces].sum())
    assert split.time_s >= max(busy) * (1 - 1e-12)
    assert split.compute_J == pytest.approx(sum(half.compute_J for half in halves))
    assert split.memory_J == pytest.approx(sum(half.memory_J for half in halves))
    assert split.class_time_s == pytest.approx(sum(half.class_time_s for half in halves))


def test_a_small_decode_runs_whole(tokenweave):
    """Eight decoding sequences: each half would read the weights again, so the iteration runs whole, as without
    splitting."""
    split_model, whole_model = tokenweave
    shape = step_shape([], [1024] * 8, sampled=8)
    split, whole = split_model.price(shape), whole_model.price(shape)
    assert (split.time_s, split.compute_J, split.memory_J) == (whole.time_s, whole.compute_J, whole.memory_J)


def test_token_split_on_one_stage_only(costs):
    from sim.costs import IterationCostModel

    for kwargs in (dict(overlap="tokenweave"), dict(overlap="token_split", stages=2, send_B_per_token=1.0)):
        with pytest.raises(ValueError, match="overlap"):
            IterationCostModel(costs.device, costs.template, **kwargs)


@pytest.mark.parametrize("shape", [step_shape([(512, 0)], [4096 + 100] * 64, sampled=65, shared_prefix=4096),
                                   step_shape([], [4096 + 100] * 64, sampled=64, shared_prefix=4096)])
def test_an_iteration_cascading_a_shared_prefix_runs_whole_where_others_split(tokenweave, neupims, shape):
    """A cascaded shared prefix has one kernel for every sequence, so that iteration is not dealt in token halves nor
    in sub-batches (it had raised); it is priced as the cheaper of itself run whole and its paged form, which may
    split, so splitting is never slower than not."""
    split_model, whole_model = tokenweave
    assert shape.token_halves() == (shape,)
    cascaded = split_model._price_kernels(shape)
    assert cascaded.time_s == whole_model._price_kernels(shape).time_s
    assert split_model.price(shape).time_s <= whole_model.price(shape).time_s
    costs, _ = neupims
    assert costs._price_kernels(shape).time_s == costs._price_whole(shape).time_s
    assert costs.price(shape).time_s <= costs._price_whole(shape).time_s
