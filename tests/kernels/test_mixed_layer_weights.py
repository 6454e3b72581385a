"""The weights a mixed step template counts (kernels/mixed_layers.py model_template): a model of dense and MoE layers
holds each layer's own."""

from __future__ import annotations

from tests.kernels.test_mla import _tiny
from tests.kernels.test_mla_template import _template


def test_the_weights_of_dense_and_moe_layers_are_each_layers_own(trace_of):
    """Two layers, the first dense, traced in bfloat16 with DeepSeek-V3's float32 e_score_correction_bias. Per layer:
    attention q_a_proj 64 x 24 = 1,536, its norm 24, q_b_proj 24 x 4 x 12 = 1,152, kv_a_proj_with_mqa 64 x 20 = 1,280,
    the latent's norm 16, kv_b_proj 16 x 4 x 14 = 896, o_proj 4 x 6 x 64 = 1,536 (6,440), and two norms of 64. The
    dense MLP 3 x 64 x 96 = 18,432; the MoE MLP 8 experts of 3 x 64 x 32 = 6,144, a shared one as large, the router
    64 x 8 = 512 and the bias 8 (55,816). Embedding and LM head 50 x 64 each, the final norm 64: 93,848 parameters,
    2 B each but the one MoE layer's 8 biases, 4 B: 187,712 B (a mix scaling the all-MoE template's bytes per
    parameter to the model counts the bias in both layers, in proportion)."""
    config = _tiny(num_hidden_layers=2, torch_dtype="bfloat16")
    assert config.param_count() == 2 * (6440 + 2 * 64) + 18432 + 55816 + 2 * 50 * 64 + 64 == 93_848
    assert _template(config, trace_of).param_bytes == 2 * 93_848 + 2 * 8
