"""Property tests of a design point's metrics (explore.evaluate.Evaluator), over drawn devices, batches, lengths and
numeric formats of a tiny Llama (hypothesis: derandomized, a few examples each; traces are memoized).

- fewer weight (or KV) bits never need more memory (sim/memory.py batch_footprint, through the evaluator);
- a static batch's end-to-end latency is its first token plus one time per output token after it:
  e2e = ttft + (output - 1) x tpot;
- energy is the sum of its parts: energy per token x output tokens = average power x makespan = dynamic
  (compute + memory) energy + idle power (the preset's idle_W) x makespan;
- CUDA graphs are never slower than PyTorch eager, end to end.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from hw_models.registry import read_device_yaml

PROPERTY = settings(max_examples=15, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
# One preset per device family; the NPU beside PIM splits a decode batch into interleaved sub-batches.
DEVICES = ["h100-sxm", "a100-sxm-80gb", "m2-ultra-tmac", "ampere-altra-sail", "neupims", "alveo-u280"]
POINTS = dict(device=st.sampled_from(DEVICES), batch=st.sampled_from([1, 3, 8]), prompt=st.sampled_from([8, 40]),
              output=st.integers(2, 40), execution=st.sampled_from(["eager", "graphs", "engine"]))




def _metrics(evaluator: Evaluator, model: str, **fields) -> dict:
    return evaluator.evaluate(DesignPoint(model=model, **fields)).metrics


@PROPERTY
@given(device=st.sampled_from(DEVICES), batch=st.sampled_from([1, 3, 8]), prompt=st.sampled_from([8, 40]),
       bits=st.lists(st.sampled_from([16, 8, 4, 3, 2]), min_size=2, max_size=2, unique=True),
       kv=st.lists(st.sampled_from([16, 8, 4]), min_size=2, max_size=2, unique=True),
       sparsity=st.sampled_from(["dense", "2:4"]))
def test_fewer_bits_never_need_more_memory(tiny_evaluator, tiny_config, device, batch, prompt, bits, kv, sparsity):
    """Fewer weight bits at the same KV bits, and fewer KV bits at the same weight bits: strictly less memory."""
    (few, more), (kv_few, kv_more) = sorted(bits), sorted(kv)
    common = dict(device=device, batch=batch, prompt=prompt, output=4, sparsity=sparsity)

    def peak(weight_bits: int, kv_bits: int) -> float:
        metrics = _metrics(tiny_evaluator, tiny_config, weight_bits=weight_bits, kv_bits=kv_bits, **common)
        return metrics["peak_memory_B"]

    assert peak(few, kv_more) < peak(more, kv_more)
    assert peak(more, kv_few) < peak(more, kv_more)


@PROPERTY
@given(**POINTS, bits=st.sampled_from([16, 8, 4]))
def test_e2e_is_ttft_plus_a_tpot_per_later_token(tiny_evaluator, tiny_config, device, batch, prompt, output, execution,
                                                 bits):
    m = _metrics(tiny_evaluator, tiny_config, device=device, batch=batch, prompt=prompt, output=output,
                 execution=execution, weight_bits=bits)
    assert m["fits_in_memory"] and m["ttft_s"] > 0 and m["tpot_s"] > 0
    assert m["e2e_s"] == pytest.approx(m["ttft_s"] + (output - 1) * m["tpot_s"], rel=1e-9)
    assert m["tokens_per_s"] == pytest.approx(batch * output / m["e2e_s"], rel=1e-9)  # one batch: makespan = e2e


@PROPERTY
@given(**POINTS, bits=st.sampled_from([16, 8, 4]))
def test_energy_is_the_sum_of_its_parts(tiny_evaluator, tiny_config, device, batch, prompt, output, execution, bits):
    point = DesignPoint(model=tiny_config, device=device, batch=batch, prompt=prompt, output=output,
                        execution=execution, weight_bits=bits)
    evaluation = tiny_evaluator.evaluate(point)
    m, result = evaluation.metrics, evaluation.result
    energy_J = m["energy_per_token_J"] * batch * output
    assert energy_J == pytest.approx(m["avg_power_W"] * result.makespan_s, rel=1e-9)
    parts = result.energy_parts_J
    assert set(parts) == {"compute_J", "memory_J", "static_J"} and all(v >= 0 for v in parts.values())
    assert energy_J == pytest.approx(sum(parts.values()), rel=1e-9)
    idle_W = read_device_yaml(device)[0]["power"]["idle_W"]
    assert parts["static_J"] == pytest.approx(idle_W * result.makespan_s, rel=1e-9)
    assert math.isfinite(energy_J) and parts["compute_J"] + parts["memory_J"] > 0


@PROPERTY
@given(device=st.sampled_from(["h100-sxm", "a100-sxm-80gb", "l4", "v100-sxm2"]), batch=st.sampled_from([1, 3, 8]),
       prompt=st.sampled_from([8, 40]), output=st.integers(2, 40), bits=st.sampled_from([16, 8, 4]))
def test_cuda_graphs_never_slower_than_eager_end_to_end(tiny_evaluator, tiny_config, device, batch, prompt, output,
                                                         bits):
    """Per kernel a graph node costs less than a stream launch (the preset's graph_launch_us <= kernel_launch_us)
    and replays need no host dispatch, so no latency metric of a point is worse with graphs."""
    common = dict(device=device, batch=batch, prompt=prompt, output=output, weight_bits=bits)
    graphs, eager = (_metrics(tiny_evaluator, tiny_config, execution=mode, **common) for mode in ("graphs", "eager"))
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        assert graphs[name] <= eager[name] * (1 + 1e-12), name
    assert graphs["tpot_s"] < eager["tpot_s"]  # a tiny model's decode waits on eager dispatch
