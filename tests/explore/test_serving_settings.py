"""The serving settings a run reads only beside others (explore/serving_settings.py): explore run's flags and a sweep's
serving: keys are refused by the same rules."""

from __future__ import annotations

import csv

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.serving_settings import RULES, FlagNames, KeyNames, flag_of, idle_setting, key_of
from sim.serving_spec import ServingSpec
from tests.explore.tiny_sweep import write_sweep, write_tiny_serving_sweep

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

RUN = ["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--serving", "--requests", "4"]
LENGTHS = ("--rate", "2", "--prompt", "64", "--output", "4"), "  rate: 2\n  prompt: 64\n  output: 4\n"
TRACED = ("--trace", "splitwise-conv", "--rate", "2"), "  trace: splitwise-conv\n  rate: 2\n"
# Each rule's setting given alone, as flags and as serving: lines, over lengths or over a trace; keyed by the rule's
# field (and, for a field's second rule, what tells it apart).
IDLE = {
    "cv": (LENGTHS, ("--cv", "3"), "  cv: 3\n"),
    "swap_GBps": (LENGTHS, ("--swap-GBps", "20"), "  swap_GBps: 20\n"),
    "prefill_device": (LENGTHS, ("--prefill-device", "a100-sxm-80gb"), "  prefill_device: a100-sxm-80gb\n"),
    "kv_link": (LENGTHS, ("--kv-link", "nvlink4"), "  kv_link: nvlink4\n"),
    "decode_pick": (LENGTHS, ("--decode-pick", "arrival"), "  decode_pick: arrival\n"),
    "prefill_node_link": (LENGTHS, ("--prefill-node-link", "infiniband-hdr"), "  prefill_node_link: infiniband-hdr\n"),
    "mixed_node_link": (LENGTHS, ("--mixed-node-link", "infiniband-hdr"), "  mixed_node_link: infiniband-hdr\n"),
    "mixed_device": (LENGTHS, ("--mixed-device", "l4"), "  mixed_device: l4\n"),
    "autoscale_target": (LENGTHS, ("--autoscale-target", "4"), "  autoscale_target: 4\n"),
    "autoscale_metric": (LENGTHS, ("--autoscale-metric", "running"), "  autoscale_metric: running\n"),
    "cold_start_s": (LENGTHS, ("--cold-start-s", "30"), "  cold_start_s: 30\n"),
    "autoscale_target sla_planner": (LENGTHS, ("--max-replicas", "2", "--autoscaler", "sla_planner", "--slo-tpot",
                                               "0.1", "--autoscale-target", "4"),
                                    "  max_replicas: 2\n  autoscaler: sla_planner\n  slo: {tpot_s: 0.1}\n"
                                    "  autoscale_target: 4\n"),
    "autoscale_metric sla_planner": (LENGTHS, ("--max-replicas", "2", "--autoscaler", "sla_planner", "--slo-tpot",
                                               "0.1", "--autoscale-metric", "running"),
                                    "  max_replicas: 2\n  autoscaler: sla_planner\n  slo: {tpot_s: 0.1}\n"
                                    "  autoscale_metric: running\n"),
    "autoscale_predictor": (LENGTHS, ("--autoscale-predictor", "kalman"), "  autoscale_predictor: kalman\n"),
    "autoscale_predictor hpa": (LENGTHS, ("--max-replicas", "2", "--autoscale-target", "4", "--autoscale-predictor",
                                          "kalman"),
                                "  max_replicas: 2\n  autoscale_target: 4\n  autoscale_predictor: kalman\n"),
    "mixed_max_replicas": (LENGTHS, ("--mixed-max-replicas", "3"), "  mixed_max_replicas: 3\n"),
    "busy_action": (LENGTHS, ("--busy-action", "queue"), "  busy_action: queue\n"),
    "client_retries": (LENGTHS, ("--busy-waiting-requests", "4", "--busy-action", "queue", "--client-retries", "2"),
                       "  busy_waiting_requests: 4\n  busy_action: queue\n  client_retries: 2\n"),
    "client_retry_s": (LENGTHS, ("--busy-waiting-requests", "4", "--client-retry-s", "1"),
                       "  busy_waiting_requests: 4\n  client_retry_s: 1\n"),
    "autoscaler": (LENGTHS, ("--autoscaler", "sla_planner"), "  autoscaler: sla_planner\n"),
    "autoscale_interval_s": (LENGTHS, ("--autoscale-interval-s", "60"), "  autoscale_interval_s: 60\n"),
    "prefill_max_replicas": (LENGTHS, ("--prefill-max-replicas", "2"), "  prefill_max_replicas: 2\n"),
    "slo_attainment": (LENGTHS, ("--slo-attainment", "0.5"), "  slo: {attainment: 0.5}\n"),
    "prefix_attention": (LENGTHS, ("--prefix-attention", "cascade"), "  prefix_attention: cascade\n"),
    "prefix_groups": (LENGTHS, ("--prefix-groups", "4"), "  prefix_groups: 4\n"),
    "queue_policy": (LENGTHS, ("--queue-policy", "lpm"), "  queue_policy: lpm\n"),
    "queue_policy priority": (LENGTHS, ("--queue-policy", "priority"), "  queue_policy: priority\n"),
    "slo_urgent_ttft_s": (LENGTHS, ("--slo-urgent-ttft", "0.5"), "  slo: {urgent_ttft_s: 0.5}\n"),
    "slo_urgent_tpot_s": (LENGTHS, ("--slo-urgent-tpot", "0.05"), "  slo: {urgent_tpot_s: 0.05}\n"),
    "host_cache_GB": (LENGTHS, ("--host-cache-GB", "64"), "  host_cache_GB: 64\n"),
    "kv_store_GB": (LENGTHS, ("--kv-store-GB", "64"), "  kv_store_GB: 64\n"),
    "kv_store_GBps": (LENGTHS, ("--kv-store-GBps", "25"), "  kv_store_GBps: 25\n"),
    "think_s": (LENGTHS, ("--think-s", "5"), "  think_s: 5\n"),
    "think_cv": (LENGTHS, ("--think-cv", "1"), "  think_cv: 1\n"),
    "attention_devices": (LENGTHS, ("--attention-devices", "2"), "  attention_devices: 2\n"),
    "attention_link": (LENGTHS, ("--attention-link", "infiniband-ndr"), "  attention_link: infiniband-ndr\n"),
    "attention_micro_batches": (LENGTHS, ("--attention-micro-batches", "3"), "  attention_micro_batches: 3\n"),
    "attention_placement": (LENGTHS, ("--attention-placement", "hybrid"), "  attention_placement: hybrid\n"),
    "router": (LENGTHS, ("--router", "least_tokens"), "  router: least_tokens\n"),
    "lora_rank": (LENGTHS, ("--lora-rank", "32"), "  lora_rank: 32\n"),
    "max_loras": (LENGTHS, ("--max-loras", "4"), "  max_loras: 4\n"),
    "lora_alpha": (LENGTHS, ("--lora-alpha", "0.5"), "  lora_alpha: 0.5\n"),
    "chunk_tokens": (LENGTHS, ("--chunk-tokens", "256"), "  chunk_tokens: 256\n"),
    "long_prefill_tokens": (LENGTHS, ("--long-prefill-tokens", "2048"), "  long_prefill_tokens: 2048\n"),
    "preemption": (LENGTHS, ("--scheduler", "static", "--preemption", "swap", "--swap-GBps", "25"),
                   "  scheduler: static\n  preemption: swap\n  swap_GBps: 25\n"),
    "max_batched_tokens": (LENGTHS, ("--scheduler", "chunked", "--max-batched-tokens", "1024"),
                           "  scheduler: chunked\n  max_batched_tokens: 1024\n"),
    "prompt_batch_tokens": (LENGTHS, ("--scheduler", "chunked", "--prompt-batch-tokens", "2048"),
                            "  scheduler: chunked\n  prompt_batch_tokens: 2048\n"),
    # No explore run flag sets it (a serving: key alone): the sweep's refusal only.
    "max_decode_preemptions": (LENGTHS, None, "  scheduler: chunked\n  max_decode_preemptions: 4\n"),
    "prompt": (TRACED, ("--prompt", "100"), "  prompt: 100\n"),
    "output": (TRACED, ("--output", "100"), "  output: 100\n"),
}


def test_every_rule_has_a_case_here():
    """A rule added to the table is tried on both callers below."""
    assert sorted(case.split()[0] for case in IDLE) == sorted(rule.field for rule in RULES)


@pytest.mark.parametrize("case", list(IDLE))
def test_explore_run_and_a_sweep_refuse_the_same_settings(case, tmp_path, capsys):
    _refused_by_both(case.split()[0], *IDLE[case], tmp_path, capsys)


def _refused_by_both(field: str, given: tuple, flag_args: tuple[str, ...] | None, key_lines: str, tmp_path,
                     capsys) -> None:
    """explore run refuses `field` given by `flag_args` (None: no flag sets it) beside the flags of `given`, and a
    sweep given its lines `key_lines`, each in one line naming it."""
    flags, lines = given
    if flag_args is not None:
        assert main([*RUN, *flags, *flag_args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"error: {flag_of(field)}: found " in err[0], err
    path = write_sweep(tmp_path, f"name: idle\nmodel: llama-2-7b\ndevice: h100-sxm\nserving:\n  requests: 4\n"
                                 f"{lines}{key_lines}")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    rule = next(rule for rule in RULES if rule.field == field)
    # A trace beside prompt or output is refused by the section's schema (without a trace both are required).
    named = f"serving.{'.'.join(key_of(field))}: found " if rule.sweep else f"with {field}, allowed: either"
    assert len(err) == 1 and "sweep.yaml:" in err[0] and named in err[0], err


@pytest.mark.parametrize(("given", "values", "idle"), [
    # A sweep's list: a key is idle only where no point reads it.
    ("prefill_device", {"prefill_replicas": (0, 1)}, False),
    ("prefill_device", {"prefill_replicas": (0,)}, True),
    ("attention_devices", {"attention_device": ("none", "h20")}, False),
    ("attention_devices", {"attention_device": ("none", "")}, True),
    ("cv", {"arrival": ("gamma",)}, False),
    ("cv", {"arrival": ("poisson",)}, True),
    ("slo_attainment", {"slo_ttft_s": (None,), "slo_tpot_s": (0.1,)}, False),
    ("slo_attainment", {"slo_ttft_s": (None,), "slo_tpot_s": (None,), "slo_slowdown": (None,)}, True),
    ("prefix_attention", {"prefix_tokens": (64,)}, False),
    ("prefix_attention", {"prefix_tokens": (0,)}, True),
    # Each queue policy is read where what it orders by exists: shared prefixes for lpm, priorities for priority.
    ("queue_policy", {"queue_policy": ("fcfs", "lpm"), "prefix_tokens": (0, 64)}, False),
    ("queue_policy", {"queue_policy": ("fcfs", "lpm"), "prefix_tokens": (0,)}, True),
    ("queue_policy", {"queue_policy": ("fcfs", "priority"), "priority_fraction": (0.2,)}, False),
    ("queue_policy", {"queue_policy": ("priority",), "priority_fraction": (None,), "prefix_tokens": (64,)}, True),
    ("queue_policy", {"queue_policy": ("fcfs",), "priority_fraction": (None,), "prefix_tokens": (0,)}, False),
    # A chunked scheduler's budget is chunk_tokens; the others prefill whole within max_batched_tokens.
    ("chunk_tokens", {"scheduler": ("continuous", "chunked")}, False),
    # Swap preemption is read by the schedulers that preempt, not by those reserving whole requests.
    ("preemption", {"scheduler": ("static", "orca"), "preemption": ("swap",)}, True),
    ("preemption", {"scheduler": ("static", "chunked"), "preemption": ("swap",)}, False),
    ("chunk_tokens", {"scheduler": ("static", "continuous", "orca")}, True),
    ("max_batched_tokens", {"scheduler": ("chunked", "orca")}, False),
    ("max_batched_tokens", {"scheduler": ("chunked",)}, True),
    # A router picks among a pool's replicas, or among a replica's engines on pipeline stages.
    ("router", {"replicas": (1,), "prefill_replicas": (0, 1), "pp": (1,)}, True),
    ("router", {"replicas": (1, 2), "prefill_replicas": (0,), "pp": (1,)}, False),
    ("router", {"replicas": (1,), "prefill_replicas": (2,), "pp": (1,)}, False),
    ("router", {"replicas": (1,), "prefill_replicas": (0,), "pp": (1, 2)}, False),
    # ... or among a data-parallel replica's ranks, each an engine with its own requests.
    ("router", {"replicas": (1,), "prefill_replicas": (0,), "pp": (1,), "ranks": (1, 4)}, False),
    ("router", {"replicas": (1,), "prefill_replicas": (0,), "pp": (1,), "ranks": (1,)}, True),
    # ... or among a fleet's replicas of mixed devices.
    ("router", {"replicas": (1,), "prefill_replicas": (0,), "pp": (1,), "mixed_replicas": (0, 1)}, False),
    ("mixed_device", {"mixed_replicas": (0,)}, True),
])
def test_a_setting_is_idle_only_where_no_value_given_reads_it(given, values, idle):
    assert (idle_setting({given}, values, KeyNames(), sweep=True) is not None) is idle


def test_each_caller_names_the_settings_its_own_way():
    values = {"arrival": ("poisson",), "prefill_replicas": (0,)}
    flag = idle_setting({"cv"}, values, FlagNames())
    key = idle_setting({"cv"}, values, KeyNames())
    assert flag.message("3") == ("found 3 with --arrival poisson, allowed: with --arrival gamma (Poisson arrivals "
                                 "have a cv of 1), or left out")
    assert key.message("3") == ("found 3 with arrival 'poisson', allowed: with arrival: gamma (Poisson arrivals "
                                "have a cv of 1), or left out")
    assert "with --prefill-replicas N (N >= 1: " in idle_setting({"kv_link"}, values, FlagNames()).allowed
    assert "with prefill_replicas >= 1 (" in idle_setting({"kv_link"}, values, KeyNames()).allowed
    assert (flag_of("slo_attainment"), key_of("slo_attainment")) == ("--slo-attainment", ("slo", "attainment"))


def test_prompt_and_output_are_left_to_a_sweep_s_schema():
    """explore run refuses --prompt beside --trace as an idle flag; a sweep's schema refuses the pair itself."""
    values = {"trace": ("splitwise-conv",)}
    assert idle_setting({"prompt"}, values, FlagNames()) is not None
    assert idle_setting({"prompt"}, values, KeyNames(), sweep=True) is None


def test_a_grid_crossing_schedulers_with_token_budgets_evaluates_each_design_once(tmp_path, capsys):
    """scheduler [continuous, chunked] x chunk_tokens [256, 512] x max_batched_tokens [4096, 8192]: continuous reads
    max_batched_tokens only and chunked chunk_tokens only, so by hand the 8 points are 2 + 2 = 4 designs; the check
    says so, naming both budgets, and the run writes one row a design."""
    path = write_tiny_serving_sweep(tmp_path, "  rate: 50\n  scheduler: [continuous, chunked]\n"
                                              "  chunk_tokens: [256, 512]\n  max_batched_tokens: [4096, 8192]\n")
    assert main(["check", path]) == 0
    said = capsys.readouterr().out
    assert "8 design points (4 distinct designs evaluated)" in said, said
    assert "4 of 8 points are another point's design, run once" in said, said
    assert "chunk_tokens changes nothing where the scheduler is static or continuous or orca" in said, said
    assert "max_batched_tokens changes nothing where the scheduler is chunked" in said, said
    out = tmp_path / "out"
    assert main(["--quiet", path, "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["scheduler"] for row in rows) == ["chunked", "chunked", "continuous", "continuous"]


def test_a_grid_crossing_conversation_turns_with_think_settings_says_why_points_repeat(tmp_path, capsys):
    """conversation_turns [1, 4] x think_s [5, 10] x think_cv [1, 2]: one-turn requests think nothing, so by hand the 4
    one-turn points are 1 design and the 4 conversations' points 4, 5 of 8; the check says which settings change
    nothing where."""
    path = write_tiny_serving_sweep(tmp_path, "  rate: 50\n  conversation_turns: [1, 4]\n  think_s: [5, 10]\n"
                                              "  think_cv: [1, 2]\n")
    assert main(["check", path]) == 0
    said = capsys.readouterr().out
    assert "8 design points (5 distinct designs evaluated)" in said, said
    assert "3 of 8 points are another point's design, run once: think_s changes nothing where conversation_turns " \
           "is 1" in said, said
    assert "think_cv changes nothing where conversation_turns is 1 or think_s 0" in said, said


def test_the_default_kv_link_given_without_a_prefill_pool_is_refused(tmp_path, capsys):
    """--kv-link naming the link a prefill pool uses by default, with no prefill pool: given, so refused in one line as
    any other link is (it was taken for the default left out), by the run and by a sweep alike; and a spec that leaves
    kv_link out is the same design as one naming the default (one key, one link), as stored keys were written."""
    default = ServingSpec().handoff_link("h100-sxm")
    _refused_by_both("kv_link", LENGTHS, ("--kv-link", default), f"  kv_link: {default}\n", tmp_path, capsys)
    named = ServingSpec(kv_link=default)
    assert ServingSpec().key_text("h100-sxm") == named.key_text("h100-sxm")
    assert named.handoff_link("h100-sxm") == default


@pytest.mark.parametrize("key", ["kv_link", "prefill_device"])
def test_a_list_where_a_key_takes_one_text_value_says_so(tmp_path, capsys, key):
    """A sweep listing two links (or devices) where the key takes one, which does not sweep, is told that in one
    line, not pydantic's 'a valid string'."""
    path = write_tiny_serving_sweep(tmp_path, f"  rate: 50\n  prefill_replicas: 1\n  {key}: [infiniband-ndr, l4]\n")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"serving.{key}: found ['infiniband-ndr', 'l4'], allowed: one text value, not a list (the key does not " \
           "sweep)" in err, err


# vLLM refuses a token budget below its sequence limit whatever chunked prefill is set to (vllm-project/vllm
# vllm/config/scheduler.py, commit 01230b40, SchedulerConfig.verify_max_model_len, and v0's vllm/config.py, commit
# c0c2335c, SchedulerConfig._verify_args: "max_num_batched_tokens (...) must be greater than or equal to max_num_seqs
# (...)"). Its max_num_batched_tokens is the chunked scheduler's chunk_tokens and the continuous scheduler's (vLLM v0
# without chunked prefill) max_batched_tokens; static batching and Orca model no vLLM.
@pytest.mark.parametrize(("scheduler", "budget", "tokens", "max_seqs", "refused"), [
    ("chunked", "chunk_tokens", 255, 256, True),
    ("chunked", "chunk_tokens", 256, 256, False),  # "greater than or equal": the budget may equal the sequences
    ("chunked", "chunk_tokens", 512, 32, False),  # a data-parallel rank's own limits (examples/dp-attention.yaml)
    ("continuous", "chunk_tokens", 16, 256, False),  # it prefills whole: chunk_tokens is not its budget
    ("continuous", "max_batched_tokens", 255, 256, True),
    ("continuous", "max_batched_tokens", 256, 256, False),
    ("static", "max_batched_tokens", 255, 256, False),  # no vLLM scheduler: vLLM's rule is not its
    ("orca", "max_batched_tokens", 255, 256, False),
])
def test_a_vllm_budget_below_max_seqs_is_not_run_as_vllm_refuses_it(scheduler, budget, tokens, max_seqs, refused):
    spec = ServingSpec(scheduler=scheduler, max_seqs=max_seqs, **{budget: tokens})
    reason = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=max_seqs, prompt=0, output=0,
                         serving=spec).unjudged()
    assert (reason.startswith(f"{budget}: found {tokens} with max_seqs {max_seqs}, allowed: an integer >= {max_seqs}")
            if refused else reason == ""), reason


@pytest.mark.parametrize(("scheduler", "flag"), [("chunked", "--chunk-tokens"),
                                                 ("continuous", "--max-batched-tokens")])
def test_explore_run_refuses_a_budget_below_max_seqs_in_one_line(scheduler, flag, capsys):
    assert main([*RUN, *LENGTHS[0], "--scheduler", scheduler, "--max-seqs", "128", flag, "96"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"error: {flag}: found 96 with --max-seqs 128, allowed: an integer >= 128, or 96 " \
                             "with --max-seqs <= 96 (vLLM refuses max_num_batched_tokens" in err[0], err


# The continuous scheduler prefills whole, so its budget holds the tiny sweep's 32-token prompts and 4 outputs,
# recomputed after a preemption (35 tokens): 64 tokens, beside max_seqs 32 and 128.
@pytest.mark.parametrize(("scheduler", "budget", "tokens", "fewer", "more", "most"), [
    ("chunked", "chunk_tokens", 16, 8, 32, 64), ("continuous", "max_batched_tokens", 64, 32, 128, 256)])
def test_a_grid_crossing_max_seqs_past_the_budget_runs_the_points_vllm_takes(tmp_path, capsys, scheduler, budget,
                                                                             tokens, fewer, more, most):
    """max_seqs [fewer, more] beside a budget between them: by vLLM's rule `fewer` runs and `more` is refused, so the
    grid records that point not run with the reason and runs the other; where every point is refused, the sweep is."""
    path = write_tiny_serving_sweep(tmp_path, f"  rate: 50\n  scheduler: {scheduler}\n  max_seqs: [{fewer}, {more}]\n"
                                              f"  {budget}: {tokens}\n")
    assert main(["check", path]) == 0
    said = capsys.readouterr().out
    assert "1 of 2 points are not run, each row's infeasible_reason saying why: " \
           f"{budget}: found {tokens} with max_seqs {more}" in said, said
    out = tmp_path / "out"
    assert main(["--quiet", path, "--out", str(out)]) == 0
    capsys.readouterr()
    with open(out / "results.csv", newline="") as file:
        rows = {int(row["max_seqs"]): row for row in csv.DictReader(file)}
    assert sorted(rows) == [fewer, more]
    assert rows[fewer]["infeasible_reason"] == "" and float(rows[fewer]["tokens_per_s"]) > 0
    assert rows[more]["infeasible_reason"].startswith(f"{budget}: found {tokens} with max_seqs {more}, allowed: ")
    assert rows[more]["tokens_per_s"] in ("", "nan")
    every = write_tiny_serving_sweep(tmp_path, f"  rate: 50\n  scheduler: {scheduler}\n  max_seqs: [{more}, {most}]\n"
                                               f"  {budget}: {tokens}\n")
    assert main(["check", every]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sweep.yaml:" in err[0] and f"serving.{budget}: found {tokens} with serving.max_seqs " \
        f"{more}" in err[0], err
