"""What a system is asked to run: a static batch of requests, and the kernel tables of its passes."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from kernels.kv_policy import Window
from kernels.table import KernelTable


@dataclass(frozen=True, kw_only=True)
class BatchWorkload:
    """`batch` requests arriving together, each with a prompt of `prompt_len` tokens and `output_len` outputs.

    The first output token comes from the prefill; each further one from a decode step.
    """

    batch: int
    prompt_len: int
    output_len: int

    def __post_init__(self) -> None:
        for name in ("batch", "prompt_len", "output_len"):
            value = getattr(self, name)
            # A plain int passes before the (slower) check for any integer type; a bool is not a count.
            integral = type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))
            if not integral or value < 1:
                raise ValueError(f"{name}: found {value!r}, allowed: an integer >= 1")

    @property
    def decode_steps(self) -> int:
        return self.output_len - 1

    def decode_kv_lengths(self) -> np.ndarray:
        """Keys each decode step attends to: the prompt, the tokens generated so far, and its own."""
        return self.prompt_len + 1 + np.arange(self.decode_steps)


@dataclass(frozen=True, kw_only=True)
class PassTables:
    """Kernel tables of one prefill and of one decode step (traced at kv length prompt_len + 1).

    `sub_batch_decode` holds (size, decode table) per sub-batch when the device interleaves sub-batches
    in decode (sizes sum to the batch); empty, the batch decodes whole with `decode`.
    """

    prefill: KernelTable
    decode: KernelTable
    attention_window: Window = None  # decode attention's window or KV policy (kernels/kv_policy.py)
    sub_batch_decode: tuple[tuple[int, KernelTable], ...] = ()
