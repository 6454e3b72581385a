"""Attention windows that differ by layer, read from a Hugging Face config's `layer_types` (gpt-oss)."""

from __future__ import annotations

from workloads.errors import InputError, found_json

# Hugging Face's names of a layer's attention (transformers configuration_utils ALLOWED_LAYER_TYPES, the two gpt-oss
# uses): keys inside the config's sliding_window, or every key.
SLIDING, FULL = "sliding_attention", "full_attention"
LAYER_TYPES = (SLIDING, FULL)


def layer_windows(cfg: dict, layers: int, where: str) -> tuple[int | None, ...]:
    """Each layer's attention window (None: every key) from `layer_types`, one entry a layer: sliding_window for a
    sliding_attention layer. InputError for a list of another length, an unknown type, or sliding layers without a
    window."""
    types = cfg.get("layer_types")
    if not (isinstance(types, list) and len(types) == layers):
        raise InputError(f"{where}: layer_types: found {found_json(types)}, allowed: a list of {layers} entries "
                         f"(num_hidden_layers), each one of {', '.join(LAYER_TYPES)}")
    for index, kind in enumerate(types):
        if kind not in LAYER_TYPES:
            raise InputError(f"{where}: layer_types[{index}]: found {found_json(kind)}, allowed: "
                             f"{', '.join(LAYER_TYPES)}")
    window = cfg.get("sliding_window")
    if SLIDING in types and window is None:
        raise InputError(f"{where}: sliding_window: found null with {SLIDING} layers, allowed: a positive integer")
    return tuple(window if kind == SLIDING else None for kind in types)
