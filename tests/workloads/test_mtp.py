"""DeepSeek's multi-token-prediction module (workloads/mtp.py): read from the config, counted, and its draft step
traced, checked by hand on a tiny DeepSeek.

The tiny DeepSeek (tests/explore/test_deepseek_points.py's, with num_nextn_predict_layers 1): hidden 64, vocabulary
128, 4 heads with 8 + 4 query/key dims and 6 value dims, a direct query projection, a 16-wide latent, 4 routed experts
of 32 (2 a token, softmax, greedy) and one shared. Its MTP module: one MoE decoder layer, whose attention holds 6,800
parameters (q_proj 64 x 4 x 12 = 3,072, kv_a_proj_with_mqa 64 x 20 = 1,280, the latent's norm 16, kv_b_proj 16 x 4 x
14 = 896, o_proj 4 x 6 x 64 = 1,536), its MLP 4 x 6,144 + 6,144 + the router's 256 = 30,976, its two norms 128:
37,904; eh_proj 2 x 64 x 64 = 8,192; enorm, hnorm and the head's norm 3 x 64 = 192: 46,288 of its own. The embedding
and LM head (128 x 64 each, 16,384) are the model's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kernels.kernel import KernelKind
from kernels.lowering import lower_trace
from kernels.table import KIND_CODE, KernelTable
from tests.explore.test_deepseek_points import TINY_DEEPSEEK
from workloads.model_config import config_from_hf, load_model_config
from workloads.trace_cache import trace_key

TINY_MTP = TINY_DEEPSEEK | {"num_nextn_predict_layers": 1}
OWN_PARAMS = 6800 + 30976 + 128 + 8192 + 192
SHARED_PARAMS = 2 * 128 * 64
GEMM = (KIND_CODE[KernelKind.GEMM], KIND_CODE[KernelKind.BATCHED_GEMM])


def _tiny():
    return config_from_hf(TINY_MTP, name="tiny-mtp")


def test_the_config_says_whether_the_model_ships_an_mtp_module():
    assert load_model_config("deepseek-v3").mtp_layers == 1  # config.json num_nextn_predict_layers
    assert load_model_config("deepseek-v2-lite").mtp_layers == 0
    assert config_from_hf(TINY_DEEPSEEK, name="t").mtp_layers == 0
    assert _tiny().mtp_layers == 1


def test_the_module_holds_what_the_config_counts():
    """The module built on fake tensors against ModelConfig.param_count (its embedding and LM head included, as it holds
    them) and the hand count of the module docstring; the model's own count does not change."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from workloads.mtp import MTPModule

    config = _tiny()
    module = config.mtp_module()
    with FakeTensorMode():
        built = sum(p.numel() for p in MTPModule(module).parameters())
    assert built == module.param_count() == OWN_PARAMS + SHARED_PARAMS == 62_672
    assert module.shared_param_count() == SHARED_PARAMS
    assert config.shared_param_count() == 0
    assert module.num_layers == 1 and module.moe_layers == 1  # the layer after the model's last: an MoE one


def test_deepseek_v3s_mtp_module_counts_as_its_weights_readme_says():
    """DeepSeek-V3's README_WEIGHTS.md: the MTP module has 11.5B unique parameters (the 0.9B embedding and 0.9B output
    head shared). By hand: 256 routed experts and one shared of 3 x 7,168 x 2,048 (11,318,329,344), the router 7,168 x
    256 and its bias 256 (1,835,264), MLA 187,107,328 (q_a 7,168 x 1,536, its norm 1,536, q_b 1,536 x 128 x 192,
    kv_a 7,168 x 576, its norm 512, kv_b 512 x 128 x 256, o 128 x 128 x 7,168), eh_proj 2 x 7,168^2 (102,760,448)
    and five norms of 7,168: 11,610,068,224, 1% above the README's rounded 11.5B."""
    module = load_model_config("deepseek-v3").mtp_module()
    own = module.param_count() - module.shared_param_count()
    assert own == 11_318_329_344 + 1_835_264 + 187_107_328 + 102_760_448 + 5 * 7168 == 11_610_068_224
    assert module.shared_param_count() == 2 * 129_280 * 7168  # 0.93B each
    assert own == pytest.approx(11.5e9, rel=0.01)


def test_a_draft_step_by_hand():
    """One draft step of 2 sequences after 10 cached tokens (bf16): eh_proj 2 x 2 x 128 x 64 FLOPs reading its 128 x
    64 weights; the LM head the same over 128 tokens of vocabulary; every GEMM 2 x tokens x its parameters (the two
    absorbed bmms 2 x 4 heads x 2 tokens x (8 x 16 + 16 x 6); each expert one token of 3 x 64 x 32); every weight of
    the module read once (balanced routing reaches all 4 experts) and the two embedding rows gathered; the MTP layer's
    own cache read, 2 x 11 keys x 20 x 2 B, and the new token's latent written, 2 x 20 x 2 B."""
    from workloads.mtp import trace_mtp

    trace = trace_mtp(_tiny().mtp_module(), phase="decode", batch=2, seq_len=1, context_len=10)
    table = KernelTable.from_kernels(lower_trace(trace))
    module = np.array([k.module for k in table.kernels])
    assert list(table.flops[module == "eh_proj"]) == [2 * 2 * 128 * 64]
    assert list(table.weight_bytes[module == "eh_proj"]) == [128 * 64 * 2]
    assert list(table.flops[module == "lm_head"]) == [2 * 2 * 64 * 128]
    gemm_params = 8192 + 3072 + 1280 + 1536 + 256 + 6144 + 8192  # eh_proj, q, kv_a, o, router, shared, LM head
    bmm = 2 * 4 * 2 * (8 * 16 + 16 * 6)
    experts = 4 * 3 * 2 * 1 * 64 * 32
    assert table.flops[np.isin(table.kind, GEMM)].sum() == 2 * 2 * gemm_params + bmm + experts
    assert table.weight_bytes.sum() == (OWN_PARAMS + 128 * 64) * 2 + 2 * 64 * 2
    attention = table.select(table.kind == KIND_CODE[KernelKind.ATTENTION_DECODE])
    assert list(attention.kv_bytes) == [2 * 11 * 20 * 2]
    assert table.kv_bytes.sum() == 2 * 11 * 20 * 2 + 2 * 20 * 2


def test_an_mtp_modules_trace_is_keyed_apart_from_a_one_layer_models():
    """The module's cache key names it (and its code); a model's key leaves out the MTP layers it does not build, so
    its traces are the same with or without them."""
    config = _tiny()
    module = config.mtp_module()
    shape = dict(phase="decode", batch=2, seq_len=1, context_len=10)
    one_layer = trace_key(replace(module, mtp=False), **shape)
    assert trace_key(module, **shape)["module"] == "mtp"
    assert trace_key(module, **shape) != one_layer
    assert trace_key(config, **shape) == trace_key(config_from_hf(TINY_DEEPSEEK, name="tiny-mtp"), **shape)
