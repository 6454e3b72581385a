"""Fixtures of the simulator's tests: the iteration costs of the tiny Llama on an H100."""

from __future__ import annotations

import pytest

from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.shapes import StepTemplate
from sim.costs import IterationCostModel


@pytest.fixture(scope="module")
def costs(tiny_llama, trace_of) -> IterationCostModel:
    """The tiny Llama's serving iterations on an H100, replayed from graphs (in PyTorch eager its every iteration
    would take its host dispatch alone, whatever its shape): about half a millisecond each."""
    def trace(phase: str, batch: int, prompt: int):
        if phase == "decode":
            return trace_of(tiny_llama, "decode", batch, 1, prompt)
        return trace_of(tiny_llama, "prefill", batch, prompt)

    template = StepTemplate.from_model(tiny_llama, NumericFormat(), trace)
    return IterationCostModel(load_device("h100-sxm"), template, execution="graphs")
