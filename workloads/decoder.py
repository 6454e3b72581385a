"""Decoder-only transformer modules built from a ModelConfig: Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen3-MoE, OPT,
DeepSeek-V2 and -V3, gpt-oss.

The modules are written to execute the same aten ops as the reference Hugging Face eager
implementations (float32 RMSNorm, rotate-half RoPE, SDPA attention), with two serving-engine
choices: a static KV cache written in place (as HF StaticCache or vLLM's paged cache) and logits
for the last position only. DeepSeek's multi-head latent attention runs as vLLM's MLA backend runs it
(LatentAttention), not as Hugging Face's eager module (which caches every head's key and value).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from workloads.capture import copied_ops
from workloads.model_config import MLA_ABSORBED, MLA_DECOMPRESSED, ModelConfig, expert_load, experts_reached

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
    """Per-layer key and value buffers of shape [batch, kv_heads, max_len, head_dim]; MLA's one latent buffer a layer
    (its latent and RoPE key, head_dim wide, in `keys`; `values` None)."""

    def __init__(self, config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype):
        shape = (batch, config.num_kv_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype) for _ in range(config.num_layers)]
        self.values = [None if config.is_mla else torch.zeros(shape, dtype=dtype) for _ in range(config.num_layers)]

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in self.keys + self.values if t is not None]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype, window: int | None = None):
        """`window`: the keys before each query this layer attends to at most (None: all of them)."""
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        bias = config.attention_bias
        self.config, self.window = config, window
        self.q_proj = nn.Linear(h, config.num_heads * d, bias=bias, dtype=dtype)
        self.k_proj = nn.Linear(h, config.num_kv_heads * d, bias=bias, dtype=dtype)
        self.v_proj = nn.Linear(h, config.num_kv_heads * d, bias=bias, dtype=dtype)
        self.o_proj = nn.Linear(config.num_heads * d, h, bias=config.output_bias, dtype=dtype)
        if config.qk_norm:  # Qwen3: one RMSNorm of head_dim weights for every query head, one for every key head
            self.q_norm = RMSNorm(d, config.norm_eps, dtype)
            self.k_norm = RMSNorm(d, config.norm_eps, dtype)
        if config.attention_sinks:
            # gpt-oss: one learned logit per query head in its softmax, which FlashAttention with sinks (vLLM's
            # backend for gpt-oss) adds inside the attention kernel: one more term in each query's sum, not traced.
            self.sinks = nn.Parameter(torch.zeros(config.num_heads, dtype=dtype))

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
            # Prefill attends to its own keys causally. A sliding window (Mistral's, a gpt-oss layer's) is applied where
            # the trace is lowered to kernels (kernels/lowering.py): the kernel computes only the pairs inside it.
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            end = start + s
            lo = max(0, end - self.window) if self.window else 0
            out = F.scaled_dot_product_attention(
                q, key_cache[:, :, lo:end], value_cache[:, :, lo:end], is_causal=False, enable_gqa=gqa
            )
        out = out.transpose(1, 2).reshape(b, s, cfg.num_heads * cfg.head_dim)
        return self.o_proj(out)

    def _head_norm(self, heads: torch.Tensor, norm: str) -> torch.Tensor:
        """Qwen3's per-head RMSNorm of the projected queries or keys ([batch, seq, heads, head_dim]), before RoPE."""
        return getattr(self, norm)(heads) if self.config.qk_norm else heads


def latent_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float) -> torch.Tensor:
    """softmax(q k^T x scale) v as one fused attention op where v is narrower than q and k (MLA) and k may have one
    head for all of q's (MQA): PyTorch's memory-efficient attention op, whose shape function takes both. Its CPU
    kernels do not run it, so real tensors pad v with zeros to q's width through SDPA and slice the zero columns off
    (a real trace records that SDPA op, its value as wide as its key)."""
    if isinstance(q, FakeTensor):
        return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, False, is_causal=causal,
                                                                       scale=scale)[0]
    padded = F.pad(v, (0, q.shape[-1] - v.shape[-1]))
    out = F.scaled_dot_product_attention(q, k, padded, is_causal=causal, enable_gqa=k.shape[1] != q.shape[1],
                                         scale=scale)
    return out[..., :v.shape[-1]]


class LatentAttention(nn.Module):
    """Multi-head latent attention (DeepSeek-V2/V3) as vLLM's MLA backend executes it (vllm/attention/backends/mla):
    each token's hidden state is projected to a latent (kv_lora_rank) and a RoPE key (qk_rope_head_dim) shared by
    the heads, which the cache holds. A prefill runs the decompressed form (LatentDecompressed), a decode step the
    absorbed one (LatentAbsorbed), or every pass the form ModelConfig.mla_form names. The two forms are modules of
    their own, so that a step template tells their kernels apart (kernels/mixed_layers.py)."""

    def __init__(self, config: ModelConfig, dtype: torch.dtype):
        super().__init__()
        h, heads, rank = config.hidden_size, config.num_heads, config.kv_lora_rank
        nope, rope = config.qk_nope_head_dim, config.qk_rope_head_dim
        self.config = config
        # The latent and RoPE key first: under tensor parallelism every device computes and caches them whole
        # (kernels/parallel.py splits what follows a column-parallel projection).
        self.kv_a_proj_with_mqa = nn.Linear(h, rank + rope, bias=False, dtype=dtype)
        self.kv_a_layernorm = RMSNorm(rank, config.norm_eps, dtype)
        if config.q_lora_rank:
            self.q_a_proj = nn.Linear(h, config.q_lora_rank, bias=False, dtype=dtype)
            self.q_a_layernorm = RMSNorm(config.q_lora_rank, config.norm_eps, dtype)
            self.q_b_proj = nn.Linear(config.q_lora_rank, heads * (nope + rope), bias=False, dtype=dtype)
        else:
            self.q_proj = nn.Linear(h, heads * (nope + rope), bias=False, dtype=dtype)
        self.decompressed = LatentDecompressed(config, dtype)
        self.absorbed = LatentAbsorbed(config)
        self.o_proj = nn.Linear(heads * config.v_head_dim, h, bias=False, dtype=dtype)

    def forward(self, x, rope, cache, _values, start: int) -> torch.Tensor:
        cfg = self.config
        b, s, _ = x.shape
        heads, rank, nope, rope_dim = cfg.num_heads, cfg.kv_lora_rank, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        latent, k_pe = self.kv_a_proj_with_mqa(x).split([rank, rope_dim], dim=-1)
        latent = self.kv_a_layernorm(latent)
        k_pe = apply_rope(k_pe.view(b, s, 1, rope_dim).transpose(1, 2), *rope)  # [batch, 1, seq, rope]
        cache[:, :, start:start + s, :rank].copy_(latent.unsqueeze(1))
        cache[:, :, start:start + s, rank:].copy_(k_pe)
        if cfg.q_lora_rank:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        else:
            q = self.q_proj(x)
        q_nope, q_pe = q.view(b, s, heads, nope + rope_dim).split([nope, rope_dim], dim=-1)
        q_pe = apply_rope(q_pe.transpose(1, 2), *rope)  # [batch, heads, seq, rope]
        if cfg.mla_form == MLA_DECOMPRESSED or (start == 0 and cfg.mla_form != MLA_ABSORBED):
            return self.o_proj(self.decompressed(latent, q_nope, q_pe, k_pe))
        return self.o_proj(self.absorbed(self.decompressed.kv_b_proj.weight, q_nope, q_pe, cache[:, :, :start + s]))


class LatentDecompressed(nn.Module):
    """MLA's prefill form: every head's key (without RoPE) and value up-projected from the latent (kv_b_proj), attention
    with qk_nope + qk_rope query/key dims and v_head_dim values over the pass's own tokens; returns [batch, seq, heads
    x v_head_dim]."""

    def __init__(self, config: ModelConfig, dtype: torch.dtype):
        super().__init__()
        self.config = config
        heads = config.num_heads
        self.kv_b_proj = nn.Linear(config.kv_lora_rank, heads * (config.qk_nope_head_dim + config.v_head_dim),
                                   bias=False, dtype=dtype)

    def forward(self, latent, q_nope, q_pe, k_pe) -> torch.Tensor:
        cfg = self.config
        b, s, heads, nope = q_nope.shape
        kv = self.kv_b_proj(latent).view(b, s, heads, nope + cfg.v_head_dim).transpose(1, 2)
        k_nope, value = kv.split([nope, cfg.v_head_dim], dim=-1)
        key = torch.cat([k_nope, k_pe.expand(b, heads, s, cfg.qk_rope_head_dim)], dim=-1)
        query = torch.cat([q_nope.transpose(1, 2), q_pe], dim=-1)
        out = latent_attention(query, key, value, causal=True, scale=mla_scale(cfg))  # [batch, heads, seq, v]
        return out.transpose(1, 2).reshape(b, s, heads * cfg.v_head_dim)


class LatentAbsorbed(nn.Module):
    """MLA's decode form: kv_b_proj's key half absorbed into the query (a bmm per head, W_UK), its value half into the
    output (W_UV); the query heads attend over the cached latent and RoPE key as one KV head (MQA: kv_lora_rank +
    qk_rope_head_dim keys, kv_lora_rank values, FlashMLA's shape), which reads the cache once for all heads."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    def forward(self, kv_b_weight, q_nope, q_pe, cached) -> torch.Tensor:
        """`cached`: [batch, 1, keys, kv_lora_rank + qk_rope_head_dim]; returns [batch, seq, heads x v_head_dim]."""
        cfg = self.config
        b, s, heads, nope = q_nope.shape
        rank = cfg.kv_lora_rank
        w_uk, w_uv = kv_b_weight.view(heads, nope + cfg.v_head_dim, rank).split([nope, cfg.v_head_dim], dim=1)
        q_latent = torch.bmm(q_nope.reshape(b * s, heads, nope).transpose(0, 1), w_uk)  # [heads, tokens, rank]
        query = torch.cat([q_latent.transpose(0, 1).reshape(b, s, heads, rank), q_pe.transpose(1, 2)], dim=-1)
        out = latent_attention(query.transpose(1, 2), cached, cached[..., :rank], causal=False, scale=mla_scale(cfg))
        out = torch.bmm(out.transpose(0, 1).reshape(heads, b * s, rank), w_uv.transpose(1, 2))  # [heads, tokens, v]
        # vLLM's _v_up_proj: (heads, tokens, v) to (tokens, heads x v), a copy for more than one token.
        return out.transpose(0, 1).reshape(b, s, heads * cfg.v_head_dim)


def mla_scale(config: ModelConfig) -> float:
    """The score scale of both MLA forms: the query/key head size before absorption (yarn's mscale, a constant factor
    on it, costs nothing)."""
    return (config.qk_nope_head_dim + config.qk_rope_head_dim) ** -0.5


class MLP(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype, width: int | None = None):
        super().__init__()
        h, f, bias = config.hidden_size, width or config.intermediate_size, config.mlp_bias
        self.gated = config.mlp != "relu"
        self.config = config
        if self.gated:
            self.gate_proj = nn.Linear(h, f, bias=bias, dtype=dtype)
        self.up_proj = nn.Linear(h, f, bias=bias, dtype=dtype)
        self.down_proj = nn.Linear(f, h, bias=bias, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.mlp == "clamped_swiglu":  # transformers' GptOssExperts, on separate gate and up projections
            limit = cfg.swiglu_limit
            gate, up = self.gate_proj(x).clamp(max=limit), self.up_proj(x).clamp(min=-limit, max=limit)
            return self.down_proj((up + 1) * (gate * torch.sigmoid(gate * cfg.swiglu_alpha)))
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
    """Top-k mixture of experts (Mixtral, Qwen3-MoE, DeepSeek's beside its shared experts). Expert load follows the
    config's routing model (model_config.expert_load: balanced or uniform), not the router.

    With `max_tokens`, only the experts a pass of that many tokens reaches are built (a one-token decode of
    DeepSeek-V2-Lite reaches 6 of 64); the others' weights are held as one tensor, `unbuilt_experts`, that no op
    reads, so the module's parameters still count and weigh every expert."""

    def __init__(self, config: ModelConfig, dtype: torch.dtype, max_tokens: int | None = None):
        super().__init__()
        self.config = config
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=config.router_bias, dtype=dtype)
        if config.score_bias:  # DeepSeek-V3's e_score_correction_bias (float32 in its checkpoint)
            self.e_score_correction_bias = nn.Parameter(torch.zeros(config.num_experts, dtype=torch.float32))
        built = config.num_experts
        if max_tokens is not None:
            built = experts_reached(max_tokens, config.experts_per_token, config.num_experts, config.moe_routing)
        self.experts = nn.ModuleList(RoutedExpert(config, dtype) for _ in range(built))
        if built < config.num_experts:  # every routed expert is alike: the first one's parameters, once each
            per_expert = sum(p.numel() for p in self.experts[0].parameters())
            self.unbuilt_experts = nn.Parameter(torch.empty((config.num_experts - built, per_expert), dtype=dtype))
        if config.shared_experts:  # one MLP as wide as the shared experts together (DeepseekV2MoE.shared_experts)
            self.shared_experts = MLP(config, dtype, width=config.shared_experts * config.intermediate_size)

    def _route(self, flat: torch.Tensor) -> torch.Tensor:
        """The routing weights of each token's top-k experts ([tokens, k], float32), as DeepSeek's MoEGate computes
        them: scores, a choice among the best groups (DeepSeek's group-limited routing), with a bias that picks but
        does not weigh (noaux_tc), normalized and scaled as the config says. Mixtral and Qwen3-MoE: softmax, top-k."""
        cfg = self.config
        logits = self.gate(flat).to(torch.float32)
        scores = torch.sigmoid(logits) if cfg.scoring == "sigmoid" else F.softmax(logits, dim=-1)
        choice = scores + self.e_score_correction_bias if cfg.score_bias else scores
        if cfg.expert_groups > 1:
            grouped = choice.view(flat.shape[0], cfg.expert_groups, -1)
            # noaux_tc ranks a group by its best two experts, group_limited_greedy by its best one.
            group_scores = grouped.topk(2, dim=-1)[0].sum(-1) if cfg.score_bias else grouped.amax(dim=-1)
            kept = torch.topk(group_scores, cfg.topk_groups, dim=-1)[1]
            mask = torch.zeros_like(group_scores).scatter_(1, kept, 1.0)
            choice = grouped.masked_fill(mask.unsqueeze(-1) == 0, 0.0).reshape(flat.shape[0], -1)
        weights, index = torch.topk(choice, cfg.experts_per_token, dim=-1)
        if cfg.score_bias:
            weights = scores.gather(1, index)
        if cfg.normalize_topk:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * cfg.routed_scale if cfg.routed_scale != 1.0 else weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        b, s, h = x.shape
        tokens = b * s
        flat = x.reshape(tokens, h)
        weights = self._route(flat).to(x.dtype)
        out = torch.zeros_like(flat)
        loads = expert_load(cfg.moe_routing, tokens, cfg.experts_per_token, cfg.num_experts)
        if any(loads[len(self.experts):]):
            raise ValueError(f"tokens: found {tokens:,}, allowed: at most the max_tokens this layer was built for "
                             f"(its first {len(self.experts)} experts)")
        ran: dict[int, RoutedExpert] = {}  # by row count, the expert that ran with that many rows
        first = 0
        for expert, count in zip(self.experts, loads[:len(self.experts)], strict=True):
            if count:
                # Given as many rows, an expert dispatches the same ops as another but for its module path (its rows'
                # first index is a value, which no op's shape or cost holds), and only `out`, which it adds to, is
                # read after it: a fake capture copies them (capture.py copied_ops): one expert of each row count runs.
                if not (count in ran and copied_ops(ran[count], expert)):
                    expert(flat, weights, out, first, count)
                    ran.setdefault(count, expert)
                first += count
        if cfg.shared_experts:
            out = out + self.shared_experts(flat)
        return out.view(b, s, h)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype, index: int = 0, max_tokens: int | None = None):
        super().__init__()
        self.input_layernorm = _norm(config, dtype)
        self.self_attn = (LatentAttention(config, dtype) if config.is_mla
                          else Attention(config, dtype, config.layer_window(index)))
        self.post_attention_layernorm = _norm(config, dtype)
        if config.is_moe and index >= config.dense_layers:
            self.mlp = MoE(config, dtype, max_tokens)
        else:  # a dense model's MLP, or one of an MoE model's dense first layers (DeepSeek's first_k_dense_replace)
            self.mlp = MLP(config, dtype, width=config.dense_intermediate_size if config.is_moe else None)

    def forward(self, x, rope, key_cache, value_cache, start: int) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, key_cache, value_cache, start)
        return x + self.mlp(self.post_attention_layernorm(x))


def _norm(config: ModelConfig, dtype: torch.dtype) -> nn.Module:
    if config.norm == "rms":
        return RMSNorm(config.hidden_size, config.norm_eps, dtype)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, dtype=dtype)


class DecoderModel(nn.Module):
    """Embedding, decoder layers, final norm and LM head; forward returns the logits of the last `sampled` positions."""

    def __init__(self, config: ModelConfig, dtype: torch.dtype | None = None, max_tokens: int | None = None):
        """`max_tokens`: the most tokens a pass runs (batch x new tokens), where MoE layers build only the experts
        that many reach (None: every expert)."""
        super().__init__()
        dtype = dtype or TORCH_DTYPES.get(config.dtype, torch.bfloat16)
        self.config = config
        self.dtype = dtype
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, dtype=dtype)
        if config.positions == "learned":
            self.embed_positions = nn.Embedding(config.max_positions + OPT_POSITION_OFFSET, config.hidden_size,
                                                dtype=dtype)
        else:
            self.rotary = RotaryEmbedding(config.qk_rope_head_dim if config.is_mla else config.head_dim,
                                          config.rope_theta)
        self.layers = nn.ModuleList(DecoderLayer(config, dtype, i, max_tokens) for i in range(config.num_layers))
        self.norm = _norm(config, dtype)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, dtype=dtype)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, cache: KVCache, start: int = 0, sampled: int = 1) -> torch.Tensor:
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
        # Serving engines compute logits only where a token is sampled: the last position, or every verified one of a
        # speculative verification (its rejection sampler compares each drafted token with the target's distribution).
        return self.lm_head(self.norm(x[:, -sampled:, :]))
