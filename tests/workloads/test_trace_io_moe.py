"""Trace files round-trip and reject wrong formats; MoE expert load and the experts a Mixtral decode runs."""

from __future__ import annotations

import collections
import json
import re

import pytest

from workloads.errors import InputError
from workloads.model_config import balanced_expert_load
from workloads.trace import Trace


@pytest.mark.parametrize("phase, seq_len, context", [("prefill", 16, 0), ("decode", 1, 16)])
def test_save_load_round_trip(phase, seq_len, context, tmp_path, tiny_mixtral, trace_of):
    trace = trace_of(tiny_mixtral, phase, 2, seq_len, context)
    path = tmp_path / "trace.json"
    trace.save(path)
    loaded = Trace.load(path)
    assert loaded == trace
    assert loaded.flops == trace.flops and loaded.bytes_by_role() == trace.bytes_by_role()
    # Saving the loaded trace writes the same file.
    again = tmp_path / "again.json"
    loaded.save(again)
    assert again.read_text() == path.read_text()


@pytest.mark.parametrize("field, value", [("version", 999), ("version", None), ("format", "something-else")])
def test_wrong_version_or_format_is_input_error(field, value, tmp_path, tiny_llama, trace_of, one_line_error):
    path = tmp_path / "trace.json"
    trace_of(tiny_llama, "decode", 2, 1, 16).save(path)
    data = json.loads(path.read_text())
    if value is None:
        del data[field]
    else:
        data[field] = value
    path.write_text(json.dumps(data))
    where, rest = one_line_error(lambda: Trace.load(path))
    assert where == str(path) and field in rest


def test_unreadable_trace_is_input_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match=re.escape(str(path))):
        Trace.load(path)
    with pytest.raises(InputError):
        Trace.load(tmp_path / "missing.json")


@pytest.mark.parametrize("tokens, k, experts", [(1, 2, 8), (5, 2, 8), (512, 2, 8), (7, 3, 4), (3, 1, 16)])
def test_balanced_expert_load(tokens, k, experts):
    load = balanced_expert_load(tokens, k, experts)
    assert len(load) == experts
    assert sum(load) == tokens * k
    assert max(load) - min(load) <= 1
    assert all(n >= 0 for n in load)


def test_balanced_expert_load_by_hand():
    # 5 tokens x 2 experts each = 10 assignments over 8 experts: two experts get 2, six get 1.
    assert sorted(balanced_expert_load(5, 2, 8), reverse=True) == [2, 2, 1, 1, 1, 1, 1, 1]
    # One token, top-2 of 8: exactly two experts run.
    assert sorted(balanced_expert_load(1, 2, 8), reverse=True) == [1, 1, 0, 0, 0, 0, 0, 0]


def test_mixtral_decode_batch1_runs_two_experts(trace_of):
    # Mixtral-8x7B, top-2 routing: one token runs exactly 2 experts' MLPs (gate, up, down) per layer.
    trace = trace_of("mixtral-8x7b", "decode", 1, 1, 128)
    pattern = re.compile(r"layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)$")
    per_layer = collections.defaultdict(set)
    projections = collections.Counter()
    gemms = 0
    for op in trace.ops:
        if op.short_name not in ("mm", "addmm"):
            continue
        match = pattern.search(op.module)
        if match:
            gemms += 1
            per_layer[int(match[1])].add(int(match[2]))
            projections[match[3]] += 1
            # Each expert GEMM sees the single token: 1 row.
            assert op.inputs[0].shape[0] == 1
    assert gemms == 32 * 2 * 3
    assert projections == {"gate_proj": 64, "up_proj": 64, "down_proj": 64}
    assert sorted(per_layer) == list(range(32))
    assert all(len(experts) == 2 for experts in per_layer.values())
    # Expert weights read: 2 experts x 3 x 4096 x 14336 x 2 bytes per layer (the other 6 experts are not read).
    expert_weight_bytes = sum(op.bytes_read.get("weight", 0) for op in trace.ops if pattern.search(op.module))
    assert expert_weight_bytes == 32 * 2 * 3 * 4096 * 14336 * 2


@pytest.mark.parametrize("content", ['{"format": "llm-codesign-trace", "version": 1, "model": "x"}', "[1, 2]"])
def test_malformed_trace_is_input_error(content, tmp_path):
    # DESIGN.md, "Clear errors": a malformed input file is one InputError naming the file, not a traceback
    # (a KeyError or AttributeError from deep inside the loader).
    path = tmp_path / "malformed.json"
    path.write_text(content)
    with pytest.raises(InputError, match=re.escape(str(path))):
        Trace.load(path)
