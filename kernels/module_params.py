"""How a model's parameters split between attention, MLP and the rest, and what a numeric format stores of them."""

from __future__ import annotations

from dataclasses import replace

from kernels.formats import NumericFormat
from workloads.model_config import ModelConfig


def layer_param_shares(config: ModelConfig) -> tuple[float, float]:
    """(attention, MLP) parameters of the decoder layers as fractions of the model's (ModelConfig.param_count; the
    rest are embeddings, the LM head and norms). Read off param_count itself with the attention heads or the MLP
    removed, so the two stay consistent with it (biases, experts and routers included)."""
    total = config.param_count()
    no_attention = replace(config, num_heads=0, num_kv_heads=0, attention_bias=False, qk_norm=False).param_count()
    no_mlp = replace(config, intermediate_size=0, mlp_bias=False, num_experts=0,
                     dense_intermediate_size=0).param_count()
    return (total - no_attention) / total, (total - no_mlp) / total


def expert_param_share(config: ModelConfig) -> float:
    """The routed experts' parameters as a fraction of the model's (ModelConfig.routed_expert_param_count: routers and
    shared experts apart); 0 for a dense model."""
    return config.routed_expert_param_count() / config.param_count()


def router_param_share(config: ModelConfig) -> float:
    """The MoE routers' parameters as a fraction of the model's (ModelConfig.router_param_count); 0 for a dense
    model."""
    return config.router_param_count() / config.param_count()


def expert_byte_share(fmt: NumericFormat, config: ModelConfig) -> float:
    """The routed experts' share of the bytes `fmt` stores of `config`'s weights: their parameter share where every
    weight takes the same bits (16-bit weights, routers included), else their stored bytes
    (NumericFormat.stored_weight_scale of the experts alone, less the rest's at weight_bits) over the model's; 0 for a
    dense model."""
    experts = expert_param_share(config)
    if not experts or not (fmt.mixed or fmt.weight_bits < 16):
        return experts
    layers = config.num_layers
    rest = (1.0 - experts) * fmt.stored_weight_scale(0.0, 0.0, layers)  # the other weights, all at weight_bits
    return (fmt.stored_weight_scale(0.0, experts, layers, experts) - rest) / stored_weight_scale(fmt, config)


def stored_weight_scale(fmt: NumericFormat, config: ModelConfig) -> float:
    """Bytes a format stores of `config`'s weights relative to 16-bit ones (NumericFormat.stored_weight_scale), an
    MoE model's routers at their own bits."""
    routers = router_param_share(config)
    if not (fmt.mixed or routers):
        return fmt.stored_weight_scale()
    attention, mlp = layer_param_shares(config)
    experts = expert_param_share(config) if fmt.hot_experts else 0.0
    return fmt.stored_weight_scale(attention, mlp, config.num_layers, experts, routers)
