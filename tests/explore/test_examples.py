"""The example sweeps validate as written, and their first and last design points evaluate."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from explore.sweep import load_sweep
from hw_models.registry import DEVICE_KINDS, read_device_yaml

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def _kinds(sweep) -> set[str]:
    return {read_device_yaml(device)[0]["kind"] for device in sweep.dimensions()["device"]}


def test_the_examples_issue_5_asks_for_show_what_they_are_named_for():
    """Not only that the files exist: each sweeps what its name promises."""
    sweeps = {p.stem: load_sweep(str(p)) for p in EXAMPLES
              if p.stem in ("quickstart", "npu-pim-whatif", "quant-sparsity", "fpga-sweep")}
    assert len(sweeps) == 4, sorted(sweeps)
    quick = sweeps["quickstart"].dimensions()
    assert _kinds(sweeps["quickstart"]) == {"gpu"} and len(quick["device"]) >= 2 and len(quick["batch"]) >= 2
    npu = sweeps["npu-pim-whatif"].dimensions()
    assert _kinds(sweeps["npu-pim-whatif"]) == {"npu"}
    assert any(key.startswith("device.pim.") and len(values) >= 2 for key, values in npu.items())
    quant = sweeps["quant-sparsity"].dimensions()
    assert len(quant["weight_bits"]) >= 2 and "dense" in quant["sparsity"] and len(quant["sparsity"]) >= 2
    fpga = sweeps["fpga-sweep"].dimensions()
    assert _kinds(sweeps["fpga-sweep"]) == {"fpga"} and any(k.startswith("device.") for k in fpga)


def test_device_families_spans_every_kind():
    sweep = load_sweep(str(next(p for p in EXAMPLES if p.stem == "device-families")))
    assert _kinds(sweep) == set(DEVICE_KINDS)


# Examples whose two points take tens of seconds (splitwise-slowdown: a serving run per request served alone for its
# slowdown reference), or four to seven where tests of their own cover what they sweep (attention devices,
# data-parallel attention, all-reduce overlap, offload: tests/explore/test_attention_disaggregation.py,
# test_data_parallel_attention.py, test_tensor_parallel.py, test_offload_points.py; a fleet's 2,000 requests on three
# replicas: test_fleet_runs.py), or three to six seconds where tests of their own cover what they sweep (tensor and
# pipeline parallelism: test_tensor_parallel.py; the searched what-ifs: test_search.py; long contexts: the SALE,
# LazyLLM, TokenSelect and Mustafar paper checks; decode-time techniques: test_speculative_points.py; NeuPIMs'
# what-ifs: test_paper_neupims.py; SLO classes and the cheapest fleet: test_priority_runs.py, test_fleet_runs.py; an
# autoscaled pool: test_autoscale_runs.py; a prefill pool's or a fleet's mixed replicas' own node link, Llama-3-70B on
# 16 GPUs a replica: test_pool_node_link.py; the SLA planner's 60,000 requests, twenty seconds a point:
# test_sla_planner.py; the gateway's 6,000 requests under overload: test_shedding_runs.py; DeepSeek-V3 traced at full
# size, its MTP module too: test_paper_deepseek_mtp.py; 300 long prompts under a cap on each one's tokens an iteration:
# test_chunked_long_prefill.py, test_long_prefill_tokens.py; gpt-oss-20b and -120b traced at full size for 8,192-token
# prompts, twelve seconds: tests/workloads/test_gpt_oss.py, test_gpt_oss_points.py; a decode pool picked at arrival or
# after the prefill, 200 requests on three replicas, eight seconds: tests/sim/test_decode_pick.py,
# test_decode_pick_knob.py), run in the slow run, which keeps the unit run under five minutes on two cores.
SLOW_EXAMPLES = ("splitwise-slowdown", "attention-disaggregation", "dp-attention", "allreduce-overlap", "offload",
                 "fleet", "tensor-parallel", "serving-systems", "search-gpu-whatif", "long-context", "decode-time",
                 "npu-pim-whatif", "slo-classes", "autoscaling", "cheapest-fleet", "sla-planner", "gateway", "mtp",
                 "pool-node-link", "mixed-node-link", "long-prefill-threshold", "gpt-oss", "decode-pick")


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_EXAMPLES else p
                                  for p in EXAMPLES], ids=[p.stem for p in EXAMPLES])
def test_example_runs_as_written(path, evaluator):
    sweep = load_sweep(str(path))
    points = sweep.points()
    assert len(points) == sweep.size() >= 2
    if path.stem == "gpu-whatif-grid":
        return  # 10k points on two GPUs: covered by tests/explore/test_search.py
    fits = []
    for point in (points[0], points[-1]):
        metrics = evaluator.evaluate(point).metrics
        fits.append(bool(metrics["fits_in_memory"]))
        if fits[-1]:
            assert not metrics["infeasible_reason"]
            for name in ("ttft_s", "tpot_s", "e2e_s", "tokens_per_s", "energy_per_token_J"):
                assert math.isfinite(metrics[name]) and metrics[name] > 0, (point, name, metrics[name])
        else:  # a point that does not fit says why, reports no timings, and does need more than the memory
            assert metrics["infeasible_reason"].startswith("needs") and math.isnan(metrics["tokens_per_s"])
            assert metrics["peak_memory_B"] > evaluator.point_device(point).memory_bytes
    assert any(fits), "an example whose first and last points both fail to fit shows no result"


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem in SLOW_EXAMPLES],
                         ids=[p.stem for p in EXAMPLES if p.stem in SLOW_EXAMPLES])
def test_the_slow_examples_validate_as_written(path):
    """What the unit run keeps of the examples the slow run evaluates: each loads, every check passing."""
    sweep = load_sweep(str(path))
    assert len(sweep.points()) == sweep.size() >= 2


def test_the_readme_sweep_example_validates(tmp_path):
    """The sweep file the README's "Sweep files" section shows, copied as a user would."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Sweep files", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "readme-sweep.yaml"
    path.write_text(block)
    sweep = load_sweep(str(path))
    assert sweep.size() > 1 and "device.memory.capacity_GB" in sweep.derived_values()


def test_the_readme_serving_section_validates(tmp_path, capsys):
    """The `serving:` section the README's "Serving" section shows, under a model and device, copied as a user would:
    its uncommented keys together are a valid sweep (a key set there that no point reads would be refused)."""
    from explore.cli import main

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Serving", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert block.startswith("serving:\n")
    path = tmp_path / "readme-serving.yaml"
    path.write_text(f"name: readme-serving\nmodel: llama-2-7b\ndevice: h100-sxm\n{block}")
    assert main(["check", str(path)]) == 0, capsys.readouterr().err
