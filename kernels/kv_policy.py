"""KV policies: how many of a sequence's cached tokens decode attention reads and the KV cache holds.

Two policies keep a window of attention sinks plus recent tokens:
- StreamingLLM (Xiao et al., ICLR 2024): every head keeps the window. A model-wide window is a plain int (a
  model's own sliding window, or the kv_budget knob), and everything that takes a `window` accepts it.
- DuoAttention (Xiao et al., "DuoAttention: Efficient Long-Context LLM Inference with Retrieval and Streaming
  Heads", ICLR 2025) and RazorAttention (Tang et al., 2024): a share of the KV heads (retrieval heads) keeps every
  token while the others (streaming heads) keep the window. A KVPolicy carries both; what a decode step reads and
  what the cache holds is the mix, per token, of the two kinds of head (every head's KV is the same size).

A KVPolicy's windowed heads may choose what they keep by importance scores instead of recency (H2O's heavy hitters,
D2O's merging: kernels/kv_eviction.py): the same budget, plus the scoring's own traffic and work every step, and the
eviction's (the argmin, a merge) on every step that evicts.

A KVPolicy may also select tokens dynamically (Quest, Double Sparsity: kernels/token_select.py): the cache stays
whole (plus a key summary), and each decode step reads a share of it after scoring every token. Its `prefill` may
select too (SALE: kernels/block_sparse.py): the prefill's attention computes a local window plus a share of the other
pairs, after a 4-bit estimate of every pair (estimate_pairs); the cache and decode are unchanged.

kept_tokens(tokens, window) is the one place a window is applied to what the cache holds, fetched_tokens(tokens,
window) to what of it a decode step touches, and decode_reads(tokens, window) to what decode attention reads and
computes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kernels.block_sparse import PrefillSelection
from kernels.kv_eviction import Eviction
from kernels.token_select import TokenSelection
from workloads.op_costs import causal_pairs

# DuoAttention's streaming heads keep 64 attention sinks and 256 recent tokens (mit-han-lab/duo-attention,
# duo_attn/utils.py: --sink_size 64, --recent_size 256, the defaults of its training and efficiency runs).
DUO_SINK_TOKENS = 64
DUO_RECENT_TOKENS = 256
DUO_WINDOW_TOKENS = DUO_SINK_TOKENS + DUO_RECENT_TOKENS


@dataclass(frozen=True)
class KVPolicy:
    """Retrieval heads (a `full_heads` share of the KV heads) keep every token; streaming heads keep `window` (None:
    every token too); decode attention reads what `selection` picks of what each head keeps (None: all of it)."""

    window: int | None = None
    full_heads: float = 0.0
    limit: int | None = None  # what every head keeps at most: a model's own sliding window (None: no limit)
    selection: TokenSelection | None = None
    eviction: Eviction | None = None  # how the windowed heads choose their `window` tokens (None: sinks + recent)
    prefill: PrefillSelection | None = None  # the pairs the prefill's attention computes (None: every causal pair)

    def __post_init__(self) -> None:
        if self.window is not None and self.window < 1:
            raise ValueError(f"window: found {self.window}, allowed: an integer >= 1")
        if self.eviction is not None and self.window is None:
            raise ValueError("eviction: found without a window, allowed: an eviction to a budget (window >= 1)")
        if not 0.0 <= self.full_heads <= 1.0:
            raise ValueError(f"full_heads: found {self.full_heads}, allowed: a fraction from 0 to 1")

    @property
    def chooses_tokens(self) -> bool:
        """Whether decode reads tokens of the policy's own choosing (retrieval heads' windows, a selection, an
        eviction) rather than what a plain window keeps: a policy that only selects its prefill's pairs does not."""
        return bool(self.full_heads) or self.selection is not None or self.eviction is not None

    def tokens(self, tokens):
        """Tokens' worth of KV each head keeps, averaged over the heads, for a sequence of `tokens` cached tokens (a
        number or an array): what decode attends over before any selection."""
        full = np.minimum(tokens, self.limit) if self.limit else tokens
        if self.window is None:
            return full
        return self.full_heads * full + (1.0 - self.full_heads) * np.minimum(tokens, self.window)

    def evicting(self, tokens):
        """Tokens' worth of KV the evicting (windowed) heads keep, averaged over every head: what an eviction's
        scores cover (0 without an eviction)."""
        if self.eviction is None:
            return 0.0 * tokens
        return (1.0 - self.full_heads) * np.minimum(tokens, self.window)

    def held(self, tokens):
        """Tokens' worth of KV memory held: what the heads keep, plus a selection's key summary and an eviction's
        accumulated scores."""
        kept = self.tokens(tokens)
        held = kept * self.selection.held_scale if self.selection else kept
        if self.eviction is not None:
            held = held + self.evicting(tokens) * self.eviction.held_share
        return held

    def fetched(self, tokens):
        """Tokens' worth of the KV memory held that a decode step touches: all of it, except that a selection reads
        only its key summary and the tokens it picks of what the heads keep."""
        held = self.held(tokens)
        if self.selection is None:
            return held
        kept = self.tokens(tokens)
        return held - kept * (self.selection.held_scale - self.selection.cache_scale)

    def reads(self, tokens):
        """(bytes, FLOPs) of a decode step's attention, in tokens' worth of attending to every kept token."""
        kept = self.tokens(tokens)
        if self.selection is None:
            moved, work = kept, kept
        else:
            moved, work = kept * self.selection.bytes_scale, kept * self.selection.flops_scale
        if self.eviction is not None:
            # Scores every step; the argmin and a merge only where the cache outgrows the budget and a token leaves.
            evicting, evicts = self.evicting(tokens), np.greater(tokens, self.window)
            moved = moved + evicting * (self.eviction.overhead_bytes + evicts * self.eviction.evict_bytes)
            work = work + evicting * (self.eviction.overhead_flops + evicts * self.eviction.evict_flops)
        return moved, work

    def prefill_attention_share(self, prompt: int) -> float:
        """The share of a causal prefill's (query, key) pairs that are computed when streaming heads attend to their
        window only (DuoAttention applies its streaming heads in the prefill too; a selection does not apply to the
        prefill: Quest and Double Sparsity run it dense; an eviction attends to the whole prompt to score it, then
        keeps its budget; without retrieval heads every head keeps a StreamingLLM budget, whose prefill attends to the
        whole prompt as a plain kv_budget's does; a prefill selection computes its share of them). A share of the pairs
        inside the model's own window (`limit`), which the prefill's kernels compute already (kernels/lowering.py)."""
        return prefill_pairs(prompt, prompt, self, self.limit) / causal_pairs(prompt, prompt, self.limit)


Window = int | KVPolicy | None  # what every `window` parameter takes: none, a model-wide window, or a KVPolicy


def prefill_pairs(queries, keys, window: Window, limit: int | None = None):
    """The (query, key) pairs a causal prefill chunk of `queries` new tokens over `keys` keys (its cached prefix
    included) computes, each query attending to at most `limit` keys (the model's own sliding window): DuoAttention's
    streaming heads (a KVPolicy with retrieval heads) attend to their window only; every other window leaves the
    prefill whole (a StreamingLLM budget, an eviction that scores the whole prompt, a selection that runs it dense).
    A KVPolicy's prefill selection (SALE) computes its share of each head's pairs (PrefillSelection.pairs)."""
    selection = window.prefill if isinstance(window, KVPolicy) else None

    def pairs(seen: int | None):  # each query attending to at most `seen` keys
        return causal_pairs(queries, keys, seen) if selection is None else selection.pairs(queries, keys, seen)

    full = pairs(limit)
    if (not isinstance(window, KVPolicy) or window.window is None or window.eviction is not None
            or not window.full_heads):
        return full
    streaming = pairs(window.window if limit is None else min(window.window, limit))
    return window.full_heads * full + (1.0 - window.full_heads) * streaming


def estimate_pairs(queries, keys, window: Window, limit: int | None = None):
    """The (query, key) pairs per query head a prefill selection's estimate scores (every pair its heads would compute
    without it: prefill_pairs of the policy without the selection), or 0 where the prefill does not select (no
    selection, or a chunk short enough to run dense: PrefillSelection.selects)."""
    if not isinstance(window, KVPolicy) or window.prefill is None:
        return 0
    return np.where(window.prefill.selects(queries), prefill_pairs(queries, keys, replace(window, prefill=None), limit),
                    0)


def kept_tokens(tokens, window: Window):
    """Tokens' worth of KV memory a sequence of `tokens` cached tokens holds under `window`."""
    if window is None or (not isinstance(window, KVPolicy) and not window):
        return tokens
    if isinstance(window, KVPolicy):
        return window.held(tokens)
    return np.minimum(tokens, window)


def fetched_tokens(tokens, window: Window):
    """Tokens' worth of the KV memory a sequence of `tokens` cached tokens holds under `window` that a decode step
    touches: what an offloaded cache streams to the device each step (kept_tokens unless a KV policy selects)."""
    if isinstance(window, KVPolicy):
        return window.fetched(tokens)
    return kept_tokens(tokens, window)


def decode_reads(tokens, window: Window):
    """(bytes, FLOPs) of a decode step's attention for a sequence of `tokens` cached tokens under `window`, each in
    tokens' worth of attending to that many tokens: equal, and the tokens kept, unless a KV policy selects."""
    if isinstance(window, KVPolicy):
        return window.reads(tokens)
    kept = kept_tokens(tokens, window)
    return kept, kept


def flops_per_read(window: Window) -> float:
    """A decode step's attention FLOPs per FLOP of attending to the keys' worth of bytes it reads (decode_reads): 1
    unless a KV policy selects or evicts tokens, whose scoring costs a different share of FLOPs than of bytes. With
    an eviction it is the ratio one token past the window, where every step evicts; a step's shape counts its
    sequences' FLOPs each at its own length (kernels/shapes.py step_shape), where this is not 1."""
    if not isinstance(window, KVPolicy) or (window.selection is None and window.eviction is None):
        return 1.0
    if window.eviction is None:
        return window.selection.flops_scale / window.selection.bytes_scale
    moved, work = window.reads(float(window.window + 1))
    return float(work / moved)


def budget_error(budget: int, context_tokens: int, what: str) -> str:
    """Why a KV budget of `budget` tokens cannot apply to sequences of at most `context_tokens` tokens (`what` names
    that limit), or '' when it can: a budget above every token a sequence caches keeps them all, which is no budget
    (0 says that)."""
    if budget > context_tokens:
        return (f"found a budget of {budget:,} tokens, allowed: at most {what} of {context_tokens:,} tokens "
                f"(0 keeps every token)")
    return ""
