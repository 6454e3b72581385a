"""A static speculative batch under a serving engine runs each pass of its steps padded to a captured size
(sim/cuda_graphs.py), as the serving core runs the same batch: vLLM captures 1, 2, 4 and every multiple of 8 below 256
tokens, and for a decode of q tokens a sequence the multiples n x q over the same n. Three sequences verifying q = 4
tokens (k = 3 drafts) are 12 tokens, run as 16 (4 x 4); a draft model's first step over k + 2 = 5 tokens a sequence, 15,
runs as 20 (4 x 5); its later steps of one token, 3, run as 4."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explore.design_point import DesignPoint
from kernels.kernel import KernelKind
from kernels.table import KIND_CODE
from sim.serving_spec import ServingSpec
from tests.explore.test_static_padding import check_and_run
from tests.explore.tiny_sweep import TINY_CONFIG, write_tiny_model

GEMM = KIND_CODE[KernelKind.GEMM]
DRAFT_CONFIG = TINY_CONFIG | {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64}
PROMPT, OUTPUT = 32, 9


@pytest.fixture(scope="module")
def draft(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("draft") / "config.json"
    path.write_text(json.dumps(DRAFT_CONFIG))
    return str(path)


def _point(model: str, batch: int, spec_draft: str, execution: str = "engine") -> DesignPoint:
    # Acceptance 0: every step yields one token, so a static step's keys are the served one's exactly.
    return DesignPoint(model=model, device="h100-sxm", batch=batch, prompt=PROMPT, output=OUTPUT, execution=execution,
                       knobs=(("acceptance", 0.0), ("spec_draft", spec_draft), ("spec_tokens", 3)))


def _static_over_served(evaluator, point: DesignPoint, tmp_path) -> float:
    """The static point's TPOT over that of its batch served: as many requests arriving at once on the static
    scheduler, the serving core padding each iteration (sim/costs.py IterationCostModel.launched)."""
    trace = tmp_path / f"together-{point.batch}.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n" + f"0,{PROMPT},{OUTPUT}\n" * point.batch)
    served = evaluator.evaluate(DesignPoint(
        model=point.model, device=point.device, batch=point.batch, prompt=0, output=0, execution=point.execution,
        knobs=point.knobs, serving=ServingSpec(requests=point.batch, arrival="trace", trace=str(trace),
                                               rate_per_s=None, scheduler="static", max_seqs=point.batch,
                                               max_batched_tokens=point.batch * PROMPT))).metrics
    return evaluator.evaluate(point).metrics["tpot_s"] / served["tpot_s"]


@pytest.mark.parametrize("execution", ["engine", "eager"])
@pytest.mark.parametrize("batch", [3, 5])
@pytest.mark.parametrize("spec_draft", ["medusa", "ngram"])
def test_a_static_verification_pads_as_the_serving_core_does(tiny_config, tiny_evaluator, tmp_path, spec_draft, batch,
                                                             execution):
    """Medusa heads and n-gram drafts run one pass a step, the verification: the static TPOT equals the served one
    (it was 8.7e-5 below it at batch 3 with Medusa heads, 1.2e-4 with n-gram drafts, the 12 verified tokens
    priced unpadded). Eager, the host launches the heads' kernels too, and this host-bound tiny model waits on it
    (the served heads were priced at their kernels' time alone: the static TPOT was 1.040x the served one)."""
    assert _static_over_served(tiny_evaluator, _point(tiny_config, batch, spec_draft, execution),
                               tmp_path) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("batch", [3, 4, 5])
def test_a_draft_models_steps_pad_as_the_serving_core_does(tiny_config, tiny_evaluator, draft, tmp_path, batch):
    """With a draft model the static TPOT equals the served one, at a captured batch and at batches that pad. The
    draft's later step i attends to i keys more than its first step left (vLLM's propose() adds one to seq_lens each
    step), as the static path prices it; the served draft priced every later step at the first's keys less one, 4.9e-6
    of the TPOT at batch 4 (and before the passes padded, 6.5e-5 and 1.09e-4 away at batches 3 and 5)."""
    assert _static_over_served(tiny_evaluator, _point(tiny_config, batch, draft), tmp_path) == pytest.approx(
        1.0, abs=1e-9)


def test_each_pass_runs_its_padded_tokens_in_its_layers(tiny_config, tiny_evaluator, draft):
    """Batch 3, k = 3: every GEMM in the layers runs the padded tokens (16 verified, 20 in the draft's first step, 4 in
    its later ones); the LM head only the positions sampled (12 verified, one a sequence drafted)."""
    point = _point(tiny_config, 3, draft)
    tables = tiny_evaluator.speculative_tables(point, tiny_evaluator.point_tables(
        point, tiny_evaluator.point_device(point)))
    for table, padded, sampled in ((tables.verify, 16, 12), (tables.draft_first, 20, 3), (tables.draft.decode, 4, 3)):
        layers = np.array([k.layer is not None for k in table.kernels])
        gemm = table.kind == GEMM
        assert (table.m[gemm & layers] == padded).all()
        np.testing.assert_allclose(table.m[gemm & ~layers], sampled, rtol=1e-12)


@pytest.mark.parametrize(("batch", "execution"), [(3, "eager"), (4, "engine")])
def test_eager_and_captured_steps_keep_their_traced_passes(tiny_config, tiny_evaluator, draft, batch, execution):
    """An eager pass is never padded, nor an engine's at a captured size (16 verified, 20 drafted first, 4 after)."""
    point = _point(tiny_config, batch, draft, execution)
    tables = tiny_evaluator.speculative_tables(point, tiny_evaluator.point_tables(
        point, tiny_evaluator.point_device(point)))
    for table, tokens in ((tables.verify, 4 * batch), (tables.draft_first, 5 * batch), (tables.draft.decode, batch)):
        layers = np.array([k.layer is not None for k in table.kernels])
        assert (table.m[(table.kind == GEMM) & layers] == tokens).all()


def test_check_counts_the_traces_padded_steps_take(tmp_path, monkeypatch, capsys):
    """A static engine sweep at batch 3 with Medusa heads, k = 3, traces its prefill and decode (2), the decode at the
    padded 4 sequences (1), the step template the padded passes take the rows after their layers from (4:
    kernels/shapes.py template_passes), the verification of 3 sequences and of a lone one (2) and the verification at
    the padded 16 tokens, 4 sequences of 4 (1): 10, and check counts as many (the run traced 9 before the verification
    padded; check, counting the template once for each padded pass, 14)."""
    out, captured = check_and_run(tmp_path, monkeypatch, capsys,
                                  "batch: 3, prompt: 16, output: 4, spec_draft: medusa, spec_tokens: 3")
    assert "up to 10 traces to capture" in out, out
    assert captured == 10


def test_check_counts_a_draft_models_padded_prefill(tmp_path, monkeypatch, capsys):
    """A static engine sweep at batch 3 of 32-token prompts with a draft model: the draft's prefill over 3 x 33
    tokens (each prompt and its slot) runs as 104, traced as one prompt of 104 (Evaluator.tables), which check counts
    beside every other trace the run captures: 23 (before, the run took 22 and check counted 21, missing the draft's
    prefill over the bare prompts that its memory reads its weights from)."""
    draft = write_tiny_model(tmp_path / "draft", TINY_CONFIG | {"num_hidden_layers": 1, "hidden_size": 32,
                                                                "intermediate_size": 64})
    out, captured = check_and_run(tmp_path, monkeypatch, capsys,
                                  f"batch: 3, prompt: 32, output: 4, spec_draft: {draft}, spec_tokens: 3")
    assert f"up to {captured} traces to capture" in out, (captured, out)
    assert captured == 23
