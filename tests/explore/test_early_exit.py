"""The exit_depth knob (SkipDecode-style layer skipping, kernels/early_exit.py) on design points.

Paper direction, a documented non-check: SkipDecode (Del Corro et al., arXiv 2307.02628, abstract) reports 2x-5x
speed-ups of OPT-1.3B and OPT-6.7B at its target exit ratios, with "speed-up" set by the share of layers a token
runs (its exit points are chosen for a target ratio of layers), measured on its own generation loop. Reproducing it
would mean checking layers against layers, which tests nothing of the cost model, and no OPT preset ships here. What
is checked instead: fewer layers are never slower; the decode speed-up stays under the layer ratio, since the
embedding, final norm and LM head still run every step (a hand bound); the prefill and its KV are untouched, and the
KV a decode token holds falls with its layers (by hand). Bad depths: tests/explore/test_token_select_points.py.
"""

from __future__ import annotations

import json
import math

import pytest

from explore.design_point import DesignPoint
from tests.explore.test_blocks import assert_blocks_agree, assert_same
from tests.explore.tiny_sweep import TINY_CONFIG

LAYERS = 8
# The 8-layer tiny model's KV per token: keys and values of 8 layers x 2 KV heads x 16 dims at 2 bytes.
KV_B_PER_TOKEN = 2 * LAYERS * TINY_CONFIG["num_key_value_heads"] * 16 * 2


@pytest.fixture(scope="module")
def deep_config(tmp_path_factory) -> str:
    """The tiny Llama with 8 layers, so that depths between 0 and 1 keep different layer counts."""
    path = tmp_path_factory.mktemp("deep-model") / "deep" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(TINY_CONFIG | {"num_hidden_layers": LAYERS}))
    return str(path)


def point(model: str, depth: float = 1.0, **fields) -> DesignPoint:
    fields.setdefault("knobs", (("exit_depth", depth),) if depth != 1.0 else ())
    return DesignPoint(model=model, device="h100-sxm", batch=4, prompt=400, output=9, execution="engine", **fields)


def test_fewer_layers_are_never_slower_and_save_at_most_their_share(deep_config, tiny_evaluator):
    depths = [1 / 8, 0.25, 0.5, 0.75, 1.0]
    metrics = [tiny_evaluator.evaluate(point(deep_config, d)).metrics for d in depths]
    tpots = [m["tpot_s"] for m in metrics]
    assert all(a <= b for a, b in zip(tpots, tpots[1:], strict=False))
    assert tpots[0] < tpots[-1]
    for depth, tpot in zip(depths, tpots, strict=True):
        # Skipped layers do no work, the layers kept and the model's own kernels still run: the step takes at least
        # the kept share of the full one.
        assert tpot >= depth * tpots[-1] * (1 - 1e-9)
    assert len({m["ttft_s"] for m in metrics}) == 1  # the prefill runs every layer


def test_the_kv_a_decode_token_holds_falls_with_its_layers(deep_config, tiny_evaluator):
    """4 sequences each hold 400 prompt tokens at every layer and 8 decode tokens at 2 of 8 layers (depth 0.25):
    4 x 8 x 6/8 tokens' KV less than at full depth."""
    full, skipped = (tiny_evaluator.evaluate(point(deep_config, d)).metrics["peak_memory_B"] for d in (1.0, 0.25))
    assert full - skipped == pytest.approx(4 * 8 * 6 / 8 * KV_B_PER_TOKEN)


def test_the_default_is_every_layer(deep_config, tiny_evaluator):
    assert_same(tiny_evaluator.evaluate(point(deep_config)).metrics,
                tiny_evaluator.evaluate(point(deep_config, knobs=(("exit_depth", 1.0),))).metrics, "exit_depth 1")


def test_blocks_agree_with_the_reference(deep_config, tiny_evaluator):
    points = [point(deep_config, depth, overrides=(("memory.bandwidth_GBps", bandwidth),))
              for depth in (1.0, 0.5) for bandwidth in (1000.0, 3000.0)]
    assert_blocks_agree(tiny_evaluator, points)


def test_what_is_not_modeled_is_not_run(tiny_config, tiny_evaluator):
    """(Serving points: tests/explore/test_static_only_knobs.py.)"""
    # not run (DesignPoint.unjudged)
    metrics = tiny_evaluator.evaluate(point(tiny_config, knobs=(("exit_depth", 0.5), ("spec_draft", "medusa")))).metrics
    assert metrics["infeasible_reason"].startswith("exit_depth: found 0.5 with spec_draft 'medusa', allowed: 1 (every "
                                                   "layer)"), metrics["infeasible_reason"]
    assert math.isnan(metrics["tpot_s"])
