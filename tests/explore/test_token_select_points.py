"""The topk_fraction and topk_method knobs (dynamic top-k token selection, kernels/token_select.py) on design points:
decode reads fall with the budget while the cache held never does, in static batches, blocks and serving runs;
the default changes nothing; bad values get the one-line error."""

from __future__ import annotations

from explore.blocks import evaluate_points
from explore.cli import main
from explore.design_point import DesignPoint
from explore.sweep import load_sweep
from tests.explore.test_blocks import assert_blocks_agree, assert_same
from tests.explore.test_paper_duoattention import decode_kv_bytes
from tests.explore.tiny_sweep import write_sweep

DS = (("topk_method", "double_sparsity"),)  # the tiny model has 2 layers: Quest leaves both dense


def point(model: str, share: float = 1.0, knobs=DS, **fields) -> DesignPoint:
    chosen = tuple(sorted(knobs + ((("topk_fraction", share),) if share != 1.0 else ())))
    return DesignPoint(model=model, device="h100-sxm", batch=4, prompt=400, output=9, execution="engine",
                       knobs=chosen, **fields)


def test_a_smaller_token_budget_never_reads_more_bytes(tiny_config, tiny_evaluator):
    shares = [1 / 64, 1 / 16, 0.25, 0.5, 1.0]
    for extra in ({}, {"kv_budget": 100}, {"retrieval_heads": 0.5}):
        reads = [decode_kv_bytes(tiny_evaluator, tiny_config, topk_fraction=s if s != 1.0 else 0,
                                 topk_method="double_sparsity", **extra) for s in shares]
        assert all(a <= b for a, b in zip(reads, reads[1:], strict=False)), extra
        assert reads[0] < reads[-1]


def test_selection_never_reduces_the_memory_held_and_the_prefill_is_dense(tiny_config, tiny_evaluator):
    full = tiny_evaluator.evaluate(point(tiny_config)).metrics
    for share in (1 / 16, 0.5):
        for method in ("quest", "double_sparsity"):
            got = tiny_evaluator.evaluate(point(tiny_config, share, (("topk_method", method),))).metrics
            assert got["peak_memory_B"] >= full["peak_memory_B"]
            assert got["ttft_s"] == full["ttft_s"]
    sel = tiny_evaluator.evaluate(point(tiny_config, 1 / 16)).metrics
    assert sel["time_attention_s"] < full["time_attention_s"]


def test_selection_leaves_a_streaming_budgets_prefill_whole(tiny_config, tiny_evaluator):
    """A kv_budget alone (StreamingLLM) attends to the whole prompt in the prefill, and a selection runs the prefill
    dense: the two together still prefill the whole prompt (the time to the first token of the budget alone)."""
    budget = (("kv_budget", 100),)
    alone = tiny_evaluator.evaluate(point(tiny_config, 1.0, budget)).metrics
    both = tiny_evaluator.evaluate(point(tiny_config, 1 / 16, DS + budget)).metrics
    whole = tiny_evaluator.evaluate(point(tiny_config)).metrics
    assert alone["ttft_s"] == whole["ttft_s"]
    assert both["ttft_s"] == alone["ttft_s"]


def test_the_default_is_no_selection(tiny_config, tiny_evaluator):
    """topk_fraction 1 (its default) prices exactly what a point without the knobs does, whatever the method."""
    plain = DesignPoint(model=tiny_config, device="h100-sxm", batch=4, prompt=400, output=9, execution="engine")
    assert_same(tiny_evaluator.evaluate(plain).metrics, tiny_evaluator.evaluate(point(tiny_config)).metrics,
                "topk_fraction 1")
    assert tiny_evaluator.kv_window(point(tiny_config)) is None


def test_reusing_selections_decodes_faster_and_holds_the_same(tiny_config, tiny_evaluator):
    """topk_reuse (TokenSelect's Selection Cache) skips the scoring on that share of steps: decode attention takes
    less time the more steps reuse, the memory held and the prefill stay; static batches and blocks agree."""
    ts = (("topk_method", "token_select"),)
    got = [tiny_evaluator.evaluate(point(tiny_config, 1 / 16, ts + ((("topk_reuse", r),) if r else ()))).metrics
           for r in (0.0, 0.5, 0.9)]
    attention = [m["time_attention_s"] for m in got]
    assert attention[0] > attention[1] > attention[2]
    assert len({m["peak_memory_B"] for m in got}) == 1 and len({m["ttft_s"] for m in got}) == 1
    reused = point(tiny_config, 1 / 16, ts + (("topk_reuse", 0.5),))
    assert_same(tiny_evaluator.evaluate(reused).metrics, evaluate_points(tiny_evaluator, [reused])[0], "topk_reuse")


def test_blocks_agree_with_the_reference(tiny_config, tiny_evaluator):
    points = [point(tiny_config, share, overrides=(("memory.bandwidth_GBps", bandwidth),))
              for share in (1.0, 1 / 16) for bandwidth in (1000.0, 3000.0)]
    assert_blocks_agree(tiny_evaluator, points)


def test_a_serving_run_reads_less_and_holds_no_less(tiny_config, tiny_evaluator):
    from sim.serving_spec import ServingSpec
    from workloads.requests import Fixed

    spec = ServingSpec(requests=8, rate_per_s=20.0, prompt=Fixed(tokens=400), output=Fixed(tokens=8))
    full, sel = (tiny_evaluator.evaluate(DesignPoint(model=tiny_config, device="h100-sxm", batch=spec.max_seqs,
                                                     prompt=0, output=0, serving=spec,
                                                     knobs=point(tiny_config, share).knobs)).metrics
                 for share in (1.0, 1 / 16))
    assert sel["time_attention_s"] < full["time_attention_s"]
    assert sel["kv_utilization_max"] >= full["kv_utilization_max"]


# Bad values of the decode-time knobs of this work (exit_depth too: tests/explore/test_early_exit.py), in a sweep
# file and on the command line: the key, what was found and what is allowed, on one line, exit 2.
BAD_VALUES = [("topk_fraction", "0"), ("topk_fraction", "1.5"), ("topk_fraction", "-0.5"), ("topk_method", "h2o"),
              ("topk_reuse", "1"), ("topk_reuse", "-0.2"), ("exit_depth", "0"), ("exit_depth", "1.5")]


def test_bad_values_get_one_line_and_exit_2(tiny_config, tmp_path, capsys):
    for name, value in BAD_VALUES:
        flag = f"--{name.replace('_', '-')}"
        sweep = write_sweep(tmp_path, f"name: sel\nmodel: {tiny_config}\ndevice: h100-sxm\n"
                                      f"workload: {{{name}: {value}}}\n")
        run = ["run", "--model", tiny_config, "--device", "h100-sxm", flag, value]
        for argv, key in ((["check", sweep], f"workload.{name}: found"), (run, flag)):
            assert main(argv) == 2, argv
            lines = capsys.readouterr().err.strip().splitlines()
            assert len(lines) == 1 and key in lines[0] and value in lines[0], lines
            assert "allowed" in lines[0] or "choose from" in lines[0], lines


def test_sweeps_set_it(tiny_config, tmp_path):
    path = write_sweep(tmp_path, f"name: sel\nmodel: {tiny_config}\ndevice: h100-sxm\n"
                                 f"workload: {{batch: 2, prompt: 64, output: 4, topk_fraction: [1, 0.125], "
                                 f"topk_method: double_sparsity}}\n")
    assert sorted(p.knob("topk_fraction") for p in load_sweep(path).points()) == [0.125, 1.0]
