"""`explore measure`: time real kernels on this machine and write a measured-kernel table with its provenance."""

from __future__ import annotations

import argparse
import logging
import shlex
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from explore.cli import Interrupted
from explore.out_paths import check_out_file
from explore.rows import count_label
from kernels.harness import QUANTIZED_GEMM_DTYPES, STEP_WEIGHT_DTYPES  # imports no torch: the parser stays fast
from kernels.measured import TABLE_SUFFIXES
from workloads.errors import InputError

KINDS = ("gemm", "attention", "streaming", "decode_step", "prefill_step")
# The fields of each kind's shapes (kernels/harness.py GemmShape, AttentionCase, ...), as measured_as cells name them.
CASE_FIELDS = {"gemm": ("m", "n", "k"), "attention": ("batch", "heads", "kv_heads", "q_len", "kv_len", "head_dim"),
               "streaming": ("rows", "hidden"), "decode_step": ("batch", "context_len"),
               "prefill_step": ("batch", "prompt_len")}
# The extra table column naming what each row was measured as (MEASURE_HELP): a rerun reuses the rows whose cell it
# would write itself.
MEASURED_AS = "measured_as"
KERNEL_KINDS = KINDS[:3]  # the default --kinds; decode_step and prefill_step join them when --model is given
MODEL_KINDS = KINDS[3:]  # whole steps of a model: need --model
FLOAT_DTYPES = ("bf16", "fp16", "fp32")

MEASURE_HELP = """Time real kernels (GEMM, attention, RMSNorm/SiLU/add) with torch on this machine and write a
measured-kernel table (the CSV that `explore calibrate` and `explore validate` read).

On CUDA (--cuda) the full grids run (about a minute on an H100); on the CPU small grids run (seconds).
--quick keeps a few shapes of each kind, as a smoke test. With --model, whole decode steps and prefills
of that model (built at full size from its config, random weights, at the config's dtype) are timed too,
as `decode_step` and `prefill_step` rows that `explore validate` compares with the simulated step. Every
row's source column names torch, the device, the driver and the date; the same provenance and the command
line are printed.

Each shape's rows reach the table as soon as they are timed (the table is rewritten whole, atomically): an
interrupted run keeps every shape it finished, and the same command run again times only the others. The
table's measured_as column says what each row was measured as: its kind, its shape and every setting its
time depends on (--device-name, --dtype, --model for whole steps, --repeats, torch, the hardware, CUDA and
the driver or the CPU threads; not the date). A rerun reuses a shape's rows only where that cell is the one
it would write itself; the table's other rows are replaced.

--cpu-preset OUT.yaml instead writes a device preset (kind cpu) of this machine: streaming bandwidth and
the achieved fp32/bf16 GEMM rates of a few large GEMMs, timed on --threads threads in three rounds, each
row kept at its fastest round (--kinds, --dtype and --quick do not apply); each section's source names
this command, the date, the CPU, torch and threads. Its rows reach the -o table (by default OUT.csv
beside OUT.yaml) as they are timed, each round's; once the preset is written the table holds the rows it
was fitted on (each shape's fastest round): an interrupted run resumes, and a rerun under the same settings
times nothing (measured_as, as above)."""


def add_measure_parser(add) -> argparse.ArgumentParser:
    """Register `measure` on the explore command parser (`add` makes a subparser, as for every command)."""
    p = add("measure", MEASURE_HELP, "explore measure --device-name h100-sxm --cuda --model llama-3-8b "
            "-o data/h100.csv.gz\n  "
            "explore measure --device-name my-cpu --threads 1 --cpu-preset my-cpu.yaml")
    p.add_argument("--device-name", required=True,
                   help="device preset name written in the table's device column (e.g. h100-sxm, ci-host-cpu): "
                        "validate prices the rows on it")
    p.add_argument("--cuda", action="store_true", help="run on the CUDA device (default: the CPU)")
    p.add_argument("--kinds", default=None,
                   help=f"comma-separated subset of {','.join(KINDS)} (default: all; decode_step and prefill_step "
                        f"need --model)")
    p.add_argument("--model", help="model preset or config.json whose whole decode steps to time (decode_step)")
    p.add_argument("--quick", action="store_true", help="a few shapes per kind (smoke test)")
    p.add_argument("--dtype", default="bf16", choices=[*FLOAT_DTYPES, *QUANTIZED_GEMM_DTYPES],
                   help="default bf16; fp8 (per-tensor scaled), w8a8 (int8) and w4a16 (int4 weights, a bf16 scale "
                        "and zero per 128) time GEMMs through the torch op that runs them; w4a16 also runs a bf16 "
                        "model's whole steps with int4 linears (tinygemm, as gpt-fast's int4)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per shape; the median is kept (default 20)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU: intra-op threads (default torch's); 1 is steadier on a shared machine")
    p.add_argument("-o", "--output", help="table path, .csv or .csv.gz (needed unless --cpu-preset is given; "
                                              "its default is OUT.csv)")
    p.add_argument("--cpu-preset", metavar="OUT.yaml",
                   help="write a CPU device preset of this machine from its measured bandwidth and GEMM rates")
    return p


def _kinds(text: str | None, model: str | None) -> list[str]:
    if text is None:
        return list(KERNEL_KINDS) + list(MODEL_KINDS) * (model is not None)
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise InputError(f"--kinds: found {text!r}, allowed: a comma-separated subset of {','.join(KINDS)}")
    steps = [k for k in kinds if k in MODEL_KINDS]
    if steps and model is None:
        raise InputError(f"--model: missing; --kinds {','.join(steps)} times a model's whole steps (a preset or "
                         f"config.json)")
    return kinds


def _command_line(args) -> str:
    parts = ["explore", "measure", "--device-name", args.device_name]
    if args.cpu_preset is None:
        parts += ["--kinds", ",".join(_kinds(args.kinds, args.model)), "--dtype", args.dtype]
        parts += ["--model", args.model] if args.model is not None else []
    parts += ["--repeats", str(args.repeats)]
    parts += ["-o", args.output] if args.output is not None else []
    parts += ["--cpu-preset", args.cpu_preset] if args.cpu_preset is not None else []
    parts += ["--cuda"] * args.cuda + ["--quick"] * (args.quick and args.cpu_preset is None)
    parts += ["--threads", str(args.threads)] if args.threads is not None else []
    return " ".join(shlex.quote(p) for p in parts)


def _grids(cuda: bool, quick: bool) -> dict[str, list]:
    """Shapes per kind: the GPU grids on CUDA, the CPU grids otherwise; a few of the CPU ones with quick."""
    from kernels import harness

    if cuda and not quick:
        return {"gemm": harness.default_gemm_grid(), "attention": harness.default_attention_cases(),
                "streaming": harness.default_streaming_sizes(), "decode_step": harness.default_decode_cases(),
                "prefill_step": harness.default_prefill_cases()}
    grids = {"gemm": harness.cpu_gemm_grid(), "attention": harness.cpu_attention_cases(),
             "streaming": harness.cpu_streaming_sizes(), "decode_step": harness.cpu_decode_cases(),
             "prefill_step": harness.cpu_prefill_cases()}
    if quick:
        grids = {"gemm": grids["gemm"][::4], "attention": grids["attention"][::2], "streaming": grids["streaming"][:2],
                 "decode_step": grids["decode_step"][:1], "prefill_step": grids["prefill_step"][:1]}
    return grids


def _validate(args) -> None:
    if args.output is None and args.cpu_preset is None:
        raise InputError("-o: missing, allowed: a table path ending in .csv or .csv.gz (or give --cpu-preset)")
    # Checked before timing anything: a refused write afterwards would lose the measurement.
    for flag, path, suffixes in (("-o", args.output if args.cpu_preset is None else _rows_table(args),
                                  TABLE_SUFFIXES),
                                 ("--cpu-preset", args.cpu_preset, (".yaml", ".yml"))):
        if path is not None:
            check_out_file(flag, path, suffixes)
    if args.cpu_preset is not None and args.cuda:
        raise InputError("--cuda: found with --cpu-preset, allowed: one of them (a CPU preset runs on the CPU)")
    if not args.device_name.strip():
        raise InputError("--device-name: found an empty name, allowed: a device preset name such as h100-sxm")
    if args.dtype in QUANTIZED_GEMM_DTYPES and args.cpu_preset is None:
        runs = ("gemm", *MODEL_KINDS) if args.dtype in STEP_WEIGHT_DTYPES else ("gemm",)
        others = [k for k in _kinds(args.kinds, args.model) if k not in runs]
        if others:
            raise InputError(f"--dtype: found {args.dtype!r} with --kinds {','.join(others)}, allowed: "
                             f"{', '.join(FLOAT_DTYPES)} (a quantized dtype times {' and '.join(runs)} only)")
    for name in ("repeats", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name}: found {value}, allowed: a positive integer")
    from explore.runner import usable_cores

    cores = usable_cores()
    if args.threads is not None and args.threads > cores:
        # More threads than cores time the scheduler's time-slicing, not the kernels: a meaningless table.
        raise InputError(f"--threads: found {args.threads:,}, allowed: 1 to {cores} (the CPU cores this process "
                         f"may run on)")


def cmd_measure(args) -> int:
    """Run the harness for the requested kinds and write the table; print provenance and a summary."""
    _validate(args)
    kinds = _kinds(args.kinds, args.model)
    config = _model_config(args.model) if set(kinds) & set(MODEL_KINDS) else None
    if config is not None and args.dtype in STEP_WEIGHT_DTYPES:
        from kernels.harness import int4_refusal

        why = (f"a {config.dtype} model" if config.dtype not in ("bfloat16", "float16") else int4_refusal(config))
        if why:
            raise InputError(f"--dtype: found {args.dtype!r} for {args.model}: {why}; allowed: a 16-bit model "
                             f"whose linears tinygemm's int4 kernel takes")
    import torch

    from kernels import harness

    if args.cuda and not torch.cuda.is_available():
        raise InputError("--cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    torch_device = "cuda" if args.cuda else "cpu"
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    source = harness.harness_source(torch_device)
    print(f"provenance: {source}; command: {_command_line(args)}", flush=True)
    logging.getLogger(harness.__name__).setLevel(logging.INFO)  # one line per timed shape: the run's progress
    setup = harness.harness_setup(torch_device)
    if args.cpu_preset is not None:
        return _write_cpu_preset(args, source, setup)
    out, start = Path(args.output), time.perf_counter()
    grids = _grids(args.cuda, args.quick)
    cases = [(kind, case) for kind in kinds for case in grids[kind]]
    settings = _settings(args, setup)
    keys = [_measured_as(kind, case, args.model, settings) for kind, case in cases]
    rows_of = _measure_resumably(out, keys, lambda i: _measure_case(*cases[i], args, config, torch_device, source))
    rows = [row for key in keys for row in rows_of.get(key, ())]
    counts = ", ".join(f"{n} {k}" for k, n in Counter(r.kernel for r in rows).items())
    print(f"{args.output}: {len(rows)} rows ({counts}) in {time.perf_counter() - start:.1f} s")
    return 0


def _settings(args, setup: str) -> str:
    """The settings of a run that a shape's time depends on, as its measured_as cells name them."""
    return f"device {args.device_name}; dtype {args.dtype}; repeats {args.repeats}; {setup}"


def _measured_as(kind: str, case: tuple, model: str | None, settings: str) -> str:
    """A shape's measured_as cell: 'gemm m=1 n=512 k=512; device ...; harness torch ...' (a whole step's names its
    model)."""
    shape = " ".join(f"{name}={value}" for name, value in zip(CASE_FIELDS[kind], case, strict=True))
    return f"{kind}{f' of {model}' if kind in MODEL_KINDS else ''} {shape}; {settings}"


def _stored(path: Path, keys: list[str]) -> tuple[dict[str, list], int]:
    """The rows the table at path holds (none if there is no table) for each of `keys`, by the measured_as cell they
    were written with; and how many rows it holds otherwise (under other settings, or from before the column)."""
    from kernels.measured import read_table_columns

    if not path.exists():
        return {}, 0
    rows, cells = read_table_columns(path, (MEASURED_AS,))
    wanted, by_key = set(keys), defaultdict(list)
    for row, key in zip(rows, cells[MEASURED_AS], strict=True):
        if key in wanted:
            by_key[key].append(row)
    return dict(by_key), len(rows) - sum(map(len, by_key.values()))


def _measure_resumably(out: Path, keys: list[str], measure: Callable[[int], list]) -> dict[str, list]:
    """The rows of each shape, by its measured_as cell (`keys`): those the table at `out` holds under that cell, and
    `measure(i)` of the i-th shape for the others, the table rewritten after each. Its rows under other cells are
    replaced."""
    rows_of, replaced = _stored(out, keys)
    if out.exists():
        print(f"{out}: {len(rows_of):,} of {count_label(len(keys), 'shape')} already measured under these settings"
              + (f"; {count_label(replaced, 'row')} measured otherwise replaced" if replaced else ""), flush=True)
    try:
        for i, key in enumerate(keys):
            if key in rows_of:
                continue
            rows = measure(i)
            if rows:  # a shape the op refuses (logged) has none: a rerun tries it again
                _store(out, keys, {**rows_of, key: rows})
                rows_of[key] = rows
    except KeyboardInterrupt:
        raise Interrupted(f"{len(rows_of):,} of {count_label(len(keys), 'shape')} stored") from None
    _store(out, keys, rows_of)
    return rows_of


def _store(path: Path, keys: list[str], rows_of: dict[str, list]) -> None:
    """Write the rows measured so far, in the order of `keys` (a resumed table is ordered as one run whole)."""
    from kernels.measured import write_table

    rows = [(row, key) for key in keys for row in rows_of.get(key, ())]
    write_table(path, [row for row, _ in rows], extra={MEASURED_AS: [key for _, key in rows]})


def _measure_case(kind: str, case: tuple, args, config, torch_device: str, source: str) -> list:
    """The rows of one shape of one kind."""
    from kernels import harness

    if kind in MODEL_KINDS:
        step = {"decode_step": harness.measure_decode_steps, "prefill_step": harness.measure_prefill_steps}[kind]
        return step(args.model, config, [case], device=args.device_name, torch_device=torch_device, source=source,
                    repeats=args.repeats, weights=args.dtype if args.dtype in STEP_WEIGHT_DTYPES else "")
    measure = {"gemm": harness.measure_gemms, "attention": harness.measure_attention,
               "streaming": harness.measure_streaming}[kind]
    return measure([case], device=args.device_name, dtype=args.dtype, torch_device=torch_device, source=source,
                   repeats=args.repeats)


def _model_config(model: str):
    """The config of --model; on the CPU it must fit in memory, since the harness builds it at full size."""
    from hw_models.cpu_host import physical_memory_GB
    from kernels.formats import DTYPE_BITS
    from kernels.harness import step_refusal, table_dtype
    from workloads.model_config import load_model_config

    config = load_model_config(model)
    if why := step_refusal(config):
        raise InputError(f"--model: found {model}: {why}; allowed: a model without multi-head latent "
                         f"attention")
    need_GB = config.param_count() * DTYPE_BITS[table_dtype(config.dtype)] / 8 / 1e9
    have_GB = physical_memory_GB()
    if have_GB is not None and need_GB > 0.8 * have_GB:
        raise InputError(f"--model: {model} needs {need_GB:.1f} GB of weights at {config.dtype}, this machine "
                         f"has {have_GB:.1f} GB; allowed: a model whose weights fit in 80% of memory "
                         f"(a config.json of a smaller model, or --cuda on a large GPU)")
    return config


def _rows_table(args) -> str:
    """Where --cpu-preset stores its rows: -o, or OUT.csv beside OUT.yaml."""
    return args.output if args.output is not None else str(Path(args.cpu_preset).with_suffix(".csv"))


def _write_cpu_preset(args, source: str, setup: str) -> int:
    """Measure this machine's streaming bandwidth and GEMM rates, write the CPU preset and the rows it is fitted on.

    Each round's rows of each shape reach the table as they are timed (_measure_resumably), then the table holds each
    shape's fastest round; a rerun under the same settings reuses either."""
    import torch

    from hw_models import cpu_host

    start, out, rounds = time.perf_counter(), Path(_rows_table(args)), cpu_host.HOST_ROUNDS
    shapes = cpu_host.host_shapes()
    settings = f"device {args.device_name}; repeats {args.repeats}; {setup}"

    def key(shape, round_: int | None) -> str:
        timed = f"round {round_ + 1} of {rounds}" if round_ is not None else f"fastest of {rounds} rounds"
        flushed = "; inputs flushed" * (shape.kind == "streaming")
        return _measured_as(shape.kind, shape.shape, None, f"dtype {shape.dtype}{flushed}; cpu preset {timed}; "
                                                           f"{settings}")

    fitted_keys = [key(shape, None) for shape in shapes]
    fitted_of, _ = _stored(out, fitted_keys)
    if len(fitted_of) < len(shapes):
        round_keys = [key(shape, r) for r in range(rounds) for shape in shapes]
        timed_of = _measure_resumably(out, round_keys, lambda i: cpu_host.measure_host_shape(
            shapes[i % len(shapes)], name=args.device_name, repeats=args.repeats, source=source))
        fitted_of = {key(shape, None): cpu_host.fastest([timed_of.get(key(shape, r), ()) for r in range(rounds)])
                     for shape in shapes}
    else:
        print(f"{out}: the fastest of {rounds} rounds of all {count_label(len(shapes), 'shape')} already measured "
              f"under these settings", flush=True)
    # The rows name the preset file, so `explore validate` of the table scores the preset written beside it.
    fitted_of = {k: [replace(row, device=args.cpu_preset) for row in rows] for k, rows in fitted_of.items()}
    rows = [row for k in fitted_keys for row in fitted_of[k]]
    threads = torch.get_num_threads()
    data = cpu_host.cpu_preset(rows, cpu_host.host_facts(), name=args.device_name, threads=threads,
                               provenance=f"{source}; command: {_command_line(args)}")
    header = f"# Written by: {_command_line(args)}\n# {source}\n"
    Path(args.cpu_preset).write_text(header + cpu_host.preset_yaml(data))
    _store(out, fitted_keys, fitted_of)
    fp32, bf16 = cpu_host.gemm_GFLOPs(rows, "fp32"), cpu_host.gemm_GFLOPs(rows, "bf16")
    print(f"{args.cpu_preset}: streaming {data['memory']['bandwidth_GBps']} GB/s, fp32 GEMM {fp32:.4g} GFLOP/s"
          + (f", bf16 GEMM {bf16:.4g} GFLOP/s" if bf16 else "") + f" on {threads} thread(s), from {len(rows)} rows"
          f" ({out}) in {time.perf_counter() - start:.1f} s")
    return 0
