"""NVLink SHARP all-reduce: the NVSwitch reduces and multicasts (allreduce="nvls"), fitted on published times.

On an NVSwitch that reduces in the network (NVLink SHARP, the third-generation NVSwitch of HGX/DGX H100 and H200, and
the fourth of B200), an all-reduce of an S-byte buffer over n GPUs runs as each GPU taking a 1/n slice: it loads
the slice from every GPU's buffer through the switch with a reducing multimem load (the switch reads S / n from each
GPU and returns the sum), then stores the sum with a multicast store (the switch writes it to every GPU). Over all
slices each GPU sends S (its buffer, to the switch's loads) plus S / n (its slice's sum) and receives the same, so
its link carries (1 + 1/n) S each way, against a ring's 2 (n - 1) / n S:
    t = base + (1 + 1/n) S / (fraction B),
B the link's bandwidth per direction. A link whose switch reduces says so (LinkSpec.multimem). The datasheet model
(`fit` None, a link priced on its datasheet) prices the bytes at B plus one link hop for each of the two phases.

The fit: base and fraction by least squares on the log ratio, on the published multimem all-reduce times of an
8 x H100 DGX (data/published/collectives/tokenweave-h100.csv, TokenWeave's artifact), holding out the same message
sizes as the NCCL fits (hw_models/link.py held_out); refit with FIT_COMMAND. Another multimem link (nvlink5) borrows
it, its fraction of that link's bandwidth.
"""

from __future__ import annotations

import csv
import datetime
import functools
import hashlib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from hw_models.link import FIT_FOLDER, LinkSpec, ProtocolFit, held_out, load_link

# Published multimem all-reduce times: the one measured NVLS system, on its link.
PUBLISHED = Path("data/published/collectives/tokenweave-h100.csv")
SYSTEM = "h100-dgx-nvls"
LINK = "nvlink4"
FIT_COMMAND = "python3 -c 'from hw_models.nvls import fit_nvls, write_nvls_fit; write_nvls_fit(fit_nvls())'"


def nvls_all_reduce_time_s(message_bytes, devices, link: LinkSpec, fit: ProtocolFit | None = None):
    """Seconds of an NVLink SHARP all-reduce of message_bytes per rank over `link` (arrays broadcast; one device
    costs nothing): fitted where `fit` is given, else the datasheet model (module docstring)."""
    size = np.asarray(message_bytes, dtype=float)
    n = np.asarray(devices, dtype=float)
    bytes_each_way = (1 + 1 / n) * size
    if fit is None:
        time = 2 * link.latency_s + bytes_each_way / link.bandwidth_Bps
    else:
        time = fit.base_latency_s + bytes_each_way / (fit.bandwidth_fraction * link.bandwidth_Bps)
    time = np.where(n > 1, time, 0.0)
    return float(time) if time.ndim == 0 else time


@dataclass(frozen=True)
class NvlsRows:
    """Published multimem all-reduces as columns."""

    devices: np.ndarray
    message_bytes: np.ndarray
    time_s: np.ndarray


def read_nvls_rows(path: Path = PUBLISHED, backend: str = "nvls", collective: str = "all_reduce") -> NvlsRows:
    """The published table's rows of one backend (nvls: the multimem kernel; nccl: torch.distributed over NCCL) and
    collective."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["backend"] == backend and r["collective"] == collective]
    return NvlsRows(np.array([float(r["devices"]) for r in rows]), np.array([float(r["message_bytes"]) for r in rows]),
                    np.array([float(r["time_s"]) for r in rows]))


@dataclass(frozen=True, kw_only=True)
class NvlsFit:
    """The fitted NVLS all-reduce of one system, with its errors and provenance."""

    link: str
    all_reduce: ProtocolFit
    errors: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)


def fit_nvls(path: Path = PUBLISHED) -> NvlsFit:
    """Fit base latency and bandwidth fraction on the rows held_out keeps; score the others."""
    from scipy.optimize import least_squares

    from hw_models.calibration import error_summary

    rows, link = read_nvls_rows(path), load_link(LINK)
    held = held_out(rows.devices, rows.message_bytes)
    train = ~held

    def line(x) -> ProtocolFit:
        return ProtocolFit(base_latency_s=x[0] * 1e-6, bandwidth_fraction=x[1])

    def residual(x):
        predicted = nvls_all_reduce_time_s(rows.message_bytes[train], rows.devices[train], link, line(x))
        return np.log(predicted / rows.time_s[train])

    result = least_squares(residual, np.array([10.0, 0.7]), bounds=([0.0, 1e-3], [500.0, 1.0]), x_scale="jac")
    fit = line([float(v) for v in result.x])
    errors = {part: error_summary(nvls_all_reduce_time_s(rows.message_bytes[m], rows.devices[m], link, fit),
                                  rows.time_s[m]) for part, m in (("held_out", held), ("train", train)) if m.any()}
    provenance = {"data": {"file": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()},
                  "rows": "backend nvls, collective all_reduce: the multimem kernel at its fastest of 2-32 SMs",
                  "timing": "CUDA events around one call after an L2 flush, median of 100: device time",
                  "held_out": "message_bytes in (8, 32] MiB (hw_models.link.held_out)",
                  "date": datetime.date.today().isoformat(), "command": FIT_COMMAND}
    return NvlsFit(link=LINK, all_reduce=fit, errors=errors, provenance=provenance)


def nvls_fit_path() -> Path:
    return Path(str(resources.files("hw_models").joinpath(*FIT_FOLDER))) / f"{SYSTEM}.yaml"


def write_nvls_fit(fit: NvlsFit, path: Path | None = None) -> Path:
    """Write the fit as YAML (to the shipped calibration/links/h100-dgx-nvls.yaml by default)."""
    path = path or nvls_fit_path()
    data = {"system": SYSTEM, "link": fit.link, "provenance": fit.provenance,
            "all_reduce": asdict(fit.all_reduce), "errors": fit.errors}
    header = ("# Fitted by hw_models.nvls.fit_nvls (see provenance) on published multimem all-reduce times: the\n"
              "# NVLink SHARP model of hw_models/nvls.py. Do not edit by hand: rerun the command.\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path


@functools.lru_cache(maxsize=1)
def load_nvls_fit() -> NvlsFit | None:
    """The shipped NVLS fit (None where none is shipped). A multimem link measured otherwise borrows its base latency
    and bandwidth fraction, as an uncalibrated GPU preset borrows its sibling's efficiency (NvlsFit.link names the
    link it was measured on)."""
    path = nvls_fit_path()
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text())
    return NvlsFit(link=data["link"], all_reduce=ProtocolFit(**data["all_reduce"]), errors=data.get("errors") or {},
                   provenance=data.get("provenance") or {})
