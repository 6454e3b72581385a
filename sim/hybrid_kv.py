"""vLLM v1's hybrid KV cache for a model whose attention windows differ by layer (gpt-oss): its groups of layers and
the blocks a request holds in each.

vLLM groups the layers by their attention spec and splits each kind into groups of one size
(_get_kv_cache_groups_uniform_page_size, vllm/v1/core/kv_cache_utils.py): the fewest layers of a kind, or the most where
that is under 1.5 times the fewest (padding the short kind), each kind taking ceil(layers / size) groups (gpt-oss-20b:
12 sliding and 12 full layers, two groups of 12). The layers are the engine's, a draft model's beside the target's
(kv_groups takes them all: one full draft layer beside gpt-oss-20b's makes 12 sliding and 13 full, two groups of 13, the
sliding one padded), so a speculating request's draft KV lies in the groups' blocks, held for its slots. Every group's
block is block_tokens tokens of its layers, the same bytes in every group, and the groups draw their blocks from one
pool, a block table each (HybridKVCacheCoordinator, vllm/v1/core/kv_cache_coordinator.py): a request holds blocks in
every group. A full group holds the blocks of all its tokens; a sliding-window group frees, before each allocation, the
blocks wholly before the window of the next token (SlidingWindowManager.get_num_skipped_tokens: computed - window + 1
tokens skipped, remove_skipped_blocks frees their whole blocks; vllm/v1/core/single_type_kv_cache_manager.py, commit
129ab7c6 of vllm-project/vllm). A sequence growing to t tokens with c of them computed then holds ceil(t / B) blocks in
a full group and ceil(t / B) - floor((c - w + 1) / B) in a group of window w (c >= w): at a decode step (c = t - 1) the
blocks of its window, and a prefill chunk's blocks besides (c counted before it), those behind the window freed at the
request's next allocation.

Prefix caching (vLLM v1's, on by default) beside a full group and a sliding one, as PagedKVCache keeps it: vLLM takes
a hybrid cache hit at the longest prefix every group hits (HybridKVCacheCoordinator.find_longest_cache_hit,
vllm/v1/core/kv_cache_coordinator.py, commit 00b08dc4 of vllm-project/vllm): the full group's cached blocks from the
first, then, right to left within them, the last point whose k = cdiv(w - 1, B) blocks before it are cached in the
sliding group (sliding_hit_blocks; SlidingWindowManager.find_longest_cache_hit, where no point has them the sliding
group's cached blocks from the first), the full group cut back to that point. A hit holds of a sliding group only the
blocks of the hit point's window; the blocks before them were freed, still cached, as the request that computed them
moved on (remove_skipped_blocks, the blocks one allocation skips highest first; vllm/v1/core/
single_type_kv_cache_manager.py, commit 002f3491), so they are evicted before the full group's blocks of the same
prefix while it is still shared, in the order they were freed (BlockPool: freed blocks join the free queue's end,
allocation evicts from its front, vllm/v1/core/block_pool.py), and once one of the k blocks before a hit point is
evicted the hit falls to an earlier point whose k blocks are cached, or to none. A request recomputing past such a
point caches the sliding blocks it computes again (cache_full_blocks keys each computed block by its hash).

Beside a KV connector (a prefill pool's hand-over, NIXL's: sim/kv_sends.py) the groups stay. vLLM once turned its hybrid
manager off wherever kv_transfer_config was set, every layer then allocated as full attention (vllm/config/vllm.py,
commit 09f030ea of vllm-project/vllm); it now does so only for a connector that does not subclass SupportsHMA
(KVConnectorFactory.supports_hma_config, vllm/config/vllm.py, commit 000fc94b), and NixlConnector subclasses it
(vllm/distributed/kv_transfer/kv_connector/v1/nixl/connector.py, commit 01e4fce0). The decode side allocates a
sliding group's blocks for the window of the tokens it receives only (KVCacheManager.allocate_slots,
vllm/v1/core/kv_cache_manager.py, commit ace980e6), and NIXL pulls a sliding group's last cdiv(w, B) + 1 blocks, a full
group's all (NixlConnectorScheduler.get_sw_clipped_blocks, .../v1/nixl/scheduler.py, commit 053da34b): a hand-over
moves a sliding group's window and a full group's every token (KVGroups.tokens, in tokens, not whole blocks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class KVGroups:
    """vLLM's KV cache groups of a model: each group's window (None: full attention), and the layers of each group."""

    windows: tuple[int | None, ...]
    layers: int

    def blocks(self, tokens: int, block_tokens: int, computed: int | None = None, shared_blocks: int = 0,
               window_shared_blocks: int | None = None) -> int:
        """Blocks of `block_tokens` tokens a sequence growing to `tokens` tokens holds over every group, `computed` of
        them computed before (None: all but the last, a decode step's) (module docstring), past the first
        `shared_blocks` of a cached prefix it shares in a full group and `window_shared_blocks` (None: as many) in a
        sliding one."""
        computed = tokens - 1 if computed is None else computed
        whole = -(-tokens // block_tokens)
        slid = shared_blocks if window_shared_blocks is None else window_shared_blocks
        return sum(whole - min(whole, shared_blocks if window is None else
                               max(slid, window_start_block(computed, window, block_tokens)))
                   for window in self.windows)

    def most_blocks(self, tokens: int, block_tokens: int, chunk_tokens: int) -> int:
        """The most blocks a request of `tokens` tokens holds at once, prefilled in chunks of at most `chunk_tokens`:
        every block in a full group, in a window-w group those of w - 1 computed tokens and a chunk, and one more where
        the window starts inside a block (SlidingWindowSpec.max_memory_usage_bytes, vllm/v1/kv_cache_interface.py),
        never more than all of its blocks."""
        whole = -(-tokens // block_tokens)
        return sum(whole if window is None else min(whole, -(-(window - 1 + chunk_tokens) // block_tokens) + 1)
                   for window in self.windows)

    def tokens(self, tokens: int, shared_tokens: int = 0) -> int:
        """A sequence's cached tokens summed over the groups (each of `layers` layers), each group's within its
        window, less the first `shared_tokens` of a cached prefix it shares: its own KV in tokens' worth of one
        group's layers, what moves when it leaves or enters a cache."""
        shared = min(shared_tokens, tokens)
        return sum(tokens - shared if window is None else min(tokens, window) - max(0, shared - max(0, tokens - window))
                   for window in self.windows)

    @property
    def sliding_window(self) -> int | None:
        """The window of the model's one sliding group beside one full group, the layout whose prefix-cache hits are
        modeled (module docstring; None otherwise)."""
        full, sliding = self.windows.count(None), [window for window in self.windows if window is not None]
        return sliding[0] if full == 1 and len(sliding) == 1 else None


def sliding_hit_blocks(found_blocks: int, cached: Callable[[int], bool], window: int, block_tokens: int) -> int:
    """The blocks of a sliding group's cache hit within the first `found_blocks` (the full group's hit), `cached(i)`
    saying whether its block i is cached: right to left, the last point whose cdiv(window - 1, block_tokens) blocks
    before it are all cached, else the cached blocks from the first (SlidingWindowManager.find_longest_cache_hit)."""
    needed = -(-(window - 1) // block_tokens)
    run = 0
    for block in range(found_blocks - 1, -1, -1):
        if not cached(block):
            run = 0
            continue
        run += 1
        if run >= needed:
            return block + run
    return run


def window_start_block(computed: int, window: int, block_tokens: int) -> int:
    """The first block a sliding group holds once `computed` tokens are computed: those wholly before the next
    token's window are freed (SlidingWindowManager.get_num_skipped_tokens, remove_skipped_blocks)."""
    return max(0, computed - window + 1) // block_tokens


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
