"""What each `explore` command does (argument parsing is in cli.py)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sys
from dataclasses import asdict, replace
from pathlib import Path

from pydantic import ValidationError

from explore.cli import TRACE_TOKENS, Interrupted, default_out, json_safe, print_json, run_knobs, serving_flags_set
from explore.design_point import FORMAT_FIELDS, DesignPoint, with_knobs
from explore.evaluate import (
    PLAIN_PASSES,
    Evaluator,
    SpeculativePasses,
    TracedPasses,
    launches,
    padded_traced,
    pool_point,
    serving_pools,
    trace_args,
)
from explore.format_checks import estimate_notice, format_notice, sixteen_bit_notice
from explore.knobs import KNOBS, flag_name, input_columns, knobs
from explore.link_words import link_rate_text
from explore.ops_table import format_op_table, op_rows
from explore.out_paths import check_out_file, refusing_unwritable
from explore.point_checks import check_sweep_points
from explore.point_values import check_idle_knobs, check_point_values
from explore.pool_what_ifs import POOL_WHAT_IFS
from explore.progress_line import ProgressLine
from explore.report import MAX_DETAIL, figures_drawn
from explore.rerun import (
    REPORT_FILES,
    other_models,
    report_current,
    report_inputs,
    stamp_report,
    stored_ids,
    stored_label,
    stored_of,
    stored_report_current,
)
from explore.results import folder_lock
from explore.rows import count_label, device_label, is_feasible, normalize_row
from explore.run_support import (
    HINT_BITS,
    HINT_TP,
    WHAT_IF_PREFIXES,
    check_sets,
    infeasible_hints,
    overrides_text,
    parse_sets,
)
from explore.runner import Progress, capped_workers, columns_for, run_sweep
from explore.schema import as_list
from explore.serving_settings import SPEC_FIELDS, FlagNames, data_parallel_ranks, flag_of, idle_setting, renamed
from explore.sweep import STRATEGY_NAMES, Constraint, Objectives, load_sweep
from explore.sweep_notes import (
    dense_prefill_note,
    fitted_latency_note,
    fixed_peak_sm_note,
    idle_peak_note,
    power_limit_note,
    sweep_notes,
    unread_seed_note,
)
from explore.sweep_serving import (
    AUTOSCALE_KNOBS,
    capacity_ceiling_notice,
    capacity_notice,
    node_link_readers,
    pool_node_link_readers,
)
from hw_models import nodes
from hw_models.device import UNFUSED_ENGINE_KINDS, dispatch_s
from hw_models.device_block import varies_in_block
from hw_models.gpu_efficiency import calibration_label
from hw_models.link import default_link, default_node_link, load_link, load_link_model
from hw_models.registry import load_device, read_device_yaml
from hw_models.validation import input_error
from kernels.mixed_layers import template_variants
from kernels.shapes import template_layers, template_passes
from sim.autoscalers.sla_planner import SLAPlanner
from sim.data_parallel import DBO_DECODE_TOKENS, DBO_PREFILL_TOKENS
from sim.kv_cache import shared_prefix_tokens
from sim.serving_spec import SCALED_POOLS, ServingSpec
from sim.slowdown import SLOWDOWN_PRESETS
from sim.speculative import MEDUSA, MTP, NGRAM, Speculation
from sim.step_costs import batch_launches, pass_launch
from sim.workload import BatchWorkload
from workloads.errors import InputError
from workloads.layer_replication import layer_plan
from workloads.model_config import BALANCED, ModelConfig, expert_load, experts_reached, load_model_config
from workloads.real_memory import check_real_memory
from workloads.requests import Fixed, phases_label, resolve_trace

# Rough costs for `explore check`'s estimate, measured on one core of a 2-core CI machine: a design point takes
# ~0.5-2 ms (more at large batch); Optuna adds about 20 ms per proposal (1,382 NSGA-II trials took 27 s).
GOALS_FILE = "objectives.json"
SWEEP_COPY = "sweep.yaml"  # a serving sweep's file, kept beside its results
# Capturing a trace (workloads/trace_cache.py cached_trace: the model's distinct layers built on fake tensors, their
# pass recorded op by op, their ops copied for the layers like them (workloads/layer_replication.py), the trace
# stored) costs a part an op it dispatches (the ops before and after the layer stack and those of the layers traced:
# the first of each kind and the last), a part an op copied, and a part an expert built and hooked (an MoE layer
# builds the experts its tokens reach: workloads/decoder.py MoE max_tokens). CPU time (time.process_time) on one core
# of the 2-core machine, shared with other work (load 4-6), 2026-12-07 at 812a0b1, torch warmed up, each trace the
# faster of two runs: 24 traces of llama-2-7b, mixtral-8x7b, deepseek-v2-lite and qwen3-30b-a3b at 2 and 8 layers and
# full depth, a 512-token prefill and a decode step after 512 (177 to 4,301 ops dispatched, 0 to 98,302 copied, 0 to
# 256 experts built), less the trace's own part and 0.87 ms an expert built (fitted before replication, when every
# layer built its experts: 13 traces up to 6,144 experts built; the traces here build too few beside their ops to fit
# it), least squares without a constant: 0.228 ms an op dispatched. Within 25% for the traces over 1 s, within 1.6x but
# three decode steps under 0.6 s, fitted at about half of their time; timed again the same way at c2b8eef (load 4-9),
# 26 decode steps after 512 tokens (9 models at full depth, batch 1 and 8; llama-2-7b, mixtral-8x7b, deepseek-v2-lite
# and qwen3-30b-a3b at 2, 8 layers; 0.05-1.7 s) were estimated at 0.84-2.1x, none below. An op copied: since 2cae472
# the cache stores a fake trace as its distinct layers, so a copied op costs only its copy (LayerTrace.expanded).
# Refitted at 69643bd (load 2-3), the same way on the same traces and DeepSeek-V3's prefill and decode step, the faster
# of four runs: least squares on the 18 traces of llama-2-7b, mixtral-8x7b and qwen3-30b-a3b, 0.23 ms an op dispatched
# kept (fitted with it, 0.20-0.22 ms: this quieter machine's), 0.74 us an op copied (0.88 and 1.17 us in each
# pass of two runs alone; was 0.0152 ms, its share of storing the trace among it). Median |log(estimate/measured)|
# on the fit's 18: 0.31 -> 0.22; on the 8 held out (deepseek-v2-lite's 6, DeepSeek-V3's 2): 0.18 -> 0.07, the worst
# 0.71 -> 0.20. DeepSeek-V3's 512-token prefill (245,096 ops; as estimated, 8,447 dispatched and 2 x 256 experts
# built) took 2.9 s, estimated 2.6 s (5.9 s before); qwen3-30b-a3b's at full depth 1.33 s, estimated 1.31 s (2.71 s
# before); deepseek-v2-lite's 0.72 s, estimated 0.69 s (1.07 s before). The tiny model's (tests/explore/tiny_sweep.py)
# 177-op prefill took 0.064-0.070 s, 0.03 s past its ops: a trace's own part.
TRACE_S = 0.03
TRACE_S_PER_OP = 0.00023
TRACE_S_PER_OP_COPIED = 0.00000075
TRACE_S_PER_EXPERT_BUILT = 0.00087
# An expert a fake MoE layer copies rather than runs (since 4de6976 it runs one expert of each row count and copies
# its ops for the others: _copied_experts), beside its build (TRACE_S_PER_EXPERT_BUILT). The copy of its 16 ops alone
# was timed at 40-47 us (workloads/capture.py copy_module); the rest of an expert's turn in the layer's loop costs
# more. Fitted at e17a8f4 (2026-12-07, the 2-core machine quiet, cached_trace from an empty cache, CPU time, the faster
# of two runs, torch warmed up), least squares on what the other terms leave of 4 traces: qwen3-30b-a3b and
# deepseek-v2-lite at full depth, a 512-token prefill and a decode step of 8 after 512 (94-254 experts copied):
# 1.11 ms an expert, those 4 within 0.91-1.08x. Held out, DeepSeek-V3's prefill and decode step of 64 (510 copied):
# 1.62 and 1.38 s measured, estimated 1.28 s each (0.79x, 0.93x; 2.59 s each, 1.6x and 1.9x, with every expert's ops
# priced as dispatched).
TRACE_S_PER_EXPERT_COPIED = 0.00111
# A run that captures a trace imports torch and warms its fake-tensor dispatch first: explore on the tiny model
# (--workers 1, /usr/bin/time user + sys) from an empty trace cache and again from the filled one took 4.47 and
# 1.81 s (a static point, 2 traces), 4.71 and 1.92 s (a serving point, 4): 2.5 s past the traces' own. Each worker
# process that captures does so (the pool's workers fork from a process that has not imported torch): the tiny
# model's 4 batches (4 tasks, explore/runner.py _tasks), empty cache less filled, took 3.4-3.5 s on one worker and
# 4.9-5.5 s on two, user + sys of the run and its workers. A serving point's task (one point each) builds its model's
# step template, and workers starting together each capture its traces: deepseek-v2-lite's 4 rates took 10.1 s on
# one worker and 19.7 s on two (2026-12-06, the machine shared: load 2-5).
TORCH_START_S = 2.5
# A run's fixed part, paid once by the process the user starts (the pool's workers fork from it, its imports done):
# its start, Python and the modules `explore SWEEP` imports (`python3 -c "import explore.commands"`, user + sys,
# 0.80-1.05 s over 8 runs; Python alone 0.09 s), and its report's, matplotlib's import (0.58-0.61 s) among it. Fitted
# with REPORT_S_PER_FIGURE on whole runs (bench/bench_check_estimate.py, 2026-12-07 at c2b8eef, the 2-core machine
# shared with other work at load 4-11): 33 of examples/*.yaml (all but mtp and sla-planner, over a minute each), each
# from an empty trace cache on one worker, 6.6-57 s CPU measured; least squares of the time measured less the rest of
# the estimate on the static sweeps cheapest-system, device-families, fpga-sweep, long-context, npu-pim-whatif,
# quant-sparsity, search-gpu-whatif, whatif-a100-neupims-fpga and whatif-hbm-h100 (9-11 figures each): 2.2 s and
# 0.31 s a figure (was 0 and 0.35). On the 24 sweeps left out the median |log(estimate / measured)| went from 0.233 to
# 0.215 (8 static: 0.203 -> 0.033, their estimates 0.59-1.09x of the time measured -> 0.68-1.11x; 16 serving: 0.329
# -> 0.375, those the points' part overestimates getting longer), no sweep's error growing more than 1.24x (offload's,
# 1.09x -> 1.35x). The two are told apart poorly (every sweep draws 8-12 figures): the import time alone for the fixed
# part, the cost a figure kept, gave 0.177 over the 24 (static 0.113, serving 0.368).
RUN_FIXED_S = 2.2
# Ops a trace records (len(Trace.ops)): a decoder layer's attention, norms and MLP (or an MoE layer's router), 73-77
# in llama-2-7b's and mixtral-8x7b's traces, 89-91 in qwen3-30b-a3b's, 96-103 in deepseek-v2-lite's (MLA); and 16 an
# expert that gets tokens (workloads/decoder.py RoutedExpert: arange, remainder and index_select of its rows, 3
# linears of a transpose and a matmul each, silu, mul, the weights' index_select, 2 slices and mul, index_add_).
OPS_PER_LAYER = 85
OPS_PER_EXPERT = 16
# Checked against whole runs (explore SWEEP --workers 1 from an empty trace cache less a run from the filled one,
# /usr/bin/time user + sys, twice each), a static point of 512 prompt tokens and a serving point: the tiny model 2.7
# and 2.8-3.2 s (estimated 2.6 and 2.8), llama-2-7b 3.7-4.0 and 2.5 s (3.6, 2.8), mixtral-8x7b 4.7-5.4 and 2.8-3.0 s
# (5.1, 3.0), deepseek-v2-lite 12.6-13.9 and 8.0-8.2 s (12.2, 7.7), where 0.05 s a layer counted 0.1 and 0.2, 1.6
# and 0.2, 1.6 and 0.2, 1.4 and 0.8 s.
POINT_S = 0.001
# A point priced in a block of what-ifs (explore/blocks.py): the 10,368-point GPU grid runs end to end at about
# 10,000 points/s on one core (bench/bench_sweep_grid.py).
BLOCK_POINT_S = 0.0001
OPTUNA_S_PER_POINT = 0.02
# Preparing a static point's kernel tables (Evaluator.tables: its traces loaded from the cache, lowered and fused, its
# format applied), its first point paying it: a part an op its traces record, once per trace whatever the formats, and
# a fixed part per distinct (model, batch, prompt, format). Evaluator.tables in a fresh process, the traces cached,
# CPU time (time.process_time) on the 2-core machine at load 1-2, 2026-12-06, batch 1, prompt 512, engine kernels:
# the tiny model (tests/explore/tiny_sweep.py) 358 ops 16 ms, llama-2-7b 4,918 ops 115-120 ms, mixtral-8x7b 9,910 ops
# 317-327 ms, deepseek-v2-lite 34,537 ops 1.37-1.50 s (reading the trace files most of it, lowering and fusing a third);
# least squares without a constant: 40 us an op (14, 197, 396 and 1,380 ms; a constant fits below 0). A second format
# of the same tables took 0.2-0.4 ms. The fixed part: explore/runner.py run_sweep of the tiny model's 42 formats (42
# combinations) took 0.18-0.20 s, of 42 memory bandwidths of one format 0.06-0.07 s, 3 ms a combination more, 0.9 ms
# of it each point of a format priced alone, not in a block (POINT_S, BLOCK_POINT_S). It was 35 ms a combination
# (examples/quickstart.yaml's 32 combinations of 8 traces took 34 ms each on average). A serving point's step template
# (Evaluator.template, in a fresh process, the traces cached) takes as long an op of its traces: the tiny model's 716
# ops 30-32 ms, mixtral-8x7b's 1,724 58-61 ms, deepseek-v2-lite's 16 traces of 19,936 ops 0.81-0.88 s (40-43 us an op);
# its template in another format, tp, ep or execution mode re-lowers them, already read: built again in 8-bit and
# 4-bit weights and 8-bit KV (Evaluator.template, engine kernels, 2026-12-07, same machine), llama-2-7b's and
# llama-3-70b's 680 ops took 7.3-8.5 ms each, mixtral-8x7b's 1,704 17 ms, deepseek-v2-lite's 19,104 0.19-0.27 s:
# least squares without a constant, 11 us an op.
PREPARE_S_PER_OP = 0.00004
# An op of a layer a fake trace copies from a traced one: since 9eea46d its kernels are the source layer's renumbered,
# not lowered, since 2cae472 the cache stores the traced layers only, and since e79c64b the tables are sharded and fused
# on a model of a few of its layers (kernels/layer_kernels.py LayerTable) and only then copied. Evaluator.tables of a
# 512-token prefill and a decode step, batch 1, engine fusion, the traces cached (process_time, the faster of two fresh
# Evaluators, 2-core machine under load 7, 2026-12-07 at bd5e28b): llama-2-7b 0.016 s, mixtral-8x7b 0.023,
# qwen3-30b-a3b 0.162, llama-2-70b 0.018, deepseek-v2-lite 0.102, deepseek-v3 0.350 (at 3a7c4b8 in the same session
# 0.034, 0.056, 0.553, 0.082, 0.211, 1.625: fd02374's figures within 0.91-1.03x). Least squares on what 40 us an op of
# the traced layers leaves of the first four puts a copied op below zero (-0.23 us): nothing measurable, so none; 40 us
# an op traced alone is 0.76-1.16x of all six (it was 3.8 us an op copied, fitted at fd02374).
PREPARE_S_PER_OP_COPIED = 0.0
PREPARE_S_PER_COMBINATION = 0.002
TEMPLATE_S_PER_OP = 0.000011
# Drawing the report, per figure (explore/report.py figures_drawn counts those a sweep draws): on the same machine
# examples/quickstart.yaml's report drew its 12 figures in 4.0-4.6 s and examples/serving.yaml's its 8 in 2.5 s
# (write_report timed alone, the points stored), 0.32-0.38 s a figure; the tiny model's one-point and 4-point sweeps
# (batches or rates), without objectives and with 3, drew 5 and 11 figures (one point: 8, no knob varies for the
# sensitivity figures) in 1.06-1.07 and 2.27 s static, 1.24-1.30 and 2.07 s served (the serving report re-runs its
# points too), 0.19-0.26 s a figure (process_time of write_report after run_sweep, 2026-12-06). A serving report
# also re-runs up to MAX_DETAIL chosen points for its per-request figures. Past the figures, drawing grows with the
# points, spread over the what-if, energy, sensitivity, batch and Pareto figures (each groups or plots every row):
# `explore report DIR` timed on one core of the same machine, 10 figures each, over examples/gpu-whatif-grid.yaml's
# 10,368 points 7.0 s, its copies at 6 and 3 steps a what-if 2,592 points 4.4 s and 648 points 3.8 s: 0.33-0.34 ms a
# point. Its cost a figure is fitted with RUN_FIXED_S on whole runs (there): the report's fixed part, its import of
# matplotlib among it, falls to the run's once, no longer spread over its figures. Since c46fe32 labels each row
# once a report, not once a figure: `explore report DIR` on one core (user + sys CPU, 2-core machine at load ~15,
# before and after back to back, twice) over 648, 2,592 and 10,368 points took 6.0-6.4, 6.9-7.3, 10.8-11.7 s before
# and 5.6-6.1, 6.1-6.6, 8.4-9.2 s after: 0.49-0.54 ms a point past the 648 before, 0.29-0.31 after, 0.58x; the
# figure of 0.33 ms scaled by it.
REPORT_S_PER_FIGURE = 0.31
REPORT_S_PER_POINT = 0.00019
# A serving point simulates its requests: Evaluator.evaluate timed point by point in CPU time (time.process_time; the
# 2-core machine was shared, wall times 5-10x longer), the traces cached, the first point of each sweep left out (it
# builds the step template: the traces' cost): examples/sla-planner.yaml's 60,000 requests 8.6-8.8 s a point (0.145 ms a
# request), gateway's 6,000 0.56-0.63 s, autoscaling's 8,819 (a trace) 3.7-4.7 s, fleet's, cheapest-fleet's and
# slo-classes' 1,000-2,000 0.43-1.44 s, chat's 400 0.65-1.03 s and serving's 300 0.35-0.41 s. The fixed part is the
# median over the 10 points of at most 2,000 requests of their time less 0.134 ms a request; 0.134 ms is sla-planner's
# mean time a point (8.69 s) less the fixed part, over its 60,000 requests. The whole sweep of sla-planner (4 points,
# each run again for the report) took 80 s CPU (/usr/bin/time: 75.7 s user, 4.7 s sys), estimated 74 s; short points
# vary most: serving's and gateway's sweeps took 12.7 and 8.6 s CPU, estimated 21 and 22 s (their traces' 0.2 s is
# counted though they were cached). A capacity search runs about CAPACITY_RUNS of them (splitwise-slowdown's 4 took
# 41.7 s CPU, estimated 55 s).
# The fixed part stands for the iterations a point runs and the iteration shapes it prices, which explore check cannot
# count. Timed the same way (2026-12-07, the traces cached, the first point of each sweep left out), 67 points: the
# tiny model (tests/explore/tiny_sweep.py, prompt 32, output 4 and 64) and llama-2-7b (prompt 512, output 128) at 10 to
# 1,000 requests at 1 to 50 a second, examples/serving.yaml's 18, allreduce-overlap's 6, deepseek-v2-lite's 5, 2 each
# of chat, fleet, cheapest-fleet, slo-classes, gateway, autoscaling, prefix-cache and priority and one of sla-planner.
# On the counts the run logged (62 of them), least squares of the relative error gives 1.2 ms a point, 67 us a request,
# 15 us an iteration and 0.43 ms a new iteration shape (all within 0.39-1.33x of it); no form in the requests and
# their output tokens alone came near. A point runs at most about an iteration a prompt and one an output token
# (served one at a time); its time less SERVING_S_PER_REQUEST a request was at most 115 us for each of those
# (allreduce-overlap's token_split points, 17,050 of them in 1.6-2.0 s, each point pricing 520-550 new shapes), so the
# fixed part is at most SERVING_S_PER_ITERATION of them: a tiny model's 10 requests of output 4, 2-3 ms measured, were
# estimated 0.66 s, now 7 ms. No point's estimate rises; over the 67, the geometric mean of the estimate over the time
# measured went from 4.2 to 2.8, its largest from 331 to 37 (the tiny model's output-4 sweep's sum 21.9 -> 7.3x,
# output 64 2.4 -> 1.6x, llama-2-7b's 4.7 -> 3.7x; points of over 5,500 such iterations unchanged); as many (22) are
# within a factor of 2. A central 15 us an iteration would put 34 within it but allreduce-overlap at 0.21x.
# Whole runs (bench/bench_check_estimate.py, 2026-12-07 at c2b8eef, the rows RUN_FIXED_S was fitted with) of the 16
# serving sweeps of examples/ less the rest of their estimate put a point (each evaluated, and re-run up to MAX_DETAIL
# times for the report) at 0.1-1.3 s, attention-disaggregation's (300 prompts of 6,000-12,000 tokens, chunks of 512)
# at 2.0 s and autoscaling's (8,819 requests, replicas up to 4) at 3.7 s: estimated at 0.66 s and 0.134 ms a request,
# the runs were 0.47-1.99x of the time measured. A chunked scheduler prefills a prompt over about prompt /
# chunk_tokens iterations (its budget an iteration), each a shape priced anew. SERVING_S_PER_REQUEST kept (sla-planner,
# above), least squares of the relative error of the run on 8 of the sweeps (by name, every other one:
# allreduce-overlap, autoscaling, cheapest-fleet, fleet, pool-node-link, prefix-tree, serving, slo-classes): 0.34 s a
# point and 0.24 ms a chunked prefill iteration (the point's part is still at most SERVING_S_PER_ITERATION an iteration
# served alone). On the other 8 (attention-disaggregation, chat, dp-attention, gateway, prefix-cache, priority,
# serving-systems, splitwise-slowdown) the median |log(estimate / measured)| went from 0.47 to 0.28 (0.47-1.99x ->
# 0.69-2.09x), no sweep's error growing more than 1.12x (prefix-cache's, 1.86x -> 2.09x: its cached prefixes are not
# prefilled; serving-systems' 0.97x -> 0.87x); on the 8 fitted 0.31 -> 0.17 (0.59-1.68x -> 0.51-1.19x: autoscaling
# 0.59x -> 0.51x, fleet 0.87x -> 0.62x). Over all 33 sweeps 0.110 -> 0.115. Other forms were tried on the same split,
# their held-out errors seen too, so this form was chosen with them in view: a constant and a part a request fitted
# together (0.21 s, 0.35 ms: autoscaling sets it) gave 0.39 and would put sla-planner's points of 60,000 requests at
# 2.4x; the constant alone (0.36 s) 0.36, serving-systems' error growing 1.41x; the constant and a part a prompt
# token / chunk_tokens fitted with the request's (0.19 s, 0.36 ms) 0.25, sla-planner at 2.5x; iterations from the
# arrivals' span at a fixed step time did worse. Left one out within the 8 fitted, this form gives 0.30, the constant
# alone 0.24 (they hold few chunked sweeps of long prompts). Points timed alone (Evaluator.evaluate, CPU time, load
# 8) vary up to 5x with their rate and pipeline stages (serving-systems' 15 after its first 0.6-3.3 s), which explore
# check does not count.
SERVING_S_PER_POINT = 0.34
SERVING_S_PER_REQUEST = 0.000134
SERVING_S_PER_ITERATION = 0.00012
SERVING_S_PER_CHUNK = 0.00024
CAPACITY_RUNS = 8
MAX_SHOWN = 6  # derived values `explore check` lists


def _progress_printer(line: ProgressLine):
    """What shows a sweep's progress on `line`."""
    def show(p: Progress) -> None:
        best = f"{p.best_tokens_per_s:,.0f}" if p.best_tokens_per_s == p.best_tokens_per_s else "-"
        line.show(f"[{p.done}/{p.total}] feasible {p.feasible}, best {best} tokens/s, elapsed {p.elapsed_s:.0f}s, "
                  f"ETA {p.eta_s:.0f}s   ", last=p.done >= p.total or p.finished)
    return show


def cmd_sweep(args) -> int:
    sweep = load_sweep(args.sweep)
    _workers(args)
    evaluator = Evaluator()
    check_sweep_points(sweep, evaluator)  # before anything is written: a combination no point runs is one line
    out = _out_folder(args, sweep)
    try:
        with folder_lock(out):  # one run per folder, from its first result to its report (refused before any output)
            return _sweep_into(args, sweep, out, evaluator)
    except KeyboardInterrupt:
        raise Interrupted(stored_label(sweep, out)) from None


def _out_folder(args, sweep) -> Path:
    """The folder a sweep's run writes to: --out, or out/<sweep name>."""
    return Path(args.out) if args.out else default_out(sweep.name)


def _report_files(sweep_path: str, sweep) -> tuple[dict, dict[str, str]]:
    """The goals a sweep's report is drawn with, and the files kept beside its results that hold them (a serving
    sweep's file too): when they, the points and the results are as the report found them last time, re-drawing it
    would draw the same report."""
    serving, search = sweep.spec.serving, sweep.spec.search
    goals = {"objectives": sweep.spec.objectives.model_dump(), "constraints": sweep.spec.constraints,
             "slo": serving.slo.model_dump() if serving and serving.slo else None, "search": search.strategy} | (
        {"rate_profile": [list(phase) for phase in serving.rate_profile]} if serving and serving.rate_profile else {})
    kept = {GOALS_FILE: json.dumps(goals | {"name": sweep.name}, indent=2)} | (
        {SWEEP_COPY: Path(sweep_path).read_text(encoding="utf-8")} if serving else {})
    return goals, kept


def _sweep_into(args, sweep, out: Path, evaluator: Evaluator) -> int:
    from explore.report import host_wait_note, over_tdp_note, write_report

    search = sweep.spec.search
    plan = (count_label(sweep.size(), "design point") if search.strategy == "grid" else
            f"{search.strategy} search over {count_label(sweep.size(), 'design point')}, budget {search.budget}"
            + (" (every point)" if search.budget >= sweep.size() else ""))
    print(f"sweep {sweep.name!r}: {plan} -> {out}/", file=sys.stderr)
    for note in sweep_notes(sweep):
        print(f"note: {note}", file=sys.stderr)
    serving = sweep.spec.serving
    goals, kept = _report_files(args.sweep, sweep)
    stored = stored_ids(out)
    ids, have = stored_of(sweep, stored) if search.strategy == "grid" and stored else (frozenset(), frozenset())
    if have:
        print(f"all {sweep.size()} design points already stored in {out}/" if have == ids else
              f"resuming: {len(have)} of {len(ids)} design points already stored in {out}/, {len(ids - have)} to "
              f"run", file=sys.stderr)
    elif stored and search.strategy != "grid":
        print(f"resuming: {count_label(len(stored), 'design point')} stored in {out}/; the {search.strategy} search "
              f"takes those it asks for again from there", file=sys.stderr)
    if stored and (others := other_models(out)):
        every = bool(ids) and have == ids
        held = "every stored row keeps the numbers it gave" if every else \
            "they keep the numbers it gave, beside this version's new rows"
        print(f"note: rows stored in {out}/ were priced by another version of the cost model too (its code or data "
              f"changed since: {', '.join(others)}); {held}; a new --out folder prices every point with this one",
              file=sys.stderr)
    executor = args.executor
    where = f" on Dask ({args.scheduler or f'local cluster of {args.workers}'})" if executor == "dask" else ""
    if where:
        print(f"evaluating{where}", file=sys.stderr)
    rows = run_sweep(sweep, out, workers=args.workers, evaluator=evaluator,
                     on_progress=None if args.quiet else _progress_printer(ProgressLine()), executor=executor,
                     scheduler=args.scheduler)
    # Kept beside the results so that `explore report DIR` can draw the same Pareto fronts later; a serving
    # sweep's copy, so that it re-runs chosen serving points for their per-request figures. Written after the results
    # are stored: the same sweep run again evaluates none of its points again.
    with refusing_unwritable(f"files beside the results this user can write ({', '.join(kept)}): make it writable "
                             f"or remove it, then run the sweep again (its stored points are not evaluated again)"):
        for name, text in kept.items():
            (out / name).write_text(text, encoding="utf-8")
    inputs = report_inputs(rows, columns_for(sweep), kept)
    if report_current(out, inputs) and not args.force_report:
        html, md = out / REPORT_FILES[0], out / REPORT_FILES[1]
        print(f"the report is up to date: drawn from these results and goals ({html}; --force-report re-draws "
              f"it)", file=sys.stderr)
    else:
        if set(stored).issuperset(r["point_id"] for r in rows):
            print("re-drawing the report", file=sys.stderr)
        html, md = write_report(out, rows, title=sweep.name, evaluator=evaluator, **goals,
                                points={p.point_id: p for p in sweep.points()} if serving else None)
        stamp_report(out, inputs)
    normalized = [normalize_row(r) for r in rows]
    feasible = sum(1 for r in normalized if is_feasible(r))
    notices = ([capacity_notice(rows)]
               + ([capacity_ceiling_notice(rows, serving.capacity[1], "serving.capacity")] if serving.capacity else [])
               if serving else [])
    for notice in notices:
        if notice:
            print(notice, file=sys.stderr)
    for note in (host_wait_note(normalized), over_tdp_note(normalized)):
        if note:
            print(f"note: {note}", file=sys.stderr)
    meeting = (f", {sum(1 for r in normalized if r.get('meets_constraints') is True)} meet the constraints"
               if sweep.spec.constraints else "")
    print(f"{count_label(len(rows), 'design point')} ({feasible} feasible{meeting})\nresults: {out / 'results.csv'}\n"
          f"report:  {html}\nsummary: {md}")
    return 0


def _in_blocks(sweep, evaluator: Evaluator) -> bool:
    """Whether a static sweep's what-ifs are all fields its devices price in blocks (explore/blocks.py)."""
    paths = list(sweep.override_values())
    if not paths or sweep.spec.parallel is not None:
        return False
    return all(varies_in_block(type(evaluator.device(device)), path)
               for device in as_list(sweep.spec.device) for path in paths)


# Traces explore check counts, grouped by model (or MTP module), batch and prompt: their passes as (phase, query tokens
# a sequence, positions sampled a sequence) triples: a static point's prefill and decode, or a speculative
# verification's (sampling every token) or first draft step's (sampling one) decode of several tokens; or one pass of a
# serving step template's (a prefill or a decode of its first layers). Each pass is one trace the run captures (one
# file of the trace cache: workloads/trace_cache.py trace_key), and is counted as one.
Trace = tuple[ModelConfig, int, int, tuple[tuple[str, int, int], ...]]


def _untraced(evaluator: Evaluator, traces: list[Trace]) -> list[Trace]:
    """Of each group, the passes the trace cache lacks (the groups left with none left out)."""
    missing = [(config, batch, prompt, tuple(p for p in passes if not evaluator.is_traced(config, p[0], batch, prompt,
                                                                                          p[1], p[2])))
               for config, batch, prompt, passes in traces]
    return [trace for trace in missing if trace[3]]


def _count(traces: list[Trace]) -> int:
    """The traces (passes) of groups."""
    return sum(len(trace[3]) for trace in traces)


def _routed_models(evaluator: Evaluator, dims: dict) -> list[str | ModelConfig]:
    """The sweep's models as its static points take them (Evaluator.point_model): each routed by each moe_routing it
    takes, a model without experts once. A step template traces its layers balanced whatever the routing
    (kernels/shapes.py template_layers)."""
    routings = dims.get("moe_routing") or [BALANCED]
    return list(dict.fromkeys(evaluator.routed(model, routing) for model in dims["model"] for routing in routings))


def _speculative_traces(sweep, evaluator: Evaluator, dims: dict, serving: bool) -> list[Trace]:
    """The traces a sweep's speculative points take beside their model's, as the run takes them: a static point's
    Evaluator.speculative_passes of its routed model (its draft routed as it is), a served one its draft's step
    templates (Medusa heads are not traced)."""
    workload = sweep.spec.workload
    values = {name: dims.get(name) or as_list(getattr(workload, name)) for name in ("spec_draft", "spec_tokens",
                                                                                   "spec_tree")}
    found: dict[Trace, None] = {}  # in order, once each
    seen: dict[tuple, set] = {}  # the passes found of each (model, batch, prompt): a trace holds those not yet found
    for draft in (d for d in values["spec_draft"] if d):
        for model in dims["model"]:
            if serving:
                found.update(dict.fromkeys([] if draft in (MEDUSA, NGRAM) else _template_traces(
                    evaluator.config(evaluator.draft_of(model, draft)))))
                continue
            for routed, b, p, k, tree in itertools.product(_routed_models(evaluator, {**dims, "model": [model]}),
                                                           dims["batch"], dims["prompt"], values["spec_tokens"],
                                                           values["spec_tree"]):
                spec = Speculation(drafted=k, acceptance=0.0, tree=tree)
                passes = evaluator.speculative_passes(routed, draft, spec, b, p)
                padded = _padded_speculative(evaluator, dims, passes, spec)
                # A draft model's memory reads its weights from its prefill over the prompt (Evaluator.batch_memory).
                held = [] if passes.draft is None else [TracedPasses(passes.draft.model, b, p, PLAIN_PASSES[:1])]
                for t in passes.traced() + padded + held:
                    key = (evaluator.config(t.model), t.batch, t.prompt)
                    new = tuple(x for x in t.passes if x not in seen.setdefault(key, set()))
                    if new:
                        seen[key].update(new)
                        found[(*key, new)] = None
                found.update(dict.fromkeys(trace for config in dict.fromkeys(evaluator.config(t.model) for t in padded)
                                           for trace in _template_traces(config)))
    return list(found)


def _padded_speculative(evaluator: Evaluator, dims: dict, passes: SpeculativePasses,
                        spec: Speculation) -> list[TracedPasses]:
    """The passes a static speculative step's engine pads beside its own (Evaluator._launched_pass): each traced at
    its padded size (padded_traced), and a draft's prefill as one prompt of its padded tokens (Evaluator.tables), on
    any of the sweep's devices; the rows outside their layers come from their models' step templates."""
    if "engine" not in (dims.get("execution") or []):
        return []
    draft_decode = passes.draft and dataclasses.replace(passes.draft, passes=PLAIN_PASSES[1:])
    found = []
    for device in dims["device"]:
        launched = launches(passes, spec, evaluator.device(device), "engine")
        pairs = ((passes.verify, launched.verify), (passes.draft_first, launched.draft_first),
                 (draft_decode, launched.draft_decode))
        found += [padded for own, launch in pairs
                  if own is not None and (padded := padded_traced(own, launch.tokens)) is not None]
        prompts = passes.draft and passes.draft.batch * passes.draft.prompt
        prefill = prompts and pass_launch(evaluator.device(device), "engine", decode_only=False, tokens=prompts)
        if prompts and prefill.tokens > prompts:
            found.append(TracedPasses(passes.draft.model, 1, prefill.tokens, PLAIN_PASSES[:1]))
    return found


# The largest grid whose distinct designs explore check counts: keying its points takes about 2 us each in a static
# grid's blocks, 0.2 ms each for serving points (measured on examples/gpu-whatif-grid.yaml and a serving sweep).
DISTINCT_COUNTED = 20_000


@dataclasses.dataclass(frozen=True)
class RunEstimate:
    """explore check's estimate of a sweep's run, CPU seconds by part."""

    fixed_s: float  # the run's own start and its report's fixed part, once a run
    trace_s: float  # capturing the traces the cache lacks, torch started in each worker that captures
    prepare_s: float  # reading and lowering the traces into kernel tables or step templates
    points_s: float  # evaluating the points (a search's proposals included)
    report_s: float  # drawing the report: its figures, its points, a serving report's re-runs
    figures: int  # the figures the report draws, at most

    @property
    def total_s(self) -> float:
        return self.fixed_s + self.trace_s + self.prepare_s + self.points_s + self.report_s


@dataclasses.dataclass(frozen=True)
class CheckPlan:
    """What explore check finds a sweep's run takes: its traces, those the cache lacks, and the estimate."""

    traces: list[Trace]
    to_capture: list[Trace]
    visits: int
    workers: int
    estimate: RunEstimate
    ids: frozenset[str]  # a grid's distinct points where its folder stores some (none otherwise)
    stored: frozenset[str]  # of them, those stored: the run evaluates the others
    left: int  # of the visits, those the run evaluates (the others are stored)


def plan_check(sweep, evaluator: Evaluator, workers: int, stored: frozenset[str] = frozenset(),
               report_kept: bool = False) -> CheckPlan:
    """The traces a sweep's run takes on `workers` workers and its estimated CPU time, the grid's points among
    `stored` (the ids its folder stores: stored_ids) not evaluated again (check_sweep_points refuses a point that
    cannot run first); with `report_kept` (rerun.stored_report_current), a run that evaluates nothing keeps the
    folder's report and draws none."""
    derived, search = sweep.derived_values(), sweep.spec.search
    dims = sweep.dimensions() | derived  # a derived batch or prompt: the traces it needs are its values
    serving = sweep.spec.serving
    if serving is None:  # a static point traces its model routed by its moe_routing (Evaluator.point_model)
        configs = [evaluator.config(model) for model in _routed_models(evaluator, dims)]
        models = [(config, b, p, PLAIN_PASSES) for config in configs for b in dims["batch"] for p in dims["prompt"]]
        # Once each: a step template both a padded decode and a padded verification take is traced once.
        traces = list(dict.fromkeys(models + _padded_traces(evaluator, dims, configs) + _speculative_traces(
            sweep, evaluator, dims, serving=False)))
        point_s = BLOCK_POINT_S if _in_blocks(sweep, evaluator) else POINT_S
    else:  # each model's step templates
        models = [trace for model in dims["model"] for trace in _template_traces(evaluator.config(model))]
        traces = models + _speculative_traces(sweep, evaluator, dims, serving=True)
    # Traces already in the on-disk cache load in milliseconds (workloads/trace_cache.py).
    to_capture = _untraced(evaluator, traces)
    check_sweep_points(sweep, evaluator)  # before the grid's points are made: a refused one names its line
    if serving is not None:  # its points' requests, drawn once the points are checked
        point_s = _serving_point_s(sweep) * (CAPACITY_RUNS if serving.capacity else 1)
    visits = _evaluated(sweep)
    ids, have = stored_of(sweep, stored) if stored and search.strategy == "grid" else (frozenset(), frozenset())
    left = visits - len(have - _unrun_ids(sweep)) if have else visits
    if not left:  # every point stored: the run starts no worker and captures nothing (run_sweep)
        to_capture = []
    workers = capped_workers(workers, sweep.visits())  # as the run caps them, with its notice
    per_point = point_s + (OPTUNA_S_PER_POINT if search.strategy in ("nsga2", "tpe") else 0.0)
    figures = _report_figures(sweep, dims)
    # A serving report re-runs at most MAX_DETAIL of the points evaluated (report_serving.detail_rows), not more.
    report_s = 0.0 if report_kept and not left else (
        figures * REPORT_S_PER_FIGURE + visits * REPORT_S_PER_POINT
        + (min(MAX_DETAIL, visits) * point_s if serving is not None else 0.0))
    estimate = RunEstimate(fixed_s=RUN_FIXED_S, trace_s=_capture_s(to_capture, workers, serving is not None),
                           prepare_s=_prepare_s(sweep, traces, models, left, workers) if left else 0.0,
                           points_s=left * per_point,
                           report_s=report_s, figures=figures)
    return CheckPlan(traces, to_capture, visits, workers, estimate, ids, have, left)


def cmd_check(args) -> int:
    sweep = load_sweep(args.sweep)
    out = _out_folder(args, sweep)
    stored = stored_ids(out)
    kept = stored_report_current(sweep, out, columns_for(sweep), _report_files(args.sweep, sweep)[1], stored)
    plan = plan_check(sweep, Evaluator(), _workers(args), stored, report_kept=kept)
    search, estimate = sweep.spec.search, plan.estimate
    visits = plan.visits
    # Where the folder stores some of a grid's points, the next line says how many the run evaluates.
    run_plan = (("all distinct" if plan.stored else "all evaluated") if visits == sweep.size() else
                count_label(visits, "distinct design") + ("" if plan.stored else " evaluated")
                ) if search.strategy == "grid" else f"{search.strategy} search evaluates {visits}"
    traces_label = count_label(_count(plan.traces), "trace")
    capture = ("no trace to capture" if not plan.left else
               f"up to {traces_label} to capture" if _count(plan.to_capture) == _count(plan.traces) else
               f"{_count(plan.to_capture)} of {traces_label} to capture (the others are in the trace cache)")
    print(f"{args.sweep}: valid\n{count_label(sweep.size(), 'design point')} ({run_plan}), {capture}")
    if plan.stored:
        have, ids = len(plan.stored), len(plan.ids)
        print(f"all {ids} design points stored already in {out}/; the run evaluates none of them" if have == ids else
              f"{have} of {ids} design points stored already in {out}/; the run evaluates the other {ids - have}")
    elif stored and search.strategy != "grid":
        print(f"{count_label(len(stored), 'design point')} stored already in {out}/; the {search.strategy} search "
              f"takes those it asks for again from there (the estimate counts every point it evaluates)")
    derived = sweep.derived_values()
    for target, values in derived.items():
        shown = ", ".join(v if isinstance(v, str) else f"{v:g}" for v in values[:MAX_SHOWN]) + (
            ", ..." if len(values) > MAX_SHOWN else "")
        count = f"{len(values)} value{'s' * (len(values) != 1)}"
        print(f"derived {target} = {sweep.spec.derived[target]}: {count} ({shown})")
    on = "on one worker" if plan.workers == 1 else f"of CPU time on {plan.workers} workers"
    report = (f"the report in {out}/ is up to date (drawn from these results and goals): the run keeps it"
              if kept and not plan.left else
              f"about {estimate.report_s:.0f} s of it drawing the report (up to {estimate.figures} figures)")
    print(f"estimated run time: about {estimate.total_s:.0f} s {on}, {report}")
    for note in sweep_notes(sweep):
        print(f"note: {note}")
    return 0


def _workers(args) -> int:
    """--workers, refused below 1."""
    if args.workers < 1:
        raise InputError(f"--workers: found {args.workers}, allowed: an integer >= 1")
    return args.workers


def _capture_s(to_capture: list[Trace], workers: int, serving: bool) -> float:
    """CPU time capturing the traces the cache lacks takes, over the run's workers: torch started in each worker that
    captures; a static sweep's trace captured by the one worker whose points take it (explore/runner.py _tasks groups
    them by model, batch and prompt; a group split into tasks of TASK_POINTS that run at once captures it in each, not
    counted), a serving sweep's step template traces by every worker (each builds the template of the points it runs,
    and they start together)."""
    if not to_capture:
        return 0.0
    traces_s = sum(_trace_s(trace) for trace in to_capture)
    if serving:
        return workers * (TORCH_START_S + traces_s)
    return min(workers, len(to_capture)) * TORCH_START_S + traces_s


def _trace_s(trace: Trace) -> float:
    """CPU time capturing a trace takes: each of its passes builds its model's distinct layers (of each MoE layer among
    them, the experts its tokens reach: workloads/decoder.py MoE max_tokens), records their ops and copies them for
    the layers like them (workloads/layer_replication.py layer_plan)."""
    config = trace[0]
    traced = layer_plan(config).config
    return sum(TRACE_S + traced.moe_layers * _built(config, tokens) * TRACE_S_PER_EXPERT_BUILT
               + _dispatched_ops(traced, tokens) * TRACE_S_PER_OP
               + _copied_experts(traced, tokens) * TRACE_S_PER_EXPERT_COPIED
               + (_traced_ops(config, tokens) - _traced_ops(traced, tokens)) * TRACE_S_PER_OP_COPIED
               for tokens in _pass_tokens(trace))


def _pass_tokens(trace: Trace) -> list[int]:
    """The tokens each pass of a trace runs."""
    config, batch, prompt, passes = trace
    return [batch * (prompt if phase == "prefill" else query) for phase, query, *_ in passes]


def _pass_ops(trace: Trace) -> list[int]:
    """The ops each pass of a trace records, about (_traced_ops)."""
    return [_traced_ops(trace[0], tokens) for tokens in _pass_tokens(trace)]


def _serving_point_s(sweep) -> float:
    """CPU time a serving sweep's point takes to simulate its requests, on average over its points (they draw their
    requests' lengths alike, the first point's): a part a request, a part a chunked scheduler's prefill iteration (its
    prompts' tokens over its chunk_tokens), and its iterations' part, SERVING_S_PER_POINT, at most
    SERVING_S_PER_ITERATION an iteration of the requests served one at a time (a prefill and an output token each)."""
    points = sweep.points()
    spec = points[0].serving
    asked = spec.request_set(spec.rate_per_s or 1.0)  # the same lengths at every rate (the same seed draws them)
    requests = len(asked.output_tokens)
    alone = requests + int(asked.output_tokens.sum())
    specs = [point.serving for point in points]
    chunks = int(asked.prompt_tokens.sum()) * sum(1 / s.chunk_tokens for s in specs if s.scheduler == "chunked")
    return (min(SERVING_S_PER_POINT, alone * SERVING_S_PER_ITERATION) + requests * SERVING_S_PER_REQUEST
            + chunks / len(specs) * SERVING_S_PER_CHUNK)


def _prepare_s(sweep, traces: list[Trace], models: list[Trace], visits: int, workers: int) -> float:
    """CPU time preparing the points' kernel tables takes: loading and lowering every trace they take, a part an op; a
    static sweep's a fixed part a (model, batch, prompt, format) combination too, no more of them than its points; a
    serving sweep's step templates built by each worker (each builds those of the points it runs), and lowered again
    for each other format, tp, ep and execution mode the sweep's points run (Evaluator.template's key)."""
    ops = sum(sum(_pass_ops(trace)) for trace in traces)
    lowering_s = sum(_lowering_s(trace) for trace in traces)
    if sweep.spec.serving is not None:
        variants = _swept(sweep, FORMAT_FIELDS + ("tp", "ep", "execution"))
        return workers * lowering_s + (variants - 1) * ops * TEMPLATE_S_PER_OP
    return lowering_s + min(visits, _combinations(sweep, models)) * PREPARE_S_PER_COMBINATION


def _lowering_s(trace: Trace) -> float:
    """CPU time reading and lowering a trace's passes: a part an op of its traced layers, lowered one by one, and a
    part an op of the layers copied from them, whose kernels are copied (kernels/layer_kernels.py)."""
    config = trace[0]
    traced = layer_plan(config).config
    return sum(_traced_ops(traced, tokens) * PREPARE_S_PER_OP
               + (_traced_ops(config, tokens) - _traced_ops(traced, tokens)) * PREPARE_S_PER_OP_COPIED
               for tokens in _pass_tokens(trace))


def _report_figures(sweep, dims: dict) -> int:
    """The figures the sweep's report draws where its points are feasible (explore/report.py figures_drawn): the ones
    called for by the knobs that take several values, a draft, overrides, a slowdown SLO or a capacity search."""
    varied = {name for name, values in dims.items() if len(values) > 1}
    serving = sweep.spec.serving
    drafts = [d for d in dims.get("spec_draft") or as_list(sweep.spec.workload.spec_draft) if d]
    called = {"scaling": "tp" in varied, "formats": "weight_bits" in varied,
              "decode_time": bool(drafts) or "kv_budget" in varied, "whatif": bool(sweep.spec.overrides),
              "serving_slowdown": sweep.limits_slowdown(),
              "serving_capacity": serving is not None and serving.capacity is not None}
    return figures_drawn(len(sweep.spec.objectives.minimize + sweep.spec.objectives.maximize), serving is not None,
                         varies=bool(varied), called={name for name, on in called.items() if on})


def _traced_ops(config: ModelConfig, tokens: int) -> int:
    """The ops a pass of `tokens` tokens records, about: OPS_PER_LAYER a decoder layer and OPS_PER_EXPERT an expert
    of an MoE layer that gets tokens (_reached)."""
    return config.num_layers * OPS_PER_LAYER + config.moe_layers * _reached(config, tokens) * OPS_PER_EXPERT


def _row_counts(config: ModelConfig, tokens: int) -> int:
    """The experts of each MoE layer a fake pass of `tokens` tokens runs: one of each row count among those its
    routing reaches (the others' ops are copied: workloads/decoder.py MoE, workloads/capture.py copied_ops)."""
    loads = expert_load(config.moe_routing, tokens, config.experts_per_token, config.num_experts)
    return len({load for load in loads if load})


def _dispatched_ops(config: ModelConfig, tokens: int) -> int:
    """The ops of _traced_ops a fake pass dispatches: its layers' and the experts it runs (_row_counts)."""
    return config.num_layers * OPS_PER_LAYER + config.moe_layers * _row_counts(config, tokens) * OPS_PER_EXPERT


def _copied_experts(config: ModelConfig, tokens: int) -> int:
    """The experts of a fake pass's MoE layers whose ops are copied, not run (_row_counts)."""
    return config.moe_layers * (_reached(config, tokens) - _row_counts(config, tokens))


def _reached(config: ModelConfig, tokens: int) -> int:
    """The experts of each MoE layer a pass of `tokens` tokens reaches, routed as the trace routes them (the config's
    moe_routing: balanced, a decode step of one sequence reaches experts_per_token experts and a long prefill all;
    uniform and power_law, fewer where tokens collide or crowd), none without experts."""
    loads = expert_load(config.moe_routing, tokens, config.experts_per_token, config.num_experts)
    return sum(1 for load in loads if load)


def _built(config: ModelConfig, tokens: int) -> int:
    """The experts each MoE layer of a pass of `tokens` tokens builds: those of its routing's fill order through the
    last it reaches (experts_reached; the experts reached themselves under balanced and uniform routing)."""
    return experts_reached(tokens, config.experts_per_token, config.num_experts, config.moe_routing)


def _padded_traces(evaluator: Evaluator, dims: dict, configs: list[ModelConfig]) -> list[Trace]:
    """The traces a static sweep's decode steps and prefills padded to a captured size take beside its plain passes
    (Evaluator.tables): each decode at its padded batch, each prefill as one prompt of its padded tokens, and its
    model's step template (kernels/padded_pass.py template_rows). Only an engine pads (sim/step_costs.py
    pass_launch)."""
    if "engine" not in (dims.get("execution") or []):
        return []
    devices = [evaluator.device(device) for device in dims["device"]]
    padded = {pass_launch(device, "engine", decode_only=True, tokens=batch).tokens
              for device in devices for batch in dims["batch"]} - set(dims["batch"])
    prefills = {launch.tokens for device in devices for batch in dims["batch"] for prompt in dims["prompt"]
                if (launch := pass_launch(device, "engine", decode_only=False, tokens=batch * prompt)).tokens
                > batch * prompt}
    if not padded and not prefills:
        return []
    return ([(config, b, p, PLAIN_PASSES[1:]) for config in configs for b in sorted(padded) for p in dims["prompt"]]
            + [(config, 1, tokens, PLAIN_PASSES[:1]) for config in configs for tokens in sorted(prefills)]
            + [trace for config in configs for trace in _template_traces(config)])


def _template_traces(config: ModelConfig) -> list[Trace]:
    """The traces a model's serving step template takes (explore/evaluate.py Evaluator.template): each variant's
    first layers (kernels/mixed_layers.py template_variants, kernels/shapes.py template_layers), one pass at each of
    its template_passes, whatever the model's depth."""
    return [(template_layers(variant), batch, prompt, ((phase, 1, 1),))
            for variant in template_variants(config) for phase, batch, prompt in template_passes(variant)]


def _combinations(sweep, traces: list) -> int:
    """The (model, batch, prompt, format) combinations a static sweep prepares tables for, at most: its traces' (model,
    batch, prompt) by its swept formats (derived format parts follow the swept values: no more formats)."""
    return len(traces) * _swept(sweep, FORMAT_FIELDS)


def _swept(sweep, names: tuple[str, ...]) -> int:
    """The combinations of the values a sweep takes of the dimensions `names`."""
    return math.prod(len(values) for name, values in sweep.dimensions().items() if name in names)


def _evaluated(sweep) -> int:
    """The design points a sweep evaluates: a search's visits; a grid's distinct designs (each of its points past
    DISTINCT_COUNTED), less those it records as not run (Sweep.unrun; the notes say which repeat a design
    and which are not run)."""
    if sweep.spec.search.strategy != "grid":
        return sweep.visits()
    if sweep.size() > DISTINCT_COUNTED:
        return sweep.size() - sum(len(block) for block, _ in sweep.unrun)
    return len(set(sweep.points().point_ids()) - _unrun_ids(sweep))


def _unrun_ids(sweep) -> set[str]:
    """The ids of the points a sweep records as not run (Sweep.unrun)."""
    return {i for block, _ in sweep.unrun for i in block.point_ids}


def _idle_serving_flag(args) -> str:
    """Why a serving flag the user set does nothing beside the other flags given ('' when none): a single run refuses
    it, as it refuses serving flags without --serving (a sweep's grids may cross such settings on purpose; the rules
    are explore/serving_settings.py's, which a sweep's serving: section is checked by too)."""
    dests = {f.name: flag_of(f.name).removeprefix("--").replace("-", "_") for f in dataclasses.fields(ServingSpec)}
    values = {field: (getattr(args, dest),) for field, dest in dests.items() if hasattr(args, dest)} | {
        "pp": (args.pp,), "ranks": (data_parallel_ranks(args.tp, args.attention_parallel),)}
    flags = {flag for flag, _ in serving_flags_set(args)}
    given = {field for field in values if flag_of(field) in flags or (
        field in ("prompt", "output") and getattr(args, field) != KNOBS[field].default)}
    idle = idle_setting(given, values, FlagNames())
    if idle is None:
        return ""
    value = values[idle.field][0]
    try:  # a value the setting never takes (a negative size) is refused as such, not for what it is set beside
        if idle.field in KNOBS:
            KNOBS[idle.field].validate(value)
    except ValueError as err:
        return f"{flag_of(idle.field)}: {err}"
    return f"{flag_of(idle.field)}: {idle.message(f'{value:g}' if isinstance(value, float) else repr(value))}"


def _check_chrome_trace(args) -> None:
    """--chrome-trace writes a per-kernel timeline: into a folder that exists, of a point that has one (InputError
    otherwise)."""
    if not args.chrome_trace:
        return
    check_out_file("--chrome-trace", args.chrome_trace)
    if args.spec_draft and not args.serving:
        raise InputError(f"--chrome-trace: found with --spec-draft {args.spec_draft!r}, allowed: a static batch "
                         f"without speculative decoding, or --serving (a static batch's speculative steps are priced "
                         f"in closed form, sim/speculative.py, with no per-kernel timeline to write)")


def cmd_run(args) -> int:
    values = {knob.name: getattr(args, knob.name) for knob in run_knobs()}
    for knob in run_knobs():
        try:
            values[knob.name] = knob.validate(values[knob.name])  # one spelling ('unstructured:0.5')
        except ValueError as err:
            raise InputError(f"{knob.flag_name}: {err}") from None
    if not args.serving and (stray := serving_flags_set(args)):  # else a static batch would ignore them silently
        flag, value = stray[0]
        shown = " ".join(f"{v:g}" for v in value) if isinstance(value, list) else (
            f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else value)
        raise InputError(f"{flag}: found {shown} without --serving, allowed: with --serving (a serving run's flag: a "
                         f"static batch has no arriving requests), or left out")
    if args.serving and args.batch != KNOBS["batch"].default:  # the scheduler forms a serving run's batches
        raise InputError(f"--batch: found {args.batch} with --serving, allowed: left out (a serving run's batches "
                         f"are its scheduler's; --max-seqs caps them)")
    if args.serving and (idle := _idle_serving_flag(args)):
        raise InputError(idle)
    _check_chrome_trace(args)
    if args.ops and args.serving:
        raise InputError("--ops: found with --serving, allowed: a static batch (the table is of one prefill and "
                         "one decode step)")
    serving = _serving_spec(args) if args.serving else None
    if serving is not None and args.sim:
        raise InputError("--sim: found with --serving, allowed: a static batch (a serving run is an event "
                         "simulation already)")
    if serving is not None:  # a serving point has no static batch: batch is its sequence limit
        values.update(batch=serving.max_seqs, prompt=0, output=0)
    point = DesignPoint(**with_knobs(values), use_calibration=not args.roofline, serving=serving)
    # The point's values as one (explore/point_values.py: context, KV budget, parallel layout, format, drafting), each
    # named by its flag; a model config's own errors are no flag's.
    config = load_model_config(args.model)
    check_point_values(point, config, name=flag_name)
    check_idle_knobs(point, name=flag_name)  # --link and --allreduce on one device too (Knob.only_with)
    if reason := point.unjudged():  # a sweep records such a point unevaluated; one point asked for is refused
        raise InputError(_flagged(reason))
    if args.tp * args.pp > 1:  # the link the devices talk over: --link, else the device's own
        load_link_model(args.link or default_link(load_device(args.device).name))
    overrides, link_overrides, pools = parse_sets(args.set, args.device)
    check_sets(args.device, overrides, args.link, link_overrides, args.tp * args.pp, serving, pools)
    point = replace(point, overrides=tuple(overrides.items()), link_overrides=tuple(link_overrides.items()),
                    **{pool.field: tuple(pools[pool.prefix].items()) for pool in POOL_WHAT_IFS})
    simulate = (args.sim or bool(args.chrome_trace)) and serving is None
    evaluator = Evaluator()
    try:
        evaluation = evaluator.evaluate(point, event_sim=simulate, timeline=bool(args.chrome_trace))
    except InputError as err:  # the evaluation names a setting by its key, as a sweep writes it
        raise InputError(_flagged(str(err))) from None
    if evaluation.result is None:
        return _print_infeasible(args, point, evaluator, evaluation.metrics, config)
    if args.chrome_trace:
        from sim.chrome_trace import write_chrome_trace

        # With the tables and the device, each kernel's event carries its class, FLOPs, bytes and bound; the process
        # is named for the whole system ('h100-sxm x2 + h20 x4').
        write_chrome_trace(evaluation.result, device_label(point.row()), args.chrome_trace, tables=evaluation.tables,
                           device=evaluator.point_device(point), execution=point.execution,
                           workload=_static_batch(point))
    metrics = json_safe(evaluation.metrics) | _set_inputs(point)
    system = evaluator.point_device(point)
    fitted_links = [system.link.name] if point.tp * point.pp > 1 and system.link.fitted_on else []
    for note in (idle_peak_note(overrides, [args.model]), fixed_peak_sm_note(overrides),
                 fitted_latency_note(fitted_links, dict(point.link_overrides)),
                 power_limit_note(evaluation.metrics["avg_power_W"], evaluation.metrics["tdp_W"]),
                 dense_prefill_note(point),
                 "" if serving is None or not args.seed else unread_seed_note(
                     serving.trace, serving.arrival, [serving.prefix_groups], [serving.priority_fraction],
                     bool(point.knob("spec_draft")), [serving.router], "--seed"),
                 "" if serving is None else fixed_scaling_note(serving),
                 "" if serving is None else first_phase_note(serving)):
        if note:
            print(f"explore: notice: {note}", file=sys.stderr)
    from explore.report import waits_on_dispatch  # here: the report module is slow to import for every command

    if waits_on_dispatch(point.row() | evaluation.metrics):
        print(f"explore: notice: this point waits on PyTorch eager's dispatch on the host "
              f"({evaluation.metrics['time_host_wait_s'] * 1e3:.1f} ms over the run: time_host_wait_s), so its decode "
              f"steps take the host's time whatever the device or format; --execution graphs or engine removes the "
              f"wait", file=sys.stderr)
    if evaluation.metrics.get("capacity_judged") == 0.0:  # sim/capacity.py: the requests, not the design, stopped it
        print(f"explore: notice: capacity {evaluation.metrics['capacity_note']}; raise --requests to judge it",
              file=sys.stderr)
    if serving is not None and serving.capacity is not None and (
            ceiling := capacity_ceiling_notice([evaluation.metrics], serving.capacity[1], "--capacity's HIGH")):
        print(f"explore: {ceiling}", file=sys.stderr)
    if clipped := evaluation.metrics.get("clipped_requests"):  # workloads/requests.py RequestSet.clipped_to_context
        print(f"explore: notice: {clipped:,.0f} of {serving.requests:,} requests cut to {config.name}'s context of "
              f"{config.max_positions:,} tokens (max_position_embeddings): an output keeps at most half of it, the "
              f"prompt what is left (clipped_requests)", file=sys.stderr)
    ops = _op_rows(args, point, evaluator, evaluation)
    pools = _fleet_pools(point, evaluation.result)
    if args.json:
        print_json(metrics | ({"ops": [asdict(row) for row in ops]} if ops is not None else {})
                   | ({"pools": [json_safe(pool) for pool in pools]} if pools else {}))
    else:
        print(f"# {_assumptions(point, evaluator.point_device(point), config)}")
        _print_metrics(metrics)
        if pools:
            print()
            _print_pools(pools)
        if ops is not None:
            print()
            print(format_op_table(ops, dispatch_s=dispatch_s(evaluator.point_device(point), point.execution)), end="")
    return 0


def _op_rows(args, point: DesignPoint, evaluator: Evaluator, evaluation) -> list | None:
    """The per-op table's rows where --ops asks for them (a static point: a serving run has no one pass)."""
    if not args.ops:
        return None
    return op_rows(evaluation.tables, evaluator.point_device(point), point.execution, evaluation.speculative,
                   workload=_static_batch(point))


def _static_batch(point: DesignPoint) -> BatchWorkload | None:
    """The static batch a point's tables were traced for (None for a serving point)."""
    if point.serving is not None:
        return None
    return BatchWorkload(batch=point.batch, prompt_len=point.prompt, output_len=point.output)


def _set_inputs(point: DesignPoint) -> dict:
    """What a run's output adds to the metrics: the device and link fields set with --set and the generic knobs
    (explore/knobs.py) set to other than their default."""
    return {column: value for column, value in point.row().items()
            if column.startswith(WHAT_IF_PREFIXES) or column in dict(point.knobs)}


def _fleet_pools(point: DesignPoint, result) -> list[dict]:
    """A fleet's pools (explore/report_detail.py pool_rows): each one's device, replicas and the requests it served;
    none for a point of one pool, or one prefill and one decode pool."""
    if point.serving is None or not point.serving.mixed:
        return []
    from explore.report_detail import pool_rows  # here: it imports the report's plotting

    return pool_rows(point, result.pool_figures())


def _print_pools(pools: list[dict]) -> None:
    """A fleet's pools as an aligned table, one line each (explore/report_detail.py POOL_COLUMNS)."""
    from explore.report_detail import POOL_COLUMNS, pool_cells

    lines = [[label for label, _, _ in POOL_COLUMNS], *(pool_cells(pool) for pool in pools)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(POOL_COLUMNS))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _print_metrics(metrics: dict) -> None:
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        # None: a number with no value (NaN in results.csv: a price the preset does not publish), as the report says it;
        # a yes/no as 1 or 0, as the float flags (capacity_judged) show.
        shown = f"{value:.6g}" if isinstance(value, float | bool) else "n/a" if value is None else value
        print(f"{key:<{width}}  {shown}")


def _print_infeasible(args, point: DesignPoint, evaluator: Evaluator, metrics: dict, config: ModelConfig) -> int:
    """A point that does not fit: why, in one line first, then changes that fit (each evaluated), then what is
    known of it (memory, area, price; no timings). Exit code 1."""
    reason = metrics["infeasible_reason"]
    hints = infeasible_hints(evaluator, point)
    shown = json_safe(metrics) | _set_inputs(point)
    if args.json:
        print(f"explore: infeasible: {reason}", file=sys.stderr)
        print_json(shown | {"hints": [hint.as_dict() for hint in hints]})
        return 1
    print(f"infeasible: {reason}")
    if hints:
        print("these fit (each evaluated):")
        width = max(len(hint.flags) for hint in hints)
        for hint in hints:
            print(f"  {hint.flags:<{width}}  peak memory {hint.peak_memory_B / 1e9:.1f} GB of "
                  f"{hint.capacity_B / 1e9:.1f} GB")
    elif point.serving is None:
        print(f"nothing checked fits: fewer weight or KV bits (down to {min(HINT_BITS)}), up to {max(HINT_TP)} "
              f"tensor-parallel devices, or a preset of kind {evaluator.point_device(point).kind} with more memory")
    if args.chrome_trace:
        print(f"--chrome-trace: {args.chrome_trace} not written (a point that does not fit has no timeline)")
    print(f"# {_assumptions(point, evaluator.point_device(point), config)}")
    _print_metrics({k: v for k, v in shown.items() if v is not None})
    return 1


def _scaling_words(s: ServingSpec, scaling) -> str:
    """How an autoscaled pool decides its replicas, and how often where the sweep sets it, as `explore run`'s header
    says it. Both of Dynamo's modes recompute the throughput-based floor at the SLA planner's own interval, whatever
    autoscale_interval_s (the load-based adjustments') says."""
    every = f" every {s.autoscale_interval_s:g} s" if s.autoscale_interval_s is not None else ""
    load = f"a replica at a time on each one's estimated TTFT and TPOT against the SLO{every}"
    if scaling.policy == "hpa" and s.autoscale_target is None:  # from zero up to one: KEDA alone
        return "by KEDA alone"
    if scaling.policy == "hpa":
        return f"as the HPA does, on {scaling.metric} requests near {s.autoscale_target:g} a replica{every}"
    if scaling.policy == "load_planner":
        return f"as Dynamo's load-based planner does, {load}"
    forecast = " forecast by a Kalman filter" if s.autoscale_predictor == "kalman" else ""
    throughput = f"the load it saw{forecast} and a TPOT of {s.slo_tpot_s:g} s"
    if scaling.policy == "sla_planner":
        return f"as Dynamo's SLA planner does, on {throughput}{every}"
    return (f"as Dynamo's planner does with both modes, {load}, above the SLA planner's replicas for {throughput} "
            f"every {SLAPlanner.default_interval_s:g} s")


def fixed_scaling_note(serving: ServingSpec) -> str:
    """Where autoscaling is asked of pools whose most replicas are their least: they never scale; '' elsewhere."""
    scaled = [(flag_of(most), getattr(serving, most), getattr(serving, least)) for most, least in SCALED_POOLS
              if getattr(serving, most) is not None]
    if not scaled or any(most > least for _, most, least in scaled):
        return ""
    # The settings that only size scaling, named where the user gave them.
    idle = [flag_of(name) for name in AUTOSCALE_KNOBS if not name.endswith("max_replicas")
            and getattr(serving, name) is not None]
    named = " and ".join(filter(None, (", ".join(idle[:-1]), idle[-1]))) if idle else ""
    unread = f", and {named} {'changes' if len(idle) == 1 else 'change'} nothing" if idle else ""
    least = ", ".join(f"{flag} {most}" for flag, most, _ in scaled)
    return f"{least} is the least the pool keeps: it never scales{unread}"


def first_phase_note(serving: ServingSpec) -> str:
    """Where a rate profile's requests all arrive within its first phase, so the profile changes nothing; ''
    elsewhere (or where a capacity search sets the rate)."""
    if not serving.rate_profile or serving.capacity or serving.rate_per_s is None:
        return ""
    first_s = serving.rate_profile[0][0]
    last_s = float(serving.request_set().arrival_s[-1])
    if last_s >= first_s:
        return ""
    return (f"--rate-profile: every one of the {serving.requests:,} requests arrives within its first phase "
            f"({last_s:.1f} s of {first_s:g}), so the profile changes nothing; raise --requests to reach its later "
            f"phases")


def _rate_profile(text: str | None) -> tuple[tuple[float, float], ...] | None:
    """--rate-profile's phases, 'S:X,S:X' as (seconds, multiplier) pairs (their values ServingSpec checks)."""
    if text is None:
        return None
    try:
        return tuple((float(seconds), float(multiplier)) for seconds, multiplier in
                     (phase.split(":") for phase in text.split(",")))
    except ValueError:
        raise InputError(f"--rate-profile: found {text!r}, allowed: phases S:X separated by commas, each S seconds at "
                         f"X times --rate, e.g. 600:1,300:3") from None


def _fixed(flag: str, tokens: int) -> Fixed:
    """A serving run's fixed request length given by `flag`, a refusal named by it ('--prompt: found ...')."""
    try:
        return Fixed(tokens=tokens)
    except InputError as err:
        raise InputError(f"{flag}: {str(err).partition(': ')[2]}") from None


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
                              ("--mixed-device", args.mixed_device, load_device),
                              ("--kv-link", args.kv_link, load_link_model),
                              ("--prefill-node-link", args.prefill_node_link, KNOBS["prefill_node_link"].validate),
                              ("--mixed-node-link", args.mixed_node_link, KNOBS["mixed_node_link"].validate),
                              ("--attention-device", "" if args.attention_device == "none" else args.attention_device,
                               load_device),
                              ("--attention-link", args.attention_link, load_link_model)):
        try:
            if value:
                load(value)
        except InputError as err:  # a name's message leads with its key ('device: found ...'), a file's with the file
            key, _, rest = str(err).partition(": ")
            raise InputError(f"{flag}: {rest if key in ('device', 'link') and rest else err}") from None
        except ValueError as err:  # a knob's refusal of a value that loads (a storage tier as a node link)
            raise InputError(f"{flag}: {err}") from None
    if not 0 < args.slo_attainment <= 1:
        raise InputError(f"--slo-attainment: found {args.slo_attainment}, allowed: a fraction in (0, 1]")
    if args.capacity and args.rate is not None:  # the search picks the rate: a given one would be ignored
        raise InputError(f"--rate: found {args.rate:g} with --capacity, allowed: one of them (--capacity searches "
                         f"the rate), as a sweep's serving: takes rate or capacity")
    fields = dict(scheduler=args.scheduler, requests=args.requests, arrival=args.arrival, rate_per_s=args.rate,
                  cv=args.cv, trace=args.trace, prompt=_fixed("--prompt", args.prompt),
                  output=_fixed("--output", args.output),
                  max_seqs=args.max_seqs, max_batched_tokens=args.max_batched_tokens,
                  chunk_tokens=args.chunk_tokens, prompt_batch_tokens=args.prompt_batch_tokens,
                  long_prefill_tokens=args.long_prefill_tokens,
                  block_tokens=args.block_tokens, prefix_tokens=args.prefix_tokens,
                  prefix_groups=args.prefix_groups, queue_policy=args.queue_policy,
                  priority_fraction=args.priority_fraction,
                  conversation_turns=args.conversation_turns, think_s=args.think_s, think_cv=args.think_cv,
                  preemption=args.preemption, swap_GBps=args.swap_GBps, seed=args.seed,
                  rate_profile=_rate_profile(args.rate_profile), slo_ttft_s=args.slo_ttft,
                  slo_tpot_s=args.slo_tpot, slo_urgent_ttft_s=args.slo_urgent_ttft,
                  slo_urgent_tpot_s=args.slo_urgent_tpot, slo_attainment=args.slo_attainment,
                  slo_slowdown=SLOWDOWN_PRESETS[args.slo_slowdown] if args.slo_slowdown else None,
                  capacity=tuple(args.capacity) if args.capacity else None,
                  replicas=args.replicas, prefill_replicas=args.prefill_replicas, prefill_device=args.prefill_device,
                  mixed_device=args.mixed_device or "", mixed_replicas=args.mixed_replicas or 0,
                  prefill_node_link=args.prefill_node_link, mixed_node_link=args.mixed_node_link,
                  max_replicas=args.max_replicas, prefill_max_replicas=args.prefill_max_replicas,
                  mixed_max_replicas=args.mixed_max_replicas,
                  autoscale_target=args.autoscale_target,
                  autoscale_metric=args.autoscale_metric, cold_start_s=args.cold_start_s,
                  autoscaler=args.autoscaler, autoscale_interval_s=args.autoscale_interval_s,
                  busy_kv_usage=args.busy_kv_usage, busy_prefill_tokens=args.busy_prefill_tokens,
                  busy_waiting_requests=args.busy_waiting_requests, busy_action=args.busy_action,
                  client_retries=args.client_retries, client_retry_s=args.client_retry_s,
                  autoscale_predictor=args.autoscale_predictor,
                  kv_link=args.kv_link, router=args.router, decode_pick=args.decode_pick,
                  prefix_attention=args.prefix_attention,
                  memory_utilization=args.memory_utilization, host_cache_GB=args.host_cache_GB,
                  kv_store_GB=args.kv_store_GB, kv_store_GBps=args.kv_store_GBps,
                  lora_adapters=args.lora_adapters, lora_rank=args.lora_rank, max_loras=args.max_loras,
                  lora_alpha=args.lora_alpha, attention_device=args.attention_device,
                  # Unset attention flags take the spec's defaults.
                  **{name: getattr(args, name) for name in ("attention_devices", "attention_link",
                                                            "attention_micro_batches", "attention_placement")
                     if getattr(args, name) is not None})
    if args.seed < 0:
        raise InputError(f"--seed: found {args.seed}, allowed: an integer >= 0")
    try:
        spec = ServingSpec(**fields)
        spec.check_context(load_model_config(args.model).max_positions, args.model)
        if reason := spec.unjudged():  # a sweep records such a point unevaluated; one point asked for is refused
            raise InputError(reason)
        return spec
    except InputError as err:  # a field's message by its flag; a trace file's names the file
        raise InputError(_flagged(str(err))) from None


def _flagged(message: str) -> str:
    """A message leading with a setting's key ('allreduce: found ...', 'exit_depth: found 0.5 with spec_draft ...') as
    explore run names the settings it names, by their flags; as it is where it leads with no setting's key (a file's
    path)."""
    return renamed(message, _flag, SPEC_FIELDS | {knob.name for knob in knobs()}) or message


def _flag(setting: str) -> str:
    """The flag of a ServingSpec field (flag_of: '--rate') or of a knob ('--spec-draft')."""
    return flag_of(setting) if setting in SPEC_FIELDS else flag_name(setting)


# The kernel classes a GPU calibration can fit (hw_models.calibration): any other is priced on the roofline.
FITTABLE_CLASSES = ("gemm", "attention", "norm", "elementwise", "activation", "rope", "embedding")


def _calibration_text(device, fused_moe: bool = False) -> str:
    """Which fits priced a device's kernels: its own, a sibling's, or none (and the classes left on the roofline);
    `fused_moe`: the point runs fused MoE layers (an MoE model in engine execution)."""
    cal = getattr(device, "calibration", None)
    if cal is None:
        return ("uncalibrated datasheet roofline" if device.kind == "gpu"
                else f"uncalibrated analytical {device.kind} model")
    parts = []
    if cal.provenance:
        parts.append(f"calibrated on {cal.provenance['rows_used']:,} measured kernels ({cal.provenance['date']})")
    if cal.borrowed:
        parts.append(f"{', '.join(cal.borrowed)} fitted on sibling {cal.sibling}")
    roofline = [c for c in FITTABLE_CLASSES if c not in cal.fitted_classes]
    if roofline:
        parts.append(f"{', '.join(roofline)} on the datasheet roofline")
    if fused_moe and "moe" not in cal.fitted_classes and "gemm" in cal.fitted_classes:
        # A fused MoE layer without a fit of its own runs as grouped GEMMs (hw_models/gpu_moe.py).
        parts.append("fused MoE layers as grouped GEMMs on the gemm fit")
    return "; ".join(parts)


def _launch_text(execution: str, device) -> str:
    """How an execution mode launches kernels on a device, with its per-kernel costs."""
    launch, node = device.host_s("eager") * 1e6, device.host_s("graphs") * 1e6
    if execution != "eager" and device.kind != "gpu":  # no CUDA graphs: the device's own launch, whatever the mode
        fused = (" (the eager kernels: llama.cpp runs no fused QKV or gate/up GEMMs)"
                 if device.kind in UNFUSED_ENGINE_KINDS else " (fused kernels)") if execution == "engine" else ""
        return f"{execution} execution{fused}, {launch:.1f} us launch per kernel"
    if execution == "engine":
        return (f"engine execution (fused kernels; decode replayed from CUDA graphs, {node:.1f} us per kernel; "
                f"prefill launched from the host, {launch:.1f} us per kernel)")
    if execution == "eager":
        dispatch = dispatch_s(device, "eager") * 1e6
        host = f"; {dispatch:.1f} us PyTorch dispatch per kernel on the host, overlapping device time" * (dispatch > 0)
        return f"eager execution, {launch:.1f} us launch per kernel{host}"
    return f"{execution} execution, {device.host_s(execution) * 1e6:.1f} us launch per kernel"


def _padded_decode_text(point: DesignPoint, device) -> str:
    """', its decode padded from 3 to 4 sequences ...' where an engine runs a static point's decode steps padded to a
    captured size (sim/step_costs.py batch_launches, under the point's capture limits); '' otherwise. A serving point's
    iterations pad each as it comes, and a speculative one's verification by its own query length."""
    if point.serving is not None or point.knob("spec_draft"):
        return ""
    _, decode = batch_launches(device, point.execution, BatchWorkload(
        batch=point.batch, prompt_len=point.prompt, output_len=point.output), limits=Evaluator.capture_limits(point))
    if decode.tokens <= point.batch:
        return ""
    return f", its decode padded from {point.batch} to {decode.tokens} sequences (vLLM's captured sizes)"


def _assumptions(point: DesignPoint, device, config: ModelConfig) -> str:
    """What a prediction assumed: calibration and kernel launch mode; `config`: the point's model's."""
    device_name = _named(point.device)
    if point.tp > 1 or point.pp > 1:
        link = device.link

        def priced(kind: str, words: str) -> str:
            source = link.fitted_on.get(kind)
            if not point.use_calibration:  # --roofline: every link on its datasheet, whatever was measured on it
                return f"{words} on the datasheet alpha-beta model, as every link under --roofline"
            # The datasheet model runs 45-85% under every measured system's NCCL times (README, Accuracy): a fitted
            # link beside it may rank slower than a slower one priced so.
            return (f"{words} fitted on {source} NCCL data" if source else
                    f"{words} on the datasheet alpha-beta model, no measured {kind} on {link.spec.name}: 45-85% "
                    f"under measured NCCL times, so compare it with fitted links under --roofline")

        collectives = []  # how the collectives the point runs are priced: tp's all-reduces, the stages' sends
        data_parallel = point.knob("attention_parallel") == "data"
        if data_parallel and point.ep == point.tp:
            collectives.append(priced("all_to_all", "dispatch and combine all-to-alls"))
        elif data_parallel:
            collectives += [priced("all_gather", "token all-gathers"), priced("reduce_scatter", "reduce-scatters")]
        elif point.tp > 1:
            nccl = priced("all_reduce", "all-reduce")
            if device.allreduce == "star":
                nccl = (f"star all-reduce (a master gathers every buffer and sends back the sum: 2 (n-1) S / B + 2 "
                        f"hops) on {link.spec.name}'s datasheet bandwidth and latency")
            elif device.custom_all_reduce:
                nccl = f"custom one-shot/two-shot all-reduce kernels, NCCL ({nccl}) where faster"
            elif device.allreduce == "custom":
                nccl += (f"; NCCL, not custom all-reduce kernels: {point.tp} devices, and {link.spec.name} joins at "
                         f"most {link.spec.peer_devices} that reach each other's memory")
            elif device.nvls_all_reduce:
                fit = device.nvls_fit
                nccl = f"NVLS all-reduce, the switch reducing (NVLink SHARP), NCCL ({nccl}) where faster, NVLS " + (
                    "on the datasheet model" if fit is None else
                    f"fitted on {fit.provenance['data']['file']}" if fit.link == link.spec.name else
                    f"fitted over {fit.link} ({fit.provenance['data']['file']}): its latency and fraction of "
                    f"{link.spec.name}'s bandwidth")
            elif device.allreduce == "nvls":
                nccl += ("; NCCL, not NVLS: " + (f"{link.spec.name}'s switch does not reduce" if not link.spec.multimem
                                                 else f"{point.tp} devices, and {link.spec.name} joins at most "
                                                      f"{link.spec.peer_devices}"))
            collectives.append(nccl)
        if point.pp > 1:
            collectives.append(priced("send_recv", "send/recv"))
        if point.knob("overlap") == "token_split":
            collectives.append("each iteration's tokens in two halves where that is faster, one half's all-reduces "
                               "beside the other's compute (TokenWeave)")
        elif point.knob("overlap") == "dual_batch":
            collectives.append(f"each iteration in two micro-batches where every rank has {DBO_DECODE_TOKENS} decode "
                               f"tokens or {DBO_PREFILL_TOKENS} with a prefill, one's all-to-alls beside the other's "
                               f"compute (vLLM's dual-batch overlap)")
        fitted_link = "; ".join(collectives)
        if device.node_link is not None:  # the system spans nodes (hw_models/nodes.py)
            per_node = nodes.node_layout(point.tp, link.spec)[0] if device.tp_nodes > 1 else link.spec.domain_devices
            node = device.node_link
            how = _link_source(node)
            # The node link as the point names it, before the cap its devices' PCIe links set (SystemModel's is capped).
            named = load_link(point.knob("node_link") or default_node_link(device.spec.name))
            crossing = ("collectives across nodes run hierarchically" if device.tp_nodes > 1 else "") + (
                " and " if device.tp_nodes > 1 and point.pp > 1 else "") + (
                "sends between stages on different nodes cross it" if point.pp > 1 else "")
            fitted_link += (f"; spans {device.nodes} nodes of {per_node} joined by "
                            f"{link_rate_text(named, device.spec)}, a port per device: {crossing}, "
                            f"{node.spec.name} {how}")
        elif point.knob("node_link"):
            readers = node_link_readers(point.device, point.knob("link"), point.tp, point.pp, point.link_overrides,
                                        point.serving)
            # Its rate as the point's devices reach it, over their own PCIe links (as a pool's own node link is said).
            said = link_rate_text(load_link(point.knob("node_link")), device.spec)
            fitted_link += (f"; --node-link {said} read by " + " and ".join(readers) if readers else
                            f"; --node-link {point.knob('node_link')} unread: the {point.tp * point.pp} devices fit "
                            f"one node of {link.spec.name}")
        stages = (f" in {point.pp} pipeline stages" if point.pp > 1 else "") + (
            f", experts spread over the {point.ep} devices" if point.ep > 1 else "") + (
            f", each sequence's KV tokens split over {point.knob('dcp')} of them (decode context parallel)"
            if point.knob("dcp") > 1 else "")
        placed = "spread" if point.ep == point.tp else "split"
        layout = (f"{point.tp} data-parallel attention ranks, experts {placed} over them" if data_parallel else
                  f"{point.tp}-way tensor parallel{stages}")
        system = f"{point.tp * point.pp} x {device_name}, {layout} over {link.spec.name} ({fitted_link}); "
        device = device.device
    else:
        system = ""
    fitted = _calibration_text(device, point.execution == "engine" and config.is_moe)
    # The config's name (a file's folder or stem), as a device file is named by its name: rather than its path.
    what = (f"{config.name} on {device_name}: {system}{fitted}; {_launch_text(point.execution, device)}"
            f"{_padded_decode_text(point, device)}")
    notices = (format_notice(device, point.numeric_format, config.head_dim), sixteen_bit_notice(device, config.dtype),
               estimate_notice(device, point.knob("prefill_kept")))
    what += "".join(f"; {notice}" for notice in notices if notice)
    if point.overrides or point.link_overrides or any(getattr(point, pool.field) for pool in POOL_WHAT_IFS):
        what += f"; what-if (--set): {overrides_text(point)}"
    cap_W = getattr(device.spec.power, "cap_W", None)  # from --set or the device file: a GPU's power limit
    if cap_W is not None:
        what += (f"; power limit {cap_W:g} W a device (a kernel that would draw more runs at a lower clock: "
                 f"hw_models/gpu_power.py)")
    if point.knob("offload") != "none" and point.knob("offload_window"):
        window = point.knob('offload_window')
        what += (f"; weights under a sliding window of {count_label(window, 'layer')}, every layer's streamed "
                 f"over the host link each pass (offloaded_B: what host memory holds)")
    elif point.knob("offload") != "none":
        what += f"; offload {point.knob('offload')} when it does not fit (offloaded_B: what host memory holds)"
    if point.knob("spec_draft"):
        what += f"; {_speculation_text(point)}"
    if point.serving is not None:
        s = point.serving
        rate = (f"capacity search in {s.capacity[0]:g}-{s.capacity[1]:g} req/s" if s.capacity
                else f"{s.rate_per_s:g} req/s" if s.rate_per_s else "the trace's arrival times")
        prefill = _named(s.prefill_device or point.device)
        pools = (f"{count_label(s.prefill_replicas, 'prefill replica')} ({prefill}{_own_node_link('prefill', point)}) "
                 f"handing KV over {_handoff_text(point)} to "
                 f"{count_label(s.replicas, 'decode replica')}"
                 if s.disaggregated
                 else count_label(s.replicas, "replica") if s.replicas else "no replica while idle")
        if s.mixed:
            devices = point.tp * point.pp  # each mixed replica is laid out as the point's replicas are
            each = f", {devices} devices each over {_pool_link(s.mixed_device, point)}" if devices > 1 else ""
            handoff = f", KV over {_handoff_text(point, 'mixed')}" if s.disaggregated else ""
            pools += (f" and {s.mixed_replicas} of {_named(s.mixed_device)} ({_pool_fits(s.mixed_device, point)}"
                      f"{each}{_own_node_link('mixed', point)}{handoff}), one router over them all")
        scaling = s.autoscaling("decode") or s.autoscaling("prefill") or s.autoscaling("mixed")
        if scaling is not None:
            own = ((("prefill", s.prefill_max_replicas), ("decode", s.max_replicas)) if s.disaggregated
                   else ((device_name, s.max_replicas),) if s.mixed else ())
            pairs = own + (((f"mixed {_named(s.mixed_device)}", s.mixed_max_replicas),) if s.mixed else ())
            scaled = f" scaling up to {s.max_replicas}" if not pairs else ", scaling the " + " and the ".join(
                f"{what} replicas up to {most}" for what, most in pairs if most is not None)
            if s.replicas == 0:
                scaled += (" from zero (KEDA starts one at its 30 s poll where requests wait at the gateway, and gives "
                           "them all back 300 s after the last of its polls that found a request)")
            how = _scaling_words(s, scaling)
            pools += (f"{scaled} {how}, each new one serving after "
                      + (f"{s.cold_start_s:g} s" if s.cold_start_s is not None else "its weights' read from a local "
                         "NVMe SSD"))
        if s.admission() is not None:
            over = " or ".join(text for text in (
                # The share as given (0.995 is not 100%, 0.0001 not 0%).
                f"{100 * s.busy_kv_usage:g}% of its KV blocks in use" if s.busy_kv_usage is not None else "",
                f"{s.busy_prefill_tokens:,} prompt token{'' if s.busy_prefill_tokens == 1 else 's'} to prefill"
                if s.busy_prefill_tokens is not None else "",
                f"{s.busy_waiting_requests:,} request{'' if s.busy_waiting_requests == 1 else 's'} waiting"
                if s.busy_waiting_requests is not None else "")
                if text)
            action = "queueing at the gateway" if s.busy_action == "queue" else "rejecting"
            pools += f", {action} a request that finds every replica busy (over {over})"
            if retries := s.admission().retries:
                pools += (f", its client retrying it {retries} time{'' if retries == 1 else 's'}, the first after "
                          f"{s.admission().retry_s:g} s")
        if s.attends_apart:
            crossing = s.attention_crossing(_named(point.device), _named(s.attention_device), point.tp * point.pp,
                                            point.knob("node_link"))
            sources = dict.fromkeys(_link_source(load_link_model(name)) for name in crossing)
            pools += (f", attention on {s.attention_devices} x {_named(s.attention_device)} "
                      f"({_pool_fits(s.attention_device, point)}) per "
                      f"{'decode ' if s.disaggregated else ''}replica over {_attention_link_text(point, crossing)}, "
                      f"{' and '.join(sources)} " + (
                          "(hybrid: the model's devices attend to the sequences whose KV they hold)"
                          if s.attention_placement == "hybrid" else f"(up to {s.attention_micro_batches} "
                                                                    f"micro-batches)"))
        for pool in POOL_WHAT_IFS:  # a power limit on another pool's devices, from its what-ifs or its device file
            if pool.present(s):
                own = pool_point(point, pool.device_name(s, point.device), getattr(point, pool.field))
                limit_W = getattr(load_device(own.device, dict(own.overrides)).spec.power, "cap_W", None)
                if limit_W is not None and limit_W != cap_W:
                    pools += f", power limit {limit_W:g} W a device on the {pool.pool}"
        if s.router:  # the one a user asked for (--router); unset: the default, least_requests
            pools += f", router {s.router}"
        if s.decode_pick == "arrival":  # the default, prefill_done, is what the hand-over has always done
            pools += ", each decode replica picked at the request's arrival (llm-d)"
        if s.lora_adapters:
            pools += (f", {count_label(s.lora_adapters, 'LoRA adapter')} of rank {s.lora_rank} (lora_alpha "
                      f"{s.lora_alpha:g}), the running requests holding at most {s.max_loras} (max_loras)")
        if s.prefix_tokens:
            # A KV cache shares whole blocks: a prefix shorter than one is cached, and cascaded, as none.
            shared = shared_prefix_tokens(s.prefix_tokens, s.block_tokens)
            held = f" ({shared} in whole {s.block_tokens}-token blocks)" if shared != s.prefix_tokens else ""
            groups = f" of {s.groups} groups, least recently used evicted" if s.groups > 1 and not s.rooted else ""
            what_prefix = "system prompt every conversation starts with" if s.rooted else "shared prefix"
            prefixes = f"a {s.prefix_tokens}-token {what_prefix}"
            if s.system_prompts > 1:
                prefixes = f"{s.system_prompts} {s.prefix_tokens}-token system prompts, each conversation drawing one"
            pools += f", {prefixes}{held}{groups} ({s.prefix_attention or 'paged'} attention)"
        if s.conversations:
            behind = ((", behind the system prompt held once" if s.system_prompts == 1 else
                       ", behind its system prompt, each held once") if s.rooted else "")
            spread = f" (cv {s.think_cv:g})" if s.think_cv else ""
            where = ("one prefill replica, which keeps its prompts cached; its answers, decoded apart, the next turn "
                     "computes again" if s.disaggregated else "one replica, its context cached as its prefix")
            # A drained replica's cached context goes with it (sim/serving.py follow).
            drained = ("; a turn whose replica was drained meanwhile routed afresh, computing its whole prompt"
                       if scaling is not None else "")
            pools += (f", conversations of {s.conversation_turns} turns {s.think_s or 0:g} s apart{spread} (each on "
                      f"{where}{behind}, least recently used evicted{drained})")
        elif s.traced_sharing:
            pools += f", {s.groups} prefix groups sharing the trace's shared_tokens, least recently used evicted"
            if s.disaggregated and s.traced_turns:
                pools += (" (a conversation's turns on the prefill replica that served it, which keeps their prompts "
                          "cached; their answers, decoded apart, each next turn computes again)")
        elif s.traced_tree:
            pools += (", the trace's prompts cached as a prefix tree of their hash ids' blocks (least recently used "
                      "leaves evicted first)")
        elif s.trace and not s.prefix_tokens and s.groups > 1:
            pools += f", the trace's {s.groups} prefix groups unused (no --prefix-tokens: nothing is shared)"
        if s.queue_policy:
            pools += f", {s.queue_policy} admission"
        if s.priority_fraction is not None:
            pools += f", {s.priority_fraction:g} of the requests urgent"
        elif s.traced_priority:
            pools += ", the trace's priorities"
        if s.preemption == "swap":
            pools += ", swap preemption"
        if s.memory_utilization is not None:
            pools += f", each using {s.memory_utilization:g} of its devices' memory"
        if s.host_cache_GB:
            pools += f", {s.host_cache_GB:g} GB of host memory a replica keeping evicted prefix blocks"
        if s.kv_store_GB:
            over = f"{s.kv_store_GBps:g} GB/s a device" if s.kv_store_GBps else _store_nic_text(point)
            pools += f", a {s.kv_store_GB:g} GB KV store the replicas share, reached over {over}"
        if s.rate_profile:
            rate += ", " + phases_label(s.rate_profile)
        what += (f"; serving {s.requests} requests ({s.trace or 'fixed lengths'}, {s.arrival} arrivals, {rate}) "
                 f"with {s.scheduler} scheduling on {pools}")
    return what


def _speculation_text(point: DesignPoint) -> str:
    """How a speculative point drafts and verifies (sim/speculative.py), as its assumptions say it."""
    draft, k, a = point.knob("spec_draft"), point.knob("spec_tokens"), point.knob("acceptance")
    times = "once" if k == 1 else f"{k} times"
    if draft == MEDUSA:
        by = f"{count_label(k, 'Medusa head')} on the target (kernels/medusa.py)"
    elif draft == NGRAM:
        match = point.knob("ngram_match")
        by = (f"vLLM's n-gram lookup of the request's own tokens on the host (not priced), {k} tokens drafted on "
              f"{match:.0%} of the steps" + (", the others verifying none" if match < 1 else ""))
    elif draft == MTP:
        by = (f"the target's multi-token-prediction module (eh_proj, its norms and one decoder layer with a KV cache "
              f"of its own, the target's embedding and LM head shared: workloads/mtp.py) run {times} a step, as "
              f"vLLM's deepseek_mtp drafts")
    else:
        by = f"draft model {load_model_config(draft).name} run {times} a step"
    return (f"speculative decoding: {by}, each drafted token accepted with probability {a:g} "
            f"({Speculation(drafted=k, acceptance=a, match=point.knob('ngram_match')).tokens_per_step:.2f} tokens a "
            f"step in expectation)")


def _named(device: str) -> str:
    """A device preset's name, or the `name:` of a device file given by path (its stem where it is on a base preset
    and gives none)."""
    return read_device_yaml(device)[0]["name"]


def _handoff_text(point: DesignPoint, kind: str = "decode") -> str:
    """The links a prefill pool hands KV over to the decode pool of `kind` (decode: the point's; mixed: a fleet's
    mixed replicas; ServingSpec.handoff_links), in words, each at most the slower of the two pools' devices' PCIe links
    (explore/evaluate.py prices it so)."""
    on_pools = _pool_points(point)
    ends = [_spec(on_pools[0]), _spec(on_pools[1 if kind == "decode" else 2])]
    links = point.serving.handoff_links(point.device, point.knob("node_link"), kind)
    said = [link_rate_text(load_link(name), *ends) for name in links]
    return said[0] if len(said) == 1 else f"{' and '.join(said)} (each transfer the longer of its times on the two)"


def _attention_link_text(point: DesignPoint, crossing: tuple[str, ...]) -> str:
    """The links `crossing` a serving point's devices reach their attention devices over (ServingSpec
    .attention_crossing), in words, each at most the slower of the two devices' PCIe links (explore/evaluate.py
    Evaluator.attention_pool), and why where they are the node links in place of the attention link."""
    s = point.serving
    attending = pool_point(point, s.attention_device, point.attention_overrides)
    said = [link_rate_text(load_link(name), _spec(point), _spec(attending)) for name in crossing]
    text = said[0] if len(said) == 1 else f"{' and '.join(said)} (each send the longer of its times on the two)"
    if crossing == (s.pool_link,):
        return text
    link = load_link(s.pool_link)
    ends = s.attention_node_links(_named(point.device), _named(s.attention_device), point.knob("node_link"))
    # Where the two ends' node links differ, the path between them runs at the slower (ServingSpec crossing_links).
    which = "the node link" if ends[0] == ends[1] else (
        f"{'the slower of ' if len(crossing) == 1 else ''}the node links, {_named(point.device)}'s {ends[0]} and "
        f"{_named(s.attention_device)}'s {ends[1]}")
    return (f"{text}, {which}: its {point.tp * point.pp} and {s.attention_devices} devices are more than one domain of "
            f"{link.name} joins ({link.domain_devices})")


def _store_nic_text(point: DesignPoint) -> str:
    """What a KV store's fetches run over where kv_store_GBps names no rate, in words: each pool's devices' node link,
    at most their own PCIe link's rate (explore/evaluate.py Evaluator._kv_store_Bps)."""
    said = dict.fromkeys((_named(own.device), link_rate_text(load_link(own.knob("node_link") or
                                                                      default_node_link(own.device)), _spec(own)))
                         for own in _pool_points(point))
    if len({text for _, text in said}) == 1:
        return f"each device's node-link NIC, {next(iter(said))[1]}"
    return "each device's node-link NIC, " + " and ".join(f"{device}'s {text}" for device, text in said)


def _pool_points(point: DesignPoint) -> list[DesignPoint]:
    """A serving point's pools' points (explore/evaluate.py serving_pools, pool_point)."""
    return [pool_point(point, name, own, link) for _, _, name, own, link in serving_pools(point)]


def _spec(point: DesignPoint):
    """The device spec of a point's device, with its what-ifs."""
    return load_device(point.device, dict(point.overrides)).spec


def _own_node_link(kind: str, point: DesignPoint) -> str:
    """A serving pool's own node link (--prefill-node-link, --mixed-node-link) and what of the pool reads it, in words
    ('' where it names none: the point's or its devices' own)."""
    name = point.serving.pool_node_link(kind)
    if not name:
        return ""
    readers = pool_node_link_readers(kind, point.device, point.link, point.tp, point.pp, point.link_overrides,
                                     point.serving)
    if not readers:
        return f", --{kind}-node-link {name} unread: its devices fit one node and no KV crosses it"
    device, own = ((point.serving.prefill_device, point.prefill_overrides) if kind == "prefill" else
                   (point.serving.mixed_device, point.mixed_overrides))
    # The pool's devices reach it over their own PCIe links (the handover's other end is said where it is).
    said = link_rate_text(load_link(name), _spec(pool_point(point, device or "", own)))
    return f", --{kind}-node-link {said} read by {' and '.join(readers)}"


def _pool_link(device_name: str, point: DesignPoint) -> str:
    """The link joining a serving pool's devices: its own device's where it names one, else the point's
    (explore/evaluate.py pool_point)."""
    own = pool_point(point, device_name)
    return own.link or default_link(load_device(own.device).name)


def _pool_fits(device_name: str, point: DesignPoint) -> str:
    """How a serving pool's device is priced, in words: its own fits, a sibling's, or the datasheet roofline."""
    device = load_device(device_name, calibrated=point.use_calibration)
    label = calibration_label(device)
    return ("fitted" if label == "fitted" else f"fits of sibling {device.calibration.sibling}" if label == "sibling"
            else "uncalibrated datasheet roofline")


def _link_source(link) -> str:
    """Where a link's collective times come from, as the run header says it: its fit's NCCL data, or its datasheet."""
    return ("fitted on " + ", ".join(sorted(set(link.fitted_on.values()))) + " NCCL data" if link.fitted_on
            else "on its datasheet alpha-beta model, no measured collectives on it")


def cmd_report(args) -> int:
    from explore.report import write_report
    from explore.results import CSV_NAME, DB_NAME, read_results

    out = Path(args.out_dir)
    if out.is_file():  # results.csv or report.md itself: the folder that holds it is what the user meant
        raise InputError(f"{out}: found a file, allowed: a sweep's output folder (here {out.parent})")
    if not (out / CSV_NAME).is_file() and not (out / DB_NAME).is_file():
        raise InputError(f"{out}: no results.csv here (run a sweep with --out {out} first)")
    goals = _read_goals(out / GOALS_FILE)
    title = goals.pop("name", None) or out.name  # the sweep's name; a folder written before it was kept: its own
    # No evaluator: every figure comes from the results and the detail the sweep stored beside them (no trace, no
    # torch); figures whose detail is missing say so, in the report and in one logged line. A sweep still writing
    # the folder holds it: its rows are partial and it writes its own report at its end.
    with folder_lock(out):
        rows = read_results(out, required=input_columns(system=False, serving=False))
        _check_metric_columns(out, rows, goals)
        html, md = write_report(out, rows, title=title, **goals)
    print(f"report:  {html}\nsummary: {md}")
    return 0


GOAL_KEYS = ("objectives", "constraints", "slo", "search", "name", "rate_profile")


def _check_metric_columns(out: Path, rows: list[dict], goals: dict) -> None:
    """Refuse, in one line, results that lack a metric the report reads of every point of their kind, or one the
    folder's objectives.json ranks or bounds points by (a results.csv edited by hand or written by another tool):
    without it the report fails, or every point reads as infeasible or failing the goal."""
    from explore.report_serving import drawn_metrics
    from explore.results import CSV_NAME, DB_NAME

    objectives = goals.get("objectives") or {}
    drawn = drawn_metrics(rows)
    named = list(dict.fromkeys([*objectives.get("minimize", []), *objectives.get("maximize", []),
                                *(c.metric for c in Constraint.parse_all(goals.get("constraints") or []))]))
    missing = [metric for metric in dict.fromkeys([*drawn, *named]) if rows and metric not in rows[0]]
    if missing:
        store = out / DB_NAME if (out / DB_NAME).is_file() else out / CSV_NAME
        goal = (f" and every metric {GOALS_FILE} names as an objective or constraint ({', '.join(named)})"
                if named else "")
        raise InputError(f"{store}: {', '.join(missing)}: missing, allowed: results holding the metrics the report "
                         f"reads of every point ({', '.join(drawn)}){goal}")


def _read_goals(path: Path) -> dict:
    """A results folder's objectives.json as the sweep wrote it (objectives, constraints, slo, and the search
    strategy and the sweep's name where kept), each checked as a sweep file's are; one line naming the file and key
    where it is not (an edited or foreign file)."""
    if not path.is_file():
        return {}
    try:
        goals = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path}: found text that is not JSON ({err}), allowed: the objectives.json a sweep "
                         f"writes") from None
    if not isinstance(goals, dict):
        raise InputError(f"{path}: found {type(goals).__name__}, allowed: a mapping of {', '.join(GOAL_KEYS)}")
    for key in goals:
        if key not in GOAL_KEYS:
            raise InputError(f"{path}: {key}: unknown key, allowed: {', '.join(GOAL_KEYS)}")
    try:
        objectives = Objectives.model_validate(goals.get("objectives") or {})
    except ValidationError as err:
        raise input_error(err, str(path), prefix="objectives.") from None
    constraints = goals.get("constraints") or []
    if not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints):
        raise InputError(f"{path}: constraints: found {constraints!r}, allowed: a list of 'METRIC OP NUMBER'")
    try:
        Constraint.parse_all(constraints)
    except ValueError as err:
        raise InputError(f"{path}: constraints: {err}") from None
    slo = goals.get("slo")
    if slo is not None and not isinstance(slo, dict):
        raise InputError(f"{path}: slo: found {slo!r}, allowed: a mapping of SLO fields or null")
    search = goals.get("search")
    if search is not None and search not in STRATEGY_NAMES:
        raise InputError(f"{path}: search: found {search!r}, allowed: {', '.join(STRATEGY_NAMES)} or null")
    name = goals.get("name")
    if name is not None and not isinstance(name, str):
        raise InputError(f"{path}: name: found {name!r}, allowed: the sweep's name, a string")
    profile = goals.get("rate_profile")
    if profile is not None and not (isinstance(profile, list) and profile and all(
            isinstance(phase, list) and len(phase) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in phase)
            for phase in profile)):
        raise InputError(f"{path}: rate_profile: found {profile!r}, allowed: the sweep's phases [[duration_s, "
                         f"multiplier], ...] or null")
    return {"objectives": objectives.model_dump(), "constraints": constraints, "slo": slo, "search": search,
            "rate_profile": profile} | ({"name": name} if name else {})


def cmd_trace(args) -> int:
    other = "context" if args.phase == "prefill" else "prompt"  # the other phase's length: refused, not ignored
    if getattr(args, other) is not None:
        own = "prompt" if other == "context" else "context"
        raise InputError(f"--{other}: found {getattr(args, other)} with --phase {args.phase}, allowed: --{own} (a "
                         f"{args.phase} step's {'prompt tokens' if own == 'prompt' else 'cached tokens'})")
    args.prompt = TRACE_TOKENS if args.prompt is None else args.prompt
    args.context = TRACE_TOKENS if args.context is None else args.context
    for name in ("batch", "prompt", "context"):
        if getattr(args, name) < (0 if name == "context" else 1):
            raise InputError(f"--{name}: found {getattr(args, name)}, allowed: a positive integer")
    check_out_file("-o", args.output)
    cfg = load_model_config(args.model)
    # A prefill of `prompt` tokens, or one decode token after `context` cached ones: every position in the context.
    flag, value, positions = (("--prompt", args.prompt, args.prompt) if args.phase == "prefill"
                              else ("--context", args.context, args.context + 1))
    if positions > cfg.max_positions:
        raise InputError(f"{flag}: found {value:,} ({positions:,} positions), allowed: at most {cfg.name}'s context "
                         f"of {cfg.max_positions:,} tokens (max_position_embeddings)")
    if args.real:  # a pass this machine cannot hold, refused before torch is imported (trace_model refuses it too)
        check_real_memory(cfg, args.batch, positions, positions if args.phase == "prefill" else 1)
    from workloads.capture import trace_model  # torch: seconds to import, after the flags are judged

    trace = trace_model(cfg, **trace_args(args.phase, args.batch, value), fake=not args.real)
    trace.save(args.output)
    print(f"{args.output}: {len(trace.ops)} ops, {trace.flops:.3e} FLOPs, {trace.model} {trace.phase}")
    return 0
