"""Trace.to_dict, built field by field, is what dataclasses.asdict gives (the form the trace cache and `save` write)."""

from __future__ import annotations

import json
from dataclasses import asdict

from workloads.trace import TRACE_FORMAT, TRACE_VERSION, Trace


def test_to_dict_is_asdict_and_round_trips(tiny_llama, trace_of):
    trace = trace_of(tiny_llama, "prefill", 2, 16)
    assert any(op.attrs for op in trace.ops)  # ops with arguments that matter (attention's is_causal) are covered
    data = trace.to_dict()
    assert data == {**asdict(trace), "format": TRACE_FORMAT, "version": TRACE_VERSION}
    # The same JSON text, key order included, so cached files do not change.
    expected = {**asdict(trace), "format": TRACE_FORMAT, "version": TRACE_VERSION}
    assert json.dumps(data, separators=(",", ":")) == json.dumps(expected, separators=(",", ":"))
    assert Trace.from_dict(json.loads(json.dumps(data))) == trace
    op = next(op for op in trace.ops if op.attrs)
    assert data["ops"][trace.ops.index(op)]["attrs"] is not op.attrs  # a copy, as asdict's


def test_from_dict_makes_one_object_for_each_distinct_tensor(tiny_llama, trace_of):
    trace = trace_of(tiny_llama, "prefill", 2, 16)
    data = json.loads(json.dumps(trace.to_dict()))
    loaded = Trace.from_dict(data)
    assert loaded == trace
    tensors = [t for op in loaded.ops for t in (*op.inputs, *op.outputs)]
    distinct = {(t.shape, t.dtype, t.role, t.contiguous) for t in tensors}
    assert len(tensors) > 2 * len(distinct)  # the trace repeats tensors (each layer's the same shapes)
    assert len({id(t) for t in tensors}) == len(distinct)
    # A dim of another class equal to an int is kept as the file has it (the trace cache's check names it), also
    # where an earlier op has the tensor with int dims.
    seen, op = set(), None
    for i, each in enumerate(loaded.ops):
        if each.inputs and each.inputs[0].shape and each.inputs[0] in seen:
            op = i
            break
        seen.update((*each.inputs, *each.outputs))
    data["ops"][op]["inputs"][0]["shape"][0] = float(data["ops"][op]["inputs"][0]["shape"][0])
    kept = Trace.from_dict(data).ops[op].inputs[0]
    assert kept.shape[0].__class__ is float
