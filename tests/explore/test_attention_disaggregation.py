"""Attention on devices of its own (serving attention_device, sim/attention_pool.py): where a replica's KV blocks
live, what its hardware costs and draws, how a sweep and `explore run` take the settings, and their one-line
errors."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.results import read_results
from kernels.formats import NumericFormat
from kernels.shapes import step_shape
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_sweep, write_tiny_model
from workloads.requests import Fixed

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# Llama-3-70B (Hugging Face meta-llama/Meta-Llama-3-70B): 80 layers of 8 KV heads of 128 dims at 16 bits: K and V take
# 2 x 80 x 8 x 128 x 2 B = 327,680 B a token, 5,242,880 B a block of 16 tokens.
LLAMA_3_70B_KV_BLOCK_B = 2 * 80 * 8 * 128 * 2 * 16
# What a CUDA program can allocate (the driver's total, as PyTorch reports it): an H20 (96 GB, Lamina arXiv:2405.01814v2
# Table 1) has 'a total capacity of 95.00 GiB' (github.com/modelscope/DiffSynth-Studio/issues/1238), an NVIDIA H100
# 80GB HBM3 79.11 GiB (github.com/vllm-project/vllm/issues/27508).
H20_B = 95.00 * 2**30
H100_B = 79.11 * 2**30
H100_USD_PER_HOUR, H20_USD_PER_HOUR = 3.78, 1.58  # the presets' prices (hw_models/presets/h100-sxm.yaml, h20.yaml)
H100_IDLE_W, H20_IDLE_W = 71.8, 71.8  # the presets' idle powers (h20: H100's, a proxy)


def _point(*, tp: int = 2, devices: int = 4, share: float | None = None, prefill: int = 1,
           **serving) -> DesignPoint:
    spec = ServingSpec(requests=16, rate_per_s=100.0, prompt=Fixed(tokens=1024), output=Fixed(tokens=32),
                       prefill_replicas=prefill, attention_device="h20", attention_devices=devices,
                       memory_utilization=share, **serving)
    return DesignPoint(model="llama-3-70b", device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0, serving=spec,
                       execution="engine", tp=tp)


@pytest.mark.parametrize(("devices", "share", "copies"), [(4, None, 1), (4, 0.9, 1), (16, None, 2)])
def test_kv_blocks_fill_the_attention_devices_memory(evaluator, devices, share, copies):
    """A replica's KV blocks are what its attention devices' memory holds, each device its heads' share of every
    block: 4 H20s hold floor(4 x 102.0 GB / 5.24 MB) blocks, 0.9 of that at vLLM's default share; 16 split
    Llama-3-70B's 8 KV heads two devices to a head, so each block is held twice. The weights stay on the model's two
    H100s."""
    memory = evaluator.evaluate(_point(devices=devices, share=share, prefill=0)).result.memory
    block_B = LLAMA_3_70B_KV_BLOCK_B * copies
    assert memory.kv_block_B == block_B
    assert memory.kv_blocks == math.floor(devices * H20_B * (share or 1.0) / block_B)
    assert memory.capacity_B == pytest.approx(2 * H100_B) and memory.kv_capacity_B == devices * H20_B


@pytest.mark.parametrize(("attention", "each_B"), [("h100-sxm", 60 * 2**30), ("h20", H20_B)])
def test_attention_devices_of_the_points_device_take_its_what_ifs(evaluator, attention, each_B):
    """A point's what-ifs change its device wherever it runs, as a prefill pool of the point's own device takes them:
    4 attention H100s under `memory.usable_GiB: 60` hold 4 x 60 GiB of KV blocks, and draw no more than a cap on the
    point's device; 4 H20s (another device) keep their own 95.00 GiB."""
    point = replace(_point(tp=4, prefill=0), overrides=(("memory.usable_GiB", 60.0), ("power.cap_W", 300.0)))
    point = replace(point, serving=replace(point.serving, attention_device=attention))
    assert evaluator.evaluate(point).result.memory.kv_capacity_B == pytest.approx(4 * each_B)
    cap_W = evaluator.attention_pool(point, NumericFormat()).device.spec.power.cap_W
    assert cap_W == (300.0 if attention == "h100-sxm" else None)


def test_the_weights_must_fit_the_model_devices(evaluator):
    """Llama-3-70B's 141 GB of 16-bit weights do not fit one H100's 84.9 GB, however many H20s hold its KV: the point
    is refused for the weights, not for KV blocks."""
    metrics = evaluator.evaluate(_point(tp=1, prefill=0)).metrics
    assert not metrics["fits_in_memory"]
    reason = metrics["infeasible_reason"]
    assert "141.1" in reason and "84.9 GB" in reason and "KV blocks" not in reason


def test_price_and_idle_power_count_every_attention_device(evaluator):
    """The system's hourly price and static power are its pools' devices: a prefill replica of 2 H100s and a decode
    replica of 2 H100s with 4 H20s."""
    point = _point()
    evaluation = evaluator.evaluate(point)
    assert evaluation.metrics["usd_per_hour"] == pytest.approx(4 * H100_USD_PER_HOUR + 4 * H20_USD_PER_HOUR)
    result = evaluation.result
    idle_W = 4 * H100_IDLE_W + 4 * H20_IDLE_W
    assert result.energy_parts_J["static_J"] == pytest.approx(idle_W * result.makespan_s)


def test_micro_batches_energy_is_the_sum_of_their_shares(evaluator):
    """Invariant: a Llama-2-7B iteration of one 512-token prefill chunk and 32 decodes of 4,000 keys each on an H100
    with two H20s attending, in two micro-batches (the chunk and 16 decodes, then 16 decodes), spends what the two
    spend each priced as an iteration of its own; the larger share, taken twice, is only the time's bound (the chunk's
    work is not counted twice)."""
    def cost_model(micro_batches: int):
        spec = ServingSpec(requests=16, rate_per_s=10.0, attention_device="h20", attention_devices=2,
                           attention_micro_batches=micro_batches)
        point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0,
                            serving=spec, execution="graphs")  # every share in the launch mode it has alone
        return evaluator.cost_model(point, NumericFormat(), attention=True)

    one, two = cost_model(1), cost_model(2)
    shape = step_shape(chunks=[(512, 0)], decode_kv=[4000] * 32, sampled=33)
    first = step_shape(chunks=[(512, 0)], decode_kv=[4000] * 16, sampled=17)
    second = step_shape(decode_kv=[4000] * 16, sampled=16)
    assert shape.shares(2) == (first, second)
    cost = two.price(shape)
    assert cost.time_s < one.price(shape).time_s  # two micro-batches taken
    parts = [one.price(first), one.price(second)]
    assert cost.compute_J == pytest.approx(sum(p.compute_J for p in parts), rel=1e-9)
    assert cost.memory_J == pytest.approx(sum(p.memory_J for p in parts), rel=1e-9)
    np.testing.assert_allclose(cost.class_time_s, sum(p.class_time_s for p in parts), rtol=1e-9)


def test_the_calibration_is_the_least_of_the_model_and_attention_devices(evaluator, tmp_path):
    """The results' calibrated column names how the least calibrated device of the system was priced: the H100's own
    fits (fitted) but the H20's borrowed from H100 SXM (its preset's sibling), and a device YAML with no sibling priced
    on its datasheet roofline (none)."""
    text = Path("hw_models/presets/h20.yaml").read_text()
    bare = tmp_path / "bare-h20.yaml"
    bare.write_text(text[:text.index("sibling:")] + text[text.index("host_link:"):])
    point = _point(prefill=0)

    def calibrated(name: str) -> str:
        return evaluator.evaluate(replace(point, serving=replace(point.serving, attention_device=name))
                                  ).metrics["calibrated"]

    assert [calibrated(name) for name in ("h100-sxm", "h20", str(bare))] == ["fitted", "sibling", "none"]


def test_a_point_without_an_attention_device_keeps_its_key():
    """Points that leave the attention settings out keep the keys stored before they existed."""
    spec = ServingSpec(scheduler="chunked", requests=200, rate_per_s=4.0)
    point = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=256, prompt=0, output=0, serving=spec)
    assert point.point_id == "1975a0ffdaf012dc"  # as tests/explore/test_serving_sweep.py holds it
    assert "attention" not in spec.key_text("h100-sxm") and not any(k.startswith("attention") for k in spec.columns())


SERVING = """  requests: 12
  prompt: {dist: fixed, tokens: 32}
  output: {dist: fixed, tokens: 8}
  rate: 200
  prefill_replicas: 1
"""


def test_a_sweep_varies_attention_devices_with_a_column_each(tmp_path, capsys):
    """A sweep over attention devices and micro-batches runs each point, shows the four settings in its columns and
    names the attention devices in the device label."""
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: attend\nmodel: {model}\ndevice: h100-sxm\nexecution: engine\n"
                                 f"serving:\n{SERVING}  attention_device: h20\n  attention_devices: [1, 2]\n"
                                 f"  attention_micro_batches: [1, 2]\n")
    assert main([path, "--out", str(tmp_path / "out")]) == 0
    rows = read_results(tmp_path / "out")
    assert len(rows) == 4 and all(row["fits_in_memory"] for row in rows)
    assert {(row["attention_devices"], row["attention_micro_batches"]) for row in rows} == {
        (1, 1), (1, 2), (2, 1), (2, 2)}
    assert {row["attention_device"] for row in rows} == {"h20"} and {row["attention_link"] for row in rows} == {
        "roce-400g"}
    assert "h100-sxm + h20 x2" in (tmp_path / "out" / "report.md").read_text()


def test_a_sweep_compares_attention_devices_with_none(tmp_path, capsys):
    """attention_device: [none, h20] compares the model's devices attending with H20s attending: a none row is the
    design without the setting (its key is the one a sweep without the attention settings gives it, and its
    attention settings are empty), and the sweep notes that attention_devices changes nothing there."""
    model = write_tiny_model(tmp_path)
    head = f"name: attend\nmodel: {model}\ndevice: h100-sxm\nexecution: engine\nserving:\n{SERVING}"
    plain = write_sweep(tmp_path, head)
    assert main([plain, "--out", str(tmp_path / "plain")]) == 0
    (baseline,) = read_results(tmp_path / "plain")
    path = write_sweep(tmp_path, head + "  attention_device: [none, h20]\n  attention_devices: [1, 2]\n")
    assert main([path, "--out", str(tmp_path / "out")]) == 0
    assert "attention_devices changes nothing where attention_device is none" in capsys.readouterr().err
    rows = read_results(tmp_path / "out")
    none = [row for row in rows if row["attention_device"] == "none"]
    assert {row["point_id"] for row in none} == {baseline["point_id"]}
    assert all(row["attention_devices"] is None and row["tokens_per_s"] == baseline["tokens_per_s"] for row in none)
    assert {row["attention_devices"] for row in rows if row["attention_device"] == "h20"} == {1, 2}


@pytest.mark.parametrize(("extra", "key", "found"), [
    ("  attention_devices: 2\n", "serving.attention_devices", "found 2 with no attention_device"),
    ("  attention_device: none\n  attention_devices: 2\n", "serving.attention_devices",
     "found 2 with no attention_device"),
    ("  attention_micro_batches: 3\n", "serving.attention_micro_batches", "found 3 with no attention_device"),
    ("  attention_link: roce-400g\n", "serving.attention_link", "found 'roce-400g' with no attention_device"),
    ("  attention_device: h2\n", "serving.attention_device", "found 'h2'"),
    ("  attention_device: h20\n  attention_devices: 3\n", "attention_devices", "found 3, allowed: a divisor"),
])
def test_a_sweep_s_attention_mistakes_get_one_line(tmp_path, capsys, extra, key, found):
    """`explore check` refuses each before a point runs, in one line naming the key and what it found."""
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: attend\nmodel: {model}\ndevice: h100-sxm\nserving:\n{SERVING}{extra}")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and key in err and found in err, err


@pytest.mark.parametrize(("flags", "found"), [
    (["--attention-devices", "2"], "--attention-devices: found 2 with no --attention-device"),
    (["--attention-device", "none", "--attention-devices", "2"],
     "--attention-devices: found 2 with no --attention-device"),
    (["--attention-micro-batches", "1"], "--attention-micro-batches: found 1 with no --attention-device"),
    # Given at the spec's default, it still changes nothing without an attention device.
    (["--attention-link", "roce-400g"], "--attention-link: found 'roce-400g' with no --attention-device"),
    (["--attention-devices", "1"], "--attention-devices: found 1 with no --attention-device"),
    (["--attention-device", "h20", "--pp", "2"], "--attention-device: found 'h20' on 2 pipeline stages"),
    (["--attention-device", "h20", "--preemption", "swap"], "--attention-device: found 'h20' with --preemption 'swap'"),
    (["--attention-device", "h20", "--attention-link", "roce-4"], "--attention-link: found 'roce-4'"),
    # What-ifs on the attention devices alone (attention_device.<field>).
    (["--set", "attention_device.memory.bandwidth_GBps=8000"],
     "--set attention_device.memory.bandwidth_GBps: found without the attention devices, allowed: with --serving and "
     "--attention-device"),
    (["--attention-device", "h20", "--set", "attention_device.memory.bandwith_GBps=8000"],
     "--set: attention_device.memory.bandwith_GBps: no such field to override"),
    (["--attention-device", "h20", "--set", "attention_device.memory.bandwidth_GBps=-1"],
     "--set: attention_device.memory.bandwidth_GBps: found -1"),
    (["--attention-device", "h20", "--set", "attention_device.power.cap_W=100", "--set",
      "attention_device.power.idle_W=150"],
     "the values attention_device.power.cap_W=100, attention_device.power.idle_W=150 together on h20"),
])
def test_explore_run_s_attention_mistakes_get_one_line(tmp_path, capsys, flags, found):
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "10", "--requests", "4",
                 "--prompt", "32", "--output", "4", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and found in err, err


def test_a_chrome_trace_names_the_system_with_its_attention_devices(tmp_path):
    """The trace's process is the whole replica: the model's device and the attention devices beside it."""
    import json

    model = write_tiny_model(tmp_path)
    trace = tmp_path / "trace.json"
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "10", "--requests", "4",
                 "--prompt", "32", "--output", "4", "--attention-device", "h20", "--attention-devices", "2",
                 "--chrome-trace", str(trace)]) == 0
    events = json.loads(trace.read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    names = [e["args"]["name"] for e in events if e.get("name") == "process_name"]
    assert names == ["h100-sxm + h20 x2"]


# ---- what-ifs on the attention devices (attention_device.<field>) ------------------------------------------------


@pytest.mark.parametrize(("attention", "device_what_ifs", "each_B"), [
    ("h20", (), 50 * 2**30),
    # The attention devices are the point's own kind: its what-ifs reach them, and their own win.
    ("h100-sxm", (("memory.usable_GiB", 60.0),), 50 * 2**30),
])
def test_attention_what_ifs_change_the_attention_devices_alone(evaluator, attention, device_what_ifs, each_B):
    """`attention_device.memory.usable_GiB: 50` leaves 4 attention devices 4 x 50 GiB of KV blocks, and a power cap
    caps them, while the model's four H100s keep their own memory (4 x 79.11 GiB, or 60 GiB each under the point's
    own what-if) and no cap."""
    point = replace(_point(tp=4, prefill=0), overrides=device_what_ifs,
                    attention_overrides=(("memory.usable_GiB", 50.0), ("power.cap_W", 300.0)))
    point = replace(point, serving=replace(point.serving, attention_device=attention))
    memory = evaluator.evaluate(point).result.memory
    assert memory.kv_capacity_B == pytest.approx(4 * each_B)
    assert memory.capacity_B == pytest.approx(4 * (60 * 2**30 if device_what_ifs else H100_B))
    assert evaluator.attention_pool(point, NumericFormat()).device.spec.power.cap_W == 300.0
    assert evaluator.point_device(point).spec.power.cap_W is None


def test_more_attention_device_bandwidth_is_never_slower(evaluator):
    """Decode iterations of 64 sequences at 8K tokens of KV on four H20s: their attention reads 64 x 8K x 320 KiB =
    168 GB of KV a step, over a quarter of the heads each, so doubling the H20s' memory bandwidth (4.0 to 8.0 TB/s)
    shortens the iteration, and halving it lengthens it; the model side is the same H100s throughout."""
    shape = step_shape([], [8192] * 64, sampled=64)
    times = []
    for bandwidth in (2000.0, 4000.0, 8000.0):
        point = replace(_point(prefill=0), attention_overrides=(("memory.bandwidth_GBps", bandwidth),))
        times.append(evaluator.cost_model(point, NumericFormat(), attention=True).price(shape).time_s)
    assert times[0] > times[1] > times[2]


def test_an_attention_what_if_is_a_point_of_its_own():
    """A point's key, results row and `explore run --json` name its attention what-ifs; without them it keeps its
    key."""
    point = _point()
    what_if = replace(point, attention_overrides=(("memory.bandwidth_GBps", 8000.0),))
    assert what_if.point_id != point.point_id
    assert what_if.row()["attention_device.memory.bandwidth_GBps"] == 8000.0
    assert not any(column.startswith("attention_device.") for column in point.row())


def test_explore_run_names_its_attention_what_ifs(tmp_path, capsys):
    """The header says what was set, and --json carries it as the results table's column."""
    import json

    model = write_tiny_model(tmp_path)
    flags = ["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "10", "--requests", "4",
             "--prompt", "32", "--output", "4", "--attention-device", "h20", "--set",
             "attention_device.memory.bandwidth_GBps=8000"]
    assert main(flags) == 0
    assert "what-if (--set): attention_device.memory.bandwidth_GBps = 8000" in capsys.readouterr().out
    assert main([*flags, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["attention_device.memory.bandwidth_GBps"] == 8000


@pytest.mark.parametrize(("attention", "fits"), [("h20", "(fits of sibling h100-sxm)"),
                                                 ("neupims", "(uncalibrated datasheet roofline)"),
                                                 ("h100-sxm", "(fitted)")])
def test_explore_run_names_how_the_attention_devices_are_priced(tmp_path, capsys, attention, fits):
    """The header names the attention devices' calibration, an uncalibrated one (an HBM-PIM preset) included."""
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "10", "--requests", "4",
                 "--prompt", "32", "--output", "4", "--attention-device", attention]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert f"attention on 1 x {attention} {fits} per replica" in header
