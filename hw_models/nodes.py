"""Collectives of a group of devices that spans nodes: `g` devices a node joined by the link's domain (LinkSpec
.domain_devices: an NVSwitch board's eight), `m` nodes joined by the node link, each device its own NIC (DGX H100:
eight ConnectX-7 at 400 Gb/s, one per GPU, NVIDIA DGX H100 user guide), n = g m devices in all.

A group of n devices fits one domain where n <= domain_devices (or the link's domain is unbounded, a network's): its
collectives are priced on the link as they are (hw_models/link.py). Beyond, it takes m = ceil(n / domain) nodes of
g = ceil(n / m) devices (the fullest node's count where n does not divide: a group placed as evenly as it goes), and
each collective composes the two links' own models (S the per-rank message, hw_models/link.py's convention; a link's
fit where it has one, else its datasheet alpha-beta model; the node links here have no measured data):

- all_reduce: NCCL's hierarchical form (Horovod's HOROVOD_HIERARCHICAL_ALLREDUCE; the intra-node reduce-scatter,
  inter-node all-reduce, intra-node all-gather of NCCL's tree and NVLS-tree algorithms; Narayanan et al., "Efficient
  large-scale language model training on GPU clusters using Megatron-LM", SC 2021, section 3.2's scatter/gather
  over each node's NICs): reduce-scatter of S within the node (each device keeps S / g), all-reduce of that S / g over
  the m nodes on the node link (every device's NIC at once, each with its peers of the same local rank), all-gather of
  S within the node:
      t = RS_link(S, g) + AR_node(S / g, m) + AG_link(S, g),
  the two halves within the node AR_link(S, g) where the link's all-reduce is fitted and its halves are not (a ring
  all-reduce is its halves, exactly so on the datasheet model; nvlink3's fit has the all-reduce alone);
- all_gather (S the gathered output): AG_node(S / g, m) + AG_link(S, g); reduce_scatter (S the whole input):
  RS_link(S, g) + RS_node(S / g, m): the all-reduce's halves;
- all_to_all (S a rank's send buffer, S / n to each peer): the (n - g) / n share bound for other nodes crosses the
  NICs, each device's own, while the NVLink side carries the whole exchange of n ranks (the local share, and the
  remote share forwarded to the device on the destination's rail: NCCL's PXN, DeepEP's normal kernels, which run
  NVLink and RDMA at once), overlapped: the longer of
      A2A_link(S, n) and A2A_node(S, m),
  the second the (m - 1) / m share of S, i.e. (n - g) / n S, through each NIC behind m - 1 network hops. So an
  all-to-all across nodes is never faster than the same n ranks in one domain, nor than its inter-node bytes at the
  NIC's rate;
- send_recv between pipeline stages: the stages fill nodes in order, a stage of tp <= g devices within one node (the
  next node where it does not fit in what is left), a stage of more on nodes of its own; a send between stages on
  different nodes crosses the node link (every device of the stage to its peer of the next, each over its own NIC),
  else the link.

A group within one bounded domain larger than a node of the link's fits (an NVLink Switch System's 16, a what-if
link.domain_devices; a network's unbounded domain keeps its ring) takes the faster of the link's ring over all n and
the hierarchical form above run inside the domain: groups of the fitted node size (the largest device count the
link's fits were measured on, else BOARD_DEVICES) joined by the domain's own link in place of a NIC, that phase on
the link's datasheet model as a node link's is. NCCL's tuner runs the fastest algorithm it has (its tree and
NVLS-tree beside the ring, NVIDIA/nccl src/graph/tuning.cc), and a domain can run what the same devices split into
nodes run, over a link no slower; the ring alone, fitted on 8 devices and extrapolated to 2 (n - 1) steps, would
price one domain of 16 slower than two nodes of 8 over InfiniBand. An all-to-all's hierarchical form is never faster
than its direct form over all n (the longer of that and the groups' exchange), so a domain's all-to-all is its
direct form (every rank sending to every peer at once, as NCCL runs it: hw_models/link.py).

A domain's devices talk over its own link only, never through the NICs, even where a node link is faster: NCCL sends
two GPUs of one node through the network only where each reaches a NIC (through PCIe switches, no host bridge) at
more bandwidth than it reaches the other (NVIDIA/nccl src/graph/paths.cc ncclTopoCheckNet, which the P2P and SHM
transports' canConnect consult), and a path's bandwidth is the least of its links' (ncclTopoSetPaths), the GPU's own
PCIe link among them; so a PCIe domain gains nothing from its NICs (only GPUs whose P2P path crosses CPU sockets do, a
topology not modelled here).

The node link is taken as the caller gives it: a system's (hw_models/system.py) at most each GPU's own PCIe link to its
NIC (hw_models/link_pcie.py: InfiniBand NDR's 50 GB/s behind an A100's PCIe 4 x16 at 31.5).

Not priced: the NICs' and the network switches' congestion beyond each GPU's own port, rail or fat-tree topology,
SHARP in the network switches, and NCCL's choice of ring over all n ranks for large messages (a pipelined ring over
the NICs reaches a higher bus bandwidth than the three phases in turn).
"""

from __future__ import annotations

import math

import numpy as np

from hw_models.link import LinkModel, LinkSpec

# The devices of the board every measured system is and every joining preset's domain holds (an HGX/DGX board, an
# 8-GPU PCIe server): the group of the hierarchical form within a wider domain where the link has no fit to say.
BOARD_DEVICES = 8


def node_layout(devices: int, link: LinkSpec) -> tuple[int, int]:
    """(devices a node, nodes) of a group of `devices` on `link`: (devices, 1) within one domain."""
    domain = link.domain_devices
    if domain is None or devices <= domain:
        return devices, 1
    return _groups(devices, domain)


def _groups(devices: int, most: int) -> tuple[int, int]:
    """(devices a group, groups) of `devices` in groups of at most `most`, placed as evenly as they go."""
    groups = math.ceil(devices / most)
    return math.ceil(devices / groups), groups


def fitted_node_devices(link: LinkModel) -> int:
    """The devices of one node of the link's fits (the largest count they were measured on), else BOARD_DEVICES."""
    return max((fit.max_devices or 0 for fit in link.fits.values()), default=0) or BOARD_DEVICES


def collective_time_s(kind: str, message_bytes, devices: int, link: LinkModel, node_link: LinkModel):
    """Seconds of a collective of `message_bytes` per rank among `devices` devices on `link`, its nodes joined by
    `node_link` where the group spans several (module docstring; arrays broadcast). send_recv: a send within a
    node (stage_sends_cross says which cross)."""
    per_node, nodes = node_layout(devices, link.spec)
    if kind == "send_recv":
        return link.collective_time_s(kind, message_bytes, devices)
    if nodes > 1:
        time = _hierarchical_s(kind, message_bytes, devices, per_node, nodes, link, node_link)
    else:
        time = link.collective_time_s(kind, message_bytes, devices)
        node = fitted_node_devices(link)
        if link.spec.domain_devices is not None and devices > node:  # the domain's own hierarchy (module docstring)
            per_group, groups = _groups(devices, node)
            time = np.minimum(time, _hierarchical_s(kind, message_bytes, devices, per_group, groups, link,
                                                    LinkModel(link.spec)))
    time = np.asarray(time, dtype=float)
    return float(time) if time.ndim == 0 else time


def _hierarchical_s(kind: str, message_bytes, devices: int, per_node: int, nodes: int, link: LinkModel,
                    node_link: LinkModel):
    """The collective as `nodes` groups of `per_node` devices on `link`, the groups joined by `node_link` (module
    docstring)."""
    size = np.asarray(message_bytes, dtype=float)
    if kind == "all_reduce":
        return _halves_within(link, size, per_node) + node_link.collective_time_s("all_reduce", size / per_node, nodes)
    if kind == "all_gather":
        return (node_link.collective_time_s("all_gather", size / per_node, nodes)
                + link.collective_time_s("all_gather", size, per_node))
    if kind == "reduce_scatter":
        return (link.collective_time_s("reduce_scatter", size, per_node)
                + node_link.collective_time_s("reduce_scatter", size / per_node, nodes))
    if kind == "all_to_all":
        return np.maximum(link.collective_time_s("all_to_all", size, devices),
                          node_link.collective_time_s("all_to_all", size, nodes))
    return link.collective_time_s(kind, message_bytes, devices)  # its error: no such collective


def _halves_within(link: LinkModel, size: np.ndarray, per_node: int):
    """The reduce-scatter and all-gather of `size` within a node: each on the link's model, or the node's all-reduce
    where the link's all-reduce is fitted and a half is not. A ring all-reduce is its two halves (2 (g - 1) steps and
    shares of g - 1 over g: hw_models/link.py), exactly on the datasheet model, so this takes the halves on the same
    measured calls as an all-reduce within one node (nvlink3: DGX A100's fitted all-reduce beside datasheet halves
    2-10x below it) and an all-reduce across nodes is never faster than its node's own."""
    if "all_reduce" in link.fits and not {"reduce_scatter", "all_gather"} <= link.fits.keys():
        return link.collective_time_s("all_reduce", size, per_node)
    return (link.collective_time_s("reduce_scatter", size, per_node)
            + link.collective_time_s("all_gather", size, per_node))


def stage_nodes(tp: int, pp: int, link: LinkSpec) -> tuple[int, ...]:
    """The first node of each of `pp` pipeline stages of `tp` devices, the stages filling nodes in order (module
    docstring)."""
    per_node, nodes = node_layout(tp, link)
    if nodes > 1:  # a stage spans nodes of its own
        return tuple(stage * nodes for stage in range(pp))
    domain = link.domain_devices
    if domain is None:
        return (0,) * pp
    per = domain // tp  # stages a node holds
    return tuple(stage // per for stage in range(pp))


def stage_sends_cross(tp: int, pp: int, link: LinkSpec) -> tuple[bool, ...]:
    """Whether each of the pp - 1 sends between consecutive stages crosses to another node."""
    first = stage_nodes(tp, pp, link)
    return tuple(a != b for a, b in zip(first, first[1:], strict=False))


def nodes_of(tp: int, pp: int, link: LinkSpec) -> int:
    """How many nodes `pp` stages of `tp` devices take."""
    per_node, nodes = node_layout(tp, link)
    return stage_nodes(tp, pp, link)[-1] + nodes
