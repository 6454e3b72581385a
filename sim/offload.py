"""Memory tiers: weights and KV cache offloaded to host memory (or flash) over a link, with layer-by-layer prefetch.

A static batch whose weights, KV cache and activations exceed the device's memory can run with part of them in
host memory, at the cost the link sets (FlexGen, Sheng et al., "FlexGen: High-Throughput Generative Inference of
Large Language Models with a Single GPU", ICML 2023, Section 4; DeepSpeed ZeRO-Inference, which streams offloaded
weights layer by layer).

What is modeled
- Placement (plan_offload): the least that must leave the device does, as one share of every layer (FlexGen's
  placement percentages: a fraction of each layer's weights and of each layer's KV cache in host memory). The
  device keeps prefetch buffers for the offloaded part of two layers: the one it computes and the next one
  arriving (double buffering).
- Sliding window (plan_window; TPI-LLM, Li et al., arXiv 2410.00531: "a sliding window memory scheduler to dynamically
  manage layer weights during inference, with disk I/O latency overlapped with the computation and communication"):
  the device holds the weights of a window of w layers, whether or not the whole model would fit, and every layer's
  weights stream in from the host link once per pass as the window slides over them (TPI-LLM's MemoryManager,
  github.com/Lizonghang/TPI-LLM src/tpi_llm/memory/mem_manager.py: a deque of memory_window blocks loaded in layer
  order, a block released once it has run; its blocks are a layer's attention and its MLP, two per layer, so its
  memory_window of 2k blocks is w = k layers here). The window holds w layers' weights, the pass moves all of them; a
  window of every layer holds the whole model and moves nothing (no offload). Overlap is offload_prefetch's, as
  above: a window of one layer is TPI-LLM's smallest (memory_window 2: a layer's attention block computing while its
  MLP block arrives), which overlaps at half a layer's granularity.
- Tensor parallelism (one pipeline stage of tp devices): each device holds its share of the weights and KV cache and
  streams its share of what is offloaded over its own host link, all at once, so the stage's transfers run at tp
  links' bandwidth (TPI-LLM's devices each read their slice of the weights from their own disk).
- Policy: 'weights' offloads weights only, 'kv' the KV cache only, 'auto' weights first and the KV cache only once
  every weight is in host memory. Weights go first because a weight byte in host memory costs one transfer per
  pass that the whole batch shares (DeepSpeed ZeRO-Inference offloads weights alone), while the KV cache grows with
  the batch and the context; 'kv' is there for the opposite case (a large batch of long sequences). 'experts'
  offloads a mixture-of-experts model's routed experts only: the other weights and the KV cache stay on the device,
  and its memory left holds as many of each layer's experts as fit (Mixtral-offloading, Eliseev & Mazur,
  arXiv:2312.17238, and ExpertFlow keep attention on the GPU and cache experts there). Under the routing the kernel
  tables route by (balanced or uniform: ModelConfig.moe_routing), every expert is reached alike, so the device's
  share of them is the share of a step's reached experts it finds resident, whichever experts it holds: an expert
  cache's hit rate, as an LRU cache's under routing with no locality. Under power_law routing the device holds the
  most popular experts, as Fiddler places experts by their profiled popularity (Kamahori et al., "Fiddler: CPU-GPU
  Orchestration for Fast Inference of Mixture-of-Experts Models", arXiv:2402.07033, Figure 2; efeslab/fiddler
  00e70f091f54 src/fiddler/mixtral.py set_expert_loc: (layer, expert) pairs "in the order of popularity determined
  based on profile", the first as many as the GPU's free memory holds put on the GPU; Fiddler then runs the others
  on the CPU, where here they cross the link). A static placement holds fixed identities, so the popularity is a
  fixed one: each expert keeps its power-law weight from step to step, each token picks its experts by those weights
  (workloads/expert_skew.py power_law_popularity: each expert's chance of being among a token's top-k, Mixtral's 8
  at top-2 0.73, 0.52, 0.32, 0.19, 0.12, 0.07, 0.04, 0.02), and a step of T tokens reaches an expert with chance
  1 - (1 - p)^T (reach_chances). The popularity says which of a step's reached experts are resident, not how many
  it reaches: a step reaches as many as the kernel tables compute (their draws, device_routing), since every expert
  computed reads its weights on the device. Fixed identities alone would send a step's tokens to fewer (16 tokens:
  6.25 of Mixtral's 8 in expectation, where the draws spread them over all 8), so each expert's chance is taken at
  the tokens that reach the draws' count under the popularity (reach_at_count), and the device finds resident the
  held experts' chances (resident_share, offloaded_reached). With 2 of Mixtral's 8 experts resident, a one-token
  step's 2 experts are 0.63 resident and it fetches 0.75 of the 6 offloaded experts (none preferred: 1.5); a step of
  4 tokens reaches 5 (the draws, rounded) and fetches 3.01 of 6 (none preferred: 3.75); a step of 16 tokens reaches
  all 8 and fetches all 6. The popularity's weights are the draws' own (aiconfigurator's power law) assigned to
  fixed experts, an assumption: its draws give each step new weights, so no identity is hot across its steps, while
  Fiddler's premise is a profile that lasts.
  A share of every weight ('weights', 'auto') holds a share of each expert, which no routing prefers.
- Traffic per pass (offload_traffic): the offloaded weights a pass reads cross host to device once per pass: every
  one of a dense model's, and of a mixture-of-experts model's the offloaded share of its other weights and of the
  experts its tokens reach (RoutedExperts: under the routing the kernel tables route by, kernels/moe.py
  device_routing, a decode step of one token reaches 2 of Mixtral's 8 experts per layer, a prefill of 128 tokens
  every one); an engine fetches only the experts that run (Hugging Face accelerate's per-module offload hooks fire
  for the modules called; Mixtral-offloading, Eliseev & Mazur, arXiv:2312.17238, loads the experts the router
  picks). Each decode step brings in the offloaded share of the KV cache its attention reads; the offloaded share
  of the KV a pass writes (the prompt's in the prefill, one token's in each decode step) crosses device to host. A
  PCIe link is full duplex, so the two directions run at once: a pass's link time is the larger direction's bytes
  over the link's bandwidth, plus the link's latency once per layer.
- Overlap (link_wait_s, pass_wait_s): with prefetch, a pass takes per layer the larger of its compute and its
  transfer (FlexGen's overlapped schedule, Section 4); the decoder layers are alike (the same kernels, the same
  bytes), so that is the larger of the pass's device time and its link time. Without prefetch, the sum of the two.
  Which experts a layer runs is known only once its router has run, so the routed experts' transfer cannot be
  prefetched during the previous layer: it is waited in full (one more transfer per layer), the rest overlapping
  as above. An engine may instead prefetch every expert of the next layer, as FlexGen prefetches a whole layer;
  a pass takes the faster of the two schedules, so a pass whose tokens reach every expert (a prefill, a large
  batch) streams whole layers as a dense model's, whose two schedules are one.

Not modeled: host DRAM bandwidth as a second limit (a server's host DRAM delivers several times a PCIe x16 link's
rate, so the link is the bound), host memory capacity (it holds whatever is offloaded), pageable memory (transfers
run from pinned buffers at the link's rate; a pageable copy is staged and slower), attention computed on the host
CPU next to an offloaded KV cache (FlexGen's CPU delegation), a third tier behind host memory (FlexGen's disk), the
pipeline fill (the first layer's transfer of a pass before any overlap: one layer's share of its link time),
compressed transfers, an expert cache across decode steps and speculative expert loading (Mixtral-offloading keeps
recently used experts on the device, an LRU cache, and guesses the next layer's experts from the current hidden
state, so fewer experts cross the link or more of them ahead of time; the prefetch buffers here hold whole layers'
offloaded share and cache nothing between steps, and the experts held under power_law routing are fixed),
tokens whose experts are correlated (a step's tokens are routed independently of one another),
per-layer differences in the routing (one draw serves every layer, so each layer holds the same share of its
experts, where Fiddler's one popularity order over every layer's experts gives the layers whose popular experts are
more popular more of them), and the
link's own transfer energy (no sourced energy per bit of a PCIe or NVMe transfer was found, so it is not counted;
static power while the device waits on the link is, as for any time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.memory import MemoryFootprint
from workloads.expert_skew import reach_chances

OFFLOADS = ("none", "weights", "kv", "auto", "experts")
BUFFERED_LAYERS = 2  # the layer computing and the next one arriving (double buffering)


@dataclass(frozen=True, kw_only=True)
class OffloadPlan:
    """Shares of every layer's weights and KV cache held in host memory, and the bytes that makes."""

    weights_share: float = 0.0
    kv_share: float = 0.0
    weights_B: float = 0.0  # weights in host memory
    kv_B: float = 0.0  # KV cache in host memory at its largest (the last decode step)
    # The device's prefetch buffers for the offloaded part of BUFFERED_LAYERS layers, of weights and of KV.
    weights_buffer_B: float = 0.0
    kv_buffer_B: float = 0.0
    experts_only: bool = False  # the offloaded weights are routed experts alone ('experts': weights_share of them)

    @property
    def offloaded_B(self) -> float:
        return self.weights_B + self.kv_B


def plan_offload(footprint: MemoryFootprint, capacity_B: float, layers: int, mode: str,
                 experts_share: float = 0.0) -> OffloadPlan | str:
    """The least a static batch of `footprint` must offload under `mode` (OFFLOADS) to fit `capacity_B`, or why it
    cannot (the text of an infeasible reason); `experts_share`: the routed experts' share of the weight bytes, which
    'experts' offloads alone (weights_share is then a share of them). A footprint that fits offloads nothing."""
    if mode not in OFFLOADS:
        raise ValueError(f"offload: found {mode!r}, allowed: {', '.join(OFFLOADS)}")
    excess_B = footprint.total_B - capacity_B
    if mode == "none" or excess_B <= 0:
        return OffloadPlan()
    # Offloading a share s of a tensor class of B bytes frees s B but adds s B x BUFFERED_LAYERS / layers of buffers.
    kept = 1.0 - BUFFERED_LAYERS / layers
    if mode == "experts":
        experts_B = footprint.weights_B * experts_share
        if experts_B * kept < excess_B:
            return _cannot_fit(footprint, capacity_B, layers, mode, experts_B)
        share = excess_B / (experts_B * kept)
        return OffloadPlan(weights_share=share, weights_B=share * experts_B, experts_only=True,
                           weights_buffer_B=share * experts_B * BUFFERED_LAYERS / layers)
    weights_room_B = footprint.weights_B * kept if mode in ("weights", "auto") else 0.0
    kv_room_B = footprint.kv_cache_B * kept if mode in ("kv", "auto") else 0.0
    if weights_room_B + kv_room_B < excess_B:
        return _cannot_fit(footprint, capacity_B, layers, mode)
    weights_share = min(1.0, excess_B / weights_room_B) if weights_room_B > 0 else 0.0
    # What every weight offloaded cannot free falls to the KV cache (the check above found room for it); taken from
    # the rooms, not from the share, whose rounding would leave a few bytes over where the weights suffice.
    left_B = max(0.0, excess_B - weights_room_B)
    kv_share = min(1.0, left_B / kv_room_B) if left_B > 0 else 0.0
    weights_B, kv_B = weights_share * footprint.weights_B, kv_share * footprint.kv_cache_B
    return OffloadPlan(weights_share=weights_share, kv_share=kv_share, weights_B=weights_B, kv_B=kv_B,
                       weights_buffer_B=weights_B * BUFFERED_LAYERS / layers,
                       kv_buffer_B=kv_B * BUFFERED_LAYERS / layers)


def plan_window(footprint: MemoryFootprint, layers: int, window_layers: int) -> OffloadPlan:
    """A sliding window of `window_layers` of the model's `layers` layers' weights (module docstring): every weight in
    host memory, the window's share of them on the device; nothing offloaded where the window holds every layer."""
    if window_layers < 1:
        raise ValueError(f"offload_window: found {window_layers}, allowed: a whole number of layers >= 1")
    if window_layers >= layers:
        return OffloadPlan()
    return OffloadPlan(weights_share=1.0, weights_B=footprint.weights_B,
                       weights_buffer_B=footprint.weights_B * window_layers / layers)


def _cannot_fit(footprint: MemoryFootprint, capacity_B: float, layers: int, mode: str, experts_B: float = 0.0) -> str:
    what = {"weights": "every weight", "kv": "the whole KV cache", "auto": "every weight and the whole KV cache",
            "experts": "every routed expert"}[mode]
    held = {"weights": "KV cache", "kv": "weights", "auto": "", "experts": "other weights and KV cache"}[mode]
    kept_B = {"weights": footprint.kv_cache_B, "kv": footprint.weights_B, "auto": 0.0,
              "experts": footprint.total_B - footprint.activations_B - experts_B}[mode]
    moved_B = footprint.total_B - footprint.activations_B - kept_B
    buffers_B = moved_B * BUFFERED_LAYERS / layers
    parts = f"{held} {kept_B / 1e9:.1f}, " if held else ""
    return (f"offload {mode}: needs {(kept_B + footprint.activations_B + buffers_B) / 1e9:.1f} GB with {what} in "
            f"host memory ({parts}activations {footprint.activations_B / 1e9:.1f}, prefetch buffers of "
            f"{BUFFERED_LAYERS} of {layers} layers {buffers_B / 1e9:.1f}) but the device has {capacity_B / 1e9:.1f} GB")


def device_footprint(footprint: MemoryFootprint, plan: OffloadPlan) -> MemoryFootprint:
    """What the device holds under the plan: the resident weights and KV cache, their prefetch buffers (counted with
    the tensors they buffer) and the activations; offloaded_B says what host memory holds."""
    if not plan.offloaded_B:
        return footprint
    return MemoryFootprint(weights_B=footprint.weights_B - plan.weights_B + plan.weights_buffer_B,
                           kv_cache_B=footprint.kv_cache_B - plan.kv_B + plan.kv_buffer_B,
                           activations_B=footprint.activations_B, offloaded_B=plan.offloaded_B)


@dataclass(frozen=True, kw_only=True)
class HostLink:
    """The link between the device and the tier offloaded bytes live in, per direction (hw_models/link.py LinkSpec)."""

    bandwidth_Bps: float
    latency_s: float  # per transfer: one per layer and direction that moves bytes
    prefetch: bool = True  # the next layer's transfer overlaps this layer's compute


@dataclass(frozen=True, kw_only=True)
class RoutedExperts:
    """A mixture-of-experts model's routed experts: their share of its weight bytes, and the share of a layer's
    experts the prefill's and a decode step's tokens reach (kernels/moe.py device_routing). Where the routing prefers
    some experts (power_law), `*_ranked` gives the chance that each of a layer's experts, the most popular first, is
    reached (workloads/expert_skew.py reach_chances), and a device holding whole experts holds the most popular; empty
    where no expert is preferred."""

    weights_share: float = 0.0
    prefill_reached: float = 1.0
    decode_reached: float = 1.0
    prefill_ranked: tuple[float, ...] = ()
    decode_ranked: tuple[float, ...] = ()


DENSE = RoutedExperts()


def resident_share(by_rank, resident_experts: float) -> float:
    """The share of `by_rank` (a layer's experts' chances of being picked or reached, most popular first) that its first
    `resident_experts` hold, a fraction of an expert holding its part of the next one's; 0 where it sums to 0."""
    values = np.asarray(by_rank, dtype=float)
    total = values.sum()
    if total <= 0:
        return 0.0
    whole = min(int(resident_experts), len(values))
    part = values[whole] * (resident_experts - whole) if whole < len(values) else 0.0
    return float((values[:whole].sum() + part) / total)


def offloaded_reached(reached: float, ranked: tuple[float, ...], offloaded_share: float) -> float:
    """The share of a layer's offloaded experts a pass reaches, `offloaded_share` of them in host memory, where it
    reaches `reached` of all of them: `reached` where no expert is preferred or nothing is placed by popularity; under
    `ranked` (each expert's chance of being reached, most popular first) the device holds the first 1 - offloaded_share
    of them, and the pass reaches the others with their chances at the count it reaches (reach_at_count)."""
    if not ranked or offloaded_share <= 0:
        return reached
    experts = len(ranked)
    chances = reach_at_count(ranked, reached * experts)
    return reached * (1.0 - resident_share(chances, (1.0 - offloaded_share) * experts)) / offloaded_share


def reach_at_count(ranked: tuple[float, ...], count: float) -> np.ndarray:
    """Each expert's chance of being reached by a pass whose tokens follow the popularity behind `ranked` (each
    expert's chance of being reached by some T tokens) and reach `count` experts in expectation: the chances at the
    tokens that reach that many, 1 - (1 - r)^a for the a (the tokens over T) where they sum to `count`. The count is
    the kernel tables' (their routing's draws: module docstring), so the experts fetched are as many as those computed,
    and the popularity says which; every expert a chance reaches where `count` is all of them."""
    chances = np.asarray(ranked, dtype=float)
    reachable = chances > 0
    if count <= 0:
        return np.zeros_like(chances)
    if count >= reachable.sum():
        return reachable.astype(float)

    def surplus(log_a: float) -> float:
        return float(np.sum(reach_chances(chances, np.exp(log_a)))) - count

    # Splitting `count` by the chances at face value instead would put more reached experts on the most popular than
    # there are of them (16 tokens reach all 8 of Mixtral's; at face value the 2 most popular would hold 2.56).
    # The sum rises with a from 0 towards the reachable experts' number, which brackets `count` within e^+-60.
    # Imported here: scipy.optimize costs about half a second to import, and only this solve needs it.
    from scipy.optimize import brentq

    return np.asarray(reach_chances(chances, np.exp(brentq(surplus, -60.0, 60.0, xtol=1e-12))))


@dataclass(frozen=True, kw_only=True)
class LinkTraffic:
    """Bytes a static batch moves over its host link in the prefill and in each decode step, and that link. Host to
    device, a pass moves the routed experts it reaches, not the others; `*_routed_B` says how many of its bytes
    those are (fetched once the layer's router has picked them), `*_unreached_B` what prefetching every expert of
    the next layer would add (0 for a dense model)."""

    link: HostLink
    layers: int
    prefill_B: tuple[float, float]  # (host to device, device to host)
    decode_to_device_B: np.ndarray  # per decode step
    decode_to_host_B: np.ndarray
    prefill_routed_B: float = 0.0
    decode_routed_B: float = 0.0
    prefill_unreached_B: float = 0.0
    decode_unreached_B: float = 0.0
    decode_layers: int = 0  # the layers a decode step runs, each a transfer (0: every layer)

    @property
    def prefetch(self) -> bool:
        return self.link.prefetch

    def prefill_wait_s(self, device_s: float) -> float:
        """Seconds the prefill, of `device_s` seconds on the device, waits on the link (pass_wait_s)."""
        return float(pass_wait_s(device_s, *self.prefill_B, self.prefill_routed_B, self.prefill_unreached_B,
                                 self.link, self.layers))

    def decode_wait_s(self, device_s: np.ndarray) -> np.ndarray:
        """Seconds each decode step, of `device_s` seconds on the device, waits on the link (pass_wait_s)."""
        return pass_wait_s(device_s, self.decode_to_device_B, self.decode_to_host_B, self.decode_routed_B,
                           self.decode_unreached_B, self.link, self.decode_layers or self.layers)


def offload_traffic(plan: OffloadPlan, link: HostLink, *, layers: int, prompt_kv_B: float, step_kv_B: np.ndarray,
                    token_kv_B: float, experts: RoutedExperts = DENSE, decode_layers: int = 0) -> LinkTraffic:
    """The link traffic of a static batch under `plan`: prompt_kv_B the batch's cached KV after the prefill,
    step_kv_B the cached KV each decode step's attention reads besides its own token's, token_kv_B the KV one decode
    step adds (all of the whole batch, every layer); `experts` the routed experts among the weights; decode_layers
    the layers a decode step runs where it skips some (early exit, kernels/early_exit.py; 0: every layer)."""
    steps = np.asarray(step_kv_B, dtype=float)
    # The offloaded experts' bytes: every expert's offloaded share, or under 'experts' all that is offloaded.
    experts_B = plan.weights_B * (1.0 if plan.experts_only else experts.weights_share)
    rest_B = plan.weights_B - experts_B
    # Offloading whole experts ('experts') keeps the most popular on the device; a share of every weight is a share of
    # each expert, which no routing prefers.
    placed = plan.weights_share if plan.experts_only else 0.0
    prefill_routed_B = experts_B * offloaded_reached(experts.prefill_reached, experts.prefill_ranked, placed)
    decode_routed_B = experts_B * offloaded_reached(experts.decode_reached, experts.decode_ranked, placed)
    # The plan offloads one share of every layer, so a step that skips layers moves only its layers' share: a
    # skipped layer's weights are never read, nor its KV (a skipping token holds none there).
    ran = decode_layers / layers if decode_layers else 1.0
    return LinkTraffic(
        link=link, layers=layers, prefill_B=(rest_B + prefill_routed_B, plan.kv_share * prompt_kv_B),
        decode_to_device_B=ran * (rest_B + decode_routed_B + plan.kv_share * steps),
        decode_to_host_B=np.full(steps.shape, ran * plan.kv_share * token_kv_B),
        prefill_routed_B=prefill_routed_B, decode_routed_B=ran * decode_routed_B,
        prefill_unreached_B=experts_B - prefill_routed_B, decode_unreached_B=ran * (experts_B - decode_routed_B),
        decode_layers=decode_layers)


def transfer_s(to_device_B, to_host_B, link: HostLink, layers: int):
    """Seconds a pass's transfers take: each direction its bytes over the bandwidth plus one latency per layer where
    it moves any, the two directions at once (full duplex)."""
    def one_way(bytes_B):
        bytes_B = np.asarray(bytes_B, dtype=float)
        return np.where(bytes_B > 0, bytes_B / link.bandwidth_Bps + layers * link.latency_s, 0.0)

    return np.maximum(one_way(to_device_B), one_way(to_host_B))


def link_wait_s(device_s, link_s, prefetch: bool):
    """How long a pass waits on the link beyond its device time: with prefetch the link time the compute does not
    cover (the pass takes the larger of the two), without it the whole link time (the pass takes their sum)."""
    device_s, link_s = np.asarray(device_s, dtype=float), np.asarray(link_s, dtype=float)
    return np.maximum(link_s - device_s, 0.0) if prefetch else link_s


def pass_wait_s(device_s, to_device_B, to_host_B, routed_B: float, unreached_B: float, link: HostLink, layers: int):
    """How long a pass of `device_s` seconds on the device waits on the link, moving `to_device_B` (of them
    `routed_B` of routed experts) and `to_host_B`: the shorter of two schedules. Prefetching whole layers moves
    the unreached experts too, all of it prefetched; fetching the routed experts once each layer's router has
    picked them moves only those, on demand (they wait in full), the rest prefetched. A dense model (no routed
    bytes) takes the first, whose bytes are the second's."""
    whole_s = transfer_s(np.asarray(to_device_B, dtype=float) + unreached_B, to_host_B, link, layers)
    prefetched_s = transfer_s(np.asarray(to_device_B, dtype=float) - routed_B, to_host_B, link, layers)
    on_demand_s = transfer_s(routed_B, 0.0, link, layers)
    return np.minimum(link_wait_s(device_s, whole_s, link.prefetch),
                      link_wait_s(device_s, prefetched_s, link.prefetch) + on_demand_s)
