"""Interconnect links (YAML presets in presets/links/) and the time of a collective over one, datasheet or fitted.

Message-size convention, one for every caller and every data source: `message_bytes` is the per-rank buffer
as nccl-tests reports it in its `size` column (the larger of a rank's send and receive buffers):
- all_reduce: each rank's buffer (input and output have this size);
- all_gather: each rank's output, the gathered tensor (each rank contributes message_bytes / n);
- reduce_scatter: each rank's input, the whole tensor (each rank keeps message_bytes / n);
- all_to_all: each rank's send buffer, all peers together (message_bytes / n goes to each peer);
- send_recv: the bytes one rank sends to the other.
Vidur's `size` (all_reduce and send_recv) is this number of bytes: its profiler allocates `size` fp16 elements
and records `size * 2`. aiconfigurator's `message_size` counts elements: its collector runs nccl-tests with
`-b` bytes and stores bytes / element size (2 for half, 1 for int8), so bytes = message_size x element size.

Datasheet model (alpha-beta, ring), B the link's bandwidth per direction per device, a its latency per step:
  all_reduce 2(n-1)/n S/B + 2(n-1) a; all_gather, reduce_scatter, all_to_all (n-1)/n S/B + (n-1) a;
  send_recv S/B + a; one device costs nothing.
An all-to-all is no ring in NCCL: nccl-tests' alltoall (src/alltoall.cu) groups a send and a receive to every peer, and
NCCL runs them in one kernel, each peer's pair on channels of its own at once (NVIDIA/nccl src/enqueue.cc
scheduleP2pTasksToPlan), LL where a peer's bytes are at most 16 KiB a channel, else Simple (addP2pToPlan,
P2P_LL_THRESHOLD). A rank's port carries (n-1)/n S, as above; its n-1 steps are one per peer, not ring hops. On
aiconfigurator's alltoall rows, fitted as below, scored on those HELD_OUT_DEVICES and HELD_OUT_BYTES hold out, neither
one step in place of n-1 nor that per-peer protocol rule in place of the faster line lowers the error on every system
(median / p90 |error|: H200 10.1 / 16.0% as fitted, 10.4 / 16.9 with one step, 8.7 / 17.2 with the rule; B200 2.6 /
15.8, 3.8 / 15.7, 3.2 / 16.6; L40S 17.1 / 37.3, 16.9 / 38.4, 9.6 / 15.7). The datasheet model with one step runs 89%
under H200's measured times (median), with n-1 steps 63%.
Fitted model: NCCL estimates each protocol's time as latency + bytes / bandwidth and runs the fastest (LL for
small messages, Simple for large; NVIDIA/nccl src/graph/tuning.cc). So a fit holds two such lines, each with a
fixed latency per call and an achieved fraction of B, a latency per step, and an exponent on n/2 that scales
the bandwidth with the device count (NVSwitch systems reach more bus bandwidth with more GPUs; a PCIe host
that carries all traffic reaches less; beyond the largest device count measured the scale stays put):
  t = min over protocol p of [base_p + steps(n) step_latency + share(n) S / (fraction_p B (n/2)^exponent)].
That t is the collective's device time, what prices a design point. A source that timed eager calls by their kernels'
durations (Vidur) also reads the host's interval between calls on some rows; its fit takes both readings (as_timed_s).
"""

from __future__ import annotations

import csv
import datetime
import functools
import gzip
import hashlib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as spec_dataclass

from hw_models.spec_common import SPEC_CONFIG, NonNegative, Positive, PositiveInt, Source
from hw_models.validation import check_keys, check_plausible, did_you_mean, input_error
from workloads.errors import InputError, found_document, nearest_file, read_user_text
from workloads.yaml_lines import LocatedYAML

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")
STORAGE_TIER = "a storage tier that joins no devices"  # what a link whose joins_devices is false is, in messages
KIND_FIELDS = ("joins_devices",)  # what a link is, not a figure of it: no what-if changes them
LINK_FOLDER = ("presets", "links")
FIT_FOLDER = ("calibration", "links")
MiB = 2**20


@spec_dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class LinkSpec:
    """One link as a preset gives it: bandwidth per direction per device (GB/s) and latency per hop (us)."""

    name: str
    description: str
    bandwidth_GBps: Positive
    latency_us: NonNegative
    source: Source
    # The most GPUs on the link that each reach every other's memory directly (an NVSwitch board's eight): an
    # engine's custom all-reduce runs within that many and NCCL beyond. 2 where a file does not say: PCIe's pair.
    peer_devices: PositiveInt = 2
    # Whether the switch reduces in the network (NVLink SHARP): an all-reduce may run as multimem loads and stores
    # through it (allreduce="nvls", hw_models/nvls.py). False where a file does not say.
    multimem: bool = False
    # How many GPUs one domain of the link joins (an NVSwitch board's eight): a group of more spans nodes of this many,
    # joined by the system's node link (hw_models/nodes.py). None: any number, as a network joins; None where a file
    # does not say.
    domain_devices: PositiveInt | None = None
    # Whether the link joins devices to each other. False: a storage tier that offloaded weights or KV stream from to
    # one device (an NVMe SSD), over which no collective runs. True where a file does not say.
    joins_devices: bool = True

    @property
    def bandwidth_Bps(self) -> float:
        return self.bandwidth_GBps * 1e9

    @property
    def latency_s(self) -> float:
        return self.latency_us * 1e-6


def link_names() -> list[str]:
    """Names of the bundled link presets."""
    folder = resources.files("hw_models").joinpath(*LINK_FOLDER)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def joining_link_names() -> list[str]:
    """Names of the bundled link presets that join devices (not a storage tier)."""
    return [name for name in link_names() if load_link(name).joins_devices]


def load_link(name_or_path: str, overrides: dict | None = None) -> LinkSpec:
    """A link preset (by name) or link YAML (by path), with optional what-if overrides {'bandwidth_GBps': 900}."""
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or path.exists():
        if not path.is_file():
            raise InputError(f"{name_or_path}: no such link YAML file{nearest_file(path)}")
        text, where = read_user_text(path), str(path)
    else:
        names = link_names()
        if name_or_path not in names:
            raise InputError(f"link: found {name_or_path!r}{did_you_mean(name_or_path, names)}, allowed: a path to "
                             f"a link YAML or one of {', '.join(names)}")
        text = resources.files("hw_models").joinpath(*LINK_FOLDER, f"{name_or_path}.yaml").read_text()
        where = "hw_models/" + "/".join(LINK_FOLDER) + f"/{name_or_path}.yaml"
    located = LocatedYAML(where, text)
    data, line_of = located.data, located.line_of
    if not isinstance(data, dict):
        raise InputError(f"{where}: found {found_document(data)}, allowed: a mapping of link fields")
    check_keys(data, LinkSpec, where, line_of=line_of)
    if overrides:
        fields = [name for name in LinkSpec.__dataclass_fields__ if name not in KIND_FIELDS]
        for key in overrides:
            if key not in fields:
                raise InputError(f"{where}: link.{key}: no such field to override{did_you_mean(key, fields)}; "
                                 f"allowed: {', '.join(fields)}")
            # A what-if gives a yes/no field as a number (--set takes numbers), not the true or false a file writes.
            if LinkSpec.__dataclass_fields__[key].type in (bool, "bool") and overrides[key] not in (0, 1):
                raise InputError(f"{where}: {key}: found {overrides[key]!r}, allowed: 0 or 1 (no or yes)")
        data, line_of = {**data, **overrides}, None
    check_plausible(data, where, line_of=line_of)  # .inf, .nan and numbers no link has (as device fields are)
    try:
        return TypeAdapter(LinkSpec).validate_python(data)
    except ValidationError as err:
        raise input_error(err, where, line_of=line_of) from None


@dataclass(frozen=True, kw_only=True)
class ProtocolFit:
    """One protocol's line: a fixed latency per call and the achieved fraction of the link's bandwidth."""

    base_latency_s: float
    bandwidth_fraction: float


@dataclass(frozen=True, kw_only=True)
class CollectiveFit:
    """A fitted collective on one system: the faster of two protocol lines (see the module docstring)."""

    small: ProtocolFit
    large: ProtocolFit
    step_latency_s: float = 0.0
    devices_exponent: float = 0.0
    max_devices: int | None = None  # the largest device count fitted: (n/2)^exponent stops growing beyond it
    # A source timed as eager calls (System.eager_calls): the host's interval between two calls in its loop, which a
    # rank's kernel waits out when a peer calls later (as_timed_s). Not a device time: nothing prices it. 0: the
    # source timed the collective on the device alone.
    eager_interval_s: float = 0.0


def _check_kind(kind: str) -> None:
    if kind not in COLLECTIVES:
        raise InputError(f"collective: found {kind!r}{did_you_mean(kind, COLLECTIVES)}, allowed: "
                         f"{', '.join(COLLECTIVES)}")


def _steps_and_share(kind: str, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latency steps and the share of message_bytes each device sends (ring algorithms; n >= 1)."""
    if kind == "all_reduce":
        return 2 * (n - 1), 2 * (n - 1) / n
    if kind == "send_recv":
        return np.ones_like(n), np.ones_like(n)
    return n - 1, (n - 1) / n


def as_timed_s(kind: str, message_bytes, devices, link: LinkSpec, fit: CollectiveFit, measured_s) -> np.ndarray:
    """What each measured row of a fitted system reads, by how its source timed it: the collective's device time, or
    for eager calls (fit.eager_interval_s > 0) the nearer to `measured_s` of its two readings.

    Eager calls (Vidur's profiler: torch.distributed calls back to back, each kernel's duration on rank 0): where the
    host calls slower than the device runs, a rank's kernel starts when its own host calls and ends when the last
    rank's has called and the collective has run. So the kernel lasts its device time on the rank that called last,
    and about the host's interval between calls on a rank that called earlier: the longer of the two.
    """
    measured = np.asarray(measured_s, dtype=float)
    device = np.broadcast_to(collective_time_s(kind, message_bytes, devices, link, fit), measured.shape)
    if not fit.eager_interval_s:
        return device
    waited = np.maximum(device, fit.eager_interval_s)
    return np.where(np.abs(np.log(waited / measured)) < np.abs(np.log(device / measured)), waited, device)


def collective_time_s(kind: str, message_bytes, devices, link: LinkSpec, fit: CollectiveFit | None = None):
    """Seconds a collective takes over `link` (message_bytes: see the module's convention; arrays broadcast).

    fit=None prices the datasheet alpha-beta model; with a CollectiveFit the fitted one. Returns a float for
    scalar inputs, else an array.
    """
    _check_kind(kind)
    size = np.asarray(message_bytes, dtype=float)
    n = np.asarray(devices, dtype=float)
    if not np.all(np.isfinite(size) & (size >= 0)):
        raise InputError(f"{kind}: message_bytes: found {size[~(np.isfinite(size) & (size >= 0))].flat[0]:g}, "
                         f"allowed: >= 0")
    if not np.all((n >= 1) & (n == np.round(n))):
        raise InputError(f"{kind}: devices: found {n[~((n >= 1) & (n == np.round(n)))].flat[0]:g}, allowed: a "
                         f"whole number >= 1")
    steps, share = _steps_and_share(kind, n)
    if fit is None:
        time = share * size / link.bandwidth_Bps + steps * link.latency_s
    else:
        scale_n = np.clip(n, 2, fit.max_devices or np.inf)
        bandwidth = link.bandwidth_Bps * (scale_n / 2.0) ** fit.devices_exponent
        time = np.minimum(*(p.base_latency_s + steps * fit.step_latency_s
                            + share * size / (p.bandwidth_fraction * bandwidth) for p in (fit.small, fit.large)))
    time = np.where(n > 1, time, 0.0)
    return float(time) if time.ndim == 0 else time


# ----- An engine's own all-reduce: P2P kernels over the link instead of NCCL -----

# The largest message an engine's custom all-reduce takes: the buffer its peers read, beyond which the engine calls
# NCCL. vLLM's CustomAllreduce(max_size=8192 * 1024) (vllm/distributed/device_communicators/custom_all_reduce.py);
# PyTorch's IntraNodeComm allocates 10 MiB (torch/csrc/distributed/c10d/intra_node_comm.hpp kDefaultBufferSize).
CUSTOM_ALL_REDUCE_MAX_B = 8 * MiB

def custom_all_reduce_time_s(message_bytes, devices, link: LinkSpec, kernels_s):
    """Seconds of a custom all-reduce of message_bytes per rank over `link`, the faster of its two algorithms
    (arrays broadcast; one device costs nothing).

    As PyTorch's IntraNodeComm runs them (torch/csrc/distributed/c10d/intra_node_comm.cu): a copy of the input into
    the buffer the peers read, then one kernel. One-shot: a barrier (each rank signals every peer with a system-scope
    atomic and waits for theirs: one link hop), then each rank reads the n - 1 peers' whole buffers and sums.
    Two-shot: a barrier, each rank reduces its 1/n slice from every buffer, a second barrier, then it gathers the
    n - 1 other reduced slices: 2 (n - 1) / n of the buffer over the link. A read phase waits on a round trip (two
    hops) before its bytes stream at the link's bandwidth. `kernels_s`: the device time of the copy and the kernel,
    priced on the device for their local traffic and launch (hw_models/system.py); the hop is the link's
    latency_us.
    """
    size = np.asarray(message_bytes, dtype=float)
    n = np.asarray(devices, dtype=float)
    hop, bandwidth = link.latency_s, link.bandwidth_Bps
    one_shot = kernels_s + 3 * hop + (n - 1) * size / bandwidth
    two_shot = kernels_s + 6 * hop + 2 * (n - 1) / n * size / bandwidth
    time = np.where(n > 1, np.minimum(one_shot, two_shot), 0.0)
    return float(time) if time.ndim == 0 else time


# ----- Fits on measured NCCL data: which systems, where the data lies, how rows are split, the fit itself -----

@dataclass(frozen=True)
class System:
    """A measured GPU system: the link its GPUs talk over, the device presets it is, where its data lies."""

    link: str
    devices: tuple[str, ...]
    source: str  # "vidur" or "aiconfigurator"
    folder: str  # relative to the data folder

    @property
    def eager_calls(self) -> bool:
        """Whether the source timed each collective as one of a loop of eager calls, by its kernel's duration
        (Vidur's vidur/profiling/collectives: eleven calls back to back, the profiler's median kernel time on rank
        0; as_timed_s), rather than on the device alone (aiconfigurator's nccl-tests: an average over back-to-back
        iterations)."""
        return self.source == "vidur"


SYSTEMS = {
    # Vidur's profiles come from DGX A100 80 GB and DGX H100 nodes (kernels/vidur_import.py); rows that span
    # nodes (devices_per_node < num_workers) go over the network, not NVLink, and are left out.
    "a100-dgx": System("nvlink3", ("a100-sxm-80gb", "a100-sxm-40gb"), "vidur", "vidur/profiling/network/a100_dgx"),
    # Before h100-dgx: a link takes each collective's fit from the first system listed on it (load_link_model).
    "h200-hgx": System("nvlink4", ("h200",), "aiconfigurator", "aiconfigurator/h200_sxm/comm/nccl"),
    "h100-dgx": System("nvlink4", ("h100-sxm",), "vidur", "vidur/profiling/network/h100_dgx"),
    "b200-hgx": System("nvlink5", (), "aiconfigurator", "aiconfigurator/b200_sxm/comm/nccl"),
    # L40S has no NVLink (datasheet); aiconfigurator's metadata names no host, so its PCIe Gen4 x16 link.
    "l40s-pcie": System("pcie4-x16", ("l40s",), "aiconfigurator", "aiconfigurator/l40s/comm/nccl"),
}
# Held out of every fit: all rows on 4 devices, and every message from 8 MiB (exclusive) to 32 MiB (inclusive).
HELD_OUT_DEVICES = 4
HELD_OUT_BYTES = (8 * MiB, 32 * MiB)
FIT_COMMAND = "python3 -c 'from hw_models.link import fit_collectives, write_system_fit; " \
              "[write_system_fit(f) for f in fit_collectives(\"../shared/data\")]'"


@dataclass(frozen=True)
class NcclRows:
    """Measured collectives as columns: kind, devices, message_bytes, time_s; `files` they were read from."""

    kind: np.ndarray
    devices: np.ndarray
    message_bytes: np.ndarray
    time_s: np.ndarray
    files: tuple[Path, ...] = ()


def read_system_rows(system: str, data_dir: str | Path, dtype: str = "half") -> NcclRows:
    """A system's measured rows. aiconfigurator rows of one dtype (half or int8); Vidur's are fp16."""
    spec = SYSTEMS[system]
    folder = Path(data_dir) / spec.folder
    files = sorted(folder.glob("*.csv.gz") if spec.source == "vidur" else folder.glob("*/nccl_perf.csv.gz"))
    if not files:
        raise InputError(f"{folder}: no NCCL measurements for {system}")
    rows = []
    for path in files:
        rows += _read_vidur(path) if spec.source == "vidur" else _read_aiconfigurator(path, dtype)
    kind, devices, size, time = zip(*rows, strict=True)
    return NcclRows(np.array(kind), np.array(devices, float), np.array(size, float), np.array(time), tuple(files))


def _read_vidur(path: Path) -> list[tuple]:
    with gzip.open(path, "rt", newline="") as f:
        return [(r["collective"], int(r["num_workers"]), int(r["size"]),
                 float(r[f"time_stats.{r['collective']}.median"]) * 1e-3)
                for r in csv.DictReader(f) if int(r["devices_per_node"]) == int(r["num_workers"])]


def _read_aiconfigurator(path: Path, dtype: str) -> list[tuple]:
    element = {"half": 2, "int8": 1}[dtype]
    with gzip.open(path, "rt", newline="") as f:
        return [({"alltoall": "all_to_all"}.get(r["op_name"], r["op_name"]), int(r["num_gpus"]),
                 int(r["message_size"]) * element, float(r["latency"]) * 1e-3)
                for r in csv.DictReader(f) if r["nccl_dtype"] == dtype]


def held_out(devices, message_bytes) -> np.ndarray:
    """Rows no fit sees: every row on HELD_OUT_DEVICES devices, and every message size in HELD_OUT_BYTES."""
    size = np.asarray(message_bytes)
    return (np.asarray(devices) == HELD_OUT_DEVICES) | ((size > HELD_OUT_BYTES[0]) & (size <= HELD_OUT_BYTES[1]))


def _make_fit(x, max_devices: int | None = None) -> CollectiveFit:
    small, large = ProtocolFit(base_latency_s=x[0] * 1e-6, bandwidth_fraction=x[2]), \
        ProtocolFit(base_latency_s=x[3] * 1e-6, bandwidth_fraction=x[4])
    if large.base_latency_s < small.base_latency_s:  # name the lower-latency line "small"
        small, large = large, small
    return CollectiveFit(small=small, large=large, step_latency_s=x[1] * 1e-6, devices_exponent=x[5],
                         max_devices=max_devices, eager_interval_s=x[6] * 1e-6)


def fit_collective(kind: str, devices, message_bytes, time_s, link: LinkSpec,
                   eager_calls: bool = False) -> CollectiveFit:
    """The CollectiveFit minimizing the squared log ratio of the rows' readings (as_timed_s) to their measured times
    (bounded least squares, the best of a few starts: the min() of two lines has local optima). send_recv has no
    steps and one n. `eager_calls`: the rows were timed as eager calls, and the host's interval between them is
    fitted too."""
    from scipy.optimize import least_squares

    fixed = ([1, 5] if kind == "send_recv" else []) + ([] if eager_calls else [6])  # these stay 0
    # x: small base (us), step latency (us), small fraction, large base (us), large fraction, exponent, eager
    # interval (us)
    lower, upper = np.array([0, 0, 1e-3, 0, 1e-3, -3.0, 0]), np.array([500, 100, 1.0, 5000, 1.0, 3.0, 1000])
    free = [i for i in range(7) if i not in fixed]

    def full(y):
        x = np.zeros(7)
        x[free] = y
        return x

    def residual(y):
        return np.log(as_timed_s(kind, message_bytes, devices, link, _make_fit(full(y)), time_s) / time_s)

    best = None
    for start in ([5, 1, 0.2, 20, 0.8, 0, 40], [5, 0.5, 0.05, 40, 0.9, 0.2, 60], [10, 1, 0.5, 50, 0.7, -1, 30]):
        result = least_squares(residual, np.array(start, float)[free], bounds=(lower[free], upper[free]),
                               x_scale="jac")
        best = result if best is None or result.cost < best.cost else best
    x = full(best.x)
    fit = _make_fit([float(v) for v in x], int(np.max(devices)))
    device = collective_time_s(kind, message_bytes, devices, link, fit)
    if eager_calls and np.array_equal(as_timed_s(kind, message_bytes, devices, link, fit, time_s), device):
        x[6] = 0.0  # no row reads the host's interval: the rows do not determine it
    return _make_fit([float(v) for v in x], int(np.max(devices)))


@dataclass(frozen=True, kw_only=True)
class SystemFit:
    """The fitted collectives of one measured system, with their held-out errors and provenance."""

    name: str
    link: str
    devices: tuple[str, ...]
    collectives: dict[str, CollectiveFit]
    errors: dict[str, dict] = field(default_factory=dict)  # per collective: held_out and train summaries
    provenance: dict = field(default_factory=dict)


def fit_collectives(data_dir: str | Path, systems=None, *, hold=held_out,
                    command: str = FIT_COMMAND) -> list[SystemFit]:
    """Fit every collective of each system (all of SYSTEMS by default) on its rows that hold(devices, bytes) does
    not hold out, and score it on those it does (errors as fractions of the measured time,
    hw_models.calibration.error_summary). The shipped fits use the default split, `held_out`."""
    from hw_models.calibration import error_summary

    fits = []
    for name in systems or SYSTEMS:
        spec, rows = SYSTEMS[name], read_system_rows(name, data_dir)
        link = load_link(spec.link)
        held = hold(rows.devices, rows.message_bytes)
        collectives, errors = {}, {}
        for kind in sorted({str(k) for k in rows.kind}):
            train, test = (rows.kind == kind) & ~held, (rows.kind == kind) & held
            fit = fit_collective(kind, rows.devices[train], rows.message_bytes[train], rows.time_s[train], link,
                                 spec.eager_calls)
            collectives[kind] = fit
            errors[kind] = {part: error_summary(as_timed_s(kind, rows.message_bytes[m], rows.devices[m], link, fit,
                                                           rows.time_s[m]), rows.time_s[m])
                            for part, m in (("held_out", test), ("train", train)) if m.any()}
        provenance = {
            "data": [{"file": str(p.relative_to(Path(data_dir))), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                     for p in rows.files],
            "rows": "fp16/half rows; Vidur rows within one node only",
            "timing": ("eager calls, each kernel's profiled duration: a row reads the device time or the host's "
                       "interval between calls (hw_models.link.as_timed_s)") if spec.eager_calls else
                      "nccl-tests, back-to-back iterations averaged: device time",
            "held_out": (f"all rows on {HELD_OUT_DEVICES} devices, and message_bytes in ({HELD_OUT_BYTES[0] // MiB}, "
                         f"{HELD_OUT_BYTES[1] // MiB}] MiB") if hold is held_out else f"custom: {hold!r}",
            "date": datetime.date.today().isoformat(), "command": command,
        }
        fits.append(SystemFit(name=name, link=spec.link, devices=spec.devices, collectives=collectives,
                              errors=errors, provenance=provenance))
    return fits


# ----- Shipped fits: one YAML per system in calibration/links/ -----

def fit_path(system: str) -> Path:
    return Path(str(resources.files("hw_models").joinpath(*FIT_FOLDER))) / f"{system}.yaml"


def write_system_fit(fit: SystemFit, path: Path | None = None) -> Path:
    """Write a system's fit as YAML (to the shipped calibration/links/<system>.yaml by default)."""
    path = path or fit_path(fit.name)
    data = {"system": fit.name, "link": fit.link, "devices": list(fit.devices), "provenance": fit.provenance,
            "collectives": {k: asdict(v) for k, v in fit.collectives.items()}, "errors": fit.errors}
    header = ("# Fitted by hw_models.link.fit_collectives (see provenance) on measured NCCL times: the two-protocol\n"
              "# alpha-beta model of hw_models/link.py for this system. Do not edit by hand: rerun the command.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path


def system_fit_names() -> list[str]:
    folder = Path(str(resources.files("hw_models").joinpath(*FIT_FOLDER)))
    return [name for name in SYSTEMS if (folder / f"{name}.yaml").is_file()]


@functools.lru_cache(maxsize=32)
def load_system_fit(system_or_device: str) -> SystemFit:
    """The shipped fit of a measured system, by system name ('h200-hgx') or by a device preset it covers ('h200')."""
    names = system_fit_names()
    name = next((s for s in names if s == system_or_device), None) or next(
        (s for s, spec in SYSTEMS.items() if system_or_device in spec.devices and s in names), None)
    if name is None:
        covered = [d for s in names for d in SYSTEMS[s].devices] if names else []
        raise InputError(f"collective fit: found {system_or_device!r}{did_you_mean(system_or_device, names + covered)},"
                         f" allowed: one of {', '.join(names + covered)} (other links use the datasheet model)")
    data = yaml.safe_load(fit_path(name).read_text())
    collectives = {k: CollectiveFit(small=ProtocolFit(**v["small"]), large=ProtocolFit(**v["large"]),
                                    step_latency_s=v["step_latency_s"], devices_exponent=v["devices_exponent"],
                                    max_devices=v.get("max_devices"), eager_interval_s=v.get("eager_interval_s", 0.0))
                   for k, v in data["collectives"].items()}
    return SystemFit(name=data["system"], link=data["link"], devices=tuple(data["devices"]), collectives=collectives,
                     errors=data.get("errors") or {}, provenance=data.get("provenance") or {})


def calibrated_links() -> dict[str, list[str]]:
    """Link preset -> the measured systems whose fits use it; a link absent here has only the datasheet model."""
    found: dict[str, list[str]] = {}
    for name in system_fit_names():
        found.setdefault(SYSTEMS[name].link, []).append(name)
    return found


# ----- A link with its fits, and each GPU preset's own link -----

class LinkModel:
    """A link and the collective fits measured on it: a kind with a fit is priced by it, others by the datasheet."""

    def __init__(self, spec: LinkSpec, fits: dict[str, CollectiveFit] | None = None,
                 fitted_on: dict[str, str] | None = None):
        self.spec, self.fits, self.fitted_on = spec, dict(fits or {}), dict(fitted_on or {})

    @property
    def name(self) -> str:
        return self.spec.name

    def collective_time_s(self, kind: str, message_bytes, devices):
        """Seconds of a collective over this link (message_bytes per rank: see the module docstring)."""
        return collective_time_s(kind, message_bytes, devices, self.spec, self.fits.get(kind))


def load_link_model(name_or_path: str, overrides: dict | None = None, *, calibrated: bool = True) -> LinkModel:
    """A link preset or file with its fits. A bundled preset takes, per collective, the fit of the first measured
    system on it in SYSTEMS order (nvlink4: HGX H200's nccl-tests times, which are per call back to back as a
    CUDA-graph replay runs them, before DGX H100's eager kernel times; send_recv only from DGX H100). Fitted
    bandwidth fractions apply to an overridden bandwidth. A link file given by path, or calibrated=False: the
    datasheet model. Links without measurements use the datasheet model, which runs 45-85% under measured NCCL
    times (README): compare links both fitted or both datasheet (calibrated=False)."""
    spec = load_link(name_or_path, overrides)
    if not spec.joins_devices:
        raise InputError(f"link: found {name_or_path!r}, {STORAGE_TIER}, allowed: a link between devices: "
                         f"{', '.join(joining_link_names())}")
    fits, fitted_on = {}, {}
    if calibrated and name_or_path in link_names():
        for system in calibrated_links().get(name_or_path, []):
            for kind, fit in load_system_fit(system).collectives.items():
                fitted_on.setdefault(kind, system)
                fits.setdefault(kind, fit)
    return LinkModel(spec, fits, fitted_on)


# Datasheets: A100/H100/H200 SXM reach every GPU of an HGX board over NVSwitch; V100 SXM2 over NVLink 2; PCIe cards
# (T4, L4, L40S have no NVLink; A40, RTX A6000 and H100 PCIe bridge pairs only) talk to more than one peer over PCIe.
# H20: Lamina (arXiv:2405.01814v2) Table 1 gives it H100's 450 GB/s inter-chip bandwidth, NVLink 4's per direction.
DEVICE_LINKS = {"a100-sxm-40gb": "nvlink3", "a100-sxm-80gb": "nvlink3", "h100-sxm": "nvlink4", "h200": "nvlink4",
                "h20": "nvlink4",
                "b200": "nvlink5", "v100-sxm2": "nvlink2", "h100-pcie": "pcie5-x16", "l40s": "pcie4-x16",
                "l4": "pcie4-x16", "a40": "pcie4-x16", "rtx-a6000": "pcie4-x16", "v100s-pcie": "pcie3-x16",
                "t4": "pcie3-x16"}


def has_default_link(device: str) -> bool:
    """Whether a device preset names the link its GPUs talk over (default_link); a device file does not."""
    return device in DEVICE_LINKS


def default_link(device: str) -> str:
    """The link preset a device preset's GPUs talk over in a multi-GPU server."""
    if not has_default_link(device):
        raise InputError(f"link: found none for device {device!r} (its preset names no default link), allowed: a link "
                         f"preset ({', '.join(joining_link_names())}) or a link YAML path")
    return DEVICE_LINKS[device]


# The link between nodes where a device's preset names no other: InfiniBand NDR, one 400 Gb/s port per GPU, as DGX H100
# joins its nodes (NVIDIA DGX H100 user guide: eight ConnectX-7 for GPU traffic between nodes). A100 systems: HDR at 200
# Gb/s per GPU (NVIDIA DGX A100 user guide: eight ConnectX-6 for the compute fabric).
DEFAULT_NODE_LINK = "infiniband-ndr"
DEVICE_NODE_LINKS: dict[str, str] = {"a100-sxm-80gb": "infiniband-hdr", "a100-sxm-40gb": "infiniband-hdr"}


def default_node_link(device: str) -> str:
    """The link preset between the nodes of a device preset's multi-node systems (DEFAULT_NODE_LINK unless its entry in
    DEVICE_NODE_LINKS names another)."""
    return DEVICE_NODE_LINKS.get(device, DEFAULT_NODE_LINK)
