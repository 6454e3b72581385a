"""A CPU preset for the machine running the tests, from the harness's own timings, predicts held-out GEMMs.

The preset is built from streaming kernels and large fp32 GEMMs (hw_models.cpu_host: achieved bandwidth and
achieved fp32 FLOP/s written into CPUSpec's fields), loaded with load_device, and scored on GEMM shapes it
never saw, timed for real: GEMVs (memory-bound) and smaller squares (compute-bound).

Tolerance: the median absolute error of each regime, and of all held-out shapes, must be at most 35%.
Observed on the 2-core sandbox the project is developed on (one torch thread; load average 6 to 8 from
others' work beside it), 13 runs of this measurement: regime medians of 1% to 8% in 10 runs; 29% to 48%
in 3 runs, where a neighbour slowed the streaming kernels in every round (9 GB/s instead of 14-16 GB/s),
so GEMVs came out predicted too slow. 35% sits above the quiet runs' spread with a wide margin and well
below what a wrong preset gives: 10x the bandwidth puts the GEMVs at -90%, a tenth of it at +900%, a 10x
clock the squares at -90%. Known miss, not in the held-out set: GEMMs of 2 to 8 rows (m=2, 4096 x 4096)
run as small-m GEMMs at about half the GEMV bandwidth, -50% to -64% here.
What the preset makes of given rows, and that this check misses a wrong preset by the margins above, is checked
exactly on hand-made rows in the unit run (tests/hw_models/test_cpu_host.py); here, in the slow run, the real
rows' rates are checked only for being positive and finite, and their timing against held-out shapes runs in
bench/check_cpu_host_preset.sh (a busy or different machine misses it without anything in the code being wrong).
Noise: every harness timing is the median of its runs; training and held-out shapes are timed in
alternating rounds, and each shape keeps its fastest round (contention on a shared runner only adds time).
A miss is measured once more from scratch before the test fails (see test_held_out_gemms_within_tolerance).
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from explore.cli import main
from hw_models import cpu_host
from hw_models.registry import load_device
from hw_models.validation import plausible_range
from kernels import harness
from kernels.measured import MeasuredKernel, read_table
from kernels.table import KernelTable
from tests.hw_models.test_cpu_host import COMPUTE_BOUND, MEMORY_BOUND, NAME, TOLERANCE, regime_medians
from workloads.errors import InputError

ROUNDS, REPEATS = 5, 3


# Set by bench/check_cpu_host_preset.sh: the held-out timing check runs only there, not in the unit run (a busy
# or different machine misses it without anything in the code being wrong).
TIMING_ENV = "LLM_CODESIGN_MACHINE_TIMING"
# Building the preset times this machine for about 15 s: kept out of the unit run with the other long checks.
pytestmark = pytest.mark.slow


def _measure(folder: Path) -> tuple[list[MeasuredKernel], list[MeasuredKernel], Path, dict]:
    """(training rows, held-out rows, preset path, preset dict), all timed on one torch thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a second thread on a shared two-core runner waits on whatever else runs there
    try:
        source = harness.harness_source("cpu")
        train, held = [], []
        for _ in range(ROUNDS):
            train.append(cpu_host.measure_host(name=NAME, repeats=REPEATS, dtypes=("fp32",), source=source))
            held.append(harness.measure_gemms(MEMORY_BOUND + COMPUTE_BOUND, device=NAME, dtype="fp32",
                                              source=source, repeats=REPEATS))
    finally:
        torch.set_num_threads(before)
    train_rows, held_rows = cpu_host.fastest(train), cpu_host.fastest(held)
    data = cpu_host.cpu_preset(train_rows, cpu_host.host_facts(), name=NAME, threads=1,
                               provenance=f"{source}; command: pytest {Path(__file__).name}")
    path = folder / f"{NAME}.yaml"
    path.write_text(cpu_host.preset_yaml(data))
    return train_rows, held_rows, path, data


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    return _measure(tmp_path_factory.mktemp("preset"))


def _check_held_out(train, held, path, data) -> tuple[bool, str]:
    """(within tolerance, message) of the held-out shapes on the preset at path."""
    device = load_device(str(path))
    memory, compute, overall, detail = regime_medians(device, held)
    # The regimes are what the test says they are: GEMVs priced by bandwidth, squares by math.
    costs = device.cost_table(KernelTable.from_kernels([r.to_kernel() for r in held]), "device")
    n_memory = len(MEMORY_BOUND)
    assert np.all(costs.memory_s[:n_memory] > costs.compute_s[:n_memory]), detail
    assert np.all(costs.compute_s[n_memory:] > costs.memory_s[n_memory:]), detail
    message = (f"median abs. error memory-bound {memory:.0%}, compute-bound {compute:.0%}, all {overall:.0%} "
               f"(tolerance {TOLERANCE:.0%}; {data['memory']['bandwidth_GBps']} GB/s, "
               f"{data['compute']['frequency_GHz']} GHz effective); {detail}")
    return max(memory, compute, overall) <= TOLERANCE, message


machine_timing = pytest.mark.skipif(not os.environ.get(TIMING_ENV), reason=(
    f"machine timing (how fast this machine runs held-out GEMMs today) belongs in bench/: run "
    f"bench/check_cpu_host_preset.sh, which sets {TIMING_ENV}=1"))


@machine_timing
def test_held_out_gemms_within_tolerance(measured, tmp_path):
    ok, message = _check_held_out(*measured)
    if not ok:
        # A neighbour that streams memory through all rounds of one measurement skews it (up to 48% seen
        # here); a preset that is wrong misses again on a fresh measurement.
        ok, retry = _check_held_out(*_measure(tmp_path))
        message = f"first: {message}; again: {retry}"
    assert ok, message


@pytest.mark.parametrize("field, factor, regime", [("memory.bandwidth_GBps", 10.0, 0),
                                                   ("memory.bandwidth_GBps", 0.1, 0),
                                                   ("compute.frequency_GHz", 10.0, 1)])
@machine_timing
def test_a_wrong_preset_misses(measured, field, factor, regime):
    """The held-out timings of this machine miss a preset 10x off (on made-up timings: test_cpu_host.py)."""
    _, held, path, data = measured
    section, key = field.split(".")
    wrong = data[section][key] * factor
    rule = plausible_range(field)
    if not rule.low <= wrong <= rule.high:
        # A busy machine's 8.7 GB/s: a tenth of it is a preset load_device refuses, not one to score.
        pytest.skip(f"{field} {wrong:g} is outside the {rule.low:g} to {rule.high:g} a preset may have")
    device = load_device(str(path), overrides={field: wrong})
    medians = regime_medians(device, held)
    assert medians[regime] > TOLERANCE, medians[3]


def test_streams_are_timed_from_memory(measured):
    """The preset's bandwidth is DRAM's: its streaming rows are timed after a cache flush, not on warm inputs (a 32 MiB
    add stays partly in a 32 MiB L3 between runs and reads faster than memory streams)."""
    train, _, _, _ = measured
    streams = [r for r in train if r.kernel in ("norm", "elementwise", "activation")]
    assert streams and all("inputs flushed" in r.source and "warm inputs" not in r.source for r in streams)


def test_training_rows_fit_and_rates_are_plausible(measured):
    train, _, path, data = measured
    device = load_device(str(path))
    rates = [2 * r.m * r.n * r.k / r.time_s for r in train if r.kernel == "gemm" and r.m > 1]
    streams = [r.bytes / r.time_s for r in train if r.kernel in ("norm", "elementwise", "activation")]
    # A GEMV reads its m x k input, k x n weights and writes m x n outputs, 4 bytes each.
    streams += [4 * (r.m * r.k + r.k * r.n + r.m * r.n) / r.time_s for r in train if r.kernel == "gemm" and r.m == 1]
    # The effective clock makes the fp32 peak the median achieved GEMM rate; the bandwidth is the best pass
    # over memory (both written with four significant digits). How fast they are is this machine's today (busy
    # neighbours slow them): only the held-out check in bench/ judges them.
    assert device.peak_flops("fp32") == pytest.approx(statistics.median(rates), rel=1e-3)
    assert device.bandwidth_Bps == pytest.approx(max(streams), rel=1e-3)
    assert all(math.isfinite(x) and x > 0 for x in (*rates, *streams))
    assert data["compute"]["cores"] == 1 and data["compute"]["simd_width_bits"] in (128, 256, 512)


def test_every_section_names_its_provenance(measured):
    _, _, path, data = measured
    date = harness.harness_source("cpu").rsplit("; ", 1)[1]
    spec = load_device(str(path)).spec
    for section in ("compute", "memory"):
        source = data[section]["source"]
        assert f"harness torch {torch.__version__}" in source and "threads 1" in source and date in source
        assert f"pytest {Path(__file__).name}" in source
    for section in ("energy", "power", "area"):
        assert "PROXY" in data[section]["source"]
    assert spec.price.usd is None and spec.caches.l1.capacity_MB > 0


def test_wrong_key_is_one_line(measured, tmp_path):
    _, _, path, _ = measured
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("bandwidth_GBps", "bandwith_GBps", 1))
    with pytest.raises(InputError) as err:
        load_device(str(bad))
    assert "\n" not in str(err.value) and "bandwith_GBps" in str(err.value)


def test_committed_preset_loads_with_provenance():
    device = load_device("ci-host-cpu")
    assert device.kind == "cpu" and device.spec.compute.cores >= 1
    for section in (device.spec.compute, device.spec.memory):
        assert "harness torch" in section.source and "explore measure" in section.source


def test_measure_command_writes_the_preset(measured, tmp_path, monkeypatch, capsys):
    from explore.cli import _command_parser
    from explore.measure_cmd import cmd_measure

    train, _, _, _ = measured

    def measure_host_shape(shape, **_) -> list[MeasuredKernel]:
        """The shape's rows of the measurement above (the timing itself is tested there; it has no bf16 rows)."""
        if shape.kind == "streaming":
            return [r for r in train if r.kernel != "gemm"]
        return [r for r in train if r.kernel == "gemm" and (r.m, r.n, r.k) == shape.shape and r.dtype == shape.dtype]

    monkeypatch.setattr(cpu_host, "measure_host_shape", measure_host_shape)
    out, rows = tmp_path / "sub" / "host.yaml", tmp_path / "rows.csv"
    out.parent.mkdir()
    args = _command_parser().parse_args(["measure", "--device-name", "my-host", "--threads", "1",
                                         "--cpu-preset", str(out), "-o", str(rows)])
    assert cmd_measure(args) == 0
    device = load_device(str(out))
    assert device.name == "my-host" and "explore measure --device-name my-host" in device.spec.compute.source
    assert str(out) in capsys.readouterr().out
    # The rows name the preset file, so validating them scores the preset just written (a path with folders
    # names its figure by the file).
    assert {row.device for row in read_table(rows)} == {str(out)}
    assert main(["validate", str(rows), "--out", str(tmp_path / "v")]) == 0
    assert (tmp_path / "v" / "validate-host.png").is_file()
    bad = _command_parser().parse_args(["measure", "--device-name", "h", "--cuda", "--cpu-preset", "x.yaml"])
    with pytest.raises(InputError):
        cmd_measure(bad)
