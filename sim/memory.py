"""Device memory a static batch needs: weights, the KV cache at its longest, and peak activations (and what it
offloads to host memory, where it does: sim/offload.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels.kv_policy import Window, kept_tokens


@dataclass(frozen=True, kw_only=True)
class MemoryFootprint:
    weights_B: float
    kv_cache_B: float
    activations_B: float
    offloaded_B: float = 0.0  # weights and KV cache held in host memory instead (sim/offload.py), not in total_B

    @property
    def total_B(self) -> float:
        return self.weights_B + self.kv_cache_B + self.activations_B


def batch_footprint(*, weight_bytes: float, kv_bytes_per_token: float, batch: int, tokens_per_sequence: int,
                    activation_bytes: float, window: Window = None,
                    layer_windows: tuple[int | None, ...] = ()) -> MemoryFootprint:
    """Footprint of `batch` sequences of `tokens_per_sequence` tokens (a sliding window or a KV policy caps the
    cache; `layer_windows`, each layer's own window where layers differ, caps each layer's share of it)."""
    cached = float(layer_kept(kept_tokens(tokens_per_sequence, window), layer_windows))
    return MemoryFootprint(weights_B=weight_bytes, kv_cache_B=kv_bytes_per_token * batch * cached,
                           activations_B=activation_bytes)


def layer_kept(tokens, layer_windows: tuple[int | None, ...]):
    """Tokens' worth of a KV cache of `tokens` tokens (a number or an array) whose bytes a token spreads evenly over
    the layers, each layer keeping the last tokens of its own window (ModelConfig.layer_windows; none: all of them)."""
    if not layer_windows:
        return tokens
    return sum(tokens if w is None else np.minimum(tokens, w) for w in layer_windows) / len(layer_windows)


def infeasible_reason(footprint: MemoryFootprint, capacity_B: float, devices: int = 1) -> str:
    """Empty when the footprint fits, else why not; `capacity_B` is that of all `devices` together."""
    if footprint.total_B <= capacity_B:
        return ""
    held = (f"the {devices} devices have {capacity_B / 1e9:.1f} GB ({capacity_B / devices / 1e9:.1f} each)"
            if devices > 1 else f"the device has {capacity_B / 1e9:.1f} GB")
    return (f"needs {footprint.total_B / 1e9:.1f} GB (weights {footprint.weights_B / 1e9:.1f}, KV cache "
            f"{footprint.kv_cache_B / 1e9:.1f}, activations {footprint.activations_B / 1e9:.1f}) but {held}")
