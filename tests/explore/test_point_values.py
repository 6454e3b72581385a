"""A design point built in Python (DesignPoint into Evaluator.evaluate, as in a notebook) is refused as `explore run`
refuses the same values: one InputError line naming the field, before anything is traced or priced."""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from workloads.errors import InputError

# Llama-2-7B: a 4,096-token context (max_position_embeddings), 32 attention heads.
POINT = dict(model="llama-2-7b", device="h100-sxm", batch=1, prompt=512, output=128)


@pytest.mark.parametrize("changes, message", [
    (dict(batch=-1), "batch: found -1, allowed: an integer from 1"),  # was a torch error about a negative dimension
    (dict(batch=1.5), "batch: found 1.5, allowed: an integer"),
    (dict(prompt="512"), "prompt: found '512', allowed: an integer >= 1"),
    (dict(weight_bits=7), "weight_bits: found 7, allowed: 16, 8"),
    (dict(execution="vllm"), "execution: found 'vllm', allowed: eager, graphs, engine"),
    # Priced without a word before: 4,096 + 128 tokens past the context, and heads split three ways.
    (dict(prompt=4096), "prompt, output: found a prompt of 4,096 tokens and an output of 128 (4,224 in all), "
                        "allowed: at most llama-2-7b's context of 4,096 tokens"),
    (dict(tp=3), "tp: found 3, allowed: a divisor of llama-2-7b's 32 attention heads"),
    (dict(knobs=(("kv_budget", -5),)), "kv_budget: found -5"),  # was a NaN row with no reason
    (dict(knobs=(("kv_budget", 1000),)), "kv_budget: found a budget of 1,000 tokens, allowed: at most prompt + "
                                         "output (512 + 128)"),
    (dict(knobs=(("kv_budgett", 64),)), "knobs: found 'kv_budgett', allowed: a generic knob"),  # was a KeyError
    (dict(overrides={"memory.bandwidth_GBps": 5025.0}), "overrides: found a dict, allowed: a tuple of (name, value) "
                                                        "pairs"),  # was "unhashable type: 'dict'"
    # A format no kernel runs, and a group size that does not divide the MLP's down projection (k = 11,008 / 2):
    # a ValueError traceback from NumericFormat, or no word at all, before.
    (dict(weight_bits=8, knobs=(("weight_type", "fp4_e2m1"),)), "weight_type: found 'fp4_e2m1' with weight_bits 8, "
                                                                "allowed: weight_bits 4"),
    (dict(weight_bits=4, tp=2, knobs=(("group_size", 256),)), "group_size: found 256, which does not divide "
                                                              "llama-2-7b's MLP down k=5504"),
    # A value no cache key holds (a list, as YAML gives one) is checked as it is: it raised a TypeError.
    (dict(weight_bits=4, knobs=(("group_size", [64]),)), "group_size: found [64], allowed: 8, 16, 32, 64"),
])
def test_a_python_point_is_refused_in_one_line_naming_the_field(changes, message):
    with pytest.raises(InputError) as info:
        Evaluator().evaluate(DesignPoint(**(POINT | changes)))
    text = str(info.value)
    assert "\n" not in text and text.startswith(message), text



def test_a_knob_its_switch_leaves_off_is_named_by_the_idle_check():
    """A drafting knob without a draft changes nothing: check_idle_knobs says so (explore run refuses the flag), while
    evaluate prices it as the design without it, as a sweep crossing the two does."""
    from explore.point_values import check_idle_knobs

    point = DesignPoint(**POINT, knobs=(("acceptance", 0.8),))
    with pytest.raises(InputError, match=r"^acceptance: found 0.8 without spec_draft, allowed: with spec_draft set"):
        check_idle_knobs(point)
    with pytest.raises(InputError, match=r"^act_predictor: found 'deja_vu' with act_kept at 1 \(off\)"):
        check_idle_knobs(DesignPoint(**POINT, knobs=(("act_predictor", "deja_vu"),)))
    check_idle_knobs(DesignPoint(**POINT, knobs=(("act_predictor", "deja_vu"), ("act_kept", 0.5))))


@pytest.mark.parametrize("knob, value, found, allowed", [
    ("host_link", "pcie5-x16", r"with offload at none \(off\) and with lora_adapters at 0 \(off\)",
     "offload or lora_adapters"),
    ("offload_prefetch", 0, r"with offload at none \(off\)", "offload")])
def test_a_host_link_knob_without_offloading_is_named_by_the_idle_check(knob, value, found, allowed):
    """The host link carries only offloaded bytes and LoRA adapters loaded into their slots, its prefetch only
    offloaded bytes: without them nothing crosses, so setting either changes nothing (explore run refuses the flag; a
    sweep notes it)."""
    from explore.point_values import check_idle_knobs

    shown = repr(value) if isinstance(value, str) else value
    with pytest.raises(InputError, match=rf"^{knob}: found {shown} {found}, allowed: with {allowed} set, or left out$"):
        check_idle_knobs(DesignPoint(**POINT, knobs=((knob, value),)))
    check_idle_knobs(DesignPoint(**POINT, knobs=((knob, value), ("offload", "auto"))))


def test_a_link_or_an_allreduce_on_one_device_is_named_by_the_idle_check():
    """A link joins devices and an all-reduce runs only across tensor-parallel shards: with tp and pp 1 the link, and
    with tp 1 the all-reduce, changes nothing (either of tp or pp above 1 turns the link on; pipeline stages pass
    activations over it point to point, no all-reduce)."""
    from explore.point_values import check_idle_knobs

    with pytest.raises(InputError, match=r"^link: found 'pcie5-x16' with tp and pp at 1 \(off\), allowed: with tp or "
                                         r"pp set, or left out$"):
        check_idle_knobs(DesignPoint(**POINT, link="pcie5-x16"))
    for layout in (dict(tp=2), dict(pp=2), dict(tp=2, pp=2)):
        check_idle_knobs(DesignPoint(**(POINT | layout), link="pcie5-x16"))
    for layout in ({}, dict(pp=2)):
        with pytest.raises(InputError, match=r"^allreduce: found 'custom' with tp at 1 \(off\), allowed: with tp set"):
            check_idle_knobs(DesignPoint(**(POINT | layout), knobs=(("allreduce", "custom"),)))
    check_idle_knobs(DesignPoint(**(POINT | dict(tp=2)), knobs=(("allreduce", "custom"),)))


def test_a_priced_measurement_may_fill_the_whole_context():
    """A measured prefill of Llama-2-7B's whole 4,096-token context samples one token past it: validation prices it with
    price_infeasible, which takes the point as measured; a point to run is refused past the context."""
    point = DesignPoint(**(POINT | dict(prompt=4096, output=1)))
    evaluator = Evaluator()
    with pytest.raises(InputError, match="^prompt, output: found a prompt of 4,096 tokens and an output of 1"):
        evaluator.evaluate(point)
    assert evaluator.evaluate(point, price_infeasible=True).metrics["ttft_s"] > 0
