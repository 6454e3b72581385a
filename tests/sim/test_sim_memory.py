"""Memory footprint of a static batch, the infeasibility message, and BatchWorkload validation."""

from __future__ import annotations

import numpy as np
import pytest

from sim.memory import batch_footprint, infeasible_reason
from sim.workload import BatchWorkload

# Llama-2-7B in fp16: 6,738,415,616 params x 2 B; KV per token 2 x 32 layers x 32 heads x 128 x 2 B.
WEIGHTS_B = 6_738_415_616 * 2  # 13,476,831,232
KV_PER_TOKEN_B = 2 * 32 * 32 * 128 * 2  # 524,288


def test_footprint_by_hand():
    fp = batch_footprint(weight_bytes=WEIGHTS_B, kv_bytes_per_token=KV_PER_TOKEN_B, batch=8,
                         tokens_per_sequence=2048 + 128, activation_bytes=100e6)
    # KV: 524,288 B x 8 sequences x 2176 tokens = 9,126,805,504 B.
    assert fp.kv_cache_B == 524_288 * 8 * 2176 == 9_126_805_504
    assert fp.weights_B == 13_476_831_232
    assert fp.total_B == 13_476_831_232 + 9_126_805_504 + 100_000_000 == 22_703_636_736


def test_window_caps_kv_cache():
    fp = batch_footprint(weight_bytes=0, kv_bytes_per_token=KV_PER_TOKEN_B, batch=8, tokens_per_sequence=2176,
                         activation_bytes=0, window=1024)
    assert fp.kv_cache_B == 524_288 * 8 * 1024 == 4 * 2**30
    # A window longer than the sequence changes nothing.
    long = batch_footprint(weight_bytes=0, kv_bytes_per_token=KV_PER_TOKEN_B, batch=8, tokens_per_sequence=2176,
                           activation_bytes=0, window=4096)
    assert long.kv_cache_B == 524_288 * 8 * 2176


def test_infeasible_reason():
    fp = batch_footprint(weight_bytes=WEIGHTS_B, kv_bytes_per_token=KV_PER_TOKEN_B, batch=8,
                         tokens_per_sequence=2176, activation_bytes=100e6)
    assert infeasible_reason(fp, 80e9) == ""  # H100 80 GB: fits
    assert infeasible_reason(fp, fp.total_B) == ""  # exactly full still fits
    reason = infeasible_reason(fp, 16e9)  # 16 GB: does not
    assert reason
    # 22.7 GB needed: weights 13.5, KV 9.1, activations 0.1; the device has 16.0.
    for figure in ("22.7", "13.5", "9.1", "0.1", "16.0"):
        assert figure in reason, (figure, reason)
    assert "\n" not in reason


def test_infeasible_reason_of_several_devices_names_them():
    fp = batch_footprint(weight_bytes=WEIGHTS_B, kv_bytes_per_token=KV_PER_TOKEN_B, batch=8,
                         tokens_per_sequence=2176, activation_bytes=100e6)
    reason = infeasible_reason(fp, 16e9, devices=2)  # two 8 GB devices
    assert "the 2 devices have 16.0 GB (8.0 each)" in reason, reason
    assert "the device has" in infeasible_reason(fp, 16e9)


def test_llama2_70b_does_not_fit_one_h100():
    # 68,976,648,192 params x 2 B = 138 GB of weights alone > 80 GB.
    fp = batch_footprint(weight_bytes=68_976_648_192 * 2, kv_bytes_per_token=2 * 80 * 8 * 128 * 2, batch=1,
                         tokens_per_sequence=1024, activation_bytes=0)
    assert infeasible_reason(fp, 80e9)
    assert infeasible_reason(fp, 141e9 + 1e9) == ""  # ~138.3 GB fits in 142 GB


@pytest.mark.parametrize("field", ["batch", "prompt_len", "output_len"])
@pytest.mark.parametrize("value", [0, -1, 2.0, 1.5, "2", True, None])
def test_batch_workload_rejects_bad_values(field, value):
    kwargs = dict(batch=1, prompt_len=16, output_len=4)
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        BatchWorkload(**kwargs)


def test_batch_workload_kv_lengths():
    # Prompt 10, 4 outputs: the first comes from the prefill; 3 decode steps attend to 11, 12, 13 keys.
    workload = BatchWorkload(batch=2, prompt_len=10, output_len=4)
    assert workload.decode_steps == 3
    np.testing.assert_array_equal(workload.decode_kv_lengths(), [11, 12, 13])
    assert len(BatchWorkload(batch=1, prompt_len=10, output_len=1).decode_kv_lengths()) == 0
