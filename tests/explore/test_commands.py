"""What explore/commands.py tells a user: `explore run` refuses a serving flag given without --serving (a static
batch would ignore it and print static metrics as if it had been applied: a new user's `--rate 6 --router least_tokens`
without --serving), and counts say '1 design point'."""

from __future__ import annotations

import pytest

from explore.cli import main
from explore.sweep import load_sweep
from tests.explore.tiny_sweep import write_sweep

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")


@pytest.mark.parametrize("flags, needle", [
    (["--rate", "6"], "--rate: found 6 without --serving"),
    (["--router", "least_tokens"], "--router: found 'least_tokens' without --serving"),
    (["--capacity", "1", "8"], "--capacity: found 1 8 without --serving"),
    (["--replicas", "2"], "--replicas: found 2 without --serving"),
    (["--scheduler", "chunked"], "--scheduler: found 'chunked' without --serving"),
    (["--trace", "splitwise-conv"], "--trace: found 'splitwise-conv' without --serving"),
    (["--slo-tpot", "0.1"], "--slo-tpot: found 0.1 without --serving"),
    (["--swap-GBps", "10"], "--swap-GBps: found 10 without --serving"),
])
def test_a_serving_flag_without_serving_is_one_line_exit_2(flags, needle, capsys):
    code = main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert "allowed: with --serving" in err[0] and "Traceback" not in err[0]


def test_serving_flags_at_their_defaults_are_no_mistake(tiny_config, capsys):
    """A flag equal to its default changes nothing, so it is not refused: the static point runs."""
    code = main(["run", "--model", tiny_config, "--device", "h100-sxm", "--prompt", "16", "--output", "4",
                 "--scheduler", "continuous", "--replicas", "1", "--json"])
    out = capsys.readouterr().out
    assert code == 0 and '"tpot_s"' in out


def test_check_and_run_count_one_design_point_in_the_singular(tmp_path, tiny_config, capsys):
    sweep = tmp_path / "one.yaml"
    sweep.write_text(f"name: one\nmodel: {tiny_config}\ndevice: h100-sxm\n"
                     f"workload: {{batch: 1, prompt: 16, output: 4}}\n")
    assert main(["check", str(sweep)]) == 0
    assert "\n1 design point (all evaluated)," in capsys.readouterr().out
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "1 design point (1 feasible)" in captured.out and "design points" not in captured.out + captured.err


def test_the_run_header_names_the_router_asked_for(tiny_config, capsys):
    flags = ["run", "--model", tiny_config, "--device", "h100-sxm", "--serving", "--rate", "50", "--requests", "6",
             "--prompt", "16", "--output", "4", "--replicas", "2"]
    assert main([*flags, "--router", "least_tokens"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("on 2 replicas, router least_tokens")
    assert main(flags) == 0  # no --router: the header as before
    assert capsys.readouterr().out.splitlines()[0].endswith("on 2 replicas")


def test_the_run_header_names_a_device_file_by_its_name(tmp_path, tiny_config, capsys):
    """A device file given by path is named in the header as its `name:` says, as a preset is by its name: on one
    device, on tensor-parallel devices and as the prefill pool's device."""
    import yaml

    from hw_models.registry import read_device_yaml

    device = tmp_path / "gpus" / "fast.yaml"
    device.parent.mkdir()
    device.write_text(yaml.safe_dump({**read_device_yaml("h100-sxm")[0], "name": "my-h100"}))
    flags = ["run", "--model", tiny_config, "--prompt", "16", "--output", "4"]
    headers = []
    for more in (["--device", str(device)], ["--device", str(device), "--tp", "2", "--link", "nvlink4"],
                 ["--device", "h100-sxm", "--serving", "--rate", "50", "--requests", "6", "--prefill-replicas", "1",
                  "--prefill-device", str(device)]):
        assert main([*flags, *more]) == 0
        headers.append(capsys.readouterr().out.splitlines()[0])
    assert headers[0].startswith("# tiny on my-h100: "), headers[0]
    assert headers[1].startswith("# tiny on my-h100: 2 x my-h100, 2-way tensor parallel"), headers[1]
    assert "1 prefill replica (my-h100) handing KV" in headers[2], headers[2]
    assert not any(str(device) in header for header in headers), headers


def test_the_run_header_counts_the_measured_kernels_with_thousands_separators(tiny_config, capsys):
    """The count of measured kernels an H100's fits were made on is written as every count the project prints (it read
    'calibrated on 28971 measured kernels'): the shipped calibration's rows_used, grouped by thousands."""
    from hw_models.registry import load_device

    rows = load_device("h100-sxm").calibration.provenance["rows_used"]
    assert rows >= 1000  # else the test shows no separator
    assert main(["run", "--model", tiny_config, "--device", "h100-sxm", "--prompt", "16", "--output", "4"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert f"on h100-sxm: calibrated on {rows // 1000},{rows % 1000:03d} measured kernels (" in header, header


def test_the_run_header_lists_the_borrowed_moe_fits_of_the_kernels_points_run(tiny_config, capsys):
    """H100 SXM borrows H200's fused-MoE fits, among them OpenAI's Triton kernel's, which a point's MXFP4 experts run
    on Hopper (vLLM's choice: hw_models/gpu_moe.py engine_moe_kernel), and Marlin's, which they run when the point
    names it: the header, naming the fits that price the device's kernels, lists both (it left the Triton fit out
    while no point ran that kernel)."""
    assert main(["run", "--model", tiny_config, "--device", "h100-sxm", "--prompt", "16", "--output", "4"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "moe bf16/w4fp4, " in header and "fitted on sibling h200" in header, header
    assert "moe bf16/w4fp4/oaitriton" in header, header


def test_the_run_header_names_a_model_file_by_its_name(tmp_path, tiny_config, capsys):
    """A model given by path is named in the header as a preset is, by its name: a config.json by its folder ('tiny',
    tests/explore/tiny_sweep.py writes tiny/config.json), another JSON file by its stem; never by the path."""
    from pathlib import Path

    named = tmp_path / "configs" / "my-llama.json"
    named.parent.mkdir()
    named.write_text(Path(tiny_config).read_text())
    headers = []
    for model in (tiny_config, str(named)):
        assert main(["run", "--model", model, "--device", "h100-sxm", "--prompt", "16", "--output", "4"]) == 0
        headers.append(capsys.readouterr().out.splitlines()[0])
    assert headers[0].startswith("# tiny on h100-sxm: "), headers[0]
    assert headers[1].startswith("# my-llama on h100-sxm: "), headers[1]


def test_a_rate_beside_a_capacity_search_is_one_line_exit_2(capsys):
    """A capacity search picks the rate itself, so a given --rate would be ignored (a sweep refuses both too)."""
    code = main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--serving", "--rate", "2",
                 "--capacity", "1", "8", "--slo-ttft", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--rate: found 2 with --capacity, allowed: one of them" in err[0], err


def test_a_batch_with_serving_is_one_line_exit_2(capsys):
    """A serving run's batches are its scheduler's (--max-seqs caps them): a given --batch would be ignored. (Serving
    runs without --batch still run: test_the_run_header_names_the_router_asked_for.)"""
    code = main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--serving", "--rate", "2", "--batch", "8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--batch: found 8 with --serving, allowed: left out" in err[0] and "--max-seqs" in err[0], err


@pytest.mark.parametrize("low, high", [("10", "5"), ("5", "5"), ("0", "5")])
def test_a_capacity_that_does_not_rise_is_one_line_exit_2(low, high, capsys):
    code = main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--serving", "--capacity", low, high,
                 "--slo-ttft", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].endswith(f"--capacity: found [{low}, {high}], allowed: [low, high] rates with 0 < low < high "
                           f"(req/s)"), err


@pytest.mark.parametrize("flags, needle", [
    (["--cv", "3"], "--cv: found 3 with --arrival poisson, allowed: with --arrival gamma"),
    (["--swap-GBps", "31.5"], "--swap-GBps: found 31.5 with --preemption recompute, allowed: with --preemption swap"),
    (["--prefill-device", "a100-sxm-80gb"], "--prefill-device: found 'a100-sxm-80gb' with no prefill pool"),
    (["--kv-link", "nvlink4"], "--kv-link: found 'nvlink4' with no prefill pool"),
])
def test_a_serving_flag_another_flag_leaves_idle_is_one_line_exit_2(flags, needle, capsys):
    """Found in a user trial: these ran and printed results the flag had no part in."""
    code = main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--serving", "--rate", "2", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


@pytest.mark.parametrize("flag", ["--prefill-device", "--attention-device", "--kv-link", "--attention-link"])
def test_a_pool_s_file_that_is_missing_or_wrong_is_named_with_its_line(flag, tmp_path, capsys):
    """A device or link file given to a pool's flag: the message names the file (and the line of a wrong field), as
    --device's does, instead of dropping everything before its first colon."""
    missing, wrong = tmp_path / "missing.yaml", tmp_path / "wrong.yaml"
    wrong.write_text("base: h20\nname: h20-wrong\nmemory: {capacity_GB: -5}\n" if flag.endswith("device")
                     else "name: wrong\nbandwidth_GBps: -5\nlatency_us: 1\n")
    pools = ["--prefill-replicas", "1"] if flag in ("--prefill-device", "--kv-link") else ["--attention-device", "h20"]
    for path, needle in ((missing, f"{flag}: {missing}: no such"), (wrong, f"{flag}: {wrong}:")):
        code = main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--serving", "--rate", "2", *pools,
                     flag, str(path)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and needle in err[0], err


@pytest.mark.parametrize("flags", [
    ["--arrival", "gamma", "--cv", "3"],
    ["--preemption", "swap", "--swap-GBps", "31.5"],
    ["--prefill-replicas", "1", "--prefill-device", "a100-sxm-80gb", "--kv-link", "nvlink4"],
    [],
])
def test_serving_flags_that_act_are_no_mistake(flags):
    from explore.cli import _command_parser
    from explore.commands import _idle_serving_flag

    args = _command_parser().parse_args(["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--serving", "--rate",
                                         "2", *flags])
    assert _idle_serving_flag(args) == ""


@pytest.mark.parametrize("flags", [["--kv-bits", "8", "--group-size", "32"],
                                   ["--weight-bits", "4", "--group-size", "32"],
                                   ["--kv-bits", "4", "--scale-type", "spqr3", "--group-size", "8"]])
def test_a_group_size_a_quantized_tensor_reads_runs(flags, capsys):
    """A quantized KV cache keeps a scale per group_size values whatever the weights' (SpQR's groups of 8 too), and
    4-bit weights are scaled per group: the group size is read, so the run prints its metrics."""
    assert main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--prompt", "16", "--output", "2",
                 *flags]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("flags, needle", [
    (["--act-predictor", "deja_vu"], "--act-predictor: found 'deja_vu' with --act-kept at 1 (off)"),
    (["--kv-budget-method", "h2o"], "--kv-budget-method: found 'h2o' with --kv-budget at 0 (off)"),
    (["--topk-method", "double_sparsity"], "--topk-method: found 'double_sparsity' with --topk-fraction at 1 (off)"),
    (["--edge-layers", "2"], "--edge-layers: found 2 with --edge-layer-bits at 0 (off)"),
    # A format part the format does not read: groups beside 16-bit weights and KV cache, the weights' scale fields at
    # 16 bits, an override at weight_bits' own width.
    (["--group-size", "32"], "--group-size: found 32, which changes nothing where no tensor is scaled per group"),
    (["--weight-bits", "4", "--scale-granularity", "channel", "--group-size", "32"],
     "--group-size: found 32, which changes nothing where no tensor is scaled per group"),
    (["--scale-granularity", "channel"], "--scale-granularity: found 'channel', which changes nothing where weights "
                                         "are 16-bit"),
    (["--weight-bits", "4", "--head-bits", "4"], "--head-bits: found 4, which changes nothing at weight_bits' own "
                                                 "width (which 0, the default, gives)"),
    # One device: no link joins it (either of --tp or --pp above 1 turns the link on), and without tensor
    # parallelism nothing all-reduces, pipeline stages or not.
    (["--link", "pcie5-x16"], "--link: found 'pcie5-x16' with --tp and --pp at 1 (off), allowed: with --tp or --pp"),
    (["--allreduce", "custom", "--pp", "2"], "--allreduce: found 'custom' with --tp at 1 (off), allowed: with --tp"),
])
def test_a_flag_its_switch_leaves_off_is_one_line_exit_2(flags, needle, capsys):
    """Deja Vu's predictor only chooses kept activations, H2O only a budget's tokens, Double Sparsity only a top-k,
    edge_layers only the layers edge bits keep and group_size only tensors scaled per group: without the knob that
    turns each on, the run would print the plain point's metrics as if it had been applied (as a speculation flag
    without --spec-draft would)."""
    code = main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert "or left out" in err[0]


def test_check_notes_knobs_their_switch_leaves_off_at_every_point(tmp_path, tiny_config, capsys):
    """A sweep crossing act_predictor with act_kept 1 throughout evaluates each design twice: check says so, and says
    nothing where some point turns the predictor's switch on (a grid may cross them on purpose)."""
    head = f"name: idle\nmodel: {tiny_config}\ndevice: h100-sxm\nworkload: {{batch: 1, prompt: 16, output: 2}}\n"
    idle = write_sweep(tmp_path, head + "format: {act_predictor: [none, deja_vu]}\n")
    assert main(["check", idle]) == 0
    assert "note: act_predictor (act_kept is 1, off, at every point)" in capsys.readouterr().out
    crossed = write_sweep(tmp_path, head + "format: {act_predictor: [none, deja_vu], act_kept: [1.0, 0.5]}\n")
    assert main(["check", crossed]) == 0
    assert "act_predictor (" not in capsys.readouterr().out
    linked = write_sweep(tmp_path, head.replace("output: 2}", "output: 2, host_link: pcie5-x16}"))
    assert main(["check", linked]) == 0
    assert "note: host_link (offload is none and lora_adapters is 0, off, at every point)" in capsys.readouterr().out


def test_check_notes_a_price_goal_on_devices_without_a_price(tmp_path, tiny_config, capsys):
    """The H200 preset publishes no hourly price (explore presets devices: '-'), the H100 SXM $3.78/h: a search
    maximizing tokens_per_usd over both would leave every H200 point out of its front, which check says before it
    runs; an override setting the price silences it."""
    head = (f"name: priced\nmodel: {tiny_config}\ndevice: [h100-sxm, h200]\nworkload: {{batch: 1, prompt: 16, "
            f"output: 2}}\nobjectives: {{maximize: [tokens_per_usd]}}\n")
    assert main(["check", write_sweep(tmp_path, head)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "tokens_per_usd has no value" in line]
    assert len(notes) == 1 and "on h200 (no price.usd_per_hour" in notes[0] and "h100-sxm" not in notes[0]
    priced = head + "overrides: {device.price.usd_per_hour: [3.0, 4.0]}\n"
    assert main(["check", write_sweep(tmp_path, priced)]) == 0
    assert "has no value" not in capsys.readouterr().out


def test_check_notes_a_quality_goal_on_models_no_paper_measured(tmp_path, capsys):
    """explore/data/quality.csv has Llama-2-7B's rows and none of Qwen2.5-7B's: a sweep constraining quality_delta
    over both would find every compressed Qwen point breaking it (NaN) and say so only in the report's table of such
    points; check says it before the run, naming the model; a sweep without a quality goal is told nothing."""
    head = ("name: quality\nmodel: [qwen2.5-7b, llama-2-7b]\ndevice: h100-sxm\nexecution: engine\n"
            "workload: {batch: 1, prompt: 16, output: 2}\nformat: {weight_bits: [16, 4]}\n")
    assert main(["check", write_sweep(tmp_path, head + "constraints: ['quality_delta <= 1.0']\n")]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "quality_delta" in line and "note" in line]
    assert len(notes) == 1 and "no published figure for qwen2.5-7b" in notes[0] and "llama-2-7b" not in notes[0]
    assert main(["check", write_sweep(tmp_path, head + "objectives: {minimize: [quality_delta, tpot_s]}\n")]) == 0
    assert "no published figure for qwen2.5-7b" in capsys.readouterr().out
    assert main(["check", write_sweep(tmp_path, head + "objectives: {minimize: [tpot_s]}\n")]) == 0
    assert "no published figure" not in capsys.readouterr().out


@pytest.mark.parametrize("model, device, said", [
    ("llama-3-8b", "v100-sxm2", True),  # a bf16 config; Volta's tensor cores take fp16 only (V100 datasheet)
    ("llama-2-7b", "v100-sxm2", False),  # an fp16 config
    ("llama-3-8b", "a100-sxm-80gb", False),  # Ampere has bf16 tensor cores
])
def test_run_says_when_a_gpu_has_no_rate_for_the_models_16_bit_type(capsys, model, device, said):
    assert main(["run", "--model", model, "--device", device, "--prompt", "16", "--output", "2"]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("# "))
    assert ("bf16 math runs at the fp16 rate on v100-sxm2: it has no bf16 tensor cores" in header) == said, header


@pytest.mark.parametrize("device, kv_bits, said", [
    ("neupims", 8, "an 8-bit KV cache on neupims takes less memory, but its banks' multipliers take one 16-bit"),
    ("neupims", 4, "a 4-bit KV cache on neupims"),
    ("neupims", 16, None),
    ("h100-sxm", 8, None),  # no banks that compute
    ("ampere-altra-sail", 8, None),  # SRAM arrays that run LUT GEMVs, not attention (it raised AttributeError)
])
def test_run_says_a_narrow_kv_cache_leaves_pim_attention_as_it_was(capsys, device, kv_bits, said):
    """NeuPIMs' bank multipliers take 16-bit elements (its preset's pim.element_bytes 2): a narrower cache moves fewer
    bytes through them, but the MACs they do per step stay, so the banks' attention time does not fall."""
    assert main(["run", "--model", "llama-2-7b", "--device", device, "--kv-bits", str(kv_bits), "--prompt", "64",
                 "--output", "4"]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("# "))
    assert (said in header) if said else ("KV cache on" not in header), header


def test_run_prints_a_number_it_has_no_value_of_as_n_a(capsys):
    """The H200 preset publishes no price: its cost columns are NaN in results and 'n/a' in the report, and in
    explore run's text output too (it printed Python's None)."""
    assert main(["run", "--model", "llama-2-7b", "--device", "h200", "--prompt", "16", "--output", "2"]) == 0
    lines = dict((line.split(None, 1) + [""])[:2] for line in capsys.readouterr().out.splitlines()
                 if not line.startswith("#"))
    assert lines["cost_usd"] == "n/a" and lines["tokens_per_usd"] == "n/a"
    assert "None" not in lines.values()


def _check_out(tmp_path, model: str, capsys, sections: str) -> str:
    """What `explore check` prints (exit 0) of a sweep of the tiny model on an H100 as an engine with `sections`."""
    sweep = write_sweep(tmp_path, f"name: notes\nmodel: {model}\ndevice: h100-sxm\nexecution: engine\n{sections}")
    assert main(["check", sweep]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("workload, repeated", [
    # Speculation off or Medusa, at two acceptance rates: off, both rates are one design (3 designs of 4 points).
    ("spec_draft: ['', medusa], acceptance: [0.3, 0.6]", "1 of 4 points are another point's design, run once: "
                                                         "acceptance changes nothing where spec_draft is unset"),
    # Two switches crossed with their knobs: kv_budget 0 makes the two methods one design (3 of 4), and spec_draft
    # unset the three acceptance rates one (4 of 6): 24 points, 3 x 4 = 12 designs.
    ("kv_budget: [0, 8], kv_budget_method: [streaming, h2o], spec_draft: ['', medusa], "
     "acceptance: [0.3, 0.6, 0.9]", "12 of 24 points are another point's design, run once"),
    ("spec_draft: [medusa], acceptance: [0.3, 0.6]", None),  # speculation on throughout: every point its own
])
def test_check_counts_points_a_switch_makes_one_design(tmp_path, tiny_config, capsys, workload, repeated):
    out = _check_out(tmp_path, tiny_config, capsys, f"workload: {{batch: 1, prompt: 16, output: 2, {workload}}}\n")
    assert (repeated in out) if repeated else ("design again" not in out), out


@pytest.mark.parametrize("parallel, repeated, workload", [(*case, "")[:3] for case in [
    # tp 1 is one device: its two links are one design (3 designs of 4 points).
    ("tp: [1, 2], link: [nvlink4, pcie5-x16]", "1 of 4 points are another point's design, run once: link changes "
                                               "nothing where tp and pp are 1"),
    ("tp: [1, 2], link: [default, pcie5-x16]", "1 of 4 points are another point's design, run once: link"),
    # Two switches of the link, one of the all-reduce, crossed: tp 1 pp 1 is 1 design of its 4 points, tp 1 pp 2 is
    # 2 (its stages use the link, nothing all-reduces), tp 2 at either pp 4 each: 11 designs of 16 points.
    ("tp: [1, 2], pp: [1, 2], link: [nvlink4, pcie5-x16], allreduce: [nccl, custom]",
     "5 of 16 points are another point's design, run once: link changes nothing where tp and pp are 1; allreduce "
     "changes nothing where tp is 1"),
    # With the speculation grid of the test above (3 designs of 4) beside tp [1, 2] x link (3 of 4): 3 x 3 = 9
    # designs of 16 points, 7 repeats.
    ("tp: [1, 2], link: [nvlink4, pcie5-x16]", "7 of 16 points are another point's design, run once: acceptance "
     "changes nothing where spec_draft is unset; link changes nothing where tp and pp are 1",
     ", spec_draft: ['', medusa], acceptance: [0.3, 0.6]"),
    ("tp: [2, 4], link: [nvlink4, pcie5-x16]", None),  # several devices throughout: every link its own design
    ("pp: [1, 2], allreduce: [nccl, custom]", None),  # tp 1 throughout: idle_knobs_note's, not a crossing
]])
def test_check_counts_points_on_one_device_that_repeat_a_link(tmp_path, tiny_config, capsys, parallel, repeated,
                                                              workload):
    out = _check_out(tmp_path, tiny_config, capsys, f"workload: {{batch: 1, prompt: 16, output: 2{workload}}}\n"
                                                    f"parallel: {{{parallel}}}\n")
    assert (repeated in out) if repeated else ("design again" not in out), out
    assert all("\n" not in line for line in out.splitlines())


@pytest.mark.parametrize("parallel, note", [
    ("tp: 1, link: pcie5-x16", "note: link (tp and pp are 1, off, at every point)"),
    ("tp: 1, pp: 2, allreduce: custom", "note: allreduce (tp is 1, off, at every point)"),
    ("tp: 1, pp: 2, link: pcie5-x16", None),  # pipeline stages pass activations over the link
    ("tp: 1", None),  # the default link ('default' in a sweep) is no link set
])
def test_check_notes_a_link_or_allreduce_on_one_device(tmp_path, tiny_config, capsys, parallel, note):
    out = _check_out(tmp_path, tiny_config, capsys,
                     f"workload: {{batch: 1, prompt: 16, output: 2}}\nparallel: {{{parallel}}}\n")
    assert (note in out) if note else ("at every point" not in out), out


@pytest.mark.parametrize("form, repeated, designs", [
    # weight_bits 8 with head_bits 8 is head_bits 0's design: 1 of 6 (a hand count of the 2 x 3 grid).
    ("weight_bits: [4, 8], head_bits: [0, 8, 16]", "1 of 6 points are another point's design, run once: head_bits "
                                                   "changes nothing at weight_bits' own width", 5),
    # Attention and MLP overrides of (0, 8, 16) at weight_bits 4 and 8: 18 points; at 4 all 9 are designs of their
    # own, at 8 the overrides 0 and 8 are one width for each, so 2 x 2 = 4 designs: 18 - 13 = 5 repeat.
    ("weight_bits: [4, 8], attn_weight_bits: [0, 8, 16], mlp_weight_bits: [0, 8, 16]",
     "5 of 18 points are another point's design, run once: attn_weight_bits and mlp_weight_bits change nothing at "
     "weight_bits' own width", 13),
    ("weight_bits: [4], head_bits: [0, 16]", None, 2),
    # Groups of 32 and 128 beside 4- and 16-bit weights and a 16- or 8-bit KV cache: 8 points. 4-bit weights are
    # scaled per group (2 x 2 designs); at 16 bits only an 8-bit KV cache has groups (2 designs), a 16-bit one none
    # (1 design): 7 designs.
    ("weight_bits: [4, 16], group_size: [32, 128], kv_bits: [16, 8]", "1 of 8 points are another point's design, run "
     "once: group_size changes nothing where no tensor is scaled per group", 7),
    # Per-channel scales beside a 16-bit cache have no groups either: 2 granularities x 2 group sizes, 3 designs.
    ("weight_bits: 4, scale_granularity: [group, channel], group_size: [32, 128]", "1 of 4 points are another "
     "point's design, run once: group_size changes nothing where no tensor is scaled per group", 3),
    # One group size beside 4- and 16-bit weights: no point repeats another, but the 16-bit one is the design at the
    # default group size (its results show 128), which the note says.
    ("weight_bits: [4, 16], group_size: 32", "note: group_size changes nothing where no tensor is scaled per group "
     "(16-bit weights or scales per channel or tensor, beside a 16-bit KV cache): there a point is the design at its "
     "default", 2),
    # A predictor where every activation is kept: 2 x 2 points, 3 designs.
    ("act_kept: [1.0, 0.5], act_predictor: [none, deja_vu]", "1 of 4 points are another point's design, run once: "
     "act_predictor changes nothing where act_kept is 1", 3),
])
def test_check_counts_points_a_format_setting_changes_nothing_at(tmp_path, tiny_config, capsys, form, repeated,
                                                                designs):
    """Points that differ only in a format setting their format does not read are one design: explore check counts
    and names them, and the sweep makes one point (one key) of them."""
    out = _check_out(tmp_path, tiny_config, capsys,
                     f"workload: {{batch: 1, prompt: 16, output: 2}}\nformat: {{{form}}}\n")
    assert (repeated in out) if repeated else ("design again" not in out), out
    assert len(set(load_sweep(str(tmp_path / "sweep.yaml")).points().point_ids())) == designs


@pytest.mark.parametrize(("flags", "said", "unsaid"), [
    # Two stages and no tensor parallelism run sends only: NVLink 4's send_recv is fitted on DGX H100 (README).
    (["--device", "h100-sxm", "--pp", "2"], "(send/recv fitted on h100-dgx NCCL data)", "all-reduce"),
    # PCIe 4.0's fit (L40S) measured no send_recv: the stages' sends run on the datasheet model.
    (["--device", "neupims", "--pp", "2", "--link", "pcie4-x16"],
     "(send/recv on the datasheet alpha-beta model, no measured send_recv on pcie4-x16: 45-85% under", "all-reduce"),
    (["--device", "h100-sxm", "--tp", "2"], "(all-reduce fitted on h200-hgx NCCL data)", "send/recv"),
    (["--device", "a100-sxm-80gb", "--tp", "2", "--pp", "2"],
     "(all-reduce fitted on a100-dgx NCCL data; send/recv fitted on a100-dgx NCCL data)", "alpha-beta"),
    # --roofline puts a measured link on its datasheet too: not "no measured all_reduce on nvlink4".
    (["--device", "h100-sxm", "--tp", "2", "--roofline"],
     "(all-reduce on the datasheet alpha-beta model, as every link under --roofline)", "no measured"),
])
def test_run_names_how_the_collectives_it_runs_are_priced(tiny_config, capsys, flags, said, unsaid):
    assert main(["run", "--model", tiny_config, *flags, "--prompt", "16", "--output", "2"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert said in header and unsaid not in header, header
