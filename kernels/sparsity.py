"""Sparsity patterns of the GEMM weights and of the MLP's activations: their grammar, the layout a device that exploits
one stores and the work it does, and the support set by which a device says which it exploits.

Weight patterns (NumericFormat.sparsity):

- "dense".
- "N:M" (0 < N < M, M in 4, 8, 16): at most N nonzeros in every M consecutive weights. A device whose matrix units
  skip them stores the kept values plus a log2(M)-bit position each and does N/M of the math (sparse tensor cores:
  2:4; FlightLLM's sparse DSP chains: N:M).
- "unstructured:S" (0 < S < 1, the share of zero weights): stored compressed and computed dense, Flash-LLM's
  "load-as-sparse, compute-as-dense" (Xia et al., VLDB 2024, arXiv 2309.10285): the kept weights move in its
  Tiled-CSL format, each nonzero one 32-bit word of its fp16 value and a 16-bit location inside its 128 x 64 tile
  (AlibabaResearch/flash-llm csrc/SpMM_API.cu InitSparseMatrixA_API: a half and a short per uint32 item), and are
  expanded into dense tiles in shared memory, where the tensor cores do the whole dense product. So the bytes
  shrink to (1 - S) x (16 + 16) / 16 of fp16 weights (fewer only above 50% sparsity) and the math does not: decode
  (memory-bound) speeds up with the bytes saved, prefill (compute-bound) does not. Quantized weights keep the
  16-bit location beside their stored bits (no published kernel: an extrapolation of the layout). The per-tile
  offsets (one int32 per 8,192 weights) and the padding of each tile to a multiple of 4 nonzeros are not counted.
  The kernel's shared-memory work does not shrink with the sparsity: each K step zero-fills the dense tile,
  scatters the nonzeros into it one 16-bit store each and reads it back densely for the tensor cores
  (csrc/SpMM_Kernel.cuh), about 4 bytes of bank traffic per dense weight, more time than the DRAM traffic of the
  kept weights above about 88% sparsity on an A100: a GPU prices it (hw_models/gpu_unstructured.py). Its split-K
  partials, reduced by a second kernel, are not counted.
- "blockB:S" (B in 16, 32, 64, 128; 0 < S < 1 the share of zero B x B blocks): whole zero tiles are skipped, their
  math and their bytes; each kept block stores a 32-bit column index, as the BSR format does (cuSPARSE bsrColInd is
  int32), 32 / B^2 bits per weight; row offsets (one per B rows) are not counted.

Activation sparsity (NumericFormat.act_kept, act_predictor): at each decode token only `act_kept` of the MLP's
intermediate activations are kept (magnitude thresholding: TEAL, Liu et al., ICLR 2025; R-Sparse, Zhang et al.,
ICLR 2025; WINA, Chen et al., 2025; or a learned predictor: Deja Vu, Liu et al., ICML 2023), so the MLP reads only
the weight rows and columns of the kept activations. A GEMM over several tokens reads the union of their kept rows:
with tokens that keep independent sets that is 1 - (1 - kept)^tokens of the weights (an assumption: tokens of one
context keep overlapping sets, so the true union is smaller), which is why the gain fades with the batch and a
prefill runs dense. Deja Vu's predictor is a low-rank two-layer MLP per layer, hidden -> DEJA_VU_RANK ->
intermediate (FMInference/DejaVu sparse_predictor/main_mlp.py: Linear(d, D) then Linear(D, 4d), D = 1000 by
default), run in 16 bits on every token; TEAL, R-Sparse and WINA threshold the activations they have and need none.
Only the MLP is priced (TEAL and R-Sparse also sparsify the attention projections' inputs, Deja Vu attention
heads); fused MoE layers are left dense.

A device says what it exploits with a SparsitySupport: the N:M patterns its matrix units skip, "unstructured",
"blockB" and "activation" (SUPPORT_KEYS). `pattern in support` answers for a whole pattern ("unstructured:0.7"); a
pattern outside the set runs dense, weights stored dense (KernelTable.run_on), and sparsity_notice says so. So does a
pattern in the set that would save nothing there (exploits: unstructured sparsity whose layout is no smaller than
dense weights of the format's bits).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

DENSE = "dense"
UNSTRUCTURED = "unstructured"
ACTIVATION = "activation"
BLOCK_SIZES = (16, 32, 64, 128)
NM_PATTERN = re.compile(r"^([1-9][0-9]*):([1-9][0-9]*)$")
SHARE_PATTERN = re.compile(r"^(unstructured|block([0-9]+)):(0?\.[0-9]+)$")
# What hardware units skip (preset fields: GPUs' structured_sparsity, FPGAs' sparsity_patterns), and every pattern.
ALLOWED_STRUCTURED = "dense or N:M with 0 < N < M and M in 4, 8, 16 (e.g. 2:4, 1:4, 4:8)"
ALLOWED_SPARSITY = (f"{ALLOWED_STRUCTURED}, or unstructured:S or blockB:S with S the share of zero weights, 0 < S < 1, "
                    f"and B in 16, 32, 64, 128 (e.g. unstructured:0.7, block64:0.5)")
# Flash-LLM's Tiled-CSL: a 16-bit location inside the tile beside each nonzero (see the module docstring).
TILED_CSL_LOCATION_BITS = 16.0
# BSR: one int32 column index per kept block.
BSR_BLOCK_INDEX_BITS = 32.0
# Deja Vu's MLP predictor rank (sparse_predictor/main_mlp.py, --D default 1000) and its weights' bits (fp16).
DEJA_VU_RANK = 1000
PREDICTOR_BITS = 16.0
ACT_PREDICTORS = ("none", "deja_vu")


@dataclass(frozen=True)
class WeightSparsity:
    """One weight pattern: the share of weights kept, the share of the math a device that exploits it does, and
    the bits each kept weight stores beside its value."""

    pattern: str  # the canonical spelling: a share written as Python writes the float ('unstructured:0.5')
    key: str  # what a device's SparsitySupport names: 'dense', '2:4', 'unstructured', 'block64'
    density: float  # kept share of the weights
    compute_density: float  # share of the dense math done where the pattern is exploited
    index_bits: float  # position bits stored per kept weight

    def stored_scale(self, value_bits: float) -> float:
        """Stored bytes of the sparse layout relative to dense weights of `value_bits` bits each."""
        if self.key == DENSE:
            return 1.0
        return self.density * (1.0 + self.index_bits / value_bits)


@lru_cache(maxsize=256)
def parse_sparsity(pattern: str) -> WeightSparsity:
    """The weight pattern spelled `pattern`; ValueError ('sparsity: found X, allowed: ...') if it is none."""
    text = str(pattern)
    if text == DENSE:
        return WeightSparsity(pattern=text, key=DENSE, density=1.0, compute_density=1.0, index_bits=0.0)
    match = NM_PATTERN.match(text)
    if match:
        n, m = int(match[1]), int(match[2])
        if 0 < n < m and m in (4, 8, 16):
            return WeightSparsity(pattern=text, key=text, density=n / m, compute_density=n / m,
                                  index_bits=math.log2(m))
    match = SHARE_PATTERN.match(text)
    if match:
        zeros = float(match[3])
        block = int(match[2]) if match[2] else 0
        if 0.0 < zeros < 1.0 and (not match[2] or block in BLOCK_SIZES):
            kept = 1.0 - zeros
            # One spelling per share ('unstructured:.50' is 'unstructured:0.5'), so equal patterns compare equal.
            canonical = f"{match[1]}:{zeros!r}"
            if not block:
                return WeightSparsity(pattern=canonical, key=UNSTRUCTURED, density=kept, compute_density=1.0,
                                      index_bits=TILED_CSL_LOCATION_BITS)
            return WeightSparsity(pattern=canonical, key=f"block{block}", density=kept, compute_density=kept,
                                  index_bits=BSR_BLOCK_INDEX_BITS / block**2)
    raise ValueError(f"sparsity: found {pattern!r}, allowed: {ALLOWED_SPARSITY}")


def parse_structured(pattern: str) -> WeightSparsity:
    """A dense or N:M pattern (what hardware units skip); ValueError naming ALLOWED_STRUCTURED otherwise."""
    parsed = parse_sparsity(pattern) if NM_PATTERN.match(str(pattern)) or pattern == DENSE else None
    if parsed is None:
        raise ValueError(f"sparsity: found {pattern!r}, allowed: {ALLOWED_STRUCTURED}")
    return parsed


def support_key(pattern: str) -> str:
    """The key a device's support set names for a weight pattern ('unstructured:0.7' -> 'unstructured')."""
    return parse_sparsity(pattern).key


class SparsitySupport(frozenset):
    """The sparsity a device exploits, by key ('2:4', 'unstructured', 'block64', 'activation'). `pattern in support`
    is true for a whole weight pattern whose key is in it, and for dense (nothing to skip)."""

    def __contains__(self, pattern: object) -> bool:
        if frozenset.__contains__(self, pattern) or pattern == DENSE:
            return True
        try:
            return frozenset.__contains__(self, support_key(str(pattern)))
        except ValueError:
            return False

    @classmethod
    def of(cls, *groups: Iterable[str]) -> SparsitySupport:
        """The support of every pattern or key in `groups` (patterns are reduced to their keys)."""
        keys = set()
        for group in groups:
            for item in group:
                keys.add(item if item in (UNSTRUCTURED, ACTIVATION) or item.startswith("block") and ":" not in item
                         else support_key(item))
        return cls(keys)

    @property
    def activation(self) -> bool:
        return frozenset.__contains__(self, ACTIVATION)

    def words(self) -> str:
        """The keys, as a notice says them ('nothing' when empty)."""
        return ", ".join(sorted(self)) or "nothing"


def block_keys(multiple_of: Iterable[int] = (1,)) -> tuple[str, ...]:
    """The block keys whose block size is a multiple of every number given (an array's rows and columns)."""
    dims = tuple(multiple_of)
    return tuple(f"block{b}" for b in BLOCK_SIZES if all(b % d == 0 for d in dims))


def check_activation_sparsity(kept: float, predictor: str) -> None:
    """ValueError naming the field for a kept share outside (0, 1] or an unknown predictor."""
    if isinstance(kept, bool) or not isinstance(kept, int | float) or not 0.0 < kept <= 1.0:
        raise ValueError(f"act_kept: found {kept!r}, allowed: a fraction in (0, 1] (1: dense activations)")
    if predictor not in ACT_PREDICTORS:
        raise ValueError(f"act_predictor: found {predictor!r}, allowed: {', '.join(ACT_PREDICTORS)}")


def union_share(kept: float, tokens):
    """Share of the weights a GEMM over `tokens` tokens reads when each keeps `kept` of the activations,
    independently: 1 - (1 - kept)^tokens (exactly 1 when kept is 1)."""
    if kept >= 1.0:
        return np.ones_like(np.asarray(tokens, dtype=float))
    return 1.0 - (1.0 - kept) ** np.maximum(np.asarray(tokens, dtype=float), 1.0)


def exploits(support: SparsitySupport, fmt) -> bool:
    """Whether a device with `support` runs a format's weight pattern sparse: it supports the pattern, and the pattern
    saves it math or bytes there. A pattern computed dense whose layout is no smaller than dense weights of the
    format's bits (unstructured sparsity at or below its break-even: 16 location bits beside each kept value, so 50%
    at 16 bits and 80% at 4) is stored and computed dense, as a KV cache below its break-even stays dense
    (kernels/kv_sparsity.py): an engine would not choose the larger layout. So a pattern never stores more weight
    bytes than dense unless it skips math (N:M at 2 bits)."""
    if fmt is None or fmt.sparsity == DENSE or fmt.sparsity not in support:
        return False
    return parse_sparsity(fmt.sparsity).compute_density < 1.0 or fmt.sparse_weight_scale < 1.0


def _layout_size(fmt) -> str:
    """A format's compressed weight layout against its dense weights ('1.21x the bytes of dense 2-bit weights')."""
    return f"{fmt.sparse_weight_scale:.2f}x the bytes of dense {fmt.weight_bits:g}-bit weights"


def _larger_layout(fmt) -> str:
    """Why a supported pattern runs dense (exploits is false): its layout's size against dense weights."""
    return (f"its compressed layout would take {_layout_size(fmt)}, its position bits outweighing the zeros left out, "
            f"and skip no math")


def _exploited(fmt) -> str:
    """An exploited pattern, with the bytes it reads where its layout is no smaller than dense (N:M at 2 or 3 bits:
    its index bits outweigh the zeros left out)."""
    if fmt.sparse_weight_scale < 1.0:
        return "exploited"
    return f"exploited, reading {_layout_size(fmt)} for the math it skips"


def sparsity_notice(support: SparsitySupport, device: str, fmt) -> str:
    """What a device does with the sparsity of a format it does not exploit, or exploits in a layout larger than the
    dense weights ('' when it exploits all of it and saves bytes)."""
    parts = []
    if fmt.sparsity != DENSE and fmt.sparsity not in support:
        parts.append(f"sparsity {fmt.sparsity} runs dense on {device} (weights stored and computed dense; it "
                     f"exploits {support.words()})")
    elif fmt.sparsity != DENSE and not exploits(support, fmt):
        parts.append(f"sparsity {fmt.sparsity} runs dense on {device} (weights stored and computed dense): "
                     f"{_larger_layout(fmt)}")
    elif fmt.sparsity != DENSE and fmt.sparse_weight_scale >= 1.0:
        parts.append(f"sparsity {fmt.sparsity} stored compressed takes {_layout_size(fmt)} (its position bits "
                     f"outweigh the zeros left out): a decode on {device} reads more than dense weights would, for the "
                     f"math it skips")
    if fmt.act_kept < 1.0 and not support.activation:
        parts.append(f"activation sparsity (act_kept {fmt.act_kept:g}) runs dense on {device} (no kernel reads "
                     f"only the kept rows there)")
    return "; ".join(parts)


def sparsity_use(support: SparsitySupport, device: str, fmt, sequences: int = 1, at_most: bool = False) -> str:
    """How a device runs a format's sparsity, for a results column: each pattern exploited or run dense ('' for a
    dense format); exploited activation sparsity with the share of the MLP's weights a decode step of `sequences`
    reads (at most `sequences` where `at_most`: a serving run's), the union of their kept rows."""
    parts = []
    if fmt.sparsity != DENSE:
        how = (_exploited(fmt) if exploits(support, fmt) else "run dense (not supported)"
               if fmt.sparsity not in support else f"run dense: {_larger_layout(fmt)}")
        parts.append(f"{fmt.sparsity} {how}")
    if fmt.act_kept < 1.0:
        how = "exploited" if support.activation else "run dense (not supported)"
        predictor = f", {fmt.act_predictor} predictor" if fmt.act_predictor != "none" else ""
        read = float(union_share(fmt.act_kept, sequences))
        # Where the tokens' kept rows cover most of the MLP, exploiting the sparsity saves little: say how little.
        step = "" if sequences <= 1 or not support.activation else (
            f", a decode step of {'up to ' * at_most}{sequences} sequences reading {'up to ' * at_most}"
            f"{'over 99.9%' if read > 0.999 else f'{read:.1%}'} of the MLP's weights (the union of their kept rows)")
        parts.append(f"activations {fmt.act_kept:g} {how}{predictor}{step}")
    return "; ".join(parts)
