"""PagedKVCache: a replica's KV cache as fixed-size blocks held by sequences (vLLM-style paging), with a prefix cache.

The simulator needs how many blocks each sequence holds, not which: a sequence of t cached tokens holds
ceil(t / block_tokens) blocks.

Prefix caching (vLLM's automatic prefix caching, SGLang's RadixAttention): requests may start with one of
`prefix_groups` prefixes of `prefix_tokens` tokens (a system prompt, a shared document). A group's prefix is cached
as its whole blocks, held once for every sequence that shares it; a sequence admitted while its group's prefix is
cached computes and holds only what lies past it. A sequence whose group's prefix is not cached computes its whole
prompt, and once it has computed past the prefix its first blocks become the group's cached prefix (the KV a
finished block holds is shared by block hash; a prefix still being computed is not, as in vLLM v1). A cached prefix
no sequence shares stays cached until its blocks are needed: it is evicted then, least recently shared first (LRU).
The cache starts warm, as a server that has run for a while: every group's prefix cached, in group order, while
they fit.

Not modeled: prefixes of different lengths or sharing only part of each other (a radix tree's nested prefixes), a
group's duplicate copy computed while another sequence of the group computes the same prefix (it stays the
sequence's own, not deduplicated), and the hashing's host cost.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from kernels.kv_policy import Window, kept_tokens


def shared_prefix_tokens(prefix_tokens: int, block_tokens: int) -> int:
    """The tokens of a shared prefix a paged cache shares: its whole blocks (the rest is each sequence's own)."""
    return prefix_tokens // block_tokens * block_tokens


class PagedKVCache:
    """Block accounting of one replica's KV cache and its cached prefixes."""

    def __init__(self, *, capacity_blocks: int, block_tokens: int, prefix_tokens: int = 0, prefix_groups: int = 1,
                 window: Window = None, device_blocks: int | None = None):
        """`window`: a sliding-window model keeps the KV of its last `window` tokens only (a KVPolicy: its mix of
        retrieval and streaming heads, kernels/kv_policy.py); `device_blocks`: of the capacity, the blocks in the
        model's devices' memory, the rest on a hybrid pool's attention devices (sim/attention_pool.py; None: no such
        split)."""
        if block_tokens < 1:
            raise ValueError(f"block_tokens: found {block_tokens}, allowed: an integer >= 1")
        if prefix_groups < 1:
            raise ValueError(f"prefix_groups: found {prefix_groups}, allowed: an integer >= 1")
        self.capacity_blocks = capacity_blocks
        self.block_tokens = block_tokens
        self.prefix_blocks = shared_prefix_tokens(prefix_tokens, block_tokens) // block_tokens
        if self.prefix_blocks > capacity_blocks:
            raise ValueError(f"prefix_tokens: found {prefix_tokens}, allowed: at most the cache's "
                             f"{capacity_blocks * block_tokens} tokens")
        self.window = window
        if device_blocks is not None and not 0 <= device_blocks <= capacity_blocks:
            raise ValueError(f"device_blocks: found {device_blocks}, allowed: 0 to the cache's {capacity_blocks}")
        self.device_blocks = device_blocks
        self._held: dict[int, int] = {}  # a sequence's own blocks
        self._group: dict[int, int] = {}  # a sequence's prefix group (unassigned: group 0)
        self._sharing: dict[int, int] = {}  # a sequence that shares its group's cached prefix -> that group
        self._sharers: dict[int, int] = {}  # a cached group -> how many sequences share it
        self._idle: OrderedDict[int, None] = OrderedDict()  # cached groups nobody shares, least recently shared first
        self.used_blocks = 0
        self.prefix_hits = 0  # admissions that found their group's prefix cached
        self.prefix_misses = 0  # admissions that did not
        if self.prefix_blocks:
            for group in range(min(prefix_groups, capacity_blocks // self.prefix_blocks)):
                self._idle[group] = None
                self._sharers[group] = 0
                self.used_blocks += self.prefix_blocks

    @property
    def shared_tokens(self) -> int:
        """Tokens of a cached prefix: what a sequence sharing one need not compute nor hold."""
        return self.prefix_blocks * self.block_tokens

    def assign(self, seq: int, group: int) -> None:
        """Sequence `seq` starts with group `group`'s prefix."""
        self._group[seq] = group

    def is_cached(self, seq: int) -> bool:
        """Whether the prefix of `seq`'s group is cached (or `seq` shares it already)."""
        return seq in self._sharing or (self.prefix_blocks > 0 and self._group.get(seq, 0) in self._sharers)

    def cached_prefix(self, seq: int, target: int) -> int:
        """Tokens of sequence `seq`, which must compute `target` tokens, that its group's cached prefix holds now
        (it still computes at least its last token, from which it samples)."""
        return min(self.shared_tokens, target - 1) if self.is_cached(seq) else 0

    def own_tokens(self, seq: int, tokens: int) -> int:
        """Tokens' worth of KV sequence `seq` of `tokens` cached tokens holds apart from a cached prefix it shares
        (under the window): what moves when its KV leaves or enters this cache, by a swap or a hand-over between
        pools."""
        shared = self.shared_tokens if self._would_share(seq) else 0
        return max(0, int(kept_tokens(tokens, self.window)) - shared)

    @property
    def free_blocks(self) -> int:
        """Blocks holding nothing (cached prefixes nobody shares are not free, but evictable)."""
        return self.capacity_blocks - self.used_blocks

    @property
    def evictable_blocks(self) -> int:
        """Blocks of cached prefixes no sequence shares."""
        return len(self._idle) * self.prefix_blocks

    @property
    def in_use_blocks(self) -> int:
        """Blocks some sequence reads: its own, and the cached prefixes it shares (what an engine reports as used;
        an idle cached prefix counts as free there, as it is reclaimed on demand)."""
        return self.used_blocks - self.evictable_blocks

    def blocks_for(self, tokens: int, shared: bool = True) -> int:
        """Blocks a sequence of `tokens` cached tokens holds of its own: past a cached prefix it shares, or
        (`shared` False) all of them."""
        tokens = kept_tokens(tokens, self.window)
        return max(0, math.ceil(tokens / self.block_tokens) - (self.prefix_blocks if shared else 0))

    def _would_share(self, seq: int) -> bool:
        """Whether `seq` shares (or, holding nothing yet, would share on its first hold) its group's cached prefix."""
        if seq in self._sharing:
            return True
        return seq not in self._held and self.is_cached(seq)

    def _growth(self, seq: int, tokens: int) -> tuple[int, int]:
        """The blocks `seq` must add to hold `tokens` tokens, and the blocks it may take: the free ones and the cached
        prefixes nobody shares, less its own group's if its first hold would share it."""
        kept = tokens if self.window is None else kept_tokens(tokens, self.window)
        room = self.capacity_blocks - self.used_blocks + len(self._idle) * self.prefix_blocks
        held = self._held.get(seq)
        if held is not None:  # admitted: it shares its prefix already, or never will
            shared = self.prefix_blocks if seq in self._sharing else 0
            return max(0, math.ceil(kept / self.block_tokens) - shared - held), room
        shares = self._would_share(seq)
        if shares and seq not in self._sharing and self._group.get(seq, 0) in self._idle:
            room -= self.prefix_blocks  # its group's idle prefix is what it will share, not room
        return max(0, math.ceil(kept / self.block_tokens) - (self.prefix_blocks if shares else 0)), room

    def extra_blocks(self, seq: int, tokens: int) -> int:
        """Blocks sequence `seq` must add to hold `tokens` tokens."""
        return self._growth(seq, tokens)[0]

    def can_hold(self, seq: int, tokens: int, reserve_blocks: int = 0) -> bool:
        """Whether `seq` can grow to `tokens` tokens leaving `reserve_blocks` free (evicting idle prefixes)."""
        extra, room = self._growth(seq, tokens)
        return extra <= room - reserve_blocks

    def hold(self, seq: int, tokens: int) -> None:
        """Grow `seq`'s blocks to hold `tokens` tokens (the caller checked can_hold); its first hold shares its
        group's prefix where that is cached, and evicts idle prefixes (least recently shared first) for room."""
        extra, room = self._growth(seq, tokens)
        if extra > room:
            raise RuntimeError(f"KV cache: sequence {seq} needs {extra} more blocks, {self.free_blocks} free")
        if self.prefix_blocks and seq not in self._held and seq not in self._sharing:
            if self.is_cached(seq):
                self._share(seq, self._group.get(seq, 0))
                self.prefix_hits += 1
            else:
                self.prefix_misses += 1
        while extra > self.capacity_blocks - self.used_blocks:
            group, _ = self._idle.popitem(last=False)
            del self._sharers[group]
            self.used_blocks -= self.prefix_blocks
        self._held[seq] = self._held.get(seq, 0) + extra
        self.used_blocks += extra

    def publish(self, seq: int, computed: int) -> None:
        """Sequence `seq` has computed `computed` tokens: a prefix it computed itself becomes its group's cached
        prefix, shared by it, if the group has none cached."""
        group = self._group.get(seq, 0)
        if (not self.prefix_blocks or seq in self._sharing or group in self._sharers or computed < self.shared_tokens
                or self._held.get(seq, 0) < self.prefix_blocks):
            return
        self._held[seq] -= self.prefix_blocks
        self._sharers[group] = 0
        self._share(seq, group)

    def _share(self, seq: int, group: int) -> None:
        self._sharing[seq] = group
        self._sharers[group] += 1
        self._idle.pop(group, None)

    def release(self, seq: int, keep_prefix: bool = False) -> None:
        """Free every block `seq` holds of its own; it stops sharing its prefix unless `keep_prefix` (a swapped-out
        sequence, whose KV past the prefix waits in host memory, keeps its prefix cached)."""
        self.used_blocks -= self._held.pop(seq, 0)
        if keep_prefix or seq not in self._sharing:
            return
        group = self._sharing.pop(seq)
        self._sharers[group] -= 1
        if not self._sharers[group]:
            self._idle[group] = None

    def apart(self, order: list[int]) -> set[int]:
        """The sequences of `order` (the running ones, oldest first) whose blocks lie on a hybrid pool's attention
        devices: the model's devices hold the shared prefix, then each sequence's blocks whole, oldest first, as
        long as theirs hold them; every later sequence lies apart (none without device_blocks)."""
        if self.device_blocks is None:
            return set()
        used, apart = self.prefix_blocks, set()
        for seq in order:
            held = self._held.get(seq, 0)
            if apart or used + held > self.device_blocks:
                apart.add(seq)
            else:
                used += held
        return apart
