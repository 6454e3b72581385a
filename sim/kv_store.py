"""KVStore: a pool's shared KV store (Mooncake's store, LMCache's remote tier), host memory across the pool's machines
that keeps every prefix block a replica computes, so that another replica finds it there and loads it over the network
instead of computing it.

The store holds a node's first blocks (a prefix of the node, as every tier does: sim/kv_cache.py), the most any replica
wrote of it. A node is stored only behind its stored parent (a block is found by the hash of everything before it).
When full, it evicts its least recently used node that no stored node follows, from its tail (a radix tree's leaves
first). Writes are the replicas' publishes, copied as they compute (not priced: asynchronous beside the compute, as
those stores write); reads touch what they find.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable


def take_from_tails(blocks: OrderedDict[Hashable, int], need: int, evictable: Callable[[Hashable], bool],
                    emptied: Callable[[Hashable], None]) -> int:
    """Take up to `need` blocks from the nodes of `blocks` (node -> its blocks, least recently used first): of those
    `evictable` accepts, the least recently used first, each from its tail; a node left with none is removed and
    handed to `emptied` at once (its parent may become evictable). The blocks taken."""
    taken = 0
    while taken < need:
        node = next((n for n in blocks if evictable(n)), None)
        if node is None:
            break
        part = min(need - taken, blocks[node])
        blocks[node] -= part
        taken += part
        if not blocks[node]:
            del blocks[node]
            emptied(node)
    return taken


class KVStore:
    """Block accounting of a store of `capacity_blocks` blocks that a pool's replicas share."""

    def __init__(self, capacity_blocks: int):
        if capacity_blocks < 0:
            raise ValueError(f"capacity_blocks: found {capacity_blocks}, allowed: an integer >= 0")
        self.capacity_blocks = capacity_blocks
        self._blocks: OrderedDict[Hashable, int] = OrderedDict()  # node -> its first blocks, least recently used first
        self._parent: dict[Hashable, Hashable | None] = {}
        self._kids: dict[Hashable, int] = {}  # a stored node -> how many stored nodes follow it
        self.used_blocks = 0

    def blocks(self, node: Hashable) -> int:
        """The first blocks of `node` the store holds."""
        return self._blocks.get(node, 0)

    def touch(self, node: Hashable) -> None:
        """A replica read `node`: it is the most recently used."""
        if node in self._blocks:
            self._blocks.move_to_end(node)

    def write(self, node: Hashable, parent: Hashable | None, blocks: int) -> None:
        """A replica holds the first `blocks` blocks of `node` (behind `parent`, None for a path's first node): the
        store keeps as many as it has room for, making room by evicting, unless its parent is not stored."""
        if parent is not None and parent not in self._blocks:
            return
        have = self._blocks.get(node, 0)
        if blocks > have:
            self._evict(self.used_blocks + blocks - have - self.capacity_blocks, keep=(node, parent))
            kept = min(blocks, have + self.capacity_blocks - self.used_blocks)
            if kept > have:
                if node not in self._blocks:
                    self._parent[node] = parent
                    if parent is not None:
                        self._kids[parent] = self._kids.get(parent, 0) + 1
                self._blocks[node] = kept
                self.used_blocks += kept - have
        self.touch(node)

    def _evict(self, blocks: int, keep: tuple[Hashable, ...]) -> None:
        """Free `blocks` blocks: of the nodes no stored node follows, but those in `keep`, the least recently used
        first, each from its tail (as few as there are)."""
        self.used_blocks -= take_from_tails(self._blocks, blocks, lambda n: n not in keep and not self._kids.get(n),
                                            self._forget)

    def _forget(self, node: Hashable) -> None:
        """A node with no blocks left: its parent has one stored node fewer behind it."""
        parent = self._parent.pop(node)
        if parent is not None:
            self._kids[parent] -= 1
