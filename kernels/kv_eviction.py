"""KV eviction to a fixed budget by importance scores, and KV merging: what each method adds to a decode step and to
the prefill beyond attending to the budget's tokens (kernels/kv_policy.py caps the reads and the cache at the budget).

H2O (Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models", NeurIPS
2023): a sequence keeps its heavy hitters (the tokens with the largest attention probability accumulated over the
steps so far) and its most recent tokens, half of the budget each; every decode step adds the step's attention
probabilities to an accumulator per cached token and head and evicts the token with the smallest sum. The
probabilities must exist as a tensor, so attention runs unfused: FMInference/H2O h2o_flexgen/flexgen/pytorch_backend.py
(mha_gen) computes q.k with torch.bmm, writes the scores, runs softmax into fp16 probabilities, multiplies them
with V, then `acc.data = acc.data + attn_weights` and `_get_light_hitter` takes `acc.argmin`; the prefill (mha)
materializes the (b x heads, s, s) probability matrix and sums it over the queries (`_heavy_hitter_pruning`).
FlashAttention never writes that matrix (Dao-AILab/flash-attention issue #159: "FlashAttention aims to reduce memory
reads/writes, so it does not materialize the attention weights"), and H2O is not compatible with it
(FMInference/H2O issue #18, open). Per step, layer, query head and kept token that is (fp16, 2 bytes an element):
- unfused attention: the scores written (2 B), read and written by softmax (4 B), read by P.V (2 B): 8 B;
- accumulation: the probabilities read again (2 B); the accumulator read and written (4 B), one accumulator per KV
  head (grouped heads share a KV head's eviction);
- 1 FLOP: the add (the softmax's own work is the same fused or not);
and the accumulator is held, 2 B per kept token and KV head. A step that evicts (one whose cache outgrows the budget:
past it, every step evicts one token per sequence, layer and KV head; below it, none) also reads the accumulator
for the argmin (2 B per KV head) and compares (1 FLOP per query head). The new token's KV overwrites the evicted
slot: the same write as appending it. The prefill's attention writes the whole s x s probability matrix of every
query head (masked, as torch.bmm computes it: s^2 pairs, not the causal half), and reads it through softmax, P.V
and the column sum: 2 + 4 + 2 + 2 = 10 B per pair, with the masked half of q.k and P.V computed too.

D2O (Wan et al., "D2O: Dynamic Discriminative Operations for Efficient Generative Inference of Large Language
Models", arXiv 2406.13035, Section 3.3): H2O's eviction by accumulated attention, plus merging: each evicted token's
key is compared by cosine similarity with every kept key, and merged into the nearest one (a weighted average of
both keys and values) when the similarity passes an EMA threshold. The merge is of evicted tokens, so a step that
evicts nothing merges nothing; one that evicts pays, per layer and KV head, a similarity row: the kept keys read
again (half the KV bytes) and 2 x head_dim FLOPs per kept token for the dot product (a kept key's norm is computed
once, when it enters the cache; not counted); the merge itself touches two vectors (not counted). The prefill's
eviction of a prompt longer than the budget merges its evicted prompt tokens too (Section 3.3, at the prompt's
eviction as at a step's): one similarity GEMM per sequence and KV head, the evicted keys against the kept ones
(merged_prefill), priced as any GEMM. D2O's layer-level budget reallocation (by attention density) moves the budget
between layers and keeps the total; it is priced as the even budget.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from kernels.kernel import Kernel, KernelKind
from workloads.op_costs import causal_pairs

if TYPE_CHECKING:  # kernels/table.py imports the KV policies, which import this module
    from kernels.table import KernelTable

H2O = "h2o"
D2O = "d2o"
STREAMING = "streaming"  # kv_budget's own policy: sinks + a recent window, no scores (StreamingLLM)
METHODS = (STREAMING, H2O, D2O)

SCORE_B = 2  # fp16 scores, probabilities and accumulator (FMInference/H2O allocates `acc` as np.float16)
DECODE_SCORE_PASSES = 4  # per query head: scores written, softmax read + write, P.V read
ACCUMULATE_PASSES = 1  # per query head: the probabilities read into the accumulator
ACCUMULATOR_PASSES = 2  # per KV head: the accumulator read and written
ARGMIN_PASSES = 1  # per KV head, on a step that evicts: the accumulator read by argmin
SCORE_FLOPS = 1  # per query head and token: the accumulation's add
ARGMIN_FLOPS = 1  # per query head and token, on a step that evicts: the argmin's compare
PREFILL_SCORE_PASSES = 5  # per (query head, query, key): written, softmax read + write, P.V read, column sum read
SIMILARITY_B = 2  # an element of the similarity matrix the merge's GEMM writes, at the keys' 16 bits
SIMILARITY_OP = "d2o_similarity"


@dataclass(frozen=True)
class Eviction:
    """What a method adds to a decode step of the evicting heads, as multiples of attending to their kept tokens.

    `overhead_bytes` per KV byte kept and `overhead_flops` per attention FLOP of the kept tokens on every step (the
    scores); `evict_bytes` and `evict_flops` the same on a step that evicts (the argmin, D2O's merge); `held_share`
    per KV byte held; `prefill_score_B` bytes per (query head, query, key) pair the prefill's unfused attention
    moves (it computes every pair of the s x s matrix, the masked half too: scored_prefill).
    """

    method: str
    overhead_bytes: float
    overhead_flops: float
    evict_bytes: float
    evict_flops: float
    held_share: float
    prefill_score_B: float
    key_B: float = 2.0  # bytes of a cached key element (D2O's merge reads the keys: merged_prefill)

    def __post_init__(self) -> None:
        if self.method not in (H2O, D2O):
            raise ValueError(f"method: found {self.method!r}, allowed: {H2O}, {D2O}")


def eviction(method: str, *, heads: int, kv_heads: int, head_dim: int, kv_element_B: float) -> Eviction | None:
    """The eviction of `method` in a model of `heads` query heads over `kv_heads` KV heads of `head_dim`, its cache
    `kv_element_B` bytes an element; None for the streaming window (no scores).

    Per kept token and KV head the cache holds 2 x head_dim elements (key and value) and attention does
    4 x head_dim FLOPs per query head (q.k and p.v); the ratios below are per those.
    """
    if method == STREAMING:
        return None
    if method not in METHODS:
        raise ValueError(f"method: found {method!r}, allowed: {', '.join(METHODS)}")
    kv_B = 2.0 * head_dim * kv_element_B * kv_heads  # per kept token, every KV head
    attention_flops = 4.0 * head_dim * heads
    score_B = SCORE_B * ((DECODE_SCORE_PASSES + ACCUMULATE_PASSES) * heads + ACCUMULATOR_PASSES * kv_heads)
    evict_B = SCORE_B * ARGMIN_PASSES * kv_heads
    evict_flops = ARGMIN_FLOPS * heads
    if method == D2O:
        evict_B += head_dim * kv_element_B * kv_heads  # the kept keys read again for the similarity row
        evict_flops += 2.0 * head_dim * kv_heads  # one dot product per kept key and KV head
    return Eviction(method=method, overhead_bytes=score_B / kv_B, overhead_flops=SCORE_FLOPS * heads / attention_flops,
                    evict_bytes=evict_B / kv_B, evict_flops=evict_flops / attention_flops,
                    held_share=SCORE_B * kv_heads / kv_B, prefill_score_B=SCORE_B * PREFILL_SCORE_PASSES,
                    key_B=kv_element_B)


def scored_prefill(prefill: KernelTable, scored_share: float, score_B: float, window: int | None = None) -> KernelTable:
    """A prefill whose attention runs unfused for `scored_share` of its heads (an eviction's, which needs the
    probabilities): those heads compute every (query, key) pair of the s x s matrix (torch.bmm computes the masked
    half too) and move `score_B` bytes per pair through the materialized matrix; the other heads' FLOPs stay those
    of the causal pairs inside the model's sliding `window`, as the table counts them (kernels/lowering.py)."""
    rows = prefill.attention_mask & (prefill.q_len > 0)
    pairs = prefill.q_len * prefill.kv_len
    causal = np.where(rows, causal_pairs(prefill.q_len, prefill.kv_len, window), 1.0)
    flops = prefill.flops * (1.0 - scored_share + scored_share * pairs / causal)
    scores_B = scored_share * prefill.batch * prefill.heads * pairs * score_B
    return replace(prefill, flops=np.where(rows, flops, prefill.flops),
                   act_bytes=np.where(rows, prefill.act_bytes + scores_B, prefill.act_bytes))


def merged_prefill(prefill: KernelTable, budget: int, share: float, key_B: float) -> KernelTable:
    """A prefill with D2O's merge of the prompt tokens it evicts (merge_table) after each attention row whose keys
    outrun the `budget`, each row's sequences evicting all but `budget` of its keys."""
    rows = np.flatnonzero(prefill.attention_mask & (prefill.q_len > 0) & (prefill.kv_len > budget))
    if not share or not len(rows):
        return prefill
    from kernels.table import KernelTable  # kernels/table.py imports the KV policies, which import this module

    merges = KernelTable.concat([
        merge_table(prefill.select(np.array([i])), max(float(prefill.batch[i]), 1.0),
                    float(prefill.kv_len[i]) - budget, budget, share, key_B) for i in rows.tolist()])
    # Each merge right after the attention row whose eviction it follows.
    after = {row: len(prefill) + n for n, row in enumerate(rows.tolist())}
    order = [j for i in range(len(prefill)) for j in ((i, after[i]) if i in after else (i,))]
    return KernelTable.concat([prefill, merges]).select(np.array(order))


def merge_table(attention: KernelTable, seqs: float, evicted: float, budget: int, share: float,
                key_B: float) -> KernelTable:
    """D2O's merge of the prompt tokens a prefill evicts (Wan et al., Section 3.3: each evicted key's cosine
    similarity with every kept key, to merge it into the nearest), for `seqs` sequences of the one-row `attention`
    (its KV heads, head dim, dtype, layer and module) evicting `evicted` tokens each on average and keeping `budget`:
    a batched GEMM of the evicted keys, evicted x head_dim, against the kept keys, for each sequence and evicting KV
    head (`share` of them), which reads the keys once (`key_B` bytes an element, the cache's) and writes the
    similarity matrix. The keys' norms and the merge's weighted averages are vectors, not counted."""
    from kernels.table import KernelTable  # kernels/table.py imports the KV policies, which import this module

    head_dim = int(attention.head_dim[0])
    gemms = seqs * float(attention.kv_heads[0]) * share
    sizes = dict(flops=2.0 * evicted * budget * head_dim * gemms, weight_bytes=0.0,
                 kv_bytes=gemms * (evicted + budget) * head_dim * key_B,
                 act_bytes=gemms * evicted * budget * SIMILARITY_B, m=evicted, n=budget, k=head_dim, batch=gemms)
    kernel = attention.kernels[0]
    merge = Kernel(kind=KernelKind.GEMM, op=SIMILARITY_OP, dtype=kernel.dtype, tensor_core=True, layer=kernel.layer,
                   module=kernel.module, **sizes)
    return replace(KernelTable.from_kernels([merge]), numeric_format=attention.numeric_format,
                   sparsity=attention.sparsity)
