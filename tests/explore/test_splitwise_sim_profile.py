"""splitwise_sim_profile.py prices iterations as splitwise-sim's DatabasePerformanceModel.get_iteration_duration does
(expected values by hand from its profile medians)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kernels.shapes import step_shape
from tests.explore.splitwise_sim_profile import PROFILES, ProfileCostModel, interpolate

LLAMA_A100 = PROFILES[("llama-2-70b", "a100-sxm-80gb")]


def _costs(decode_ms=None) -> ProfileCostModel:
    # The base model lends only its device and template, which a profile does not read.
    base = SimpleNamespace(device=None, template=None, execution="engine", kv_bucket_tokens=0)
    return ProfileCostModel(base, LLAMA_A100, decode_ms)


def test_interpolate_extends_the_end_segments():
    assert interpolate(192, (128, 256, 512), (10.0, 20.0, 30.0)) == pytest.approx(15.0)
    assert interpolate(64, (128, 256, 512), (10.0, 20.0, 30.0)) == pytest.approx(5.0)  # below: first segment
    assert interpolate(1024, (128, 256, 512), (10.0, 20.0, 30.0)) == pytest.approx(50.0)  # above: last segment


def test_decode_step_is_read_off_the_token_axis_whatever_the_batch():
    """64 sequences are 64 batch tokens, below the profile's first point (a 128-token prompt: 43.03 ms; 256: 43.48):
    43.03 - 64 x 0.45 / 128 = 42.80 ms, about the batch-1 step."""
    costs = _costs()
    step_ms = costs.price(step_shape([], [1024] * 64, sampled=64)).time_s * 1e3
    assert step_ms == pytest.approx(43.03 - 64 * 0.45 / 128, rel=1e-6)
    assert step_ms == pytest.approx(costs.price(step_shape([], [1024], sampled=1)).time_s * 1e3, rel=0.01)


def test_measured_decode_rows_price_decode_by_its_sequences():
    rows_ms = (44.85, 44.56, 45.79, 46.47, 50.44, 53.02, 71.61)
    assert _costs(rows_ms).price(step_shape([], [512] * 64, sampled=64)).time_s * 1e3 == pytest.approx(71.61)


def test_prompt_and_mixed_iterations():
    """A 1,024-token prompt alone: prompt_time(1024) = 160.9 ms; with 16 decodes: 1.1 x prompt_time(1040), 16/1024
    of the way to 2048 (282.7 ms)."""
    costs = _costs()
    assert costs.price(step_shape([(1024, 0)], [], sampled=1)).time_s * 1e3 == pytest.approx(160.9)
    mixed_ms = costs.price(step_shape([(1024, 0)], [1024] * 16, sampled=17)).time_s * 1e3
    assert mixed_ms == pytest.approx(1.1 * (160.9 + 16 / 1024 * (282.7 - 160.9)))
