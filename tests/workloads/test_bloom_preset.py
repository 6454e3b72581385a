"""The BLOOM-176B preset (written in OPT form, workloads/presets/bloom-176b.json) against BLOOM's published size."""

from __future__ import annotations

import pytest

from workloads.model_config import load_model_config


def test_bloom_176b_matches_its_published_size():
    """176,247,271,424 parameters (bigscience/bloom model card); the OPT form adds an 8,192 x 14,336 position table
    (0.07%). KV per token by hand: K and V x 70 layers x 14,336 x 2 bytes."""
    cfg = load_model_config("bloom-176b")
    assert cfg.param_count() == pytest.approx(176_247_271_424, rel=0.01)
    assert cfg.kv_bytes_per_token() == 2 * 70 * 14336 * 2
