"""The CUDA graphs a serving engine captures, and the launch mode and token count each of its passes runs in (vLLM v1).

vLLM v1 captures its model's forward at a list of token counts (vllm-project/vllm vllm/config/vllm.py at 000fc94,
VllmConfig._set_cudagraph_sizes): 1, 2 and 4, every multiple of 8 below 256, every multiple of 16 from 256 up to the
largest, min(2 x max_num_seqs x the decode's query length, 512), and a speculative decode's multiples of its query
length q (n x q for n in a request-count grid of the same steps). With max_num_seqs 256 (its default) and any
max_num_batched_tokens from 512 the largest is 512 (data-centre Blackwell's 1,024 is not modeled). Its default
optimization level (-O2) sets cudagraph_mode FULL_AND_PIECEWISE (same file, OPTIMIZATION_LEVEL_02): a uniform decode
batch (every sequence decoding the same query length, no prefill) replays a full graph of the whole forward, attention
included; any other pass (a prefill, chunks beside decodes) replays piecewise graphs, the pieces between the attention
layers captured and the attention launched from the host between them; a pass that cascades a shared prefix skips
the full graphs for the piecewise ones (vllm/v1/cudagraph_dispatcher.py at 009eec3, CudagraphDispatcher.dispatch:
the FULL key of a uniform batch unless use_cascade_attn, else the PIECEWISE key, else none). A pass of n tokens runs
as the smallest captured size of at least n, the model runner padding its input to it (vllm/v1/worker/
gpu_model_runner.py at 000fc94, execute_model: num_tokens_padded): padding tokens run every kernel outside attention
and attention runs the real sequences (StepShape.padding). A pass of more tokens than the largest captured size runs
without graphs, every kernel launched from the host, unpadded.

The launch modes are hw_models/device.py's: "graphs" (a full graph), PIECEWISE, "engine" (launched from the host).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import lru_cache

from hw_models.device import PIECEWISE

# vLLM's largest captured size at its defaults (module docstring).
LARGEST_CAPTURE = 512


@lru_cache(maxsize=64)
def capture_sizes(query: int = 1, largest: int = LARGEST_CAPTURE) -> tuple[int, ...]:
    """The token counts vLLM captures, ascending, up to `largest`: its grid of sizes and, for a speculative decode of
    `query` tokens a sequence, the multiples of `query` over the same grid of request counts."""
    grid = [size for size in (1, 2, 4) if size <= largest]
    grid += list(range(8, min(largest + 1, 256), 8)) + list(range(256, largest + 1, 16))
    decodes = [n * query for n in grid if n * query <= largest] if query > 1 else []
    return tuple(sorted(set(grid + decodes)))


@dataclass(frozen=True)
class PassLaunch:
    """How an engine runs a pass: its launch mode and the tokens it runs, its padding included."""

    mode: str
    tokens: int


def engine_launch(tokens: int, *, uniform_decode: bool, query: int = 1) -> PassLaunch:
    """How vLLM runs a pass of `tokens` tokens in a run whose decodes verify `query` tokens a sequence (module
    docstring): a uniform decode from a full graph at the smallest captured multiple of `query` of at least `tokens` (a
    full graph's key), any other pass from piecewise graphs at the smallest captured size of at least `tokens`; one
    larger than every captured size from the host, as it is. A uniform decode past the largest captured multiple of
    `query` but within the largest size runs piecewise (an assumption: the full graphs have no key for it)."""
    sizes = capture_sizes(query)
    if tokens > sizes[-1]:
        return PassLaunch("engine", tokens)
    above = sizes[bisect.bisect_left(sizes, tokens):]
    if uniform_decode:
        full = next((size for size in above if size % query == 0), None)
        if full is not None:
            return PassLaunch("graphs", full)
    return PassLaunch(PIECEWISE, above[0])
