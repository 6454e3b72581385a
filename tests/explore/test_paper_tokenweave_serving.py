"""Offline serving throughput of Llama-3.3-70B on eight H100s, with and without TokenWeave's token splitting, against
TokenWeave's Fig. 13.

TokenWeave (Gond, Kwatra and Ramjee, arXiv:2505.11329; v5 abstract: "up to 1.19x higher throughput"). Fig. 13, from
the authors' artifact (github.com/microsoft/tokenweave artifact/csvs/figure_13.csv, made by artifact/figure_13/run.sh
and plot_figure_13.py): vLLM's offline throughput benchmark (artifact/figure_11/bench.py's form: 1,000 prompts, the
default --num-prompts, all submitted at once, ignore_eos), Llama-3.3-70B-Instruct over eight H100s (tp 8), chunked
prefill with --max-num-batched-tokens of 1,024, 2,048, 4,096 or 8,192 tokens, --enforce-eager, random prompts of 512,
1,024 or 2,048 tokens and 128 output tokens (range ratio 0: fixed lengths), total tokens per second (prompt and
output tokens over the run's wall time), the median of its runs. The baseline all-reduces with the multimem kernel
(`baseline_multimem`), TokenWeave splits the tokens (`overlap_fused`). ShareGPT's column is not checked: its lengths
come from a dataset this project does not ship.

Here: llama-3-70b (Llama-3.3-70B's architecture), h100-sxm, tp 8 over nvlink4, `allreduce: nvls`, engine execution,
the chunked scheduler with the run's token budget as its chunk and iteration limit, max_seqs 256 (vLLM v0.8.5's
default for the LLM class, engine/arg_utils.py; the artifact's fork predates the 1,024 later versions give an H100),
1,000 requests arriving within a millisecond (Poisson at 10^6 a second); `overlap: none` against `token_split`.
Nothing is fitted on these runs. Tolerances: each baseline throughput within 15% of the paper's (the engine's eager
launches and its scheduler's own time are priced only as kernel launches), each gain within 10% of the paper's, both
sides; the conclusion (splitting pays in every cell, more with larger chunks) on its own.

Measured at the time of writing: baselines +2.9% to +21.8% of the paper's (three cells past the bound from 2,048-token
chunks on: FAST_BASELINES); gains 1.04-1.05x at 1,024-token chunks against 1.19-1.20x (a miss, below), 1.12-1.16x at
2,048 against 1.20-1.24x, 1.16-1.25x at 4,096 and 8,192 against 1.17-1.26x. While the engine's fused add + RMSNorm
was priced at 2.0-2.3x TokenWeave's Fig. 3 deletions of it, the baselines were -7% to +11%. At 1,024-token chunks
each half is an iteration of about 512 tokens, whose GEMMs the H100's fit (Vidur's measured GEMMs: mid-sized m at 0.57
of the peak, README Accuracy) prices at 21% more than the whole iteration's, so the all-reduces hidden are nearly all
lost again; TokenWeave's own 1K prefill runs within 10% of its no-communication
time (Fig. 11a), with wave-aware split points (hybrid_configs' split_offset) that the model does not choose.
"""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint, with_knobs
from sim.serving_spec import ServingSpec
from workloads.requests import Fixed

OUTPUT = 128
# Fig. 13 (artifact/csvs/figure_13.csv): total tokens/s, (chunk tokens, prompt tokens) -> (baseline, TokenWeave).
PAPER = {(1024, 512): (15948.15, 18974.04), (1024, 1024): (16714.49, 20001.41), (1024, 2048): (17307.37, 20690.13),
         (2048, 512): (17786.64, 21377.05), (2048, 1024): (18055.77, 22399.67), (2048, 2048): (19430.41, 23381.56),
         (4096, 512): (18956.96, 23251.8), (4096, 1024): (19093.96, 23796.67), (4096, 2048): (21777.43, 25443.04),
         (8192, 512): (20513.87, 24769.6), (8192, 1024): (20308.72, 25281.88), (8192, 2048): (22329.72, 28182.5)}
BASELINE_TOLERANCE = 0.15
GAIN_TOLERANCE = 0.10
FAST = {(4096, 1024), (8192, 1024)}  # in the default run; the rest of the grid runs with -m slow
SMALL_CHUNKS = ("1,024-token chunks: each half is an iteration of about 512 tokens whose GEMMs the H100's fit "
                "(Vidur's measured mid-sized GEMMs) prices at 21% more than the whole iteration's, so the hidden "
                "all-reduces are lost again (gain 1.04-1.05x against 1.19-1.20x); TokenWeave's split points are "
                "wave-aware")


def total_tokens_per_s(evaluator, chunk: int, prompt: int, overlap: str) -> float:
    spec = ServingSpec(scheduler="chunked", requests=1000, rate_per_s=1e6, prompt=Fixed(tokens=prompt),
                       output=Fixed(tokens=OUTPUT), max_seqs=256, chunk_tokens=chunk, max_batched_tokens=chunk)
    point = DesignPoint(**with_knobs(dict(model="llama-3-70b", device="h100-sxm", batch=1, prompt=0, output=0,
                                          serving=spec, execution="engine", tp=8, allreduce="nvls", overlap=overlap)))
    metrics = evaluator.evaluate(point).metrics
    return metrics["tokens_per_s"] * (prompt + OUTPUT) / OUTPUT  # every request the same lengths


# Baselines above the bound since the engine's fused add + RMSNorm is priced as TokenWeave's Fig. 3 deletions
# measure it (at 2.0-2.3x them before): the prefill's rest prices 12-14% short of Fig. 11a (test_paper_tokenweave.py
# SHORT), so these iterations run fast.
FAST_BASELINES = {(2048, 512): "20,641 tokens/s against 17,787 (+16.0%)",
                  (2048, 1024): "21,928 tokens/s against 18,056 (+21.4%)",
                  (4096, 1024): "22,497 tokens/s against 19,094 (+17.8%)"}


def _marks(case: tuple[int, int]) -> list:
    marks = [] if case in FAST else [pytest.mark.slow]
    if case[0] == 1024:
        marks.append(pytest.mark.xfail(strict=True, reason=SMALL_CHUNKS))
    elif case in FAST_BASELINES:
        marks.append(pytest.mark.xfail(strict=True, reason="baseline throughput past the 15% bound, the prefill's "
                                       f"non-communication time priced short: {FAST_BASELINES[case]}"))
    return marks


@pytest.mark.parametrize("case", [pytest.param(case, marks=_marks(case), id=f"chunk{case[0]}-prompt{case[1]}")
                                  for case in PAPER])
def test_throughput_and_gain_near_the_paper(evaluator, case):
    baseline, split = (total_tokens_per_s(evaluator, *case, overlap) for overlap in ("none", "token_split"))
    paper_baseline, paper_split = PAPER[case]
    assert abs(baseline / paper_baseline - 1) <= BASELINE_TOLERANCE, (baseline, paper_baseline)
    assert split > baseline  # splitting pays in every cell of the figure
    gain, paper_gain = split / baseline, paper_split / paper_baseline
    assert abs(gain / paper_gain - 1) <= GAIN_TOLERANCE, (gain, paper_gain)


@pytest.mark.slow
def test_the_gain_grows_with_the_chunk(evaluator):
    """The paper's conclusion across its panels: larger chunks give each half more tokens to overlap with."""
    gains = [total_tokens_per_s(evaluator, chunk, 1024, "token_split") / total_tokens_per_s(evaluator, chunk, 1024,
                                                                                            "none")
             for chunk in (1024, 2048, 4096, 8192)]
    assert all(a < b for a, b in zip(gains, gains[1:], strict=False)), gains
