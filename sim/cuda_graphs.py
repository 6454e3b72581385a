"""The CUDA graphs a serving engine captures, and the launch mode and token count each of its passes runs in (vLLM v1).

vLLM v1 captures its model's forward at a list of token counts (vllm-project/vllm vllm/config/vllm.py at 000fc94,
VllmConfig._set_cudagraph_sizes): 1, 2 and 4, every multiple of 8 below 256, every multiple of 16 from 256 up to the
largest, and a speculative decode's multiples of its query length q (n x q for n in a request-count grid of the same
steps). The largest follows the scheduler's limits (CaptureLimits): "max_cudagraph_capture_size = min(
self.scheduler_config.max_num_seqs * decode_query_len * 2, 512)", then "min(max_num_tokens,
max_cudagraph_capture_size)" with max_num_tokens its max_num_batched_tokens. With max_num_seqs 256 (its default) and
any max_num_batched_tokens from 512 the largest is 512 (data-centre Blackwell's 1,024 is not modeled); with
max_num_seqs 64 it is 128. Its default
optimization level (-O2) sets cudagraph_mode FULL_AND_PIECEWISE (same file, OPTIMIZATION_LEVEL_02): a uniform decode
batch (every sequence decoding the same query length, no prefill) replays a full graph of the whole forward, attention
included; any other pass (a prefill, chunks beside decodes) replays piecewise graphs, the pieces between the attention
layers captured and the attention launched from the host between them; a pass that cascades a shared prefix skips
the full graphs for the piecewise ones (vllm/v1/cudagraph_dispatcher.py at 009eec3, CudagraphDispatcher.dispatch:
the FULL key of a uniform batch unless use_cascade_attn, else the PIECEWISE key, else none). A pass of n tokens runs
as the smallest captured size of at least n, the model runner padding its input to it (vllm/v1/worker/
gpu_model_runner.py at 000fc94, execute_model: num_tokens_padded): padding tokens run every kernel outside attention
and attention runs the real sequences (StepShape.padding). In an MoE layer they are routed as real tokens are, so
they reach experts of their own: vLLM's pull request #46428 (merged 2026-06-23) says padding tokens "are handled the
same way as real tokens" and adds a skip behind VLLM_MOE_SKIP_PADDING, off by default (SGLang's #25852 describes the
same cost: padded tokens "go through the full router and activate extra experts"). A pass of more tokens than the
largest captured size runs without graphs, every kernel launched from the host, unpadded.

The launch modes are hw_models/device.py's: "graphs" (a full graph), PIECEWISE, "engine" (launched from the host).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import lru_cache

from hw_models.device import PIECEWISE

# vLLM's ceiling on its largest captured size, reached at its default max_num_seqs (module docstring).
LARGEST_CAPTURE = 512


@dataclass(frozen=True)
class CaptureLimits:
    """The scheduler limits vLLM sizes its captured graphs by: the most sequences and the most tokens in one pass
    (max_num_seqs, max_num_batched_tokens; a chunked scheduler's budget is the latter). Defaults: vLLM's 256 and any
    budget from 512, which leave the ceiling at LARGEST_CAPTURE."""

    max_seqs: int = 256
    max_batched_tokens: int = LARGEST_CAPTURE

    def __post_init__(self):
        if self.max_seqs < 1 or self.max_batched_tokens < 1:
            raise ValueError(f"capture limits: found max_seqs {self.max_seqs}, max_batched_tokens "
                             f"{self.max_batched_tokens}, allowed: integers >= 1")

    def largest(self, query: int = 1) -> int:
        """The largest size vLLM captures for decodes of `query` tokens a sequence (module docstring)."""
        return min(self.max_seqs * query * 2, LARGEST_CAPTURE, self.max_batched_tokens)

    def key(self) -> tuple[int, int]:
        """The limits clipped to where they move the ceiling: limits with the same key capture the same sizes."""
        return min(self.max_seqs, LARGEST_CAPTURE // 2), min(self.max_batched_tokens, LARGEST_CAPTURE)


DEFAULT_LIMITS = CaptureLimits()  # vLLM's default max_num_seqs and a budget from 512: the ceiling at LARGEST_CAPTURE


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


def engine_launch(tokens: int, *, uniform_decode: bool, query: int = 1,
                  limits: CaptureLimits | None = None) -> PassLaunch:
    """How vLLM runs a pass of `tokens` tokens in a run whose decodes verify `query` tokens a sequence (module
    docstring): a uniform decode from a full graph at the smallest captured multiple of `query` of at least `tokens` (a
    full graph's key), any other pass from piecewise graphs at the smallest captured size of at least `tokens`; one
    larger than every captured size from the host, as it is. A uniform decode past the largest captured multiple of
    `query` but within the largest size runs piecewise (an assumption: the full graphs have no key for it). `limits`:
    the scheduler's, which set the largest size (None: vLLM's defaults)."""
    sizes = capture_sizes(query, (limits or DEFAULT_LIMITS).largest(query))
    if tokens > sizes[-1]:
        return PassLaunch("engine", tokens)
    above = sizes[bisect.bisect_left(sizes, tokens):]
    if uniform_decode:
        full = next((size for size in above if size % query == 0), None)
        if full is not None:
            return PassLaunch("graphs", full)
    return PassLaunch(PIECEWISE, above[0])
