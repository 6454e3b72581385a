"""Model architecture read from a Hugging Face config.json (or a bundled preset of one)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from workloads.errors import InputError, found_json
from workloads.expert_skew import power_law_expert_load
from workloads.layer_types import layer_windows
from workloads.preset_files import bundled_names, read_preset

# Families whose config.json field names we read; each maps to one decoder layout in decoder.py.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen3_moe", "opt", "deepseek_v2",
                         "deepseek_v3", "gpt_oss")
# Families that normalize each head's query and key (RMSNorm over head_dim) before RoPE, and whose output
# projection has a bias with attention_bias (Hugging Face modeling_qwen3.py, modeling_qwen3_moe.py).
QWEN3_TYPES = ("qwen3", "qwen3_moe")
MLA_DECOMPRESSED, MLA_ABSORBED = "decompressed", "absorbed"
# MoE routing models (EXPERT_LOADS): every expert filled as evenly as the rows go, each token's experts picked
# independently and uniformly, or aiconfigurator's power-law skew (workloads/expert_skew.py).
BALANCED, UNIFORM, POWER_LAW = "balanced", "uniform", "power_law"
# Families with multi-head latent attention (MLA), shared experts and dense first layers (Hugging Face
# modeling_deepseek_v2.py, modeling_deepseek_v3.py).
DEEPSEEK_TYPES = ("deepseek_v2", "deepseek_v3")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape-relevant fields of a decoder-only transformer, normalized across families."""

    name: str
    model_type: str
    hidden_size: int
    intermediate_size: int  # each MLP's width: each expert's in an MoE model (qwen3_moe: moe_intermediate_size)
    num_layers: int
    num_heads: int
    num_kv_heads: int  # MLA: 1, the latent every query head reads (vLLM's MLA cache: one KV head)
    head_dim: int  # MLA: the latent cache's width, kv_lora_rank + qk_rope_head_dim (vLLM's MLA head size)
    vocab_size: int
    max_positions: int
    norm: str  # "rms" or "layer"
    positions: str  # "rope" or "learned"
    mlp: str  # "gated_silu", "clamped_swiglu" (gpt-oss: swiglu_limit and swiglu_alpha) or "relu"
    attention_bias: bool
    mlp_bias: bool
    tie_embeddings: bool
    num_experts: int = 0  # 0: dense MLP
    experts_per_token: int = 0
    shared_experts: int = 0  # experts every token runs beside its routed ones, one MLP of shared_experts x the width
    dense_layers: int = 0  # the first layers of an MoE model whose MLP is dense (DeepSeek first_k_dense_replace)
    dense_intermediate_size: int = 0  # those layers' MLP width
    # Routing: softmax or sigmoid scores; top-k within the best topk_groups of expert_groups groups (1 of 1: plain
    # top-k); with a per-expert bias that only picks the experts (DeepSeek-V3's noaux_tc); routed_scale times the
    # routed experts' sum (routed_scaling_factor).
    scoring: str = "softmax"
    expert_groups: int = 1
    topk_groups: int = 1
    score_bias: bool = False
    routed_scale: float = 1.0
    # Multi-head latent attention (0: none): the query's low-rank width (0: a direct projection), the latent's, and
    # each head's query/key width without and with RoPE and its value width.
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    # The MLA form every pass runs in: "" a prefill decompressed and a decode step absorbed, as vLLM runs them;
    # MLA_DECOMPRESSED or MLA_ABSORBED, each form apart, as a step template traces them (kernels/mixed_layers.py).
    mla_form: str = ""
    normalize_topk: bool = True  # the top-k routing weights divided by their sum (Mixtral; qwen3_moe norm_topk_prob)
    qk_norm: bool = False  # an RMSNorm of head_dim weights on each query and key head before RoPE (Qwen3)
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    sliding_window: int | None = None  # every layer's attention window (Mistral's); None where layers differ
    # Each layer's attention window (None: every key) where layers differ (gpt-oss's layer_types); (): sliding_window.
    layer_windows: tuple[int | None, ...] = ()
    attention_sinks: bool = False  # a learned logit per query head in its softmax (gpt-oss's sinks)
    router_bias: bool = False  # a bias on the router's logits (gpt-oss)
    # gpt-oss's expert activation (modeling_gpt_oss.py GptOssExperts): the gate clamped to at most swiglu_limit, the
    # up projection to +-swiglu_limit, (up + 1) x gate x sigmoid(swiglu_alpha x gate).
    swiglu_limit: float = 0.0
    swiglu_alpha: float = 0.0
    dtype: str = "bfloat16"
    source: str = ""
    # Multi-token-prediction modules the checkpoint ships beside the model (DeepSeek-V3's num_nextn_predict_layers),
    # which the model itself does not build; `mtp`: this config is such a module (mtp_module, workloads/mtp.py).
    mtp_layers: int = 0
    mtp: bool = False
    # How a pass's tokens reach an MoE layer's experts (EXPERT_LOADS): a model of the router, which fake tensors do not
    # run; a workload's choice more than the checkpoint's (explore/knobs.py moe_routing).
    moe_routing: str = BALANCED

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        """Whether attention is multi-head latent attention (a cached latent, not per-head keys and values)."""
        return self.kv_lora_rank > 0

    @property
    def moe_layers(self) -> int:
        """Decoder layers whose MLP is a mixture of experts."""
        return self.num_layers - self.dense_layers if self.is_moe else 0

    @property
    def output_bias(self) -> bool:
        """Whether the attention output projection (o_proj) has a bias: OPT's always, Qwen3's and gpt-oss's with
        attention_bias."""
        return self.model_type == "opt" or (self.attention_bias and self.model_type in (*QWEN3_TYPES, "gpt_oss"))

    def layer_window(self, index: int) -> int | None:
        """The attention window of layer `index` (None: it attends to every key)."""
        return self.layer_windows[index] if self.layer_windows else self.sliding_window

    def mtp_module(self) -> ModelConfig:
        """The config of the model's multi-token-prediction module (DeepSeek-V3, arXiv 2412.19437, section 2.2): one
        decoder layer of the model's shape, as the layer after its last (an MoE one past first_k_dense_replace)."""
        return replace(self, name=f"{self.name} MTP", num_layers=1, dense_layers=0, mtp_layers=0, mtp=True)

    def shared_param_count(self) -> int:
        """Parameters the config's module holds that belong to another: an MTP module's embedding and LM head, which
        are its model's (DeepSeek-V3 README_WEIGHTS.md: 'Shares parameters with the Embedding layer' and output head);
        0 for a model."""
        return (1 if self.tie_embeddings else 2) * self.vocab_size * self.hidden_size if self.mtp else 0

    def kv_bytes_per_token(self, bits: int = 16) -> float:
        """KV-cache bytes one token occupies across all layers: a key and a value per KV head, or MLA's one latent
        and RoPE key (head_dim wide), from which keys and values are both computed."""
        return self.num_layers * self._kv_layer_bytes(bits)

    def kv_bytes_per_sequence(self, tokens: float, bits: int = 16) -> float:
        """KV-cache bytes of a sequence of `tokens` tokens where each layer keeps the last tokens of its own window
        (layer_windows; a model-wide sliding_window is the caller's to apply, as a KV policy's is)."""
        if not self.layer_windows:
            return tokens * self.kv_bytes_per_token(bits)
        kept = sum(tokens if window is None else min(tokens, window) for window in self.layer_windows)
        return kept * self._kv_layer_bytes(bits)

    def _kv_layer_bytes(self, bits: int) -> float:
        """One layer's KV-cache bytes a token."""
        return (1 if self.is_mla else 2) * self.num_kv_heads * self.head_dim * bits / 8

    def param_count(self) -> int:
        """Number of parameters, from the shapes (independent of the PyTorch module)."""
        return self._params(self.num_experts)

    def active_param_count(self) -> int:
        """Parameters one token's pass reads: all but the experts it is not routed to (experts_per_token of each MoE
        layer's experts, its whole router), as model cards count "activated" parameters."""
        return self._params(self.experts_per_token)

    def routed_expert_param_count(self) -> int:
        """Parameters of the routed experts alone (routers and shared experts apart); 0 for a dense model."""
        return self._params(self.num_experts) - self._params(0)

    def router_param_count(self) -> int:
        """Parameters of the MoE layers' routers (their gates' weights and biases); 0 for a dense model."""
        return self.moe_layers * self._router_params()

    def _router_params(self) -> int:
        """One MoE layer's router: hidden x experts weights, and a bias per expert where the config has one
        (gpt-oss's router bias, DeepSeek-V3's e_score_correction_bias)."""
        return self.num_experts * (self.hidden_size + int(self.score_bias) + int(self.router_bias))

    def _params(self, experts: int) -> int:
        """Parameters with `experts` routed experts in each MoE layer (routers and shared experts kept whole)."""
        h = self.hidden_size
        attn = self._attention_params()
        mlp = self._mlp_params(self.intermediate_size)  # one MLP (an expert's, in an MoE layer)
        if self.is_moe:
            shared = self._mlp_params(self.shared_experts * self.intermediate_size) if self.shared_experts else 0
            mlp = experts * mlp + shared + self._router_params()  # experts + shared experts + router
        norm = h * (2 if self.norm == "layer" else 1)
        dense = self.dense_layers * (self._mlp_params(self.dense_intermediate_size) - mlp)
        per_layer = attn + mlp + 2 * norm
        embed = self.vocab_size * h
        head = 0 if self.tie_embeddings else self.vocab_size * h
        pos = (self.max_positions + 2) * h if self.positions == "learned" else 0
        # An MTP module's own norms of the embedding and of the model's hidden state, and its 2h -> h eh_proj.
        mtp = 2 * norm + 2 * h * h if self.mtp else 0
        return self.num_layers * per_layer + dense + embed + head + pos + norm + mtp

    def _mlp_params(self, width: int) -> int:
        """Parameters of one MLP `width` wide."""
        mats = 2 if self.mlp == "relu" else 3  # a gated MLP's gate, up and down projections
        return mats * self.hidden_size * width + ((mats - 1) * width + self.hidden_size if self.mlp_bias else 0)

    def _attention_params(self) -> int:
        """Parameters of one layer's attention (none without heads)."""
        h, d = self.hidden_size, self.head_dim
        if self.is_mla:
            return self._mla_params() if self.num_heads else 0
        q = self.num_heads * d
        kv = self.num_kv_heads * d
        attn = h * q + 2 * h * kv + q * h
        if self.attention_bias:
            attn += q + 2 * kv + (h if self.output_bias else 0)
        if self.qk_norm:
            attn += 2 * d  # q_norm and k_norm weights, shared by the heads
        if self.attention_sinks:
            attn += self.num_heads
        return attn

    def _mla_params(self) -> int:
        """MLA's projections (modeling_deepseek_v3.py DeepseekV3Attention): the query straight from the hidden state
        or through its low-rank q_a_proj, RMSNorm and q_b_proj; kv_a_proj_with_mqa to the latent and the RoPE key, the
        latent's RMSNorm, kv_b_proj up to every head's key (without RoPE) and value; o_proj."""
        h, heads, rank = self.hidden_size, self.num_heads, self.q_lora_rank
        q_width = heads * (self.qk_nope_head_dim + self.qk_rope_head_dim)
        q = h * rank + rank + rank * q_width if rank else h * q_width
        kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
        up = self.kv_lora_rank * heads * (self.qk_nope_head_dim + self.v_head_dim)
        return q + kv + up + heads * self.v_head_dim * h


def _require(cfg: dict, key: str, where: str):
    if key not in cfg:
        raise InputError(f"{where}: key '{key}' is missing (model_type {cfg.get('model_type')!r} needs it)")
    value = cfg[key]
    if key in POSITIVE_INT_KEYS:
        most = POSITIVE_INT_KEYS[key]
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= most):
            raise InputError(f"{where}: {key}: found {found_json(value)}, allowed: a positive integer up to {most:,}")
    return value


# Keys whose value must be a positive integer wherever a config has them, and the largest each may be: about
# 8x the largest published decoder-only model (as of 2026), so that a typo (10^18, an extra zero or three)
# cannot build a model no machine traces in reasonable time (num_hidden_layers: 100,000 traced for hours).
POSITIVE_INT_KEYS = {
    "hidden_size": 131_072,  # PaLM 540B: 18,432; Llama 3.1 405B: 16,384
    "intermediate_size": 1_048_576, "ffn_dim": 1_048_576,  # PaLM 540B: 73,728; Llama 3.1 405B: 53,248
    "num_hidden_layers": 1_000,  # Llama 3.1 405B: 126; PaLM 540B: 118 (tracing takes about 0.05 s a layer)
    "num_attention_heads": 1_024, "num_key_value_heads": 1_024,  # Llama 3.1 405B and DeepSeek-V3: 128
    "head_dim": 1_024,  # Gemma 7B: 256
    "vocab_size": 4_194_304,  # Gemma: 256,000
    "max_position_embeddings": 100_000_000, "sliding_window": 100_000_000,  # Llama 4 Scout: 10M tokens
    "num_local_experts": 1_024, "num_experts": 1_024, "num_experts_per_tok": 1_024,  # DeepSeek-V3: 256, 8 a token
    "moe_intermediate_size": 1_048_576, "decoder_sparse_step": 1_000,
    "n_routed_experts": 1_024, "n_group": 1_024, "topk_group": 1_024, "moe_layer_freq": 1_000,
    # MLA widths (DeepSeek-V3: q_lora_rank 1,536, kv_lora_rank 512, qk_nope_head_dim 128, qk_rope_head_dim 64)
    "q_lora_rank": 131_072, "kv_lora_rank": 131_072, "qk_nope_head_dim": 1_024, "qk_rope_head_dim": 1_024,
    "v_head_dim": 1_024,
}
# Counts that may be 0, each with the largest it may be: shared experts (DeepSeek-V2: 2), dense first layers
# (DeepSeek-V3: 3) and multi-token-prediction layers (DeepSeek-V3: 1, built as a draft only: workloads/mtp.py).
COUNT_KEYS = {"n_shared_experts": 1_024, "first_k_dense_replace": 1_000, "num_nextn_predict_layers": 1_000}
TORCH_DTYPES = ("bfloat16", "float16", "float32")  # what a model is built and traced in
# True/false keys a config may have (JSON true or false: a string "false" would read as true).
BOOLEAN_KEYS = ("attention_bias", "mlp_bias", "tie_word_embeddings", "enable_bias", "do_layer_norm_before",
                "use_sliding_window", "norm_topk_prob")
# Positive real keys, with what each may be: an epsilon added to a variance is small (1e-5, 1e-6); a RoPE base
# is at least 1 (Llama 3: 500,000; Qwen2.5: 1,000,000).
REAL_KEYS = {"rms_norm_eps": (0.0, 1.0, "a number in (0, 1), e.g. 1e-05"),
             "rope_theta": (1.0, 1e12, "a number from 1 to 1e12, e.g. 10000.0"),
             "routed_scaling_factor": (0.0, 1e6, "a positive number, e.g. 2.5"),
             "swiglu_limit": (0.0, 1e6, "a positive number, e.g. 7.0")}
# DeepSeek routing (modeling_deepseek.py MoEGate): how experts are scored, and how the top k are picked: among all
# (greedy), among the best topk_group groups by their best expert (group_limited_greedy), or with a bias added for
# the choice and groups ranked by their best two (noaux_tc, DeepSeek-V3's auxiliary-loss-free balancing).
SCORING_FUNCS = ("softmax", "sigmoid")
TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")
# The architectures entry of each family (Hugging Face class names), to catch a config whose model_type
# disagrees with it (a Mixtral config labelled llama would run as a dense model).
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "qwen3": "Qwen3ForCausalLM", "mixtral": "MixtralForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
                 "opt": "OPTForCausalLM", "deepseek_v2": "DeepseekV2ForCausalLM",
                 "deepseek_v3": "DeepseekV3ForCausalLM", "gpt_oss": "GptOssForCausalLM"}
# The expert keys of each MoE family: experts, experts per token, and (where it is its own key) the expert width.
MOE_KEYS = {"mixtral": ("num_local_experts", "num_experts_per_tok"),
            "qwen3_moe": ("num_experts", "num_experts_per_tok", "moe_intermediate_size"),
            "deepseek_v2": ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size"),
            "deepseek_v3": ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size"),
            "gpt_oss": ("num_local_experts", "num_experts_per_tok")}


def _check_values(cfg: dict, where: str) -> None:
    """Types and ranges of the keys read, before any is used."""
    for key in POSITIVE_INT_KEYS.keys() & cfg.keys():
        if cfg[key] is not None:
            _require(cfg, key, where)
    for key, most in COUNT_KEYS.items():
        value = cfg.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most):
            raise InputError(f"{where}: {key}: found {found_json(value)}, allowed: an integer from 0 to {most:,}")
    for key in BOOLEAN_KEYS:
        if key in cfg and not isinstance(cfg[key], bool):
            raise InputError(f"{where}: {key}: found {found_json(cfg[key])}, allowed: true or false")
    for key, (low, high, allowed) in REAL_KEYS.items():
        value = cfg.get(key)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        # A null is refused, not read as the default: Hugging Face's config classes keep it and fail on it.
        if key in cfg and not (number and low < value < high):
            raise InputError(f"{where}: {key}: found {found_json(value)}, allowed: {allowed}")
    named = cfg.get("architectures") or []
    expected = ARCHITECTURES[cfg["model_type"]]
    others = [a for a in named if a in ARCHITECTURES.values() and a != expected] if isinstance(named, list) else []
    if others:
        raise InputError(f"{where}: architectures: found {found_json(others[0])} with model_type "
                         f"{cfg['model_type']!r}, allowed: {expected!r} (or the model_type of {others[0]})")
    for key in MOE_KEYS.get(cfg["model_type"], ()):
        if cfg.get(key) is None:
            raise InputError(f"{where}: {key}: missing, allowed: a positive integer (a {cfg['model_type']} config "
                             f"needs it; without it the model would run as a dense one)")
    if cfg["model_type"] == "qwen3_moe":
        _check_qwen3_moe_layers(cfg, where)
    if cfg["model_type"] in DEEPSEEK_TYPES:
        _check_deepseek(cfg, where)


def _check_deepseek(cfg: dict, where: str) -> None:
    """What a DeepSeek config may set that the decoder builds: an MoE MLP in every layer past the dense first ones,
    a routing it implements, no attention biases."""
    given = _deepseek_keys(cfg)
    for key, allowed in (("scoring_func", SCORING_FUNCS), ("topk_method", TOPK_METHODS)):
        value = given[key]
        if value not in allowed:
            raise InputError(f"{where}: {key}: found {found_json(value)}, allowed: {', '.join(allowed)}")
    if cfg.get("moe_layer_freq", 1) != 1:
        raise InputError(f"{where}: moe_layer_freq: found {found_json(cfg['moe_layer_freq'])}, allowed: 1 (an MoE "
                         f"MLP in every layer past first_k_dense_replace; dense layers between MoE ones are not "
                         f"modeled)")
    if cfg.get("attention_bias", False):
        raise InputError(f"{where}: attention_bias: found true, allowed: false (MLA projections with biases are not "
                         f"modeled)")
    layers, dense = _require(cfg, "num_hidden_layers", where), given["first_k_dense_replace"]
    if dense >= layers:
        raise InputError(f"{where}: first_k_dense_replace: found {dense}, allowed: 0 to {layers - 1} (fewer than "
                         f"num_hidden_layers; a model without MoE layers is a dense one)")
    experts, k = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
    groups, chosen = given["n_group"], given["topk_group"]
    if experts % groups or chosen > groups or k > chosen * (experts // groups):
        raise InputError(f"{where}: n_group, topk_group: found {groups} groups of {experts} experts, {chosen} chosen "
                         f"for {k} experts a token, allowed: groups dividing n_routed_experts, topk_group <= n_group, "
                         f"and num_experts_per_tok within the chosen groups' experts")


def _check_qwen3_moe_layers(cfg: dict, where: str) -> None:
    """A qwen3_moe config whose every layer is an MoE one: Hugging Face's Qwen3MoeDecoderLayer builds a dense MLP of
    intermediate_size in the layers of mlp_only_layers and in those whose index + 1 decoder_sparse_step does not
    divide, which the decoder does not build."""
    step = cfg.get("decoder_sparse_step", 1)
    if step != 1:
        raise InputError(f"{where}: decoder_sparse_step: found {found_json(step)}, allowed: 1 (an MoE MLP in every "
                         f"layer; dense layers between MoE ones are not modeled)")
    dense = cfg.get("mlp_only_layers") or []
    if dense != []:
        raise InputError(f"{where}: mlp_only_layers: found {found_json(dense)}, allowed: [] (an MoE MLP in every "
                         f"layer; dense layers among MoE ones are not modeled)")


def _check(config: ModelConfig, cfg: dict, where: str) -> ModelConfig:
    """Rules across keys that a model built from the config relies on."""
    if config.dtype not in TORCH_DTYPES:
        raise InputError(f"{where}: torch_dtype: found {found_json(config.dtype)}, allowed: {', '.join(TORCH_DTYPES)}")
    if config.num_heads % config.num_kv_heads:
        raise InputError(f"{where}: num_key_value_heads: found {config.num_kv_heads}, allowed: a divisor of "
                         f"num_attention_heads ({config.num_heads})")
    if config.is_mla:
        if config.qk_rope_head_dim % 2:
            raise InputError(f"{where}: qk_rope_head_dim: found {config.qk_rope_head_dim}, allowed: an even head size "
                             f"(rotary embeddings rotate pairs of dimensions)")
    elif (config.model_type == "opt" or "head_dim" not in cfg) and config.hidden_size % config.num_heads:
        with_key = " or a head_dim key" if config.model_type != "opt" else ""
        raise InputError(f"{where}: num_attention_heads: found {config.num_heads}, allowed: a divisor of "
                         f"hidden_size ({config.hidden_size}){with_key}")
    if config.positions == "rope" and config.head_dim % 2 and not config.is_mla:
        key = "head_dim" if cfg.get("head_dim") else "hidden_size / num_attention_heads"
        raise InputError(f"{where}: {key}: found {config.head_dim}, allowed: an even head size (rotary "
                         f"embeddings rotate pairs of dimensions)")
    if config.is_moe and not 1 <= config.experts_per_token <= config.num_experts:
        raise InputError(f"{where}: num_experts_per_tok: found {config.experts_per_token}, allowed: 1 to "
                         f"num_local_experts ({config.num_experts})")
    return config


def config_from_hf(cfg: dict, *, name: str, where: str = "config") -> ModelConfig:
    """Normalize a Hugging Face config.json dictionary into a ModelConfig (InputError for what we cannot build)."""
    if not isinstance(cfg, dict):
        raise InputError(f"{where}: found a JSON {type(cfg).__name__}, allowed: an object of config keys")
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or model_type not in SUPPORTED_MODEL_TYPES:
        raise InputError(
            f"{where}: model_type: found {found_json(model_type)}, allowed: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    _check_values(cfg, where)
    return _check(_from_hf(cfg, name=name, where=where), cfg, where)


def _from_hf(cfg: dict, *, name: str, where: str) -> ModelConfig:
    model_type = cfg["model_type"]
    common = dict(name=name, model_type=model_type, source=cfg.get("_source", where),
                  dtype=cfg.get("torch_dtype", "bfloat16"))
    if model_type == "opt":
        hidden = _require(cfg, "hidden_size", where)
        heads = _require(cfg, "num_attention_heads", where)
        if cfg.get("word_embed_proj_dim", hidden) != hidden:
            raise InputError(f"{where}: word_embed_proj_dim != hidden_size is not supported")
        if not cfg.get("do_layer_norm_before", True):
            raise InputError(f"{where}: do_layer_norm_before: found false, allowed: true")
        act = cfg.get("activation_function", "relu")
        if act != "relu":
            raise InputError(f"{where}: activation_function: found {found_json(act)}, allowed: 'relu'")
        return ModelConfig(
            **common, hidden_size=hidden, intermediate_size=_require(cfg, "ffn_dim", where),
            num_layers=_require(cfg, "num_hidden_layers", where), num_heads=heads, num_kv_heads=heads,
            head_dim=hidden // heads, vocab_size=_require(cfg, "vocab_size", where),
            max_positions=_require(cfg, "max_position_embeddings", where), norm="layer",
            positions="learned", mlp="relu", attention_bias=cfg.get("enable_bias", True),
            mlp_bias=cfg.get("enable_bias", True), tie_embeddings=cfg.get("tie_word_embeddings", True),
        )
    hidden = _require(cfg, "hidden_size", where)
    heads = _require(cfg, "num_attention_heads", where)
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise InputError(f"{where}: hidden_act: found {found_json(act)}, allowed: 'silu'")
    window = cfg.get("sliding_window")
    if model_type in ("qwen2", "qwen3"):
        window = _qwen2_window(cfg, where)
    elif model_type == "qwen3_moe":  # Qwen3MoeConfig: every layer's window with use_sliding_window, else none
        window = window if cfg.get("use_sliding_window", False) else None
    width_key = "intermediate_size" if model_type in ("mixtral", "gpt_oss") else "moe_intermediate_size"
    moe = model_type in MOE_KEYS
    family = _deepseek_fields(cfg, where) if model_type in DEEPSEEK_TYPES else {}
    family |= _gpt_oss_fields(cfg, where) if model_type == "gpt_oss" else {}
    return ModelConfig(
        **common, hidden_size=hidden, intermediate_size=_require(cfg, width_key if moe else "intermediate_size", where),
        num_layers=_require(cfg, "num_hidden_layers", where), num_heads=heads,
        num_kv_heads=family.pop("num_kv_heads", None) or cfg.get("num_key_value_heads") or heads,
        head_dim=family.pop("head_dim", None) or cfg.get("head_dim") or hidden // heads,
        vocab_size=_require(cfg, "vocab_size", where),
        max_positions=_require(cfg, "max_position_embeddings", where), norm="rms", positions="rope",
        mlp=family.pop("mlp", "gated_silu"),
        # Qwen2 always has q/k/v biases (its config has no key for them); Llama reads attention_bias.
        attention_bias=model_type == "qwen2" or bool(cfg.get("attention_bias", False)),
        mlp_bias=model_type == "gpt_oss" or bool(cfg.get("mlp_bias", False)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        num_experts=cfg[MOE_KEYS[model_type][0]] if moe else 0,
        experts_per_token=cfg["num_experts_per_tok"] if moe else 0,
        # Mixtral always renormalizes its top-k weights; Qwen3-MoE and DeepSeek with norm_topk_prob (transformers'
        # default false). gpt-oss takes the softmax of its top-k logits (GptOssTopKRouter): the same weights as the
        # top-k of the softmax renormalized.
        normalize_topk=model_type in ("mixtral", "gpt_oss") or bool(cfg.get("norm_topk_prob", False)),
        qk_norm=model_type in QWEN3_TYPES,
        norm_eps=cfg.get("rms_norm_eps", 1e-5), rope_theta=cfg.get("rope_theta", 10000.0),
        sliding_window=None if model_type == "gpt_oss" else window, **family,
    )


def _gpt_oss_fields(cfg: dict, where: str) -> dict:
    """A gpt-oss config's fields (Hugging Face modeling_gpt_oss.py): each layer's window from layer_types, attention
    sinks, a router and experts with biases, the clamped SwiGLU (GptOssExperts' alpha 1.702). Its YaRN RoPE changes the
    rotary frequencies' values and scales the cos and sin tables by a constant: two elementwise ops on the tables,
    not traced."""
    return dict(layer_windows=layer_windows(cfg, _require(cfg, "num_hidden_layers", where), where),
                attention_sinks=True, router_bias=True, mlp="clamped_swiglu",
                swiglu_limit=float(cfg.get("swiglu_limit", GPT_OSS_SWIGLU_LIMIT)), swiglu_alpha=GPT_OSS_SWIGLU_ALPHA)


# transformers' GptOssExperts: alpha fixed, the limit the config's swiglu_limit (7.0 in both gpt-oss checkpoints).
GPT_OSS_SWIGLU_ALPHA, GPT_OSS_SWIGLU_LIMIT = 1.702, 7.0


def _deepseek_fields(cfg: dict, where: str) -> dict:
    """A DeepSeek config's MLA, shared-expert, dense-layer and routing fields. MLA caches one latent per token that
    every query head reads (vLLM counts it as one KV head of kv_lora_rank + qk_rope_head_dim)."""
    rank, rope = _require(cfg, "kv_lora_rank", where), _require(cfg, "qk_rope_head_dim", where)
    given = _deepseek_keys(cfg)
    grouped = given["topk_method"] != "greedy"
    return dict(
        q_lora_rank=given["q_lora_rank"], kv_lora_rank=rank,
        qk_nope_head_dim=_require(cfg, "qk_nope_head_dim", where), qk_rope_head_dim=rope,
        v_head_dim=_require(cfg, "v_head_dim", where), num_kv_heads=1, head_dim=rank + rope,
        shared_experts=given["n_shared_experts"], dense_layers=given["first_k_dense_replace"],
        dense_intermediate_size=_require(cfg, "intermediate_size", where),
        scoring=given["scoring_func"], score_bias=given["topk_method"] == "noaux_tc",
        expert_groups=given["n_group"] if grouped else 1, topk_groups=given["topk_group"] if grouped else 1,
        routed_scale=float(given["routed_scaling_factor"]), mtp_layers=given["num_nextn_predict_layers"])


def _deepseek_keys(cfg: dict) -> dict:
    """A DeepSeek config's keys that may be left out, each as given or, left out (a count also where null), what the
    decoder builds then: softmax scores, greedy top-k over one group of all the experts, no dense first layers, no
    shared experts, a direct query projection, the routed experts' sum unscaled, no multi-token-prediction module."""
    return {"scoring_func": cfg.get("scoring_func", SCORING_FUNCS[0]),
            "topk_method": cfg.get("topk_method", TOPK_METHODS[0]),
            "n_group": cfg.get("n_group") or 1, "topk_group": cfg.get("topk_group") or 1,
            "first_k_dense_replace": cfg.get("first_k_dense_replace") or 0,
            "n_shared_experts": cfg.get("n_shared_experts") or 0, "q_lora_rank": cfg.get("q_lora_rank") or 0,
            "routed_scaling_factor": cfg.get("routed_scaling_factor", 1.0),
            "num_nextn_predict_layers": cfg.get("num_nextn_predict_layers") or 0}


def _qwen2_window(cfg: dict, where: str) -> int | None:
    """A Qwen2 or Qwen3 config's attention window: Hugging Face's Qwen2 and Qwen3 give layers from max_window_layers on
    the window, and only with use_sliding_window (every Qwen2.5 and Qwen3 config ships it false). All layers or none;
    some is not modeled."""
    window, layers = cfg.get("sliding_window"), _require(cfg, "num_hidden_layers", where)
    if not cfg.get("use_sliding_window", False) or window is None:
        return None
    first = cfg.get("max_window_layers", QWEN2_MAX_WINDOW_LAYERS)
    if not (isinstance(first, int) and not isinstance(first, bool) and first >= 0):
        raise InputError(f"{where}: max_window_layers: found {found_json(first)}, allowed: an integer >= 0")
    if first >= layers:
        return None
    if first > 0:
        raise InputError(f"{where}: max_window_layers: found {first} with use_sliding_window true and {layers} "
                         f"layers, allowed: 0 (every layer attends in its window) or at least {layers} (none does); "
                         f"a window on some layers only is not modeled")
    return window


QWEN2_MAX_WINDOW_LAYERS = 28  # transformers' Qwen2Config and Qwen3Config default


def preset_names() -> list[str]:
    """Names of the bundled model presets."""
    return bundled_names("workloads", ".json")


def config_file(name_or_path: str) -> str:
    """What a model name reads: a Hugging Face model folder's config.json, else the name itself (a preset or a
    config.json path)."""
    in_folder = os.path.join(name_or_path, "config.json")  # os.path: a point's key asks for every point of a search
    return in_folder if os.path.isfile(in_folder) else name_or_path


def load_model_config(name_or_path: str) -> ModelConfig:
    """A bundled preset by name, or any config.json by path, or a model folder holding one (named after its
    folder)."""
    name_or_path = config_file(name_or_path)
    text, where, name = read_preset(name_or_path, package="workloads", suffixes=(".json",), key="model",
                                    file_kind="config.json")
    if name == "config":
        name = Path(where).parent.name
    try:
        cfg = json.loads(text, parse_int=_integer)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON: {err}") from None
    except RecursionError:  # json recurses once per level: 1,000 nested arrays exhaust the stack
        raise InputError(f"{where}: found values nested too deeply to read, allowed: a Hugging Face config.json "
                         f"(a few levels deep)") from None
    return config_from_hf(cfg, name=name, where=where)


class LongInteger:
    """An integer in a config.json with more digits than Python converts (4,300): kept unconverted, so that the
    check of its key names it (any key we read refuses it; a key we do not read keeps it harmlessly)."""

    def __init__(self, digits: int):
        self.digits = digits

    def __repr__(self) -> str:
        return f"an integer of {self.digits:,} digits"


def _integer(text: str) -> int | LongInteger:
    digits = len(text.lstrip("-"))
    return LongInteger(digits) if digits > MAX_INTEGER_DIGITS else int(text)


MAX_INTEGER_DIGITS = 4_300  # Python's default limit on converting text to int (sys.get_int_max_str_digits)


def check_context(config: ModelConfig, prompt: int, output: int, where: str = "--prompt, --output") -> None:
    """A static batch's prompt and output tokens must fit in the model's context (max_position_embeddings):
    positions past it have no learned embedding, and rotary ones past it were never trained. InputError naming
    `where` (the keys or flags that set the two lengths)."""
    if prompt + output > config.max_positions:
        raise InputError(f"{where}: found a prompt of {prompt:,} tokens and an output of {output:,} "
                         f"({prompt + output:,} in all), allowed: at most {config.name}'s context of "
                         f"{config.max_positions:,} tokens (max_position_embeddings)")


def balanced_expert_load(tokens: int, experts_per_token: int, num_experts: int) -> list[int]:
    """Tokens routed to each expert when routing is perfectly balanced.

    Routing depends on the data, and is undefined on fake tensors, so the MoE layer takes the expert
    load as an explicit model. Balanced load is what load-balancing losses aim for; the counts sum to
    tokens x experts_per_token.
    """
    base, extra = divmod(tokens * experts_per_token, num_experts)
    return [base + (1 if e < extra else 0) for e in range(num_experts)]


def uniform_touched(tokens: int, experts_per_token: int, num_experts: int) -> float:
    """Experts that get tokens, in expectation, when each token picks its experts_per_token distinct experts uniformly
    at random and independently of the other tokens: an expert is missed by one token with probability 1 - k/E, so by
    all of them with (1 - k/E)^tokens."""
    return num_experts * (1.0 - (1.0 - experts_per_token / num_experts) ** tokens)


def uniform_expert_load(tokens: int, experts_per_token: int, num_experts: int) -> list[int]:
    """Tokens routed to each expert under independent uniform routing: uniform_touched rounded to whole experts (a
    traced layer launches an expert's kernels for a whole number of experts, and each reads all its weights), the
    rows spread as evenly over those as balanced_expert_load spreads them. One token touches exactly its k experts;
    never more than balanced routing (uniform_touched <= tokens x k, Bernoulli's inequality, and <= E)."""
    rows = tokens * experts_per_token
    if rows == 0:
        return [0] * num_experts
    touched = max(int(uniform_touched(tokens, experts_per_token, num_experts) + 0.5), experts_per_token)
    return balanced_expert_load(rows, 1, touched) + [0] * (num_experts - touched)


# The routing models an MoE layer's expert load follows (ModelConfig.moe_routing), by name.
EXPERT_LOADS = {BALANCED: balanced_expert_load, UNIFORM: uniform_expert_load, POWER_LAW: power_law_expert_load}


def expert_load(routing: str, tokens: int, experts_per_token: int, num_experts: int) -> list[int]:
    """Tokens routed to each expert under the routing model `routing` (EXPERT_LOADS), in its fill order, whose every
    (E / held)-th expert from the first is the busiest device's share (kernels/moe.py expert_parallel_share): balanced
    and uniform fill the first experts, the power law lays its EP ranks' shares out; none of a model without
    experts."""
    if num_experts == 0:
        return []
    return EXPERT_LOADS[routing](tokens, experts_per_token, num_experts)


def experts_reached(tokens: int, experts_per_token: int, num_experts: int, routing: str = BALANCED) -> int:
    """The experts of the fill order through the last that gets tokens, those a layer builds: the experts that get
    tokens under balanced and uniform routing, which fill the first ones."""
    loads = expert_load(routing, tokens, experts_per_token, num_experts)
    return max((i + 1 for i, load in enumerate(loads) if load), default=0)
