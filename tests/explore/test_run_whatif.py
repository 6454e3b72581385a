"""`explore run` as a what-if tool: --set overrides (the sweep's rules and numbers), a point that does not fit
(one line first, exit 1, hints that really fit), decode throughput, Chrome trace events that say what each
kernel is, the device presets table, and a rerun of a finished sweep that keeps an up-to-date report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explore.cli import main
from explore.metrics import metric_names
from explore.sweep import load_sweep
from tests.explore.tiny_sweep import write_sweep, write_tiny_model
from workloads.errors import InputError

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# A Llama-shaped model of four wide layers (13.9e9 parameters, 27.9 GB in bf16): more than an L4's 24 GB,
# less than an H100's 80, traced in seconds. Decode at batch 1 streams its weights: bandwidth-bound.
WIDE = {"model_type": "llama", "hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 4,
        "num_attention_heads": 128, "num_key_value_heads": 16, "vocab_size": 32000,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16", "hidden_act": "silu"}
WIDE_PARAMS = 4 * (2 * 16384**2 + 2 * 16384 * 2048 + 3 * 16384 * 53248) + 2 * 32000 * 16384


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("wide") / "config.json"
    path.write_text(json.dumps(WIDE))
    return str(path)


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    code, out, _ = _run(capsys, [*argv, "--json"])
    return code, json.loads(out)


# ---- --set -----------------------------------------------------------------------------------------------------

def test_set_gives_the_sweep_overrides_numbers(wide, tmp_path, capsys, evaluator):
    run = ["run", "--model", wide, "--device", "h100-sxm", "--prompt", "64", "--output", "4", "--execution", "engine"]
    code, shipped = _run_json(capsys, run)
    assert code == 0
    code, doubled = _run_json(capsys, [*run, "--set", "memory.bandwidth_GBps=6700"])
    assert code == 0 and doubled["device.memory.bandwidth_GBps"] == 6700
    # The sweep spelling of the key gives the same point.
    assert _run_json(capsys, [*run, "--set", "device.memory.bandwidth_GBps=6700"])[1] == doubled
    sweep = load_sweep(write_sweep(tmp_path, f"name: s\nmodel: {wide}\ndevice: h100-sxm\nexecution: engine\n"
                                             "workload: {batch: 1, prompt: 64, output: 4}\n"
                                             "overrides: {device.memory.bandwidth_GBps: 6700}\n"))
    (point,) = sweep.points()
    expected = evaluator.evaluate(point).metrics
    for name in metric_names("point"):
        if isinstance(expected[name], float) and expected[name] == expected[name]:  # NaN is null in JSON
            assert doubled[name] == pytest.approx(expected[name], rel=1e-12), name
    # Batch-1 decode of 27.9 GB of weights is bandwidth-bound: twice the bandwidth, clearly faster steps.
    assert doubled["tpot_s"] < 0.8 * shipped["tpot_s"]
    code, text, _ = _run(capsys, [*run, "--set", "memory.bandwidth_GBps=6700"])
    assert "what-if (--set): memory.bandwidth_GBps = 6700 (h100-sxm: 3350)" in text.splitlines()[0]


def test_set_of_a_field_the_preset_leaves_to_its_default_names_the_default(wide, capsys):
    # h100-sxm's file sets no framework_dispatch_us: the point was priced from the default, gpt-fast's eager
    # Llama-2-7B on an A100 (25.5 tokens/s over 1,818 kernels a token: 21.57 us), and the header says so.
    run = ["run", "--model", wide, "--device", "h100-sxm", "--prompt", "64", "--output", "4"]
    code, text, _ = _run(capsys, [*run, "--set", "overhead.framework_dispatch_us=5"])
    assert code == 0
    default_us = 1e6 / 25.5 / 1818
    assert f"overhead.framework_dispatch_us = 5 (h100-sxm: {default_us:g})" in text.splitlines()[0]


@pytest.mark.parametrize("item,needles", [
    ("memory.bandwidth_GBps", ["--set: found 'memory.bandwidth_GBps'", "allowed: KEY=VALUE"]),
    ("memory.bandwidth_GBps=fast", ["--set memory.bandwidth_GBps: found 'fast'", "allowed: a number"]),
    ("memory.bandwidth_GBps=-1", ["memory.bandwidth_GBps: found -1", "allowed: "]),
    ("memory.bandwith_GBps=4000", ["memory.bandwith_GBps: no such field", "did you mean 'bandwidth_GBps'",
                                    "allowed: ", "memory.bandwidth_GBps"]),
    ("memory.l2_cache_MB=100", ["memory.l2_cache_MB: not a what-if knob", "allowed: "]),
    ("link.bandwidth_GBps=100", ["--set link.bandwidth_GBps: found on one device", "allowed: with --tp"]),
])
def test_bad_set_is_one_line_exit_2(capsys, item, needles):
    code, out, err = _run(capsys, ["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--set", item])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("device,item,what", [
    ("neupims", "pim.sub_batch_interleaving=0", "a yes/no field (true on the device)"),
    ("neupims", "pim.row_buffers=1", "a name ('dual' on the device)"),
    ("ampere-altra-sail", "lut.engine=2", "a name ('pim' on the device)"),
    ("neupims", "pim=3", "a section"),
    # Text given such a field: refused as a number given it is, not as 'allowed: a number', which says nothing of it.
    ("neupims", "pim.row_buffers=single", "a name ('dual' on the device)"),
    ("neupims", "device.pim.row_buffers=single", "a name ('dual' on the device)"),
    ("neupims", "pim.sub_batch_interleaving=false", "a yes/no field (true on the device)"),
    ("ampere-altra-sail", "lut.engine=simd", "a name ('pim' on the device)"),
])
def test_set_of_a_field_that_holds_no_number_says_what_it_is(capsys, device, item, what):
    """A what-if sets numbers: a yes/no or name field given one, or given text, is refused as such, with the device
    file that changes it, not with its type's 'allowed: true or false' (which the number check before it refuses in
    turn) or the number check's 'allowed: a number'."""
    code, out, err = _run(capsys, ["run", "--model", "llama-2-7b", "--device", device, "--set", item])
    key, _, text = item.partition("=")
    path = key.removeprefix("device.")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    said = f"not a what-if knob: {what}, and a what-if sets a number"
    assert (f"--set {key}: found {text!r}; {said}" if text.isalpha() else f"device.{path}: {said}") in err, err
    assert "allowed: true or false" not in err and "allowed: 'single' or 'dual'" not in err
    assert "allowed: a number" not in err
    assert (f"device.{path}.<field>" if what == "a section" else f"`base: {device}`") in err


@pytest.mark.parametrize("device,override,value,what", [
    ("neupims", "pim.row_buffers", "single", "a name ('dual' on the device)"),
    ("neupims", "pim.row_buffers", "[single, dual]", "a name ('dual' on the device)"),
    ("ampere-altra-sail", "lut.engine", "simd", "a name ('pim' on the device)"),
    ("neupims", "pim.sub_batch_interleaving", "false", "a yes/no field (true on the device)"),
])
def test_a_sweep_s_what_if_on_a_field_that_holds_no_number_says_what_it_is(tmp_path, device, override, value, what):
    """A sweep's overrides: given text (or a yes/no) on a device's name or yes/no field are refused as --set refuses
    them, naming the device file that changes it, not with the number check's 'allowed: a number' (said before the
    device was read)."""
    path = write_sweep(tmp_path, f"name: w\nmodel: llama-2-7b\ndevice: {device}\nworkload: {{batch: 1, prompt: 64, "
                                 f"output: 8}}\noverrides: {{device.{override}: {value}}}\n")
    with pytest.raises(InputError) as err:
        load_sweep(path)
    message = str(err.value)
    first = {"[single, dual]": "'single'", "false": "False"}.get(value, repr(value))
    assert message.startswith(f"{path}:5: overrides.device.{override}: found {first}; not a what-if knob: {what}, and "
                              f"a what-if sets a number; change it in a device file (`base: {device}` and the field)")
    assert "allowed: a number" not in message and len(message.splitlines()) == 1


def test_link_set_with_tp(capsys, tmp_path):
    tiny = write_tiny_model(tmp_path)
    run = ["run", "--model", tiny, "--device", "h100-sxm", "--tp", "2", "--prompt", "16", "--output", "2"]
    code, slow = _run_json(capsys, [*run, "--set", "link.bandwidth_GBps=10"])
    assert code == 0 and slow["link.bandwidth_GBps"] == 10
    code, fast = _run_json(capsys, run)
    assert slow["time_communication_s"] > fast["time_communication_s"]


# ---- a point that does not fit -----------------------------------------------------------------------------------

def test_infeasible_run_says_so_first_exits_1_and_its_hints_fit(wide, capsys):
    run = ["run", "--model", wide, "--device", "l4", "--prompt", "64", "--output", "4"]
    code, text, _ = _run(capsys, run)
    assert code == 1
    lines = text.splitlines()
    # The L4's 22.03 GiB a CUDA program may use (PyTorch's 'total capacity', github.com/ArcInstitute/evo2/issues/190).
    assert lines[0].startswith("infeasible: needs 27.9 GB") and "23.7 GB" in lines[0]
    assert not any(line.split()[-1] == "None" for line in lines if line.strip())  # no rows of empty timings
    code, shown = _run_json(capsys, run)
    assert code == 1 and shown["fits_in_memory"] is False and shown["tpot_s"] is None
    hints = shown["hints"]
    flags = [h["flags"] for h in hints]
    # Fewest bits first: 8-bit weights halve the 27.9 GB (plus a 16-bit scale per 128 weights); the KV cache of
    # 68 tokens is too small for fewer KV bits alone to help. Two L4s hold half each.
    assert flags[0] == "--weight-bits 8" and "--tp 2" in flags
    weights_8bit = WIDE_PARAMS * (1 + 16 / 128 / 8)
    assert hints[0]["peak_memory_B"] == pytest.approx(weights_8bit, rel=0.01)
    assert any(f.startswith("--device ") for f in flags)
    for hint in hints:  # every suggestion, run as written, fits
        code, metrics = _run_json(capsys, [*run, *hint["flags"].split()])
        assert code == 0 and metrics["fits_in_memory"] is True, hint
        assert metrics["peak_memory_B"] == pytest.approx(hint["peak_memory_B"])
        assert hint["peak_memory_B"] <= hint["capacity_B"]


# ---- decode throughput -----------------------------------------------------------------------------------------

def test_decode_tokens_per_s_from_the_printed_latencies(capsys, tmp_path):
    tiny = write_tiny_model(tmp_path)
    batch, output = 4, 8
    code, m = _run_json(capsys, ["run", "--model", tiny, "--device", "h100-sxm", "--batch", str(batch),
                                 "--prompt", "16", "--output", str(output)])
    assert code == 0
    # One static batch on a GPU: every request gets its first token at ttft and its last at e2e.
    assert m["decode_tokens_per_s"] == pytest.approx(batch * (output - 1) / (m["e2e_s"] - m["ttft_s"]))
    assert m["decode_tokens_per_s"] == pytest.approx(batch / m["tpot_s"])
    assert m["tokens_per_s"] == pytest.approx(batch * output / m["e2e_s"])  # end to end, prefill included
    one = ["run", "--model", tiny, "--device", "h100-sxm", "--prompt", "16", "--output", "1"]
    code, text, _ = _run(capsys, one)
    assert code == 0 and "decode_tokens_per_s" in text  # printed; NaN with nothing to decode
    code, m = _run_json(capsys, one)
    assert m["decode_tokens_per_s"] is None


def test_decode_span_by_hand():
    from sim.serving_metrics import decode_span_s

    assert decode_span_s([0, 2, 8], [10, 5, 12]) == 12  # [0, 10] holds [2, 5]; [8, 12] adds 2
    assert decode_span_s([3, 0], [4, 1]) == 2 and decode_span_s([], []) == 0
    assert decode_span_s([1, 1], [1, 1]) == 0  # one-token requests decode nothing


def _union_s(intervals: list[tuple[float, float]]) -> float:
    """Length of a union of intervals, merged one by one (another way than decode_span_s's)."""
    total, end = 0.0, -float("inf")
    for lo, hi in sorted(intervals):
        if hi > end:
            total += hi - max(lo, end)
            end = hi
    return total


@pytest.mark.parametrize("scheduler", ["continuous", "chunked"])
def test_serving_decode_tokens_per_s_is_decode_tokens_over_decode_time(tmp_path, evaluator, scheduler):
    from explore.design_point import DesignPoint
    from sim.serving_spec import ServingSpec
    from workloads.requests import Fixed

    spec = ServingSpec(scheduler=scheduler, requests=40, rate_per_s=2000.0, prompt=Fixed(tokens=32),
                       output=Fixed(tokens=6), max_seqs=8)
    point = DesignPoint(model=write_tiny_model(tmp_path), device="h100-sxm", batch=8, prompt=0, output=0,
                        serving=spec)
    evaluation = evaluator.evaluate(point)
    records = evaluation.result.records
    spans = list(zip(records.first_token_s.tolist(), records.finish_s.tolist(), strict=True))
    decode_s = _union_s(spans)
    assert 0 < decode_s <= evaluation.result.makespan_s
    assert evaluation.metrics["decode_tokens_per_s"] == pytest.approx(40 * (6 - 1) / decode_s)


# ---- Chrome trace ----------------------------------------------------------------------------------------------

def test_chrome_trace_events_carry_class_flops_bytes_bound(capsys, tmp_path):
    tiny = write_tiny_model(tmp_path)
    path = tmp_path / "trace.json"
    code, _, _ = _run(capsys, ["run", "--model", tiny, "--device", "h100-sxm", "--batch", "2", "--prompt", "16",
                               "--output", "3", "--chrome-trace", str(path)])
    assert code == 0
    events = [e for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "X"]
    assert events and all({"class", "flops", "bytes", "bound"} <= set(e["args"]) for e in events)
    # A decode step's lm_head: 2 sequences x hidden 64 x vocab 128, 2 FLOPs per multiply-add.
    lm_head = [e for e in events if e["name"] == "gemm lm_head" and e["args"]["step"] >= 0]
    assert lm_head and all(e["args"]["flops"] == 2 * 2 * 64 * 128 for e in lm_head)
    assert lm_head[0]["args"]["class"] == "gemm" and lm_head[0]["args"]["bound"] in ("compute", "memory", "overhead")


# ---- presets -----------------------------------------------------------------------------------------------------

def test_presets_devices_is_a_table_of_preset_numbers(capsys):
    code, text, _ = _run(capsys, ["presets", "devices"])
    assert code == 0
    lines = text.splitlines()
    assert lines[1].split()[:4] == ["name", "kind", "memory", "GB"]
    h100 = next(line.split() for line in lines if line.split()[0] == "h100-sxm")
    # NVIDIA's H100 SXM datasheet: 3.35 TB/s, 989.4 dense BF16 TFLOP/s; of its 80 GB of HBM3 a CUDA program gets
    # 79.11 GiB = 84.94 GB (PyTorch's 'total capacity', github.com/vllm-project/vllm/issues/27508); calibrated on
    # Vidur's kernels.
    assert h100[1:7] == ["gpu", "84.94", "3,350", "989.4", "fitted", "$3.78/h"]
    neupims = next(line.split() for line in lines if line.split()[0] == "neupims")
    assert neupims[1] == "npu" and neupims[5] == "none"


# ---- rerunning a finished sweep -------------------------------------------------------------------------------

def test_rerun_of_a_finished_sweep_keeps_an_up_to_date_report(tmp_path, capsys, monkeypatch):
    import explore.report

    drawn = []

    def fake_report(out, rows, **kwargs):  # the report itself is tested elsewhere: count the drawings
        drawn.append(len(rows))
        for name in ("report.html", "report.md"):
            (Path(out) / name).write_text(str(len(rows)))
        return Path(out) / "report.html", Path(out) / "report.md"

    monkeypatch.setattr(explore.report, "write_report", fake_report)
    tiny = write_tiny_model(tmp_path)
    text = (f"name: rerun\nmodel: {tiny}\ndevice: h100-sxm\nworkload: {{batch: [1, 2], prompt: 16, output: 2}}\n"
            "objectives: {minimize: [tpot_s]}\n")
    sweep, out = write_sweep(tmp_path, text), str(tmp_path / "out")
    argv = [sweep, "--out", out, "--quiet"]

    def run(*extra: str) -> str:
        code, _, err = _run(capsys, [*argv, *extra])
        assert code == 0
        return err

    assert "already stored" not in run() and drawn == [2]
    err = run()
    assert f"all 2 design points already stored in {out}/" in err and "the report is up to date" in err
    assert drawn == [2]
    assert "re-drawing the report" in run("--force-report") and drawn == [2, 2]
    assert "up to date" in run() and drawn == [2, 2]  # twice in a row: still up to date
    Path(sweep).write_text(text.replace("tpot_s", "ttft_s"))  # other objectives: another report
    assert "re-drawing the report" in run() and drawn == [2, 2, 2]
    (Path(out) / "report.md").unlink()  # a report file gone: drawn again
    assert "re-drawing the report" in run() and drawn == [2, 2, 2, 2]
    # Another version of the code that draws reports (new figures): the same results drawn again.
    import explore.rerun

    monkeypatch.setattr(explore.rerun, "report_digest", lambda: "another version")
    assert "re-drawing the report" in run() and drawn == [2, 2, 2, 2, 2]
    assert "up to date" in run() and drawn == [2, 2, 2, 2, 2]
    Path(sweep).write_text(text.replace("[1, 2]", "[1, 2, 4]"))  # a new point: evaluated, then drawn
    err = run()
    assert f"resuming: 2 of 3 design points already stored in {out}/, 1 to run" in err and drawn == [2, 2, 2, 2, 2, 3]


@pytest.mark.parametrize(("lines", "noted"), [
    ("device: [h100-sxm, neupims]\n", True),  # a GPU left on the default: said, and named
    ("device: [h100-sxm, neupims]\nexecution: eager\n", False),  # eager chosen: nothing to say
    ("device: [h100-sxm]\nexecution: engine\n", False),
    ("device: [neupims]\n", False),  # no GPU: no PyTorch eager dispatch to speak of
])
def test_check_says_when_gpus_run_eager_by_default(tmp_path, capsys, lines, noted):
    tiny = write_tiny_model(tmp_path)
    sweep = write_sweep(tmp_path, f"name: dflt\nmodel: {tiny}\n{lines}workload: {{batch: 1, prompt: 16, output: 2}}\n")
    assert main(["check", sweep]) == 0
    out = capsys.readouterr().out
    assert ("execution not set: the GPUs (h100-sxm) run as PyTorch eager" in out) == noted


def test_a_16_bit_peak_no_model_runs_at_is_named(capsys):
    """Llama-2-7B's config is fp16, Llama-3-8B's bf16: a what-if on the bf16 peak changes the first's math not at all,
    and check and run say so; on the peak a model of the point runs at, nothing is said."""
    from explore.sweep_notes import idle_peak_note

    note = idle_peak_note({"device.compute.peak_TFLOPS.bf16": [300]}, ["llama-2-7b"])
    assert note.startswith("device.compute.peak_TFLOPS.bf16 changes no point's math: llama-2-7b runs in fp16")
    assert idle_peak_note({"device.compute.peak_TFLOPS.bf16": [300]}, ["llama-2-7b", "llama-3-8b"]) == ""
    assert idle_peak_note({"device.compute.peak_TFLOPS.fp16": [300], "device.memory.bandwidth_GBps": [1]},
                          ["llama-2-7b"]) == ""
    assert main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--set", "compute.peak_TFLOPS.bf16=300",
                 "--output", "2", "--prompt", "16"]) == 0
    assert "compute.peak_TFLOPS.bf16 changes no point's math" in capsys.readouterr().err


def test_an_sm_count_what_if_at_the_chips_peaks_is_named(tmp_path, capsys):
    """More SMs at the same chip peaks are slower SMs each: a batch-1 decode on an H100 at twice its 132 SMs is no
    faster (the README's 6.88 against 6.48 ms), and run and check say why; scaling the peaks with it says nothing."""
    from explore.sweep_notes import fixed_peak_sm_note

    assert fixed_peak_sm_note({"device.compute.sm_count": [264]}).startswith("compute.sm_count moves no peak")
    assert fixed_peak_sm_note(["device.compute.sm_count", "device.compute.peak_TFLOPS.fp16"]) == ""
    assert fixed_peak_sm_note({"device.memory.bandwidth_GBps": [1]}) == ""
    tpot = {}
    for sms in (132, 264):
        assert main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--set", f"compute.sm_count={sms}",
                     "--output", "2", "--prompt", "16", "--execution", "engine", "--json"]) == 0
        out, err = capsys.readouterr()
        tpot[sms] = json.loads(out)["tpot_s"]
        assert "compute.sm_count moves no peak" in err
    assert tpot[264] >= tpot[132]
    sweep = write_sweep(tmp_path, "name: sms\nmodel: llama-2-7b\ndevice: h100-sxm\nexecution: engine\n"
                                  "workload: {batch: 1, prompt: 16, output: 2}\n"
                                  "overrides: {device.compute.sm_count: [132, 264]}\n"
                                  "derived: {device.compute.peak_TFLOPS.fp16: "
                                  "'989.4 * device.compute.sm_count / 132'}\n")
    assert main(["check", sweep]) == 0
    assert "compute.sm_count moves no peak" not in capsys.readouterr().out
    alone = write_sweep(tmp_path, "name: sms\nmodel: llama-2-7b\ndevice: h100-sxm\nexecution: engine\n"
                                  "workload: {batch: 1, prompt: 16, output: 2}\n"
                                  "overrides: {device.compute.sm_count: [132, 264]}\n")
    assert main(["check", alone]) == 0
    assert "note: compute.sm_count moves no peak" in capsys.readouterr().out


def test_a_power_limit_is_named_in_the_header_from_set_or_a_device_file(tmp_path, capsys):
    """explore run's header says a GPU runs under a power limit, whether --set gave it or a device file on a base:
    preset, so a capped device is never taken for the preset as shipped."""
    model = write_tiny_model(tmp_path)
    device = tmp_path / "h100-capped.yaml"
    device.write_text("base: h100-sxm\nname: h100-capped\ndescription: an H100 at 350 W\npower:\n  cap_W: 350\n")
    for extra in (["--device", "h100-sxm", "--set", "power.cap_W=350"], ["--device", str(device)]):
        code, text, _ = _run(capsys, ["run", "--model", model, "--prompt", "16", "--output", "2", *extra])
        assert code == 0 and "power limit 350 W a device" in text.splitlines()[0], text.splitlines()[0]
    code, text, _ = _run(capsys, ["run", "--model", model, "--device", "h100-sxm", "--prompt", "16", "--output", "2"])
    assert "power limit" not in text.splitlines()[0]
