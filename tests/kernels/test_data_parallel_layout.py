"""The data-parallel attention layout's counts (kernels/data_parallel.py) against enumeration and model cards."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from kernels.data_parallel import (
    check_data_parallel_attention,
    dispatch_bytes_per_token,
    dispatch_devices,
    replicated_weight_share,
)
from workloads.model_config import load_model_config


def _enumerated(experts: int, per_token: int, devices: int) -> float:
    """The mean number of devices over every top-k choice, experts 0 .. E/n - 1 on the first device and so on."""
    held = experts // devices
    choices = list(combinations(range(experts), per_token))
    return sum(len({expert // held for expert in choice}) for choice in choices) / len(choices)


@pytest.mark.parametrize(("experts", "per_token", "devices"),
                         [(8, 2, 8), (8, 2, 4), (8, 2, 2), (16, 4, 4), (12, 3, 6), (8, 8, 4), (8, 1, 8), (6, 2, 1)])
def test_a_token_reaches_the_devices_its_experts_lie_on(experts, per_token, devices):
    assert dispatch_devices(experts, per_token, devices) == pytest.approx(_enumerated(experts, per_token, devices),
                                                                          rel=1e-12)


def _enumerated_grouped(experts: int, per_token: int, devices: int, groups: int, chosen: int) -> float:
    """The mean over every choice of `chosen` groups (consecutive experts) and every top-k within them."""
    held, size = experts // devices, experts // groups
    total = count = 0
    for kept in combinations(range(groups), chosen):
        pool = [e for g in kept for e in range(g * size, (g + 1) * size)]
        for choice in combinations(pool, per_token):
            total += len({expert // held for expert in choice})
            count += 1
    return total / count


@pytest.mark.parametrize(("experts", "per_token", "devices", "groups", "chosen"),
                         [(16, 4, 16, 4, 2), (16, 4, 8, 4, 2), (16, 4, 4, 4, 2), (16, 4, 2, 4, 2), (16, 3, 2, 8, 3),
                          (12, 2, 6, 3, 2), (12, 2, 3, 3, 1), (16, 2, 4, 8, 2)])
def test_a_token_routed_within_groups_reaches_the_devices_of_its_groups(experts, per_token, devices, groups, chosen):
    """Group-limited routing (DeepSeek's n_group, topk_group): the top-k among the experts of the chosen groups."""
    assert dispatch_devices(experts, per_token, devices, groups, chosen) == pytest.approx(
        _enumerated_grouped(experts, per_token, devices, groups, chosen), rel=1e-12)


def test_deepseek_v3_on_eight_devices_reaches_at_most_four():
    """DeepSeek-V3 routes 8 of 256 experts within 4 of 8 groups of 32 (config.json n_group 8, topk_group 4; the
    technical report, arXiv 2412.19437, section 2.1.2: node-limited routing, at most 4 nodes a token), so on eight
    devices, a group each, a token reaches at most 4: 3.63 on average in a sampled routing (against 5.29 for 8 of
    256 with no groups), and its dispatch sends that many copies of its hidden state."""
    rng = np.random.default_rng(0)
    samples = 100_000
    kept = np.argsort(rng.random((samples, 8)), axis=1)[:, :4]  # 4 of 8 groups, uniformly
    picks = np.argsort(rng.random((samples, 128)), axis=1)[:, :8]  # 8 of their 128 experts, uniformly
    device = np.take_along_axis(kept, picks // 32, axis=1)  # group = device on eight devices
    sampled = np.mean([len(set(row)) for row in device])
    assert dispatch_devices(256, 8, 8, 8, 4) == pytest.approx(sampled, rel=0.01)
    assert sampled <= 4
    deepseek = load_model_config("deepseek-v3")
    assert dispatch_bytes_per_token(deepseek, 8) == pytest.approx(7168 * 2 * sampled, rel=0.01)


def test_mixtral_on_eight_devices_sends_each_token_to_two():
    """Mixtral's 2 of 8 experts, one expert a device: always two devices. Its 16-bit hidden state is 8 KiB."""
    mixtral = load_model_config("mixtral-8x7b")
    assert dispatch_devices(8, 2, 8) == pytest.approx(2.0, rel=1e-12)
    assert dispatch_bytes_per_token(mixtral, 8) == pytest.approx(2 * 4096 * 2, rel=1e-12)


def test_ranks_hold_the_experts_once_and_the_rest_each():
    """Mixtral-8x7B's model card: 46.7B parameters, 12.9B active with 2 of 8 experts (mistral.ai, "Mixtral of
    experts", 2023). So an expert's share over all layers is (46.7 - 12.9) / 6 = 5.63B, the experts 45.1B, the rest
    1.6B: eight ranks hold 45.1 + 8 x 1.6 = 57.9B, 1.24x the model."""
    mixtral = load_model_config("mixtral-8x7b")
    experts_B = (46.7 - 12.9) / 6 * 8
    rest_B = 46.7 - experts_B
    assert replicated_weight_share(mixtral, 8) == pytest.approx((experts_B + 8 * rest_B) / 46.7, rel=0.01)
    assert replicated_weight_share(mixtral, 1) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize(("model", "tp", "ep", "found"), [
    ("llama-2-7b", 2, 1, "found 'data' for llama-2-7b, which has no experts"),
    ("mixtral-8x7b", 4, 2, "found 'data' with tp 4 and ep 2"),
    ("mixtral-8x7b", 1, 1, "found 'data' with tp 1 and ep 1"),
    # split experts: 14,336 columns over 3 devices is no whole share (14,336 / 3 = 4,778.7)
    ("mixtral-8x7b", 3, 1, "found 'data' with tp 3 and ep 1, allowed: a tp dividing mixtral-8x7b's 14336"),
])
def test_what_the_layout_refuses(model, tp, ep, found):
    with pytest.raises(ValueError, match=found):
        check_data_parallel_attention(load_model_config(model), tp, ep)
    check_data_parallel_attention(load_model_config("mixtral-8x7b"), 8, 8)  # spread
    check_data_parallel_attention(load_model_config("mixtral-8x7b"), 8, 1)  # split
