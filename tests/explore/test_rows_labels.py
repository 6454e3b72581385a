"""Design-point labels (explore/rows.py point_label): serving sweeps that set a router name it in the Pareto table
and the chosen designs' labels, so designs that differ only in their router are told apart; a knob that another turns
on (Knob.only_with) is left out where that one is off."""

from __future__ import annotations

from explore.knobs import KNOBS, knobs
from explore.report_static import energy_panels
from explore.rows import LABELLED_WHERE_SET, device_label, format_label, normalize_row, point_label

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


# A static point of hot_experts: [0, 0.25] x hot_expert_bits: 8 on a 4-bit MoE model (tests/explore/
# test_hot_experts_points.py sweeps it): the 8-bit experts exist only where hot_experts > 0.
STATIC = {"model": "mixtral-8x7b", "device": "h100-sxm", "batch": 1, "weight_bits": 4, "act_bits": 16, "kv_bits": 16}


def test_hot_expert_bits_are_labelled_only_where_there_are_hot_experts():
    plain = "mixtral-8x7b / h100-sxm / b1 / w4a16kv16"
    off = STATIC | {"hot_experts": 0.0, "hot_expert_bits": 8}
    on = STATIC | {"hot_experts": 0.25, "hot_expert_bits": 8}
    assert point_label(STATIC) == plain  # a sweep without the knobs: the label as before
    assert point_label(off) == plain  # no hot expert takes the 8 bits: they change nothing
    # As `explore report` reads them back from results.csv: every value a string.
    assert point_label(normalize_row({k: str(v) for k, v in off.items()})) == plain
    assert point_label(on) == f"{plain}-hot0.25x8"  # the format's label names its hot experts and their bits


def test_every_only_with_names_registered_knobs_that_are_off_at_their_defaults():
    turned_on = {k.name: k.only_with for k in knobs() if k.only_with}
    assert turned_on.get("hot_expert_bits") == ("hot_experts",)
    assert turned_on.get("link") == ("tp", "pp") and turned_on.get("allreduce") == ("tp",)
    for name, switches in turned_on.items():
        assert isinstance(switches, tuple) and switches, name
        for other in switches:
            assert other in KNOBS and other != name, name
            # its default turns the feature off: nothing, one device, or all of a kept share (act_kept, topk_fraction 1)
            assert KNOBS[other].default in (0, 0.0, 1, 1.0, "", "none"), other


def test_an_allreduce_is_labelled_only_where_tensor_parallel_shards_run_it():
    """Without tensor parallelism nothing all-reduces: tp 1 with custom and with NCCL all-reduces is one design, one
    label (pipeline stages or not); a line against tp keeps its all-reduce at tp 1, where it starts."""
    from explore.rows import knobs_label

    parallel = STATIC | {"model": "llama-2-7b", "weight_bits": 16, "link": "pcie5-x16"}
    for pp in (1, 2):
        labels = {point_label(normalize_row({k: str(v) for k, v in (parallel | {"tp": 1, "pp": pp,
                                                                                "allreduce": ar}).items()}))
                  for ar in ("nccl", "custom")}
        assert len(labels) == 1 and "allreduce" not in labels.pop(), pp
    sharded = point_label(parallel | {"tp": 2, "pp": 1, "allreduce": "custom"})
    assert sharded == "llama-2-7b / h100-sxm x2 (pcie5-x16) / b1 / w16a16kv16 / allreduce=custom"
    assert knobs_label(parallel | {"tp": 1, "allreduce": "custom"}, on=("tp",)) == ["allreduce=custom"]


def test_a_system_on_pipeline_stages_is_labelled_with_every_device_and_its_split():
    """tp 4, tp 2 x pp 2 and pp 4 are all four devices, different systems: each label counts the four and tells
    the splits apart (a label that counted tp alone called tp 4 x pp 4, sixteen devices, 'x4')."""
    serving = ROW | {"replicas": 1}
    labels = {(tp, pp): point_label(normalize_row({k: str(v) for k, v in (serving | {"tp": tp, "pp": pp}).items()}))
              for tp, pp in ((4, 1), (2, 2), (1, 4), (4, 4), (1, 1))}
    assert labels[4, 1] == "llama-2-7b / h100-sxm x4 / continuous / w16a16kv16"
    assert labels[2, 2] == "llama-2-7b / h100-sxm x4 (tp2 pp2) / continuous / w16a16kv16"
    assert labels[1, 4] == "llama-2-7b / h100-sxm x4 (tp1 pp4) / continuous / w16a16kv16"
    assert labels[4, 4] == "llama-2-7b / h100-sxm x16 (tp4 pp4) / continuous / w16a16kv16"
    assert labels[1, 1] == "llama-2-7b / h100-sxm / continuous / w16a16kv16"
    linked = point_label(ROW | {"tp": 2, "pp": 2, "link": "pcie5-x16"})
    assert linked.split(" / ")[1] == "h100-sxm x4 (tp2 pp2, pcie5-x16)"


def test_designs_that_differ_only_in_a_serving_knob_set_in_their_sweep_have_distinct_labels():
    """prefix_attention: [paged, cascade] or memory_utilization: [0.5, 0.9] (columns only in sweeps that set them)
    are two designs each: the Pareto table and the chosen designs name the knob, as they name a router."""
    for knob, values in (("prefix_attention", ("paged", "cascade")), ("memory_utilization", (0.5, 0.9)),
                         ("max_decode_preemptions", (0, 4)), ("prompt_batch_tokens", (512, 2048)),
                         ("prefix_groups", (1, 16)), ("queue_policy", ("fcfs", "lpm"))):
        labels = [point_label(normalize_row({k: str(v) for k, v in (ROW | {knob: value}).items()}))
                  for value in values]
        assert labels == [f"llama-2-7b / h100-sxm / continuous / 2 replicas / {knob} {value} / w16a16kv16"
                          for value in values]


def test_every_serving_knob_with_a_column_only_where_set_is_labelled():
    """A serving knob a sweep may list tells designs apart: its column exists only where a sweep sets it, so the label
    names it there (the attention devices and a fleet's mixed device are named beside the device instead)."""
    where_set = {k.name for k in knobs(scope="serving") if k.column == "when set"}
    assert where_set - set(LABELLED_WHERE_SET) == {"attention_device", "attention_devices", "mixed_device"}


def test_a_fleet_s_label_names_its_mixed_device_before_the_fit_mark():
    """An H100 (its own fits) beside L4s (fits of their sibling): the fleet's calibrated column is the L4s' 'sibling',
    and the label says the fleet is H100 and L4 before that mark, so the H100 is not shown as the borrowed fit; the
    L4 is named once; without mixed replicas nothing is added."""
    fleet = ROW | {"mixed_device": "l4", "mixed_replicas": 3, "calibrated": "sibling"}
    assert device_label(fleet) == "h100-sxm + l4 (sibling fit)"
    assert point_label(fleet) == ("llama-2-7b / h100-sxm + l4 (sibling fit) / continuous / 2 replicas / "
                                  "mixed_replicas 3 / w16a16kv16")
    # As `explore report` reads it back from results.csv, and a grid's point without mixed replicas.
    assert device_label(normalize_row({k: str(v) for k, v in fleet.items()})) == "h100-sxm + l4 (sibling fit)"
    assert device_label(ROW | {"mixed_device": "", "mixed_replicas": "", "calibrated": "fitted"}) == "h100-sxm"


def test_one_device_names_no_link_and_a_line_against_tp_keeps_its_link():
    """A link joins devices: on one device it changes nothing, so tp 1 rows of a tp x link sweep are one design with
    one label; a line through tp 1, 2, 4 over a link keeps the link in its key, so lines of two links stay apart."""
    from explore.report_static import _line_keys

    row = STATIC | {"model": "llama-2-7b", "weight_bits": 16, "tp": 1, "pp": 1}
    assert {device_label(row | {"link": link}) for link in ("nvlink4", "pcie5-x16", "default")} == {"h100-sxm"}
    assert device_label(row | {"tp": 2, "link": "pcie5-x16"}) == "h100-sxm x2 (pcie5-x16)"
    keys = {_line_keys(row | {"link": link}, "tp", False)[0] for link in ("nvlink4", "pcie5-x16")}
    assert keys == {"h100-sxm / nvlink4", "h100-sxm / pcie5-x16"}


def test_experts_spread_over_the_devices_are_named_in_the_device_label():
    """A sweep's parallel.ep: [split, spread] gives two designs on one system (ep 1 and ep = tp); the label names the
    spread one (SGLang's --ep-size, 'ep8'), so the report's rows and legends tell them apart; split experts (ep 1),
    the default, add nothing, and one device has no experts to spread."""
    system = STATIC | {"device": "h200", "weight_bits": 16, "tp": 8, "pp": 1}
    assert device_label(system | {"ep": 1}) == "h200 x8"
    assert device_label(system | {"ep": 8}) == "h200 x8 (ep8)"
    assert device_label(system | {"tp": 4, "pp": 2, "ep": 4, "link": "nvlink4"}) == "h200 x8 (tp4 pp2, ep4, nvlink4)"
    assert device_label(system | {"tp": 1, "ep": 1}) == "h200"
    # As `explore report` reads them back from results.csv: every value a string, a static sweep's ep empty.
    assert device_label(normalize_row({k: str(v) for k, v in (system | {"ep": 8}).items()})) == "h200 x8 (ep8)"
    assert device_label(system | {"ep": ""}) == "h200 x8"
    labels = {point_label(system | {"ep": ep}) for ep in (1, 8)}
    assert len(labels) == 2


def test_designs_that_differ_only_in_a_link_or_pool_what_if_have_distinct_labels():
    """A link's what-if tells systems apart (and says nothing on one device, which has no link); a pool's tells
    serving designs apart where the point has that pool, after the device's own what-ifs."""
    system = STATIC | {"device": "h100-sxm", "weight_bits": 16, "tp": 8, "pp": 1}
    labels = {point_label(system | {"link.bandwidth_GBps": bandwidth}) for bandwidth in (450.0, 900.0)}
    assert labels == {f"mixtral-8x7b / h100-sxm x8 / b1 / w16a16kv16 / link.bandwidth_GBps={bandwidth}"
                      for bandwidth in (450, 900)}
    one = STATIC | {"weight_bits": 16, "tp": 1, "pp": 1, "link.bandwidth_GBps": 900.0}
    assert point_label(one) == "mixtral-8x7b / h100-sxm / b1 / w16a16kv16"
    pool = ROW | {"attention_device": "h20", "attention_devices": 2, "device.memory.bandwidth_GBps": 4000,
                  "attention_device.memory.bandwidth_GBps": 8000}
    assert point_label(pool).endswith("/ memory.bandwidth_GBps=4000, attention_device.memory.bandwidth_GBps=8000")
    assert "attention_device." not in point_label(pool | {"attention_device": "none"})
    # As `explore report` reads them back from results.csv: every value a string.
    assert point_label(normalize_row({k: str(v) for k, v in pool.items()})) == point_label(pool)
    prefill = ROW | {"prefill_replicas": 1, "prefill_device.memory.bandwidth_GBps": 8000}
    assert point_label(prefill).endswith("/ prefill_device.memory.bandwidth_GBps=8000")
    assert "prefill_device." not in point_label(prefill | {"prefill_replicas": 0})


def test_formats_of_one_bit_width_have_labels_of_their_own():
    """int8 and fp8 W8A8, or 4-bit weights in groups of 32 and of 128 (the default), are different formats: the format
    label, which keys the report's bars, markers and quality words, tells them apart, and a point's label names each
    part once. The energy-per-token figure draws a bar for each, where it kept the lower of the two under one label."""
    int8 = STATIC | {"weight_bits": 8, "act_bits": 8, "energy_per_token_J": 1.0}
    fp8 = int8 | {"weight_type": "fp8_e4m3", "act_type": "fp8_e4m3", "energy_per_token_J": 2.0}
    assert format_label(int8) == "w8a8kv16" and format_label(fp8) == "w8a8kv16-w:fp8_e4m3-a:fp8_e4m3"
    assert format_label(STATIC | {"group_size": 32}) == "w4a16kv16 group_size=32"
    assert format_label(STATIC | {"group_size": 128}) == format_label(STATIC) == "w4a16kv16"
    assert point_label(fp8).count("fp8_e4m3") == 2  # the weights' and the activations', not again as knobs
    (panel,), _ = energy_panels([int8, fp8], chosen=[])
    assert panel.energy_J == {"w8a8kv16": [1.0], "w8a8kv16-w:fp8_e4m3-a:fp8_e4m3": [2.0]}


def test_counts_are_written_with_thousands_separators():
    """Counts read as the project writes them elsewhere ('10,368 design points'); one and below a thousand as is."""
    from explore.rows import count_label
    assert count_label(10368, "design point") == "10,368 design points"
    assert count_label(1, "point") == "1 point"
    assert count_label(999, "line") == "999 lines"


def test_the_serving_header_writes_its_request_count_with_separators():
    """'Serving: 60,000 requests per point' (explore/report_serving.py serving_summary), as count_label writes it."""
    from explore.report_serving import serving_summary
    row = ROW | {"requests": 60000, "arrival": "poisson"}
    assert serving_summary([row], None)[0].startswith("Serving: 60,000 requests per point, poisson arrivals")
