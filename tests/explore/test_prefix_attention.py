"""Cascade attention of a shared prefix in serving runs (serving prefix_attention, kernels/shapes.py step_shape and
StepTemplate._shared_prefix_attention): where it changes nothing, where it saves, and its one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.evaluate import fusion_of
from explore.results import read_results
from hw_models.gpu_attention import decode_like
from kernels.cascade_merge import MERGE_OP
from kernels.formats import NumericFormat
from kernels.kernel import KernelKind
from kernels.shapes import step_shape
from kernels.table import KIND_CODE
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_sweep, write_tiny_model
from workloads.requests import Fixed

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

NAMES = ("ttft_s", "tpot_s", "e2e_s", "energy_per_token_J")


def _point(model: str, attention: str, *, rate: float, requests: int, prompt: int, output: int,
           prefix: int) -> DesignPoint:
    spec = ServingSpec(requests=requests, rate_per_s=rate, prompt=Fixed(tokens=prompt), output=Fixed(tokens=output),
                       prefix_tokens=prefix, prefix_attention=attention, seed=3)
    return DesignPoint(model=model, device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0, serving=spec,
                       execution="engine")


def test_requests_that_never_decode_together_are_priced_alike(tmp_path, tiny_evaluator):
    """Requests a minute apart each decode alone: no other sequence shares the prefix, so cascade attention reads
    what paged attention reads and every request's latency is the same."""
    model = write_tiny_model(tmp_path)
    runs = [tiny_evaluator.evaluate(_point(model, attention, rate=1 / 60, requests=5, prompt=80, output=12,
                                           prefix=64)).metrics for attention in ("paged", "cascade")]
    assert [runs[0][n] for n in NAMES] == [runs[1][n] for n in NAMES]


def test_a_long_shared_prefix_decodes_faster_read_once(evaluator):
    """Llama-3-8B on an H100, 48 requests arriving together, each a 2,048-token shared prefix and 64 tokens of its
    own: a decode step's attention reads the prefix once instead of once per sequence, so the mean time per output
    token falls, and the prefill and memory held are the same."""
    paged, cascade = (evaluator.evaluate(_point("llama-3-8b", attention, rate=1000.0, requests=48, prompt=2112,
                                                output=32, prefix=2048)).metrics for attention in ("paged", "cascade"))
    assert cascade["tpot_s"] < paged["tpot_s"]
    assert cascade["time_attention_s"] < paged["time_attention_s"] / 2
    assert cascade["peak_memory_B"] == paged["peak_memory_B"]


def test_the_merge_of_the_two_kernels_outputs_by_hand(evaluator):
    """Llama-3-8B (32 heads of 128, 32 layers) decoding 64 sequences after one 2,048-token shared prefix on an H100
    SXM: in every layer the merge reads the prefix kernel's and the per-sequence kernel's outputs and log-sum-exps of
    the 64 queries' 32 heads and writes the merged ones (FlashInfer's merge_state_in_place: 16-bit outputs of 128,
    float32 log-sum-exps), 64 x 32 x 3 x (128 x 2 + 4) = 1,597,440 B, an elementwise kernel: the H100's elementwise
    fit (hw_models/calibration/h100-sxm.yaml: 0.9315 us latency, 1.0 of the 3,350 GB/s datasheet bandwidth) and a
    2.1 us stream launch (h100-sxm.yaml kernel_launch_us): 0.9315 + 0.4768 + 2.1 = 3.508 us a layer, 112.3 us a
    step. The step still runs faster than paged attention's, which reads 64 copies of the prefix."""
    template = evaluator.template("llama-3-8b", NumericFormat(), fusion=fusion_of("engine", "gpu"))
    gpu = evaluator.device("h100-sxm")
    kv = [2048 + 64] * 64
    table, count = template.table(step_shape(decode_kv=kv, sampled=64, shared_prefix=2048))
    merge = np.array([kernel.op == MERGE_OP for kernel in table.kernels])
    assert merge.sum() == 1 and table.kind[merge][0] == KIND_CODE[KernelKind.ELEMENTWISE]
    assert float(table.act_bytes[merge][0]) == 64 * 32 * 3 * (128 * 2 + 4) == 1_597_440
    assert count[merge][0] == 32
    costs = gpu.cost_table(table)
    assert float(costs.time_s[merge][0]) == pytest.approx((0.9315 + 1_597_440 / 3350e3 + 2.1) * 1e-6, rel=1e-3)
    assert float(costs.time_s[merge] @ count[merge]) == pytest.approx(112.3e-6, rel=1e-3)
    paged_table, paged_count = template.table(step_shape(decode_kv=kv, sampled=64))
    assert float(costs.time_s @ count) < float(gpu.cost_table(paged_table).time_s @ paged_count)


def test_a_group_s_prefix_kernel_takes_the_fit_its_shape_picks(evaluator):
    """96 Llama-3-8B decodes after 2,048-token prefixes, in two or three groups: the prefix kernel runs each group's
    queries with the 4 query heads of a KV head packed as rows of 128-row tiles (hw_models/gpu_attention.py
    decode_like, as for any attention row). Three groups of 32 queries fill one tile (32 x 4 = 128 rows) and take the
    decode fit; two groups of 48 (192 rows) the prefill fit. The engine runs one kernel whatever the count
    (FlashInfer's cascade a batch prefill at every level, its plan choosing the tile and the KV split from the packed
    queries), so the prefix kernel's time may step down where the fits meet, from two groups to three, though three
    read half as many keys again: a step the two fits make, neither measured there, so its direction is not asserted
    (a measurement at 16-64 queries a group would settle it)."""
    template = evaluator.template("llama-3-8b", NumericFormat(), fusion=fusion_of("engine", "gpu"))
    fits = []
    for groups in (2, 3):
        shape = step_shape(decode_kv=[2048 + 64] * 96, sampled=96, shared_prefix=2048,
                           prefix_groups=[i % groups for i in range(96)])
        table = template.attention_table(shape)
        row = int(np.flatnonzero(table.kind == KIND_CODE[KernelKind.ATTENTION_PREFILL])[0])
        assert (float(table.batch[row]), float(table.q_len[row])) == (groups, 96 / groups)
        assert float(table.kv_bytes[row]) == groups * 2048 * 2 * 8 * 128 * 2  # each group's prefix, K and V
        fits.append(bool(decode_like(table.q_len[row], table.kv_len[row], table.heads[row], table.kv_heads[row])))
    assert fits == [False, True]


def test_a_sweep_compares_paged_and_cascade(tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: prefix\nmodel: {model}\ndevice: h100-sxm\nexecution: engine\nserving:\n"
                                 "  requests: 12\n  rate: 100\n  prompt: 96\n  output: 8\n  prefix_tokens: 64\n"
                                 "  prefix_attention: [paged, cascade]\n")
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = read_results(tmp_path / "out")
    assert sorted(row["prefix_attention"] for row in rows) == ["cascade", "paged"]
    capsys.readouterr()


@pytest.mark.parametrize(("args", "message"), [
    (["--prefix-attention", "cascade"], "--prefix-attention: found 'cascade' with no shared prefix, allowed: with "
                                        "--prefix-tokens N"),
    (["--prefix-attention", "cascade", "--prefix-tokens", "32", "--topk-fraction", "0.25"],
     "--prefix-attention: found 'cascade' with a KV policy"),
])
def test_cascade_without_a_prefix_to_share_is_one_line(tmp_path, capsys, args, message):
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "5", "--requests", "4",
                 "--prompt", "64", "--output", "4", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("value", ["cascade", "paged"])
def test_a_sweep_s_prefix_attention_with_no_prefix_is_one_line(tmp_path, capsys, value):
    """Without a shared prefix no point reads prefix_attention, paged or cascade (as --prefix-attention is refused)."""
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: prefix\nmodel: {model}\ndevice: h100-sxm\nserving:\n"
                                 f"  requests: 4\n  rate: 5\n  prompt: 64\n  output: 4\n  prefix_attention: {value}\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert f"serving.prefix_attention: found '{value}' with no shared prefix" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["run", "check"])
def test_a_prefix_longer_than_the_prompts_cut_to_the_context_is_one_line(tmp_path, capsys, command):
    """3,000-token prompts on the tiny model's 2,048-token context are cut to 2,048 - 8 = 2,040 tokens: a 2,500-token
    shared prefix is then longer than every prompt it is part of, and is refused instead of priced as cached."""
    model = write_tiny_model(tmp_path)
    if command == "run":
        args = ["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "5", "--requests", "4",
                "--prompt", "3000", "--output", "8", "--prefix-tokens", "2500", "--prefix-attention", "cascade"]
        expected = "--prefix-tokens: found 2500, allowed: at most 2040 tokens"
    else:
        args = ["check", write_sweep(tmp_path, f"name: prefix\nmodel: {model}\ndevice: h100-sxm\nserving:\n"
                                               "  requests: 4\n  rate: 5\n  prompt: 3000\n  output: 8\n"
                                               "  prefix_tokens: 2500\n")]
        expected = "prefix_tokens: found 2500, allowed: at most 2040 tokens"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_draft_cascades_the_prefix_as_its_target_does():
    """A speculative draft runs in the engine's attention: its first step and its decode steps read the shared prefix
    once for all sequences, as the target's verification does."""
    from sim.schedulers import Batch, Sequence

    seqs = [Sequence(index=i, arrival_s=0.0, prompt=80, output=8) for i in range(3)]
    for seq in seqs:
        seq.computed = seq.target = 80
    first, decodes = Batch(decodes=seqs).draft_shapes(None, shared_prefix=64)
    for shape in (first, decodes):
        assert (shape.decode_shared_kv, shape.decode_shared_seqs) == (64, 3)
    assert decodes.decode_kv == 3 * (82 - 64)  # each past its 80 cached keys the sampled token and its draft


def test_the_run_says_how_much_of_a_prefix_whole_blocks_hold(tmp_path, capsys):
    """A KV cache shares whole blocks: a 40-token prefix in 16-token blocks is 32 tokens shared, and the first line
    of `explore run` says so (a 12-token prefix shares none), and that it swaps."""
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "5", "--requests", "4",
                 "--prompt", "64", "--output", "4", "--prefix-tokens", "40", "--prefix-attention", "cascade",
                 "--preemption", "swap"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "a 40-token shared prefix (32 in whole 16-token blocks) (cascade attention), swap preemption" in first


def test_cascade_runs_beside_a_block_sparse_prefill(tmp_path, capsys):
    """prefill_kept selects prefill pairs only and leaves decode reading every cached token, so a shared prefix is
    still read once: the run is priced, not refused as a KV policy that keeps tokens of its own choosing."""
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "5", "--requests", "4",
                 "--prompt", "1200", "--output", "4", "--prefix-tokens", "32", "--prefix-attention", "cascade",
                 "--prefill-kept", "0.5", "--json"]) == 0
    assert "Traceback" not in capsys.readouterr().err
