"""PagedKVCache: a replica's KV cache as fixed-size blocks held by sequences (vLLM-style paging), with a prefix cache.

The simulator needs how many blocks each sequence holds, not which: a sequence of t cached tokens holds
ceil(t / block_tokens) blocks.

Prefix caching (vLLM's automatic prefix caching, SGLang's RadixAttention): each request belongs to a group whose
requests start alike, and may share the first whole blocks of its prompt with them (its shareable tokens: a group's
system prompt or document of `prefix_tokens`, or in a conversation the turns before it). Each group's cached prefix
is a chain of whole blocks held once for every sequence that shares it. A sequence admitted while its group's chain
is cached shares as much of it as its own shareable tokens reach, and computes and holds only the rest; one whose
group has none cached computes its whole prompt. Once a sequence has computed past the group's chain within its
shareable tokens (or the tokens of its prompt the group's next request shares, as a document's first question's
document), the blocks it computed there extend the chain (the KV a finished block holds is shared by block
hash; a prefix still being computed is not, as in vLLM v1). A finishing sequence whose context the group's next
request continues (a conversation's next turn) leaves its whole blocks on the chain. A chain no sequence shares
stays cached until its blocks are needed: then the least recently shared chain gives up blocks, its last first (vLLM
frees cached blocks least recently used first, a chain's tail before its head). The cache starts warm, as a server
that has run for a while: every group's `prefix_tokens` prefix cached, in group order, while they fit.

With roots (`root`: a system prompt every conversation starts with, or one of `prefix_groups` of them each
conversation draws) the chains branch once: every group's chain starts with its root's blocks, held once for all
the groups behind it, and a group's own blocks follow them. A sequence finds its group's blocks only behind the whole
root (a block is found by the hash of everything before it), and a root gives up blocks only once no group's blocks
follow it (a radix tree evicts its leaves first, as SGLang's does).

A prefix tree (`assign_path`: requests of a trace whose blocks are named by hash, Mooncake's `hash_ids`) branches
anywhere: a sequence's path is a list of nodes, each a stretch of its prompt ending at a given token, and two
sequences share a node wherever their prompts agree up to its end. A cache block belongs to the node holding its last
token. A sequence finds a node's blocks only behind every earlier node of its path whole, extends its path's nodes
with the blocks it computes, and a node gives up blocks, from its tail, only once no cached node follows it. Groups
and the root are the same mechanism: a group's chain is a path of one open-ended node, behind the root's where
there is one.

Beside them, host memory (`host_blocks`) keeps the blocks the device evicts, and a store the pool's replicas share
(sim/kv_store.py) the blocks any of them computes: a walk takes, node by node, the most of the device's, then the host
memory's blocks, and the store's, and a sequence's first hold moves what it finds off the device onto it.

A sequence preempted by recompute where the engine caches prefixes (`release_preempted`; vLLM v1, whose prefix caching
is on by default) leaves the whole blocks of what it computed cached: those of its path it shared stay on their nodes,
and its own become an idle node behind them (only its own re-admission finds it: no other request shares a request's
generated tokens), evicted tail first under the rule above, after the idle nodes before it and before its path's nodes
(vLLM v1's KVCacheManager.free hands a request's blocks to BlockPool.free_blocks in reverse order, "so that the tail
blocks are evicted first", at the free queue's end, which allocation takes from the front; get_computed_blocks then
finds the whole blocks still cached, at most num_tokens - 1 tokens: vllm/v1/core/kv_cache_manager.py, commit 003df296
of vllm-project/vllm). Re-admitted, it takes the blocks it finds back as its own. A window keeps no whole context, so
a windowed sequence's own blocks are freed; beside hybrid groups the full group keeps it, and the node the sliding
blocks its window held (freed before the full ones, as vLLM frees the sliding group first).

Beside vLLM's hybrid KV cache groups (`groups`: a full group and a sliding one, sim/hybrid_kv.py) a node's blocks
are its full group's, counted as above, and its sliding group's apart, a set of the node's blocks with holes: each
held by the sequences whose window reads it, else waiting in the order it was freed (a sequence's window leaving it,
or the sequence finishing) among the idle nodes, evicted in that order. A sequence finds a path's full blocks as
above and, within them, the sliding group's hit (sim/hybrid_kv.py sliding_hit_blocks); it holds, of the sliding
blocks it shares, those of its window, and the sliding blocks it computes of its shareable tokens join the nodes
where a node's full blocks cover them (filling a node's holes where it recomputes past a hit cut short; a sliding
block a node caches already is shared instead, the sequence's copy freed, where vLLM would hold both).

Not modeled: a group's duplicate blocks computed while another sequence of the group computes the same prefix (they
stay the sequence's own, not deduplicated), blocks of generated tokens in a prefix tree (a trace names its prompts'
blocks only), and the hashing's host cost.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from kernels.kv_policy import Window, kept_tokens
from sim.hybrid_kv import KVGroups, sliding_hit_blocks, window_start_block
from sim.kv_store import KVStore, take_from_tails

ROOT = -1  # the key of the root (system prompt) 0; root r > 0 is keyed ("root", r)
OPEN = sys.maxsize  # the span of a group's chain: it grows as far as its sequences share
# A path: the nodes a sequence's prompt passes through, each with the whole blocks of the prompt it holds.
Path = tuple[tuple[Hashable, int], ...]


def root_key(root: int) -> Hashable:
    """The cache's key of root `root` (>= 0): apart from every group's and tree node's key."""
    return ROOT if root == 0 else ("root", root)


def tree_path(nodes: Iterable[tuple[int, int]], block_tokens: int) -> Path:
    """A prefix tree's path from its `nodes` (node id >= 0, the token its stretch of the prompt ends at), each node
    keyed below ROOT (apart from every group's key) with its whole blocks: a block belongs to the node holding its last
    token, and a node holding none is left out."""
    path, before = [], 0
    for node, end_tokens in nodes:
        blocks = end_tokens // block_tokens
        if blocks > before:
            path.append((-2 - node, blocks - before))
            before = blocks
    return tuple(path)


def shared_prefix_tokens(prefix_tokens: int, block_tokens: int) -> int:
    """The tokens of a shared prefix a paged cache shares: its whole blocks (the rest is each sequence's own)."""
    return prefix_tokens // block_tokens * block_tokens


@dataclass(frozen=True)
class SlidingBlock:
    """A node's sliding-group block `block` (from the node's first) waiting to be evicted: a key of the idle queue."""

    node: Hashable
    block: int


class PagedKVCache:
    """Block accounting of one replica's KV cache and its cached prefixes."""

    def __init__(self, *, capacity_blocks: int, block_tokens: int, prefix_tokens: int = 0, prefix_groups: int = 1,
                 window: Window = None, device_blocks: int | None = None, root: bool = False,
                 host_blocks: int = 0, store: KVStore | None = None, groups: KVGroups | None = None,
                 drops_last_hit: bool = False):
        """`prefix_tokens`: what a request shares with its group unless assigned otherwise (`assign`), and the prefix
        of each of the `prefix_groups` groups cached at the start, or with `root` the `prefix_groups` roots the groups'
        chains start with (a group's, its sequences' `assign` names), each held once and cached at the start while
        they fit; `window`: a sliding-window model keeps the KV of its last `window` tokens only (a KVPolicy: its mix of
        retrieval and streaming heads, kernels/kv_policy.py);
        `device_blocks`: of the capacity, the blocks in the model's devices' memory, the rest on a hybrid pool's
        attention devices (sim/attention_pool.py; None: no such split); `host_blocks`: a tier of host memory that
        keeps blocks the device evicts, loaded back when a sequence finds them (0: evicted blocks are gone); `store`:
        the KV store the pool's replicas share (sim/kv_store.py), which keeps the blocks they compute and lends them
        to a sequence that finds them there and not here (None: none); `groups`: vLLM's hybrid KV cache groups of a
        model whose attention windows differ by layer (sim/hybrid_kv.py), a block then one group's, a sequence holding
        blocks in every group (prefixes shared beside one full and one sliding group only; no other window, no host
        tier or store); `drops_last_hit`: a sequence recomputes the last block of the prefix it finds cached, as
        vLLM v1 does where its draft reads the target's hidden states (cached_prefix)."""
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
        self.drops_last_hit = drops_last_hit
        if groups is not None and (window is not None or host_blocks or store is not None
                                   or (prefix_tokens and groups.sliding_window is None)):
            raise ValueError(f"groups: found hybrid KV cache groups of windows {groups.windows} with window {window}, "
                             f"host_blocks {host_blocks}, a store {store is not None} and prefix_tokens "
                             f"{prefix_tokens}, allowed: no window, host tier or store, and a shared prefix beside "
                             f"one full and one sliding group only")
        self.groups = groups
        self._tokens: dict[int, int] = {}  # of hybrid groups: a sequence's tokens computed at its next allocation
        # Of a full and a sliding group (the prefix-caching layout): the sliding window, else None.
        self._sliding = None if groups is None else groups.sliding_window
        self._slides: dict[Hashable, set[int]] = {}  # a node -> its cached sliding blocks (from the node's first)
        self._slide_refs: dict[SlidingBlock, int] = {}  # a node's sliding block -> the sequences holding it (> 0)
        self._low: dict[int, int] = {}  # a sequence -> the first block of its path its sliding window holds
        self._slid: dict[int, int] = {}  # a sequence -> its path's first blocks whose sliding blocks lie on nodes
        if host_blocks < 0:
            raise ValueError(f"host_blocks: found {host_blocks}, allowed: an integer >= 0")
        self.host_capacity_blocks = host_blocks
        self.store = store
        if device_blocks is not None and not 0 <= device_blocks <= capacity_blocks:
            raise ValueError(f"device_blocks: found {device_blocks}, allowed: 0 to the cache's {capacity_blocks}")
        self.device_blocks = device_blocks
        self._on_device: dict[int, int] = {}  # a sequence placed on the model's devices -> the blocks it reserves
        self._device_reserved = self.prefix_blocks  # the shared prefix lies on the model's devices
        self._apart: set[int] = set()  # sequences placed on the attention devices
        self._held: dict[int, int] = {}  # a sequence's own blocks
        self._group: dict[int, int] = {}  # a sequence's group (unassigned: group 0)
        self._shareable: dict[int, int] = {}  # whole blocks a sequence may share (unassigned: prefix_blocks)
        self._continues: set[int] = set()  # sequences whose context their group's next request continues
        self._leaves: dict[int, int] = {}  # whole blocks of a sequence's prompt its group's next request shares
        self._shared: dict[int, int] = {}  # a sharing sequence -> the blocks of its group's chain it shares
        self._whole: dict[int, int] = {}  # a sequence sharing the whole prefix -> its prefix's group (prefix_sharers)
        # The root's blocks every group's chain starts with (0: none, each group's chain its own from its start).
        self.root_blocks = self.prefix_blocks if root else 0
        self._path: dict[int, Path] = {}  # a sequence of a prefix tree -> its path (assign_path)
        self._root: dict[int, int] = {}  # a sequence -> the root its group's chain starts with (unassigned: 0)
        # A cached node (blocks on the device or in host memory) -> its blocks on the device, the node's first ones (a
        # group's: behind the root, its own after it); the rest follow them in host memory (_host).
        self._chain: dict[Hashable, int] = {}
        self._parent: dict[Hashable, Hashable | None] = {}  # a cached node -> the node before it
        self._kids: dict[Hashable, int] = {}  # a cached node -> how many nodes with blocks on the device follow it
        self._present_kids: dict[Hashable, int] = {}  # a cached node -> how many cached nodes follow it
        # A node -> its blocks in host memory, least recently used first.
        self._host: OrderedDict[Hashable, int] = OrderedDict()
        self._host_used = 0
        self._loaded_blocks = 0  # blocks loaded from host memory since take_loaded_tokens
        self._fetched_blocks = 0  # blocks fetched from the store since take_fetched_tokens
        self._sharers: dict[Hashable, int] = {}  # a cached node -> how many sequences share it
        self._idle: OrderedDict[Hashable, None] = OrderedDict()  # nodes nobody shares, least recently shared first
        self._idle_blocks = 0
        self._swapped_out: set[int] = set()  # released with keep_prefix, not sharing: their next hold is no admission
        # A sequence preempted by recompute (release_preempted) -> the path it resumes on: the blocks of its path it
        # shared, then the node of its own whole blocks.
        self._resume: dict[int, Path] = {}
        self.used_blocks = 0
        # Of first admissions' shareable prefixes, the blocks sought and the blocks found cached (a recompute's are not
        # counted: vLLM v1 keeps a preempted request's apart, PrefixCacheStats.preempted_*, vllm/v1/metrics/stats.py).
        self.prefix_sought_blocks = 0
        self.prefix_found_blocks = 0
        self.prefix_host_blocks = 0  # blocks loaded from host memory (every admission's)
        self.prefix_store_blocks = 0  # blocks fetched from the store (every admission's)
        self._counted: set[int] = set()  # sequences whose first admission is counted
        self._first_target: dict[int, int] = {}  # sequences not yet counted -> the tokens cached_prefix last capped at
        if self.root_blocks:
            for root in range(min(prefix_groups, capacity_blocks // self._warm_blocks(self.root_blocks))):
                self._cache(root_key(root), self.root_blocks)
        elif self.prefix_blocks:
            for group in range(min(prefix_groups, capacity_blocks // self._warm_blocks(self.prefix_blocks))):
                self._cache(group, self.prefix_blocks)

    @property
    def shared_tokens(self) -> int:
        """Tokens of the configured prefix's whole blocks (`prefix_tokens`): what a group's cached prefix spares a
        sequence that shares it, where no sequence is assigned more."""
        return self.prefix_blocks * self.block_tokens

    def assign(self, seq: int, group: int, shareable_tokens: int | None = None, continues: bool = False,
               leaves_tokens: int = 0, root: int = 0) -> None:
        """Sequence `seq` belongs to group `group` and may share the whole blocks of its first `shareable_tokens`
        tokens with it (None: prefix_tokens); `continues`: the group's next request continues its whole context;
        `leaves_tokens`: the tokens of its prompt the group's next request shares, whose whole blocks extend the
        group's chain as it computes them, beyond its shareable ones; `root`: the root the group's chain starts
        with, where there are roots."""
        self._group[seq] = group
        if root:
            self._root[seq] = root
        if shareable_tokens is not None:
            self._shareable[seq] = shareable_tokens // self.block_tokens
        if leaves_tokens:
            self._leaves[seq] = leaves_tokens // self.block_tokens
        if continues:
            self._continues.add(seq)

    def assign_path(self, seq: int, nodes: Iterable[tuple[int, int]]) -> None:
        """Sequence `seq` is a request of a prefix tree: its prompt passes through `nodes`, each a (node id >= 0, token
        its stretch of the prompt ends at) in prompt order; it may share the whole blocks of all of them."""
        self._path[seq] = path = tree_path(nodes, self.block_tokens)
        self._shareable[seq] = sum(span for _, span in path)

    def _path_of(self, seq: int) -> Path:
        """The nodes `seq`'s prefix lies on, each with the blocks of it `seq` may share."""
        resume = self._resume.get(seq)
        if resume is not None:
            return resume
        path = self._path.get(seq)
        return self._group_path(self._group.get(seq, 0), self._root.get(seq, 0)) if path is None else path

    def _group_path(self, group: int, root: int = 0) -> Path:
        """A group's chain as a path: behind its root's blocks where there are roots, open-ended."""
        return ((root_key(root), self.root_blocks), (group, OPEN)) if self.root_blocks else ((group, OPEN),)

    def _walk(self, path: Path) -> int:
        """Blocks of `path` a sequence can find cached: each node's only behind every earlier node whole."""
        found = 0
        chain, host, store = self._chain, self._host, self.store
        for node, span in path:
            cached = chain.get(node, 0)
            if host:
                cached += host.get(node, 0)
            if store is not None:
                cached = max(cached, store.blocks(node))
            cached = min(cached, span)
            found += cached
            if cached < span:
                break
        return found

    def _cached_blocks(self, seq: int, limit_blocks: int | None = None) -> int:
        """Blocks of its group's chain `seq` shares, or (holding nothing yet) would share on its first hold, of its
        first `limit_blocks` (None: all it may share)."""
        if seq in self._shared:
            return self._shared[seq] if limit_blocks is None else min(self._shared[seq], limit_blocks)
        if seq in self._held or seq in self._swapped_out:
            return 0
        resume = self._resume.get(seq)
        shareable = self._shareable.get(seq, self.prefix_blocks) if resume is None else sum(s for _, s in resume)
        if limit_blocks is not None:
            shareable = min(shareable, limit_blocks)
        return self._hit(self._path_of(seq), shareable) if shareable else 0

    def _hit(self, path: Path, shareable: int) -> int:
        """Blocks of `path`'s first `shareable` a sequence finds cached: beside hybrid groups, the sliding group's hit
        within the full group's (sim/hybrid_kv.py)."""
        found = min(self._walk(path), shareable)
        if self._sliding is None or not found:
            return found
        return sliding_hit_blocks(found, lambda block: self._slide_cached(self._slide_at(path, block)), self._sliding,
                                  self.block_tokens)

    def _slide_cached(self, key: SlidingBlock) -> bool:
        return key.block in self._slides.get(key.node, ())

    @staticmethod
    def _slide_at(path: Path, block: int) -> SlidingBlock:
        """The node of `path` holding its block `block`, and the block's place on it."""
        place = block
        for node, span in path:
            if place < span:
                return SlidingBlock(node, place)
            place -= span
        raise ValueError(f"block {block} past the path's end")

    def prefix_sharers(self, seqs: Iterable[int]) -> list[int]:
        """Of each of `seqs`, the group whose whole configured prefix (`prefix_tokens`' whole blocks) it shares from
        the cache: its group, or its root where the groups' chains start with roots; -1 where it shares less (a chain
        cut short, or another of its group computing the prefix first, left it its own copy) or none. What cascade
        attention reads once for each group's decoding sequences (kernels/shapes.py step_shape prefix_groups)."""
        whole = self._whole.get
        return [whole(seq, -1) for seq in seqs]

    def _note_whole(self, seq: int, blocks: int) -> None:
        """Record `seq`'s prefix group (prefix_sharers) where its `blocks` shared blocks hold the whole prefix."""
        if self.prefix_blocks and blocks >= self.prefix_blocks:
            self._whole[seq] = self._root.get(seq, 0) if self.root_blocks else self._group.get(seq, 0)

    def queued_duplicates(self, waiting: list[tuple[int, int]], threshold_tokens: int) -> set[int]:
        """Of `waiting` sequences (each with the tokens it would find cached, in queue order), those finding at most
        `threshold_tokens` cached whose shareable prefix shares at least that many tokens with an earlier one's among
        them (SGLang's in-batch prefix caching: sim/schedulers/base.py QUEUE_POLICIES)."""
        queued: dict[Hashable, int] = {}  # node -> the blocks of it an earlier waiting sequence's prefix holds
        duplicates = set()
        for seq, found in waiting:
            if found > threshold_tokens:
                continue
            parts = self._parts(self._path_of(seq), self._shareable.get(seq, self.prefix_blocks))
            shared = 0
            for node, part in parts:
                common = min(queued.get(node, 0), part)
                shared += common
                if common < part:
                    break
            if shared * self.block_tokens >= threshold_tokens:
                duplicates.add(seq)
                continue
            for node, part in parts:
                if part > queued.get(node, 0):
                    queued[node] = part
        return duplicates

    def chain_tokens(self, group: int, shareable_tokens: int | None = None,
                     nodes: Iterable[tuple[int, int]] | None = None, root: int = 0) -> int:
        """Tokens of `group`'s cached chain (behind root `root`) a request sharing `shareable_tokens` with it (None:
        prefix_tokens) would find here, or of a prefix tree's request, of its path's `nodes` (assign_path's) (what a
        cache-aware router compares between replicas)."""
        if nodes is not None:
            path = tree_path(nodes, self.block_tokens)
            return self._hit(path, sum(span for _, span in path)) * self.block_tokens
        shareable = self.prefix_blocks if shareable_tokens is None else shareable_tokens // self.block_tokens
        return self._hit(self._group_path(group, root), shareable) * self.block_tokens

    def is_cached(self, seq: int) -> bool:
        """Whether some of `seq`'s shareable prefix is cached (or `seq` shares it already)."""
        return self._cached_blocks(seq) > 0

    def cached_prefix(self, seq: int, target: int) -> int:
        """Tokens of sequence `seq`, which must compute `target` tokens, that its group's cached chain holds now, of
        the whole blocks of its first `target` - 1 tokens (it still computes its last token, from which it samples:
        vLLM v1's get_computed_blocks looks up at most num_tokens - 1 tokens, and find_longest_cache_hit the whole
        blocks of those, so a fully cached prompt recomputes its whole last block: vllm/v1/core/kv_cache_manager.py at
        003df296, vllm/v1/core/single_type_kv_cache_manager.py at 002f3491 of vllm-project/vllm), less, after that
        cap, the last block where the cache `drops_last_hit`: vLLM v1 drops a hit's last block where use_eagle (its
        speculative method eagle, eagle3 or mtp: vllm/config/speculative.py use_eagle(), commit 002e77c1; the
        scheduler passes it to its KVCacheManager, vllm/v1/core/sched/scheduler.py at 00024d31), "to force recompute
        the last block to get the required hidden states for eagle drafting head" (find_longest_cache_hit:
        computed_blocks.pop()). The sequence still shares the blocks it recomputes here: vLLM's recomputed copies,
        held in blocks of the request's own, are not counted."""
        if seq not in self._counted:  # its first admission counts this hit (_admit)
            self._first_target[seq] = target
        return self._hit_blocks(seq, target) * self.block_tokens

    def _hit_blocks(self, seq: int, target: int | None) -> int:
        """Blocks of `seq`'s hit that get_computed_blocks keeps (cached_prefix's; `target` None: uncapped)."""
        blocks = self._cached_blocks(seq, None if target is None else (target - 1) // self.block_tokens)
        return blocks - 1 if self.drops_last_hit and blocks else blocks

    def own_tokens(self, seq: int, tokens: int) -> int:
        """Tokens' worth of KV sequence `seq` of `tokens` cached tokens holds apart from a cached prefix it shares
        (under the window): what moves when its KV leaves or enters this cache, by a swap or a hand-over between
        pools."""
        if self.groups is not None:
            return self.groups.tokens(tokens, self._cached_blocks(seq) * self.block_tokens)
        return int(kept_tokens(max(0, tokens - self._cached_blocks(seq) * self.block_tokens), self.window))

    @property
    def free_blocks(self) -> int:
        """Blocks holding nothing (cached prefixes nobody shares are not free, but evictable)."""
        return self.capacity_blocks - self.used_blocks

    @property
    def evictable_blocks(self) -> int:
        """Blocks of cached prefixes no sequence shares."""
        return self._idle_blocks

    @property
    def in_use_blocks(self) -> int:
        """Blocks some sequence reads: its own, and the cached prefixes it shares (what an engine reports as used;
        an idle cached prefix counts as free there, as it is reclaimed on demand)."""
        return self.used_blocks - self._idle_blocks

    def blocks_for(self, tokens: int, shared: bool = True) -> int:
        """Blocks a sequence of `tokens` cached tokens holds of its own: past the configured prefix it shares, or
        (`shared` False) all of them."""
        return self._own_blocks(tokens, self.prefix_blocks if shared else 0)

    def _own_blocks(self, tokens: int, shared_blocks: int, seq: int | None = None) -> int:
        """Blocks of a sequence of `tokens` cached tokens past the `shared_blocks` it shares, of which a window keeps
        the last (a window's sinks lie in the prefix); of hybrid groups, its blocks in every group, sequence `seq`'s
        counted from the tokens it has computed (computed_before; without `seq`, all but the last)."""
        if self.groups is not None:
            # A sliding group holds nothing before its window's first block (_pass_window) or its blocks on nodes.
            return self.groups.blocks(tokens, self.block_tokens, None if seq is None else self._tokens.get(seq, 0),
                                      shared_blocks, max(self._slid.get(seq, shared_blocks), self._low.get(seq, 0)))
        if self.window is None:  # whole blocks shared: the blocks of all its tokens, less those
            return max(0, -(-tokens // self.block_tokens) - shared_blocks)
        own = kept_tokens(max(tokens - shared_blocks * self.block_tokens, 0), self.window)
        return max(0, math.ceil(own / self.block_tokens))

    def _growth(self, seq: int, tokens: int) -> tuple[int, int]:
        """The blocks `seq` must add to hold `tokens` tokens (on its first hold, with the blocks it finds in host
        memory or the store, which load onto the device), and the blocks it may take: the free ones and the cached
        nodes nobody shares, less those of its path if its first hold would share them."""
        room = self.capacity_blocks - self.used_blocks + self._idle_blocks
        held = self._held.get(seq)
        if held is not None:  # admitted: it shares what it shares, and no more
            return max(0, self._own_blocks(tokens, self._shared.get(seq, 0), seq) - held), room
        shares = self._cached_blocks(seq)
        loads = 0
        if shares and seq not in self._shared:
            for node, part in self._parts(self._path_of(seq), shares):
                if part and node in self._idle:
                    room -= self._chain[node]  # an idle node it will share is not room
                loads += max(0, part - self._chain.get(node, 0))
            if self._sliding is not None:  # nor are the idle sliding blocks of its window it will hold
                room -= sum(key in self._idle for key in self._window_blocks(self._path_of(seq), shares))
        return self._own_blocks(tokens, shares, seq) + loads, room

    def extra_blocks(self, seq: int, tokens: int) -> int:
        """Blocks sequence `seq` must add to hold `tokens` tokens."""
        return self._growth(seq, tokens)[0]

    def can_hold(self, seq: int, tokens: int, reserve_blocks: int = 0) -> bool:
        """Whether `seq` can grow to `tokens` tokens leaving `reserve_blocks` free (evicting idle prefixes)."""
        extra, room = self._growth(seq, tokens)
        return extra <= room - reserve_blocks

    def grow_each(self, wants: list[tuple[int, int]]) -> int:
        """Grow each sequence of `wants` (sequence, tokens), in order, to hold its tokens where it can (can_hold, then
        hold) until one cannot, and say how many did; nothing changes for that one and those after it. An admitted
        sequence (most decode steps: one whose blocks already hold its tokens, or that adds a block every block_tokens
        tokens) is answered without the general path."""
        held_of, shared_of, block_tokens = self._held.get, self._shared.get, self.block_tokens
        paged = self.window is None and self.groups is None
        for done, (seq, tokens) in enumerate(wants):
            held = held_of(seq)
            if held is None:  # holding nothing here yet
                if not self.can_hold(seq, tokens):
                    return done
                self.hold(seq, tokens)
                continue
            if self._sliding is not None:  # freed before allocating, whether or not it then fits (vLLM's order)
                self._pass_window(seq)
            # Its own blocks (_own_blocks, inlined where no window keeps fewer: below its shared ones it needs none).
            shared = shared_of(seq, 0)
            extra = (-(-tokens // block_tokens) - shared if paged else self._own_blocks(tokens, shared, seq)) - held
            if extra > 0:
                if extra > self.capacity_blocks - self.used_blocks + self._idle_blocks:
                    return done
                self._add_own(seq, held, extra)
            elif extra < 0 and self.groups is not None:  # a sliding group frees the blocks its window left
                self._add_own(seq, held, extra)
            if self.groups is not None:
                self._tokens[seq] = tokens
        return len(wants)

    def hold(self, seq: int, tokens: int) -> None:
        """Grow `seq`'s blocks to hold `tokens` tokens (the caller checked can_hold); its first hold shares its
        path's cached nodes as far as its shareable tokens reach, and idle nodes with none after them give up blocks
        (the least recently shared first, each from its tail) for room."""
        held = self._held.get(seq)
        if self.groups is not None:
            self._hold_groups(seq, tokens, held)
            return
        if held is not None:  # admitted (a swapped-out sequence holds nothing here): it grows its own blocks alone
            extra = self._own_blocks(tokens, self._shared.get(seq, 0)) - held
            if extra > 0:
                self._add_own(seq, held, extra)
            return
        extra, room = self._growth(seq, tokens)
        if extra > room:
            raise RuntimeError(f"KV cache: sequence {seq} needs {extra} more blocks, {self.free_blocks} free")
        own = extra - self._admit(seq)
        if self.used_blocks + own > self.capacity_blocks:
            self._evict(self.used_blocks + own - self.capacity_blocks)
        self._held[seq] = self._held.get(seq, 0) + own
        self.used_blocks += own

    def _admit(self, seq: int) -> int:
        """A hold of `seq` holding nothing here: its first shares its path's cached nodes as far as its shareable
        tokens reach (a swapped-out one's KV comes back as it left); the blocks moved onto the device from host memory
        or the store."""
        moved = 0
        if seq in self._swapped_out:  # swapped back in: its KV, its own prefix copy included, comes back as it left
            self._swapped_out.discard(seq)
        elif seq not in self._shared:  # its first hold (an admitted sequence grows without)
            shares = self._cached_blocks(seq)
            # vLLM counts the hit get_computed_blocks keeps (cached_prefix's) (its scheduler's
            # record_prefix_cache_stats(request, num_new_local_computed_tokens): vllm/v1/core/kv_cache_manager.py at
            # 003df296).
            found = self._hit_blocks(seq, self._first_target.pop(seq, None)) if seq not in self._counted else 0
            if shares:
                path = self._path_of(seq)
                self._materialize(path, shares)
                self._share(seq, path, shares)
                moved = self._load(path, shares)
            if seq in self._resume:
                self._take_back(seq)
            if seq not in self._counted:
                self._counted.add(seq)
                self.prefix_found_blocks += found
                self.prefix_sought_blocks += self._shareable.get(seq, self.prefix_blocks)
        return moved

    def _hold_groups(self, seq: int, tokens: int, held: int | None) -> None:
        """hold() of hybrid groups: `seq` shares what it finds on its first hold, grows to its blocks in every group
        at `tokens`, a sliding group giving back those its window has left, and has computed `tokens` at its next
        allocation."""
        if held is None:
            self._admit(seq)  # which may take blocks of its own back (_take_back)
            held = self._held.get(seq, 0)
        if self._sliding is not None:
            self._pass_window(seq)
        self._add_own(seq, held, self._own_blocks(tokens, self._shared.get(seq, 0), seq) - held)
        self._tokens[seq] = tokens

    def _window_blocks(self, path: Path, blocks: int) -> list[SlidingBlock]:
        """The sliding blocks of `path`'s first `blocks` the window of a sequence that has computed them holds."""
        start = window_start_block(blocks * self.block_tokens, self._sliding, self.block_tokens)
        return [self._slide_at(path, block) for block in range(start, blocks)]

    def _pass_window(self, seq: int) -> None:
        """Give back the nodes' sliding blocks `seq`'s window has left, from the tokens it has computed, the highest
        first (remove_skipped_blocks)."""
        low = self._low.get(seq, 0)
        start = max(low, window_start_block(self._tokens.get(seq, 0), self._sliding, self.block_tokens))
        slid = self._slid.get(seq, 0)
        if start > low and low < slid:
            path = self._path_of(seq)
            for block in range(min(start, slid) - 1, low - 1, -1):
                self._drop_slide(self._slide_at(path, block))
        self._low[seq] = start

    def _take_slide(self, key: SlidingBlock) -> None:
        """One more sequence holds a node's sliding block (no longer idle)."""
        refs = self._slide_refs.get(key, 0)
        if not refs:
            del self._idle[key]
            self._idle_blocks -= 1
        self._slide_refs[key] = refs + 1

    def _drop_slide(self, key: SlidingBlock) -> None:
        """One sequence fewer holds a node's sliding block: held by none, it waits last in the idle queue."""
        refs = self._slide_refs.pop(key) - 1
        if refs:
            self._slide_refs[key] = refs
        else:
            self._idle[key] = None
            self._idle_blocks += 1

    def computed_before(self, seq: int, computed: int) -> None:
        """Of hybrid groups: `seq` has `computed` tokens computed (elsewhere, before a swap, or in a speculative step
        that accepted fewer tokens than it held slots for), from which its next hold counts the blocks a sliding group
        skips, as vLLM counts them from the request's num_computed_tokens (a hold takes the tokens it holds as
        computed by the next)."""
        if self.groups is not None:
            self._tokens[seq] = computed

    def _add_own(self, seq: int, held: int, extra: int) -> None:
        """Give admitted `seq`, holding `held` blocks of its own, `extra` more (fewer where negative), evicting idle
        nodes where too few are free."""
        free = self.capacity_blocks - self.used_blocks
        if extra > free + self._idle_blocks:
            raise RuntimeError(f"KV cache: sequence {seq} needs {extra} more blocks, {free} free")
        if extra > free:
            self._evict(extra - free)
        self._held[seq] = held + extra
        self.used_blocks += extra

    @staticmethod
    def _parts(path: Path, blocks: int) -> list[tuple[int, int]]:
        """The nodes of `path` the first `blocks` of its blocks lie on, with the blocks on each (0 past them)."""
        parts = []
        for node, span in path:
            part = min(blocks, span)
            parts.append((node, part))
            blocks -= part
        return parts

    def _evict(self, blocks: int) -> None:
        """Free `blocks` device blocks of idle nodes: of those no node with device blocks follows, the least recently
        shared first, each from its tail (a radix tree's leaves first), into the host tier where there is one."""
        while blocks > 0:
            node = next(node for node in self._idle if not self._kids.get(node))
            if isinstance(node, SlidingBlock):
                self._evict_slide(node)
                blocks -= 1
                continue
            taken = min(blocks, self._chain[node])
            self._set_device(node, self._chain[node] - taken)
            self._idle_blocks -= taken
            self.used_blocks -= taken
            blocks -= taken
            if not self._chain[node]:
                del self._idle[node]
            self._to_host(node, taken)
            if not self._chain[node] and not self._host.get(node) and not self._slides.get(node):
                self._forget(node)

    def _evict_slide(self, key: SlidingBlock) -> None:
        """Free an idle sliding block, and forget its node where nothing of it is left."""
        del self._idle[key]
        self._idle_blocks -= 1
        self.used_blocks -= 1
        slides = self._slides[key.node]
        slides.discard(key.block)
        if not slides:
            del self._slides[key.node]
            if not self._chain[key.node] and not self._sharers[key.node]:
                self._forget(key.node)

    def _to_host(self, node: Hashable, blocks: int) -> None:
        """Keep the `blocks` blocks the device evicted from `node`'s tail in host memory, in front of the node's host
        blocks, making room by evicting the host's least recently used nodes that no cached node follows (each from
        its tail); what finds no room is gone, and with it the node's host blocks behind it."""
        if not self.host_capacity_blocks:
            return
        def emptied(victim: Hashable) -> None:
            if not self._chain[victim]:  # nothing of it left on the device either
                self._forget(victim)

        self._host_used -= take_from_tails(self._host, self._host_used + blocks - self.host_capacity_blocks,
                                           lambda n: n != node and not self._present_kids.get(n), emptied)
        kept = min(blocks, self.host_capacity_blocks - self._host_used)
        behind = self._host.pop(node, 0)
        if kept < blocks:  # a gap: the node's host blocks behind it can no longer be found
            self._host_used -= behind
            behind = 0
        if kept + behind:
            self._host[node] = kept + behind
            self._host_used += kept

    def _materialize(self, path: Path, blocks: int) -> None:
        """Cache here, with no blocks yet, the nodes of `path`'s first `blocks` that only the store holds."""
        parent = None
        for node, part in self._parts(path, blocks):
            if part and node not in self._chain:
                self._add(node, parent)
            parent = node

    def _load(self, path: Path, blocks: int) -> int:
        """Move the blocks of `path`'s first `blocks` that are not on the device onto it (the caller made room): those
        in host memory, then the rest from the store; the blocks moved."""
        loaded = fetched = 0
        for node, part in self._parts(path, blocks):
            onto = part - self._chain[node] if part else 0
            if onto <= 0:
                continue
            from_host = min(onto, self._host.get(node, 0))
            if from_host:
                self._host[node] -= from_host
                self._host_used -= from_host
                if not self._host[node]:
                    del self._host[node]
            if onto > from_host:
                self.store.touch(node)
            self._set_device(node, self._chain[node] + onto)
            self.used_blocks += onto
            loaded += from_host
            fetched += onto - from_host
        self._loaded_blocks += loaded
        self._fetched_blocks += fetched
        self.prefix_host_blocks += loaded
        self.prefix_store_blocks += fetched
        return loaded + fetched

    def take_loaded_tokens(self) -> int:
        """Tokens' worth of KV loaded from host memory since the last call (what an iteration copies in first)."""
        loaded, self._loaded_blocks = self._loaded_blocks, 0
        return loaded * self.block_tokens

    def take_fetched_tokens(self) -> int:
        """Tokens' worth of KV fetched from the store since the last call (what an iteration copies in first)."""
        fetched, self._fetched_blocks = self._fetched_blocks, 0
        return fetched * self.block_tokens

    def _set_device(self, node: Hashable, blocks: int) -> None:
        """`node`'s blocks on the device are `blocks` now (its parent counts the nodes with device blocks after it)."""
        before = self._chain[node]
        self._chain[node] = blocks
        parent = self._parent[node]
        if parent is not None and (before > 0) != (blocks > 0):
            self._kids[parent] = self._kids.get(parent, 0) + (1 if blocks else -1)

    def _add(self, node: Hashable, parent: Hashable | None) -> None:
        """A new cached node of no blocks yet, shared by none, after `parent`."""
        self._chain[node], self._sharers[node], self._parent[node] = 0, 0, parent
        if parent is not None:
            self._present_kids[parent] = self._present_kids.get(parent, 0) + 1

    def _forget(self, node: Hashable) -> None:
        """Forget a node with no blocks left on the device or in host memory."""
        del self._chain[node], self._sharers[node]
        self._slides.pop(node, None)
        parent = self._parent.pop(node)
        if parent is not None:
            self._present_kids[parent] -= 1

    def _warm_blocks(self, blocks: int) -> int:
        """The blocks a warm chain of `blocks` blocks holds (_cache)."""
        if self._sliding is None:
            return blocks
        return 2 * blocks - window_start_block(blocks * self.block_tokens, self._sliding, self.block_tokens)

    def _cache(self, group: Hashable, blocks: int) -> None:
        """A new idle chain of `blocks` blocks for `group` (the most recently shared), behind the root if there is
        one; beside hybrid groups with the sliding blocks of its last token's window, the rest of them evicted (freed
        first, as a request computing the chain moved on), idle before its full blocks (vLLM frees the sliding group's
        blocks first, the highest first)."""
        self._add(group, None)  # a warm chain: a root, or a group's chain where there are no roots
        if self._sliding is not None:
            window = self._window_blocks(((group, blocks),), blocks)
            self._slides[group] = {key.block for key in window}
            for key in reversed(window):
                self._idle[key] = None
            self._idle_blocks += len(window)
            self.used_blocks += len(window)
        self._set_device(group, blocks)
        if self.store is not None:
            self.store.write(group, None, blocks)
        self._idle[group] = None
        self._idle_blocks += blocks
        self.used_blocks += blocks

    def publish(self, seq: int, computed: int, limit: int | None = None) -> None:
        """Sequence `seq` has computed `computed` tokens: the whole blocks it computed past its path's cached blocks,
        up to its shareable tokens or those its group's next request shares (or `limit` blocks), extend its path's
        nodes, shared by it, where it shares all its path has cached (or its path has none cached); beside hybrid
        groups the sliding blocks of them it holds join the nodes whose full blocks cover them."""
        if self.groups is not None and self._sliding is None:
            return
        path = self._path_of(seq)
        if limit is None:
            limit = max(self._shareable.get(seq, self.prefix_blocks), self._leaves.get(seq, 0))
        end = min(computed // self.block_tokens, limit)
        self._extend(seq, path, end)
        if self._sliding is not None:
            self._publish_window(seq, path, min(end, self._walk(path)))

    def _extend(self, seq: int, path: Path, end: int) -> None:
        """publish() of the full blocks: `seq`'s first `end` blocks of `path`."""
        shared = self._shared.get(seq, 0)
        if shared != self._walk(path):  # another sequence extended the path first, or it shares none
            return
        grown = end - shared
        if grown <= 0 or self._held.get(seq, 0) < grown:
            return
        self._held[seq] -= grown
        parent = None
        for (node, was), (_, now) in zip(self._parts(path, shared), self._parts(path, shared + grown), strict=True):
            if now != was:
                if node not in self._chain:
                    self._add(node, parent)
                self._set_device(node, self._chain[node] + now - was)
                if not was:  # it shares this node from now on
                    self._take(node)
                if self.store is not None:
                    self.store.write(node, parent, self._chain[node])
            parent = node
        self._shared[seq] = shared + grown
        self._note_whole(seq, shared + grown)

    def _publish_window(self, seq: int, path: Path, end: int) -> None:
        """publish() of the sliding blocks: those `seq` holds of `path`'s first `end` join their nodes, held by it (one
        a node holds already spares it its own)."""
        slid = self._slid.get(seq, 0)
        if end <= slid:
            return
        for block in range(max(slid, self._low.get(seq, 0)), end):
            key = self._slide_at(path, block)
            slides = self._slides.setdefault(key.node, set())
            if key.block in slides:  # cached already: its own copy is freed
                self._take_slide(key)
                self.used_blocks -= 1
            else:
                slides.add(key.block)
                self._slide_refs[key] = 1
            self._held[seq] -= 1
        self._slid[seq] = end

    def _share(self, seq: int, path: Path, blocks: int) -> None:
        self._shared[seq] = blocks
        self._note_whole(seq, blocks)
        for node, part in self._parts(path, blocks):
            if part:
                self._take(node)
        if self._sliding is not None:
            window = self._window_blocks(path, blocks)
            for key in window:
                self._take_slide(key)
            self._slid[seq] = blocks
            self._low[seq] = blocks - len(window)

    def _take(self, node: Hashable) -> None:
        """One more sequence shares `node` (no longer idle)."""
        self._sharers[node] += 1
        if node in self._idle:
            del self._idle[node]
            self._idle_blocks -= self._chain[node]

    def release(self, seq: int, keep_prefix: bool = False, computed: int = 0) -> None:
        """Free every block `seq` holds of its own, after, where the group's next request continues its context, its
        whole blocks of `computed` tokens extend the group's chain; it stops sharing the chain unless `keep_prefix`
        (a swapped-out sequence, whose KV past the prefix waits in host memory, keeps its prefix cached)."""
        if seq in self._continues and computed:
            self.publish(seq, computed, limit=computed // self.block_tokens)
        self.used_blocks -= self._held.pop(seq, 0)
        self._tokens.pop(seq, None)
        if not keep_prefix and seq in self._slid:  # the sliding group's blocks first, the highest first
            path, low = self._path_of(seq), self._low.pop(seq, 0)
            for block in range(self._slid.pop(seq) - 1, low - 1, -1):
                self._drop_slide(self._slide_at(path, block))
        if not keep_prefix:
            self._low.pop(seq, None)
            self._device_reserved -= self._on_device.pop(seq, 0)
            self._apart.discard(seq)
        if keep_prefix and seq not in self._shared:
            self._swapped_out.add(seq)
        if keep_prefix or seq not in self._shared:
            return
        self._whole.pop(seq, None)
        for node, part in self._parts(self._path_of(seq), self._shared.pop(seq)):
            if part:
                self._sharers[node] -= 1
                if not self._sharers[node]:
                    self._idle[node] = None
                    self._idle_blocks += self._chain[node]

    def release_preempted(self, seq: int, computed: int) -> None:
        """Free `seq`, preempted by recompute, leaving the whole blocks of its `computed` tokens cached for its own
        re-admission: those of its path it shares on their nodes, its own as an idle node behind them (the module's
        docstring)."""
        shared = self._shared.get(seq, 0)
        own = (min(computed // self.block_tokens - shared, self._held.get(seq, 0))
               if self.window is None and (self.groups is None or self._sliding is not None) else 0)
        path = self._parts(self._path_of(seq), shared)
        node = ("preempted", seq)
        if own > 0:
            self._add(node, next((key for key, part in reversed(path) if part), None))
            if self._sliding is not None:  # and its sliding blocks of them, freed first (vLLM frees that group first)
                self._keep_window(seq, node, shared, computed // self.block_tokens)
        self.release(seq)
        if own <= 0:
            return
        self._set_device(node, own)
        self.used_blocks += own
        self._idle[node] = None  # freed last: after its path's nodes, whose blocks it follows
        self._idle_blocks += own
        self._resume[seq] = tuple((key, part) for key, part in path if part) + ((node, own),)

    def _keep_window(self, seq: int, node: Hashable, shared: int, blocks: int) -> None:
        """Of preempted `seq` sharing the first `shared` blocks of its path, the sliding blocks it holds of its first
        `blocks` past them go onto `node`, idle, the highest first."""
        first = max(shared, self._slid.get(seq, 0), self._low.get(seq, 0))
        if blocks <= first:
            return
        self._slides[node] = set(range(first - shared, blocks - shared))
        for block in range(blocks - shared - 1, first - shared - 1, -1):
            self._idle[SlidingBlock(node, block)] = None
        self._idle_blocks += blocks - first
        self._held[seq] -= blocks - first

    def _take_back(self, seq: int) -> None:
        """Re-admitted `seq`, its first hold having shared what it found of its resume path, holds the blocks it found
        of its own node as its own again, and shares the rest of its path as before it was preempted; the node, and
        what it did not find of it, is gone."""
        resume = self._resume.pop(seq)
        node = resume[-1][0]
        if node not in self._chain:  # evicted whole
            return
        blocks = self._chain[node]
        found = self._shared.get(seq, 0) - sum(span for _, span in resume[:-1])
        if found > 0:  # it shares the node: of its blocks those found (beside hybrid groups, perhaps fewer)
            self._sharers[node] -= 1
            self._held[seq] = self._held.get(seq, 0) + found
            self.used_blocks -= blocks - found
            self._shared[seq] -= found
            if seq in self._slid:  # the sliding blocks of its window there are its own again
                self._slid[seq] = self._shared[seq]
            if not self._shared[seq]:
                del self._shared[seq]
            self._whole.pop(seq, None)
            self._note_whole(seq, self._shared.get(seq, 0))
        else:  # cut off behind its path's evicted blocks: freed
            self._idle.pop(node, None)
            self._idle_blocks -= blocks
            self.used_blocks -= blocks
        for block in self._slides.get(node, ()):  # the rest of its sliding blocks are freed
            key = SlidingBlock(node, block)
            if self._slide_refs.pop(key, 0):
                self._held[seq] += 1
            else:
                del self._idle[key]
                self._idle_blocks -= 1
                self.used_blocks -= 1
        self._set_device(node, 0)
        self._host_used -= self._host.pop(node, 0)
        self._forget(node)

    def place(self, seq: int, final_tokens: int) -> None:
        """Place an admitted sequence of a hybrid pool (device_blocks set) for its whole run: on the model's devices
        where their blocks still hold the blocks of its `final_tokens` (the engine knows each request's most tokens),
        reserving them, else on the attention devices; it stays there until released."""
        if self.device_blocks is None or seq in self._on_device or seq in self._apart:
            return
        blocks = self._own_blocks(final_tokens, self._cached_blocks(seq))
        if self._device_reserved + blocks <= self.device_blocks:
            self._on_device[seq] = blocks
            self._device_reserved += blocks
        else:
            self._apart.add(seq)

    def apart(self, order: list[int]) -> set[int]:
        """The sequences of `order` whose blocks lie on a hybrid pool's attention devices (place)."""
        return self._apart.intersection(order)
