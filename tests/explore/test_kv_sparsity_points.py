"""The kv_sparsity knob (Mustafar's unstructured KV sparsity, kernels/kv_sparsity.py) on design points: 0 is today's
point, more sparsity never takes more memory or a slower decode, the memory it frees holds a larger batch and more
serving KV blocks, both evaluation paths agree, the quality figure is refused with its reason, and bad values get
one line and exit 2."""

from __future__ import annotations

import math

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.sweep import load_sweep
from kernels.formats import NumericFormat
from sim.workload import BatchWorkload
from tests.explore.test_blocks import assert_blocks_agree, assert_same
from tests.explore.tiny_sweep import TINY_CONFIG, write_sweep

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

SPARSITIES = (0.0, 0.1, 0.2, 0.35, 0.4, 0.5, 0.7, 0.9)


def point(model: str, sparsity: float, device: str = "h100-sxm", **fields) -> DesignPoint:
    fields = {"batch": 8, "prompt": 1024, "output": 16, "execution": "engine"} | fields
    return DesignPoint(model=model, device=device, knobs=(("kv_sparsity", sparsity),) if sparsity else (), **fields)


def test_zero_is_todays_point(tiny_config, tiny_evaluator):
    today = tiny_evaluator.evaluate(DesignPoint(model=tiny_config, device="h100-sxm", batch=8, prompt=1024,
                                                output=16, execution="engine")).metrics
    zero = tiny_evaluator.evaluate(DesignPoint(model=tiny_config, device="h100-sxm", batch=8, prompt=1024, output=16,
                                               execution="engine", knobs=(("kv_sparsity", 0.0),))).metrics
    assert_same(today, zero, "kv_sparsity 0")


@pytest.mark.parametrize("device", ["h100-sxm", "b200", "l40s", "a100-sxm-80gb", "npu-only", "ampere-altra"])
def test_more_sparsity_never_more_memory_nor_a_slower_decode(tiny_config, tiny_evaluator, device):
    """Over sparsities crossing the layout's break-even (14.8%) and the bytes where a 16-bit cache packs below 1.5
    bytes an element (B200 and L40S fit an fp8-KV cache's attention apart: the fit goes by the values' width)."""
    runs = [tiny_evaluator.evaluate(point(tiny_config, s, device)).metrics for s in SPARSITIES]
    for fewer, more in zip(runs, runs[1:], strict=False):
        assert more["peak_memory_B"] <= fewer["peak_memory_B"]
        assert more["tpot_s"] <= fewer["tpot_s"] * (1 + 1e-12)
    assert runs[-1]["peak_memory_B"] < runs[0]["peak_memory_B"]


def test_decode_reads_the_packed_cache_and_does_the_dense_math(tiny_config, tiny_evaluator):
    """Decode attention's KV bytes shrink by the format's kv_scale, its FLOPs not at all; the prefill's cache write
    writes the packed bytes."""
    fmt = NumericFormat(kv_sparsity=0.7)
    device = tiny_evaluator.point_device(point(tiny_config, 0.0))
    dense = tiny_evaluator.point_tables(point(tiny_config, 0.0), device)
    sparse = tiny_evaluator.point_tables(point(tiny_config, 0.7), device)
    for d, s in ((dense.prefill, sparse.prefill), (dense.decode, sparse.decode)):
        assert d.kv_bytes.sum() > 0
        assert s.kv_bytes.sum() == pytest.approx(d.kv_bytes.sum() * fmt.kv_scale(64 // 4))  # heads of 64 / 4
        assert s.flops.sum() == pytest.approx(d.flops.sum())


def test_the_freed_memory_holds_a_larger_batch(tiny_evaluator):
    """Llama-2-7B's 16-bit KV cache at 2,048 + 256 tokens: 1 MiB a token (32 layers x 2 x 4,096 x 2 B); packed at
    70% it takes kv_scale of that, so the cache of a batch shrinks by exactly that and more sequences fit."""
    work = BatchWorkload(batch=16, prompt_len=2048, output_len=256)

    def footprint(sparsity):
        p = point("llama-2-7b", sparsity, "a100-sxm-80gb", batch=16, prompt=2048, output=256)
        return tiny_evaluator.batch_memory(p, tiny_evaluator.point_device(p), work, tiny_evaluator.kv_window(p))

    dense, sparse = footprint(0.0), footprint(0.7)
    assert dense.kv_cache_B == pytest.approx(16 * (2048 + 255) * 32 * 2 * 4096 * 2)
    head_dim = 4096 // 32  # Llama-2-7B's heads
    assert sparse.kv_cache_B == pytest.approx(dense.kv_cache_B * NumericFormat(kv_sparsity=0.7).kv_scale(head_dim))
    assert sparse.weights_B == dense.weights_B
    capacity_B = tiny_evaluator.point_device(point("llama-2-7b", 0.0, "a100-sxm-80gb")).memory_bytes
    free_B = capacity_B - dense.weights_B - dense.activations_B
    assert math.floor(free_B / (sparse.kv_cache_B / 16)) > math.floor(free_B / (dense.kv_cache_B / 16))


def test_serving_kv_capacity_grows_by_the_compression(tiny_config, tiny_evaluator):
    from sim.serving_spec import ServingSpec
    from workloads.requests import Fixed

    spec = ServingSpec(requests=4, rate_per_s=20.0, prompt=Fixed(tokens=200), output=Fixed(tokens=4))
    dense, sparse = (tiny_evaluator.evaluate(DesignPoint(model=tiny_config, device="h100-sxm", batch=spec.max_seqs,
                                                         prompt=0, output=0, serving=spec,
                                                         knobs=(("kv_sparsity", s),) if s else ())).result.memory
                     for s in (0.0, 0.7))
    # The tiny model's block: 16 tokens x 2 layers x 2 (K, V) x 2 KV heads x 16 dims x 2 B.
    dense_block_B = 16 * 2 * 2 * TINY_CONFIG["num_key_value_heads"] * 16 * 2
    assert dense.kv_block_B == dense_block_B
    assert sparse.kv_block_B == pytest.approx(dense_block_B * 7.175 / 16)
    # The same free bytes in blocks 7.175 / 16 the size: 16 / 7.175 times as many, within the two floors.
    assert sparse.kv_blocks > dense.kv_blocks
    assert abs(sparse.kv_blocks - dense.kv_blocks * 16 / 7.175) <= 16 / 7.175 + 1


def test_blocks_agree_with_the_reference(tiny_config, tiny_evaluator):
    points = [point(tiny_config, s, overrides=(("memory.bandwidth_GBps", bw),)) for s in (0.0, 0.7)
              for bw in (1000.0, 3000.0)]
    assert_blocks_agree(tiny_evaluator, points)


def test_no_quality_figure_with_the_reason(tiny_evaluator):
    metrics = tiny_evaluator.evaluate(point("llama-3-8b", 0.7, batch=1, prompt=128, output=4)).metrics
    assert math.isnan(metrics["quality_delta"])
    assert "kv_sparsity" in metrics["quality_source"]


def test_sweeps_take_it_and_refuse_bad_values(tiny_config, tmp_path, capsys):
    path = write_sweep(tmp_path, f"name: kvsp\nmodel: {tiny_config}\ndevice: h100-sxm\n"
                                 f"format: {{kv_sparsity: [0, 0.5, 0.7]}}\n")
    assert sorted(p.numeric_format.kv_sparsity for p in load_sweep(path).points()) == [0.0, 0.5, 0.7]
    for bad in ("1.0", "-0.2", "dense"):
        path = write_sweep(tmp_path, f"name: kvsp\nmodel: {tiny_config}\ndevice: h100-sxm\n"
                                     f"format: {{kv_sparsity: {bad}}}\n")
        assert main(["check", path]) == 2
        err = capsys.readouterr().err
        assert "format.kv_sparsity: found" in err and len(err.strip().splitlines()) == 1, err
    assert main(["run", "--model", tiny_config, "--device", "h100-sxm", "--kv-sparsity", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "--kv-sparsity: found 1.5, allowed: a fraction in [0, 1)" in err and len(err.strip().splitlines()) == 1


def test_a_pim_device_says_what_it_assumes(tiny_config, capsys):
    assert main(["run", "--model", tiny_config, "--device", "neupims", "--batch", "2", "--prompt", "64", "--output",
                 "4", "--kv-sparsity", "0.7"]) == 0
    assert "bitmap-packed sparse KV cache (kv_sparsity 0.7) on neupims" in capsys.readouterr().out
    # A CPU's SRAM-PIM arrays (SAIL) run the GEMVs, not attention: nothing to say (it raised AttributeError).
    assert main(["run", "--model", tiny_config, "--device", "ampere-altra-sail", "--batch", "2", "--prompt", "64",
                 "--output", "4", "--kv-sparsity", "0.7"]) == 0
    assert "bitmap-packed" not in capsys.readouterr().out
