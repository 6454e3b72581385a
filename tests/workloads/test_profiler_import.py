"""The torch.profiler importer against facts read off the model: which Linear layers ran, with which weights."""

from __future__ import annotations

import gzip
import json
import time

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from kernels.lowering import lower_trace
from workloads.decoder import DecoderModel, KVCache
from workloads.errors import InputError
from workloads.profiler_import import import_profile, profile_to_trace
from workloads.trace import Trace

BATCH, PROMPT = 2, 8


@pytest.fixture(scope="module")
def profiled(tiny_llama, tmp_path_factory):
    """(chrome trace path, model, profiled wall time in s) of one tiny-llama prefill on CPU."""
    torch.manual_seed(0)
    model = DecoderModel(tiny_llama, torch.float32)
    cache = KVCache(tiny_llama, BATCH, PROMPT, torch.float32)
    ids = torch.randint(0, tiny_llama.vocab_size, (BATCH, PROMPT))
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        model(ids, cache, 0)
        wall_s = time.perf_counter() - start
    path = tmp_path_factory.mktemp("profile") / "trace.json"
    prof.export_chrome_trace(str(path))
    return path, model, wall_s


def _expected_linears(model: DecoderModel) -> list[nn.Linear]:
    """Linear layers in execution order: per layer q, k, v, o, gate, up, down (llama MLP); then the LM head."""
    order = []
    for layer in model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        order += [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
    return order + [model.lm_head]


def test_one_gemm_record_per_linear_with_its_weight_shape(profiled, tiny_llama):
    path, model, _ = profiled
    gemms = [r for r in import_profile(path) if r.op in ("aten::mm", "aten::addmm")]
    linears = _expected_linears(model)
    assert len(linears) == tiny_llama.num_layers * 7 + 1 == sum(isinstance(m, nn.Linear) for m in model.modules())
    assert len(gemms) == len(linears)
    for record, linear in zip(gemms, linears, strict=True):
        out_features, in_features = linear.weight.shape
        a, b = record.input_shapes[-2], record.input_shapes[-1]  # addmm's first input is the bias
        assert b == (in_features, out_features)  # x @ W^T
        assert a[-1] == in_features
        assert record.input_dtypes[-2:] == ("float32", "float32")
    # Every projection sees all batch x prompt tokens; the LM head only the last position of each sequence.
    assert [r.input_shapes[-2][0] for r in gemms] == [BATCH * PROMPT] * (len(gemms) - 1) + [BATCH]


def test_durations_positive_and_within_wall_time(profiled):
    path, _, wall_s = profiled
    records = import_profile(path)
    assert records and all(r.time_s > 0 for r in records)
    assert sum(r.time_s for r in records) <= wall_s
    assert [r.start_s for r in records] == sorted(r.start_s for r in records)


def test_attention_is_attributed_to_the_fused_op_with_causality(profiled, tiny_llama):
    path, _, _ = profiled
    attention = [r for r in import_profile(path) if "scaled_dot_product" in r.op]
    assert len({r.op_id for r in attention}) == tiny_llama.num_layers
    q, k, v = attention[0].input_shapes[:3]
    hd = tiny_llama.head_dim
    assert q == (BATCH, tiny_llama.num_heads, PROMPT, hd)
    assert k == v == (BATCH, tiny_llama.num_kv_heads, PROMPT, hd)
    assert all(r.is_causal in (True, None) for r in attention)


def test_trace_carries_measured_times_and_lowers(profiled, tiny_llama, tmp_path):
    path, model, _ = profiled
    records = import_profile(path)
    trace = profile_to_trace(path, model="tiny-llama", phase="prefill", batch=BATCH, seq_len=PROMPT)
    assert sum(op.attrs["measured_time_s"] for op in trace.ops) == pytest.approx(sum(r.time_s for r in records))
    kernels = lower_trace(trace)
    gemms = [k for k in kernels if k.kind == "gemm"]
    assert [(k.n, k.k) for k in gemms] == [tuple(lin.weight.shape) for lin in _expected_linears(model)]
    assert sum(1 for k in kernels if k.kind == "attention_prefill" and k.causal) == tiny_llama.num_layers
    trace.save(tmp_path / "t.json")
    assert Trace.load(tmp_path / "t.json").ops == trace.ops


def test_gzipped_trace_reads_the_same(profiled, tmp_path):
    path, _, _ = profiled
    gz = tmp_path / "trace.json.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert import_profile(gz) == import_profile(path)


def test_device_kernels_correlate_to_their_launching_op(tmp_path):
    """A hand-written GPU-style trace: kernels found through External id and through runtime correlation."""
    dims = {"Input Dims": [[16, 64], [64, 32]], "Input type": ["c10::BFloat16", "c10::BFloat16"]}
    events = [
        {"ph": "X", "cat": "cpu_op", "name": "aten::linear", "pid": 1, "tid": 1, "ts": 0.0, "dur": 50.0,
         "args": {"External id": 1}},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 5.0, "dur": 40.0,
         "args": {"External id": 2, **dims}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 10.0, "dur": 5.0,
         "args": {"External id": 2, "correlation": 7}},
        {"ph": "X", "cat": "kernel", "name": "sm90_gemm", "pid": 0, "tid": 7, "ts": 100.0, "dur": 12.5,
         "args": {"correlation": 7}},
        {"ph": "X", "cat": "kernel", "name": "splitk_reduce", "pid": 0, "tid": 7, "ts": 113.0, "dur": 2.5,
         "args": {"External id": 2, "correlation": 8}},
    ]
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps({"traceEvents": events}))
    records = import_profile(path)
    assert [(r.op, r.kernel, r.op_id) for r in records] == [("aten::mm", "sm90_gemm", 2),
                                                            ("aten::mm", "splitk_reduce", 2)]
    assert records[0].input_shapes == ((16, 64), (64, 32)) and records[0].input_dtypes == ("bfloat16",) * 2
    assert records[0].time_s == pytest.approx(12.5e-6)
    (op,) = profile_to_trace(path).ops
    assert op.attrs["measured_time_s"] == pytest.approx(15e-6)
    assert op.flops == 2 * 16 * 32 * 64


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"traceEvents": 3}', '{"traceEvents": [5]}',
                                     '{"traceEvents": [{"ph": "X", "cat": "kernel", "ts": 1, "dur": "x"}]}'])
def test_malformed_file_is_one_line_input_error(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        import_profile(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_file_is_input_error(tmp_path):
    """Named once, with the system's reason (not '[Errno 2] ...: '<path>'' after it)."""
    path = tmp_path / "absent.json"
    with pytest.raises(InputError) as err:
        import_profile(path)
    assert str(err.value) == f"{path}: cannot read profiler trace: No such file or directory"


def test_embedding_lookup_reads_only_the_gathered_rows(profiled, tiny_llama):
    """The lookup reads the BATCH x PROMPT rows it gathers and their int64 ids, not the whole vocabulary table."""
    path, _, _ = profiled
    lookups = [op for op in profile_to_trace(path).ops if op.name.split(".")[-1] in ("embedding", "index_select")]
    assert lookups
    rows_bytes = BATCH * PROMPT * tiny_llama.hidden_size * 4
    for op in lookups:
        assert op.bytes_read["activation"] == rows_bytes + BATCH * PROMPT * 8, op.name
        assert op.bytes_written["activation"] == rows_bytes, op.name


def test_ops_take_the_innermost_module_range_that_holds_them(tmp_path):
    """Module ranges (kernels.harness opens one per submodule forward) nest: an op gets the innermost one open at its
    start on its own thread, and none outside every range or on another thread."""
    from workloads.profiler_import import MODULE_ANNOTATION

    def span(name, ts, dur, tid=1):
        return {"ph": "X", "cat": "user_annotation", "name": MODULE_ANNOTATION + name, "pid": 1, "tid": tid,
                "ts": ts, "dur": dur}

    def op(ts, ext, tid=1):
        return {"ph": "X", "cat": "cpu_op", "name": "aten::add", "pid": 1, "tid": tid, "ts": ts, "dur": 1.0,
                "args": {"External id": ext, "Input Dims": [[4], [4]], "Input type": ["float", "float"]}}

    events = [span("layers.2", 0.0, 100.0), span("layers.2.mlp", 10.0, 20.0), op(12.0, 1), op(40.0, 2),
              op(150.0, 3), op(12.0, 4, tid=2), span("other", 0.0, 200.0, tid=3)]
    path = tmp_path / "modules.json"
    path.write_text(json.dumps({"traceEvents": events}))
    modules = {r.op_id: r.module for r in import_profile(path)}
    assert modules == {1: "layers.2.mlp", 2: "layers.2", 3: "", 4: ""}
    assert sorted(-1 if op.layer is None else op.layer for op in profile_to_trace(path).ops) == [-1, -1, 2, 2]


def test_input_strides_say_which_inputs_are_dense(profiled, tiny_llama):
    """A profile records each input's strides: RoPE's rotate_half negates a slice of the last dim (not dense) and
    joins it to another slice (a tensor list's members carry their own strides); the residual add's inputs are
    dense."""
    path, _, _ = profiled
    ops = profile_to_trace(path).ops
    negs = [op for op in ops if op.name == "aten.neg"]
    assert negs and all(not op.inputs[0].contiguous for op in negs)
    hidden = (BATCH, PROMPT, tiny_llama.hidden_size)
    adds = [op for op in ops if op.name == "aten.add" and [t.shape for t in op.inputs] == [hidden, hidden]]
    assert adds and all(t.contiguous for op in adds for t in op.inputs)
    # rotate_half's cats (4-D), not the rotary table's
    cats = [op for op in ops if op.name == "aten.cat" and len(op.inputs[0].shape) == 4]
    assert cats and all(any(not t.contiguous for t in op.inputs) for op in cats)


def test_a_reduction_writes_its_reduced_shape(profiled, tiny_llama):
    """The RMSNorm's mean over the hidden dim (keepdim) writes one value per token, not a tensor of its input's size:
    its dims and keepdim are read from the profile's concrete inputs."""
    path, _, _ = profiled
    means = [op for op in profile_to_trace(path).ops if op.name == "aten.mean"]
    assert means
    for op in means:
        rows = op.inputs[0].numel // tiny_llama.hidden_size
        assert op.outputs[0].shape == op.inputs[0].shape[:-1] + (1,)
        assert op.bytes_written["activation"] == rows * 4  # fp32, as the norm computes
