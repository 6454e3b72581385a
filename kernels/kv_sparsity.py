"""Unstructured KV-cache sparsity in a bitmap-compressed layout: the bits a cache element takes when a share of each
token's Key and Value elements is pruned and the rest are stored packed beside a bitmap.

Mustafar (Joo, Hosseini, Hadidi, Asgari, "Mustafar: Promoting Unstructured Sparsity for KV Cache Pruning in LLM
Inference", NeurIPS 2025, arXiv 2505.22913) prunes each token's Key and Value vectors by magnitude (per-token top-k:
the share `kv_sparsity` of a vector's elements set to zero) and stores the cache in a bitmap-based format that its
decode attention kernel reads directly, expanding each tile into dense form in the SM ("load compressed, compute
dense"): the bytes read shrink, the FLOPs do not.

The layout, from the authors' code (github.com/dhjoo98/mustafar, kernel/compression.py convert_key_batched and
convert_value_batched):

- a tile is 64 elements (a Key tile: one channel of 64 consecutive tokens; a Value tile: 64 channels of one token);
- each tile stores a 64-bit bitmap of its nonzeros (int64 `bitmaps`) and a 32-bit offset to its first value (int32
  `accum_counts`, the running count of the tiles' packed values);
- the kept values follow packed in fp16, each tile's count rounded up to a multiple of 8 (`(cnt + 7) & ~7`: 16
  bytes, one 128-bit vector load). With the kept count's remainder modulo 8 spread evenly, the padding is 3.5 values
  a tile on average, VALUE_ALIGN_BITS / 2 less half a value.

So a 16-bit element at sparsity S takes (1 - S) x 16 + (64 + 32 + 56) / 64 bits: 7.175 at S = 0.7, 44.8% of dense,
the paper's "as low as 45% of dense" at 70% sparsity (abstract); 10.375 at S = 0.5, 64.8%. Quantized values (kv_bits
below 16, an extrapolation: the paper pairs Mustafar with KIVI without a kernel for it) keep their stored bits, their
group scale included (NumericFormat.kv_value_bits), and the same tile metadata, padded to the same 128-bit boundary.
Below the sparsity where the layout breaks even (about 15% at 16 bits) it is larger than the dense cache, and the
cache is kept dense (an engine would not choose the larger layout): more sparsity never takes more memory.

Not counted: the per-head offset of each sequence's packed values (one int32 per KV head), and the window of recent
tokens the authors' code keeps dense (models/llama_mustafar_kernel.py: `residual_length` tokens plus up to 256 more,
compressed 256 at a time), which at a 2,048-token context is under a tenth of the cache.
"""

from __future__ import annotations

# Elements a bitmap tile covers, and the metadata each tile stores: a 64-bit bitmap and a 32-bit offset
# (kernel/compression.py: int64 bitmaps, int32 accum_counts, one per 64-element tile).
TILE_ELEMENTS = 64
BITMAP_BITS = 64.0
OFFSET_BITS = 32.0
# Each tile's packed values are padded to 8 fp16 values (kernel/compression.py: cnt = ((cnt + 7) & ~7)).
VALUE_ALIGN_BITS = 128.0


def mean_padding_bits(value_bits: float) -> float:
    """Padding bits a tile adds on average to round its packed values up to VALUE_ALIGN_BITS: (A - 1) / 2 values of
    A = VALUE_ALIGN_BITS / value_bits a boundary, the kept count's remainder spread evenly (3.5 fp16 values)."""
    return (VALUE_ALIGN_BITS - value_bits) / 2.0


def bitmap_element_bits(value_bits: float, sparsity: float, width: int = 16) -> float:
    """Bits a cache element takes in the bitmap layout at `sparsity` (the share of elements pruned), its kept values
    stored at `value_bits` each (a `width`-bit value with its share of the scales): the kept values, the tile's
    bitmap, offset and mean padding spread over its TILE_ELEMENTS."""
    metadata = BITMAP_BITS + OFFSET_BITS + mean_padding_bits(float(width))
    return (1.0 - sparsity) * value_bits + metadata / TILE_ELEMENTS


def kv_element_bits(value_bits: float, sparsity: float, width: int = 16) -> float:
    """Bits a cache element takes at `sparsity`: value_bits when dense (0), else the bitmap layout's, or value_bits
    where that layout would be larger (below its break-even sparsity the cache stays dense)."""
    if not sparsity:
        return value_bits
    return min(value_bits, bitmap_element_bits(value_bits, sparsity, width))


def break_even_sparsity(value_bits: float, width: int = 16) -> float:
    """The sparsity above which the bitmap layout is smaller than the dense cache."""
    return (BITMAP_BITS + OFFSET_BITS + mean_padding_bits(float(width))) / TILE_ELEMENTS / value_bits
