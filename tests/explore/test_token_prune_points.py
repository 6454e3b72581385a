"""The prompt_kept and prune_start knobs (LazyLLM-style prompt-token pruning, kernels/token_prune.py) on design points:
invariants of the static path, the blocks path, what is refused and bad values. The paper's TTFT speed-up:
tests/explore/test_paper_lazyllm.py."""

from __future__ import annotations

import json

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.sweep import load_sweep
from tests.explore.test_blocks import assert_blocks_agree, assert_same
from tests.explore.tiny_sweep import TINY_CONFIG, write_sweep
from workloads.errors import InputError

LAYERS = 8
SHARES = [0.05, 0.25, 0.5, 0.75, 1.0]


@pytest.fixture(scope="module")
def deep_config(tmp_path_factory) -> str:
    """The tiny Llama with 8 layers, so that pruning can start between the first and the last."""
    path = tmp_path_factory.mktemp("deep-model") / "deep" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(TINY_CONFIG | {"num_hidden_layers": LAYERS}))
    return str(path)


def point(model: str, kept: float = 1.0, start: float | None = None, **fields) -> DesignPoint:
    knobs = ((("prompt_kept", kept),) if kept != 1.0 else ()) + ((("prune_start", start),) if start is not None else ())
    fields.setdefault("knobs", tuple(sorted(knobs)))
    return DesignPoint(model=model, device="h100-sxm", batch=4, prompt=1500, output=9, **fields)


def test_keeping_every_token_is_todays_point(deep_config, tiny_evaluator):
    today = tiny_evaluator.evaluate(point(deep_config)).metrics
    for knobs in ((("prompt_kept", 1.0),), (("prompt_kept", 1.0), ("prune_start", 0.0))):
        kept = tiny_evaluator.evaluate(point(deep_config, knobs=knobs)).metrics
        assert kept["ttft_s"] == today["ttft_s"] and kept["energy_per_token_J"] == today["energy_per_token_J"]
        assert_same(today, kept, f"{knobs}")


@pytest.mark.parametrize("execution", ["eager", "engine"])
def test_fewer_kept_tokens_are_never_slower_and_decode_is_unchanged(deep_config, tiny_evaluator, execution):
    metrics = [tiny_evaluator.evaluate(point(deep_config, share, execution=execution)).metrics for share in SHARES]
    ttfts = [m["ttft_s"] for m in metrics]
    energies = [m["energy_per_token_J"] for m in metrics]
    assert all(a <= b for a, b in zip(ttfts, ttfts[1:], strict=False))
    assert all(a <= b for a, b in zip(energies, energies[1:], strict=False)) and energies[0] < energies[-1]
    if execution == "engine":  # eager: the tiny model's prefill waits on the host's dispatch whatever it computes
        assert ttfts[0] < ttfts[-1]
    # Decode reads the whole prompt's KV (revived tokens), so its steps take what they took.
    assert [m["tpot_s"] for m in metrics] == pytest.approx([metrics[-1]["tpot_s"]] * len(SHARES), rel=1e-12)


def test_pruning_from_an_earlier_layer_is_never_slower(deep_config, tiny_evaluator):
    ttfts = [tiny_evaluator.evaluate(point(deep_config, 0.25, start, execution="engine")).metrics["ttft_s"]
             for start in (0.0, 0.25, 0.5, 0.75, 0.9)]
    assert all(a <= b for a, b in zip(ttfts, ttfts[1:], strict=False)) and ttfts[0] < ttfts[-1]
    # 0.9 of 8 layers rounds to 7: the last layer prunes, so the prefill is still below the full one.
    assert ttfts[-1] < tiny_evaluator.evaluate(point(deep_config, execution="engine")).metrics["ttft_s"]


def test_a_start_that_leaves_no_layer_to_prune_is_refused(deep_config, tiny_evaluator):
    """0.99 of 8 layers rounds to all 8: pruning would silently do nothing, so the point is refused in one line."""
    with pytest.raises(InputError, match=r"prune_start: found 0.99.*all of .* 8 layers"):
        tiny_evaluator.evaluate(point(deep_config, 0.25, 0.99, execution="engine"))


def test_blocks_agree_with_the_reference(deep_config, tiny_evaluator):
    points = [point(deep_config, kept, overrides=(("memory.bandwidth_GBps", bandwidth),))
              for kept in (1.0, 0.3) for bandwidth in (1000.0, 3000.0)]
    assert_blocks_agree(tiny_evaluator, points)


def test_what_is_not_modeled_is_not_run(tiny_config, tiny_evaluator):
    """(Serving points: tests/explore/test_static_only_knobs.py.)"""
    metrics = tiny_evaluator.evaluate(point(tiny_config, 0.5, pp=2)).metrics  # not run (DesignPoint.unjudged)
    assert metrics["infeasible_reason"].startswith("prompt_kept: found 0.5 on 2 pipeline stages, allowed: 1 (no "
                                                   "pruning)"), metrics["infeasible_reason"]


BAD_VALUES = [("prompt_kept", "0"), ("prompt_kept", "1.5"), ("prompt_kept", "-0.5"), ("prune_start", "1"),
              ("prune_start", "-0.1")]


def test_bad_values_get_one_line_and_exit_2(tiny_config, tmp_path, capsys):
    for name, value in BAD_VALUES:
        flag = f"--{name.replace('_', '-')}"
        on = "" if name == "prompt_kept" else "prompt_kept: 0.5, "  # prune_start with pruning on
        sweep = write_sweep(tmp_path, f"name: lazy\nmodel: {tiny_config}\ndevice: h100-sxm\n"
                                      f"workload: {{{on}{name}: {value}}}\n")
        run = ["run", "--model", tiny_config, "--device", "h100-sxm", *(["--prompt-kept", "0.5"] if on else []),
               flag, value]
        for argv, key in ((["check", sweep], f"workload.{name}: found"), (run, flag)):
            assert main(argv) == 2, argv
            lines = capsys.readouterr().err.strip().splitlines()
            assert len(lines) == 1 and key in lines[0] and value in lines[0], lines
            assert "allowed" in lines[0], lines


def test_sweeps_set_it(tiny_config, tmp_path):
    path = write_sweep(tmp_path, f"name: lazy\nmodel: {tiny_config}\ndevice: h100-sxm\n"
                                 f"workload: {{batch: 2, prompt: 64, output: 4, prompt_kept: [1, 0.4], "
                                 f"prune_start: 0.5}}\n")
    assert sorted(p.knob("prompt_kept") for p in load_sweep(path).points()) == [0.4, 1.0]
