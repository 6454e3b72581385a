"""Decoder-only transformer modules built from a ModelConfig: Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen3-MoE, OPT.

The modules are written to execute the same aten ops as the reference Hugging Face eager
implementations (float32 RMSNorm, rotate-half RoPE, SDPA attention), with two serving-engine
choices: a static KV cache written in place (as HF StaticCache or vLLM's paged cache) and logits
for the last position only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workloads.errors import InputError
from workloads.model_config import ModelConfig, balanced_expert_load

TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

# OPT's learned position table is offset by 2 rows (a quirk of fairseq kept in Hugging Face's OPT).
OPT_POSITION_OFFSET = 2


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(in_dtype)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[..., None].to(torch.float32) * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


class KVCache:
    """Per-layer key and value buffers of shape [batch, kv_heads, max_len, head_dim]."""

    def __init__(self, config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype):
        shape = (batch, config.num_kv_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype) for _ in range(config.num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype) for _ in range(config.num_layers)]

    def tensors(self) -> list[torch.Tensor]:
        return self.keys + self.values


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype):
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        bias = config.attention_bias
        self.config = config
        self.q_proj = nn.Linear(h, config.num_heads * d, bias=bias, dtype=dtype)
        self.k_proj = nn.Linear(h, config.num_kv_heads * d, bias=bias, dtype=dtype)
        self.v_proj = nn.Linear(h, config.num_kv_heads * d, bias=bias, dtype=dtype)
        self.o_proj = nn.Linear(config.num_heads * d, h, bias=config.output_bias, dtype=dtype)
        if config.qk_norm:  # Qwen3: one RMSNorm of head_dim weights for every query head, one for every key head
            self.q_norm = RMSNorm(d, config.norm_eps, dtype)
            self.k_norm = RMSNorm(d, config.norm_eps, dtype)

    def forward(self, x, rope, key_cache, value_cache, start: int) -> torch.Tensor:
        cfg = self.config
        b, s, _ = x.shape
        q = self._head_norm(self.q_proj(x).view(b, s, cfg.num_heads, cfg.head_dim), "q_norm").transpose(1, 2)
        k = self._head_norm(self.k_proj(x).view(b, s, cfg.num_kv_heads, cfg.head_dim), "k_norm").transpose(1, 2)
        v = self.v_proj(x).view(b, s, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        key_cache[:, :, start:start + s].copy_(k)
        value_cache[:, :, start:start + s].copy_(v)
        gqa = cfg.num_kv_heads != cfg.num_heads
        if start == 0:
            # Prefill attends to its own keys causally. A sliding window (Mistral's) is applied where the trace is
            # lowered to kernels (kernels/lowering.py): the kernel computes only the pairs inside it.
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            end = start + s
            lo = max(0, end - cfg.sliding_window) if cfg.sliding_window else 0
            out = F.scaled_dot_product_attention(
                q, key_cache[:, :, lo:end], value_cache[:, :, lo:end], is_causal=False, enable_gqa=gqa
            )
        out = out.transpose(1, 2).reshape(b, s, cfg.num_heads * cfg.head_dim)
        return self.o_proj(out)

    def _head_norm(self, heads: torch.Tensor, norm: str) -> torch.Tensor:
        """Qwen3's per-head RMSNorm of the projected queries or keys ([batch, seq, heads, head_dim]), before RoPE."""
        return getattr(self, norm)(heads) if self.config.qk_norm else heads


class MLP(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype):
        super().__init__()
        h, f, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gated = config.mlp == "gated_silu"
        if self.gated:
            self.gate_proj = nn.Linear(h, f, bias=bias, dtype=dtype)
        self.up_proj = nn.Linear(h, f, bias=bias, dtype=dtype)
        self.down_proj = nn.Linear(f, h, bias=bias, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.relu(self.up_proj(x)))


class RoutedExpert(MLP):
    """One expert's MLP and the routing of its tokens: gather them, apply the MLP, add the weighted result
    back. Every kernel of an expert runs inside this module, so a trace attributes each to its expert."""

    def forward(self, flat: torch.Tensor, weights: torch.Tensor, out: torch.Tensor, first: int,
                count: int) -> None:
        rows = torch.arange(first, first + count) % flat.shape[0]
        routed = super().forward(flat.index_select(0, rows)) * weights.index_select(0, rows)[:, :1]
        out.index_add_(0, rows, routed)


class MoE(nn.Module):
    """Top-k mixture of experts (Mixtral, Qwen3-MoE). Expert load follows balanced_expert_load, not the router."""

    def __init__(self, config: ModelConfig, dtype: torch.dtype):
        super().__init__()
        self.config = config
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False, dtype=dtype)
        self.experts = nn.ModuleList(RoutedExpert(config, dtype) for _ in range(config.num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        b, s, h = x.shape
        tokens = b * s
        flat = x.reshape(tokens, h)
        probs = F.softmax(self.gate(flat).to(torch.float32), dim=-1)
        weights, _ = torch.topk(probs, cfg.experts_per_token, dim=-1)
        if cfg.normalize_topk:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights.to(x.dtype)
        out = torch.zeros_like(flat)
        first = 0
        for expert, count in zip(self.experts, balanced_expert_load(tokens, cfg.experts_per_token,
                                                                    cfg.num_experts), strict=True):
            if count:
                expert(flat, weights, out, first, count)
                first += count
        return out.view(b, s, h)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype):
        super().__init__()
        self.input_layernorm = _norm(config, dtype)
        self.self_attn = Attention(config, dtype)
        self.post_attention_layernorm = _norm(config, dtype)
        self.mlp = MoE(config, dtype) if config.is_moe else MLP(config, dtype)

    def forward(self, x, rope, key_cache, value_cache, start: int) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, key_cache, value_cache, start)
        return x + self.mlp(self.post_attention_layernorm(x))


def _norm(config: ModelConfig, dtype: torch.dtype) -> nn.Module:
    if config.norm == "rms":
        return RMSNorm(config.hidden_size, config.norm_eps, dtype)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, dtype=dtype)


class DecoderModel(nn.Module):
    """Embedding, decoder layers, final norm and LM head; forward returns last-position logits."""

    def __init__(self, config: ModelConfig, dtype: torch.dtype | None = None):
        super().__init__()
        if config.is_mla:
            raise InputError(f"{config.name}: kv_lora_rank: found {config.kv_lora_rank}, allowed: 0 "
                             f"(multi-head latent attention is counted, not yet built or traced)")
        dtype = dtype or TORCH_DTYPES.get(config.dtype, torch.bfloat16)
        self.config = config
        self.dtype = dtype
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, dtype=dtype)
        if config.positions == "learned":
            self.embed_positions = nn.Embedding(config.max_positions + OPT_POSITION_OFFSET, config.hidden_size,
                                                dtype=dtype)
        else:
            self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.layers = nn.ModuleList(DecoderLayer(config, dtype) for _ in range(config.num_layers))
        self.norm = _norm(config, dtype)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, dtype=dtype)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, cache: KVCache, start: int = 0) -> torch.Tensor:
        s = input_ids.shape[1]
        positions = torch.arange(start, start + s).unsqueeze(0)
        x = self.embed_tokens(input_ids)
        rope = None
        if self.config.positions == "learned":
            x = x + self.embed_positions(positions + OPT_POSITION_OFFSET)
        else:
            rope = self.rotary(positions, self.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, cache.keys[i], cache.values[i], start)
        # Serving engines compute logits only where the next token is sampled.
        return self.lm_head(self.norm(x[:, -1:, :]))
