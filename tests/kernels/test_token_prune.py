"""Prompt-token pruning's prefill (kernels/token_prune.py) against hand counts of the tiny Llama's work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explore.evaluate import Evaluator
from kernels.kernel import KernelKind
from kernels.token_prune import first_pruned_layer, kept_prompt_tokens, pruned_prefill
from tests.explore.tiny_sweep import TINY_CONFIG

LAYERS, BATCH, PROMPT, KEPT = 8, 2, 400, 100
HIDDEN, KV, FFN, HEADS, HEAD_DIM, VOCAB = 64, 2 * 16, 128, 4, 16, 128
# GEMM FLOPs per token of one tiny layer: q (64x64), k and v (64x32 each), o (64x64), gate and up (64x128), down
# (128x64), two FLOPs per multiply-add.
LAYER_GEMM_FLOP = 2 * (HIDDEN * HIDDEN + 2 * HIDDEN * KV + HIDDEN * HIDDEN + 2 * HIDDEN * FFN + FFN * HIDDEN)


def causal_attention_flop(tokens: int) -> float:
    """One layer's prefill attention FLOPs: QK^T and PV over the causal (query, key) pairs of `tokens`."""
    return 4 * BATCH * HEADS * HEAD_DIM * tokens * (tokens + 1) / 2


@pytest.fixture(scope="module")
def prefills(tmp_path_factory):
    path = tmp_path_factory.mktemp("deep") / "config.json"
    path.write_text(json.dumps(TINY_CONFIG | {"num_hidden_layers": LAYERS}))
    evaluator = Evaluator()
    return tuple(evaluator.lowered(str(path), "prefill", BATCH, tokens) for tokens in (PROMPT, KEPT))


def layer_flops(table, kind: KernelKind) -> np.ndarray:
    """FLOPs of each decoder layer's kernels of one kind."""
    out = np.zeros(LAYERS)
    for kernel, flops in zip(table.kernels, table.flops, strict=True):
        if kernel.kind == kind and kernel.layer is not None:
            out[kernel.layer] += flops
    return out


@pytest.mark.parametrize("first", [0, 3, 7])
def test_the_pruned_layers_compute_their_kept_tokens_only(prefills, first):
    full, kept = prefills
    pruned = pruned_prefill(full, kept, first)
    tokens = np.where(np.arange(LAYERS) < first, PROMPT, KEPT)
    assert layer_flops(pruned, KernelKind.GEMM) == pytest.approx(BATCH * tokens * LAYER_GEMM_FLOP)
    assert layer_flops(pruned, KernelKind.ATTENTION_PREFILL) == pytest.approx(
        [causal_attention_flop(t) for t in tokens])
    # The embedding runs on every prompt token, the LM head on each sequence's last token.
    embedding = [i for i, k in enumerate(pruned.kernels) if k.kind == KernelKind.EMBEDDING]
    assert [pruned.kernels[i] for i in embedding] == [k for k in full.kernels if k.kind == KernelKind.EMBEDDING]
    head = pruned.flops[[i for i, k in enumerate(pruned.kernels) if k.kind == KernelKind.GEMM and k.layer is None]]
    assert head.sum() == pytest.approx(2 * BATCH * HIDDEN * VOCAB)
    assert [k.layer for k in pruned.kernels if k.layer is not None] == sorted(
        k.layer for k in pruned.kernels if k.layer is not None)  # in layer order


def test_pruning_nothing_is_the_full_prefill(prefills):
    full, kept = prefills
    whole = pruned_prefill(full, kept, LAYERS)
    assert whole.kernels == full.kernels and np.array_equal(whole.flops, full.flops)


def test_rounding_and_bounds():
    assert first_pruned_layer(32, 9 / 32) == 9
    assert first_pruned_layer(32, 0.0) == 0
    assert first_pruned_layer(32, 0.99) == 32  # 31.7 rounds to every layer: none prunes
    assert kept_prompt_tokens(3500, 0.2) == 700
    assert kept_prompt_tokens(3500, 1e-6) == 1  # the last token always stays
    assert kept_prompt_tokens(3500, 1.0) == 3500
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="allowed"):
            first_pruned_layer(32, bad)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="allowed"):
            kept_prompt_tokens(100, bad)
