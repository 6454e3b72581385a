"""The share of a tensor-parallel prefill spent in all-reduce over NVLink, against TokenWeave's Figure 1.

TokenWeave (Gond, Kwatra and Ramjee, "TokenWeave: Efficient Compute-Communication Overlap for Distributed LLM
Inference", arXiv:2505.11329, MLSys 2026). Abstract: tensor parallelism "can introduce overheads of up to 20% even over
GPUs connected via NVLink" (v1; v5: "communication overheads of 20%"). Fig. 1: "Communication overhead of AllReduce for
three models vs sequence length on 8xH100 DGX", prefills of 1K, 2K, 4K, 8K, 16K and 32K tokens. The figure is an image;
its numbers are read from the authors' artifact (github.com/microsoft/tokenweave): artifact/figure_1_3/run.sh runs it
and plot_figure_1_3.py draws it from the five stored runs artifacts_results/output/figure_1_3_summary_{1..5}.csv (the
artifact's README warns of "minor runtime variations compared to those reported in the paper").

How it was measured (run.sh, bench.py): vLLM forked at commit 87aaade (v0.8.5 era), the V1 engine, --enforce-eager,
--disable-custom-all-reduce, batch 1, one output token, the wall time of llm.generate (30 iterations after 10 warm-up),
8 GPUs. Overhead = ((T - T_no_ar1) + (T - T_no_ar2)) / T, where T_no_ar1 and T_no_ar2 are the same model with the
all-reduce after attention, or after the MLP, deleted from every layer: the all-reduce time over the iteration's, what
the share of the communication class in one priced prefill iteration is here (the tool runs collectives between kernels,
never beside them, so deleting them takes off exactly their time). The baseline's all-reduce is neither NCCL's nor
vLLM's custom one: artifact/llama_src_files/pl_baseline_multimem.py ("NVLS-MultiMem All Reduce") calls a Triton multimem
all-reduce on PyTorch symmetric memory over 8 SMs, the reduction done in the NVSwitch (NVLink SHARP).

Llama-3.3-70B, the mean of the five runs' overheads (as the plot script takes them; standard deviation 0.1-0.35 points):
22.5%, 23.2%, 21.4%, 18.7%, 16.0%, 14.3% at 1K..32K. Its non-communication time (T minus the two savings) is 41.5, 72.1,
140.7, 288.4, 617.1, 1395.6 ms. Qwen2.5-72B (22.2% .. 13.8%) and Mixtral-8x22B (15.7% .. 10.6%) have no preset here
(mixtral-8x7b is another model), so they are not checked.

Here: llama-3-70b (Meta-Llama-3-70B's config: Llama-3.3-70B's architecture, hidden 8192, 80 layers, 64 heads, 8 KV
heads; the longer context of 3.3 changes RoPE scaling only), h100-sxm, tp 8 over nvlink4 (its default link), bf16,
engine execution, NCCL all-reduce (the default: the paper disabled vLLM's custom one, and its multimem one has no
counterpart here; every message is 16 MB or more), one prefill of each length priced as one iteration. Each share must
lie within 20% of the paper's (the tolerance of the other all-reduce check, test_paper_vllm_allreduce.py), which bounds
both sides; the conclusion (a share worth overlapping at every length, falling from 4K on as attention grows) is checked
on its own.

Measured at the time of writing: 27.6%, 26.0%, 24.8%, 23.8%, 22.5%, 20.7%. The non-communication time agrees with the
paper's within 6% (41.7, 75.9, 145.7, 291.5, 607.6, 1336 ms), though not its split: our fused residual-add RMSNorms take
8.5 ms at 1K and 252 ms at 32K, where the same runs' Fig. 3 deletions save 3.4 and 111 ms. The all-reduce costs
1.22-1.50x the paper's (our 15.9 ms against 12.0 at 1K, 348 against 232 at 32K). At 32K each all-reduce of 537 MB took
the paper 1.45 ms (370 GB/s of algorithm bandwidth): beyond any ring or two-shot all-reduce over NVLink4's 450 GB/s a
direction, whose 2 (n - 1) / n of the buffer caps it at 257 GB/s, and within NVLink SHARP's (1 + 1/n) of the buffer, 400
GB/s. Ours, fitted on NCCL's measured calls (h200-hgx), takes 2.17 ms (247 GB/s).

TokenWeave's remedy and its "up to 29% latency gains" (v1; 1.28x in v5) are not checked: splitting the tokens in two to
overlap one half's all-reduce with the other's compute, and its fused AllReduce-RMSNorm kernel, have no counterpart.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from kernels.shapes import step_shape
from sim.costs import TIME_CLASS_NAMES
from sim.serving_spec import ServingSpec

TOKENS = (1024, 2048, 4096, 8192, 16384, 32768)
# Fig. 1, Llama-3.3-70B: mean of the artifact's five runs (figure_1_3_summary_{1..5}.csv), all-reduce share by length.
PAPER_SHARE = dict(zip(TOKENS, (0.225, 0.232, 0.214, 0.187, 0.160, 0.143), strict=True))
TOLERANCE = 0.20
NVLS = ("the paper's baseline all-reduces with NVLink SHARP (multimem on PyTorch symmetric memory, the reduction "
        "in the NVSwitch: (1 + 1/n) of the buffer over each GPU's link against a ring's 2 (n - 1) / n); the tool "
        "prices NCCL fitted on h200-hgx calls, ring-like at these sizes, and has no NVLS all-reduce. Our "
        "non-communication time agrees within 6%; our all-reduce costs ")
# Where ours misses: (our share, against the paper's), (our all-reduce time, against the paper's saving).
MISSES = {1024: ("27.6% (+23%)", "15.9 ms against 12.0 ms, 1.33x"),
          8192: ("23.8% (+27%)", "90.9 ms against 66.3 ms, 1.37x"),
          16384: ("22.5% (+41%)", "177 ms against 118 ms, 1.50x"),
          32768: ("20.7% (+45%)", "348 ms against 232 ms, 1.50x")}


@pytest.fixture(scope="module")
def shares(evaluator) -> dict[int, float]:
    """The communication class's share of one prefill iteration's time, by prompt length."""
    point = DesignPoint(model="llama-3-70b", device="h100-sxm", batch=1, prompt=0, output=0, serving=ServingSpec(),
                        execution="engine", tp=8)
    model = evaluator.cost_model(point, point.numeric_format)
    out = {}
    for tokens in TOKENS:
        cost = model.price(step_shape([(tokens, 0)], [], sampled=1))
        out[tokens] = float(cost.class_time_s[TIME_CLASS_NAMES.index("communication")] / cost.time_s)
    return out


def test_all_reduce_is_a_real_share_that_falls_at_long_sequences(shares):
    """The paper's premise and Fig. 1's shape: every length from 1K to 32K spends a share worth overlapping in
    all-reduce (the paper's least is 14%), and from 4K on the share falls as attention's quadratic work grows."""
    assert min(shares.values()) >= 0.10, shares
    long = [shares[tokens] for tokens in TOKENS if tokens >= 4096]
    assert all(a > b for a, b in zip(long, long[1:], strict=False)), shares
    assert shares[32768] < max(shares[tokens] for tokens in TOKENS if tokens <= 4096), shares


def _miss(tokens: int) -> list:
    if tokens not in MISSES:
        return []
    share, all_reduce = MISSES[tokens]
    return [pytest.mark.xfail(strict=True, reason=f"{tokens} tokens: ours {share} against the paper's "
                                                  f"{PAPER_SHARE[tokens]:.1%}: {NVLS}{all_reduce}")]


@pytest.mark.parametrize("tokens", [pytest.param(tokens, marks=_miss(tokens)) for tokens in TOKENS])
def test_share_near_the_paper(shares, tokens):
    assert abs(shares[tokens] / PAPER_SHARE[tokens] - 1) <= TOLERANCE, (shares[tokens], PAPER_SHARE[tokens])
