"""The `explore` command: run sweeps, evaluate one design point, list presets, capture traces, write reports."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hw_models.validation import did_you_mean
from workloads.errors import InputError

TRACE_TOKENS = 512  # `explore trace`'s prompt (prefill) or cached tokens (decode) when not given

if TYPE_CHECKING:
    from explore.knobs import Knob

COMMANDS = ("run", "check", "report", "presets", "trace", "import-vidur", "import-aiconfigurator", "calibrate",
            "validate", "measure")

SWEEP_HELP = """Run a sweep file: evaluate every design point, write results.csv and report.html into the output folder.
Each finished point is stored in results.sqlite as it finishes; results.csv (and results.parquet when
pyarrow is installed) is exported from it. Running it again on the same folder resumes: finished points
are kept and skipped.

examples:
  explore examples/quickstart.yaml --out out/quickstart --workers 2
  explore examples/quickstart.yaml --executor dask --workers 4             # a local Dask cluster
  explore examples/quickstart.yaml --executor dask --scheduler tcp://10.0.0.5:8786
"""


def number(text: str) -> int | float:
    """A number flag's value as written: an integer where written as one ('-1'), else a float ('0.5'), as a sweep's
    YAML reads it, so that a message echoes '-1' rather than '-1.0'."""
    try:
        return int(text)
    except ValueError:
        return float(text)


# argparse's refusals of a value ("argument --phase: invalid choice: 'prefil' (choose from 'prefill', 'decode')",
# "argument --batch: invalid int value: '1.5'"), to be said as every other refusal is.
_CHOICE = re.compile(r"argument (?P<flag>\S+): invalid choice: (?P<found>.+) \(choose from (?P<allowed>.+)\)")
_TYPED = re.compile(r"argument (?P<flag>\S+): invalid (?P<type>int|float|number) value: (?P<found>.+)")
_KINDS = {"int": "an integer", "float": "a number", "number": "a number"}  # number(): an integer or a decimal
# argparse's refusals of a flag's form: a value left out, a value given a flag that takes none, a start of several
# flags, a required argument left out.
_FORMS = (
    (re.compile(r"argument (?P<flag>\S+): expected one argument"), "{flag}: found no value, allowed: a value after it"),
    (re.compile(r"argument (?P<flag>\S+): expected (?P<count>\d+) arguments"),
     "{flag}: found fewer than {count} values, allowed: {count} values after it"),
    (re.compile(r"argument (?P<flag>\S+): ignored explicit argument (?P<found>.+)"),
     "{flag}: found {found}, allowed: the flag alone (it takes no value)"),
    (re.compile(r"ambiguous option: (?P<flag>\S+) could match (?P<flags>.+)"),
     "{flag}: found the start of several flags, allowed: one of {flags} in full"),
    (re.compile(r"the following arguments are required: (?P<names>.+)"),
     "{names}: missing, allowed: a value (required)"),
)


def _refusal(message: str) -> str:
    """An argparse refusal of a value as 'FLAG: found X, allowed: Y', a choice with the nearest one; any other
    message as it is."""
    if choice := _CHOICE.fullmatch(message):
        allowed = [name.strip("'") for name in choice["allowed"].split(", ")]
        nearest = did_you_mean(choice["found"].strip("'"), allowed)
        return f"{choice['flag']}: found {choice['found']}{nearest}, allowed: {', '.join(allowed)}"
    if typed := _TYPED.fullmatch(message):
        return f"{typed['flag']}: found {typed['found']}, allowed: {_KINDS[typed['type']]}"
    for pattern, form in _FORMS:
        if match := pattern.fullmatch(message):
            return form.format(**match.groupdict())
    return message


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a command that stores its results as they finish, with what it stores: a sweep's '2 of 4 design
    points stored' (explore/rerun.py stored_label), `explore measure`'s '2 of 9 shapes stored'."""

    def __init__(self, stored: str):
        super().__init__(stored)
        self.stored = stored


class _Parser(argparse.ArgumentParser):
    """argparse with its mistakes as one-line InputErrors (argparse prints the whole usage, then exits)."""

    commands: dict[str, argparse.ArgumentParser] = {}  # a command parser's subcommands, by name

    def error(self, message: str):
        # argparse names a required flag left out before any flag it does not take: a misspelled required flag
        # ('--devcie') is the mistake, and the one to name.
        if message.startswith("the following arguments are required") and (unknown := self._unknown_flag()):
            raise InputError(_unknown_argument(self, unknown))
        raise InputError(f"{_refusal(message)} (see {self.prog} --help)")

    def parse_known_args(self, args=None, namespace=None):
        self.given = list(sys.argv[1:] if args is None else args)  # what error() looks through
        return super().parse_known_args(args, namespace)

    def _unknown_flag(self) -> str:
        """The first flag given that this parser takes under no spelling (argparse takes a flag's unique start), or
        ''."""
        for argument in getattr(self, "given", ()):
            flag = argument.split("=", 1)[0]
            if flag.startswith("--") and not any(name.startswith(flag) for name in self._option_string_actions):
                return argument
        return ""

    def parse_args(self, args=None, namespace=None):
        """The arguments, an argument no parser takes a one-line error of the (sub)command it was given to."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            raise InputError(_unknown_argument(self.commands.get(getattr(parsed, "command", None), self), extra[0]))
        return parsed


def _unknown_argument(parser: argparse.ArgumentParser, argument: str) -> str:
    """What is wrong with an argument `parser` does not take: a flag it lacks, with its nearest flag, or a stray
    value."""
    flag = argument.split("=", 1)[0]
    if flag.startswith("-"):
        flags = [name for name in parser._option_string_actions if name.startswith("--")]
        return (f"{flag}: not a flag of {parser.prog}{did_you_mean(flag, flags)}; allowed: the flags {parser.prog} "
                f"--help lists")
    return f"{argument!r}: not an argument of {parser.prog}; allowed: those {parser.prog} --help lists"


def _sweep_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="explore", description=SWEEP_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"other commands: {', '.join(COMMANDS)} (explore COMMAND --help)")
    p.add_argument("sweep", help="sweep YAML file")
    p.add_argument("--out", help="output folder (default: out/<sweep name>)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (default 1); with --executor dask and no --scheduler, the size of the "
                        "local Dask cluster")
    p.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="where points are evaluated: local processes (default) or a Dask cluster "
                        "(needs the 'dask' extra: pip install 'llm-codesign[dask]')")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="with --executor dask: address of a running Dask scheduler, e.g. tcp://host:8786 "
                        "(default: start a LocalCluster of --workers processes)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--force-report", action="store_true",
                   help="re-draw the report even when it is up to date (by default a rerun that evaluates no new "
                        "point, with the same objectives and constraints, keeps the report already drawn)")
    return p


def _command_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="explore", formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)  # subparsers are _Parsers too
    p.commands = sub.choices

    def add(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {example}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    run = add("run", "Evaluate one design point and print its metrics.",
              "explore run --model llama-2-7b --device h100-sxm --batch 8 --prompt 2048 --output 128 --json")
    add_knob_flags(run)
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="a what-if on a device field, as a sweep's overrides: (repeatable), e.g. --set "
                          "memory.bandwidth_GBps=6700 (also device.memory.bandwidth_GBps; link.bandwidth_GBps "
                          "for the link between --tp devices; attention_device.memory.bandwidth_GBps for the "
                          "--attention-device devices alone, prefill_device.power.cap_W for the --prefill-replicas' "
                          "alone, mixed_device.memory.bandwidth_GBps for the --mixed-replicas' alone); the device "
                          "keeps its calibration")
    run.add_argument("--roofline", action="store_true",
                     help="ignore the preset's fitted calibration: price on the datasheet roofline")
    run.add_argument("--json", action="store_true", help="print metrics as JSON")
    run.add_argument("--sim", action="store_true", help="run the SimPy event simulation (default: analytic sum)")
    run.add_argument("--ops", action="store_true",
                     help="also print the per-op table: each op of the prefill and the first decode step (of a "
                          "speculative point, its verification pass and draft steps) over the layers that repeat "
                          "it, with FLOPs, bytes, FLOP/byte, what bounds it and its time")
    run.add_argument("--chrome-trace", metavar="PATH",
                     help="write the timeline as Chrome trace JSON (kernels; with --serving, iterations and "
                          "requests); where a pass waits on the host's dispatch (eager), each kernel's slice holds its "
                          "share of that wait beside its device time (--ops gives device times)")
    _add_serving_flags(run)

    check = add("check", "Validate a sweep file, count its design points and estimate its run time.",
                "explore check examples/quickstart.yaml")
    check.add_argument("sweep")
    check.add_argument("--out", help="the output folder the sweep will write to (default: out/<sweep name>): the "
                                     "points stored there already are not counted in the estimate")
    check.add_argument("--workers", type=int, default=1,
                       help="the worker processes the run will have (default 1): each that captures traces starts "
                            "torch, and each that runs serving points captures their step templates itself")

    report = add("report", "(Re)write report.html and report.md from a sweep's output folder.",
                 "explore report out/quickstart")
    report.add_argument("out_dir")

    presets = add("presets", "List the bundled model, device and link presets with their sources.",
                  "explore presets devices")
    kinds = ["models", "devices", "links"]  # named in the help: a metavar hides argparse's own list of choices
    presets.add_argument("kind", nargs="?", choices=kinds, default=None, metavar="KIND",
                         help=f"list only these presets: one of {', '.join(kinds)} (default: all)")

    trace = add("trace", "Capture a trace of one prefill or decode step and save it as JSON.",
                "explore trace --model llama-3-8b --phase decode --batch 4 --context 2048 -o trace.json")
    trace.add_argument("--model", required=True, help="model preset name or path to a config.json")
    trace.add_argument("--phase", required=True, choices=["prefill", "decode"], help="which step to capture")
    trace.add_argument("--batch", type=int, default=1, help="sequences in the step (default 1)")
    trace.add_argument("--prompt", type=int, help=f"prefill: prompt tokens (default {TRACE_TOKENS})")
    trace.add_argument("--context", type=int, help=f"decode: tokens already cached (default {TRACE_TOKENS})")
    trace.add_argument("--real", action="store_true", help="execute on real CPU tensors instead of fake ones")
    trace.add_argument("-o", "--output", required=True, help="trace JSON path")

    from explore.calibrate_cmd import add_parsers

    add_parsers(add)
    from explore.measure_cmd import add_measure_parser

    add_measure_parser(add)
    return p


def run_knobs() -> tuple[Knob, ...]:
    """The registered knobs `explore run` has a flag for (explore/knobs.py), in registry order."""
    from explore.knobs import knobs

    return tuple(k for k in knobs() if k.flag and k.scope in ("point", "system"))


def add_knob_flags(run: argparse.ArgumentParser) -> None:
    """One flag per knob of the point and system scope: --<name> with the knob's type, default and allowed values
    (values the knob checks itself, such as a minimum, are checked by the command: one line naming the flag)."""
    for knob in run_knobs():
        kwargs = {"required": True} if knob.required else {"default": knob.default}
        if knob.allowed:
            kwargs["choices"] = list(knob.allowed)
        shown = "" if knob.required or knob.default == "" else f" (default {knob.default})"
        run.add_argument(knob.flag_name, type=number if knob.type is float else knob.type,
                         help=f"{knob.help}{shown}", **kwargs)


SERVING_EXAMPLE = ("explore run --model llama-2-7b --device h100-sxm --serving --trace splitwise-conv --requests 2000 "
                   "--rate 8 --scheduler chunked --slo-ttft 2 --slo-tpot 0.1")


def _add_serving_flags(run: argparse.ArgumentParser) -> None:
    """Flags of `explore run --serving`: requests arriving at one replica instead of one static batch."""
    from sim.attention_pool import PLACEMENTS
    from sim.autoscalers import AUTOSCALERS, LOAD_PREDICTORS
    from sim.autoscalers import METRICS as AUTOSCALE_METRICS
    from sim.routers import DECODE_PICKS, DEFAULT_ROUTER, ROUTERS
    from sim.schedulers import QUEUE_POLICIES, SCHEDULERS
    from sim.serving_spec import ARRIVALS, BUSY_ACTIONS, LAMINA_LINK, PREFIX_ATTENTIONS, ServingSpec
    from sim.slowdown import SLOWDOWN_PRESETS

    spec = ServingSpec()  # the flags' defaults are the spec's

    g = run.add_argument_group("serving (with --serving)", f"example: {SERVING_EXAMPLE}")
    g.add_argument("--serving", action="store_true",
                   help="simulate requests arriving at a rate instead of one static batch; without --trace, "
                        "every request has --prompt prompt and --output output tokens")
    g.add_argument("--scheduler", choices=list(SCHEDULERS), default=spec.scheduler,
                   help=f"default {spec.scheduler}")
    g.add_argument("--requests", type=int,
                   help=f"requests to simulate (default {spec.requests}, or all of a shorter --trace)")
    g.add_argument("--rate", type=number, help="arrivals per second (required unless --arrival trace or --capacity)")
    g.add_argument("--arrival", choices=list(ARRIVALS), default="poisson",
                   help="poisson (default), gamma (bursty: --cv), or trace (the trace's own timestamps, scaled to "
                        "--rate when given)")
    g.add_argument("--cv", type=number, default=1.0, help="gamma arrivals: coefficient of variation (default 1)")
    g.add_argument("--trace", help="request lengths from a trace: splitwise-conv, splitwise-code, "
                                   "arxiv-summarization, a CSV path (arrival_s, prompt_tokens, output_tokens; "
                                   "optionally prefix_group, shared_tokens, after_previous_s), or a Mooncake "
                                   "trace, FILE.jsonl (timestamp, input_length, output_length, hash_ids: its "
                                   "prompts cached as a prefix tree)")
    g.add_argument("--max-seqs", type=int, default=spec.max_seqs,
                   help=f"sequences per iteration (default {spec.max_seqs})")
    g.add_argument("--max-batched-tokens", type=int, default=spec.max_batched_tokens,
                   help=f"tokens per iteration of a scheduler that prefills whole (static, continuous, orca; "
                        f"default {spec.max_batched_tokens})")
    g.add_argument("--chunk-tokens", type=int, default=spec.chunk_tokens,
                   help=f"chunked prefill's token budget (--scheduler chunked; default {spec.chunk_tokens})")
    g.add_argument("--long-prefill-tokens", type=int, default=spec.long_prefill_tokens,
                   help="the most prompt tokens one request computes an iteration (--scheduler chunked; vLLM v1's "
                        "--long-prefill-token-threshold; default 0: no cap)")
    g.add_argument("--prompt-batch-tokens", type=int,
                   help="prompt tokens prefilled together in one iteration; a longer prompt runs alone (Splitwise: "
                        "2048; default: up to --max-batched-tokens)")
    g.add_argument("--block-tokens", type=int, default=spec.block_tokens,
                   help=f"tokens per KV block (default {spec.block_tokens})")
    g.add_argument("--prefix-tokens", type=int, default=0,
                   help="a system prompt every request (with --conversation-turns, every conversation) starts with, "
                   "cached once (default 0)")
    g.add_argument("--prefix-groups", type=int,
                   help="distinct prefixes of --prefix-tokens the requests start with, each request's drawn evenly; "
                        "each is cached while memory allows, the least recently used evicted; with "
                        "--conversation-turns, the system prompts each conversation draws one of (default 1)")
    g.add_argument("--conversation-turns", type=int,
                   help="the requests as conversations of this many turns, each turn adding a --prompt-token message "
                        "to the conversation so far (its context found in the prefix cache while it stays there); "
                        "conversations start at --rate / turns (default: independent requests)")
    g.add_argument("--think-s", type=number,
                   help="seconds between a conversation turn's answer and its next turn (default 0)")
    g.add_argument("--think-cv", type=number,
                   help="the think times' coefficient of variation: gamma-distributed about --think-s, 1 exponential "
                        "(default: each exactly --think-s)")
    g.add_argument("--queue-policy", choices=list(QUEUE_POLICIES),
                   help="the order waiting requests are admitted in: fcfs (arrival order; the default), lpm (the "
                        "longest cached prefix first, SGLang's longest-prefix-match) or priority (the most urgent "
                        "first, the least urgent preempted first: vLLM's priority scheduling)")
    g.add_argument("--priority-fraction", type=number,
                   help="the share of requests drawn urgent (priority 0, the others 1), served first under "
                        "--queue-policy priority; adds the urgent requests' latency percentiles (default: every "
                        "request alike, or a --trace CSV's priority column)")
    g.add_argument("--prefix-attention", choices=list(PREFIX_ATTENTIONS),
                   help="how decode attention reads the --prefix-tokens the requests of a group share: paged (each "
                        "sequence its copy; the default) or cascade (once for the group's sequences, then each its "
                        "own tokens)")
    g.add_argument("--preemption", choices=["recompute", "swap"], default="recompute",
                   help="when KV blocks run out: recompute (default) or swap to host memory over the device's host "
                        "link (or --swap-GBps)")
    g.add_argument("--swap-GBps", type=number,
                   help="host link bandwidth for swap preemption, GB/s (default: the device preset's host_link)")
    g.add_argument("--replicas", type=int, default=1,
                   help="replicas serving requests, each arrival to the one --router picks (with --prefill-replicas: "
                        "the decode pool's; 0 with --max-replicas: a pool that scales to and from zero; default 1)")
    g.add_argument("--prefill-replicas", type=int, default=0,
                   help="a separate prefill pool of this many replicas handing each request's KV to the decode "
                        "pool (disaggregated serving; default 0: none)")
    g.add_argument("--prefill-device", default="", help="the prefill pool's device (default: --device)")
    g.add_argument("--prefill-node-link", default="",
                   help="the link between the prefill pool's nodes, a port per device, where its devices span nodes, "
                        "hand KV over or fetch a KV store at the NIC's rate: a link preset or YAML (default: "
                        "--node-link, else its devices' own)")
    g.add_argument("--mixed-replicas", type=int,
                   help="replicas of --mixed-device beside the --replicas of --device, serving requests whole (or "
                        "decoding beside --prefill-replicas), --router picking among them all (a fleet of mixed GPU "
                        "types; default: none)")
    g.add_argument("--mixed-device", help="the device of the --mixed-replicas (without --set's what-ifs)")
    g.add_argument("--mixed-node-link", default="",
                   help="the link between the --mixed-replicas' nodes, a port per device, where their devices span "
                        "nodes or fetch a KV store at the NIC's rate: a link preset or YAML (default: --node-link, "
                        "else their devices' own)")
    g.add_argument("--max-replicas", type=int,
                   help="autoscale from --replicas up to this many, as --autoscaler decides (default: --replicas "
                        "throughout)")
    g.add_argument("--mixed-max-replicas", type=int,
                   help="autoscale the fleet's --mixed-device pool from --mixed-replicas up to this many too, by an "
                        "HPA of its own on the same metric and target (default: --mixed-replicas throughout)")
    g.add_argument("--autoscaler", choices=list(AUTOSCALERS),
                   help="hpa: Kubernetes' HPA on --autoscale-metric near --autoscale-target per replica; sla_planner: "
                        "NVIDIA Dynamo's SLA planner, the replicas the last interval's load needs at each replica's "
                        "throughput within --slo-tpot; load_planner: Dynamo's load-based scaling, a replica at a time "
                        "on each one's estimated TTFT and TPOT against --slo-ttft and --slo-tpot; sla_load_planner: "
                        "both, the SLA planner's replicas a floor (default hpa)")
    g.add_argument("--autoscale-interval-s", type=number,
                   help="seconds between the autoscaler's decisions (default: hpa 15, sla_planner 180, load_planner "
                        "and sla_load_planner 5)")
    g.add_argument("--prefill-max-replicas", type=int,
                   help="autoscale the prefill pool from --prefill-replicas up to this many too, by the same "
                        "autoscaler (default: --prefill-replicas throughout)")
    g.add_argument("--autoscale-target", type=number, help="the autoscale metric's target per replica")
    g.add_argument("--autoscale-metric", choices=list(AUTOSCALE_METRICS),
                   help="what the pool scales on: requests waiting (queue size) or running (batch size) on a replica "
                        "(default waiting)")
    g.add_argument("--cold-start-s", type=number,
                   help="seconds from a scale-up to the new replica serving (default: its weights read from a local "
                        "NVMe SSD)")
    g.add_argument("--autoscale-predictor", choices=list(LOAD_PREDICTORS),
                   help="how the SLA planner forecasts the next interval's load: constant (the last interval's) or "
                        "kalman (a local linear trend) (default constant)")
    g.add_argument("--busy-kv-usage", type=number,
                   help="reject a request arriving while every replica is busy (load shedding, Dynamo's busy "
                        "thresholds): busy while more than this share of its KV blocks is in use (default: never)")
    g.add_argument("--busy-prefill-tokens", type=int,
                   help="busy too while more than this many prompt tokens wait to be prefilled (default: never)")
    g.add_argument("--busy-waiting-requests", type=int,
                   help="busy too while more than this many requests wait on it (default: never)")
    g.add_argument("--busy-action", choices=list(BUSY_ACTIONS),
                   help="a request finding every replica busy: rejected (Dynamo's load shedding) or queued at the "
                        "gateway until one is free, the most urgent first (llm-d's flow control) (default reject)")
    g.add_argument("--client-retries", type=int,
                   help="how many times a rejected request's client retries it, backing off as OpenAI's Python client "
                        "does (its default, 2) (default: never)")
    g.add_argument("--client-retry-s", type=number,
                   help="the first retry's backoff, doubling at each retry up to 8 s (default 0.5, OpenAI's client)")
    g.add_argument("--kv-link",
                   help="the link KV crosses from the prefill to the decode pool (default: the pools' node links, "
                        "--prefill-node-link and --node-link where given, else their devices' own, infiniband-hdr for "
                        "A100s, infiniband-ndr otherwise; the slower where they differ, the longer of each transfer's "
                        "times on the two where neither is slower in both bandwidth and latency)")
    g.add_argument("--attention-device", default="",
                   help="run the attention of the serving (or decode) pool on devices of this kind apart from the "
                        "model's, which then hold the KV cache (model-attention disaggregation, Lamina); default: "
                        "the model's devices attend")
    # Unset (None) rather than the spec's default, so that a flag given at its default without --attention-device is
    # still seen as given (and refused: it would change nothing).
    g.add_argument("--attention-devices", type=int,
                   help=f"attention devices per replica, splitting the heads (default {spec.attention_devices})")
    g.add_argument("--attention-link",
                   help=f"the link between the model's and the attention devices, a port per device (default "
                        f"{LAMINA_LINK}; with --attention-placement hybrid, required: the GPU's host link)")
    g.add_argument("--attention-micro-batches", type=int,
                   help=f"the most micro-batches an iteration splits in to keep both kinds of device busy (default "
                        f"{spec.attention_micro_batches}: two take turns; each iteration uses as many as make it "
                        f"fastest)")
    g.add_argument("--attention-placement", choices=list(PLACEMENTS),
                   help=f"which sequences the attention devices attend to: apart (every one, Lamina) or hybrid (those "
                        f"whose KV the model's devices' memory does not hold, the model's devices attending to theirs: "
                        f"APEX's CPU-GPU attention; default {spec.attention_placement})")
    g.add_argument("--router", help=f"how each pool picks the replica a request joins: {', '.join(ROUTERS)} "
                                    f"(default {DEFAULT_ROUTER})")
    g.add_argument("--decode-pick", choices=list(DECODE_PICKS),
                   help="with --prefill-replicas: when the decode pool's router picks a request's decode replica: "
                        "prefill_done (once its prefill is done: vLLM's proxies, NVIDIA Dynamo) or arrival (as it "
                        "joins its prefill replica: llm-d; default prefill_done)")
    g.add_argument("--memory-utilization", type=number,
                   help="the share of each device's memory the engine may use for weights, activations and KV blocks "
                        "(vLLM's gpu_memory_utilization, 0.9 there; default 1: every byte)")
    g.add_argument("--host-cache-GB", type=number,
                   help="host memory (GB) each replica keeps the prefix blocks its KV cache evicts in, loaded back "
                        "over the host link (--swap-GBps or the device's) when a request finds them (default: none)")
    g.add_argument("--kv-store-GB", type=number,
                   help="a KV store (GB) a pool's replicas share: every prefix block a replica computes is kept there "
                        "for the others to fetch (Mooncake's store; default: none)")
    g.add_argument("--kv-store-GBps", type=number,
                   help="what each device fetches from the KV store per second (default: its node link's NIC)")
    g.add_argument("--lora-adapters", type=int, default=spec.lora_adapters,
                   help="LoRA adapters over the base model, each request running one; each layer adds their shrink and "
                        "expand GEMMs, max-loras GPU slots come out of the KV cache (default 0: LoRA off)")
    g.add_argument("--lora-rank", type=int, default=spec.lora_rank,
                   help=f"the adapters' rank (vLLM's --max-lora-rank; default {spec.lora_rank})")
    g.add_argument("--max-loras", type=int, default=spec.max_loras,
                   help=f"distinct adapters the running requests may hold at once (vLLM's --max-loras; default "
                        f"{spec.max_loras})")
    g.add_argument("--lora-alpha", type=number, default=spec.lora_alpha,
                   help=f"how requests pick adapters: S-LoRA's power-law exponent, in (0, 1] (default "
                        f"{spec.lora_alpha:g}: uniform)")
    g.add_argument("--rate-profile", metavar="S:X,S:X,...",
                   help="the arrival rate in phases, repeating: each S seconds at X times --rate (0: none arrive), "
                        "e.g. 600:1,300:3 (default: --rate throughout)")
    g.add_argument("--seed", type=int, default=0, help="seed of arrivals and lengths (default 0)")
    g.add_argument("--slo-ttft", type=number, help="SLO: time to first token per request, s")
    g.add_argument("--slo-tpot", type=number, help="SLO: time per output token per request, s")
    for limit in ("ttft", "tpot"):
        g.add_argument(f"--slo-urgent-{limit}", type=number,
                       help=f"SLO: the urgent requests' own {limit.upper()} limit, s (default --slo-{limit}; read "
                            f"where requests differ in priority)")
    g.add_argument("--slo-attainment", type=number, default=0.9, help="SLO: fraction of requests (default 0.9)")
    g.add_argument("--slo-slowdown", choices=list(SLOWDOWN_PRESETS),
                   help="SLO: limits on percentiles of each request's TTFT, TBT and E2E slowdown over its run alone "
                        "on the device (splitwise: Splitwise's nine P50/P90/P99 limits); adds the slowdown_* metrics")
    g.add_argument("--capacity", type=number, nargs=2, metavar=("LOW", "HIGH"),
                   help="search the highest rate in [LOW, HIGH] req/s that meets the SLO")


def serving_flags_set(args: argparse.Namespace) -> list[tuple[str, object]]:
    """(flag, value) of each flag of the serving group (--serving aside) that args sets to other than its default:
    flags a static batch would silently ignore."""
    bare = argparse.ArgumentParser(add_help=False)
    _add_serving_flags(bare)
    defaults = vars(bare.parse_args([]))
    return [(f"--{dest.replace('_', '-')}", getattr(args, dest)) for dest, default in defaults.items()
            if dest != "serving" and getattr(args, dest, default) != default]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        if argv and argv[0] in COMMANDS:
            parser = _command_parser()
            args = parser.parse_args(argv)
            try:
                return _dispatch(args)
            except InputError as err:
                raise InputError(_by_flag(str(err), parser.commands[args.command])) from None
        if argv and argv[0] in ("-h", "--help"):
            _sweep_parser().print_help()
            return 0
        if argv and not argv[0].startswith("-") and not Path(argv[0]).exists() and \
                not argv[0].endswith((".yaml", ".yml")):
            raise InputError(f"{argv[0]!r}: not a command or a sweep file{did_you_mean(argv[0], COMMANDS)}; "
                             f"allowed: a sweep YAML or one of {', '.join(COMMANDS)}")
        return _cmd_sweep(_sweep_parser().parse_args(argv))
    except InputError as err:
        print(f"explore: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit flush from failing again
        return 0
    except OSError as err:
        # A file the command writes or reads that the system refuses (no such folder, a folder, no permission).
        where = err.filename if err.filename is not None else "a file"
        print(f"explore: error: {where}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        sweep = bool(argv) and argv[0] not in COMMANDS
        stored = stop.stored if isinstance(stop, Interrupted) else "every finished design point is stored" * sweep
        resume = f"; {stored}: run the same command again to resume" if stored else ""
        # A sweep's progress line is left open (carriage returns): the message starts a line of its own.
        start = "\n" if sweep and "--quiet" not in argv else ""
        print(f"{start}explore: interrupted{resume}", file=sys.stderr)
        return 130


def _by_flag(message: str, parser: argparse.ArgumentParser) -> str:
    """A refusal leading with the key of what a command's flag gave ('device: found 'H100'...': a preset lookup names
    what it looks up) as leading with that flag ('--device: ...'); any other as it is (a file's leads with its path)."""
    key, _, rest = message.partition(": ")
    flag = f"--{key.replace('_', '-')}"
    return f"{flag}: {rest}" if rest and flag in parser._option_string_actions else message


def _dispatch(args) -> int:
    from explore import calibrate_cmd, commands, measure_cmd, presets_cmd

    return {"run": commands.cmd_run, "check": commands.cmd_check, "report": commands.cmd_report,
            "presets": presets_cmd.cmd_presets, "trace": commands.cmd_trace,
            "import-vidur": calibrate_cmd.cmd_import_vidur,
            "import-aiconfigurator": calibrate_cmd.cmd_import_aiconfigurator, "calibrate": calibrate_cmd.cmd_calibrate,
            "validate": calibrate_cmd.cmd_validate, "measure": measure_cmd.cmd_measure}[args.command](args)


def _cmd_sweep(args) -> int:
    from explore.commands import cmd_sweep

    return cmd_sweep(args)


def json_safe(metrics: dict) -> dict:
    """NaN as null, so the output is standard JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def print_json(data) -> None:
    print(json.dumps(data, indent=2))


def default_out(sweep_name: str) -> Path:
    return Path("out") / sweep_name
