"""The fused-attention model (hw_models/gpu_attention.py): times by hand, parameters recovered from synthetic rows,
and held-out error on aiconfigurator's measured H200 attention kernels."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hw_models.calibration import fit_attention, predict, train_sources
from hw_models.gpu import GPUModel
from hw_models.gpu_attention import AttentionFit, attention_shapes, kv_splits, shaped_attention_times
from hw_models.gpu_efficiency import Calibration
from hw_models.registry import load_device
from kernels.measured import TORCH_SDPA_BACKEND, MeasuredKernel
from kernels.table import KernelTable

AICONFIGURATOR = Path(__file__).resolve().parents[3] / "shared" / "data" / "aiconfigurator"


def _row(*, batch, heads, kv_heads, q_len, kv_len, head_dim, time_s=1.0, kv_dtype="", source="synthetic", backend=""):
    return MeasuredKernel(device="h200", kernel="attention_prefill" if q_len > 1 else "attention_decode",
                          dtype="bf16", kv_dtype=kv_dtype, time_s=time_s, source=source, batch=batch, seq_len=q_len,
                          kv_len=kv_len, heads=heads, kv_heads=kv_heads, head_dim=head_dim, backend=backend)


def _model(fit: AttentionFit) -> GPUModel:
    base = load_device("h200", calibrated=False)
    return GPUModel(base.spec, calibration=Calibration(device="h200", attention=fit))


def test_split_kv_follows_flash_attention_heuristic():
    # 8 blocks on 132 SMs with 512 key tiles: the best wave efficiency (16 splits: 128/132) within 85% is first
    # reached at 14 splits (112/132); enough blocks, or 4 key tiles or fewer, never split.
    assert kv_splits(np.array([8.0, 8.0, 512.0]), 132, np.array([512.0, 4.0, 512.0])).tolist() == [14, 1, 1]


def test_split_lookup_gives_the_search_answer():
    """Whole block counts take the heuristic's answer from a table made once per SM count: every block count up to
    and past 80% of the SMs and every key length gives the times the search itself gives."""
    batch, kv_len = (a.ravel() for a in np.meshgrid(np.arange(1, 40.0), 64.0 * np.arange(1, 70), indexing="ij"))
    shapes = attention_shapes(flops=4.0 * 128 * kv_len * 32 * batch, act_bytes=2.0 * 2 * 32 * 128 * batch,
                              kv_bytes=4.0 * 8 * kv_len * 128 * batch, batch=batch, heads=32, kv_heads=8, q_len=1,
                              kv_len=kv_len, head_dim=128)
    assert shapes.whole_blocks
    fit = AttentionFit(compute_fraction=0.6, bandwidth_fraction=0.8, latency_s=9e-6, block_s=2e-6,
                       block_bandwidth_Bps=20e9)
    def times(s, sm_count):
        return shaped_attention_times(s, flops_per_s=1e15, bandwidth_Bps=3e12, sm_count=sm_count, fit=fit)

    for sm_count in (58, 80, 108, 132, 148):
        looked_up, searched = times(shapes, sm_count), times(replace(shapes, whole_blocks=False), sm_count)
        for a, b in zip(looked_up, searched, strict=True):
            np.testing.assert_array_equal(a, b)


def test_decode_time_by_hand():
    fit = AttentionFit(compute_fraction=0.6, bandwidth_fraction=0.8, latency_s=9e-6, block_s=2e-6,
                       block_bandwidth_Bps=60e9)
    kv_bytes = 2.0 * 64 * 8 * 4096 * 128 * 2  # K and V: batch 64, 8 KV heads, 4096 keys, head dim 128, bf16
    qo_bytes = 2.0 * 64 * 32 * 1 * 128 * 2  # the 32 query heads' query and output rows
    # Full occupancy: 64 x 8 = 512 blocks fill the SMs (no split), and 132 blocks at 60 GB/s could draw more than
    # the DRAM: traffic at 80% of 4.8 TB/s bounds the time.
    time_s = predict(_model(fit), [_row(batch=64, heads=32, kv_heads=8, q_len=1, kv_len=4096, head_dim=128)])[0]
    assert time_s == pytest.approx((kv_bytes + qo_bytes) / (4.8e12 * 0.8) + 9e-6, rel=1e-9)
    # Batch 1 at 64K keys: 8 blocks, split 14 ways (112 blocks, one wave); each block streams its 1/112 of the
    # cache at 20 GB/s, slower than the DRAM would allow: the blocks bound the time.
    fit = replace(fit, block_bandwidth_Bps=20e9)
    time_s = predict(_model(fit), [_row(batch=1, heads=32, kv_heads=8, q_len=1, kv_len=65536, head_dim=128)])[0]
    kv_bytes = 2.0 * 8 * 65536 * 128 * 2
    assert time_s == pytest.approx(9e-6 + 2e-6 + kv_bytes / 112 / 20e9, rel=1e-9)


def test_fp8_kv_and_decode_rows_take_their_own_fits():
    prefill = AttentionFit(compute_fraction=0.5, bandwidth_fraction=0.5, latency_s=1e-6)
    fit = replace(prefill, decode=replace(prefill, latency_s=2e-6),
                  fp8_kv=replace(prefill, latency_s=3e-6, decode=replace(prefill, latency_s=4e-6)))
    shape = dict(batch=1, heads=1, kv_heads=1, kv_len=1, head_dim=64)
    rows = [_row(q_len=2, **shape), _row(q_len=1, **shape), _row(q_len=2, kv_dtype="fp8", **shape),
            _row(q_len=1, kv_dtype="fp8", **shape)]
    base = load_device("h200", calibrated=False)
    costs = GPUModel(base.spec, calibration=Calibration(device="h200", attention=fit)).cost_table(
        KernelTable.from_kernels([r.to_kernel() for r in rows]), execution="device")
    assert costs.overhead_s.tolist() == pytest.approx([1e-6, 2e-6, 3e-6, 4e-6])


def test_torch_sdpa_kernels_take_their_own_fit_and_engine_kernels_the_top_level():
    # The same decode shape as a measured torch SDPA row, as an eager trace's aten op, and as the engine's paged
    # flash attention (kernels/fusion.py): the first two take the torch_sdpa fit, the last the top level; a device
    # with no torch_sdpa fit prices all three alike.
    engine = AttentionFit(compute_fraction=0.5, bandwidth_fraction=0.5, latency_s=1e-6)
    shape = dict(batch=1, heads=1, kv_heads=1, q_len=1, kv_len=1, head_dim=64)
    kernel = _row(**shape).to_kernel()
    kernels = [_row(backend=TORCH_SDPA_BACKEND, **shape).to_kernel(),
               replace(kernel, op="_scaled_dot_product_cudnn_attention"), replace(kernel, op="paged_flash_attention")]
    table = KernelTable.from_kernels(kernels)
    with_torch = _model(replace(engine, torch_sdpa=replace(engine, latency_s=5e-6)))
    assert with_torch.cost_table(table, execution="device").overhead_s.tolist() == pytest.approx([5e-6, 5e-6, 1e-6])
    assert _model(engine).cost_table(table, execution="device").overhead_s.tolist() == pytest.approx([1e-6] * 3)


def test_fitter_keeps_torch_sdpa_rows_apart():
    """Rows of two libraries, each priced by its own known fit, are fitted back to two fits that each price their
    own rows: torch's (TORCH_SDPA_BACKEND) as the torch_sdpa fit, the engine's as the top level."""
    engine = AttentionFit(compute_fraction=1.0, bandwidth_fraction=0.85, latency_s=9e-6, block_s=2.5e-6,
                          sequence_s=2e-6, block_bandwidth_Bps=60e9, blend=3.0)
    torch_fit = replace(engine, bandwidth_fraction=0.95, latency_s=5e-6, block_s=0.0, sequence_s=0.0)
    rng = np.random.default_rng(7)
    engine_rows = _synthetic_rows(rng, True, 200)
    torch_rows = [replace(r, backend=TORCH_SDPA_BACKEND) for r in _synthetic_rows(rng, True, 200)]
    rows = [replace(r, time_s=float(t)) for r, t in zip(engine_rows, predict(_model(engine), engine_rows), strict=True)]
    rows += [replace(r, time_s=float(t)) for r, t in zip(torch_rows, predict(_model(torch_fit), torch_rows),
                                                            strict=True)]
    fitted = fit_attention(load_device("h200", calibrated=False), rows)
    assert fitted.torch_sdpa is not None and fitted.torch_sdpa.torch_sdpa is None
    assert fitted.latency_s == pytest.approx(engine.latency_s, rel=0.05)
    assert fitted.torch_sdpa.latency_s == pytest.approx(torch_fit.latency_s, rel=0.05)
    np.testing.assert_allclose(predict(_model(fitted), rows), [r.time_s for r in rows], rtol=0.01)


def _synthetic_rows(rng, decode: bool, count: int) -> list[MeasuredKernel]:
    rows = []
    for _ in range(count):
        kv_heads = int(rng.choice([1, 2, 4, 8]))
        q_len = 1 if decode else int(2 ** rng.integers(4, 14))
        kv_len = int(2 ** rng.integers(1, 17)) if decode else q_len
        rows.append(_row(batch=int(2 ** rng.integers(0, 10 if decode else 6)),
                         heads=kv_heads * int(rng.choice([1, 4, 8])), kv_heads=kv_heads, q_len=q_len, kv_len=kv_len,
                         head_dim=int(rng.choice([64, 128, 256]))))
    return rows


@pytest.mark.parametrize("decode", [True, False])
def test_fitter_recovers_known_attention_parameters(decode):
    """Rows priced by the model with known parameters are fitted back to them."""
    truth = (AttentionFit(compute_fraction=1.0, bandwidth_fraction=0.85, latency_s=9e-6, block_s=2.5e-6,
                          sequence_s=2e-6, block_bandwidth_Bps=60e9, blend=3.0) if decode else
             AttentionFit(compute_fraction=0.6, bandwidth_fraction=0.5, latency_s=10e-6, block_s=1.5e-6,
                          sequence_s=3e-6, softmax_flops=400.0, softmax_overlap=8.0, blend=1.5))
    rows = _synthetic_rows(np.random.default_rng(5), decode, 400)
    times = predict(_model(truth), rows)
    rows = [replace(r, time_s=float(t)) for r, t in zip(rows, times, strict=True)]
    fitted = fit_attention(load_device("h200", calibrated=False), rows)
    assert fitted.decode is None and fitted.fp8_kv is None  # one family: the top-level fit
    names = (("bandwidth_fraction", "latency_s", "block_s", "sequence_s", "block_bandwidth_Bps") if decode else
             ("compute_fraction", "latency_s", "sequence_s", "softmax_flops"))
    for name in names:
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=0.05), name
    assert fitted.packs_gqa == truth.packs_gqa
    np.testing.assert_allclose(predict(_model(fitted), rows), times, rtol=0.01)


# A fit on measured H200 rows and the pricing of as many, six seconds of CPU: run with the slow checks. The unit
# run keeps the fitter's path (fit_attention, then predict on the fitted model) in
# test_fitter_recovers_known_attention_parameters.
@pytest.mark.slow
@pytest.mark.skipif(not AICONFIGURATOR.is_dir(), reason="../shared/data/aiconfigurator not present")
def test_held_out_error_on_measured_h200_attention():
    """Fitted on half of aiconfigurator's H200 head configurations (a deterministic subsample of their rows),
    the model prices the other half's prefill and decode kernels within 15% (median)."""
    from kernels.aiconfigurator_import import _attention_rows

    folder = next((AICONFIGURATOR / "h200_sxm" / "attention").glob("*/*"))
    rows = [r for decode, name in ((False, "context"), (True, "generation"))
            for r in _attention_rows(folder / f"{name}_attention_perf.csv.gz", "h200", "h200_sxm", decode)]
    train = set(train_sources({r.source for r in rows}, 0.5))
    fitting = [r for r in rows if r.source in train][::6]
    held_out = [r for r in rows if r.source not in train][::6]
    base = load_device("h200", calibrated=False)
    fit = fit_attention(base, fitting)
    error = predict(_model(fit), held_out) / np.array([r.time_s for r in held_out]) - 1.0
    for kernel in ("attention_prefill", "attention_decode"):
        mask = np.array([r.kernel == kernel for r in held_out])
        assert np.median(np.abs(error[mask])) <= 0.15, kernel


@pytest.mark.parametrize("device_name", ["h200", "l40s", "b200"])  # the GPUs with attention fits
def test_a_few_rows_priced_in_floats_match_the_array_path(monkeypatch, device_name):
    """shaped_attention_times prices one design point's few attention rows in Python floats (_scalar_times) and any
    other call with numpy (_times): the two agree to rounding, on every fit family (prefill, decode, torch's SDPA),
    with and without an L2-resident working set."""
    import hw_models.gpu_attention as attention

    fit = load_device(device_name).calibration.attention
    shapes = attention_shapes(
        flops=np.array([4.0 * 128 * 2048 * 32, 4.0 * 2048 * 2048 * 32 / 2, 4.0 * 128 * 8192 * 32 * 16, 1e9]),
        act_bytes=np.array([2.0 * 2 * 32 * 128, 2.0 * 2048 * 32 * 128 * 2, 16 * 2.0 * 2 * 32 * 128, 1e6]),
        kv_bytes=np.array([2.0 * 2 * 8 * 128 * 2048, 2.0 * 2 * 8 * 128 * 2048, 16 * 2.0 * 2 * 8 * 128 * 8192, 1e7]),
        batch=np.array([1, 1, 16, 4]), heads=np.array([32, 32, 32, 32]), kv_heads=np.array([8, 8, 8, 32]),
        q_len=np.array([1, 2048, 1, 1]), kv_len=np.array([2048, 2048, 8192, 512]),
        head_dim=np.array([128, 128, 128, 128]), torch_sdpa=np.array([False, False, False, True]))
    for cached_bytes in (0.0, 50e6):
        kwargs = dict(flops_per_s=np.full(4, 989e12), bandwidth_Bps=4.8e12, sm_count=132, fit=fit,
                      cached_bytes=cached_bytes)
        floats = shaped_attention_times(shapes, **kwargs)
        monkeypatch.setattr(attention, "SCALAR_ROWS", 0)  # every call through the arrays
        arrays = shaped_attention_times(shapes, **kwargs)
        monkeypatch.undo()
        for got, want in zip(floats, arrays, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12)


def test_a_few_rows_shaped_in_floats_match_the_array_path_bit_for_bit(monkeypatch):
    """attention_shapes takes a few rows in Python floats (_scalar_shapes) and more with numpy: every term, of every
    kind of row (GQA and MHA, a traced prefill without KV bytes, an fp8 or bitmap-packed cache, MLA's latent decode
    and its wider value, torch's SDPA, zero counts raised to one, query tiles crossed), is the same number of the
    same dtype either way, so a serving run's iterations cost the same to the last bit."""
    import hw_models.gpu_attention as attention

    rng = np.random.default_rng(7)
    for _ in range(300):
        rows = int(rng.integers(1, attention.SCALAR_ROWS + 1))
        q_len = rng.choice([0.0, 1.0, 2.0, 5.0, 127.0, 128.0, 129.0, 512.0, 1000.5], rows)
        kv_len = q_len + rng.choice([0.0, 1.0, 130.0, 4096.0, 33333.0], rows)
        heads = rng.choice([0.0, 16.0, 32.0, 128.0], rows)
        kv_heads = rng.choice([0.0, 1.0, 8.0, 32.0], rows)
        batch = rng.choice([0.0, 1.0, 3.0, 64.0, 2.5], rows)
        head_dim = rng.choice([64.0, 128.0, 192.0], rows)
        columns = dict(
            flops=rng.uniform(1e6, 1e13, rows), act_bytes=rng.uniform(0.0, 1e9, rows),
            kv_bytes=rng.choice([0.0, 1.0, 1e5, 1e9], rows) * rng.uniform(0.5, 2.0, rows), batch=batch, heads=heads,
            kv_heads=kv_heads, q_len=q_len, kv_len=kv_len, head_dim=head_dim, torch_sdpa=rng.random(rows) < 0.3,
            v_head_dim=rng.choice([0.0, 128.0], rows), kv_width=rng.choice([0.0, 0.0, 576.0], rows))
        for packing in (1.0, rng.choice([0.5, 1.0], rows)):
            floats = attention_shapes(**columns, kv_packing=packing)
            monkeypatch.setattr(attention, "SCALAR_ROWS", 0)  # every call through the arrays
            arrays = attention_shapes(**columns, kv_packing=packing)
            monkeypatch.undo()
            for name in arrays.__dataclass_fields__:
                got, want = getattr(floats, name), getattr(arrays, name)
                assert np.asarray(got).dtype == np.asarray(want).dtype, name
                assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), (name, got, want, columns)
            for got, want in zip(floats.row_values, arrays.row_values, strict=True):  # what _scalar_times reads
                assert [(type(v), v) for v in got] == [(type(v), v) for v in want]
