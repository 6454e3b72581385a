"""Hostile and mistaken inputs (tests/data/bad/, plus big files made at test time): each is refused by the CLI
with exit code 2 and exactly one line on stderr, no traceback, without hanging (alias bombs, deep nesting,
huge ranges and grids used to hang or grow memory; sweep names could write outside out/)."""

from __future__ import annotations

import faulthandler
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from explore.cli import main
from explore.schema import MAX_NAME_BYTES
from explore.sweep import MAX_RANGE_STEPS, MAX_SEARCH_SPACE, MAX_SWEEP_POINTS
from workloads.errors import MAX_FILE_BYTES
from workloads.yaml_lines import MAX_YAML_DEPTH, MAX_YAML_VALUES

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
H200_PROFILE = (Path(__file__).resolve().parents[2] / "data" / "measured" / "h200-2026-12-04"
                / "h200-profile-llama-3-8b-b1.json.gz")
# A hang guard, not a speed target (those belong in bench/): most refusals take under a second and the slowest
# about 5 s ('derived with 100,000 terms', 2 cores), but a 10 s bound failed once on a loaded machine. A case that
# once hung (an alias bomb, a 10^18-point grid) takes minutes or never ends; 45 s stays under the watchdog's 60 s,
# so a slow finish fails here as this case alone rather than ending the session.
LIMIT_S = 45.0


def _sweep(name: str) -> list[str]:
    return [str(BAD / name)]  # run it: no --out, so a name decides the folder (out/<name> under tmp_path)


def _check(name: str) -> list[str]:
    return ["check", str(BAD / name)]


def _model(name: str) -> list[str]:
    return ["run", "--model", str(BAD / name), "--device", "h100-sxm"]


def _device(name: str) -> list[str]:
    return ["run", "--model", "llama-2-7b", "--device", str(BAD / name)]


def _big_sweep(tmp: Path) -> list[str]:
    """A valid sweep under a comment of more than MAX_FILE_BYTES (a 60 MB one took minutes to parse)."""
    path = tmp / "big-sweep.yaml"
    path.write_text("#" + "x" * MAX_FILE_BYTES + "\nname: big\nmodel: llama-2-7b\ndevice: h100-sxm\n")
    return [str(path)]


def _big_device(tmp: Path) -> list[str]:
    path = tmp / "big-device.yaml"
    path.write_text("kind: gpu\nname: big\n" + "#" + "x" * MAX_FILE_BYTES + "\n")
    return ["run", "--model", "llama-2-7b", "--device", str(path)]


def _checked(name: str, text: str):
    """`explore check` of a sweep file written at test time (in the test's folder) as `name`."""
    return _written(name, text, lambda path: ["check", path])


def _written(name: str, text: str, argv):
    """argv(path) of a file written at test time (in the test's folder) as `name`."""
    def write(tmp: Path) -> list[str]:
        path = tmp / name
        path.write_text(text)
        return argv(str(path))
    return write


def _small_sweep(name: str, workload: str):
    """`explore check` of a one-model, one-device sweep with this workload: section."""
    return _checked(name, f"name: small\nmodel: llama-2-7b\ndevice: h100-sxm\nworkload: {workload}\n")


def _device_text(name: str, text: str):
    """`explore run` on a device file of this text."""
    return _written(name, text, lambda path: ["run", "--model", "llama-2-7b", "--device", path])


def _derived(expression: str):
    """A sweep whose derived capacity is `expression`, written at test time (they are large)."""
    return _checked("derived.yaml", f'name: derived\nmodel: llama-2-7b\ndevice: h100-sxm\nderived:\n'
                                    f'  device.memory.capacity_GB: "{expression}"\n')


def _ep_sweep(parallel: str):
    """A sweep of Mixtral-8x7B (8 experts, 32 heads) with this parallel: section."""
    return _checked("ep.yaml", f"name: ep\nmodel: mixtral-8x7b\ndevice: h100-sxm\n"
                               f"workload: {{batch: 1, prompt: 16, output: 4}}\nparallel: {parallel}\n")


def _nested_conditionals(levels: int) -> str:
    text = "80"
    for _ in range(levels):
        text = f"(80 if batch > 1 else {text})"
    return text


def _report_folder(objectives: str | None = None, csv_text: str = "point_id\nabc\n", stored_row: str | None = None):
    """A results folder with an objectives.json, a results.csv and (when given) a results.sqlite holding one row
    of this text, as an edit by hand or another tool could leave them."""
    def write(tmp: Path) -> list[str]:
        out = tmp / "results-folder"
        out.mkdir()
        (out / "results.csv").write_text(csv_text)
        if objectives is not None:
            (out / "objectives.json").write_text(objectives)
        if stored_row is not None:
            db = sqlite3.connect(out / "results.sqlite")
            db.execute("CREATE TABLE results (point_id TEXT PRIMARY KEY, row TEXT NOT NULL, pos INTEGER)")
            db.execute("INSERT INTO results VALUES ('abc', ?, NULL)", (stored_row,))
            db.commit()
            db.close()
        return ["report", str(out)]
    return write


def _validate(name: str) -> list[str]:
    return ["validate", str(BAD / name)]  # its figures would go to out/validate (none: the table is refused)


def _calibrate(name: str) -> list[str]:
    return ["calibrate", str(BAD / name), "--device", "h100-sxm", "--out", "out/fit.yaml"]  # never the shipped fit


def _run(*flags: str) -> list[str]:
    return ["run", "--model", "llama-2-7b", "--device", "h100-sxm", *flags]


H100 = (Path(__file__).resolve().parents[2] / "hw_models" / "presets" / "h100-sxm.yaml").read_text()
BANDWIDTH_LINE = next(i for i, t in enumerate(H100.splitlines(), 1) if t.strip().startswith("bandwidth_GBps:"))


def _nan_device(tmp: Path) -> list[str]:
    """A whole device file (not on a base preset) whose bandwidth is .nan: blamed on its line."""
    path = tmp / "h100-nan.yaml"
    path.write_text(H100.replace("bandwidth_GBps: 3350", "bandwidth_GBps: .nan"))
    return ["run", "--model", "llama-2-7b", "--device", str(path)]


def _absolute_name(tmp: Path) -> list[str]:
    """A name that is an absolute path (inside this test's folder, so a failure writes nowhere else)."""
    path = tmp / "absolute-name.yaml"
    path.write_text(f"name: {tmp / 'escaped'}\nmodel: llama-2-7b\ndevice: h100-sxm\n")
    return [str(path)]


def _long_name(tmp: Path) -> list[str]:
    path = tmp / "long-name.yaml"
    path.write_text(f"name: {'n' * (MAX_NAME_BYTES + 1)}\nmodel: llama-2-7b\ndevice: h100-sxm\n")
    return [str(path)]


# (case, argv or a function of tmp_path giving it, text the one line must hold)
CASES = [
    ("sweep alias bomb", _sweep("sweep_alias_bomb.yaml"), f"more than {MAX_YAML_VALUES:,} values once aliases"),
    ("device alias bomb", _device("device_alias_bomb.yaml"), f"more than {MAX_YAML_VALUES:,} values once aliases"),
    ("sweep nested 3000 deep", _check("sweep_deep_nesting.yaml"), f"more than {MAX_YAML_DEPTH} levels deep"),
    ("sweep JSON nested 3000 deep", _sweep("sweep_deep_nesting.json"), f"more than {MAX_YAML_DEPTH} levels deep"),
    ("device nested 3000 deep", _device("device_deep_nesting.yaml"), f"more than {MAX_YAML_DEPTH} levels deep"),
    ("config.json nested 3000 deep", _model("model_deep_nesting.json"), "nested too deeply"),
    ("range of 10,000,000 steps", _check("sweep_range_steps.yaml"), f"less than or equal to {MAX_RANGE_STEPS}"),
    ("override of 1,001 values", _check("sweep_override_values.yaml"),
     f"1,001 values, allowed: at most {MAX_RANGE_STEPS:,}"),
    ("grid of 1,030,301 points", _check("sweep_grid_points.yaml"), f"at most {MAX_SWEEP_POINTS:,}"),
    ("budget of 10,000,000", _check("sweep_budget.yaml"), f"at most {MAX_SWEEP_POINTS:,}"),
    ("search space of 10^18", _check("sweep_search_space.yaml"), f"at most {MAX_SEARCH_SPACE:.0e}"),
    ("derived from 10^9 combinations", _check("sweep_derived_inputs.yaml"), "reads 1,000,000,000 combinations"),
    ("name ../..", _sweep("name_dotdot.yaml"), "name: found '../..'"),
    ("absolute name", _absolute_name, "name: found '/"),
    ("name with a separator", _sweep("name_separator.yaml"), "name: found 'results/escaped'"),
    ("name with a backslash", _sweep("name_backslash.yaml"), "name: found '..\\\\escaped'"),
    ("empty name", _sweep("name_empty.yaml"), "name: found ''"),
    ("name ..", _sweep("name_parent.yaml"), "name: found '..'"),
    ("name longer than a file name", _long_name, f"1 to {MAX_NAME_BYTES} bytes"),
    ("sweep over 1 MiB", _big_sweep, f"more than {MAX_FILE_BYTES:,} bytes"),
    ("device file over 1 MiB", _big_device, f"more than {MAX_FILE_BYTES:,} bytes"),
    # config.json: each used to print a traceback, hang, or run as another model.
    ("config.json head_dim 7", _model("model_head_dim_odd.json"), "head_dim: found 7, allowed: an even head size"),
    ("config.json string rms_norm_eps", _model("model_norm_eps_string.json"),
     "rms_norm_eps: found '1e-05', allowed: a number in (0, 1)"),
    ("config.json hidden_size 10^18", _model("model_hidden_1e18.json"),
     "hidden_size: found 1000000000000000000, allowed: a positive integer up to 131,072"),
    ("config.json hidden_size of 5,001 digits", _model("model_hidden_5001_digits.json"),
     "hidden_size: found an integer of 5,001 digits"),
    ("config.json 100,000 layers", _model("model_layers_100000.json"),
     "num_hidden_layers: found 100000, allowed: a positive integer up to 1,000"),
    ("config.json flag as text", _model("model_bool_string.json"),
     "tie_word_embeddings: found 'false', allowed: true or false"),
    ("config.json llama with a Mixtral architecture", _model("model_architecture_mismatch.json"),
     "architectures: found 'MixtralForCausalLM' with model_type 'llama'"),
    ("Mixtral config without expert keys", _model("model_mixtral_no_experts.json"), "num_local_experts: missing"),
    # Prompts past the context: refused, not priced (serving requests are clipped instead: clipped_requests).
    ("prompt past the context", _run("--prompt", "100000"),
     "--prompt, --output: found a prompt of 100,000 tokens and an output of 128 (100,128 in all), allowed: at most "
     "llama-2-7b's context of 4,096 tokens"),
    ("sweep prompt past the context", _check("sweep_context.yaml"),
     "sweep_context.yaml:5: workload.prompt, workload.output: found a prompt of 100,000 tokens"),
    # Device files: .inf, implausible numbers and text flags, named by file, line and key.
    ("device bandwidth .inf", _device("device_bandwidth_inf.yaml"),
     "device_bandwidth_inf.yaml:4: memory.bandwidth_GBps: found .inf, allowed: a finite number"),
    ("device bandwidth .nan", _nan_device,
     f"h100-nan.yaml:{BANDWIDTH_LINE}: memory.bandwidth_GBps: found .nan, allowed: a finite number"),
    ("device bandwidth 1e-300", _device("device_bandwidth_tiny.yaml"),
     "device_bandwidth_tiny.yaml:4: memory.bandwidth_GBps: found 1e-300, allowed: 1 to 100,000 GB/s"),
    ("device sm_count 10^12", _device("device_sm_count.yaml"),
     "device_sm_count.yaml:4: compute.sm_count: found 1000000000000, allowed: 1 to 1,000,000"),
    ("device flag as text", _device("device_bool_string.yaml"),
     "device_bool_string.yaml:4: npu.double_buffered: found 'no', allowed: true or false"),
    ("device sparsity said once", _device("device_sparsity.yaml"),
     "compute.structured_sparsity.0: found '3:5', allowed: dense or N:M"),
    ("--set bandwidth 1e-300", _run("--set", "device.memory.bandwidth_GBps=1e-300"),
     "memory.bandwidth_GBps: found 1e-300, allowed: 1 to 100,000 GB/s"),
    # Sweep files.
    ("sweep flag as text", _check("sweep_bool_string.yaml"), "calibrated: found 'false', allowed: true or false"),
    # A YAML null, boolean or list is named as the file spells it (it read 'found None', 'found True').
    ("sweep batch null", _small_sweep("batch_null.yaml", "{batch: null, prompt: 16, output: 4}"),
     "batch_null.yaml:4: workload.batch: found null, allowed: an integer"),
    ("sweep batch true", _small_sweep("batch_true.yaml", "{batch: true, prompt: 16, output: 4}"),
     "batch_true.yaml:4: workload.batch: found true, allowed: an integer"),
    ("sweep batch list holding a null", _small_sweep("batch_tilde.yaml", "{batch: [[1, ~]], prompt: 16, output: 4}"),
     "batch_tilde.yaml:4: workload.batch.0: found [1, null], allowed: an integer"),
    ("sweep empty batch list", _small_sweep("batch_empty.yaml", "{batch: [], prompt: 16, output: 4}"),
     "batch_empty.yaml:4: workload.batch: found [], allowed: a list of at least 1 value"),
    ("device kind a list", _device_text("kind_list.yaml", "name: mine\nkind: [gpu]\n"),  # raised a TypeError
     "kind_list.yaml:2: kind: found ['gpu'], allowed: gpu, npu, cpu, fpga"),
    ("device base null", _device_text("base_null.yaml", "base: null\nmemory: {bandwidth_GBps: 4000}\n"),
     "base_null.yaml:1: base: found null, allowed: a device preset name"),
    ("config.json key null", _written("config.json", '{"model_type": "llama", "hidden_size": null}',
                                      lambda path: ["run", "--model", path, "--device", "h100-sxm"]),
     "config.json: hidden_size: found null, allowed: a positive integer"),
    ("sweep float override as text", _check("sweep_override_text.yaml"),
     "overrides.device.memory.bandwidth_GBps.1: found 'fast', allowed: a number (an integer or a decimal"),
    ("sweep name a YAML boolean", _check("sweep_name_off.yaml"),
     "sweep_name_off.yaml:1: name: found false, allowed: a text value (YAML reads an unquoted yes, no, on, off, "
     "true or false as a boolean: quote it)"),
    # A value of the wrong type, said as every other refusal is (it read pydantic's 'a valid string', 'a valid tuple').
    ("sweep trace a number", _checked("trace_number.yaml", "name: t\nmodel: llama-2-7b\ndevice: h100-sxm\n"
                                                           "serving: {requests: 10, rate: 2, trace: 5}\n"),
     "trace_number.yaml:4: serving.trace: found 5, allowed: a text value"),
    ("sweep capacity a number", _checked("capacity_number.yaml", "name: c\nmodel: llama-2-7b\ndevice: h100-sxm\n"
                                                                 "serving: {requests: 10, capacity: 5}\n"),
     "capacity_number.yaml:4: serving.capacity: found 5, allowed: a list of 2 values"),
    ("sweep model list holding a number", _checked("model_number.yaml", "name: m\nmodel: [llama-2-7b, 5]\n"
                                                                        "device: h100-sxm\n"),
     "model_number.yaml:2: model.1: found 5, allowed: a text value"),
    ("device sparsity one pattern, not a list", _device_text("sparsity_word.yaml",
                                                             "base: h100-sxm\ncompute: {structured_sparsity: '2:4'}\n"),
     "sparsity_word.yaml:2: compute.structured_sparsity: found '2:4', allowed: a list"),
    ("device memory type a number", _device_text("memory_type.yaml", "base: h100-sxm\nmemory: {type: 5}\n"),
     "memory_type.yaml:2: memory.type: found 5, allowed: a text value"),
    # A number written with an exponent that YAML 1.1 reads as text (no '.', or no sign): said so, with a spelling it
    # reads as a number (the message read "found '2e1', allowed: a number", which the user had written).
    ("sweep rate 2e1", _checked("rate_2e1.yaml", "name: r\nmodel: llama-2-7b\ndevice: h100-sxm\n"
                                                 "serving: {requests: 10, rate: 2e1, prompt: 16, output: 4}\n"),
     "rate_2e1.yaml:4: serving.rate: found '2e1', allowed: a number (YAML reads 1e3 or 1.0e3 as text: write 1.0e+3 or "
     "1000)"),
    # Text shorter than its field takes, as every other refusal is (it read 'String should have at least 3 characters').
    ("link source too short", _written("link_source.yaml", "name: l\ndescription: d\nbandwidth_GBps: 100\n"
                                                           "latency_us: 1\nsource: s\n",
                                       lambda path: _run("--tp", "2", "--link", path)),
     "link_source.yaml:5: source: found 's', allowed: text of at least 3 characters"),
    # A knob's integer past 64 bits: said with the knob's values, not pydantic's 'exceeded maximum size'.
    ("sweep group size of 10^22", _checked("group_1e22.yaml", "name: g\nmodel: llama-2-7b\ndevice: h100-sxm\n"
                                                              "format: {group_size: 10000000000000000000000}\n"),
     "group_1e22.yaml:4: format.group_size: found 10000000000000000000000, allowed: one of the integers 8, 16, 32, "
     "64, 128, 256"),
    # A request length past what a RequestSet holds (2^53 tokens): numpy's int64 overflowed drawing it (a traceback).
    ("sweep prompt of 10^22 tokens", _checked("prompt_1e22.yaml", "name: p\nmodel: llama-2-7b\ndevice: h100-sxm\n"
                                                                  "serving: {requests: 10, rate: 2, "
                                                                  "prompt: 10000000000000000000000, output: 4}\n"),
     "prompt_1e22.yaml:4: serving.prompt.tokens: found 10000000000000000000000, allowed: less than or equal to "
     "9007199254740992"),
    ("serving run prompt of 10^22 tokens", _run("--serving", "--requests", "3", "--rate", "1", "--prompt", str(10**22)),
     "--prompt: found 10000000000000000000000, allowed: at most 9,007,199,254,740,992 tokens"),
    # argparse's refusals of a flag's form, said as every other refusal is.
    ("--batch without its value", _run("--batch"), "--batch: found no value, allowed: a value after it"),
    ("--capacity of one rate", _run("--serving", "--capacity", "5"),
     "--capacity: found fewer than 2 values, allowed: 2 values after it"),
    ("--serving given a value", _run("--serving=1"),
     "--serving: found '1', allowed: the flag alone (it takes no value)"),
    ("run without --device", ["run", "--model", "llama-2-7b"], "--device: missing, allowed: a value (required)"),
    ("--s, the start of several flags", _run("--s", "1"),
     "--s: found the start of several flags, allowed: one of --sparsity, --scale-type,"),
    ("--train-fraction a word", ["calibrate", str(BAD / "measured_one_row.csv"), "--device", "h100-sxm",
                                 "--train-fraction", "abc", "--out", "out/fit.yaml"],
     "--train-fraction: found 'abc', allowed: a number"),
    ("trace file with a bad column", _run("--serving", "--requests", "1", "--arrival", "trace", "--trace",
                                          str(BAD / "trace_bad_column.csv")),
     "trace_bad_column.csv: found columns arrival_s, prompt_tokens, output_token, allowed: columns including "
     "output_tokens"),
    ("trace arrivals from a trace without times", _run("--serving", "--requests", "5", "--arrival", "trace",
                                                       "--trace", "arxiv-summarization"),
     "--arrival: found 'trace' with --trace 'arxiv-summarization', which has no arrival times (a column arrival_s "
     "or arrived_at), allowed: poisson or gamma arrivals at a rate over its lengths"),
    # Keys no point would read: refused as explore run refuses the flags (they would show in results as if run).
    ("sweep acceptance without a draft", _check("sweep_acceptance_without_draft.yaml"),
     "sweep_acceptance_without_draft.yaml:4: workload.acceptance: found 0.5 with no spec_draft, allowed: with "
     "workload.spec_draft"),
    ("sweep cv with Poisson arrivals", _check("sweep_cv_with_poisson.yaml"),
     "sweep_cv_with_poisson.yaml:4: serving.cv: found 3 with arrival 'poisson', allowed: with arrival: gamma"),
    ("sweep prefill device without a pool", _check("sweep_prefill_device_without_pool.yaml"),
     "sweep_prefill_device_without_pool.yaml:4: serving.prefill_device: found 'a100-sxm-80gb' with no prefill "
     "pool"),
    ("sweep tree smaller than the chain", _check("sweep_tree_under_chain.yaml"),
     "sweep_tree_under_chain.yaml:4: spec_tree: found 2 with spec_tokens 5, allowed: 0 (a chain) or at least 5"),
    ("sweep tree with an MTP draft", _check("sweep_tree_with_mtp.yaml"),
     "sweep_tree_with_mtp.yaml:4: spec_tree: found 8 with spec_draft 'mtp', allowed: 0 (a chain): only Medusa heads"),
    ("--spec-tree without a draft", _run("--spec-tree", "4"), "--spec-tree: found 4 without --spec-draft"),
    ("--spec-draft not a preset", _run("--spec-draft", "llama-3.2-1b"),
     "--spec-draft: found 'llama-3.2-1b', which is no model preset (did you mean"),
    ("--prompt with a trace", _run("--serving", "--trace", "splitwise-conv", "--prompt", "100"),
     "--prompt: found 100 with --trace splitwise-conv, allowed: left out with --trace"),
    ("sweep metric both minimized and maximized", _check("sweep_metric_both_directions.yaml"),
     "sweep_metric_both_directions.yaml:5: objectives: found 'tpot_s' in minimize and maximize"),
    ("sweep grid with a budget", _check("sweep_grid_with_budget.yaml"),
     "sweep_grid_with_budget.yaml:5: search: found budget 10 with strategy 'grid'"),
    ("sweep constraint bound beyond a float", _check("sweep_constraint_inf_bound.yaml"),
     "sweep_constraint_inf_bound.yaml:5: constraints.0: found 'ttft_s <= 1e999', allowed: 'METRIC OP NUMBER'"),
    ("sweep list with a repeated value", _check("sweep_execution_repeated.yaml"),
     "sweep_execution_repeated.yaml:5: execution: found ['engine', 'engine'], allowed: distinct values"),
    ("sweep search as a word", _check("sweep_search_word.yaml"),
     "sweep_search_word.yaml:5: search: found 'nsga2', allowed: a mapping of its keys"),
    ("sweep rate as a word", _check("sweep_rate_word.yaml"),
     "sweep_rate_word.yaml:4: serving.rate: found 'fast', allowed: a number"),
    ("sweep knob given an overrides range", _check("sweep_knob_range.yaml"),
     "sweep_knob_range.yaml:4: serving.memory_utilization: found {range: [0.5, 0.9], steps: 3}, allowed: a "
     "number"),
    ("sweep a knob in another section", _check("sweep_key_elsewhere.yaml"),
     "sweep_key_elsewhere.yaml:4: workload.weight_bits: unknown key (a key of format:); allowed: batch, prompt"),
    ("sweep a knob's number as a word", _check("sweep_knob_word.yaml"),
     "sweep_knob_word.yaml:4: workload.kv_budget: found 'many', allowed: 0 (keep all) or a number of tokens >= 1"),
    # A field of no section of a device file on a base: named as the file writes it, with that section's fields.
    ("device file on a base, a field misspelled", _device("device_field_typo_on_base.yaml"),
     "device_field_typo_on_base.yaml:4: memory.bandwith_GBps: no such field to override (did you mean "
     "'bandwidth_GBps'?); allowed: memory.type, memory.capacity_GB, memory.usable_GiB, memory.bandwidth_GBps, "
     "memory.serial_load_ns, memory.source"),
    # h100-sxm.yaml leaves out power.cap_W (a field with a default, no limit): a file on it may set it, so it is listed.
    ("device file on a base, a field with a default misspelled", _device("device_default_field_typo_on_base.yaml"),
     "device_default_field_typo_on_base.yaml:4: power.cap_w: no such field to override (did you mean 'cap_W'?); "
     "allowed: power.idle_W, power.source, power.cap_W"),
    ("device file of another kind on a base", _device("device_kind_on_base.yaml"),
     "device_kind_on_base.yaml:3: kind: found 'npu' on base 'h100-sxm' (a gpu), allowed: 'gpu' or left out"),
    ("sweep serving metric in a static sweep", _check("sweep_serving_metric_static.yaml"),
     "sweep_serving_metric_static.yaml:5: objectives.minimize.0: found 'ttft_p99_s' in a static sweep"),
    ("--tp on a device without a default link", ["run", "--model", "llama-2-7b", "--device", "neupims", "--tp", "2"],
     "--link: found none for device 'neupims' (its preset names no default link), allowed: a link preset"),
    ("--link on one device", _run("--link", "pcie4-x16"), "--link: found 'pcie4-x16' with --tp and --pp at 1 (off)"),
    ("--link unknown", _run("--tp", "2", "--link", "nope"), "--link: found 'nope'"),
    # An NVMe SSD streams offloaded weights to a device, and joins no devices to each other.
    ("--link a storage tier", _run("--tp", "2", "--link", "nvme-pcie4-x4"),
     "--link: found 'nvme-pcie4-x4', a storage tier that joins no devices, allowed: a link between devices"),
    ("--node-link a storage tier", _run("--tp", "16", "--node-link", "nvme-pcie4-x4"),
     "--node-link: found 'nvme-pcie4-x4', a storage tier that joins no devices, allowed: empty (the device's node "
     "link), a link preset that joins devices"),
    ("--kv-link a storage tier",
     _run("--serving", "--rate", "1", "--prefill-replicas", "1", "--kv-link", "nvme-pcie4-x4"),
     "--kv-link: found 'nvme-pcie4-x4', a storage tier that joins no devices, allowed: a link between devices"),
    ("--set on a link, named as set", _run("--tp", "2", "--set", "link.bandwidth_GBps=-5"),
     "--set: link.bandwidth_GBps: found -5"),
    # A yes/no link field takes 0 or 1 as a what-if (--set takes numbers; a sweep's overrides are checked alike), not
    # the true or false its YAML file writes, which --set refuses as no number.
    ("--set a yes/no link field", _run("--tp", "2", "--set", "link.multimem=2"),
     "--set: link.multimem: found 2, allowed: 0 or 1 (no or yes)"),
    ("--set on no field of a link, named as set", _run("--tp", "2", "--set", "link.bandwith_GBps=100"),
     "--set: link.bandwith_GBps: no such field to override (did you mean 'bandwidth_GBps'?)"),
    # A key of no part of the system reads as a device field's: the message lists the device's fields and the
    # prefixes of the other parts' what-ifs.
    ("--set on no part of the system", _run("--tp", "16", "--set", "nic.bandwidth_GBps=100"),
     "or a field of another part of the system: link.<field>, attention_device.<field>"),
    # A node link is named by preset and takes no what-if: the message says how its fields change (a link YAML).
    ("--set on the node link", _run("--tp", "16", "--set", "node_link.bandwidth_GBps=10"),
     "--set node_link.bandwidth_GBps: found a field of node_link, allowed: a device field (memory.bandwidth_GBps), "
     "link.<field> (the link between the tp devices) or a field of another pool's devices; node_link's fields change "
     "in a link YAML: a copy of its preset's file (explore presets links names them) with bandwidth_GBps changed, "
     "named by --node-link FILE.yaml"),
    ("--requests beyond the limit", _run("--serving", "--requests", "10000000", "--rate", "1000"),
     "--requests: found 10,000,000, allowed: at most 1,000,000"),
    # A conversation's turns are requests: more than a run may hold is refused before any request is drawn (10^22
    # turns overflowed the draw into a traceback).
    ("--conversation-turns beyond the requests a run holds",
     _run("--serving", "--requests", "3", "--rate", "1", "--conversation-turns", str(10**22)),
     "--conversation-turns: found 10000000000000000000000, allowed: an integer from 1 to 1,000,000 (each turn is a "
     "request)"),
    # A number flag's value as the user wrote it ('-1', not the float '-1.0' it parses to), a serving spec's and a
    # knob's alike.
    ("--rate negative, as written", _run("--serving", "--rate", "-1"),
     "--rate: found -1, allowed: a finite number > 0"),
    ("--hot-experts negative, as written", _run("--hot-experts", "-1"), "--hot-experts: found -1, allowed:"),
    # ep as the sweep writes it ('spread', 'split'), not the number of devices it stands for (ep = tp or 1).
    ("sweep ep spread over devices that split experts", _ep_sweep("{tp: [2, 3], ep: [split, spread]}"),
     "ep.yaml:5: parallel.ep: found 'spread' with tp 3, allowed: split (3 devices do not divide mixtral-8x7b's 8 "
     "experts whole)"),
    ("sweep ep at a refused point", _ep_sweep("{tp: 2, ep: [split, spread], attention_parallel: data}"),
     "attention_parallel: found 'data' in a static batch, allowed: tensor (data-parallel ranks run their own batches "
     "in lockstep in serving iterations: add serving:, or --serving) (at ep=split)"),
    ("--slo-attainment alone", _run("--serving", "--slo-attainment", "0.5"),
     "--slo-attainment: found 0.5 with no SLO, allowed: with an SLO to attain"),
    # Combinations of values each valid alone, which no point can run: found by `explore check` and before a run.
    ("sweep layer skipping in serving", _check("sweep_exit_depth_serving.yaml"),
     "sweep_exit_depth_serving.yaml:6: exit_depth: found 0.5 with serving:, allowed: 1"),
    ("sweep layer skipping in serving, run", _sweep("sweep_exit_depth_serving.yaml"),
     "sweep_exit_depth_serving.yaml:6: exit_depth: found 0.5 with serving:, allowed: 1"),
    ("sweep draft on two pipeline stages", _check("sweep_draft_on_two_stages.yaml"),
     "sweep_draft_on_two_stages.yaml:4: spec_draft: found 'medusa' on 2 pipeline stages, allowed: speculative "
     "decoding on one stage (pp = 1; a pipelined draft and target are not modeled yet) (at pp=2)"),
    ("sweep uniform bounds reversed", _check("sweep_uniform_bounds.yaml"),
     "sweep_uniform_bounds.yaml:4: high: found 100, allowed: an integer >= low (500)"),
    ("sweep key said once", _check("sweep_unknown_prefill_device.yaml"),
     "sweep_unknown_prefill_device.yaml:9: serving.prefill_device: found 'nope', allowed: a path to a device YAML"),
    ("sweep override 1e-300", _check("sweep_override_tiny.yaml"),
     "value 1e-300 on h100-sxm: memory.bandwidth_GBps: found 1e-300, allowed: 1 to "
     "100,000 GB/s"),
    ("sweep link override 1e-300", _check("sweep_link_override_tiny.yaml"),
     "value 1e-300 on nvlink4: hw_models/presets/links/nvlink4.yaml: bandwidth_GBps: found 1e-300, allowed: 0.1 "
     "to 10,000 GB/s"),
    ("acceptance without speculation", _run("--acceptance", "0.6"),
     "--acceptance: found 0.6 without --spec-draft, allowed: with --spec-draft"),
    ("hot experts on a dense model, named before their bits", _run("--hot-experts", "0.5"),
     "--hot-experts: found 0.5 on llama-2-7b, a dense model (no routed experts), allowed: 0"),
    ("edge layers overlapping in the middle of the model",  # Llama-2-7B has 32 decoder layers: 16 at each end
     _run("--weight-bits", "4", "--edge-layer-bits", "8", "--edge-layers", "17"),
     "--edge-layers: found 17 on llama-2-7b, which has 32 decoder layers, allowed: 1 to 16"),
    ("link latency .inf", _run("--tp", "2", "--link", str(BAD / "link_latency_inf.yaml")),
     "link_latency_inf.yaml:4: latency_us: found .inf, allowed: a finite number"),
    ("trace beyond the context", ["trace", "--model", "llama-2-7b", "--phase", "decode", "--context", "100000",
                                  "-o", "trace.json"],
     "--context: found 100,000 (100,001 positions), allowed: at most llama-2-7b's context of 4,096 tokens"),
    ("trace: the other phase's length", ["trace", "--model", "llama-2-7b", "--phase", "prefill", "--context", "100",
                                         "-o", "trace.json"],
     "--context: found 100 with --phase prefill, allowed: --prompt (a prefill step's prompt tokens)"),
    ("trace --real beyond this machine's memory", ["trace", "--model", "llama-2-7b", "--phase", "prefill", "--prompt",
                                                   "4000", "--batch", "100000", "--real", "-o", "trace.json"],
     "--real: found a pass needing at least"),
    ("measure on more threads than cores", ["measure", "--threads", "100000", "--device-name", "x", "-o", "m.csv"],
     "--threads: found 100,000, allowed: 1 to"),
    ("derived with 100,000 terms", _derived(" + ".join(["batch"] * 100_000)),
     "derived.device.memory.capacity_GB: found 'batch + batch + batch"),
    ("derived 2,000 conditionals deep", _derived(_nested_conditionals(2000)), "characters), allowed: an expression of "
                                                                           "at most 2,000 characters"),
    ("derived 150 terms deep", _derived(" + ".join(["batch"] * 150)), "an expression nested at most 100 levels deep"),
    ("report: objectives.json not JSON", _report_folder(objectives="{broken"), "objectives.json: found text that "
                                                                              "is not JSON"),
    ("report: objectives.json unknown key", _report_folder(objectives='{"bogus": 1}'),
     "objectives.json: bogus: unknown key, allowed: objectives, constraints, slo, search, name"),
    ("report: objectives.json unknown search", _report_folder(objectives='{"search": "anneal"}'),
     "objectives.json: search: found 'anneal', allowed: grid, random, nsga2, tpe or null"),
    ("report: objectives.json name not text", _report_folder(objectives='{"name": 3}'),
     "objectives.json: name: found 3, allowed: the sweep's name, a string"),
    ("report: objectives.json unknown metric", _report_folder(objectives='{"objectives": {"minimize": ["speed"]}}'),
     "objectives.json: objectives.minimize.0: found 'speed', allowed: a metric name: one of ttft_s"),
    ("report: results.csv without input columns", _report_folder(), "results.csv:2: model, device, batch"),
    ("report: an edited stored row", _report_folder(stored_row="not json"),
     "results.sqlite: row 1: found 'not json', allowed: a JSON object of results columns"),
    # A list of a fixed length given another: its values and its length, not pydantic's index or tuple words.
    ("sweep range of one bound", _check("sweep_range_one_bound.yaml"),
     "sweep_range_one_bound.yaml:5: overrides.device.memory.bandwidth_GBps.range: found [1000], allowed: a list of 2 "
     "values"),
    ("sweep capacity of three rates", _check("sweep_capacity_three.yaml"),
     "sweep_capacity_three.yaml:6: serving.capacity: found [1, 8, 64], allowed: a list of 2 values"),
    ("sweep log range from 0", _check("sweep_log_range_zero.yaml"),
     "sweep_log_range_zero.yaml:5: overrides.device.memory.bandwidth_GBps: range: found [0, 3000] with scale: log, "
     "allowed: two positive bounds"),
    ("sweep seed beyond 32 bits", _check("sweep_seed_too_big.yaml"),
     "search.seed: found 99999999999, allowed: less than or equal to 4294967295"),
    ("sweep batch of 10^20", _check("sweep_batch_1e20.yaml"),
     "workload.batch: found 100000000000000000000, allowed: less than or equal to 1048576"),
    ("run batch of 10^20", _run("--batch", str(10**20)), "--batch: found 100000000000000000000, allowed: an integer "
                                                         "from 1 to 1,048,576"),
    # Said what was missing without what was found: one objective as a name ('a valid list'), a search with no
    # budget or no objectives.
    ("sweep objective not a list", _check("sweep_objective_not_a_list.yaml"),
     "sweep_objective_not_a_list.yaml:5: objectives.minimize: found 'tpot_s', allowed: a list of metric names"),
    ("sweep random search without a budget", _check("sweep_random_without_budget.yaml"),
     "sweep_random_without_budget.yaml:6: search: found no budget with strategy 'random', allowed: a budget"),
    ("sweep nsga2 search without objectives", _check("sweep_nsga2_without_objectives.yaml"),
     "sweep_nsga2_without_objectives.yaml: objectives: found none with search strategy 'nsga2', allowed: metrics to "
     "optimize"),
    ("sweep sparsity said once", _check("sweep_sparsity.yaml"),
     "format.sparsity.1: found '3:5', allowed: dense or N:M"),
    ("sweep sparsity as a number", _check("sweep_sparsity_number.yaml"),
     "sweep_sparsity_number.yaml:4: format.sparsity.1: found 0.5, allowed: dense or N:M"),
    # A derived format knob is judged with the format it joins: `explore check` said valid and the run crashed.
    ("sweep derived edge bits below the weight bits", _check("sweep_derived_edge_bits.yaml"),
     "sweep_derived_edge_bits.yaml:5: derived.edge_layer_bits: found 5 with weight_bits 6, allowed: 0 (as "
     "weight_bits) or more bits than weight_bits"),
    ("sweep derived edge bits below the weight bits, run", _sweep("sweep_derived_edge_bits.yaml"),
     "derived.edge_layer_bits: found 5 with weight_bits 6"),
    # Measured-kernel tables (row values: tests/kernels/test_measured.py).
    ("validate a header-only table", _validate("measured_header_only.csv"), "no rows (only a header)"),
    ("validate a step of an unknown model", _validate("measured_step_unknown_model.csv"),
     "kv_len 513): model: found 'nope-model'"),
    ("calibrate on one row", _calibrate("measured_one_row.csv"),
     "gemm rows for h100-sxm: found 1 to fit on (of the training share --train-fraction 0.5 of the sources), "
     "allowed: at least 5"),
    # A profile of another GPU than --device (the H200's profiles against H100 SXM: the same 132 SMs, not its memory).
    ("validate a profile of another GPU", ["validate", "--profile", str(H200_PROFILE), "--device", "h100-sxm"],
     "--device: found 'h100-sxm' (132 SMs and 84.9 GB) for a profile recorded on NVIDIA H200 (132 SMs, 150.1 GB), "
     "allowed: h200"),
    ("validate a profile --cross-from", ["validate", "--profile", str(H200_PROFILE), "--device", "h200",
                                          "--cross-from", "h100-sxm"],
     "--cross-from: found with --profile, allowed: with measured-kernel tables only"),
    # A table of another GPU than --device names the devices it has rows of.
    ("validate a table of another GPU", [*_validate("measured_one_row.csv"), "--device", "a100-sxm-80gb"],
     "measured_one_row.csv: --device: no rows of 'a100-sxm-80gb'; found rows of h100-sxm (1 row)"),
    ("calibrate a table of another GPU", ["calibrate", str(BAD / "measured_one_row.csv"), "--device", "a100-sxm-80gb",
                                          "--out", "out/fit.yaml"],
     "measured_one_row.csv: --device: no kernel rows of 'a100-sxm-80gb'; found kernel rows of h100-sxm (1 row)"),
]


@pytest.fixture
def watchdog():
    """A case that hangs fails the session with every thread's stack instead of blocking CI forever."""
    faulthandler.dump_traceback_later(60, exit=True, file=sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.mark.parametrize("argv,needle", [pytest.param(a, n, id=c) for c, a, n in CASES])
def test_bad_input_is_one_line_exit_2(argv, needle, tmp_path, monkeypatch, capsys, watchdog):
    monkeypatch.chdir(tmp_path)  # a sweep's default output folder, out/<name>, lands here
    argv = argv(tmp_path) if callable(argv) else argv
    start = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    assert elapsed < LIMIT_S
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped").exists()  # no folder made


def test_corpus_files_are_all_used():
    """Every file under tests/data/bad/ is a case above (a file nobody runs guards nothing)."""
    used = {Path(arg).name for _, argv, _ in CASES if not callable(argv) for arg in argv if arg.startswith(str(BAD))}
    assert {p.name for p in BAD.iterdir()} <= used


def test_calibrate_counts_the_parameters_of_each_fit():
    """fit_groups mirrors hw_models.calibration.fit_calibration: a GEMM fit per dtype (5 parameters, 2 more for
    an fp8 quantization kernel, 1 more for an eager host interval), attention per family (10), streams (2)."""
    from explore.calibrate_cmd import fit_groups
    from kernels.measured import MeasuredKernel

    def row(kernel, dtype="fp16", **shape):
        return MeasuredKernel(device="h100-sxm", kernel=kernel, dtype=dtype, time_s=1e-5, source="s", **shape)
    rows = [row("gemm", m=1, n=8, k=8), row("gemm", m=2, n=8, k=8),
            row("gemm", "fp8", m=1, n=8, k=8, timing="eager"),
            row("attention_decode", batch=1, heads=8, kv_heads=8, kv_len=64, head_dim=64, seq_len=1),
            row("attention_prefill", batch=1, heads=8, kv_heads=8, kv_len=64, head_dim=64, seq_len=64, kv_dtype="fp8"),
            row("norm", bytes=1e6)]
    assert fit_groups(rows) == {"gemm": (2, 5), "gemm fp8": (1, 8), "attention decode": (1, 10),
                                "attention prefill kv 8-bit": (1, 10), "norm": (1, 2)}


def test_a_sweep_override_of_no_such_field_lists_the_what_if_fields(tmp_path, capsys):
    """An override a device has no field for (the L2 size under compute:, where no preset has it) names what a what-if
    may set, as `explore run --set` does."""
    from explore.cli import main
    from tests.explore.tiny_sweep import write_sweep

    sweep = write_sweep(tmp_path, "name: l2\nmodel: llama-2-7b\ndevice: h100-sxm\n"
                                  "workload: {batch: 1, prompt: 16, output: 2}\n"
                                  "overrides: {device.compute.l2_cache_MB: [50, 100]}\n")
    assert main(["check", sweep]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "sweep.yaml:5: overrides.device.compute.l2_cache_MB: value 50 on h100-sxm: device.compute.l2_cache_MB: " \
           "no such field to override; allowed: compute.sm_count," in line
    assert "memory.bandwidth_GBps" in line


def test_trace_judges_its_flags_before_importing_torch(tmp_path, monkeypatch, capsys):
    """explore trace refuses a context past the model's before importing workloads.capture, which imports torch (4 s
    of CPU, 16 s on a loaded machine: the case 'trace beyond the context' overran its 10 s limit under load)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "workloads.capture", None)  # importing it now raises ImportError
    assert main(["trace", "--model", "llama-2-7b", "--phase", "decode", "--context", "100000", "-o", "t.json"]) == 2
    assert "--context: found 100,000 (100,001 positions)" in capsys.readouterr().err


def test_trace_real_refuses_a_pass_too_big_before_importing_torch(tmp_path, monkeypatch, capsys):
    """explore trace --real refuses a pass this machine cannot hold before importing torch (the case 'trace --real
    beyond this machine's memory' took 22-26 s on a loaded machine). Llama-2-7B in bf16, batch 100,000 of 4,000
    positions, by hand: 2 B x (6,738,415,616 parameters + 100,000 x 4,000 x 262,144 B of 8-bit KV per token
    + 4e8 tokens x (32,000 logits + 11,008 MLP values)) = 244,135,076,831,232 B."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "workloads.capture", None)  # importing it now raises ImportError
    assert main(["trace", "--model", "llama-2-7b", "--phase", "prefill", "--prompt", "4000", "--batch", "100000",
                 "--real", "-o", "t.json"]) == 2
    assert "--real: found a pass needing at least 244,135.1 GB (llama-2-7b, batch 100,000, 4,000 positions)" in \
        capsys.readouterr().err


@pytest.mark.slow  # 2 s: the profile's JSON is read whole to find its GPU
def test_validate_refuses_another_gpu_before_reading_the_profile_s_ops(tmp_path, monkeypatch, capsys):
    """explore validate --profile refuses a preset of another GPU before reading the profile's ops, which imports torch
    (6.6 s of CPU in all, 26-34 s on a loaded machine: the case 'validate a profile of another GPU' overran 10 s)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "torch", None)  # importing it now raises ImportError
    assert main(["validate", "--profile", str(H200_PROFILE), "--device", "h100-sxm"]) == 2
    assert "--device: found 'h100-sxm' (132 SMs and 84.9 GB) for a profile recorded on NVIDIA H200" in \
        capsys.readouterr().err


def test_a_sweep_override_of_a_node_link_field_says_how_to_change_it(tmp_path, capsys):
    """A node link's field is no what-if in a sweep either: the one line says a link YAML named by parallel.node_link
    changes it."""
    from explore.cli import main
    from tests.explore.tiny_sweep import write_sweep

    sweep = write_sweep(tmp_path, "name: nl\nmodel: llama-2-7b\ndevice: h100-sxm\n"
                                  "workload: {batch: 1, prompt: 16, output: 2}\nparallel: {tp: 16}\n"
                                  "overrides: {node_link.bandwidth_GBps: [10, 20]}\n")
    assert main(["check", sweep]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "sweep.yaml:6: overrides: found 'node_link.bandwidth_GBps', a field of node_link, allowed: a device field " \
           "(device.memory.bandwidth_GBps), link.<field>" in line
    assert line.endswith("with bandwidth_GBps changed, named by parallel.node_link: FILE.yaml")
