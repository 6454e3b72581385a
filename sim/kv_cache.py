"""PagedKVCache: a replica's KV cache as fixed-size blocks held by sequences (vLLM-style paging).

The simulator needs how many blocks each sequence holds, not which: a sequence of t cached tokens holds
ceil(t / block_tokens) blocks. With a shared prefix (a common system prompt of every request), the prefix's
whole blocks are cached before the run (a warm prefix cache) and held once for every sequence; each sequence
computes and holds only what lies past them.
"""

from __future__ import annotations

import math

from kernels.kv_policy import Window, kept_tokens


def shared_prefix_tokens(prefix_tokens: int, block_tokens: int) -> int:
    """The tokens of a shared prefix a paged cache shares: its whole blocks (the rest is each sequence's own)."""
    return prefix_tokens // block_tokens * block_tokens


class PagedKVCache:
    """Block accounting of one replica's KV cache."""

    def __init__(self, *, capacity_blocks: int, block_tokens: int, prefix_tokens: int = 0, window: Window = None):
        """`window`: a sliding-window model keeps the KV of its last `window` tokens only (a KVPolicy: its mix of
        retrieval and streaming heads, kernels/kv_policy.py)."""
        if block_tokens < 1:
            raise ValueError(f"block_tokens: found {block_tokens}, allowed: an integer >= 1")
        self.capacity_blocks = capacity_blocks
        self.block_tokens = block_tokens
        self.prefix_blocks = shared_prefix_tokens(prefix_tokens, block_tokens) // block_tokens
        if self.prefix_blocks > capacity_blocks:
            raise ValueError(f"prefix_tokens: found {prefix_tokens}, allowed: at most the cache's "
                             f"{capacity_blocks * block_tokens} tokens")
        self.window = window
        self._held: dict[int, int] = {}
        self.used_blocks = self.prefix_blocks

    @property
    def shared_tokens(self) -> int:
        """Tokens at the start of every sequence whose KV is already cached (the shared prefix)."""
        return self.prefix_blocks * self.block_tokens

    def cached_prefix(self, target: int) -> int:
        """Tokens of a sequence that must compute `target` tokens which the shared prefix already holds
        (it still computes at least its last token, from which it samples)."""
        return min(self.shared_tokens, target - 1)

    def own_tokens(self, tokens: int) -> int:
        """Tokens' worth of KV a sequence of `tokens` cached tokens holds apart from the shared prefix (under the
        window): what moves when its KV leaves or enters this cache, by a swap or a hand-over between pools."""
        return max(0, int(kept_tokens(tokens, self.window)) - self.shared_tokens)

    @property
    def free_blocks(self) -> int:
        return self.capacity_blocks - self.used_blocks

    def blocks_for(self, tokens: int) -> int:
        """Blocks a sequence of `tokens` cached tokens holds of its own (past the shared prefix)."""
        tokens = kept_tokens(tokens, self.window)
        return max(0, math.ceil(tokens / self.block_tokens) - self.prefix_blocks)

    def extra_blocks(self, seq: int, tokens: int) -> int:
        """Blocks sequence `seq` must add to hold `tokens` tokens."""
        return max(0, self.blocks_for(tokens) - self._held.get(seq, 0))

    def can_hold(self, seq: int, tokens: int, reserve_blocks: int = 0) -> bool:
        """Whether `seq` can grow to `tokens` tokens leaving `reserve_blocks` free."""
        return self.extra_blocks(seq, tokens) <= self.free_blocks - reserve_blocks

    def hold(self, seq: int, tokens: int) -> None:
        """Grow `seq`'s blocks to hold `tokens` tokens (the caller checked can_hold)."""
        extra = self.extra_blocks(seq, tokens)
        if extra > self.free_blocks:
            raise RuntimeError(f"KV cache: sequence {seq} needs {extra} more blocks, {self.free_blocks} free")
        self._held[seq] = self._held.get(seq, 0) + extra
        self.used_blocks += extra

    def release(self, seq: int) -> None:
        """Free every block `seq` holds of its own."""
        self.used_blocks -= self._held.pop(seq, 0)
