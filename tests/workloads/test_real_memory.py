"""A real (not fake) pass is refused before torch allocates what the machine cannot hold."""

from __future__ import annotations

import pytest

from workloads.errors import InputError
from workloads.model_config import load_model_config
from workloads.real_memory import check_real_memory, real_execution_bytes


def test_the_estimate_counts_weights_kv_cache_and_logits_by_hand():
    """Llama-2-7B in bf16: 6.74e9 parameters of 2 bytes; a token's KV across 32 layers of 32 KV heads of 128 is
    2 x 32 x 32 x 128 x 2 B = 524,288 B; each new token's logits are 32,000 values and its MLP state 11,008."""
    cfg = load_model_config("llama-2-7b")
    weights_B = 2 * 6_738_415_616
    assert real_execution_bytes(cfg, 1, 16, 16) == pytest.approx(weights_B + 16 * 524_288 + 16 * 2 * (32_000 + 11_008),
                                                                 rel=1e-6)
    assert real_execution_bytes(cfg, 8, 4096, 1) > weights_B + 8 * 4096 * 524_288


def test_a_pass_beyond_the_free_memory_is_refused(monkeypatch):
    monkeypatch.setattr("workloads.real_memory.available_memory_bytes", lambda: 20e9)
    cfg = load_model_config("llama-2-7b")
    check_real_memory(cfg, 1, 16, 16)  # 13.5 GB of weights: fits
    with pytest.raises(InputError, match="at least 22.1 GB"):
        check_real_memory(cfg, 16, 1024, 1)  # 13.48 GB + 16 x 1,024 x 524,288 B (8.59 GB) of KV cache = 22.07 GB
