"""Whether a real (not fake) traced pass fits in this machine's memory, judged without torch: explore trace --real
refuses one that does not before importing it (seconds), as workloads/capture.py trace_model refuses it before
allocating."""

from __future__ import annotations

from workloads.errors import InputError
from workloads.model_config import ModelConfig
from workloads.trace import DTYPE_BYTES


def real_execution_bytes(config: ModelConfig, batch: int, positions: int, new_tokens: int) -> float:
    """A lower bound of the memory a real (not fake) pass allocates: the weights, the KV cache of `positions`
    tokens per sequence, and the logits and one MLP hidden state of the `new_tokens` run, at the model's dtype."""
    element_B = DTYPE_BYTES[config.dtype]
    tokens = batch * new_tokens
    hidden = max(config.intermediate_size, config.hidden_size) * max(config.experts_per_token, 1)
    return element_B * (config.param_count() + batch * positions * config.kv_bytes_per_token(bits=8)
                        + tokens * (config.vocab_size + hidden))


def available_memory_bytes() -> float | None:
    """Memory the system can give this process now (Linux: MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_real_memory(config: ModelConfig, batch: int, positions: int, new_tokens: int) -> None:
    """Refuse in one line a real pass that cannot fit in this machine's memory (it would fail deep in torch's
    allocator, or swap for hours)."""
    needed = real_execution_bytes(config, batch, positions, new_tokens)
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise InputError(f"--real: found a pass needing at least {needed / 1e9:,.1f} GB ({config.name}, batch "
                         f"{batch:,}, {positions:,} positions), allowed: what this machine has free "
                         f"({available / 1e9:,.1f} GB): run it on fake tensors (without --real) or smaller")
