"""explore check counts only the traces the on-disk cache lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from explore.cli import main
from explore.runner import run_sweep
from explore.sweep import load_sweep
from tests.explore.tiny_sweep import write_sweep, write_tiny_model


@pytest.mark.parametrize("section, traces", [("workload: {batch: [1, 2], prompt: 16, output: 2}", 4),
                                             ("serving: {rate: 10, requests: 20, prompt: 32, output: 4}", 4)])
def test_check_counts_traces_left_to_capture(tmp_path, monkeypatch, capsys, section, traces):
    """A static sweep traces a prefill and a decode a (model, batch, prompt), 2 x 2 = 4 here; a serving point's step
    template traces the tiny model four times (kernels/shapes.py template_passes). Check counts the traces the run then
    captures, a file of the trace cache each (it counted the static sweep's 2 pairs, 2 traces), and once a run has
    captured them, finds them in the cache (it counted a serving sweep's every time)."""
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: nothing traced yet
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\n{section}\n")
    assert main(["check", path]) == 0
    before = capsys.readouterr().out
    assert f"up to {traces} traces to capture" in before, before
    run_sweep(load_sweep(path), tmp_path / "out")
    assert len(_captured(tmp_path / "cache")) == traces
    assert main(["check", path]) == 0
    after = capsys.readouterr().out
    assert f"0 of {traces} traces to capture (the others are in the trace cache)" in after, after
    assert _estimate_s(after) < _estimate_s(before)


def _estimate_s(out: str) -> float:
    return float(out.split("estimated run time: about ")[1].split(" s")[0])


def _captured(cache: Path) -> list[Path]:
    """The trace files a run wrote into the trace cache under `cache` (its LLM_CODESIGN_CACHE), one a trace captured
    (workloads/trace_cache.py trace_path)."""
    return [path for path in (cache / "traces").rglob("*") if path.is_file()]


def _price_layers(monkeypatch, layer_s: float) -> None:
    """Prices capturing a trace at `layer_s` a decoder layer each pass dispatches and nothing else (no torch start, no
    part a trace, no experts, no layer copied from another: workloads/layer_replication.py), the run's fixed part
    free."""
    from explore import commands

    for name, value in (("RUN_FIXED_S", 0.0), ("TORCH_START_S", 0.0), ("TRACE_S", 0.0),
                        ("TRACE_S_PER_EXPERT_BUILT", 0.0), ("TRACE_S_PER_EXPERT_COPIED", 0.0), ("OPS_PER_LAYER", 1),
                        ("OPS_PER_EXPERT", 0),
                        ("TRACE_S_PER_OP", layer_s), ("TRACE_S_PER_OP_COPIED", 0.0)):
        monkeypatch.setattr(commands, name, value)


def test_check_leaves_out_the_points_a_sweep_records_as_not_run(tmp_path, capsys):
    """Two rates by a rejecting and a queueing gateway beside a slowdown SLO: the two rejecting points are recorded
    not run (ServingSpec.unjudged), so 2 of the 4 are evaluated and the estimate is the two queueing points' alone."""
    model = write_tiny_model(tmp_path)

    def check(actions: str) -> str:
        path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\nserving:\n  rate: [10, 20]\n"
                                     f"  requests: 5000\n  prompt: 32\n  output: 4\n  busy_waiting_requests: 4\n"
                                     f"  busy_action: {actions}\n  slo: {{slowdown: {{tbt: {{p50: 1.25}}}}}}\n")
        assert main(["check", path]) == 0
        return capsys.readouterr().out

    crossed, queued = check("[reject, queue]"), check("queue")
    assert "4 design points (2 distinct designs evaluated)" in crossed, crossed
    assert "2 design points (all evaluated)" in queued, queued
    assert _estimate_s(crossed) == _estimate_s(queued)


def test_the_estimate_draws_the_report_s_figures(tmp_path, capsys):
    """The estimate includes drawing the report, figure by figure: a static report of two batches draws 5 figures of its
    own (the roofline, latency and energy breakdowns, energy and batch figures; not those against tensor-parallel
    devices or weight bits, the decode-time or the what-if figures, which nothing here calls for); three objectives add
    a Pareto figure per pair and a sensitivity figure each, 3 + 3 by hand, and one objective a ranking and a
    sensitivity figure: more figures, a longer estimate, the points alike."""
    model = write_tiny_model(tmp_path)

    def check(objectives: str) -> str:
        path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\n"
                                     f"workload: {{batch: [1, 2], prompt: 16, output: 2}}\n{objectives}")
        assert main(["check", path]) == 0
        return capsys.readouterr().out

    none, one = check(""), check("objectives: {minimize: [tpot_s]}\n")
    three = check("objectives: {minimize: [tpot_s, energy_per_token_J], maximize: [tokens_per_s]}\n")
    assert "(up to 5 figures)" in none and "(up to 7 figures)" in one and "(up to 11 figures)" in three, three
    assert _estimate_s(none) < _estimate_s(three)


def test_the_estimate_prepares_each_model_batch_prompt_and_format_once(tmp_path, capsys, monkeypatch):
    """A static point's tables are prepared once per (model, batch, prompt, format), by its first point: 42 points of
    7 weight widths x 3 KV widths x 2 sparsities on one batch are 42 combinations by hand; 42 memory bandwidths of one
    format are 1. At 1 s a combination the first estimate is 41 s longer (the points' own costs differ by 42 x 0.9 ms,
    a block's against one alone; the traces to capture, a prefill and a decode, are the same two)."""
    from explore import commands

    monkeypatch.setattr(commands, "PREPARE_S_PER_COMBINATION", 1.0)
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: the same two traces in both
    model = write_tiny_model(tmp_path)

    def check(rest: str) -> float:
        path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\nexecution: engine\n"
                                     f"workload: {{batch: 1, prompt: 16, output: 2}}\n{rest}")
        assert main(["check", path]) == 0
        out = capsys.readouterr().out
        assert "42 design points (all evaluated), up to 2 traces to capture" in out, out
        return _estimate_s(out)

    formats = check("format: {weight_bits: [16, 8, 6, 5, 4, 3, 2], kv_bits: [16, 8, 4], sparsity: [dense, '2:4']}\n")
    bandwidths = check("overrides: {device.memory.bandwidth_GBps: {range: [1000, 5100], steps: 42}}\n")
    assert 40 <= formats - bandwidths <= 42, (formats, bandwidths)  # each printed to the second


def _report_s(out: str) -> float:
    return float(out.split("about ")[2].split(" s of it drawing")[0])


def test_the_report_part_grows_with_the_points_drawn(tmp_path, capsys, monkeypatch):
    """Drawing the report costs a constant a figure and a term a point: 2 and 42 memory bandwidths draw the same 6
    figures (no objectives: a static report's 5 and the what-if figure), and at 0.1 s a point the 42-point report part
    is 40 x 0.1 = 4 s longer; at 1 s a figure and 1 s a point the 2-point one is 6 + 2 = 8 s by hand."""
    from explore import commands

    model = write_tiny_model(tmp_path)

    def check(steps: int) -> float:
        path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\nexecution: engine\n"
                                     f"workload: {{batch: 1, prompt: 16, output: 2}}\n"
                                     f"overrides: {{device.memory.bandwidth_GBps: {{range: [1000, 5100], steps: "
                                     f"{steps}}}}}\n")
        assert main(["check", path]) == 0
        out = capsys.readouterr().out
        assert f"{steps} design points (all evaluated)" in out and "(up to 6 figures)" in out, out
        return _report_s(out)

    monkeypatch.setattr(commands, "REPORT_S_PER_POINT", 0.1)
    assert check(42) - check(2) == 4
    monkeypatch.setattr(commands, "REPORT_S_PER_FIGURE", 1.0)
    monkeypatch.setattr(commands, "REPORT_S_PER_POINT", 1.0)
    assert check(2) == 8


def test_a_serving_report_re_runs_no_more_points_than_the_sweep_evaluates(tmp_path, capsys, monkeypatch):
    """A serving report re-runs at most MAX_DETAIL (6) chosen points for its per-request figures, and never more than
    the sweep has: 2 rates re-run 2 points. With the per-figure and per-point terms at 0 and 1 ms a request, 1,000
    requests a point, the report part is 2 x 1 s by hand (it was 6 x 1 s)."""
    from explore import commands

    monkeypatch.setattr(commands, "REPORT_S_PER_FIGURE", 0.0)
    monkeypatch.setattr(commands, "REPORT_S_PER_POINT", 0.0)
    monkeypatch.setattr(commands, "SERVING_S_PER_POINT", 0.0)
    monkeypatch.setattr(commands, "SERVING_S_PER_REQUEST", 0.001)
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\nserving:\n  rate: [10, 20]\n"
                                 f"  requests: 1000\n  prompt: 32\n  output: 4\n")
    assert main(["check", path]) == 0
    out = capsys.readouterr().out
    assert "2 design points (all evaluated)" in out, out
    assert _report_s(out) == 2, out


def test_a_serving_point_costs_a_part_of_its_own_and_a_part_a_request(tmp_path, capsys, monkeypatch):
    """A serving point's run is a fixed part and a part a request: at 1 s a point (no more than 1 ms an iteration of
    its 1,000 prompts and 4,000 output tokens, 5 s) and 1 ms a request, tracing and the report's figures free, 2 rates
    of 1,000 requests each take 2 x (1 + 1) s to run and as long again to re-run for the report: 8 s by hand, 4 of
    them the report's."""
    from explore import commands

    _price_layers(monkeypatch, 0.0)
    for name, value in (("REPORT_S_PER_FIGURE", 0.0), ("REPORT_S_PER_POINT", 0.0), ("SERVING_S_PER_POINT", 1.0),
                        ("SERVING_S_PER_REQUEST", 0.001), ("SERVING_S_PER_ITERATION", 0.001)):
        monkeypatch.setattr(commands, name, value)
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\nserving:\n  rate: [10, 20]\n"
                                 f"  requests: 1000\n  prompt: 32\n  output: 4\n")
    assert main(["check", path]) == 0
    out = capsys.readouterr().out
    assert (_estimate_s(out), _report_s(out)) == (8, 4), out


def _tiny_served_estimate_s(tmp_path, capsys, monkeypatch, costs: dict, serving: str, lines: str = "") -> float:
    """explore check's estimate of the tiny model served on an H100 (`serving` its serving: mapping, `lines` more of
    the sweep), at `costs` (explore/commands.py's constants by name), tracing, preparing and the report's figures
    free."""
    from explore import commands

    _price_layers(monkeypatch, 0.0)
    free = {"REPORT_S_PER_FIGURE": 0.0, "REPORT_S_PER_POINT": 0.0, "PREPARE_S_PER_OP": 0.0}
    for name, value in (free | costs).items():
        monkeypatch.setattr(commands, name, value, raising=False)
    path = write_sweep(tmp_path, f"name: est\nmodel: {write_tiny_model(tmp_path)}\ndevice: h100-sxm\n{lines}"
                                 f"serving: {serving}\n")
    assert main(["check", path]) == 0
    return _estimate_s(capsys.readouterr().out)


def test_a_short_serving_point_costs_no_more_than_its_requests_served_one_at_a_time(tmp_path, capsys, monkeypatch):
    """A serving point runs at most an iteration a prompt and one an output token: at 1 s a point, 10 ms an iteration
    and nothing a request, 10 requests of 4 output tokens take at most 10 x (1 + 4) x 10 ms = 0.5 s, run and re-run
    for the report: 1 s by hand; 1,000 such requests (50 s alone) the whole 1 s a point: 2 s. Before, every point
    took its 1 s (a tiny model's 10 requests, measured 2-3 ms, were estimated 0.66 s: explore/commands.py)."""
    costs = {"SERVING_S_PER_POINT": 1.0, "SERVING_S_PER_REQUEST": 0.0, "SERVING_S_PER_ITERATION": 0.01}
    assert [_tiny_served_estimate_s(tmp_path, capsys, monkeypatch, costs,
                                    f"{{rate: 10, requests: {requests}, prompt: 32, output: 4}}")
            for requests in (10, 1000)] == [1, 2]


def test_a_chunked_serving_point_costs_a_part_a_prefill_chunk(tmp_path, capsys, monkeypatch):
    """A chunked scheduler prefills its prompts over about prompt tokens / chunk_tokens iterations, each priced: at 1 s
    such an iteration and nothing else, 10 prompts of 32 tokens in chunks of 16 take 320 / 16 = 20 s a point, run and
    re-run for the report: 40 s by hand; in chunks of 8, 80 s; served continuous, none; a sweep of both schedulers, 10
    prompts of 1,024 tokens (chunks of 512 by default), 2 points of 10 s on average, and as long again re-run: 40 s.
    Before, a point's cost did not grow with its prompts (explore/commands.py: chunked sweeps of long prompts were
    estimated at 0.47x of their run)."""
    costs = {"SERVING_S_PER_POINT": 0.0, "SERVING_S_PER_REQUEST": 0.0, "SERVING_S_PER_CHUNK": 1.0}
    served = "{rate: 10, requests: 10, output: 4, max_seqs: 8, "
    assert [_tiny_served_estimate_s(tmp_path, capsys, monkeypatch, costs, served + rest)
            for rest in ("prompt: 32, scheduler: chunked, chunk_tokens: 16}", "prompt: 32, scheduler: chunked, "
                         "chunk_tokens: 8}", "prompt: 32, scheduler: continuous}",
                         "prompt: 1024, scheduler: [continuous, chunked]}")] == [40, 80, 0, 40]


def test_a_serving_sweep_lowers_its_templates_again_for_each_other_format(tmp_path, capsys, monkeypatch):
    """A serving point's step template in another format re-lowers its traces (explore/evaluate.py Evaluator.template,
    keyed by the format): the tiny model's template traces 4 passes of its 2 layers, 8 ops at 1 op a layer; at 0.25 s
    an op lowered again, every other cost free, 3 weight formats take (3 - 1) x 8 x 0.25 = 4 s by hand, one format
    nothing (it was not counted: 0 s either way)."""
    costs = {"SERVING_S_PER_POINT": 0.0, "SERVING_S_PER_REQUEST": 0.0, "TEMPLATE_S_PER_OP": 0.25}
    assert [_tiny_served_estimate_s(tmp_path, capsys, monkeypatch, costs, "{rate: 10, requests: 20, prompt: 32, "
                                    "output: 4}", f"format: {{weight_bits: {bits}}}\n")
            for bits in ("16", "[16, 8, 4]")] == [0, 4]


def test_a_serving_sweep_traces_each_template_s_first_layers_whatever_the_model_s_depth(tmp_path, capsys, monkeypatch):
    """A serving point's step template traces the model's first 2 layers four times (kernels/shapes.py, explore/
    evaluate.py Evaluator.template), each a prefill or a decode: at 1 s a layer of a prefill and decode pair, every
    other cost free, Llama-2-70B's 80 layers take 4 x 2 x 1 / 2 = 4 s by hand, not 4 x 80 s; DeepSeek-V2-Lite builds
    four templates (a dense first layer beside MoE ones, each in MLA's two forms: kernels/mixed_layers.py), 16 traces
    and 16 s."""
    from explore import commands

    _price_layers(monkeypatch, 0.5)
    for name, value in (("REPORT_S_PER_FIGURE", 0.0), ("REPORT_S_PER_POINT", 0.0), ("SERVING_S_PER_POINT", 0.0),
                        ("SERVING_S_PER_REQUEST", 0.0)):
        monkeypatch.setattr(commands, name, value)
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: nothing traced yet

    said = {}
    for model in ("llama-2-70b", "deepseek-v2-lite"):
        serving = "serving: {rate: 10, requests: 100, prompt: 32, output: 4}"
        assert main(["check", write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h200\n{serving}\n")]) == 0
        said[model] = capsys.readouterr().out
    dense, latent = said["llama-2-70b"], said["deepseek-v2-lite"]
    assert "up to 4 traces to capture" in dense and _estimate_s(dense) == 4, dense
    assert "up to 16 traces to capture" in latent and _estimate_s(latent) == 16, latent


def test_a_speculative_sweep_counts_its_drafts_traces_as_the_run_takes_them(tmp_path, capsys, monkeypatch):
    """A speculative point traces more than its model (explore/evaluate.py speculative_tables): the target's
    verification of k + 1 tokens a sequence, the draft's prefill and decode and, for an MTP module, its first step over
    the verified tokens. The tiny DeepSeek with its MTP module (tests/workloads/test_mtp.py; 2 layers, the module 1),
    batches 1 and 2, spec_draft '' and mtp, k 1 and 3, from an empty cache: 2 model traces (a prefill and decode of 2
    layers, 2 s at 1 s a layer of a pair), 4 verifications (one pass of 2 layers, 1 s), 2 module traces (1 s) and 4
    first steps (0.5 s): 2 x 2 + 4 + 2 x 2 + 4 = 16 traces (a pass each, as the run captures them; it said 12, the
    (model, batch, prompt) groups), 12 s by hand. Served,
    the module's step templates add 4 traces of each of its MLA forms, 8 of one layer at 0.5 s, to the model's 16 of
    two layers at 1 s (a dense first layer beside MoE ones, each in both forms): 24 traces, 20 s; a draft model's
    (the tiny Llama) its 4 of two layers, 2 x 4 traces, 8 s. A static draft model (k = 2) beside its 4-layer target,
    whose passes dispatch its first and last layers (the middle two copied, free here): the target's prefill and
    decode (2 s), its verification (1 s), the draft's prefill and decode (2 s) and its first step over the 3 verified
    tokens and the sampled one (1 s), the draft's prefill over the prompt and its slot, 17 tokens, run as 24 (a
    captured size: one prompt of 24, 1 s) and the draft's step template its rows outside the layers come from (4, 1 s
    each; its prefill of one 16-token prompt is also the pass the draft's memory reads its weights from, which check
    did not count): 2 + 1 + 2 + 1 + 1 + 4 = 11 traces (it said 6, the run took 7 before the prefill padded), 11 s (9 s
    for the first 6 when every layer was dispatched)."""
    import json

    from explore import commands
    from tests.explore.tiny_sweep import TINY_CONFIG
    from tests.workloads.test_mtp import TINY_MTP

    _price_layers(monkeypatch, 0.5)
    for name, value in (("POINT_S", 0.0), ("BLOCK_POINT_S", 0.0), ("PREPARE_S_PER_OP", 0.0),
                        ("PREPARE_S_PER_COMBINATION", 0.0), ("REPORT_S_PER_FIGURE", 0.0), ("REPORT_S_PER_POINT", 0.0),
                        ("SERVING_S_PER_POINT", 0.0), ("SERVING_S_PER_REQUEST", 0.0)):
        monkeypatch.setattr(commands, name, value)
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: nothing traced yet
    models = {}
    for name, config in (("mtp", TINY_MTP), ("big", TINY_CONFIG | {"num_hidden_layers": 4}), ("small", TINY_CONFIG)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        models[name] = str(tmp_path / name / "config.json")

    def check(text: str) -> str:
        assert main(["check", write_sweep(tmp_path, f"name: est\ndevice: h100-sxm\nexecution: engine\n{text}")]) == 0
        return capsys.readouterr().out

    static = check(f"model: {models['mtp']}\nworkload: {{batch: [1, 2], prompt: 16, output: 4, spec_draft: ['', mtp], "
                   f"spec_tokens: [1, 3], acceptance: 0.8}}\n")
    assert "up to 16 traces to capture" in static and _estimate_s(static) == 12, static
    serving = "serving: {rate: 10, requests: 20, prompt: 32, output: 4}\n"
    served = check(f"model: {models['mtp']}\nworkload: {{spec_draft: mtp, spec_tokens: 2, acceptance: 0.8}}\n{serving}")
    assert "up to 24 traces to capture" in served and _estimate_s(served) == 20, served
    drafted = check(f"model: {models['big']}\nworkload: {{spec_draft: {models['small']}, spec_tokens: 2, "
                    f"acceptance: 0.8}}\n{serving}")
    assert "up to 8 traces to capture" in drafted and _estimate_s(drafted) == 8, drafted
    static_drafted = check(f"model: {models['big']}\nworkload: {{batch: 1, prompt: 16, output: 4, spec_draft: "
                           f"{models['small']}, spec_tokens: 2, acceptance: 0.8}}\n")
    assert "up to 11 traces to capture" in static_drafted and _estimate_s(static_drafted) == 11, static_drafted


def test_the_estimate_of_a_long_serving_sweep_is_near_its_measured_run(capsys):
    """examples/sla-planner.yaml (4 points of 60,000 requests, each run again for the report) ran in 80 s of CPU time
    on one worker of a 2-core machine (/usr/bin/time explore examples/sla-planner.yaml --workers 1: 75.7 s user, 4.7 s
    sys); the estimate, a hint, is within a factor of 2 of it (it said 490 s, 1 ms a request)."""
    assert main(["check", str(Path(__file__).resolve().parents[2] / "examples" / "sla-planner.yaml")]) == 0
    estimate_s = _estimate_s(capsys.readouterr().out)
    assert 80 / 2 <= estimate_s <= 80 * 2, estimate_s


TINY_MOE = {"model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}  # with TINY_CONFIG's shapes


def test_the_estimate_prices_a_trace_by_its_ops_and_the_experts_it_builds(tmp_path, capsys, monkeypatch):
    """Capturing a trace costs a part a trace, a part an op dispatched, a part an expert built and a part an expert
    whose ops are copied, and a run that captures any starts torch once. An MoE layer runs one expert of each row count
    and copies the others (workloads/decoder.py MoE). The tiny Mixtral (2 layers, 4 experts, 2 a token) at batch 1 and
    prompt 16 from an empty cache, at 100 ops a layer and 10 an expert it runs: its prefill routes 16 x 2 rows, 8 to
    each of the 4 experts (one row count): 2 x 100 + 2 x 1 x 10 = 220 ops, 2 x 3 experts copied, 2 x 4 built; its
    decode step 2 rows, 1 to each of 2 experts: 220 ops, 2 x 1 copied, 2 x 2 built (workloads/decoder.py MoE
    max_tokens). At 1 s an op, an expert built and a trace, 0.5 s an expert copied and 10 s to start: 10 + (1 + 220 +
    8 + 3) + (1 + 220 + 4 + 1) = 468 s by hand (it said 0.1 s, 0.05 s a layer whatever its experts; 544 s when every
    expert ran). Served, its step template's four passes (kernels/shapes.py: 2 and 4 sequences of 16 tokens, decode
    and prefill, balanced): 4, 8, 64 and 128 rows, one row count each, all 4 experts reached: 10 + 4 x (1 + 220 + 8 +
    3) = 938 s."""
    import json

    from explore import commands
    from tests.explore.tiny_sweep import TINY_CONFIG

    for name, value in (("TORCH_START_S", 10.0), ("TRACE_S", 1.0), ("TRACE_S_PER_OP", 1.0),
                        ("TRACE_S_PER_EXPERT_BUILT", 1.0), ("TRACE_S_PER_EXPERT_COPIED", 0.5), ("OPS_PER_LAYER", 100),
                        ("OPS_PER_EXPERT", 10),
                        ("RUN_FIXED_S", 0.0), ("POINT_S", 0.0), ("PREPARE_S_PER_OP", 0.0),
                        ("PREPARE_S_PER_COMBINATION", 0.0), ("REPORT_S_PER_FIGURE", 0.0), ("REPORT_S_PER_POINT", 0.0),
                        ("SERVING_S_PER_POINT", 0.0), ("SERVING_S_PER_REQUEST", 0.0)):
        monkeypatch.setattr(commands, name, value)
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: nothing traced yet
    model = tmp_path / "moe" / "config.json"
    model.parent.mkdir()
    model.write_text(json.dumps(TINY_CONFIG | TINY_MOE))

    def check(rest: str) -> str:
        assert main(["check", write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\n{rest}")]) == 0
        return capsys.readouterr().out

    static = check("workload: {batch: 1, prompt: 16, output: 2}\n")
    assert "up to 2 traces to capture" in static and _estimate_s(static) == 468, static
    served = check("serving: {rate: 10, requests: 20, prompt: 32, output: 4}\n")
    assert "up to 4 traces to capture" in served and _estimate_s(served) == 938, served


def test_the_estimate_prices_the_layers_a_trace_copies_apart(tmp_path, capsys, monkeypatch):
    """A fake trace dispatches the ops of its model's first layer and last (the tiny Mixtral's layers are all of one
    kind; workloads/layer_replication.py) and copies the others'. The tiny Mixtral at 5 layers, batch 1, prompt 16,
    at 100 ops a layer and 10 an expert that gets tokens, 1 s an op dispatched, an expert built and a trace, 0.1 s an
    op copied and 10 s to start (an expert copied free): its prefill reaches all 4 experts, 8 rows each, and runs one
    (workloads/decoder.py MoE), 2 x (100 + 10) = 220 ops dispatched, 3 x (100 + 4 x 10) = 420 copied with the layers,
    2 x 4 experts built, 1 + 220 + 42 + 8 = 271 s; its decode step 2 experts, a row each, 2 x 110 = 220 dispatched,
    3 x 120 = 360 copied, 2 x 2 built, 1 + 220 + 36 + 4 = 261 s; 10 + 271 + 261 = 542 s by hand (622 s when every
    expert ran, 1,342 s when every layer was dispatched and built its experts)."""
    _only(monkeypatch, TORCH_START_S=10.0, TRACE_S=1.0, TRACE_S_PER_OP=1.0, TRACE_S_PER_OP_COPIED=0.1,
          TRACE_S_PER_EXPERT_BUILT=1.0)
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: nothing traced yet
    out = _check_five_layer_moe(tmp_path, capsys, monkeypatch)
    assert "up to 2 traces to capture" in out and _estimate_s(out) == 542, out


def _check_five_layer_moe(tmp_path, capsys, monkeypatch) -> str:
    """`explore check`'s output for the tiny Mixtral at 5 layers, batch 1, prompt 16, at 100 ops a layer and 10 an
    expert that gets tokens."""
    from explore import commands

    monkeypatch.setattr(commands, "OPS_PER_LAYER", 100)
    monkeypatch.setattr(commands, "OPS_PER_EXPERT", 10)
    return _check_tiny_moe(tmp_path, capsys, {"num_hidden_layers": 5}, "batch: 1, prompt: 16, output: 2")


def _check_tiny_moe(tmp_path, capsys, config: dict, workload: str) -> str:
    """`explore check`'s output for a sweep of one point: the tiny Mixtral with `config`'s fields over its own, on an
    H100, with the `workload` section's settings."""
    import json

    from tests.explore.tiny_sweep import TINY_CONFIG

    model = tmp_path / "moe" / "config.json"
    model.parent.mkdir()
    model.write_text(json.dumps(TINY_CONFIG | TINY_MOE | config))
    path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\nworkload: {{{workload}}}\n")
    assert main(["check", path]) == 0
    return capsys.readouterr().out


def test_a_uniform_point_s_traces_build_the_experts_its_routing_reaches(tmp_path, capsys, monkeypatch):
    """A static point traces its model routed by its moe_routing, a trace of its own, and the estimate builds the
    experts that routing reaches. The tiny Mixtral (2 layers, 4 experts, 2 a token) at batch 2, prompt 16, priced as
    above (1 s an op, an expert built and a trace, 10 s to start, 100 ops a layer, 10 an expert it runs, an expert
    copied free; an MoE layer runs one expert of each row count, workloads/decoder.py MoE): its prefill routes 32
    tokens x 2 rows, all 4 experts either way (uniform: 4 (1 - (1 - 2/4)^32) = 4.0), 16 rows each, 1 + 220 + 8 = 229 s;
    its decode step 2 tokens, balanced 4 experts (4 rows, one each), 1 + 220 + 8 = 229 s, uniform 4 (1 - (1/2)^2) = 3
    experts (4 rows: 2, 1, 1, two row counts), 1 + (200 + 2 x 2 x 10) + 2 x 3 = 247 s. Balanced 10 + 229 + 229 = 468 s,
    uniform 10 + 229 + 247 = 486 s, both routings 4 traces, 10 + 458 + 476 = 944 s (it priced uniform as balanced and
    crossed 2 traces)."""
    import json

    from explore import commands
    from tests.explore.tiny_sweep import TINY_CONFIG

    _only(monkeypatch, TORCH_START_S=10.0, TRACE_S=1.0, TRACE_S_PER_OP=1.0, TRACE_S_PER_EXPERT_BUILT=1.0)
    monkeypatch.setattr(commands, "OPS_PER_LAYER", 100)
    monkeypatch.setattr(commands, "OPS_PER_EXPERT", 10)
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: nothing traced yet
    model = tmp_path / "moe" / "config.json"
    model.parent.mkdir()
    model.write_text(json.dumps(TINY_CONFIG | TINY_MOE))

    def check(routing: str) -> str:
        path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\nworkload: {{batch: 2, prompt: 16, "
                                     f"output: 2, moe_routing: {routing}}}\n")
        assert main(["check", path]) == 0
        return capsys.readouterr().out

    balanced, uniform, both = check("balanced"), check("uniform"), check("[balanced, uniform]")
    assert "up to 2 traces to capture" in balanced and _estimate_s(balanced) == 468, balanced
    assert "up to 2 traces to capture" in uniform and _estimate_s(uniform) == 486, uniform
    assert "up to 4 traces to capture" in both and _estimate_s(both) == 944, both


def test_a_power_law_point_s_traces_build_through_the_last_expert_reached_and_copy_the_reached(
        tmp_path, capsys, monkeypatch):
    """A power-law layer's loads are laid out so that every ep-th expert is the busiest device's share
    (workloads/expert_skew.py), so the experts it reaches are not the first ones: a trace builds the experts through
    the last reached one and copies the ops of the reached ones it does not run. A tiny Mixtral of 2 layers, 16
    experts, 2 a token, at batch 2, prompt 16, output 2, priced at 1 s an expert built and 1 s an expert copied alone:
    its decode step of 2 tokens routes rows 1, 1, 1 and 1 to experts 0, 1, 2 and 8 (power_law_expert_load(2, 2, 16)):
    9 built, 4 reached, one row count run, 3 copied, 2 x (9 + 3) = 24 s; its prefill of 32 tokens reaches all 16 (12,
    4 and 3 rows: three row counts), 2 x (16 + 13) = 58 s; 82 s in all (92 s counting the 5 built but unreached
    experts as copied)."""
    from workloads.expert_skew import power_law_expert_load

    assert power_law_expert_load(2, 2, 16) == [1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert sorted(set(power_law_expert_load(32, 2, 16))) == [3, 4, 12]
    _only(monkeypatch, TRACE_S_PER_EXPERT_BUILT=1.0, TRACE_S_PER_EXPERT_COPIED=1.0)
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: nothing traced yet
    out = _check_tiny_moe(tmp_path, capsys, {"num_local_experts": 16},
                          "batch: 2, prompt: 16, output: 2, moe_routing: power_law")
    assert _estimate_s(out) == 82, out


def test_check_finds_a_uniform_point_s_traces_in_the_cache_once_captured(tmp_path, monkeypatch, capsys):
    """A uniform point's traces are its routed model's (the trace cache key holds moe_routing): a run captures its two,
    and check then finds both there (it looked for the balanced model's and counted them to capture again)."""
    import json

    from tests.explore.tiny_sweep import TINY_CONFIG

    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: nothing traced yet
    model = tmp_path / "moe" / "config.json"
    model.parent.mkdir()
    model.write_text(json.dumps(TINY_CONFIG | TINY_MOE))
    path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\n"
                                 f"workload: {{batch: 2, prompt: 16, output: 2, moe_routing: uniform}}\n")
    run_sweep(load_sweep(path), tmp_path / "out")
    assert len(_captured(tmp_path / "cache")) == 2
    assert main(["check", path]) == 0
    out = capsys.readouterr().out
    assert "0 of 2 traces to capture (the others are in the trace cache)" in out, out


def test_an_expert_that_gets_tokens_records_the_ops_the_estimate_counts(tmp_path):
    """OPS_PER_EXPERT is counted by hand from workloads/decoder.py RoutedExpert (16 ops); a trace of the tiny Mixtral's
    prefill, every one of its 2 x 4 experts reached, records 8 x 16 ops inside its experts."""
    from explore.commands import OPS_PER_EXPERT
    from tests.explore.tiny_sweep import TINY_CONFIG
    from workloads.capture import trace_model
    from workloads.model_config import config_from_hf

    trace = trace_model(config_from_hf(TINY_CONFIG | TINY_MOE, name="tiny-moe"), phase="prefill", batch=1, seq_len=16)
    assert OPS_PER_EXPERT == 16
    assert sum(".experts." in op.module for op in trace.ops) == 2 * 4 * OPS_PER_EXPERT


def _only(monkeypatch, **costs: float) -> None:
    """Prices every part of the estimate at 0 but `costs` (explore/commands.py's constants by name)."""
    from explore import commands

    for name in ("RUN_FIXED_S", "TORCH_START_S", "TRACE_S", "TRACE_S_PER_OP", "TRACE_S_PER_OP_COPIED", "POINT_S",
                 "TRACE_S_PER_EXPERT_BUILT", "TRACE_S_PER_EXPERT_COPIED", "BLOCK_POINT_S", "PREPARE_S_PER_OP",
                 "PREPARE_S_PER_OP_COPIED", "PREPARE_S_PER_COMBINATION", "REPORT_S_PER_FIGURE", "REPORT_S_PER_POINT",
                 "SERVING_S_PER_POINT", "SERVING_S_PER_REQUEST"):
        monkeypatch.setattr(commands, name, costs.get(name, 0.0))


def test_preparing_tables_costs_a_part_an_op_of_each_trace_and_a_part_a_combination(tmp_path, capsys, monkeypatch):
    """Preparing a static point's tables lowers each of its traces once, whatever the formats, at a cost an op, and
    applies each format at a fixed cost. The tiny Mixtral at 100 ops a layer and 10 an expert that gets tokens (as in
    the trace test above): batch 1, prompt 16, a prefill of 280 ops and a decode step of 240; at 1 s an op and 10 s a
    combination, 520 + 10 = 530 s by hand; two weight widths lower the same trace, 520 + 2 x 10 = 540 s; batches 1 and
    2 lower two (batch 2's decode step routes 2 x 2 tokens, all 4 experts: 280 ops), 520 + 560 + 2 x 10 = 1,100 s. It
    was 35 ms a combination whatever the model."""
    import json

    from explore import commands
    from tests.explore.tiny_sweep import TINY_CONFIG

    _only(monkeypatch, PREPARE_S_PER_OP=1.0, PREPARE_S_PER_COMBINATION=10.0)
    monkeypatch.setattr(commands, "OPS_PER_LAYER", 100)
    monkeypatch.setattr(commands, "OPS_PER_EXPERT", 10)
    model = tmp_path / "moe" / "config.json"
    model.parent.mkdir()
    model.write_text(json.dumps(TINY_CONFIG | TINY_MOE))

    def check(rest: str) -> float:
        assert main(["check", write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\n{rest}")]) == 0
        return _estimate_s(capsys.readouterr().out)

    assert check("workload: {batch: 1, prompt: 16, output: 2}\n") == 530
    assert check("workload: {batch: 1, prompt: 16, output: 2}\nformat: {weight_bits: [16, 4]}\n") == 540
    assert check("workload: {batch: [1, 2], prompt: 16, output: 2}\n") == 1100


def test_preparing_a_layer_copied_from_a_traced_one_costs_its_own_part(tmp_path, capsys, monkeypatch):
    """A fake trace's layers copied from a traced one have their kernels copied, not lowered (kernels/layer_kernels.py):
    a part an op of their own. The tiny Mixtral at 5 layers (the first and last traced, the middle 3 copied), batch 1,
    prompt 16, 100 ops a layer and 10 an expert that gets tokens: its prefill reaches all 4 experts, 2 x 140 = 280 ops
    traced and 3 x 140 = 420 copied; its decode step 2 experts, 2 x 120 = 240 and 3 x 120 = 360. At 1 s an op traced,
    0.1 s an op copied and 10 s a combination: 280 + 42 + 240 + 36 + 10 = 608 s by hand (1,310 s with every op at the
    traced rate)."""
    _only(monkeypatch, PREPARE_S_PER_OP=1.0, PREPARE_S_PER_OP_COPIED=0.1, PREPARE_S_PER_COMBINATION=10.0)
    assert _estimate_s(_check_five_layer_moe(tmp_path, capsys, monkeypatch)) == 608


OBJECTIVES = "objectives: {minimize: [tpot_s, energy_per_token_J], maximize: [tokens_per_s]}\n"


@pytest.mark.parametrize("rest, figures", [
    # One point: the static report's 5 figures; 3 objectives add their 3 Pareto figures, and no sensitivity figure
    # (no knob varies).
    ("workload: {batch: 1, prompt: 16, output: 2}\n", 5),
    ("workload: {batch: 1, prompt: 16, output: 2}\n" + OBJECTIVES, 8),
    # Two weight widths on 2 tensor-parallel devices and 1: the figures against weight bits and against devices, and
    # the 3 sensitivity figures.
    ("workload: {batch: 1, prompt: 16, output: 2}\nformat: {weight_bits: [16, 4]}\nparallel: {tp: [1, 2]}\n"
     + OBJECTIVES, 13),
    # One served rate: latency, goodput and energy against the rate, latency distributions and the timeline; a
    # slowdown SLO and a capacity search add their figures.
    ("serving: {rate: 10, requests: 20, prompt: 32, output: 4}\n", 5),
    ("serving: {requests: 20, prompt: 32, output: 4, capacity: [1, 20], slo: {slowdown: {tbt: {p50: 2}}}}\n",
     7),
])
def test_the_estimate_counts_the_figures_the_report_draws(tmp_path, capsys, rest, figures):
    """explore check counts the figures a sweep's report draws (explore/report.py figures_drawn), not the most any
    report draws (9 static, 8 served, and 6 of 3 objectives): counted by hand from the report's modules."""
    model = write_tiny_model(tmp_path)
    assert main(["check", write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\n{rest}")]) == 0
    out = capsys.readouterr().out
    assert f"(up to {figures} figures)" in out, out


def test_the_report_draws_the_figures_check_counts(tmp_path, capsys):
    """The tiny model's one-point sweep with 3 objectives: its report writes as many figures as check counts (8: 3
    Pareto figures and the static report's 5)."""
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\n"
                                 f"workload: {{batch: 1, prompt: 16, output: 2}}\n{OBJECTIVES}")
    assert main(["check", path]) == 0
    assert "(up to 8 figures)" in capsys.readouterr().out
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert len(list((tmp_path / "out" / "figures").glob("*.png"))) == 8


def test_each_worker_that_captures_starts_torch(tmp_path, capsys, monkeypatch):
    """Each worker process that captures a trace starts torch (the pool's workers do not inherit it). Three batches of
    the tiny model from an empty cache, at 10 s to start torch and 1 s a pass captured (a prefill and a decode a
    batch): 10 + 6 = 16 s on one worker, 2 x 10 + 6 = 26 s on two, 3 x 10 + 6 = 36 s on four (capped, as the run caps
    them, at the 3 points). Served at two rates, each worker builds the step template of the points it runs, capturing
    its 4 traces itself: 10 + 4 = 14 s on one worker, 2 x 14 = 28 s on two."""
    from explore import runner

    _only(monkeypatch, TORCH_START_S=10.0, TRACE_S=1.0)
    monkeypatch.setattr(runner, "usable_cores", lambda: 8)  # the cap is the points, not this machine's cores
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: nothing traced yet
    model = write_tiny_model(tmp_path)

    def check(rest: str, workers: int) -> str:
        path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\n{rest}")
        assert main(["check", path, "--workers", str(workers)]) == 0
        return capsys.readouterr().out

    static = "workload: {batch: [1, 2, 3], prompt: 16, output: 2}\n"
    assert [_estimate_s(check(static, workers)) for workers in (1, 2, 4)] == [16, 26, 36]
    assert "about 26 s of CPU time on 2 workers" in check(static, 2)
    served = "serving: {rate: [10, 20], requests: 20, prompt: 32, output: 4}\n"
    assert [_estimate_s(check(served, workers)) for workers in (1, 2)] == [14, 28]


def test_a_run_s_fixed_part_is_counted_once_a_run(tmp_path, capsys, monkeypatch):
    """A run's fixed part (its start: Python and the modules `explore SWEEP` imports; its report's) is paid once, by
    the process the user starts: the pool's workers fork from it, its imports done. At 10 s a run and every other part
    free, one point, three batches on one worker and on two, and two served rates are 10 s each (it was not counted:
    0 s)."""
    from explore import runner

    _only(monkeypatch, RUN_FIXED_S=10.0)
    monkeypatch.setattr(runner, "usable_cores", lambda: 8)  # the cap is the points, not this machine's cores
    model = write_tiny_model(tmp_path)

    def estimate_s(rest: str, workers: int) -> float:
        path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\n{rest}")
        assert main(["check", path, "--workers", str(workers)]) == 0
        return _estimate_s(capsys.readouterr().out)

    assert estimate_s("workload: {batch: 1, prompt: 16, output: 2}\n", 1) == 10
    assert [estimate_s("workload: {batch: [1, 2, 3], prompt: 16, output: 2}\n", w) for w in (1, 2)] == [10, 10]
    assert estimate_s("serving: {rate: [10, 20], requests: 20, prompt: 32, output: 4}\n", 2) == 10


def test_check_refuses_fewer_than_one_worker(tmp_path, capsys):
    """--workers 0 is refused as explore refuses it: one line naming the flag, exit code 2."""
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\n"
                                 f"workload: {{batch: 1, prompt: 16, output: 2}}\n")
    assert main(["check", path, "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip().endswith("--workers: found 0, allowed: an integer >= 1")


def test_each_serving_worker_builds_its_step_templates(tmp_path, capsys, monkeypatch):
    """A serving point's step template reads and lowers its traces at a cost an op, in each worker that runs such
    points. The tiny Mixtral served at two rates, at 100 ops a layer and 10 an expert that gets tokens: its template's
    four passes of 280 ops each (as the trace test above counts them), at 1 s an op, 1,120 s on one worker and 2,240 s
    on two, by hand (it was not counted)."""
    import json

    from explore import commands, runner
    from tests.explore.tiny_sweep import TINY_CONFIG

    _only(monkeypatch, PREPARE_S_PER_OP=1.0, PREPARE_S_PER_COMBINATION=10.0)  # the latter a static sweep's alone
    monkeypatch.setattr(commands, "OPS_PER_LAYER", 100)
    monkeypatch.setattr(commands, "OPS_PER_EXPERT", 10)
    monkeypatch.setattr(runner, "usable_cores", lambda: 8)
    model = tmp_path / "moe" / "config.json"
    model.parent.mkdir()
    model.write_text(json.dumps(TINY_CONFIG | TINY_MOE))
    path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\n"
                                 f"serving: {{rate: [10, 20], requests: 20, prompt: 32, output: 4}}\n")
    estimates = []
    for workers in (1, 2):
        assert main(["check", path, "--workers", str(workers)]) == 0
        estimates.append(_estimate_s(capsys.readouterr().out))
    assert estimates == [1120, 2240]


@pytest.mark.slow
def test_check_counts_the_traces_a_multi_token_prediction_run_captures(tmp_path, monkeypatch, capsys):
    """examples/mtp.yaml's knobs on the tiny DeepSeek with its MTP module (tests/workloads/test_mtp.py): batches 1 and
    64, spec_draft '' and mtp, 1 or 3 drafted tokens, two acceptances, from an empty cache. By hand, at each batch: the
    target's prefill and decode, its verifications of 2 and 4 tokens, the module's prefill and decode and its first
    steps over 2 and 4 tokens (a batch of 64's steps of one sequence are batch 1's): 2 x 8 = 16 traces, the files the
    run writes into the cache; afterwards none is left to capture. Check said 12 (the (model, batch, prompt) groups)
    where the run captured 16, as examples/mtp.yaml's run did (commit 5c38017)."""
    import json

    from tests.workloads.test_mtp import TINY_MTP

    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: nothing traced yet
    model = tmp_path / "mtp" / "config.json"
    model.parent.mkdir()
    model.write_text(json.dumps(TINY_MTP))
    path = write_sweep(tmp_path, f"name: mtp\nmodel: {model}\ndevice: h200\nexecution: engine\nworkload:\n"
                                 "  batch: [1, 64]\n  prompt: 64\n  output: 64\n  spec_draft: ['', mtp]\n"
                                 "  spec_tokens: [1, 3]\n  acceptance: [0.8, 0.9]\n")
    assert main(["check", path]) == 0
    before = capsys.readouterr().out
    assert "up to 16 traces to capture" in before, before
    run_sweep(load_sweep(path), tmp_path / "out")
    assert len(_captured(tmp_path / "cache")) == 16
    capsys.readouterr()
    assert main(["check", path]) == 0
    assert "0 of 16 traces to capture" in capsys.readouterr().out
