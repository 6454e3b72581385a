"""Design-point labels (explore/rows.py point_label) of serving sweeps that set a router: the Pareto table and the
chosen designs' labels name it, so designs that differ only in their router are told apart."""

from __future__ import annotations

from explore.rows import point_label

ROW = {"model": "llama-2-7b", "device": "h100-sxm", "scheduler": "continuous", "rate_per_s": None,
       "replicas": 2, "prefill_replicas": 0, "weight_bits": 16, "act_bits": 16, "kv_bits": 16}


def test_designs_that_differ_only_in_their_router_have_distinct_labels():
    labels = [point_label(ROW | {"router": router}) for router in ("least_requests", "least_tokens", "round_robin")]
    assert len(set(labels)) == 3
    assert labels[1] == "llama-2-7b / h100-sxm / continuous / 2 replicas / router least_tokens / w16a16kv16"


def test_rows_without_a_router_column_keep_their_labels():
    """Sweeps that do not set a router have no router column (or an empty one read back from results.csv)."""
    expected = "llama-2-7b / h100-sxm / continuous / 2 replicas / w16a16kv16"
    assert point_label(ROW) == point_label(ROW | {"router": ""}) == point_label(ROW | {"router": None}) == expected
