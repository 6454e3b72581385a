"""vLLM v1's hybrid KV cache for a model whose attention windows differ by layer (gpt-oss): its groups of layers and
the blocks a request holds in each.

vLLM groups the layers by their attention spec and splits each kind into groups of one size
(_get_kv_cache_groups_uniform_page_size, vllm/v1/core/kv_cache_utils.py): the fewest layers of a kind, or the most
where that is under 1.5 times the fewest (padding the short kind), each kind taking ceil(layers / size) groups
(gpt-oss-20b: 12 sliding and 12 full layers, two groups of 12). Every group's block is block_tokens tokens of its
layers, the same bytes in every group, and the groups draw their blocks from one pool, a block table each
(HybridKVCacheCoordinator, vllm/v1/core/kv_cache_coordinator.py): a request holds blocks in every group. A full group
holds the blocks of all its tokens; a sliding-window group frees, before each allocation, the blocks wholly before
the window of the next token (SlidingWindowManager.get_num_skipped_tokens: computed - window + 1 tokens skipped,
remove_skipped_blocks frees their whole blocks; vllm/v1/core/single_type_kv_cache_manager.py, commit 129ab7c6 of
vllm-project/vllm). A sequence growing to t tokens with c of them computed then holds ceil(t / B) blocks in a full
group and ceil(t / B) - floor((c - w + 1) / B) in a group of window w (c >= w): at a decode step (c = t - 1) the blocks
of its window, and a prefill chunk's blocks besides (c counted before it), those behind the window freed at the
request's next allocation.

Not modeled: prefix caching (explore refuses it beside the groups). vLLM takes a hybrid cache hit at the longest
prefix every group hits (HybridKVCacheCoordinator.find_longest_cache_hit, vllm/v1/core/kv_cache_coordinator.py): the
full group's cached blocks from the first, then, right to left from there, the last point whose k = cdiv(w - 1, B)
blocks before it are cached in the sliding group (SlidingWindowManager.find_longest_cache_hit; where no point has
them, the sliding group's cached blocks from the first), the full group cut back to that point. A hit holds of a
sliding group only those k blocks; the blocks before them were freed, still cached, as the request that computed
them moved on (remove_skipped_blocks, the blocks one allocation skips highest first), so they are evicted before the
full group's blocks of the same prefix while it is still shared, in the order they were freed (BlockPool: freed
blocks join the free queue's end, allocation evicts from its front, vllm/v1/core/block_pool.py), and once one of the
k blocks before a hit point is evicted the hit falls to an earlier point whose k blocks are cached, or to none.
PagedKVCache keeps a node's blocks as one count, shared whole and evicted from its tail once idle; these hits need
each group's cached blocks of a node apart (a sliding group's as a set with holes, idle while the node is shared), a
hit holding k of them, and evictions in the order blocks were freed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class KVGroups:
    """vLLM's KV cache groups of a model: each group's window (None: full attention), and the layers of each group."""

    windows: tuple[int | None, ...]
    layers: int

    def blocks(self, tokens: int, block_tokens: int, computed: int | None = None) -> int:
        """Blocks of `block_tokens` tokens a sequence growing to `tokens` tokens holds over every group, `computed` of
        them computed before (None: all but the last, a decode step's) (module docstring)."""
        computed = tokens - 1 if computed is None else computed
        whole = -(-tokens // block_tokens)
        return sum(whole - (max(0, computed - window + 1) // block_tokens if window is not None else 0)
                   for window in self.windows)

    def most_blocks(self, tokens: int, block_tokens: int, chunk_tokens: int) -> int:
        """The most blocks a request of `tokens` tokens holds at once, prefilled in chunks of at most `chunk_tokens`:
        every block in a full group, in a window-w group those of w - 1 computed tokens and a chunk, and one more where
        the window starts inside a block (SlidingWindowSpec.max_memory_usage_bytes, vllm/v1/kv_cache_interface.py),
        never more than all of its blocks."""
        whole = -(-tokens // block_tokens)
        return sum(whole if window is None else min(whole, -(-(window - 1 + chunk_tokens) // block_tokens) + 1)
                   for window in self.windows)

    def tokens(self, tokens: int) -> int:
        """A sequence's cached tokens summed over the groups (each of `layers` layers), each group's within its
        window: its KV in tokens' worth of one group's layers, what moves when it leaves or enters a cache."""
        return sum(tokens if window is None else min(tokens, window) for window in self.windows)


def kv_groups(layer_windows: tuple[int | None, ...]) -> KVGroups | None:
    """The groups of a model whose layers have these windows (None where every layer is alike: one group, the cache
    paged as it is)."""
    kinds: dict[int | None, int] = {}
    for window in layer_windows:
        kinds[window] = kinds.get(window, 0) + 1
    if len(kinds) < 2:
        return None
    fewest, most = min(kinds.values()), max(kinds.values())
    size = most if most < 1.5 * fewest else fewest
    return KVGroups(windows=tuple(window for window, count in kinds.items() for _ in range(math.ceil(count / size))),
                    layers=size)
