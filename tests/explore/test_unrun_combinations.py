"""Grids crossing settings not modeled together (explore/design_point.py DesignPoint.unjudged): the points of such a
combination are recorded not run, each row's infeasible_reason saying why, the others run, `explore check` counts
them; a grid of only such points is refused in one line, as `explore run` refuses the point."""

from __future__ import annotations

import csv
import json
import math

import pytest

from explore.cli import main
from explore.runner import run_sweep
from explore.sweep import load_sweep
from tests.explore.tiny_sweep import TINY_CONFIG, write_sweep, write_tiny_model

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# The tiny Llama with 4 routed experts, 2 per token (Hugging Face Mixtral config keys).
TINY_MIXTRAL = {**TINY_CONFIG, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}
# Six requests of the tiny model on an H100 (CUDA graphs) at 5 requests/s; the case's serving keys follow.
SERVING = "execution: graphs\nserving:\n  requests: 6\n  prompt: 32\n  output: 4\n  rate: 5\n"
# The same pool scaling from one replica up to two by an HPA on 2 requests a replica (or a planner, on the SLO).
SCALED = f"{SERVING}  max_replicas: 2\n  autoscale_target: 2\n  slo: {{ttft_s: 1, tpot_s: 0.1}}\n"
# The same requests at two rates (a grid whose every point keeps the case's pair).
RATES = SERVING.replace("rate: 5", "rate: [5, 10]")
# The tiny Mixtral's two devices, its experts spread over them, and `{}` more parallel keys.
DP = "parallel: {{tp: 2, ep: spread, {}}}\n"
# A CPU host beside the GPU, over PCIe, as a hybrid placement (APEX) needs.
HOST = "  attention_link: pcie4-x16\n"

# (the sweep's keys after its model and device, the two swept keys, the pairs by hand not modeled together, the
# reason the first is recorded with, a grid of only such pairs)
CASES = {
    "dense model, experts offloaded": (
        "workload: {batch: 2, prompt: 64, output: 8, offload: [weights, experts]}\n", ("model", "offload"),
        [("{tiny}", "experts")],
        "offload: found 'experts' for {tiny}, which has no routed experts, allowed: weights, kv or auto",
        "workload: {batch: [1, 2], prompt: 64, output: 8, offload: experts}\n"),
    "hybrid on a GPU": (
        f"{SERVING}{HOST}  attention_device: [ampere-altra, h20]\n  attention_placement: [apart, hybrid]\n",
        ("attention_device", "attention_placement"), [("h20", "hybrid")],
        "attention_placement: found 'hybrid' with attention_device 'h20' (a gpu device), allowed: a CPU (kind: cpu)",
        f"{SERVING}{HOST}  attention_device: [h20, h100-sxm]\n  attention_placement: hybrid\n"),
    "hybrid on several hosts": (
        f"{SERVING}{HOST}  attention_device: ampere-altra\n  attention_devices: [1, 2]\n"
        f"  attention_placement: [apart, hybrid]\n",
        ("attention_devices", "attention_placement"), [(2, "hybrid")],
        "attention_placement: found 'hybrid' with attention_devices 2, allowed: 1 (one host)",
        f"{SERVING}{HOST}  attention_device: ampere-altra\n  attention_devices: [2, 4]\n"
        f"  attention_placement: hybrid\n"),
    "hybrid beside tensor parallelism": (
        f"parallel: {{tp: [1, 2]}}\n{SERVING}{HOST}  attention_device: ampere-altra\n"
        f"  attention_placement: [apart, hybrid]\n",
        ("tp", "attention_placement"), [(2, "hybrid")],
        "attention_placement: found 'hybrid' with tp 2, allowed: 1 (one model device beside the host)",
        f"parallel: {{tp: 2}}\n{SERVING.replace('rate: 5', 'rate: [5, 10]')}{HOST}  attention_device: ampere-altra\n"
        f"  attention_placement: hybrid\n"),
    "hybrid in micro-batches": (
        f"{SERVING}{HOST}  attention_device: ampere-altra\n  attention_micro_batches: [2, 4]\n"
        f"  attention_placement: [apart, hybrid]\n",
        ("attention_micro_batches", "attention_placement"), [(4, "hybrid")],  # the count it was not run for
        "attention_placement: found 'hybrid' with attention_micro_batches 4, allowed: left out",
        f"{SERVING}{HOST}  attention_device: ampere-altra\n  attention_micro_batches: [3, 4]\n"
        f"  attention_placement: hybrid\n"),
    "hybrid beside prefix groups": (
        f"{SERVING}{HOST}  attention_device: ampere-altra\n  prefix_tokens: 16\n  prefix_groups: [1, 2]\n"
        f"  attention_placement: [apart, hybrid]\n",
        ("prefix_groups", "attention_placement"), [(2, "hybrid")],
        "attention_placement: found 'hybrid' with prefix_groups 2, allowed: apart",
        f"{SERVING}{HOST}  attention_device: ampere-altra\n  prefix_tokens: 16\n  prefix_groups: [2, 3]\n"
        f"  attention_placement: hybrid\n"),
    "cascade behind a prefill pool": (
        f"{SERVING}  prefix_tokens: 16\n  prefix_groups: 2\n  prefill_replicas: [0, 1]\n"
        f"  prefix_attention: [paged, cascade]\n",
        ("prefill_replicas", "prefix_attention"), [(1, "cascade")],
        "prefix_attention: found 'cascade' with prefix_groups 2, allowed: paged (behind a prefill pool",
        f"{SERVING}  prefix_tokens: 16\n  prefix_groups: [2, 3]\n  prefill_replicas: 1\n"
        f"  prefix_attention: cascade\n"),
    "a fleet beside a planner": (
        f"{SCALED}  mixed_device: l4\n  mixed_replicas: [0, 1]\n  autoscaler: [hpa, load_planner]\n",
        ("mixed_replicas", "autoscaler"), [(1, "load_planner")],
        "mixed_replicas: found 1 with max_replicas 2, allowed: 0 (Dynamo's planners scale one kind of worker",
        f"{SCALED.replace('  autoscale_target: 2', '')}  mixed_device: l4\n  mixed_replicas: [1, 2]\n"
        f"  autoscaler: load_planner\n"),
    "a prefill pool beside a pool scaled from zero": (
        f"{SCALED}  replicas: [0, 1]\n  prefill_replicas: [0, 1]\n", ("replicas", "prefill_replicas"), [(0, 1)],
        "prefill_replicas: found 1 with replicas 0, allowed: 0 (a decode pool keeps a replica to hand requests to)",
        f"{SCALED}  replicas: 0\n  prefill_replicas: [1, 2]\n"),
    "attention devices on two pipeline stages": (
        f"parallel: {{pp: [1, 2]}}\n{SERVING}  attention_device: [none, h20]\n", ("pp", "attention_device"),
        [(2, "h20")], "attention_device: found 'h20' on 2 pipeline stages, allowed: one stage (pp = 1)",
        f"parallel: {{pp: 2}}\n{RATES}  attention_device: h20\n"),
    "attention devices beside a draft": (
        f"workload: {{spec_draft: ['', medusa], acceptance: 0.5}}\n{SERVING}  attention_device: [none, h20]\n",
        ("spec_draft", "attention_device"), [("medusa", "h20")],
        "attention_device: found 'h20' with spec_draft 'medusa', allowed: none (speculative decoding beside",
        f"workload: {{spec_draft: medusa, acceptance: 0.5}}\n{RATES}  attention_device: h20\n"),
    "cascade on attention devices": (
        f"{SERVING}  prefix_tokens: 16\n  prefix_attention: [paged, cascade]\n  attention_device: [none, h20]\n",
        ("prefix_attention", "attention_device"), [("cascade", "h20")],
        "attention_device: found 'h20' with prefix_attention 'cascade', allowed: paged (a cascade on attention",
        f"{RATES}  prefix_tokens: 16\n  prefix_attention: cascade\n  attention_device: h20\n"),
    "swapping from attention devices": (
        f"{RATES}  preemption: swap\n  attention_device: [none, h20]\n",  # preemption takes one value a sweep
        ("rate_per_s", "attention_device"), [(5, "h20"), (10, "h20")],
        "attention_device: found 'h20' with preemption 'swap', allowed: recompute (swapping from attention",
        f"{RATES}  preemption: swap\n  attention_device: h20\n"),
    "data-parallel ranks on two pipeline stages": (
        f"{DP.format('pp: [1, 2], attention_parallel: [tensor, data]')}{SERVING}", ("pp", "attention_parallel"),
        [(2, "data")], "attention_parallel: found 'data' with pp 2, allowed: 1 (the ranks on one pipeline stage)",
        f"{DP.format('pp: 2, attention_parallel: data')}{RATES}"),
    "data-parallel ranks beside attention devices": (
        f"{DP.format('attention_parallel: [tensor, data]')}{SERVING}  attention_device: [none, h20]\n",
        ("attention_parallel", "attention_device"), [("data", "h20")],
        "attention_parallel: found 'data' with attention_device 'h20', allowed: none (the ranks attend to their own",
        f"{DP.format('attention_parallel: data')}{RATES}  attention_device: h20\n"),
    "data-parallel ranks beside overlap": (
        f"{DP.format('overlap: [none, token_split], attention_parallel: [tensor, data]')}{SERVING}",
        ("overlap", "attention_parallel"), [("token_split", "data")],
        "attention_parallel: found 'data' with overlap 'token_split', allowed: none or dual_batch (the ranks "
        "all-reduce nothing",
        f"{DP.format('overlap: token_split, attention_parallel: data')}{RATES}"),
    "data-parallel ranks beside another all-reduce": (
        f"{DP.format('allreduce: [nccl, custom], attention_parallel: [tensor, data]')}{SERVING}",
        ("allreduce", "attention_parallel"), [("custom", "data")],
        "attention_parallel: found 'data' with allreduce 'custom', allowed: nccl (the ranks all-reduce nothing",
        f"{DP.format('allreduce: custom, attention_parallel: data')}{RATES}"),
    "data-parallel ranks beside a draft": (
        f"workload: {{spec_draft: ['', medusa], acceptance: 0.5}}\n"
        f"{DP.format('attention_parallel: [tensor, data]')}{SERVING}",
        ("spec_draft", "attention_parallel"), [("medusa", "data")],
        "attention_parallel: found 'data' with spec_draft 'medusa', allowed: none (speculative decoding on",
        f"workload: {{spec_draft: medusa, acceptance: 0.5}}\n{DP.format('attention_parallel: data')}{RATES}"),
    "offloading on two pipeline stages": (
        "workload: {batch: 2, prompt: 64, output: 8, offload: [none, weights]}\nparallel: {pp: [1, 2]}\n",
        ("offload", "pp"), [("weights", 2)],
        "offload: found 'weights' on 2 pipeline stages, allowed: none, or offloading on one stage (pp = 1;",
        "workload: {batch: [1, 2], prompt: 64, output: 8, offload: weights}\nparallel: {pp: 2}\n"),
    "a window beside the KV cache offloaded": (
        "workload: {batch: 2, prompt: 64, output: 8, offload: [weights, kv], offload_window: [0, 1]}\n",
        ("offload", "offload_window"), [("kv", 1)],
        "offload_window: found 1 with offload 'kv', allowed: offload weights (the window slides over layers'",
        "workload: {batch: [1, 2], prompt: 64, output: 8, offload: kv, offload_window: 1}\n"),
    "a draft on two pipeline stages": (
        "workload: {batch: 2, prompt: 64, output: 8, spec_draft: ['', medusa], acceptance: 0.5}\n"
        "parallel: {pp: [1, 2]}\n", ("spec_draft", "pp"), [("medusa", 2)],
        "spec_draft: found 'medusa' on 2 pipeline stages, allowed: speculative decoding on one stage (pp = 1;",
        "workload: {batch: [1, 2], prompt: 64, output: 8, spec_draft: medusa, acceptance: 0.5}\nparallel: {pp: 2}\n"),
    "pruning on two pipeline stages": (
        "workload: {batch: 2, prompt: 64, output: 8, prompt_kept: [1.0, 0.5]}\nparallel: {pp: [1, 2]}\n",
        ("prompt_kept", "pp"), [(0.5, 2)],
        "prompt_kept: found 0.5 on 2 pipeline stages, allowed: 1 (no pruning), or prompt-token pruning on one stage",
        "workload: {batch: [1, 2], prompt: 64, output: 8, prompt_kept: 0.5}\nparallel: {pp: 2}\n"),
    "layer skipping on two pipeline stages": (
        "workload: {batch: 2, prompt: 64, output: 8, exit_depth: [1.0, 0.5]}\nparallel: {pp: [1, 2]}\n",
        ("exit_depth", "pp"), [(0.5, 2)],
        "exit_depth: found 0.5 on 2 pipeline stages, allowed: 1 (every layer), or layer skipping on one stage (pp = 1;",
        "workload: {batch: [1, 2], prompt: 64, output: 8, exit_depth: 0.5}\nparallel: {pp: 2}\n"),
    "layer skipping beside a draft": (
        "workload: {batch: 2, prompt: 64, output: 8, exit_depth: [1.0, 0.5], spec_draft: ['', medusa], "
        "acceptance: 0.5}\n", ("exit_depth", "spec_draft"), [(0.5, "medusa")],
        "exit_depth: found 0.5 with spec_draft 'medusa', allowed: 1 (every layer) with speculative decoding (",
        "workload: {batch: [1, 2], prompt: 64, output: 8, exit_depth: 0.5, spec_draft: medusa, acceptance: 0.5}\n"),
    "token splitting on two pipeline stages": (
        f"parallel: {{tp: 2, pp: [1, 2], overlap: [none, token_split]}}\n{SERVING}", ("pp", "overlap"),
        [(2, "token_split")],
        "overlap: found 'token_split' on 2 pipeline stages, allowed: none, or token splitting on one stage (pp = 1;",
        f"parallel: {{tp: 2, pp: 2, overlap: token_split}}\n{RATES}"),
    "token splitting beside attention devices": (
        f"parallel: {{tp: 2, overlap: [none, token_split]}}\n{SERVING}  attention_device: [none, h20]\n",
        ("overlap", "attention_device"), [("token_split", "h20")],
        "attention_device: found 'h20' with overlap 'token_split', allowed: none (token splitting beside attention",
        f"parallel: {{tp: 2, overlap: token_split}}\n{RATES}  attention_device: h20\n"),
}
# The cases on the tiny Mixtral alone (data-parallel attention is an MoE model's).
ON_MIXTRAL = {case for case in CASES if case.startswith("data-parallel")}


def _models(tmp_path) -> tuple[str, str]:
    """Paths of the tiny Llama's and the tiny Mixtral's config.json."""
    mixtral = tmp_path / "tiny-mixtral" / "config.json"
    mixtral.parent.mkdir(parents=True, exist_ok=True)
    mixtral.write_text(json.dumps(TINY_MIXTRAL))
    return write_tiny_model(tmp_path), str(mixtral)


@pytest.mark.parametrize("case", CASES)
def test_a_grid_runs_its_points_but_those_not_modeled_together(case, tmp_path, capsys, tiny_evaluator):
    """By hand, one pair of each 2 x 2 grid (two of conversations crossed with scaling) is not modeled: those points
    recorded not run with the reason, the others run (a time > 0), `explore check` counting them; a grid of such
    points alone is refused in one line naming the key."""
    keys, swept, unrun, reason, alone = CASES[case]
    tiny, mixtral = _models(tmp_path)
    models = f"[{tiny}, {mixtral}]" if "model" in swept else mixtral if case in ON_MIXTRAL else tiny
    unrun = [tuple(v.format(tiny=tiny) if isinstance(v, str) else v for v in pair) for pair in unrun]
    reason = reason.format(tiny=tiny)
    path = write_sweep(tmp_path, f"name: grid\nmodel: {models}\ndevice: h100-sxm\n{keys}")
    assert main(["check", path]) == 0
    said = capsys.readouterr().out
    assert f"{len(unrun)} of 4 points are not run, each row's infeasible_reason saying why: {reason}" in said, said
    rows = run_sweep(load_sweep(path), tmp_path / "out", evaluator=tiny_evaluator)
    time = "ttft_s" if "serving" in keys else "tpot_s"
    not_run = [row for row in rows if row["infeasible_reason"]]
    assert len(rows) == 4 and [tuple(row[key] for key in swept) for row in not_run] == unrun
    assert not_run[0]["infeasible_reason"].startswith(reason)
    assert all(math.isnan(row[time]) for row in not_run)
    assert all(math.isnan(row["offloaded_B"]) for row in not_run)  # nothing of it was built: nothing offloaded either
    # Nor its memory counted: results.csv leaves its memory columns empty, as a NaN time.
    written = [row for row in csv.DictReader((tmp_path / "out" / "results.csv").open()) if row["infeasible_reason"]]
    assert [(row["peak_memory_B"], row["fits_in_memory"]) for row in written] == [("", "")] * len(unrun), written
    assert all(row[time] > 0 for row in rows if not row["infeasible_reason"])
    only = write_sweep(tmp_path, f"name: only\nmodel: {mixtral if case in ON_MIXTRAL else tiny}\ndevice: h100-sxm\n"
                                 f"{alone}")
    assert main(["check", only]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert reason.split(", allowed: ")[1] in err and f"{only}:" in err, err


def test_prefix_groups_beside_a_trace_s_groups_names_the_trace(tmp_path, capsys):
    """--prefix-groups beside a trace whose prefix_group column gives the groups, without --prefix-tokens: the
    conflict is the trace's groups (a prefix length would not resolve it), one line, exit 2; a sweep says the same."""
    trace = tmp_path / "questions.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens,prefix_group\n"
                     + "".join(f"{i * 0.01:.2f},96,8,{(10, 20, 30)[i % 3]}\n" for i in range(12)))
    model = write_tiny_model(tmp_path)
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--trace", str(trace), "--arrival",
                 "trace", "--prefix-groups", "4"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert (f"--prefix-groups: found 4 with --trace '{trace}', whose prefix_group column gives each request's group, "
            f"allowed: left out") in err, err
    path = write_sweep(tmp_path, f"name: groups\nmodel: {model}\ndevice: h100-sxm\nserving:\n  trace: {trace}\n"
                                 f"  arrival: trace\n  prefix_groups: [2, 4]\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "serving.prefix_groups: found 2 with serving.trace" in err, err


SERVING_FLAGS = ["--serving", "--rate", "5", "--requests", "4", "--prompt", "32", "--output", "4"]
HYBRID_FLAGS = [*SERVING_FLAGS, "--attention-device", "ampere-altra", "--attention-link", "pcie4-x16",
                "--attention-placement", "hybrid"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--offload", "experts"], "--offload: found 'experts' for {tiny}, which has no routed experts"),
    ([*HYBRID_FLAGS, "--attention-devices", "2"],
     "--attention-placement: found 'hybrid' with --attention-devices 2, allowed: 1 (one host)"),
    ([*HYBRID_FLAGS, "--attention-micro-batches", "4"],
     "--attention-placement: found 'hybrid' with --attention-micro-batches 4, allowed: left out"),
    ([*SERVING_FLAGS, "--prefix-tokens", "16", "--prefix-groups", "2", "--prefill-replicas", "1",
      "--prefix-attention", "cascade"],
     "--prefix-attention: found 'cascade' with --prefix-groups 2, allowed: paged (behind a prefill pool"),
    (["--exit-depth", "0.5", "--pp", "2"], "--exit-depth: found 0.5 on 2 pipeline stages, allowed: 1 (every layer)"),
    (["--exit-depth", "0.5", "--spec-draft", "medusa", "--acceptance", "0.5"],
     "--exit-depth: found 0.5 with --spec-draft 'medusa', allowed: 1 (every layer) with speculative decoding"),
    ([*SERVING_FLAGS, "--tp", "2", "--pp", "2", "--overlap", "token_split"],
     "--overlap: found 'token_split' on 2 pipeline stages, allowed: none, or token splitting on one stage"),
    ([*SERVING_FLAGS, "--tp", "2", "--overlap", "token_split", "--attention-device", "h20"],
     "--attention-device: found 'h20' with --overlap 'token_split', allowed: none (token splitting beside"),
    ([*HYBRID_FLAGS, "--tp", "2"], "--attention-placement: found 'hybrid' with --tp 2, allowed: 1 (one model device"),
])
def test_explore_run_refuses_a_point_not_modeled_in_one_line(tiny_config, capsys, flags, message):
    assert main(["run", "--model", tiny_config, "--device", "h100-sxm", *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message.format(tiny=tiny_config) in err, err
