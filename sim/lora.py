"""Multi-LoRA serving: the settings of a run whose requests each run one of many LoRA adapters over one base model.

What each part models, and where:
- each request carries an adapter (workloads/requests.py RequestSet.with_adapters: S-LoRA's synthetic draw);
- the scheduler admits a waiting request only while the running sequences' distinct adapters stay within max_loras,
  passing over the others as vLLM v1 does (sim/schedulers/base.py Scheduler._head);
- an iteration adds each layer's shrink and expand GEMMs over the adapters its sequences run (kernels/lora.py, through
  kernels/shapes.py StepShape.lora_adapters);
- the engine reserves max_loras GPU slots of adapters at lora_rank out of the memory the KV cache would take
  (explore/evaluate.py), as vLLM allocates its stacked LoRA weights (max_loras x max_lora_rank) before profiling the KV
  cache;
- an iteration whose sequences run an adapter not in a slot first copies it from host memory over the device's host
  link into the least recently used slot (activate; sim/replica.py copy_in_s), as vLLM's LRUCacheLoRAModelManager does
  (vllm-project/vllm vllm/lora/model_manager.py at 01533aa8: activate_adapter evicts the oldest active adapter when
  its lora_slots, max_loras, are full, and LoRAModelManager.activate_adapter copies each wrapped module's A and B into
  the slot, set_lora).
Not modeled: adapters loaded from disk (every adapter is taken to be in host memory: vLLM's max_cpu_loras at least the
adapters), LoRA on MoE experts, and LoRA beside speculative decoding, a prefill pool, attention devices, data-parallel
attention, token splitting or swap preemption (refused: lora_unjudged).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

# vLLM's LoRAConfig (vllm-project/vllm vllm/config/lora.py at 01230b40): max_lora_rank one of MaxLoRARanks, 16 by
# default; max_loras >= 1, 1 by default.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
DEFAULT_RANK = 16
DEFAULT_MAX_LORAS = 1
# S-LoRA's power-law exponent at which every adapter is as popular (np.random.power(1) is uniform on [0, 1)).
UNIFORM_ALPHA = 1.0


def lora_settings_error(adapters: object, rank: object, max_loras: object, alpha: object) -> str:
    """Why a spec's LoRA settings are not values it takes ('' where they are), one line naming the key."""
    for name, value, ok, allowed in (
            ("lora_adapters", adapters, _integer(adapters) and adapters >= 0, "an integer >= 0 (0: LoRA off)"),
            ("lora_rank", rank, _integer(rank) and rank in LORA_RANKS,
             f"one of {', '.join(map(str, LORA_RANKS))} (vLLM's max_lora_rank choices)"),
            ("max_loras", max_loras, _integer(max_loras) and max_loras >= 1, "an integer >= 1"),
            ("lora_alpha", alpha, isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0 < alpha <= 1,
             "a number in (0, 1] (S-LoRA's power-law exponent; 1: uniform)")):
        if not ok:
            return f"{name}: found {value!r}, allowed: {allowed}"
    return ""


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def lora_unjudged(*, moe: bool, spec_draft: str, attention_parallel: str, overlap: str, disaggregated: bool,
                  attends_apart: bool, preemption: str, unlinked_device: str = "") -> str:
    """Why LoRA adapters are not modeled beside a serving point's other settings ('' where they are);
    `unlinked_device`: a device of the point that has no way to load adapters from host memory ('' for none)."""
    for conflict, what in (
            (bool(unlinked_device), f"device {unlinked_device!r}, whose preset names no host link to load adapters "
             f"over, and no host_link set (a CPU holds them in its own memory)"),
            (moe, "a model with routed experts (LoRA on MoE experts is not modeled)"),
            (bool(spec_draft), f"spec_draft {spec_draft!r} (LoRA beside speculative decoding is not modeled)"),
            (disaggregated, "a prefill pool (an adapter's requests handed over between pools are not modeled)"),
            (attends_apart, "attention devices (not modeled beside LoRA)"),
            (attention_parallel == "data", "data-parallel attention (not modeled beside LoRA)"),
            (overlap != "none", f"overlap {overlap!r} (token halves of a LoRA iteration are not modeled)"),
            (preemption == "swap", "swap preemption (not modeled beside LoRA; recompute is)")):
        if conflict:
            return f"lora_adapters: found LoRA adapters with {what}, allowed: lora_adapters 0 (off) there"
    return ""


def activate(slots: list[int], used: AbstractSet[int], capacity: int) -> int:
    """Bring the adapters an iteration `used` into `slots` (least recently used first, at most `capacity`), each one
    absent taking the least recently used slot, and mark them the most recently used; returns how many were loaded.
    The admission's max_loras limit keeps `used` within `capacity`, so no adapter of the iteration is evicted for
    another."""
    if len(used) > capacity:
        raise ValueError(f"used: found {len(used)} adapters, allowed: at most the {capacity} slots")
    loaded = 0
    for adapter in sorted(used):
        if adapter in slots:
            slots.remove(adapter)
        else:
            loaded += 1
            if len(slots) >= capacity:
                slots.pop(0)
        slots.append(adapter)
    return loaded
