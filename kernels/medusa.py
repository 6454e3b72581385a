"""Medusa decoding heads as kernels: what a speculative step with Medusa heads adds to the target's pass.

Medusa (Cai et al., "Medusa: Simple LLM Inference Acceleration Framework with Multiple Decoding Heads", ICML
2024, section 2.1.1): head k maps the target's last hidden state h to softmax(W2_k (SiLU(W1_k h) + h)), W1_k a
hidden x hidden matrix (with a bias) and W2_k a hidden x vocab LM head of its own. The reference implementation
(FasterDecoding/Medusa, medusa/model/medusa_model.py) applies every head to every position of the verification
pass, so each head's GEMMs have one row per verified token. Priced as their GEMMs: the SiLU and the residual add
move hidden-sized vectors, under a thousandth of the LM head's bytes. On `tp` tensor-parallel devices each holds
every W1 whole and a vocabulary-parallel share of each LM head (vLLM's Medusa: nn.Linear blocks, ParallelLMHead
heads; the logits' gather is not priced, as the target's is not).
"""

from __future__ import annotations

from kernels.formats import DTYPE_SHORT
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable
from workloads.model_config import ModelConfig
from workloads.trace import DTYPE_BYTES


def medusa_head_params(config: ModelConfig, heads: int, tp: int = 1) -> int:
    """Parameters `heads` Medusa heads hold over `tp` devices: W1 (with its bias) on each, and a vocab-sized LM head
    split over them."""
    h = config.hidden_size
    return heads * ((h * h + h) * tp + h * config.vocab_size)


def medusa_head_table(config: ModelConfig, heads: int, rows: int, tp: int = 1) -> KernelTable:
    """The GEMMs of `heads` Medusa heads over `rows` hidden states (batch x verified tokens), at the model's dtype, as
    one of `tp` devices runs them (its share of each LM head's vocabulary)."""
    element_B = DTYPE_BYTES.get(config.dtype, 2)
    dtype = DTYPE_SHORT.get(config.dtype, config.dtype)
    h = config.hidden_size

    def gemm(name: str, n: int) -> Kernel:
        return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * rows * n * h, weight_bytes=float(n * h * element_B),
                      act_bytes=float((rows * h + rows * n) * element_B), kv_bytes=0.0, dtype=dtype, tensor_core=True,
                      module=name, m=rows, n=n, k=h, batch=1)

    kernels = [gemm(f"medusa_head.{i}.{part}", n) for i in range(heads)
               for part, n in (("block", h), ("lm_head", -(-config.vocab_size // tp)))]
    return KernelTable.from_kernels(kernels)
