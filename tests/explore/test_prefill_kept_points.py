"""The prefill_kept knob (SALE's block-sparse prefill after a 4-bit estimate, kernels/block_sparse.py) on design
points: 1 is today's point; fewer kept pairs never make the prefill slower; decode is untouched; the estimate costs
what first principles say on an A100; static batches, blocks and serving iterations agree; bad values get one line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from kernels.block_estimate import ESTIMATE_OP, QUANTIZE_OP
from sim.workload import BatchWorkload
from tests.explore.test_blocks import assert_blocks_agree, assert_same
from tests.explore.tiny_sweep import write_sweep
from tests.sim.test_serving import assert_serves_as_static

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")


def point(model: str, kept: float = 1.0, device: str = "h100-sxm", **fields) -> DesignPoint:
    values = dict(batch=4, prompt=1100, output=9, execution="engine") | fields
    return DesignPoint(model=model, device=device, knobs=(("prefill_kept", kept),) if kept != 1.0 else (), **values)


def test_kept_1_is_todays_point(tiny_config, tiny_evaluator):
    plain = tiny_evaluator.evaluate(point(tiny_config)).metrics
    one = DesignPoint(model=tiny_config, device="h100-sxm", batch=4, prompt=1100, output=9, execution="engine",
                      knobs=(("prefill_kept", 1.0),))
    assert_same(plain, tiny_evaluator.evaluate(one).metrics, "prefill_kept 1")
    assert tiny_evaluator.kv_window(one) is None


def test_fewer_kept_pairs_never_prefill_slower_and_decode_is_unchanged(tiny_config, tiny_evaluator):
    shares = [0.05, 0.1, 0.25, 0.5, 0.9]
    got = [tiny_evaluator.evaluate(point(tiny_config, kept, prompt=2000)).metrics for kept in shares]
    ttft = [m["ttft_s"] for m in got]
    assert all(a <= b for a, b in zip(ttft, ttft[1:], strict=False)) and ttft[0] < ttft[-1]
    dense = tiny_evaluator.evaluate(point(tiny_config, prompt=2000)).metrics
    for metrics in got:
        assert metrics["tpot_s"] == pytest.approx(dense["tpot_s"], rel=1e-12)  # (e2e - ttft) / steps: rounding
        assert metrics["peak_memory_B"] == dense["peak_memory_B"]
    # The decode tables and what each step reads are the dense point's.
    sale, full = (point(tiny_config, kept, prompt=2000) for kept in (0.25, 1.0))
    tables = [tiny_evaluator.point_tables(p, tiny_evaluator.point_device(p)) for p in (sale, full)]
    steps = BatchWorkload(batch=4, prompt_len=2000, output_len=9).decode_kv_lengths()
    reads = [t.decode.at_kv_lengths(steps, t.attention_window) for t in tables]
    for name in ("flops", "kv_bytes", "act_bytes"):
        assert np.array_equal(getattr(reads[0], name), getattr(reads[1], name)), name


def test_the_estimate_on_an_a100_is_an_eighth_of_dense_attention(evaluator):
    """First principles: the estimate does 2 x head_dim operations per causal pair (Q.K, no P.V) against attention's
    4 x head_dim, at the A100's int4 rate against its 16-bit one (1,248 against 312 TOPS, the preset's datasheet
    figures): (2 / 4) x (312 / 1,248) = 1/8 of dense attention's math. Both run on the roofline there (no attention
    fit), and at 8,000 tokens both are math-bound: the Q.K rows take an eighth of the dense attention rows' time, and
    the quantization pass adds its traffic (the 2.5 bytes an element of Q and K it moves at the stream fit)."""
    dense, sale = (point("llama-3-8b", kept, device="a100-sxm-80gb", batch=1, prompt=8000, output=2)
                   for kept in (1.0, 0.5))
    device = evaluator.point_device(dense)
    prefill = [evaluator.point_tables(p, device).prefill for p in (dense, sale)]
    times = [device.cost_table(table, "device").time_s for table in prefill]
    ops = np.array([k.op for k in prefill[1].kernels])
    attention = prefill[0].attention_mask
    ratio = times[1][ops == ESTIMATE_OP].sum() / times[0][attention].sum()
    assert ratio == pytest.approx(1 / 8, rel=0.02)
    quantize = times[1][ops == QUANTIZE_OP].sum()
    assert 0 < quantize < times[1][ops == ESTIMATE_OP].sum()  # O(n) traffic beside O(n^2) math at 8K


def test_blocks_agree_with_the_reference(tiny_config, tiny_evaluator):
    points = [point(tiny_config, kept, overrides=(("memory.bandwidth_GBps", bandwidth),))
              for kept in (1.0, 0.25) for bandwidth in (1000.0, 3000.0)]
    assert_blocks_agree(tiny_evaluator, points)


@pytest.mark.parametrize("device", ["h100-sxm", "a100-sxm-80gb"])
def test_serving_iterations_price_the_static_batch(tiny_config, tiny_evaluator, device):
    """B identical requests at 0 on the static scheduler (the step template, the estimate's rows built per iteration)
    cost what the static batch (the traced prefill, the estimate's rows beside each layer's attention) costs."""
    want = assert_serves_as_static(tiny_evaluator, point(tiny_config, 0.25, device=device, execution="eager",
                                                         prompt=1100, output=4))
    dense = tiny_evaluator.evaluate(point(tiny_config, device=device, execution="eager", prompt=1100, output=4))
    assert want["ttft_s"] != dense.metrics["ttft_s"]


def test_a_serving_run_prefills_faster_and_holds_the_same(evaluator):
    """Llama-3-8B's 8,000-token prompts served one at a time: the first token comes sooner at a small kept share (a
    tiny model's prefill would wait on the estimate's two extra launches a layer instead), the cache is the same."""
    from sim.serving_spec import ServingSpec
    from workloads.requests import Fixed

    spec = ServingSpec(requests=2, rate_per_s=0.01, prompt=Fixed(tokens=8000), output=Fixed(tokens=4))
    full, sale = (evaluator.evaluate(DesignPoint(model="llama-3-8b", device="h100-sxm", batch=spec.max_seqs,
                                                 prompt=0, output=0, serving=spec, execution="engine",
                                                 knobs=point("llama-3-8b", kept).knobs)).metrics
                  for kept in (1.0, 0.05))
    assert sale["ttft_s"] < full["ttft_s"]
    assert sale["kv_utilization_max"] == full["kv_utilization_max"]


def test_quality_is_not_claimed(tiny_config, tiny_evaluator):
    metrics = tiny_evaluator.evaluate(point(tiny_config, 0.5)).metrics
    assert math.isnan(metrics["quality_delta"])
    assert "prefill_kept=0.5" in metrics["quality_source"]


@pytest.mark.parametrize("value", ["0", "1.5", "-0.25"])
def test_bad_values_get_one_line_and_exit_2(tiny_config, tmp_path, capsys, value):
    sweep = write_sweep(tmp_path, f"name: sale\nmodel: {tiny_config}\ndevice: h100-sxm\n"
                                  f"workload: {{prefill_kept: {value}}}\n")
    run = ["run", "--model", tiny_config, "--device", "h100-sxm", "--prefill-kept", value]
    for argv, key in ((["check", sweep], "workload.prefill_kept: found"), (run, "--prefill-kept")):
        assert main(argv) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and key in lines[0] and "allowed: a fraction in (0, 1]" in lines[0], lines


def test_a_device_without_an_int4_rate_says_what_the_estimate_runs_at():
    """The estimate's 4-bit Q.K runs at the next wider rate a device has, and the point says so on every kind: an
    Ampere Altra's Neoverse-N1 SIMD has int8 dot products (SDOT, Armv8.2) and no int4 arithmetic, an H100's tensor
    cores no int4 mode (both presets' sources); an A100's tensor cores have one (1,248 TOPS), and a dense prefill
    runs no estimate."""
    from explore.format_checks import estimate_notice
    from hw_models.registry import load_device

    altra, h100, a100 = (load_device(name) for name in ("ampere-altra", "h100-sxm", "a100-sxm-80gb"))
    assert "runs at the int8 rate on ampere-altra" in estimate_notice(altra, 0.5)
    assert "runs at the int8 rate on h100-sxm" in estimate_notice(h100, 0.5)
    assert estimate_notice(a100, 0.5) == estimate_notice(altra, 1.0) == ""


@pytest.mark.parametrize("method", ["h2o", "d2o"])
def test_an_eviction_that_scores_an_unfused_prefill_is_refused(tiny_config, capsys, method):
    """H2O and D2O score the tokens they evict by the prefill's attention probabilities, which their prefill writes
    unfused (every pair of the s x s matrix: kernels/kv_eviction.py); a block-sparse prefill computes a share of the
    pairs in a fused kernel. Priced together, the estimate was added to a prefill the unfused matrix still bounded, so
    a smaller kept share made the first token slower. The point is refused; StreamingLLM's budget keeps the knob."""
    run = ["run", "--model", tiny_config, "--device", "h100-sxm", "--prompt", "2000", "--output", "4",
           "--kv-budget", "256", "--prefill-kept", "0.5"]
    assert main(run + ["--kv-budget-method", method]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("explore: error: --prefill-kept: found 0.5 with --kv-budget-method")
    assert f"'{method}'" in lines[0] and "allowed: 1" in lines[0], lines
    assert main(run + ["--kv-budget-method", "streaming"]) == 0


@pytest.mark.parametrize(("args", "said"), [
    (["--prompt", "1024"], "the 1,024-token prompt runs dense"),
    (["--prompt", "1025"], ""),
    (["--serving", "--requests", "2", "--rate", "1", "--prompt", "1500", "--scheduler", "chunked"],
     "every chunk of chunk_tokens 512 runs dense"),
    (["--serving", "--requests", "2", "--rate", "1", "--prompt", "1500", "--scheduler", "chunked",
      "--chunk-tokens", "1100"], ""),
])
def test_a_point_whose_every_forward_runs_dense_says_the_knob_changes_nothing(tiny_config, capsys, args, said):
    """SALE runs a forward of at most 1,024 queries dense with no estimate: a prompt of 1,024 tokens, or the chunked
    scheduler's default 512-token chunks (vLLM's), price exactly the dense point, and `explore run` says so rather
    than leaving a what-if that does nothing unremarked; a longer prompt or chunk selects and says nothing."""
    assert main(["run", "--model", tiny_config, "--device", "h100-sxm", "--execution", "engine", "--output", "4",
                 "--prefill-kept", "0.5", "--json", *args]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "prefill_kept 0.5 changes nothing" in line]
    assert (len(notes) == 1 and said in notes[0]) if said else not notes, notes
