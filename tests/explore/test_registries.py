"""The knob and metric registries (explore/knobs.py, explore/metrics.py): consistent with what sim/ computes and
with the README, and a new knob or metric is one entry: a dummy of each, registered here, reaches sweep
validation, the design point's key and cost model, results columns, `explore run` flags, report labels and
objectives without an edit anywhere else."""

from __future__ import annotations

import json
import logging
import math
import re
import types
import typing
from pathlib import Path

import pytest

from explore.cli import _command_parser, main
from explore.design_point import DesignPoint
from explore.docs_tables import TABLES, marked
from explore.knobs import KNOBS, Knob, input_columns, knobs
from explore.metrics import METRICS, Metric, add_derived, better_first, metric_names, numeric_metrics
from explore.rows import metric_axis_label, normalize_row, point_from_row, point_label
from explore.runner import columns_for, run_sweep
from explore.sensitivity import varying_knobs
from explore.sweep import load_sweep, sweep_file
from explore.sweep_serving import Serving
from sim.result import RESULT_METRICS
from sim.serving import SERVING_METRICS
from sim.serving_metrics import SUMMARY_UNITS
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_sweep, write_tiny_model

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

README = Path(__file__).resolve().parents[2] / "README.md"

# A format knob (kernels.formats.NumericFormat.group_size: values sharing one quantization scale) is one registry
# entry (explore/knobs.py): it reaches a sweep, `explore run` and the report without an edit anywhere else.
# DUMMY is a knob registered by the test only, to check that registering is undone.
DUMMY = Knob(name="dummy_part", type=int, help="a part nothing reads", section="format", default=1, allowed=(1, 2))
TOKENS_PER_KJ = Metric(name="tokens_per_kJ", label="tokens per kJ", unit="", better="max",
                       definition="1000 / energy_per_token_J", derive=lambda m: 1e3 / m["energy_per_token_J"])


@pytest.fixture
def dummies():
    with METRICS.added(TOKENS_PER_KJ):
        yield


# ---- consistency ----------------------------------------------------------------------------------------------

def test_metrics_registry_matches_what_sim_computes():
    point = metric_names("point")
    assert point[:len(RESULT_METRICS)] == RESULT_METRICS
    assert metric_names("serving") == SERVING_METRICS
    for name, unit in SUMMARY_UNITS.items():  # sim's units: seconds where the registry says s
        assert (METRICS[name].unit == "s") == (unit == "s"), name
    assert set(point) >= {"fits_in_memory", "infeasible_reason", "area_mm2", "cost_usd", "tokens_per_usd"}
    assert "calibrated" not in numeric_metrics() and "meets_constraints" not in numeric_metrics()


def test_every_entry_says_what_it_is_in_one_line():
    for m in METRICS.entries():
        assert m.definition and "\n" not in m.definition and m.label, m.name
        assert m.better in ("min", "max", None) and (m.kind == "number" or m.better is None), m.name
    for k in knobs():
        assert k.help and "\n" not in k.help and k.allowed_words(), k.name


def test_serving_knobs_are_the_spec_columns_and_the_section_fields():
    assert [k.name for k in knobs(scope="serving") if k.column == "always"] == list(ServingSpec().columns())
    # each knob with a column only where set, set (think times spread where conversations think: a spec of its own)
    every = ServingSpec(scheduler="orca", prompt_batch_tokens=2048, long_prefill_tokens=2048, router="round_robin",
                        max_decode_preemptions=4,
                        prefix_attention="cascade", prefix_groups=1, queue_policy="lpm", priority_fraction=0.2,
                        conversation_turns=1,
                        think_s=0.0, memory_utilization=0.9, host_cache_GB=64.0, kv_store_GB=256.0, kv_store_GBps=25.0,
                        attention_device="h20")
    chat = ServingSpec(conversation_turns=2, think_s=1.0, think_cv=1.0)
    # apart: a fleet attends itself (its pools scaled by mixed_max_replicas beside max_replicas)
    fleet = ServingSpec(mixed_device="l4", mixed_replicas=2, mixed_max_replicas=4, autoscale_target=4.0,
                        mixed_node_link="ethernet-100g")
    scaled = ServingSpec(max_replicas=4, autoscale_target=5.0, autoscale_metric="running", cold_start_s=30.0,
                         prefill_replicas=1, prefill_max_replicas=2, prefill_node_link="infiniband-hdr",
                         decode_pick="prefill_done",
                         autoscaler="hpa", autoscale_interval_s=30.0,
                         busy_kv_usage=0.9, busy_prefill_tokens=8192, busy_waiting_requests=4, busy_action="queue")
    planned = ServingSpec(max_replicas=4, autoscaler="sla_planner", autoscale_predictor="kalman", slo_tpot_s=0.1)
    # apart: clients retry where the gateway rejects
    retried = ServingSpec(busy_waiting_requests=4, client_retries=2, client_retry_s=1.0)
    lora = ServingSpec(lora_adapters=8, max_loras=4)
    names = [k.name for k in knobs(scope="serving")]
    assert set(names) == (set(every.columns()) | set(chat.columns()) | set(fleet.columns()) | set(scaled.columns())
                          | set(planned.columns()) | set(retried.columns()) | set(lora.columns()))
    for spec in (every, chat, fleet, scaled, planned, retried, lora):
        assert [name for name in names if name in spec.columns()] == list(spec.columns())
    sweep_keys = {"rate_per_s": "rate"}  # the one serving knob whose sweep key differs from its column
    for k in knobs(scope="serving"):
        assert sweep_keys.get(k.name, k.name) in Serving.model_fields, k.name


def test_readme_tables_are_the_registries():
    text = README.read_text(encoding="utf-8")
    for name, render in TABLES.items():
        (match,) = marked(name).finditer(text)
        assert match[2].strip() == render(), f"README {name} table: run python3 -m explore.docs_tables README.md"


def test_better_first_follows_the_direction():
    rows = [{"tokens_per_s": 1.0, "tpot_s": 0.2}, {"tokens_per_s": 3.0, "tpot_s": 0.1}]
    assert better_first(rows, "tokens_per_s")[0]["tokens_per_s"] == 3.0
    assert better_first(rows, "tpot_s")[0]["tpot_s"] == 0.1
    with pytest.raises(ValueError, match="no better direction"):
        better_first(rows, "avg_power_W")


def test_objective_against_the_better_direction_warns(tmp_path, caplog):
    path = write_sweep(tmp_path, "name: s\nmodel: llama-2-7b\ndevice: h100-sxm\n"
                                 "objectives: {minimize: [tpot_s, tokens_per_s]}\n")
    with caplog.at_level(logging.WARNING, logger="explore.sweep"):
        load_sweep(path)
    (record,) = caplog.records
    assert "sweep.yaml:4: objectives.minimize: tokens_per_s is better higher" in record.getMessage()


# ---- a new knob and a new metric are one entry each --------------------------------------------------------------

def test_a_registered_knob_and_metric_reach_sweeps_columns_points_and_labels(dummies, tmp_path):
    model = write_tiny_model(tmp_path)
    sweep = load_sweep(write_sweep(tmp_path, f"name: dummy\nmodel: {model}\ndevice: h100-sxm\n"
                                             "workload: {batch: 1, prompt: 32, output: 4}\n"
                                             "format: {weight_bits: 4, group_size: [32, 128]}\n"
                                             "objectives: {maximize: [tokens_per_kJ, tokens_per_s]}\n"))
    assert sweep.dimensions()["group_size"] == [32, 128]
    columns = columns_for(sweep)
    assert columns[columns.index("execution") + 1] == "group_size"
    point = metric_names("point")  # the dummy metric goes last in its section
    assert point[-1] == "tokens_per_kJ" and columns[columns.index(point[-2]) + 1] == "tokens_per_kJ"
    small, default = sweep.points()
    assert small.knobs == (("group_size", 32),) and small.numeric_format.group_size == 32
    assert (small.knob("group_size"), default.knob("group_size"), small.knob("weight_bits")) == (32, 128, 4)
    # The default value is left out of the key: the point is the one stored before the knob existed.
    plain = DesignPoint(model=model, device="h100-sxm", batch=1, prompt=32, output=4, weight_bits=4)
    assert default.knobs == () and default.point_id == plain.point_id != small.point_id

    rows = {row["group_size"]: normalize_row(row) for row in run_sweep(sweep, tmp_path / "out")}
    # The cost model read it: a scale per 32 weights instead of per 128 holds more bytes.
    assert rows[32]["peak_memory_B"] > rows[128]["peak_memory_B"]
    assert rows[32]["tokens_per_kJ"] == pytest.approx(1e3 / rows[32]["energy_per_token_J"])
    assert point_from_row(rows[32]).point_id == small.point_id  # the report finds the point again
    assert "group_size=32" in point_label(rows[32]) and "group_size" not in point_label(rows[128])
    assert "group_size" in varying_knobs(list(rows.values()))
    assert metric_axis_label("tokens_per_kJ") == "tokens per kJ"
    assert metric_axis_label("group_size") == "group size"
    assert "tokens_per_kJ" in numeric_metrics()


def test_a_registered_knob_is_checked_in_sweeps_and_flags(dummies, tmp_path, capsys):
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: bad\nmodel: {model}\ndevice: h100-sxm\nformat: {{group_size: [32, 100]}}\n")
    assert main(["check", path]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "sweep.yaml:4: format.group_size.1: found 100, allowed: 8, 16, 32, 64, 128 or 256" in line

    assert "--group-size {8,16,32,64,128,256}" in _run_help()
    run = ["run", "--model", model, "--device", "h100-sxm", "--prompt", "32", "--output", "4", "--weight-bits", "4"]
    assert main([*run, "--group-size", "32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["group_size"] == 32 and math.isfinite(out["tokens_per_kJ"])
    assert main([*run, "--group-size", "100"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--group-size: found 100, allowed: 8, 16, 32, 64, 128, 256" in line


def _run_help() -> str:
    parser = _command_parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    return run.format_help()


def test_registering_is_undone_on_exit(tmp_path):
    with KNOBS.added(DUMMY), METRICS.added(TOKENS_PER_KJ):
        assert "dummy_part" in sweep_file().model_fields["format"].annotation.model_fields
        with pytest.raises(ValueError, match="registered already"):
            KNOBS.register(DUMMY)
    assert "dummy_part" not in KNOBS and "tokens_per_kJ" not in METRICS
    assert "dummy_part" not in sweep_file().model_fields["format"].annotation.model_fields
    assert "dummy_part" not in input_columns(system=True, serving=True)
    assert "tokens_per_kJ" not in add_derived({"energy_per_token_J": 1.0})


@pytest.mark.parametrize("name", ["attn_weight_bits", "mlp_weight_bits", "edge_layer_bits", "head_bits"])
def test_a_bit_override_below_weight_bits_is_refused_as_its_help_says(tmp_path, capsys, name):
    """A width override at fewer bits than weight_bits is refused, and its help (the README's knobs table) says so."""
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--weight-bits", "8",
                 f"--{name.replace('_', '-')}", "4"]) == 2
    assert "more bits than weight_bits" in capsys.readouterr().err
    assert "more than weight_bits" in KNOBS[name].help


def _takes_a_list(annotation) -> bool:
    """Whether a schema field's type accepts a list (explore/schema.py one_or_more)."""
    origin = typing.get_origin(annotation)
    if origin is list:
        return True
    if origin is typing.Annotated:
        return _takes_a_list(typing.get_args(annotation)[0])
    return origin in (typing.Union, types.UnionType) and any(_takes_a_list(a) for a in typing.get_args(annotation))


def test_readme_names_every_serving_key_a_list_sweeps():
    """The Serving section's sentence 'A list sweeps ...; the other keys take one value per sweep' names exactly the
    serving: keys whose schema accepts a list (the rest are refused as lists)."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    (sentence,) = re.findall(r"A list sweeps (.*?); the other keys take one value per sweep", text)
    named = set(re.findall(r"`(\w+)`", sentence)) - {"none"}
    # rate_profile's list is one profile of phases, not values to sweep.
    listed = {name for name, field in Serving.model_fields.items() if _takes_a_list(field.annotation)} - {
        "rate_profile"}
    assert named == listed, f"README leaves out {sorted(listed - named)}, names as lists {sorted(named - listed)}"
