"""Star all-reduce: a master gathers every worker's buffer, sums, and sends the sum back (allreduce="star").

TPI-LLM (Li, Feng, Guizani, Yu, "TPI-LLM: Serving 70B-scale LLMs Efficiently on Low-resource Edge Devices", arXiv
2410.00531v1, abstract: "link latency, not bandwidth, emerges as the main issue, so a star-based allreduce algorithm is
implemented") all-reduces over sockets so (github.com/Lizonghang/TPI-LLM src/tpi_llm/distributed/comm.py,
CommunicatorMaster.all_reduce): each of the n - 1 workers sends its S-byte buffer to the master, which adds each into
its own as it arrives; the master then sends the sum to each worker. All of it crosses the master's port: (n - 1) S in,
then (n - 1) S out, one after the other, each behind one link hop:
    t = (n - 1) S / B + (n - 1) S / B + 2 a = 2 (n - 1) S / B + 2 a,
B the link's bandwidth per direction per device and a its latency per hop (hw_models/link.py LinkSpec). A ring
(hw_models/link.py) moves 2 (n - 1) / n S through each port but waits 2 (n - 1) hops: the star trades n times the
bytes for 2 hops instead of 2 (n - 1), which wins where hops cost more than bytes (small messages over a slow-to-answer
network: a tensor-parallel decode over Wi-Fi or an edge LAN) and loses where bytes cost more (large messages, or a
link with microsecond hops such as NVLink). Datasheet model only: no star all-reduce was measured here; the master's
additions (one per element of each worker's buffer) and the buffers' serialization are not priced.
"""

from __future__ import annotations

import numpy as np

from hw_models.link import LinkSpec


def star_all_reduce_time_s(message_bytes, devices, link: LinkSpec):
    """Seconds of a star all-reduce of message_bytes per rank over `link` among `devices` (arrays broadcast; one device
    costs nothing): 2 (n - 1) S / B + 2 a (module docstring)."""
    size = np.asarray(message_bytes, dtype=float)
    n = np.asarray(devices, dtype=float)
    time = 2 * (n - 1) * size / link.bandwidth_Bps + 2 * link.latency_s
    time = np.where(n > 1, time, 0.0)
    return float(time) if time.ndim == 0 else time
