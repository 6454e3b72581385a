"""The per-op roofline (explore/ops_table.py, `explore run --ops`) against LLM-Viewer's analysis of Llama-2-7B on an
RTX A6000.

"LLM Inference Unveiled: Survey and Roofline Model Insights" (Yuan et al., arXiv:2402.16363), Section 2.2 and its
Table 1: the layers of Llama-2-7B on an NVIDIA A6000, sequence length 2048, batch 1, with each layer's OPs, memory
access, arithmetic intensity, roofline maximum performance and bound, for the prefill and the decode. Table 1 is an
image, not readable here; its text is: "during the prefill stage, the majority of computations are compute-bound ...
in the decode stage, all computations are memory-bound". The figures below are what LLM-Viewer computes for that
table, from its own code (hahnyuan/LLM-Viewer model_analyzer.py: a linear layer of ic inputs and oc outputs does
2 ic oc tokens OPs and accesses its 16-bit weights once plus its input and output activations; roofline_model.py:
the maximum performance is the lesser of the peak and intensity x bandwidth; hardwares/hardware_params.py
nvidia_A6000: 768 GB/s, FP16 309.677e12 / 2 = 154.8 TFLOP/s, the same peaks as the rtx-a6000 preset). Attention is
left out: Table 1 prices unfused qk/softmax/sv matmuls that write the 2048 x 2048 scores, where the trace runs
flash attention.

Tolerance: 1% on work and memory access, both exact arithmetic on the same shapes (LLM-Viewer's k/v projections
store to the KV cache the bytes the trace writes as their output); the bounds and the roofline are checked exactly.
Execution graphs: the traced kernels unfused, one per linear layer as Table 1 lists them.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from explore.ops_table import op_rows

HIDDEN, INTERMEDIATE, LAYERS = 4096, 11008, 32  # Llama-2-7B config.json
SEQ = 2048
A6000_PEAK_FLOPS = 309.677e12 / 2  # LLM-Viewer hardware_params nvidia_A6000 FP16
A6000_BANDWIDTH_BPS = 768e9
LINEAR = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
          "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
          "mlp.gate_proj": (HIDDEN, INTERMEDIATE), "mlp.up_proj": (HIDDEN, INTERMEDIATE),
          "mlp.down_proj": (INTERMEDIATE, HIDDEN)}


def llm_viewer(ic: int, oc: int, tokens: int) -> tuple[float, float, float]:
    """LLM-Viewer's (OPs, memory access in bytes, maximum performance in OP/s) of one linear layer, 16 bits."""
    ops = 2.0 * ic * oc * tokens
    access = 2.0 * (ic * oc + ic * tokens + oc * tokens)
    return ops, access, min(A6000_PEAK_FLOPS, ops / access * A6000_BANDWIDTH_BPS)


@pytest.fixture(scope="module")
def rows(evaluator):
    point = DesignPoint(model="llama-2-7b", device="rtx-a6000", batch=1, prompt=SEQ, output=2, execution="graphs")
    evaluation = evaluator.evaluate(point)
    return op_rows(evaluation.tables, evaluator.point_device(point), "graphs")


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("module", sorted(LINEAR))
def test_linear_layers_work_and_traffic_match_llm_viewer(rows, phase, module):
    ic, oc = LINEAR[module]
    ops, access, _ = llm_viewer(ic, oc, SEQ if phase == "prefill" else 1)
    (row,) = [r for r in rows if r.phase == phase and r.module == f"layers.*.{module}"]
    assert row.count == LAYERS
    assert ops * 0.99 <= row.flops / LAYERS <= ops * 1.01
    assert access * 0.99 <= row.bytes / LAYERS <= access * 1.01


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_bounds_agree_with_llm_viewer_and_no_op_beats_its_roofline(rows, phase):
    """Table 1's conclusion: the prefill's linear layers are compute-bound (intensity 1,024 to 1,214 FLOP/B, above
    the A6000's ridge of 202), the decode's memory-bound (about 1 FLOP/B) and no decode op compute-bound (a small one
    may be launch-bound here, which Table 1 does not price); and no linear layer runs faster than LLM-Viewer's maximum
    performance at its intensity (the roofline is an upper bound)."""
    tokens = SEQ if phase == "prefill" else 1
    for module, (ic, oc) in LINEAR.items():
        _, _, max_flops = llm_viewer(ic, oc, tokens)
        (row,) = [r for r in rows if r.phase == phase and r.module == f"layers.*.{module}"]
        assert row.bound == ("compute" if phase == "prefill" else "memory"), (module, row.bound)
        assert row.flops / row.time_s <= max_flops * 1.01, module
    if phase == "decode":
        assert not [r.module for r in rows if r.phase == "decode" and r.bound == "compute"]
    else:
        compute = sum(r.flops for r in rows if r.phase == "prefill" and r.bound == "compute")
        assert compute > 0.5 * sum(r.flops for r in rows if r.phase == "prefill")
