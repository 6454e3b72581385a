"""Data-parallel attention beside the MoE layers' experts: the layouts SGLang (`--enable-dp-attention`, its MoE
tensor-parallel or, with expert parallelism, spread) and vLLM (`--data-parallel-size` with
`--enable-expert-parallel`) serve MoE models in over several devices.

Each of `ranks` devices runs everything but the routed experts whole, for its own sequences: the embedding, the
attention (each sequence's KV whole on its rank), the norms, the router, the dense projections and the LM head. The
experts are spread whole over the devices (ep = tp: E / ranks each, as kernels/parallel.py spreads them), every MoE
layer sending each token's hidden state to the devices holding its top-k experts (dispatch, an all-to-all) and the
experts' outputs back (combine, an all-to-all), where the router's weights sum them; or split over them (ep 1: every
device a 1/ranks share of every expert, as tensor parallelism splits them), every layer gathering every rank's tokens
onto every device (an all-gather) and summing the partial outputs back to their ranks (a reduce-scatter). Against
tensor parallelism over the same devices nothing is all-reduced, each sequence's KV is held once (tensor parallelism
copies KV heads where devices outnumber them), and every device holds the non-expert weights whole.

A token is sent once to every device holding one of its experts (DeepEP's dispatch sends a token once per
destination rank, which copies it to its experts; deepseek-ai/DeepEP README), so under balanced routing (k of E
experts uniformly at random, E / n on each of n devices) it reaches n (1 - C(E - E/n, k) / C(E, k)) devices on
average; the combine returns as many outputs. A model that routes within groups (DeepSeek-V3: its 8 of 256 experts
within 4 of 8 groups of 32, as vLLM's grouped_topk and SGLang's biased_grouped_topk pick them) reaches fewer: on 8
devices, a group each, at most 4 and 3.63 on average against 5.29 (dispatch_devices). Messages are the 16-bit
hidden state (DeepEP's low-latency dispatch may send fp8: not modeled).
"""

from __future__ import annotations

from math import comb

from kernels.formats import NumericFormat
from kernels.module_params import expert_byte_share
from workloads.model_config import ModelConfig

# How the attention and the rest of an MoE model but its experts are split over the tp devices: "tensor", Megatron's
# sharding (kernels/parallel.py), or "data", each device its own sequences whole (this module).
ATTENTION_PARALLELISMS = ("tensor", "data")
HIDDEN_B = 2.0  # bytes of a 16-bit hidden-state element, as dispatched and combined


def check_data_parallel_attention(config: ModelConfig, tp: int, ep: int) -> None:
    """ValueError ('found X, allowed: Y') unless data-parallel attention can run `config` on tp devices: an MoE
    model on two or more devices, its experts split (ep 1: each device a whole 1/tp of every expert's columns, as
    tensor parallelism shards a layer) or spread (ep = tp) over them."""
    if not config.num_experts:
        raise ValueError(f"found 'data' for {config.name}, which has no experts, allowed: tensor (a dense model's "
                         f"data-parallel devices share nothing: serve it with replicas)")
    if tp < 2 or ep not in (1, tp):
        raise ValueError(f"found 'data' with tp {tp} and ep {ep}, allowed: tensor, or data on two or more devices "
                         f"(tp > 1), the experts split (ep 1) or spread (ep = tp) over them")
    if ep == 1 and config.intermediate_size % tp:
        raise ValueError(f"found 'data' with tp {tp} and ep 1, allowed: a tp dividing {config.name}'s "
                         f"{config.intermediate_size} expert columns (each device a whole share of every expert), or "
                         f"the experts spread (ep = tp)")


def dispatch_devices(experts: int, per_token: int, devices: int, groups: int = 1, chosen_groups: int = 1) -> float:
    """The devices a token's top-k experts lie on, on average under balanced routing (module docstring), the
    experts picked within `chosen_groups` of `groups` groups of consecutive experts where the model routes so
    (DeepSeek's group-limited routing: n_group, topk_group; 1 of 1, plain top-k). Each device is reached with the
    chance that a chosen group holds some of its experts and a pick lands on one: where groups divide the devices (a
    device within one group) or the devices the groups (whole groups a device), by the hypergeometric counts; a
    device straddling groups is priced as plain top-k."""
    if devices < 1 or experts % devices or not 1 <= per_token <= experts:
        raise ValueError(f"found {experts} experts, {per_token} per token over {devices} devices, allowed: devices "
                         f"dividing the experts, 1 to {experts} experts per token")
    held = experts // devices
    if groups > 1 and devices % groups and groups % devices:
        groups = chosen_groups = 1
    pool = chosen_groups * experts // groups  # the experts of the chosen groups, which the top-k picks among

    def missed(inside: int) -> float:  # no pick lands on `inside` of the pool's experts
        return comb(pool - inside, per_token) / comb(pool, per_token)

    if devices % groups == 0:  # each device within one group: reached if its group is chosen and a pick lands
        return devices * chosen_groups / groups * (1.0 - missed(held))
    own = groups // devices  # whole groups a device holds, of which j are chosen
    reached = sum(comb(own, j) * comb(groups - own, chosen_groups - j) / comb(groups, chosen_groups)
                  * (1.0 - missed(j * experts // groups)) for j in range(1, min(own, chosen_groups) + 1))
    return devices * reached


def dispatch_bytes_per_token(config: ModelConfig, devices: int, spread: bool = True) -> float:
    """Bytes of one token in a layer's exchange: in a dispatch all-to-all's send buffer (and in its combine's) its
    hidden state once per device its experts lie on where they are `spread`, else (split experts, gathered) once."""
    copies = dispatch_devices(config.num_experts, config.experts_per_token, devices, config.expert_groups,
                              config.topk_groups) if spread else 1.0
    return config.hidden_size * HIDDEN_B * copies


def replicated_weight_share(config: ModelConfig, devices: int, fmt: NumericFormat | None = None) -> float:
    """The weight bytes `devices` data-parallel ranks hold together over the model's own: the experts once, the rest
    on every device, each part at the bits `fmt` stores it in (a mixed format's attention or head may be wider than
    its experts: kernels/module_params.py expert_byte_share); 16-bit weights without a format."""
    experts = expert_byte_share(fmt if fmt is not None else NumericFormat(), config)
    return experts + devices * (1.0 - experts)
