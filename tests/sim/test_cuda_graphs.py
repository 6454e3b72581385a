"""A serving engine's passes as vLLM v1 runs them on CUDA graphs (sim/cuda_graphs.py, IterationCostModel.launched):
decode batches padded to a captured size and replayed from full graphs, mixed passes replayed from piecewise graphs
with their attention launched from the host, passes past the largest captured size launched from the host.

Expected sizes come from vLLM's capture list (vllm/config/vllm.py at 000fc94, _set_cudagraph_sizes: 1, 2, 4, the
multiples of 8 below 256, the multiples of 16 from 256 to 512); expected times are the priced kernels summed by hand
with the H100 preset's launch costs (kernel_launch_us 2.1, graph_launch_us 1.3)."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.kernel import KernelKind
from kernels.shapes import StepShape, step_shape
from kernels.table import KIND_CODE
from sim.costs import IterationCostModel
from sim.cuda_graphs import CaptureLimits, capture_sizes, engine_launch

STREAM_LAUNCH_S, GRAPH_NODE_S = 2.1e-6, 1.3e-6  # hw_models/presets/h100-sxm.yaml overhead


@pytest.fixture(scope="module")
def engine(costs) -> IterationCostModel:
    """The tiny Llama's serving iterations on an H100 under a serving engine (vLLM)."""
    return IterationCostModel(costs.device, costs.template, execution="engine")


def test_vllms_default_capture_sizes():
    """1, 2, 4, 31 multiples of 8 (8 to 248) and 17 of 16 (256 to 512), as vLLM's formula lists them by hand."""
    sizes = capture_sizes()
    assert sizes[:5] == (1, 2, 4, 8, 16) and sizes[-3:] == (480, 496, 512)
    assert len(sizes) == 3 + 31 + 17 and 248 in sizes and 264 not in sizes and 272 in sizes


@pytest.mark.parametrize(("tokens", "uniform", "mode", "runs"), [
    (37, True, "graphs", 40), (40, True, "graphs", 40), (3, True, "graphs", 4), (257, True, "graphs", 272),
    (37, False, "piecewise", 40), (512, False, "piecewise", 512), (513, True, "engine", 513),
    (2048, False, "engine", 2048)])
def test_a_pass_runs_at_the_next_captured_size_or_from_the_host(tokens, uniform, mode, runs):
    launch = engine_launch(tokens, uniform_decode=uniform)
    assert (launch.mode, launch.tokens) == (mode, runs)


def test_a_speculative_decode_runs_at_a_captured_multiple_of_its_query():
    """7 sequences verifying 3 tokens each (21): the next captured size that a full graph's key allows is 24 (a
    multiple of 3); 9 sequences of 3 (27): 48, past 32 and 40 (not multiples of 3)."""
    assert engine_launch(21, uniform_decode=True, query=3).tokens == 24
    assert engine_launch(27, uniform_decode=True, query=3).tokens == 48


def _table_s(model: IterationCostModel, shape: StepShape, mode: str) -> float:
    """The kernels the template gives `shape`, priced in launch mode `mode` and summed by hand."""
    table, counts = model.template.stage_table(shape, 1)
    return float(model.device.cost_table(table, mode).time_s @ counts[0])


def test_a_decode_of_37_runs_40_tokens_outside_attention_and_37_sequences_of_attention(engine):
    """37 decodes run as vLLM's captured 40: 3 padding tokens through every GEMM, 37 sequences' attention, the LM head
    on the 37 sampled tokens; the pass replays a full graph."""
    shape = step_shape(decode_kv=[300] * 37, sampled=37)
    run = engine.launched(shape)
    assert run.tokens == 40 and run.padding == 3
    table, _ = engine.template.stage_table(run, 1)
    attention = table.decode_attention_mask
    assert set(table.batch[attention].tolist()) == {37.0}  # the real sequences attend
    rows = np.unique(np.round(table.m[table.kind == KIND_CODE[KernelKind.GEMM]], 9))  # the template's affine fit
    assert rows.tolist() == [37.0, 40.0]  # the LM head's 37 sampled rows, every other GEMM's 40
    assert engine.price(shape).time_s == pytest.approx(_table_s(engine, run, "graphs"), rel=1e-12)
    assert engine.price(shape).time_s > _table_s(engine, shape, "graphs")


def test_a_batch_at_a_captured_size_runs_unpadded(engine, costs):
    """40 decodes are a captured size: the engine's pass is the full graph of 40, as the graphs execution prices it."""
    shape = step_shape(decode_kv=[300] * 40, sampled=40)
    assert engine.launched(shape) == shape
    assert engine.price(shape).time_s == costs.price(shape).time_s


@pytest.mark.parametrize("decodes", range(1, 70))
def test_padding_never_makes_a_pass_faster(engine, decodes):
    """Padded or not, a pass costs at least its own tokens' kernels in its launch mode: decodes alone, and beside a
    16-token chunk (piecewise)."""
    alone = step_shape(decode_kv=[200] * decodes, sampled=decodes)
    mixed = step_shape([(16, 0)], [200] * decodes, sampled=decodes)
    assert engine.price(alone).time_s >= _table_s(engine, alone, "graphs") * (1 - 1e-12)
    assert engine.price(mixed).time_s >= _table_s(engine, mixed, "piecewise") * (1 - 1e-12)


def test_a_mixed_pass_replays_its_pieces_and_launches_its_attention(engine):
    """A 12-token chunk beside 4 decodes (16 tokens, a captured size): every kernel but attention is a graph node
    (1.3 us) where a host launch would take 2.1 us, so the pass is the host-launched one less 0.8 us a kernel outside
    attention; its attention kernels keep their launch."""
    shape = step_shape([(12, 0)], [100] * 4, sampled=5)
    assert engine.launched(shape) == shape
    table, counts = engine.template.stage_table(shape, 1)
    pieces = float(counts[0][~table.attention_mask].sum())
    launched_s = _table_s(engine, shape, "engine")
    assert engine.price(shape).time_s == pytest.approx(launched_s - pieces * (STREAM_LAUNCH_S - GRAPH_NODE_S),
                                                       rel=1e-9)


@pytest.mark.parametrize("chunk", [1, 5, 12, 100, 300, 500])
def test_a_piecewise_pass_is_never_slower_than_launched_from_the_host_at_the_same_padding(engine, chunk):
    shape = engine.launched(step_shape([(chunk, 0)], [100] * 4, sampled=5))
    assert engine.price(shape).time_s <= _table_s(engine, shape, "engine")


def test_a_pass_past_the_largest_captured_size_launches_from_the_host_unpadded(engine):
    """A 600-token chunk: no captured size holds it, so every kernel launches from the host at its own tokens."""
    shape = step_shape([(600, 0)], sampled=1)
    assert engine.launched(shape) == shape
    assert engine.price(shape).time_s == pytest.approx(_table_s(engine, shape, "engine"), rel=1e-12)


def test_a_cascaded_decode_runs_piecewise(engine):
    """vLLM's dispatcher skips the full graphs for a batch that cascades a shared prefix: its piecewise graphs, padded
    to the captured size (10 sequences: 16)."""
    shape = step_shape(decode_kv=[8192 + 100] * 10, sampled=10, shared_prefix=8192)
    run = engine.launched(shape)
    assert run.tokens == 16
    assert engine._price_kernels(run).time_s == pytest.approx(_table_s(engine, run, "piecewise"), rel=1e-12)
    assert engine.price(shape).time_s <= engine.price(shape.paged()).time_s


# ---- the largest captured size follows the scheduler's limits ---------------------------------------------------
# vllm/config/vllm.py at 000fc94, _set_cudagraph_sizes: min(max_num_seqs x decode_query_len x 2, 512), then the min of
# that and max_num_batched_tokens. By hand: max_num_seqs 64 gives 128; 256 with a budget of 300 gives 300, whose grid
# ends at 288 (256, 272, 288); 16 sequences verifying 3 tokens give 96.
SIXTY_FOUR = CaptureLimits(max_seqs=64)


@pytest.mark.parametrize(("limits", "query", "largest"), [
    (CaptureLimits(), 1, 512), (SIXTY_FOUR, 1, 128), (CaptureLimits(max_seqs=256, max_batched_tokens=300), 1, 300),
    (CaptureLimits(max_seqs=16), 3, 96), (CaptureLimits(max_seqs=1), 1, 2), (CaptureLimits(max_batched_tokens=8192), 1,
                                                                                512)])
def test_the_largest_captured_size_follows_max_seqs_and_the_token_budget(limits, query, largest):
    assert limits.largest(query) == largest


@pytest.mark.parametrize(("tokens", "uniform", "mode", "runs"), [
    (130, True, "engine", 130), (130, False, "engine", 130), (129, True, "engine", 129),
    (121, True, "graphs", 128), (121, False, "piecewise", 128), (128, False, "piecewise", 128),
    (512, False, "engine", 512)])
def test_with_64_sequences_a_pass_past_128_tokens_launches_from_the_host(tokens, uniform, mode, runs):
    """max_num_seqs 64 (examples/serving.yaml): vLLM captures up to 128 tokens, so a 130-token decode or a 512-token
    chunk launches from the host unpadded, and a 121-token pass still pads to 128 (120 is itself captured)."""
    launch = engine_launch(tokens, uniform_decode=uniform, limits=SIXTY_FOUR)
    assert (launch.mode, launch.tokens) == (mode, runs)


def test_a_budget_of_300_captures_up_to_288():
    limits = CaptureLimits(max_batched_tokens=300)
    assert capture_sizes(1, limits.largest())[-3:] == (256, 272, 288)
    assert engine_launch(290, uniform_decode=False, limits=limits) == engine_launch(290, uniform_decode=False,
                                                                                    limits=CaptureLimits(max_seqs=8))
    assert engine_launch(290, uniform_decode=False, limits=limits).mode == "engine"


def test_a_speculative_decode_past_its_lowered_ceiling_launches_from_the_host():
    """16 sequences verifying 3 tokens: the ceiling is 96, so 33 sequences (99 tokens) launch from the host, 32 (96)
    replay the full graph of 96."""
    limits = CaptureLimits(max_seqs=16)
    assert engine_launch(99, uniform_decode=True, query=3, limits=limits).mode == "engine"
    assert engine_launch(96, uniform_decode=True, query=3, limits=limits) == engine_launch(96, uniform_decode=True,
                                                                                           query=3)


def test_a_cost_model_under_64_sequences_prices_a_300_token_chunk_from_the_host_unpadded(costs):
    """The 300-token chunk the default limits pad to 304 (piecewise) runs unpadded from the host under max_seqs 64."""
    model = IterationCostModel(costs.device, costs.template, execution="engine", capture=SIXTY_FOUR)
    shape = step_shape([(300, 0)], sampled=1)
    assert model.launched(shape) == shape
    assert model.price(shape).time_s == pytest.approx(_table_s(model, shape, "engine"), rel=1e-12)
    assert IterationCostModel(costs.device, costs.template, execution="engine").launched(shape).tokens == 304


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="max_seqs 0"):
        CaptureLimits(max_seqs=0)
