"""Model-attention disaggregation: a replica's attention on memory devices apart from the devices of its model.

Lamina (Chen et al., arXiv:2405.01814v2) runs the attention of decoding on cheap memory-optimized devices that hold
the KV cache, and the rest of the model (its GEMMs, norms, LM head) on compute devices: in every layer the model's
devices send each token's query, key and value to the attention devices and take its attention output back
((2 + 2/G) e d bytes a token and layer, its section 3.1). The attention devices split the heads (Lamina's head-level
partitioning, section 5: each holds its heads of every sequence's KV and attends for them), as tensor parallelism
splits them.

The batch is split into micro-batches that take turns, so that while one micro-batch's attention runs on the
attention devices another's layers run on the model's (Lamina's rotational staggered pipelining with one model
replica, section 4.3; MegaScale-Infer's ping-pong).
An iteration of micro-batches i over L layers then takes at least

    max(max_i (M_i + A_i + L (c_out_i + c_back_i)), sum M_i, sum A_i, L sum c_out_i, L sum c_back_i)

with M_i and A_i micro-batch i's model and attention time over all layers and c_out_i, c_back_i its sends of one
layer each way (latency plus bytes over the ports): every micro-batch's chain through the layers must run whole, and
each group of devices and each direction of the link must serve every micro-batch. It is a lower bound of the
schedule, reached where one term leads in every layer; with one micro-batch it is the sequential sum, with n equal
ones max(M + A + L (c_out + c_back), n M, n A, n L c_out, n L c_back).

A hybrid placement (APEX: Fan et al., arXiv:2506.03296; NEO before it) keeps the model's devices attending: they hold
the KV of as many sequences as their memory left after the weights and activations holds, and attend to those, and
the attention devices (the host CPU, over PCIe) hold and attend to the rest of the decoding sequences. The model's
devices hold a sequence's blocks where they still hold its whole request's when it is admitted, and it stays there;
else it lies on the attention devices for its whole run (sim/kv_cache.py PagedKVCache.place). Prefill runs on the
model's devices, as APEX's does. The iteration is one batch, not split (APEX's asynchronous overlap): the model's
devices run every sequence's layers but attention and their own sequences' attention; in every layer the attention
devices attend to theirs beside that attention, the query, key and value of each of their tokens sent out and its
output back, and the layers after the attention wait for them. An iteration of L layers whose model's devices take
G in all, A_g of it their own attention, then takes

    G + max(0, A_c + L (c_out + c_back) - A_g)

with A_c the attention devices' time over all layers and c_out, c_back their tokens' sends of one layer each way: it
is never below G nor below A_c, and with no sequence on the attention devices it is G, the model's devices alone.
What APEX's scheduler also does, moving a sequence's attention between the two per iteration from profiled times
(and NEO's asymmetric pipelining, which splits the batch), is not priced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kernels.shapes import StepTemplate
from workloads.model_config import ModelConfig

# Where a pool's attention devices attend: to every sequence (apart: Lamina's model-attention disaggregation), or
# to those whose KV the model's devices do not hold (hybrid: APEX's CPU-GPU attention).
PLACEMENTS = ("apart", "hybrid")

# Bytes of an activation element sent between the devices: 16-bit, as pipeline sends (kernels/parallel.py).
SEND_ELEMENT_B = 2.0


def sent_bytes_per_token(config: ModelConfig) -> tuple[float, float]:
    """Bytes one token sends to the attention devices in one layer (its query, key and value), and takes back (its
    attention output)."""
    query_B = config.num_heads * config.head_dim * SEND_ELEMENT_B
    return query_B + 2 * config.num_kv_heads * config.head_dim * SEND_ELEMENT_B, query_B


def disaggregated_time_s(model_s: Sequence[float], attention_s: Sequence[float], out_s: Sequence[float],
                         back_s: Sequence[float], layers: int) -> float:
    """The time of an iteration of micro-batches, micro-batch i taking model_s[i] on the model's devices,
    attention_s[i] on the attention devices and out_s[i], back_s[i] per layer on the link each way (module
    docstring)."""
    chains = (m + a + layers * (o + b) for m, a, o, b in zip(model_s, attention_s, out_s, back_s, strict=True))
    return max(max(chains), sum(model_s), sum(attention_s), layers * sum(out_s), layers * sum(back_s))


def hybrid_time_s(model_s: float, own_attention_s: float, attention_s: float, out_s: float, back_s: float,
                  layers: int) -> float:
    """The time of a hybrid iteration (module docstring): the model's devices take `model_s` in all, `own_attention_s`
    of it their own sequences' attention; the attention devices take `attention_s` over all layers, and their tokens'
    sends `out_s`, `back_s` per layer each way."""
    return model_s + max(0.0, attention_s + layers * (out_s + back_s) - own_attention_s)


@dataclass(frozen=True, kw_only=True)
class AttentionPool:
    """The attention devices of a replica: `devices` of `device` (a device model), joined to the model's devices by
    `links` (hw_models/link.py LinkModels: one, or two where neither is slower in both bandwidth and latency, each send
    then the longer of its times on each: sim/serving_spec.py crossing_links) over `ports` ports each way, each running
    the attention rows of `template` (the model's template sharded over the attention devices: its heads), with each
    iteration split in up to `micro_batches` (as many as make it fastest: sim/costs.py)."""

    device: object
    devices: int
    template: StepTemplate
    links: tuple
    ports: int
    micro_batches: int
    out_B_per_token: float  # sent_bytes_per_token: to the attention devices, per token and layer
    back_B_per_token: float
    placement: str = "apart"  # PLACEMENTS: every sequence's attention on the attention devices, or the overflow's

    def __post_init__(self) -> None:
        for name in ("devices", "ports", "micro_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: found {value!r}, allowed: an integer >= 1")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement: found {self.placement!r}, allowed: {', '.join(PLACEMENTS)}")

    @property
    def hybrid(self) -> bool:
        """Whether the model's devices attend to the sequences whose KV they hold (PLACEMENTS)."""
        return self.placement == "hybrid"

    def send_s(self, tokens: int) -> tuple[float, float]:
        """Seconds one layer's sends of `tokens` tokens take each way: to the attention devices, and back."""
        return tuple(max(float(link.collective_time_s("send_recv", tokens * per_token / self.ports, 2))
                         for link in self.links) if tokens else 0.0
                     for per_token in (self.out_B_per_token, self.back_B_per_token))
