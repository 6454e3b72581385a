"""H2O's eviction (kv_budget_method: h2o, kernels/kv_eviction.py) against the paper's same-batch latency figure.

H2O (Zhang et al., NeurIPS 2023, abstract: "with the same batch size, H2O can reduce the latency by up to 1.9x").
The runs behind it are in FMInference/H2O h2o_flexgen/benchmark/h2o/ (suite h2o_20_a100_80 in h2o_suite.py, logs in
a100_80/): FlexGen on one A100 80 GB, everything on the GPU (--percent 100 0 100 0 100 0), OPT-13B, batch 4,
5,000 prompt and 5,000 output tokens, full cache against --hh-ratio 0.2 --hh-all, which keeps int(0.2 x 5000) =
1,000 heavy hitters and as many recent tokens (the cache is allocated as hh_k x 2: pytorch_backend.py
init_cache_one_gpu_batch), a budget of 2,000 tokens. The log fo-13b-gbs4-ngbs1-prompt5000-gen5000-... gives decode
throughput 95.628 token/s (full) and 132.591 (H2O): 1.387x; total latency 214.206 s and 155.442 s: 1.378x.
(The 1.9x is OPT-6.7B at batch 24, 2,048 + 2,048 tokens, which has no preset here.) These runs drop OPT's learned
positions (--hh-long-seq: opt_input_embed returns the token embedding alone), so the config's context is raised
to 10,240 positions to admit 10,000 tokens; nothing else of OPT-13B changes. FlexGen runs PyTorch eagerly:
eager execution. Tolerance: each ratio within 25% of the paper's, which bounds both sides.

Not checked: the headline 29x over DeepSpeed Zero-Inference and Accelerate (T4, OPT-6.7B/30B with offloading):
most of it is FlexGen's offloading schedule and the larger batch a 20% cache admits (its logs run batch 52 x 14
GPU batches against FlexGen's 48 x 3), which this project does not search for.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from tests.explore.tiny_sweep import write_long_context

H2O_BUDGET = 2 * int(0.2 * 5000)
PAPER_DECODE_SPEEDUP = 132.591 / 95.628
PAPER_LATENCY_SPEEDUP = 214.206 / 155.442


@pytest.fixture(scope="module")
def opt_13b_long(tmp_path_factory) -> str:
    return write_long_context(tmp_path_factory.mktemp("opt-13b-long"), "opt-13b", 10240)


@pytest.mark.slow  # 5,000 decode steps of OPT-13B priced one by one: about 5 s
def test_h2o_same_batch_latency(tiny_evaluator, opt_13b_long):
    metrics = []
    for knobs in ((), (("kv_budget", H2O_BUDGET), ("kv_budget_method", "h2o"))):
        point = DesignPoint(model=opt_13b_long, device="a100-sxm-80gb", batch=4, prompt=5000, output=5000,
                            execution="eager", knobs=knobs)
        metrics.append(tiny_evaluator.evaluate(point).metrics)
    full, h2o = metrics
    decode = full["tpot_s"] / h2o["tpot_s"]
    latency = full["e2e_s"] / h2o["e2e_s"]
    assert PAPER_DECODE_SPEEDUP * 0.75 <= decode <= PAPER_DECODE_SPEEDUP * 1.25
    assert PAPER_LATENCY_SPEEDUP * 0.75 <= latency <= PAPER_LATENCY_SPEEDUP * 1.25
    assert decode > 1.0 and latency > 1.0  # the paper's conclusion: the budget makes decoding faster
    # Peak GPU memory fell from 70.9 to 46.5 GB in the log: the cache held shrinks with the budget.
    assert h2o["peak_memory_B"] < full["peak_memory_B"]
