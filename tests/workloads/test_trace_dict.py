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
