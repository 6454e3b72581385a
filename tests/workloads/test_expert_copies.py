"""A fake trace whose MoE layers run one expert of each row count and copy its ops for the others is the trace of
every expert run (workloads/decoder.py MoE, workloads/capture.py copied_ops)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from tests.workloads.same_trace import assert_same_trace
from workloads import decoder
from workloads.capture import capture, copied_ops, trace_model
from workloads.model_config import BALANCED, UNIFORM, load_model_config

# Passes whose rows fill the experts unevenly (balanced: 37 tokens x k rows are no multiple of any model's experts),
# so that an MoE layer runs experts of two row counts; the decode step verifies 2 tokens of 3 sequences.
SHAPES = {"prefill": dict(phase="prefill", batch=1, seq_len=37),
          "decode": dict(phase="decode", batch=3, seq_len=2, context_len=5, sampled=2)}


def _shrunk(name: str, routing: str):
    """The preset with every expert, at most 2 dense first layers and 3 layers after them (two MoE layers traced:
    the first and the last, workloads/layer_replication.py)."""
    config = load_model_config(name)
    dense = min(config.dense_layers, 2)
    return replace(config, dense_layers=dense, num_layers=dense + 3, moe_routing=routing)


@pytest.mark.parametrize("routing", [BALANCED, UNIFORM])
@pytest.mark.parametrize("phase", sorted(SHAPES))
@pytest.mark.parametrize("name", ["mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v2-lite",
                                  # 256 experts, every one run for the reference: 7-10 s a case
                                  pytest.param("deepseek-v3", marks=pytest.mark.slow)])
def test_copied_experts_give_the_trace_of_every_expert_run(name, phase, routing, monkeypatch):
    """Every field of the trace (each op's name, shapes, roles, FLOPs, bytes, module path and layer; the parameters;
    the peak of live activations, which the copies' activations reach as the experts' own did) equals the trace with
    every expert run; and the experts that ran are at most two a traced MoE layer (balanced rows differ by at most
    one), fewer than the experts with ops in an MoE layer of the trace."""
    config, shape = _shrunk(name, routing), SHAPES[phase]
    ran: set[int] = set()
    forward = decoder.RoutedExpert.forward

    def counted(self, *args):
        ran.add(id(self))
        return forward(self, *args)

    monkeypatch.setattr(decoder.RoutedExpert, "forward", counted)
    copied = trace_model(config, **shape)
    experts_run = len(ran)
    every = trace_model(config, copy_experts=False, **shape)
    assert_same_trace(copied, every)
    first_moe = config.dense_layers
    with_ops = {op.module.split(".")[4] for op in every.ops if op.layer == first_moe and ".experts." in op.module}
    assert experts_run <= 2 * 2  # the two traced MoE layers
    assert len(with_ops) > 2


class _AddRelu(torch.nn.Module):
    """Adds relu(x) x into `out`: two activations of its own, read only by its ops."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.ones(1))  # a parameter, so that capture tells fake tensors apart

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> None:
        out.add_(torch.relu(x) * x)


class _CopiesTheSecond(torch.nn.Module):
    """Runs `first`, allocates a large tensor, then `second` (as a copy of first's run where the capture copies)."""

    def __init__(self):
        super().__init__()
        self.first, self.second = _AddRelu(), _AddRelu()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs * 2
        out = torch.zeros_like(x)
        self.first(x, out)
        large = torch.ones((4, 800))
        if not copied_ops(self.first, self.second):
            self.second(x, out)
        return out + large.sum(-1, keepdim=True)


@pytest.mark.parametrize("copy_repeats", [True, False])
def test_a_copied_module_allocates_and_reads_as_it_would_have_run(copy_repeats):
    """The copy's ops are second's, and the peak of live activations is reached inside it, as by hand: during its
    multiply, x, out (4 x 8 float32 each, 128 B), the large tensor (4 x 800, 12,800 B), relu(x) and the product
    (128 B each) are alive: 13,312 B. A copy that allocated nothing would give 13,056 B; one whose reads of x did not
    keep x alive, 13,184 B."""
    with FakeTensorMode():
        module = _CopiesTheSecond()
        trace = capture(module, (torch.ones((4, 8)),), model="toy", phase="prefill", batch=1, seq_len=4,
                        copy_repeats=copy_repeats)
    assert trace.capture_mode == "fake"
    assert trace.peak_activation_bytes == 13_312
    ops = [(op.short_name, op.module) for op in trace.ops if not op.is_view]  # fake factories' detach views aside
    assert ops == [("mul", ""), ("zeros_like", ""), ("relu", "first"), ("mul", "first"), ("add_", "first"),
                   ("ones", ""), ("relu", "second"), ("mul", "second"), ("add_", "second"), ("sum", ""), ("add", "")]
