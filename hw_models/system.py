"""SystemModel: `tp` x `pp` identical devices joined by a link, as one device model.

The `tp` devices of a pipeline stage run the same sharded kernels (kernels/parallel.py) at the same time, so a
kernel takes the time one device takes, and its dynamic energy is `tp` times one device's. The `pp` stages
run one after the other (one batch in flight), each kernel on its stage only. Collective kernels (all-reduces
within a stage, sends between stages) are priced on the link (hw_models/link.py) instead of a device and take
the link's time; their energy (the link's own) is not counted. An all-reduce runs as NCCL's collective or, with
allreduce="custom", as an engine's own P2P kernels (hw_models/link.py custom_all_reduce_time_s), whose copy and
reduction kernels the device prices for their local traffic and launch, NCCL taking over where it is faster, where the
message exceeds the kernels' buffer (CUSTOM_ALL_REDUCE_MAX_B) or where the tp devices do not all reach each other's
memory (more than the link's peer_devices). With allreduce="nvls" it runs as multimem loads and stores that the switch
reduces and multicasts (NVLink SHARP, hw_models/nvls.py), on links whose switch does (LinkSpec.multimem) among devices
that all reach each other, NCCL where it is faster; NCCL elsewhere. With allreduce="star" it runs as a master gathering
every device's buffer and sending back the sum (TPI-LLM, hw_models/star.py) on any link, always: the engine has no
other.
A system of more devices than one domain of the link joins (LinkSpec.domain_devices: an NVSwitch board's eight) spans
nodes joined by `node_link`, each device its own port, reached over the device's own PCIe link (a network's bandwidth at
most that link's: hw_models/link_pcie.py): a collective among devices on several nodes, and a pipeline send between
stages on different nodes, compose the two links (hw_models/nodes.py); custom and NVLS all-reduces run within one node
only (NCCL across nodes).
Memory, idle power, TDP, area and price are the sum over all devices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hw_models import nodes
from hw_models.cost import KernelCosts
from hw_models.link import (
    CUSTOM_ALL_REDUCE_MAX_B,
    DEFAULT_NODE_LINK,
    LinkModel,
    custom_all_reduce_time_s,
    load_link_model,
)
from hw_models.link_pcie import model_through_pcie
from hw_models.nvls import load_nvls_fit, nvls_all_reduce_time_s
from hw_models.star import star_all_reduce_time_s
from kernels.kernel import KernelKind
from kernels.parallel import ALLREDUCE_IMPLEMENTATIONS
from kernels.table import KIND_CODE, KernelTable
from workloads.errors import InputError

_ALL_REDUCE = KIND_CODE[KernelKind.ALL_REDUCE]
_SEND = KIND_CODE[KernelKind.SEND_RECV]
# Collectives among a group of the tp devices, the group's size in the row's batch (kernels/parallel.py
# context_parallel).
_GROUP_COLLECTIVES = {KIND_CODE[KernelKind.ALL_GATHER]: "all_gather", KIND_CODE[KernelKind.REDUCE_SCATTER]:
                      "reduce_scatter"}
_COLLECTIVES = {_ALL_REDUCE: "all_reduce", _SEND: "send_recv", **_GROUP_COLLECTIVES}
_ELEMENTWISE = KIND_CODE[KernelKind.ELEMENTWISE]


@dataclass(frozen=True)
class SystemPrice:
    """The price of `count` devices: a sum of each device's purchase and hourly price where published."""

    usd: float | None
    usd_per_hour: float | None


class SystemModel:
    """`tp` x `pp` copies of a device model joined by a link: the DeviceModel interface for the whole system."""

    def __init__(self, device, tp: int, link: LinkModel, pp: int = 1, allreduce: str = "nccl",
                 node_link: LinkModel | None = None):
        """`node_link`: the link between nodes where the system spans several (hw_models/nodes.py), each device
        reaching it over its own PCIe link (hw_models/link_pcie.py); None: DEFAULT_NODE_LINK's preset
        (hw_models/link.py)."""
        if allreduce not in ALLREDUCE_IMPLEMENTATIONS:
            raise InputError(f"allreduce: found {allreduce!r}, allowed: {', '.join(ALLREDUCE_IMPLEMENTATIONS)}")
        if allreduce == "star" and tp > 1 and link.fits:
            # The star is priced on the link's datasheet hop; beside collectives fitted on measured calls (their
            # per-call cost included) it would win by the difference in what each prices, not by its algorithm.
            raise InputError(f"allreduce: found 'star' on link {link.spec.name}, whose collectives are fitted on "
                             f"measured NCCL calls (joining {device.name} devices), allowed: nccl, custom or nvls "
                             f"there, or star on a link priced on its datasheet (TPI-LLM's edge networks: "
                             f"ethernet-100g, or a link YAML of your own)")
        self.device, self.tp, self.pp, self.link, self.allreduce = device, tp, pp, link, allreduce
        self.devices = tp * pp
        self.nodes = nodes.nodes_of(tp, pp, link.spec)
        if self.nodes > 1 and node_link is None:
            node_link = load_link_model(DEFAULT_NODE_LINK, calibrated=bool(link.fits))
        self.node_link = model_through_pcie(node_link, device.spec) if self.nodes > 1 else None
        self.kind = device.kind
        self.units = device.units
        self.spec = device.spec
        self.calibration = getattr(device, "calibration", None)

    @property
    def name(self) -> str:
        return f"{self.devices} x {self.device.name}"

    @property
    def peers_reach(self) -> bool:
        """Whether the tp devices all reach each other's memory over the link: within its peer_devices, on one node
        (hw_models/nodes.py). An engine's custom kernels and NVLS run only so; NCCL otherwise."""
        return self.tp <= self.link.spec.peer_devices and nodes.node_layout(self.tp, self.link.spec)[1] == 1

    @property
    def tp_nodes(self) -> int:
        """How many nodes one stage's tp devices span (1 within one domain of the link)."""
        return nodes.node_layout(self.tp, self.link.spec)[1]

    @property
    def custom_all_reduce(self) -> bool:
        """Whether all-reduces run as an engine's custom kernels: asked for, and the tp devices all reach each other's
        memory (peers_reach); engines fall back to NCCL otherwise, and so does this model."""
        return self.allreduce == "custom" and self.peers_reach

    @property
    def nvls_all_reduce(self) -> bool:
        """Whether all-reduces run through the switch's reductions (NVLink SHARP): asked for, the link's switch
        reduces, and the tp devices all reach each other over it (peers_reach); NCCL otherwise."""
        return self.allreduce == "nvls" and self.link.spec.multimem and self.peers_reach

    @property
    def nvls_fit(self):
        """The NVLS all-reduce fit (hw_models/nvls.py NvlsFit; its `link` the one it was measured on) on a calibrated
        link, None where the datasheet model prices it (a link file, or links priced on their datasheet)."""
        return load_nvls_fit() if self.link.fits else None

    def collective_time_s(self, kind: str, message_bytes, devices: int):
        """Seconds of a collective among `devices` of the system's devices (message_bytes per rank:
        hw_models/link.py), over the link within a node and the node link between nodes (hw_models/nodes.py)."""
        return nodes.collective_time_s(kind, message_bytes, devices, self.link, self.node_link)

    def send_time_s(self, message_bytes, boundary) -> np.ndarray:
        """Seconds of sends of `message_bytes` from stage `boundary` to the next (arrays broadcast): over the node link
        where the next stage is on another node (stages fill nodes in order: hw_models/nodes.py), else the link."""
        size = np.asarray(message_bytes, dtype=float)
        within = self.link.collective_time_s("send_recv", size, 2)
        if self.node_link is None:
            return np.asarray(within, dtype=float)
        crosses = np.array(nodes.stage_sends_cross(self.tp, self.pp, self.link.spec))
        return np.where(crosses[np.asarray(boundary)], self.node_link.collective_time_s("send_recv", size, 2), within)

    @property
    def memory_bytes(self) -> float:
        return self.devices * self.device.memory_bytes

    @property
    def idle_power_W(self) -> float:
        return self.devices * self.device.idle_power_W

    @property
    def tdp_W(self) -> float:
        return self.devices * self.device.tdp_W

    @property
    def area_mm2(self) -> float:
        return self.devices * self.device.area_mm2

    @property
    def price(self) -> SystemPrice:
        price = self.device.price

        def total(value: float | None) -> float | None:
            return None if value is None else self.devices * value

        return SystemPrice(usd=total(price.usd), usd_per_hour=total(price.usd_per_hour))

    @property
    def sparsity_patterns(self) -> frozenset[str]:
        return self.device.sparsity_patterns

    def as_run(self, table: KernelTable) -> KernelTable:
        """Each device's kernels as it runs them (DeviceModel.as_run); collectives, without weights, as they are."""
        return self.device.as_run(table)

    @property
    def sub_batches(self) -> int:
        return self.device.sub_batches

    def host_s(self, execution: str) -> float:
        return self.device.host_s(execution)

    def peak_flops(self, dtype: str) -> float:
        return self.device.peak_flops(dtype)

    @property
    def bandwidth_Bps(self) -> float:
        return self.device.bandwidth_Bps

    def cost_table(self, table: KernelTable, execution: str = "eager") -> KernelCosts:
        """Costs of a sharded table: device kernels on one device (energy for a stage's tp devices), collectives
        on the link."""
        collective = np.isin(table.kind, list(_COLLECTIVES))
        if not collective.any():
            return _scale_energy(self.device.cost_table(table, execution), self.tp)
        n = len(table)
        compute = _scale_energy(self.device.cost_table(table.select(~collective), execution), self.tp)
        time_s = np.zeros(int(collective.sum()))
        rows = table.kind[collective] == _ALL_REDUCE
        if rows.any():
            time_s[rows] = self.collective_time_s("all_reduce", table.act_bytes[collective][rows], self.tp)
        sends = table.kind[collective] == _SEND
        if sends.any():  # the i-th send of a table leaves stage i % (pp - 1) (pipeline_sends' order)
            time_s[sends] = self.send_time_s(table.act_bytes[collective][sends],
                                             np.arange(int(sends.sum())) % max(self.pp - 1, 1))
        for code, name in _GROUP_COLLECTIVES.items():
            group = table.kind[collective] == code
            for devices in np.unique(table.batch[collective][group]):
                of_size = group & (table.batch[collective] == devices)
                time_s[of_size] = self.collective_time_s(name, table.act_bytes[collective][of_size], int(devices))
        if self.custom_all_reduce:
            # The engine's kernels take messages up to their shared buffer's size; larger ones go to NCCL.
            rows = (table.kind[collective] == _ALL_REDUCE) & (table.act_bytes[collective] <= CUSTOM_ALL_REDUCE_MAX_B)
            if rows.any():
                time_s[rows] = np.minimum(time_s[rows], self._custom_all_reduce_s(
                    table.select(np.flatnonzero(collective)[rows]), execution))
        if self.nvls_all_reduce:
            rows = table.kind[collective] == _ALL_REDUCE
            fit = self.nvls_fit
            # Where NCCL's ring is faster (few GPUs, where the switch's (1 + 1/n) outweighs the ring's 2 (n - 1) / n, or
            # a message small enough for NCCL's low-latency protocol) it runs, as NCCL's tuner picks per size.
            time_s[rows] = np.minimum(time_s[rows], nvls_all_reduce_time_s(
                table.act_bytes[collective][rows], self.tp, self.link.spec, fit.all_reduce if fit else None))
        if self.allreduce == "star":
            rows = table.kind[collective] == _ALL_REDUCE
            time_s[rows] = star_all_reduce_time_s(table.act_bytes[collective][rows], self.tp, self.link.spec)
        fields = {}
        for name in ("time_s", "compute_s", "memory_s", "overhead_s", "compute_J", "memory_J", "static_J"):
            values = np.zeros(n)
            values[~collective] = getattr(compute, name)
            fields[name] = values
        fields["time_s"][collective] = time_s
        fields["overhead_s"][collective] = time_s  # waiting on the link: neither math nor memory
        fields["static_J"][collective] = time_s * self.idle_power_W
        unit = None
        if compute.unit is not None:
            unit = np.zeros(n, dtype=int)
            unit[~collective] = compute.unit
        return KernelCosts(unit=unit, **fields)

    def _custom_all_reduce_s(self, all_reduces: KernelTable, execution: str) -> np.ndarray:
        """Seconds of each all-reduce run as an engine's custom kernels: the copy into the shared buffer and the
        reduction kernel, each moving the message in and out of its own device's memory (the peers' reads are the
        link's part), priced on the device, then the link's hops and bytes."""
        message = all_reduces.act_bytes
        local = replace(all_reduces, kind=np.full(len(all_reduces), _ELEMENTWISE), act_bytes=2 * message,
                        flops=np.zeros(len(all_reduces)))
        kernels_s = 2 * self.device.cost_table(local, execution).time_s
        return custom_all_reduce_time_s(message, self.tp, self.link.spec, kernels_s)


def _scale_energy(costs: KernelCosts, devices: int) -> KernelCosts:
    """Every device runs the kernel: `devices` times one device's energy, in the same time."""
    if devices == 1:
        return costs
    return replace(costs, compute_J=costs.compute_J * devices, memory_J=costs.memory_J * devices,
                   static_J=costs.static_J * devices)
