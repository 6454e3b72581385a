"""Two traces compared field by field and op by op, and the few-token passes the replication tests trace."""

from __future__ import annotations

from workloads.trace import Trace

# A prefill of two sequences, and a decode step verifying 2 tokens (logits at both) after 5 cached: few tokens, so that
# an MoE layer's tokens reach few experts (each a dozen ops).
PASSES = {"prefill": dict(phase="prefill", batch=2, seq_len=2),
          "decode": dict(phase="decode", batch=1, seq_len=2, context_len=5, sampled=2)}


def assert_same_trace(ours: Trace, theirs: Trace) -> None:
    """Every field of `ours` (Trace.to_dict: each op's name, shapes as tuples, roles, FLOPs int or float, bytes,
    module path and layer; the parameters, the peak of live activations) equals `theirs`; a failure names the field or
    the first op that differs."""
    mine, expected = ours.to_dict(), theirs.to_dict()
    assert mine.keys() == expected.keys()
    for key, value in expected.items():
        if key != "ops":
            assert mine[key] == value, key
    assert len(mine["ops"]) == len(expected["ops"])
    for i, (op, other) in enumerate(zip(mine["ops"], expected["ops"], strict=True)):
        assert op == other, f"op {i}"
