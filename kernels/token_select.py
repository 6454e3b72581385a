"""Dynamic top-k token selection: each decode step scores every cached token from a compressed key summary and
attends to the highest-scoring share of them only; the whole cache stays in memory.

Four methods, priced per layer as three kernels folded into the decode-attention row (its bytes and FLOPs):
- the scoring kernel reads the summary of every cached token and computes a score per page or token and query head;
- a top-k over those scores (written once by the scoring kernel, then read by each radix-select pass);
- sparse attention over the selected tokens (their keys and values, and the attention FLOPs of that many keys).

Quest (Tang et al., "Quest: Query-Aware Sparsity for Efficient Long-Context LLM Inference", ICML 2024): the cache
is paged (16 tokens a page); each page keeps the element-wise min and max of its keys (two key vectors, at the
cache's element width: mit-han-lab/Quest quest/utils/controller.py keeps this metadata in a second KV cache of the
same dtype, one entry per page). A page's score is sum_i max(q_i min_i, q_i max_i): two products, a max and an add
per channel and page. Quest leaves the first two layers dense (mit-han-lab/Quest evaluation/quest_attention.py:
`if q_len > 1 or self.layer_id < 2: return self.flash_forward(...)`), where its per-layer sparsity is low.

Double Sparsity (Yang et al., "Post-Training Sparse Attention with Double Sparsity", arXiv 2408.07092): a label
cache keeps r of the head_dim key channels of every token (offline-calibrated outlier channels); a token's score
is the r-channel dot product of query and label. andy-yang-1/DoubleSparse models/model.py keeps the labels in the
cache's dtype (k_label beside k_cache) and runs sparse_forward in every layer. Labels here default to 1/8 of the
channels (16 of 128): not a published default but a value between the paper's 1/16 (8 of 128; the `label_share`
argument) and SGLang's integration default of 32 of 128 (server args `ds_heavy_channel_num=32`).

TidalDecode (Yang et al., "TidalDecode: Fast and Accurate LLM Decoding with Position Persistent Sparse Attention",
ICLR 2025): no key summary. DerrickYLJ/TidalDecode tidal/models/llama.py builds a 32-layer Llama as two full-attention
layers (0 and 1), two token selection layers (2 and 12) that attend to the whole cache and take a top-k of their
attention scores, and sparse layers that all attend to the tokens the last selection layer chose. The four dense
layers read the whole cache; the top-k of the two selection layers (scores written, then read by each radix pass) is
spread over the sparse layers, which read the selected share only.

TokenSelect (Wu et al., "TokenSelect: Efficient Long-Context Inference and Length Extrapolation for LLMs via Dynamic
Token-Level KV Cache Selection", arXiv 2411.02886): no summary either; every layer scores each cached token with its
own key. pzs19/TokenSelect patcher/token_retrieval.py: paged_matmul_kernel dots each query head with the key of its KV
head (the layer's key buffer, read whole: half the cache), get_topk_tokens soft-votes (a softmax of each head's
scores, summed over the heads) and takes one top-k over the voted score per token. Its Selection Cache lets a decode
step whose query is similar to the last selecting one (cosine >= 0.9) reuse that selection, skipping scoring and
top-k: `reuse` is the share of steps that do (the paper's hit rate is not read here; the released code ships the
cache off, QUERY_CACHE = False). `reuse` applies to every method's scoring and top-k the same way.

The selected share is a fraction of the cached tokens (not a token count): both papers state sparsity as a share
(Double Sparsity's 1/16), a share is valid at every context a sweep sets, and the reads stay proportional to the
context, so a serving iteration's summed KV lengths price it exactly. A fixed budget B at context L is B / L.
"""

from __future__ import annotations

from dataclasses import dataclass

QUEST = "quest"
DOUBLE_SPARSITY = "double_sparsity"
TIDAL_DECODE = "tidal_decode"
TOKEN_SELECT = "token_select"
METHODS = (QUEST, DOUBLE_SPARSITY, TIDAL_DECODE, TOKEN_SELECT)

QUEST_PAGE_TOKENS = 16  # Quest's page size (mit-han-lab/Quest scripts/longbench.sh: --chunk_size 16)
QUEST_DENSE_LAYERS = 2  # layers Quest leaves dense (evaluation/quest_attention.py, layer_id < 2)
QUEST_OPS_PER_CHANNEL = 4  # per page and channel: q*min, q*max, their max, the running sum
TIDAL_FULL_LAYERS = 2  # layers 0 and 1 attend to the whole cache (tidal/models/llama.py: FullAttention)
TIDAL_SELECTION_LAYERS = 2  # layers 2 and 12 attend to the whole cache and select (SearchAttention)
DS_LABEL_SHARE = 1 / 8  # label channels per head_dim channel (16 of 128): between the paper's 1/16 and SGLang's 1/4
# Top-k over the scores: the scoring kernel writes each score once (16-bit, the activations' dtype in both
# implementations), and a radix select reads it once per pass: 8-bit digits over 16-bit keys take 2 passes
# (llama.cpp's CUDA top_k_radix_cuda uses RADIX_BITS = 8); each pass does one histogram update per score.
SCORE_BYTES = 2
TOPK_PASSES = 2
# TokenSelect's per-head scores (bf16, one per token and query head) are written by the dot-product kernel, then read
# and written by the softmax and read by the sum over heads (patcher/token_retrieval.py get_topk_tokens); the voted
# score (one per token) goes through the top-k as every method's does.
TOKEN_SELECT_HEAD_SCORE_PASSES = 4


@dataclass(frozen=True)
class TokenSelection:
    """A decode step's selection, as multiples of what attention over every cached token reads and computes.

    `share` of the cached tokens is attended to in the `1 - dense_share` of the layers that select; the scoring
    and top-k add `overhead_bytes` (summary and score traffic per KV byte of the cache) and `overhead_flops`
    (scoring and top-k work per attention FLOP of the cache); a step reads `summary_share` of summary per KV byte,
    and the summary held adds `summary_held` per KV byte (None: summary_share; 0 where the summary is the cache's own
    keys, or more than what a step reads where steps reuse an earlier selection).
    """

    method: str
    share: float
    overhead_bytes: float
    overhead_flops: float
    summary_share: float
    dense_share: float = 0.0
    summary_held: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: found {self.method!r}, allowed: {', '.join(METHODS)}")
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"share: found {self.share}, allowed: a fraction in (0, 1]")

    @property
    def bytes_scale(self) -> float:
        """Bytes a decode step's attention moves, per byte of the cached KV it attends over."""
        return self.dense_share + (1.0 - self.dense_share) * (self.share + self.overhead_bytes)

    @property
    def flops_scale(self) -> float:
        """Attention FLOPs of a decode step, per FLOP of attending to every cached token."""
        return self.dense_share + (1.0 - self.dense_share) * (self.share + self.overhead_flops)

    @property
    def cache_scale(self) -> float:
        """Bytes of the cache and its key summary a decode step reads, per byte of the cache: every dense layer's
        cache, and the summary and the selected share of the others (the top-k's scores are not cache)."""
        return self.dense_share + (1.0 - self.dense_share) * (self.share + self.summary_share)

    @property
    def held_scale(self) -> float:
        """KV memory held per byte of the cache: the cache whole, plus the key summary of every layer (both
        implementations keep it in every layer, the dense ones too)."""
        return 1.0 + (self.summary_share if self.summary_held is None else self.summary_held)


def token_selection(method: str, share: float, *, layers: int, heads: int, kv_heads: int, head_dim: int,
                    kv_element_B: float, label_share: float = DS_LABEL_SHARE,
                    label_element_B: float | None = None, reuse: float = 0.0) -> TokenSelection:
    """The selection of `method` reading `share` of the cached tokens in a model of `layers` decoder layers and
    `heads` query heads over `kv_heads` KV heads of `head_dim`, its cache `kv_element_B` bytes an element.

    Per cached token and KV head the cache holds 2 x head_dim elements (key and value), and attention does
    4 x head_dim FLOPs per query head (q.k and p.v); the ratios below are per those. Double Sparsity keeps
    `label_share` of the channels as labels, `label_element_B` bytes each (default: the cache's element). A `reuse`
    share of the steps attends to the previous step's selection, reading no summary and scoring nothing.
    """
    if not 0.0 <= reuse < 1.0:
        raise ValueError(f"reuse: found {reuse}, allowed: a fraction in [0, 1)")
    kv_B_per_token = 2.0 * head_dim * kv_element_B * kv_heads
    held = None
    head_score_passes = 0
    if method == QUEST:
        summary = 1.0 / QUEST_PAGE_TOKENS  # two key vectors a page of 16 tokens: 2 d / 16 per 2 d
        scores_per_token = 1.0 / QUEST_PAGE_TOKENS  # one per page and query head
        scoring_flops = QUEST_OPS_PER_CHANNEL * head_dim / QUEST_PAGE_TOKENS / (4.0 * head_dim)
        dense = min(QUEST_DENSE_LAYERS, layers) / layers
    elif method == DOUBLE_SPARSITY:
        if not 0.0 < label_share <= 1.0:
            raise ValueError(f"label_share: found {label_share}, allowed: a fraction in (0, 1]")
        label_channels = max(1.0, round(label_share * head_dim))
        label_B = kv_element_B if label_element_B is None else label_element_B
        summary = label_channels * label_B / (2.0 * head_dim * kv_element_B)  # r key channels per 2 d elements
        scores_per_token = 1.0  # one per token and query head
        scoring_flops = 2.0 * label_channels / (4.0 * head_dim)  # an r-channel dot product
        dense = 0.0
    elif method == TIDAL_DECODE:
        dense_layers = min(TIDAL_FULL_LAYERS + TIDAL_SELECTION_LAYERS, layers)
        sparse_layers = layers - dense_layers
        summary = 0.0  # no summary: the selection layers score with their own full attention
        # their scores (one per token and query head) go through a top-k, charged to the sparse layers that use
        # its choice
        scores_per_token = TIDAL_SELECTION_LAYERS / sparse_layers if sparse_layers else 0.0
        scoring_flops = 0.0
        dense = dense_layers / layers
    elif method == TOKEN_SELECT:
        summary, held = 0.5, 0.0  # the keys of every cached token, the cache's own
        scores_per_token = 1.0 / heads  # one voted score per token goes through the top-k
        head_score_passes = TOKEN_SELECT_HEAD_SCORE_PASSES
        scoring_flops = 2.0 * head_dim / (4.0 * head_dim)  # a head_dim dot product per token and query head
        dense = 0.0
    else:
        raise ValueError(f"method: found {method!r}, allowed: {', '.join(METHODS)}")
    scores = scores_per_token * heads  # per cached token, over the query heads
    topk_bytes = (scores * (1 + TOPK_PASSES) + heads * head_score_passes) * SCORE_BYTES / kv_B_per_token
    topk_flops = scores * TOPK_PASSES / (4.0 * head_dim * heads)
    scoring = 1.0 - reuse  # the share of steps that score
    if held is None and reuse:
        held = summary
    return TokenSelection(method=method, share=share, overhead_bytes=scoring * (summary + topk_bytes),
                          overhead_flops=scoring * (scoring_flops + topk_flops), summary_share=scoring * summary,
                          dense_share=dense, summary_held=held)

