"""Offloaded design points (explore/knobs.py offload, sim/offload.py): a point too large for its device runs with the
excess in host memory, bounded by its host link; offloading is never faster than fitting; offload none changes
nothing; bad input gets one line."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from explore.design_point import DesignPoint
from explore.knobs import knob
from workloads.errors import InputError

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

GB = 1e9
LAYERS_70B = 80  # Llama-2-70B's num_hidden_layers (config.json)
PCIE4_X16_Bps = 31.5e9  # per direction: 16 GT/s x 16 lanes x 128/130 / 8 (PCIe 4.0 base specification)
PCIE5_X16_Bps = 63.0e9  # 32 GT/s x 16 lanes x 128/130 / 8 (PCIe 5.0 base specification)
TIMINGS = ("ttft_s", "tpot_s", "e2e_s", "energy_per_token_J")


def point70b(device: str = "a100-sxm-80gb", **knobs) -> DesignPoint:
    # The shapes tests/explore/test_tensor_parallel.py traces too (a session traces each once).
    return DesignPoint(model="llama-2-70b", device=device, batch=1, prompt=1024, output=8,
                       knobs=tuple(sorted(knobs.items())))


# ---- Llama-2-70B (fp16, 138 GB) on one 80 GB GPU: bounded by PCIe -------------------------------------------------

# What a CUDA program can allocate: an NVIDIA A100-SXM4-80GB has 85100068864 B (CUDA deviceQuery's totalGlobalMem,
# github.com/thamada/nvidia-smi nvsim/A100SXMx4_deviceQuery.py); an NVIDIA H100 80GB HBM3 has 79.11 GiB (PyTorch's
# 'total capacity', github.com/vllm-project/vllm/issues/27508).
@pytest.mark.parametrize(("device", "link_Bps", "capacity_B"), [("a100-sxm-80gb", PCIE4_X16_Bps, 85100068864),
                                                               ("h100-sxm", PCIE5_X16_Bps, 79.11 * 2**30)])
@pytest.mark.slow  # a whole run of seconds: run with the slow checks
def test_an_offloaded_70b_decode_step_is_bounded_by_the_pcie_floor(evaluator, device, link_Bps, capacity_B):
    """Llama-2-70B in fp16 needs about 138 GB; on an 80 GB GPU the rest lives in host memory and crosses PCIe every
    decode step (each step reads every weight). Floor: the bytes that cannot stay over the link's bandwidth; with two
    layers' buffers double-buffered the device gives up 2/80 of what it offloads, so it offloads
    excess / (1 - 2/80). Ceiling: that transfer plus the device's own step (the same point on a device with room
    for it, a capacity what-if), as if nothing overlapped."""
    needed_B = evaluator.evaluate(point70b(device)).metrics["peak_memory_B"]  # infeasible: reports what it needs
    excess_B = needed_B - capacity_B
    assert excess_B > 50 * GB  # 138 GB of weights on 80 GB
    offloaded_B = excess_B / (1 - 2 / LAYERS_70B)
    metrics = evaluator.evaluate(point70b(device, offload="weights")).metrics
    assert metrics["fits_in_memory"] and metrics["offloaded_B"] == pytest.approx(offloaded_B, rel=1e-9)
    assert metrics["peak_memory_B"] == pytest.approx(capacity_B, rel=1e-9)
    roomy = replace(point70b(device), overrides=(("memory.capacity_GB", 200),))
    own_step_s = evaluator.evaluate(roomy).metrics["tpot_s"]
    floor_s = excess_B / link_Bps  # no buffers at all: what any placement must stream per step
    assert floor_s < offloaded_B / link_Bps <= metrics["tpot_s"]
    assert metrics["tpot_s"] <= offloaded_B / link_Bps + LAYERS_70B * 1e-6 + own_step_s
    # Without prefetch the transfer and the step add up: the ceiling is reached.
    serial = evaluator.evaluate(point70b(device, offload="weights", offload_prefetch=0)).metrics
    assert serial["tpot_s"] == pytest.approx(offloaded_B / link_Bps + own_step_s, rel=0.05)


def test_a_faster_link_streams_the_same_bytes_sooner(evaluator):
    pcie4 = evaluator.evaluate(point70b(offload="auto", host_link="pcie4-x16")).metrics
    pcie5 = evaluator.evaluate(point70b(offload="auto", host_link="pcie5-x16")).metrics
    nvme = evaluator.evaluate(point70b(offload="auto", host_link="nvme-pcie4-x4")).metrics
    assert pcie4["offloaded_B"] == pcie5["offloaded_B"] == nvme["offloaded_B"]
    assert pcie5["tpot_s"] < pcie4["tpot_s"] < nvme["tpot_s"]
    # The device's own preset names PCIe 4.0 x16 (NVIDIA A100 datasheet: PCIe Gen4 64 GB/s both ways).
    default = evaluator.evaluate(point70b(offload="auto")).metrics
    assert default["tpot_s"] == pcie4["tpot_s"]


# ---- invariants -----------------------------------------------------------------------------------------------

# A KV-bound point: 32 sequences of 1,040 tokens of a 7B model hold 17 GB of KV cache beside 13.5 GB of weights
# on an L4's 24 GB.
KV_BOUND = DesignPoint(model="llama-2-7b", device="l4", batch=32, prompt=1024, output=16)


@pytest.mark.parametrize(("base", "knobs"), [
    (point70b(), {"offload": "weights"}), (point70b(), {"offload": "auto"}),
    (point70b(), {"offload": "auto", "offload_prefetch": 0}), (KV_BOUND, {"offload": "kv"}),
    (KV_BOUND, {"offload": "auto"})], ids=["weights", "auto", "auto-serial", "kv", "kv-bound-auto"])
def test_offloading_is_never_faster_than_fitting(evaluator, base, knobs):
    """The same point with the device's capacity raised until it fits (a what-if) is the offloaded point's lower
    bound in every timing and in energy."""
    offloaded = evaluator.evaluate(replace(base, knobs=tuple(sorted(knobs.items())))).metrics
    fitting = evaluator.evaluate(replace(base, overrides=(("memory.capacity_GB", 500),))).metrics
    assert offloaded["fits_in_memory"] and offloaded["offloaded_B"] > 0 and fitting["offloaded_B"] == 0
    for name in TIMINGS:
        assert offloaded[name] >= fitting[name], name
    assert offloaded["tokens_per_s"] <= fitting["tokens_per_s"]


def test_a_point_that_fits_gets_the_same_numbers_whatever_offload_says(evaluator):
    plain = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=4, prompt=512, output=16)
    reference = evaluator.evaluate(plain).metrics
    assert reference["offloaded_B"] == 0
    for mode in ("weights", "kv", "auto"):
        metrics = evaluator.evaluate(replace(plain, knobs=(("offload", mode),))).metrics
        assert {k: v for k, v in metrics.items() if k != "offload"} == reference


def test_offload_none_leaves_a_point_that_does_not_fit_infeasible(evaluator):
    metrics = evaluator.evaluate(point70b()).metrics
    assert not metrics["fits_in_memory"] and metrics["infeasible_reason"].startswith("needs ")
    assert math.isnan(metrics["tpot_s"]) and metrics["offloaded_B"] == 0


# ---- bad input ------------------------------------------------------------------------------------------------

def test_an_offload_that_still_cannot_fit_is_infeasible_with_its_reason(evaluator):
    metrics = evaluator.evaluate(point70b(offload="kv")).metrics  # 0.2 GB of KV cannot free 58 GB
    assert not metrics["fits_in_memory"] and math.isnan(metrics["tpot_s"])
    # The device holds what its deviceQuery total says, 85100068864 B (85.1 GB; see the PCIe-floor test above).
    assert metrics["infeasible_reason"].startswith("offload kv: needs ") and "85.1 GB" in metrics["infeasible_reason"]


def test_unknown_offload_values_and_links_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"found 'disk', allowed: none, weights, kv, auto"):
        knob("offload").validate("disk")
    with pytest.raises(ValueError, match=r"found 'pcie9', allowed: empty \(the device's own host link\)"):
        knob("host_link").validate("pcie9")
    with pytest.raises(ValueError, match=r"found 2, allowed: 0, 1"):
        knob("offload_prefetch").validate(2)


@pytest.mark.parametrize(("fields", "message"), [
    # B200's preset names no host link (its datasheet's host interface was not sourced); 80 GB makes 70B not fit.
    ({"device": "b200", "overrides": (("memory.capacity_GB", 80),)},
     r"host_link: device 'b200' names no host link in its preset, allowed: a link preset"),
])
def test_offloads_the_model_does_not_cover_are_refused(evaluator, fields, message):
    with pytest.raises(InputError, match=message):
        evaluator.evaluate(replace(point70b(offload="auto"), **fields))


@pytest.mark.parametrize(("fields", "message"), [
    ({"pp": 2}, "offload: found 'auto' on 2 pipeline stages, allowed: none, or offloading on one stage"),
    ({"knobs": (("offload", "auto"), ("offload_window", 2))},
     "offload_window: found 2 with offload 'auto', allowed: offload weights"),
])
def test_offloads_not_modeled_beside_other_settings_are_not_run(evaluator, fields, message):
    """Recorded not run, the row saying why (DesignPoint.unjudged; grids of them: test_unrun_combinations.py)."""
    metrics = evaluator.evaluate(replace(point70b(offload="auto"), **fields)).metrics
    assert metrics["infeasible_reason"].startswith(message), metrics["infeasible_reason"]
    assert math.isnan(metrics["tpot_s"])


SPECULATIVE_OFFLOAD = "offload: found 'auto' with spec_draft 'medusa', allowed: none with speculative decoding"


def test_a_grid_crossing_offload_with_speculation_runs_the_points_it_can(tiny_config, tmp_path, capsys):
    """Offloading beside speculative decoding is not modeled: explore run refuses it in one line; a grid crossing
    offload [none, auto] with spec_draft ['', medusa] records the one such point of its four as not run, its
    infeasible_reason saying why, and runs the other three; a grid of only such points is refused in one line."""
    import csv

    from explore.cli import main
    from tests.explore.tiny_sweep import write_sweep

    assert main(["run", "--model", tiny_config, "--device", "h100-sxm", "--offload", "auto", "--spec-draft", "medusa",
                 "--acceptance", "0.5"]) == 2
    err = capsys.readouterr().err
    assert ("--offload: found 'auto' with --spec-draft 'medusa', allowed: none with speculative decoding" in err
            and len(err.strip().splitlines()) == 1), err
    head = f"name: os\nmodel: {tiny_config}\ndevice: h100-sxm\nworkload: {{batch: 2, prompt: 64, output: 8, "
    path = write_sweep(tmp_path, head + "offload: [none, auto], spec_draft: ['', medusa], acceptance: 0.5}\n")
    assert main(["check", path]) == 0
    assert f"1 of 4 points are not run, each row's infeasible_reason saying why: {SPECULATIVE_OFFLOAD}" in (
        capsys.readouterr().out)
    out = tmp_path / "out"
    assert main(["--quiet", path, "--out", str(out)]) == 0
    capsys.readouterr()
    with open(out / "results.csv", newline="") as file:
        rows = {(row["offload"], row["spec_draft"]): row for row in csv.DictReader(file)}
    assert len(rows) == 4
    assert rows["auto", "medusa"]["infeasible_reason"].startswith(SPECULATIVE_OFFLOAD)
    assert rows["auto", "medusa"]["tpot_s"] in ("", "nan")
    for ran in (("none", ""), ("auto", ""), ("none", "medusa")):
        assert not rows[ran]["infeasible_reason"] and float(rows[ran]["tpot_s"]) > 0
    every = write_sweep(tmp_path, head + "offload: [auto, kv], spec_draft: medusa, acceptance: 0.5}\n")
    assert main(["check", every]) == 2
    err = capsys.readouterr().err
    assert SPECULATIVE_OFFLOAD in err and len(err.strip().splitlines()) == 1


def test_offloading_on_a_device_without_a_host_link_is_refused_before_anything_runs(evaluator):
    """NeuPIMs' preset names no host link: a point that may offload there is refused by the check `explore check` and
    a sweep's start make (Evaluator.check_point), in one line naming host_link, not in the middle of the run; with a
    host link it passes."""
    with pytest.raises(InputError, match=r"host_link: device 'neupims' names no host link .*\(--host-link\)$"):
        evaluator.check_point(point70b("neupims", offload="weights"))
    evaluator.check_point(point70b("neupims", offload="weights", host_link="pcie4-x16"))


def test_a_selection_streams_only_what_it_reads_from_an_offloaded_cache(evaluator):
    """Llama-2-7B, batch 16 x 3,968 tokens, on an A100 cut to 40 GB: part of the KV cache lives in host memory and
    crosses PCIe 4.0 every decode step. Double Sparsity at 1/16 reads its labels (1/16 of the cache) and 1/16 of the
    tokens, 1/8 of the cache, of the 1 + 1/16 it holds: its step is bounded by that share of the offloaded bytes over
    the link, not by all of them (the whole offloaded cache made the selection slower than none)."""
    def run(**knobs):
        point = DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=16, prompt=3968, output=8,
                            execution="engine", knobs=tuple(sorted((("offload", "kv"),) + tuple(knobs.items()))),
                            overrides=(("memory.capacity_GB", 40),))
        return evaluator.evaluate(point).metrics

    whole = run()
    selected = run(topk_fraction=1 / 16, topk_method="double_sparsity")
    assert whole["offloaded_B"] > 0 and selected["offloaded_B"] > 0
    assert whole["offloaded_B"] / PCIE4_X16_Bps == pytest.approx(whole["tpot_s"], rel=0.1)
    floor_s = selected["offloaded_B"] * (1 / 8) / (1 + 1 / 16) / PCIE4_X16_Bps
    assert 0.9 * floor_s <= selected["tpot_s"] <= 1.25 * floor_s
    assert selected["tpot_s"] < whole["tpot_s"]


def test_a_decode_step_that_skips_layers_streams_only_the_layers_it_runs(evaluator):
    """Llama-2-70B offloaded on an 80 GB A100 with exit_depth 0.5: a decode step runs 40 of the 80 decoder layers
    (kernels/early_exit.py) and needs only their offloaded weights, so it moves about half of what a full step moves
    (all the offloaded bytes crossed PCIe before, the step as slow as running every layer). Bounds by hand: at least
    the 40 layers' half of the offloaded bytes over PCIe 4.0; at most that plus the weights outside the layers
    (embedding and LM head, 2 x 32,000 x 8,192 at 2 bytes, of the model's 138 GB), one latency a layer and the
    device's own step at that depth (a capacity what-if that fits it)."""
    full = evaluator.evaluate(point70b(offload="weights")).metrics
    skipping = evaluator.evaluate(point70b(offload="weights", exit_depth=0.5)).metrics
    own_step_s = evaluator.evaluate(replace(point70b(exit_depth=0.5),
                                            overrides=(("memory.capacity_GB", 200),))).metrics["tpot_s"]
    outside_share = 2 * 32000 * 8192 * 2 / 137.95e9
    assert skipping["fits_in_memory"] and skipping["offloaded_B"] > 50 * GB
    floor_s = skipping["offloaded_B"] * (40 / 80) / PCIE4_X16_Bps
    ceiling_s = skipping["offloaded_B"] * (40 / 80 + outside_share) / PCIE4_X16_Bps + LAYERS_70B * 1e-6 + own_step_s
    assert floor_s <= skipping["tpot_s"] <= ceiling_s
    assert skipping["tpot_s"] < 0.6 * full["tpot_s"]
    assert skipping["ttft_s"] == pytest.approx(full["ttft_s"], rel=1e-3)  # the prefill runs every layer


# ---- a mixture of experts: Mixtral-8x7B (fp16, 93.4 GB) on an L40S (48 GB) -----------------------------------------

# Mixtral-8x7B-v0.1 config.json: hidden 4096, intermediate 14336, 32 layers, 8 experts of which 2 per token, 32 query
# and 8 KV heads of 128, vocab 32000, untied embeddings; an expert is 3 matrices (gate, up, down).
MIXTRAL_EXPERTS_B = 2 * 32 * 8 * 3 * 4096 * 14336  # bytes in fp16
MIXTRAL_REST_B = 2 * (2 * 32000 * 4096 + 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 4096 * 8 + 2 * 4096) + 4096)


def mixtral(batch: int, **knobs) -> DesignPoint:
    return DesignPoint(model="mixtral-8x7b", device="l40s", batch=batch, prompt=128, output=32,
                       knobs=tuple(sorted({"offload": "weights", **knobs}.items())))


def _traffic(evaluator, point: DesignPoint):
    from sim.workload import BatchWorkload

    device = evaluator.point_device(point)
    tables = evaluator.point_tables(point, device)
    workload = BatchWorkload(batch=point.batch, prompt_len=point.prompt, output_len=point.output)
    memory = evaluator.batch_memory(point, device, workload, tables.attention_window)
    return evaluator.offloaded(point, device, workload, memory)[2]


def test_an_offloaded_moe_decode_step_moves_only_the_experts_it_reaches(evaluator):
    """A decode step of one token runs 2 of each layer's 8 experts; an offloading engine fetches those (accelerate's
    per-module hooks, Mixtral-offloading's routed expert loads), not all 8: the offloaded share of the other weights
    and of 2/8 of the experts crosses PCIe, and the step is bounded by that, not by every offloaded byte."""
    metrics = evaluator.evaluate(mixtral(1)).metrics
    share = metrics["offloaded_B"] / (MIXTRAL_EXPERTS_B + MIXTRAL_REST_B)  # FlexGen's share of every layer
    step_B = share * (MIXTRAL_REST_B + MIXTRAL_EXPERTS_B * 2 / 8)
    traffic = _traffic(evaluator, mixtral(1))
    assert traffic.decode_to_device_B == pytest.approx(np.full(31, step_B), rel=1e-9)
    assert traffic.decode_routed_B == pytest.approx(share * MIXTRAL_EXPERTS_B / 4, rel=1e-9)
    assert traffic.prefill_B[0] == pytest.approx(metrics["offloaded_B"], rel=1e-9)  # 256 rows reach all 8 experts
    roomy = evaluator.evaluate(replace(mixtral(1), overrides=(("memory.capacity_GB", 200),))).metrics
    floor_s = step_B / PCIE4_X16_Bps
    assert floor_s <= metrics["tpot_s"] <= floor_s + 2 * 32 * 1e-6 + roomy["tpot_s"]
    assert metrics["tpot_s"] < 0.3 * metrics["offloaded_B"] / PCIE4_X16_Bps  # was every offloaded byte: 3.6x more


@pytest.mark.slow  # a whole run of seconds: run with the slow checks
def test_an_moe_batch_that_reaches_every_expert_moves_every_offloaded_weight(evaluator):
    """Four tokens route 8 rows, one to each of the 8 experts: every offloaded weight crosses the link in each step,
    prefetched a layer ahead as a dense model's are."""
    metrics = evaluator.evaluate(mixtral(4)).metrics
    traffic = _traffic(evaluator, mixtral(4))
    assert traffic.decode_to_device_B == pytest.approx(np.full(31, metrics["offloaded_B"]), rel=1e-9)
    assert traffic.decode_unreached_B == pytest.approx(0.0, abs=1.0)
    floor_s = metrics["offloaded_B"] / PCIE4_X16_Bps
    assert floor_s <= metrics["tpot_s"] <= floor_s + 32 * 1e-6 + 1e-3


def test_a_dense_offloaded_model_streams_every_offloaded_weight(evaluator):
    traffic = _traffic(evaluator, point70b(offload="weights"))
    offloaded_B = evaluator.evaluate(point70b(offload="weights")).metrics["offloaded_B"]
    assert traffic.decode_to_device_B == pytest.approx(np.full(7, offloaded_B), rel=1e-12)
    assert traffic.decode_routed_B == traffic.decode_unreached_B == traffic.prefill_routed_B == 0.0


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_a_faster_link_never_slows_an_offloaded_moe(evaluator, batch):
    links = ("nvme-pcie4-x4", "pcie4-x16", "pcie5-x16")
    runs = [evaluator.evaluate(mixtral(batch, host_link=link)).metrics for link in links]
    for name in TIMINGS:
        assert [m[name] for m in runs] == sorted((m[name] for m in runs), reverse=True), name


# ---- a sliding window over the weights (TPI-LLM), on one device or tensor parallel ----------------------------------

NVME_Bps = 7.45e9  # Samsung 990 PRO sequential read (the nvme-pcie4-x4 preset's datasheet figure)
LAYERS_7B = 32  # Llama-2-7B's num_hidden_layers (config.json)


def window7b(tp: int = 1, **knobs) -> DesignPoint:
    return DesignPoint(model="llama-2-7b", device="a100-sxm-80gb", batch=1, prompt=128, output=8, tp=tp,
                       knobs=tuple(sorted(knobs.items())))


def test_a_window_of_every_layer_is_no_offload(evaluator):
    """A window as deep as the model holds every layer: the same numbers as not offloading at all."""
    plain = evaluator.evaluate(window7b()).metrics
    whole = evaluator.evaluate(window7b(offload="weights", offload_window=LAYERS_7B, host_link="nvme-pcie4-x4")).metrics
    for name in (*TIMINGS, "peak_memory_B", "offloaded_B"):
        assert whole[name] == plain[name], name


@pytest.mark.parametrize("tp", [1, 2])
def test_a_window_holds_its_layers_and_streams_every_weight_each_step(evaluator, tp):
    """Llama-2-7B fits an 80 GB A100 whole; a window of 2 layers still streams every weight from an NVMe drive each
    decode step (each of the tp devices its own share from its own drive), holding 2 of 32 layers' weights. Floor: a
    device's share of the weights over the drive's read bandwidth; ceiling: that plus the step that fits, as if
    nothing overlapped. Memory by hand: what fits minus 30 of 32 layers' weights."""
    plain = evaluator.evaluate(window7b(tp)).metrics
    windowed = evaluator.evaluate(window7b(tp, offload="weights", offload_window=2,
                                           host_link="nvme-pcie4-x4")).metrics
    weights_B = windowed["offloaded_B"]
    assert 13 * GB < weights_B < 14 * GB  # 6.74 billion fp16 parameters
    assert windowed["peak_memory_B"] == pytest.approx(plain["peak_memory_B"] - weights_B * 30 / 32, rel=1e-9)
    floor_s = weights_B / tp / NVME_Bps
    assert floor_s <= windowed["tpot_s"] <= floor_s + plain["tpot_s"]
    assert windowed["tpot_s"] > plain["tpot_s"]


def test_tensor_parallel_devices_stream_their_shares_at_once(evaluator):
    """Two devices each read half the weights from their own drive: a link-bound decode step takes about half as
    long as one device's (the step itself, a few ms on an A100, is covered by the transfer)."""
    one, two = (evaluator.evaluate(window7b(tp, offload="weights", offload_window=2,
                                            host_link="nvme-pcie4-x4")).metrics for tp in (1, 2))
    assert two["tpot_s"] == pytest.approx(one["tpot_s"] / 2, rel=0.02)


def test_offloading_experts_alone_streams_only_the_experts_a_step_reaches(evaluator):
    """Mixtral-8x7B on an L40S at batch 1 with its routed experts alone in host memory: the other 3.2 GB of weights
    stay, the offloaded share is of the experts (the same bytes as offloading every weight, which the device's memory
    sets), and a decode step streams that share of the 2 of 8 experts it reaches and nothing else: fewer bytes than
    offloading every weight's share, and here a faster step. (Not always: the dense bytes offloading every weight
    streams are prefetched under compute, where routed experts wait in full, so on an A100 with CUDA graphs at batch 1
    `experts` is 3% slower.)"""
    every, alone = (evaluator.evaluate(mixtral(1, offload=mode)).metrics for mode in ("weights", "experts"))
    traffic = _traffic(evaluator, mixtral(1, offload="experts"))
    share = alone["offloaded_B"] / MIXTRAL_EXPERTS_B
    assert traffic.decode_to_device_B == pytest.approx(np.full(31, share * MIXTRAL_EXPERTS_B / 4), rel=1e-9)
    assert traffic.decode_routed_B == pytest.approx(share * MIXTRAL_EXPERTS_B / 4, rel=1e-9)
    assert alone["offloaded_B"] == pytest.approx(every["offloaded_B"], rel=1e-6)
    assert alone["tpot_s"] <= every["tpot_s"]


def test_offloaded_experts_under_power_law_routing_keep_the_most_popular_on_the_device(evaluator):
    """The same point under power_law routing: the device holds its most popular experts (sim/offload.py, Fiddler's
    popularity placement), 3 to 4 of each layer's 8. A one-token decode step's 2 experts follow fixed popularities,
    not the step's own draw, so it sometimes picks an offloaded one: more than none cross the link, and fewer than
    with none preferred (2 of 8 of the offloaded experts' bytes). The prefill's 128 tokens cross more than a step's
    and at most every offloaded expert (the least popular may go unpicked by all 128)."""
    point = mixtral(1, offload="experts", moe_routing="power_law")
    metrics = evaluator.evaluate(point).metrics
    traffic = _traffic(evaluator, point)
    held = 8 * (1 - metrics["offloaded_B"] / MIXTRAL_EXPERTS_B)
    assert 3 <= held < 4
    assert 0 < traffic.decode_routed_B < metrics["offloaded_B"] * 2 / 8
    assert traffic.decode_routed_B < traffic.prefill_B[0] <= metrics["offloaded_B"]
    even = evaluator.evaluate(mixtral(1, offload="experts")).metrics
    assert metrics["tpot_s"] < even["tpot_s"]
