"""`explore measure`: time real kernels on this machine and write a measured-kernel table with its provenance."""

from __future__ import annotations

import argparse
import shlex
import time
from collections import Counter

from workloads.errors import InputError

KINDS = ("gemm", "attention", "streaming")

MEASURE_HELP = """Time real kernels (GEMM, attention, RMSNorm/SiLU/add) with torch on this machine and write a
measured-kernel table (the CSV that `explore calibrate` and `explore validate` read).

On CUDA (--cuda) the full grids run (about a minute on an H100); on the CPU small grids run (seconds).
--quick keeps a few shapes of each kind, as a smoke test. Every row's source column names torch, the
device, the driver and the date; the same provenance and the command line are printed."""


def add_measure_parser(add) -> argparse.ArgumentParser:
    """Register `measure` on the explore command parser (`add` makes a subparser, as for every command)."""
    p = add("measure", MEASURE_HELP, "explore measure --device-name h100-sxm --cuda -o data/h100.csv.gz")
    p.add_argument("--device-name", required=True,
                   help="device preset name written in the table's device column (e.g. h100-sxm, cpu-local)")
    p.add_argument("--cuda", action="store_true", help="run on the CUDA device (default: the CPU)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    p.add_argument("--quick", action="store_true", help="a few shapes per kind (smoke test)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"], help="default bf16")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per shape; the median is kept (default 20)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU: intra-op threads (default torch's); 1 is steadier on a shared machine")
    p.add_argument("-o", "--output", required=True, help="table path, .csv or .csv.gz")
    return p


def _kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise InputError(f"--kinds: found {text!r}, allowed: a comma-separated subset of {','.join(KINDS)}")
    return kinds


def _command_line(args) -> str:
    parts = ["explore", "measure", "--device-name", args.device_name, "--kinds", args.kinds, "--dtype", args.dtype,
             "--repeats", str(args.repeats), "-o", args.output]
    parts += ["--cuda"] * args.cuda + ["--quick"] * args.quick
    parts += ["--threads", str(args.threads)] if args.threads is not None else []
    return " ".join(shlex.quote(p) for p in parts)


def _grids(cuda: bool, quick: bool) -> dict[str, list]:
    """Shapes per kind: the GPU grids on CUDA, the CPU grids otherwise; a few of the CPU ones with quick."""
    from kernels import harness

    if cuda and not quick:
        return {"gemm": harness.default_gemm_grid(), "attention": harness.default_attention_cases(),
                "streaming": harness.default_streaming_sizes()}
    grids = {"gemm": harness.cpu_gemm_grid(), "attention": harness.cpu_attention_cases(),
             "streaming": harness.cpu_streaming_sizes()}
    if quick:
        grids = {"gemm": grids["gemm"][::4], "attention": grids["attention"][::2], "streaming": grids["streaming"][:2]}
    return grids


def _validate(args) -> None:
    if not args.output.endswith((".csv", ".csv.gz")):
        raise InputError(f"-o: found {args.output!r}, allowed: a path ending in .csv or .csv.gz")
    if not args.device_name.strip():
        raise InputError("--device-name: found an empty name, allowed: a device preset name such as h100-sxm")
    for name in ("repeats", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name}: found {value}, allowed: a positive integer")


def cmd_measure(args) -> int:
    """Run the harness for the requested kinds and write the table; print provenance and a summary."""
    _validate(args)
    kinds = _kinds(args.kinds)
    import torch

    from kernels import harness
    from kernels.measured import write_table

    if args.cuda and not torch.cuda.is_available():
        raise InputError("--cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    torch_device = "cuda" if args.cuda else "cpu"
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    source = harness.harness_source(torch_device)
    print(f"provenance: {source}; command: {_command_line(args)}", flush=True)
    measure = {"gemm": harness.measure_gemms, "attention": harness.measure_attention,
               "streaming": harness.measure_streaming}
    grids = _grids(args.cuda, args.quick)
    start = time.perf_counter()
    rows = []
    for kind in kinds:
        rows += measure[kind](grids[kind], device=args.device_name, dtype=args.dtype, torch_device=torch_device,
                              source=source, repeats=args.repeats)
    write_table(args.output, rows)
    counts = ", ".join(f"{n} {k}" for k, n in Counter(r.kernel for r in rows).items())
    print(f"{args.output}: {len(rows)} rows ({counts}) in {time.perf_counter() - start:.1f} s")
    return 0
