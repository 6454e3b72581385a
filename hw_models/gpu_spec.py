"""GPUSpec: a GPU preset as written in YAML (datasheet units in the key names), with SI properties."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from hw_models.spec_common import (
    SPEC_CONFIG,
    AddsKeys,
    AreaSpec,
    HostLinkSpec,
    NonNegative,
    OffChipMemory,
    Positive,
    PowerSpec,
    PriceSpec,
    Source,
    SparsityPattern,
    Unread,
    fallback_dtype,
)

DTYPES = Literal["fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4", "fp4"]


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class ComputeSpec:
    sm_count: Annotated[int, Field(gt=0)]
    # Tensor and vector rates come from peak_TFLOPS; the clock sets what scales with it alone, the SMs' shared-memory
    # bandwidth (hw_models/gpu_unstructured.py).
    boost_clock_MHz: Positive
    # Dense peak rates per dtype (TOPS for integer types); "fp32" is the vector (non-tensor-core) rate. A what-if may
    # add a dtype the preset has no rate for (`--set compute.peak_TFLOPS.fp8=624`: an A100 with fp8 tensor cores),
    # which its GEMMs then run in natively (hw_models/gpu_quant.py quant_plan).
    peak_TFLOPS: Annotated[dict[DTYPES, Positive], AddsKeys()]
    source: Source
    # Weight-sparsity patterns the tensor cores skip zeros of (Ampere and later: 2:4 at twice the dense rate).
    structured_sparsity: tuple[SparsityPattern, ...] = ()
    # CUDA compute capability (major.minor: 9.0 Hopper, 10.0 B200), NVIDIA's "CUDA GPU Compute Capability" table
    # (developer.nvidia.com/cuda-gpus): engines pick kernels by it, as vLLM its MXFP4 MoE kernel
    # (hw_models/gpu_moe.py engine_moe_kernel). None: not known (a device file's own chip), the engines' fallback.
    compute_capability: Positive | None = None

    @model_validator(mode="after")
    def _needs_fp32_and_16bit(self):
        if "fp32" not in self.peak_TFLOPS or not {"fp16", "bf16"} & set(self.peak_TFLOPS):
            raise ValueError("peak_TFLOPS needs fp32 (vector rate) and fp16 or bf16")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class MemorySpec:
    type: str
    capacity_GB: Positive
    bandwidth_GBps: Positive
    l2_cache_MB: Annotated[NonNegative, Unread("a record of the chip; no simulated pass reads it (its effect "
                                                     "is inside the fitted efficiencies; only scoring measured rows "
                                                     "replayed on the same tensors reads it)")]
    source: Source
    # Time of one step of a thread's loop that waits on each load before the next (a vector load of L2-resident
    # input and its use): the floor of PyTorch's row reductions over few rows (hw_models/gpu_reduction.py). None
    # where no measurement sets it: reductions are then priced as the streams they also are.
    serial_load_ns: Positive | None = None
    # The memory a CUDA program can allocate, as the driver reports its total (PyTorch's 'total capacity',
    # cudaMemGetInfo's total; vLLM's total_gpu_memory), in GiB; None: capacity_GB. A datasheet's '80 GB' is 80 GiB
    # of HBM less what the driver reserves (nvidia-smi's total counts a little of that reserve), so this is what
    # weights, KV cache and activations fit in; capacity_GB stays the datasheet's figure.
    usable_GiB: Positive | None = None


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class EnergySpec:
    dram_pJ_per_bit: Positive
    source: Source


# Host time PyTorch eager spends per kernel before its launch (Python, nn.Module calls, the ATen dispatcher, the
# caching allocator; the view ops between kernels included), on the host side of an asynchronous launch: it
# overlaps device time instead of adding to it (sim/step_costs.py). Source: PyTorch blog "Accelerating Generative
# AI with PyTorch II: GPT, Fast" (Team PyTorch, 2023-11-30, pytorch.org/blog/accelerating-generative-ai-2):
# gpt-fast's eager Llama-2-7B, batch 1, bf16, on an A100-80GB, 25.5 tokens/s and "heavily CPU overhead bound", i.e.
# host time per token. Per token it launches 1,818 kernels, counted from its model.py and generate.py (commit
# 9ac48bc, the code the post released): per layer 56 (two 8-op RMSNorms, the wqkv GEMM, 9 rotary ops each for q and
# k, 2 KV-cache index_puts, 2 repeat_interleave copies, 9 for math SDPA with a boolean mask, wo, 2 residual adds,
# 5 in the MLP), and 26 outside the layers (mask and rotary-table gathers, embedding, final norm, LM head, top-k
# sampling, position update, token copies). (1 / 25.5) s / 1,818 = 21.6 us. Derived from this one figure only:
# the decode-step tests validate eager mode on other measurements. Hosts differ: the eager steps of two lent H200
# machines put theirs at 20.8 and 26.0 us (tests/explore/test_validate_h200_steps.py).
FRAMEWORK_DISPATCH_US = 1e6 / 25.5 / 1818


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class OverheadSpec:
    kernel_launch_us: NonNegative  # per kernel launched from the host (eager execution)
    graph_launch_us: NonNegative  # per kernel replayed from a CUDA graph
    source: Source
    # Host time PyTorch eager spends per kernel before its launch: the host's and the framework's, not the GPU's,
    # so one default for every preset (FRAMEWORK_DISPATCH_US) that a device file or a sweep's overrides set to a
    # host's own.
    framework_dispatch_us: NonNegative = FRAMEWORK_DISPATCH_US


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class SiblingSpec:
    """The preset of the same architecture whose fitted efficiency this GPU borrows for kernel classes it has
    no measurements of (a fraction of peak transfers between chips of one architecture; the peaks are this
    GPU's own)."""

    preset: str
    source: Source  # why the two chips share their efficiency: die, SM design, memory technology


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class GPUPowerSpec(PowerSpec):
    """A GPU's power: its TDP, idle power, and a power limit at most the TDP where one is set (a what-if:
    `--set power.cap_W=350`, hw_models/gpu_power.py; unset: no kernel is slowed for its power, which the FLOP energy
    keeps at or below the TDP wherever a fit prices the kernel, hw_models/gpu.py)."""

    cap_W: Positive | None = None

    @model_validator(mode="after")
    def _cap_between_idle_and_tdp(self):
        if self.cap_W is not None and not self.idle_W < self.cap_W <= self.tdp_W:
            raise ValueError(f"cap_W ({self.cap_W:g}) must be above idle_W ({self.idle_W:g}) and at most tdp_W "
                             f"({self.tdp_W:g})")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class GPUSpec(OffChipMemory):
    name: str
    kind: Literal["gpu"]
    description: str
    compute: ComputeSpec
    memory: MemorySpec
    power: GPUPowerSpec
    energy: EnergySpec
    overhead: OverheadSpec
    area: AreaSpec
    price: PriceSpec
    sibling: SiblingSpec | None = None
    # A device file's own fitted calibration: the file `explore calibrate TABLE --device THIS_FILE --out PATH` wrote,
    # its path relative to this file (a preset's calibration ships in hw_models/calibration/ instead).
    calibration: Annotated[str | None, Unread("the file of this device's fitted efficiencies, not a chip figure; a "
                                                 "device file on a base: preset keeps the base's calibration")] = None
    host_link: HostLinkSpec | None = None  # where offloaded bytes stream from (None: a sweep names host_link)

    @property
    def memory_bytes(self) -> float:
        """Bytes a CUDA program can allocate: memory.usable_GiB x 2^30 where the preset gives it, else the
        datasheet's capacity_GB."""
        usable = self.memory.usable_GiB
        return self.memory.capacity_GB * 1e9 if usable is None else usable * 2**30

    @property
    def dram_J_per_byte(self) -> float:
        return self.energy.dram_pJ_per_bit * 8e-12

    def matrix_dtype(self, dtype: str) -> str:
        """The type a kernel dtype's math runs as: itself, or the next wider one the GPU has a rate for."""
        return fallback_dtype(self.compute.peak_TFLOPS, dtype, default=())

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for a dtype; a dtype the GPU lacks runs at the next wider one it has."""
        return self.compute.peak_TFLOPS[self.matrix_dtype(dtype)] * 1e12

