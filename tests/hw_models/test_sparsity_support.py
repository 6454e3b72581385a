"""Which sparsity each device family exploits (hw_models/sparsity_support.py) and what it does to prices: a pattern a
device does not exploit prices exactly dense; one it exploits moves fewer bytes (unstructured: the math stays dense,
so a compute-bound GEMM gains nothing); dense formats are untouched on every preset."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.registry import load_device, preset_names
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable


def _gemm(tokens: int, n: int = 11008, k: int = 4096, module: str = "layers.0.mlp.up_proj") -> Kernel:
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * tokens * n * k, weight_bytes=2.0 * n * k,
                  act_bytes=2.0 * tokens * (n + k), kv_bytes=0.0, dtype="bf16", tensor_core=True, m=tokens, n=n, k=k,
                  batch=1, layer=0, module=module)


TABLE = KernelTable.from_kernels([_gemm(1), _gemm(16), _gemm(2048)])


@pytest.mark.parametrize(("device", "exploited", "dense"), [
    ("a100-sxm-80gb", ["2:4", "unstructured:0.7", "block16:0.5", "block128:0.5"], ["4:8"]),
    ("v100s-pcie", [], ["2:4", "unstructured:0.7", "block64:0.5"]),  # Volta: no measured kernel backs them
    ("npu-only", ["block128:0.5"], ["2:4", "unstructured:0.7", "block64:0.5"]),  # 128 x 128 arrays
    ("alveo-u280", ["2:4", "1:16"], ["unstructured:0.7", "block64:0.5"]),
    ("ampere-altra", [], ["2:4", "unstructured:0.7", "block128:0.5"]),
])
def test_support_by_family(device, exploited, dense):
    support = load_device(device).sparsity_patterns
    assert all(p in support for p in exploited)
    assert not any(p in support for p in dense)


def test_activation_support():
    assert load_device("a100-sxm-80gb").sparsity_patterns.activation
    assert load_device("ampere-altra").sparsity_patterns.activation
    assert not any(load_device(d).sparsity_patterns.activation for d in ("v100s-pcie", "npu-only", "alveo-u280"))


@pytest.mark.parametrize(("device", "pattern"), [("npu-only", "unstructured:0.7"), ("npu-only", "block64:0.5"),
                                                 ("alveo-u280", "block64:0.5"), ("v100s-pcie", "unstructured:0.9"),
                                                 ("ampere-altra", "2:4"), ("a100-sxm-80gb", "4:8")])
def test_unsupported_pattern_prices_exactly_dense(device, pattern):
    model = load_device(device)
    dense = model.cost_table(TABLE.with_format(NumericFormat()), "device")
    # ampere-altra and the A100 exploit activation sparsity: there the check is on the weight pattern alone.
    act_kept = 1.0 if device in ("ampere-altra", "a100-sxm-80gb") else 0.5
    sparse = model.cost_table(TABLE.with_format(NumericFormat(sparsity=pattern, act_kept=act_kept)), "device")
    for name in ("time_s", "compute_s", "memory_s", "compute_J", "memory_J"):
        np.testing.assert_array_equal(getattr(sparse, name), getattr(dense, name))


def test_unstructured_decode_follows_the_bytes_and_prefill_does_not_gain():
    """Uncalibrated A100 roofline: a batch-1 GEMV is memory-bound, so 70% unstructured sparsity (0.3 x 32 bits per
    weight against 16) speeds it up by the weight traffic saved; the 2,048-token GEMM is compute-bound and computed
    dense, so it keeps its time."""
    gpu = load_device("a100-sxm-80gb", calibrated=False)
    dense = gpu.cost_table(TABLE.with_format(NumericFormat()), "device")
    sparse = gpu.cost_table(TABLE.with_format(NumericFormat(sparsity="unstructured:0.7")), "device")
    k, n = 4096, 11008
    dense_B, sparse_B = 2.0 * n * k + 2.0 * (n + k), 2.0 * n * k * 0.6 + 2.0 * (n + k)
    assert sparse.memory_s[0] == pytest.approx(dense.memory_s[0] * sparse_B / dense_B, rel=1e-9)
    assert sparse.time_s[0] < dense.time_s[0]
    assert sparse.compute_s[2] == pytest.approx(dense.compute_s[2], rel=1e-12)
    assert sparse.time_s[2] == pytest.approx(dense.time_s[2], rel=1e-9)


def test_npu_skips_whole_zero_tiles():
    npu = load_device("npu-only")
    dense = npu.cost_table(TABLE.with_format(NumericFormat()), "device")
    sparse = npu.cost_table(TABLE.with_format(NumericFormat(sparsity="block128:0.5")), "device")
    np.testing.assert_allclose(sparse.compute_s, dense.compute_s * 0.5, rtol=1e-12)  # half the folds
    assert (sparse.time_s < dense.time_s).all()


def test_cpu_batch_1_mlp_reads_the_kept_rows():
    cpu = load_device("ampere-altra")
    one = KernelTable.from_kernels([_gemm(1)])
    dense = cpu.cost_table(one.with_format(NumericFormat(weight_bits=4)), "device")
    sparse = cpu.cost_table(one.with_format(NumericFormat(weight_bits=4, act_kept=0.4)), "device")
    assert sparse.time_s[0] < dense.time_s[0]
    ran = one.with_format(NumericFormat(weight_bits=4, act_kept=0.4)).run_on(cpu.sparsity_patterns)
    assert ran.weight_bytes[0] == pytest.approx(0.4 * 11008 * 4096 * (4 + 16 / 128) / 8)  # the kept rows' bytes


@pytest.mark.parametrize("device", preset_names())
def test_dense_formats_are_untouched_on_every_preset(device):
    """Default presets keep today's numbers: a dense format (the default act_kept of 1 included) reaches every
    cost model as the table with_format made, not a copy with other work."""
    model = load_device(device)
    for fmt in (NumericFormat(), NumericFormat(weight_bits=4, act_kept=1.0, act_predictor="deja_vu")):
        table = TABLE.with_format(fmt)
        assert table.run_on(model.sparsity_patterns) is table
