"""What each `explore` command does (argument parsing is in cli.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from explore.cli import default_out, json_safe, print_json
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from explore.results import folder_lock
from explore.rows import count_label, is_feasible, normalize_row
from explore.runner import Progress, run_sweep
from explore.sweep import load_sweep
from hw_models.device import dispatch_s
from hw_models.link import load_link_model
from hw_models.registry import load_device
from kernels.formats import parse_sparsity
from kernels.parallel import check_expert_parallel, check_pipeline_parallel, check_tensor_parallel
from sim.serving_spec import ServingSpec
from workloads.errors import InputError
from workloads.model_config import load_model_config
from workloads.requests import Fixed, resolve_trace

# Rough costs for `explore check`'s estimate, measured on one core of a 2-core CI machine: capturing a
# prefill and a decode trace takes about 0.05 s per decoder layer; a design point then takes ~0.5-2 ms
# (more at large batch); Optuna adds about 20 ms per proposal (1,382 NSGA-II trials took 27 s); the
# report about 8 s.
GOALS_FILE = "objectives.json"
SWEEP_COPY = "sweep.yaml"  # a serving sweep's file, kept beside its results
TRACE_S_PER_LAYER = 0.05
POINT_S = 0.001
OPTUNA_S_PER_POINT = 0.02
REPORT_S = 8.0
# A serving point simulates its requests: the whole Splitwise conversation trace (19,366 requests, Llama-2-7B
# on H100) took 8.5 s with continuous batching and 22 s with chunked prefill on one core; a capacity search
# runs about CAPACITY_RUNS of them.
SERVING_S_PER_REQUEST = 0.001
CAPACITY_RUNS = 8
TEMPLATE_TRACES = 4  # a serving sweep traces each model four times at small shapes (kernels/shapes.py)
MAX_SHOWN = 6  # derived values `explore check` lists


def _print_progress(p: Progress) -> None:
    rate = p.done / p.elapsed_s if p.elapsed_s > 0 else 0.0
    eta = (p.total - p.done) / rate if rate > 0 else float("nan")
    best = f"{p.best_tokens_per_s:,.0f}" if p.best_tokens_per_s == p.best_tokens_per_s else "-"
    end = "\n" if p.done >= p.total else ""
    print(f"\r[{p.done}/{p.total}] feasible {p.feasible}, best {best} tokens/s, "
          f"elapsed {p.elapsed_s:.0f}s, ETA {eta:.0f}s   ", end=end, file=sys.stderr, flush=True)


def cmd_sweep(args) -> int:
    sweep = load_sweep(args.sweep)
    if args.workers < 1:
        raise InputError(f"--workers: found {args.workers}, allowed: an integer >= 1")
    out = Path(args.out) if args.out else default_out(sweep.name)
    with folder_lock(out):  # one run per folder, from its first result to its report (refused before any output)
        return _sweep_into(args, sweep, out)


def _sweep_into(args, sweep, out: Path) -> int:
    from explore.report import write_report

    search = sweep.spec.search
    plan = (f"{sweep.size()} design points" if search.strategy == "grid" else
            f"{search.strategy} search over {sweep.size()} design points, budget {search.budget}")
    print(f"sweep {sweep.name!r}: {plan} -> {out}/", file=sys.stderr)
    evaluator = Evaluator()
    executor = args.executor
    where = f" on Dask ({args.scheduler or f'local cluster of {args.workers}'})" if executor == "dask" else ""
    if where:
        print(f"evaluating{where}", file=sys.stderr)
    rows = run_sweep(sweep, out, workers=args.workers, evaluator=evaluator,
                     on_progress=None if args.quiet else _print_progress, executor=executor,
                     scheduler=args.scheduler)
    serving = sweep.spec.serving
    goals = {"objectives": sweep.spec.objectives.model_dump(), "constraints": sweep.spec.constraints,
             "slo": serving.slo.model_dump() if serving and serving.slo else None}
    # Kept beside the results so that `explore report DIR` can draw the same Pareto fronts later.
    (out / GOALS_FILE).write_text(json.dumps(goals, indent=2))
    if serving:
        # explore report DIR re-runs chosen serving points for their per-request figures from this copy.
        (out / SWEEP_COPY).write_text(Path(args.sweep).read_text(encoding="utf-8"), encoding="utf-8")
    html, md = write_report(out, rows, title=sweep.name, evaluator=evaluator, **goals,
                            points={p.point_id: p for p in sweep.points()} if serving else None)
    feasible = sum(1 for r in rows if is_feasible(normalize_row(r)))
    print(f"{len(rows)} design points ({feasible} feasible)\nresults: {out / 'results.csv'}\nreport:  {html}\n"
          f"summary: {md}")
    return 0


def cmd_check(args) -> int:
    sweep = load_sweep(args.sweep)
    derived, search = sweep.derived_values(), sweep.spec.search
    dims = sweep.dimensions() | derived  # a derived batch or prompt: the traces it needs are its values
    evaluator = Evaluator()
    serving = sweep.spec.serving
    if serving is None:
        traces = [(model, b, p) for model in dims["model"] for b in dims["batch"] for p in dims["prompt"]]
        point_s = POINT_S
    else:
        traces = [(model, b, 0) for model in dims["model"] for b in range(TEMPLATE_TRACES)]
        point_s = serving.requests * SERVING_S_PER_REQUEST * (CAPACITY_RUNS if serving.capacity else 1)
    trace_s = sum(evaluator.config(model).num_layers * TRACE_S_PER_LAYER for model, _, _ in traces)
    visits = sweep.visits()
    per_point = point_s + (OPTUNA_S_PER_POINT if search.strategy in ("nsga2", "tpe") else 0.0)
    estimate = trace_s + visits * per_point + REPORT_S
    plan = "all evaluated" if search.strategy == "grid" else f"{search.strategy} search evaluates {visits}"
    traces_label = count_label(len(traces), "trace")
    print(f"{args.sweep}: valid\n{sweep.size()} design points ({plan}), up to {traces_label} to capture")
    for target, values in derived.items():
        shown = ", ".join(f"{v:g}" for v in values[:MAX_SHOWN]) + (", ..." if len(values) > MAX_SHOWN else "")
        print(f"derived {target} = {sweep.spec.derived[target]}: {len(values)} values ({shown})")
    print(f"estimated run time: about {estimate:.0f} s on one worker")
    return 0


def cmd_run(args) -> int:
    for name in ("batch", "prompt", "output"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name}: found {getattr(args, name)}, allowed: an integer >= 1")
    serving = _serving_spec(args) if args.serving else None
    if serving is not None and args.sim:
        raise InputError("--sim: found with --serving, allowed: a static batch (a serving run is an event "
                         "simulation already)")
    config = load_model_config(args.model)  # outside the checks below: its own errors are no flag's
    for flag, value, check in (("--tp", args.tp, check_tensor_parallel), ("--pp", args.pp, check_pipeline_parallel)):
        try:
            if value != 1:
                check(config, value)
        except ValueError as err:
            raise InputError(f"{flag}: {err}") from None
    try:
        check_expert_parallel(config, args.ep, args.tp)
    except ValueError as err:
        raise InputError(f"--ep: {err}") from None
    if args.pp != 1 and args.serving:
        raise InputError("--pp: found with --serving, allowed: 1 (a pipelined serving replica is not modeled yet)")
    if args.link:
        load_link_model(args.link)
    point = DesignPoint(model=args.model, device=args.device, batch=serving.max_seqs if serving else args.batch,
                        prompt=0 if serving else args.prompt, output=0 if serving else args.output,
                        weight_bits=args.weight_bits, act_bits=args.act_bits, kv_bits=args.kv_bits,
                        sparsity=args.sparsity, execution=args.execution, use_calibration=not args.roofline,
                        serving=serving, tp=args.tp, pp=args.pp, ep=args.ep, link=args.link)
    try:
        parse_sparsity(args.sparsity)
    except ValueError as err:
        raise InputError(f"--{err}") from None
    simulate = (args.sim or bool(args.chrome_trace)) and serving is None
    evaluator = Evaluator()
    evaluation = evaluator.evaluate(point, event_sim=simulate, timeline=bool(args.chrome_trace))
    if args.chrome_trace:
        from sim.chrome_trace import write_chrome_trace

        if evaluation.result is None:
            reason = evaluation.metrics["infeasible_reason"]
            raise InputError(f"--chrome-trace: the point does not fit in memory ({reason}); allowed: a point that "
                             f"fits (it has no timeline)")
        write_chrome_trace(evaluation.result, point.device, args.chrome_trace)
    metrics = json_safe(evaluation.metrics)
    if args.json:
        print_json(metrics)
    else:
        print(f"# {_assumptions(point, evaluator.point_device(point))}")
        width = max(len(k) for k in metrics)
        for key, value in metrics.items():
            shown = f"{value:.6g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0


# ServingSpec fields and the `explore run` flags that set them, for error messages.
SERVING_FLAGS = {"rate_per_s": "--rate", "swap_GBps": "--swap-GBps", "slo_ttft_s": "--slo-ttft",
                 "slo_tpot_s": "--slo-tpot", "slo_attainment": "--slo-attainment", "prompt": "--prompt",
                 "output": "--output"}


def _serving_spec(args) -> ServingSpec:
    """The serving workload of `explore run --serving`, its mistakes named by flag."""
    if args.trace is None and args.arrival == "trace":
        raise InputError("--arrival: found 'trace' without --trace, allowed: poisson or gamma, or a --trace to replay")
    if args.trace is not None:
        try:
            resolve_trace(args.trace)
        except InputError as err:
            raise InputError(f"--trace: {str(err).removeprefix('trace: ')}") from None
    for flag, value, load in (("--prefill-device", args.prefill_device, load_device),
                              ("--kv-link", args.kv_link, load_link_model)):
        try:
            if value:
                load(value)
        except InputError as err:
            raise InputError(f"{flag}: {str(err).partition(': ')[2] or err}") from None
    if not 0 < args.slo_attainment <= 1:
        raise InputError(f"--slo-attainment: found {args.slo_attainment}, allowed: a fraction in (0, 1]")
    fields = dict(scheduler=args.scheduler, requests=args.requests, arrival=args.arrival, rate_per_s=args.rate,
                  cv=args.cv, trace=args.trace, prompt=Fixed(tokens=args.prompt), output=Fixed(tokens=args.output),
                  max_seqs=args.max_seqs, max_batched_tokens=args.max_batched_tokens,
                  chunk_tokens=args.chunk_tokens, block_tokens=args.block_tokens, prefix_tokens=args.prefix_tokens,
                  preemption=args.preemption, swap_GBps=args.swap_GBps, seed=args.seed, slo_ttft_s=args.slo_ttft,
                  slo_tpot_s=args.slo_tpot,
                  slo_attainment=args.slo_attainment, capacity=tuple(args.capacity) if args.capacity else None,
                  replicas=args.replicas, prefill_replicas=args.prefill_replicas, prefill_device=args.prefill_device,
                  kv_link=args.kv_link)
    if args.seed < 0:
        raise InputError(f"--seed: found {args.seed}, allowed: an integer >= 0")
    try:
        spec = ServingSpec(**fields)
        spec.check_context(load_model_config(args.model).max_positions, args.model)
        return spec
    except InputError as err:
        name, _, rest = str(err).partition(": ")
        flag = SERVING_FLAGS.get(name, f"--{name.replace('_', '-')}")
        raise InputError(f"{flag}: {rest}") from None


# The kernel classes a GPU calibration can fit (hw_models.calibration): any other is priced on the roofline.
FITTABLE_CLASSES = ("gemm", "attention", "norm", "elementwise", "activation", "rope", "embedding")


def _calibration_text(device) -> str:
    """Which fits priced a device's kernels: its own, a sibling's, or none (and the classes left on the roofline)."""
    cal = getattr(device, "calibration", None)
    if cal is None:
        return ("uncalibrated datasheet roofline" if device.kind == "gpu"
                else f"uncalibrated analytical {device.kind} model")
    parts = []
    if cal.provenance:
        parts.append(f"calibrated on {cal.provenance['rows_used']} measured kernels ({cal.provenance['date']})")
    if cal.borrowed:
        parts.append(f"{', '.join(cal.borrowed)} fitted on sibling {cal.sibling}")
    roofline = [c for c in FITTABLE_CLASSES if c not in cal.fitted_classes]
    if roofline:
        parts.append(f"{', '.join(roofline)} on the datasheet roofline")
    return "; ".join(parts)


def _launch_text(execution: str, device) -> str:
    """How an execution mode launches kernels on a device, with its per-kernel costs."""
    launch, node = device.host_s("eager") * 1e6, device.host_s("graphs") * 1e6
    if execution == "engine":
        return (f"engine execution (fused kernels; decode replayed from CUDA graphs, {node:.1f} us per kernel; "
                f"prefill launched from the host, {launch:.1f} us per kernel)")
    if execution == "eager":
        dispatch = dispatch_s(device, "eager") * 1e6
        host = f"; {dispatch:.1f} us PyTorch dispatch per kernel on the host, overlapping device time" * (dispatch > 0)
        return f"eager execution, {launch:.1f} us launch per kernel{host}"
    return f"{execution} execution, {device.host_s(execution) * 1e6:.1f} us launch per kernel"


def _assumptions(point: DesignPoint, device) -> str:
    """What a prediction assumed: calibration and kernel launch mode."""
    if point.tp > 1 or point.pp > 1:
        link = device.link
        source = link.fitted_on.get("all_reduce")
        fitted_link = f"all-reduce fitted on {source} NCCL data" if source else "datasheet alpha-beta model"
        stages = (f" in {point.pp} pipeline stages" if point.pp > 1 else "") + (
            f", experts spread over the {point.ep} devices" if point.ep > 1 else "")
        system = (f"{point.tp * point.pp} x {point.device}, {point.tp}-way tensor parallel{stages} over "
                  f"{link.spec.name} ({fitted_link}); ")
        device = device.device
    else:
        system = ""
    fitted = _calibration_text(device)
    what = f"{point.model} on {point.device}: {system}{fitted}; {_launch_text(point.execution, device)}"
    if point.serving is not None:
        s = point.serving
        rate = (f"capacity search in {s.capacity[0]:g}-{s.capacity[1]:g} req/s" if s.capacity
                else f"{s.rate_per_s:g} req/s" if s.rate_per_s else "the trace's arrival times")
        pools = (f"{s.prefill_replicas} prefill replica(s) ({s.prefill_device or point.device}) handing KV over "
                 f"{s.kv_link} to {s.replicas} decode replica(s)" if s.disaggregated
                 else f"{s.replicas} replica(s)")
        what += (f"; serving {s.requests} requests ({s.trace or 'fixed lengths'}, {s.arrival} arrivals, {rate}) "
                 f"with {s.scheduler} scheduling on {pools}")
    return what


def cmd_report(args) -> int:
    from explore.report import write_report
    from explore.results import CSV_NAME, DB_NAME, read_results

    out = Path(args.out_dir)
    if not (out / CSV_NAME).is_file() and not (out / DB_NAME).is_file():
        raise InputError(f"{out}: no results.csv here (run a sweep with --out {out} first)")
    goals_path = out / GOALS_FILE
    goals = json.loads(goals_path.read_text()) if goals_path.is_file() else {}
    points = None
    if (out / SWEEP_COPY).is_file():
        try:  # the copy names models and traces as the sweep did: relative paths resolve from this folder
            points = {p.point_id: p for p in load_sweep(str(out / SWEEP_COPY)).points()}
        except InputError as err:
            print(f"explore: per-request figures not redrawn: {err}", file=sys.stderr)
    html, md = write_report(out, read_results(out), title=out.name, evaluator=Evaluator(), **goals, points=points)
    print(f"report:  {html}\nsummary: {md}")
    return 0


def cmd_presets(args) -> int:
    from hw_models.registry import preset_names as device_names
    from hw_models.registry import read_device_yaml
    from workloads.model_config import preset_names as model_names

    if args.which in (None, "models"):
        print("models:")
        for name in model_names():
            print(f"  {name:<16} {load_model_config(name).source}")
    if args.which in (None, "devices"):
        print("devices:")
        for name in device_names():
            data, _ = read_device_yaml(name)
            print(f"  {name:<18} {data.get('kind', '?'):<5} {data.get('description', '')}  "
                  f"(sources in hw_models/presets/{name}.yaml)")
    if args.which in (None, "links"):
        from hw_models.link import calibrated_links, link_names, load_link

        fitted = calibrated_links()
        print("links:")
        for name in link_names():
            systems = fitted.get(name)
            how = f"collectives fitted on {', '.join(systems)}" if systems else "datasheet alpha-beta model"
            print(f"  {name:<16} {load_link(name).bandwidth_GBps:>6g} GB/s per direction, {how}  "
                  f"(sources in hw_models/presets/links/{name}.yaml)")
    return 0


def cmd_trace(args) -> int:
    from workloads.capture import trace_model

    for name in ("batch", "prompt", "context"):
        if getattr(args, name) < (0 if name == "context" else 1):
            raise InputError(f"--{name}: found {getattr(args, name)}, allowed: a positive integer")
    cfg = load_model_config(args.model)
    if args.phase == "prefill":
        trace = trace_model(cfg, phase="prefill", batch=args.batch, seq_len=args.prompt, fake=not args.real)
    else:
        trace = trace_model(cfg, phase="decode", batch=args.batch, seq_len=1, context_len=args.context,
                            fake=not args.real)
    trace.save(args.output)
    print(f"{args.output}: {len(trace.ops)} ops, {trace.flops:.3e} FLOPs, {trace.model} {trace.phase}")
    return 0
