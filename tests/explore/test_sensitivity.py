"""Parameter sensitivity: medians per knob value, computed by hand on a tiny synthetic sweep."""

from __future__ import annotations

import math

from explore.rows import value_label
from explore.sensitivity import effect_sizes, sensitivity, varying_knobs


def _row(device: str, batch: int, tpot: float, *, bandwidth: float | None = None, fits: bool = True) -> dict:
    row = {"model": "m", "device": device, "batch": batch, "prompt": 128, "output": 8, "weight_bits": 16,
           "act_bits": 16, "kv_bits": 16, "execution": "eager", "fits_in_memory": fits,
           "infeasible_reason": "" if fits else "out of memory",
           "tokens_per_s": 100.0 if fits else math.nan, "tpot_s": tpot if fits else math.nan}
    return row | ({"device.memory.bandwidth_GBps": bandwidth} if bandwidth is not None else {})


ROWS = [
    _row("a", 1, 1.0, bandwidth=1000), _row("a", 4, 3.0, bandwidth=2000),
    _row("b", 1, 2.0, bandwidth=1000), _row("b", 4, 10.0, bandwidth=2000),
    _row("b", 8, 0.0, fits=False),  # infeasible: counts towards no median; its override is missing (None)
]


def test_varying_knobs_in_order() -> None:
    assert varying_knobs(ROWS) == ["device", "batch", "device.memory.bandwidth_GBps"]


def test_medians_per_knob_value() -> None:
    result = sensitivity(ROWS, "tpot_s")
    assert result["device"] == [("a", 2.0), ("b", 6.0)]  # a: median(1, 3); b: median(2, 10), the NaN row left out
    assert result["device.memory.bandwidth_GBps"][:2] == [(1000, 1.5), (2000, 6.5)]
    assert result["device.memory.bandwidth_GBps"][2][0] is None
    assert math.isnan(result["device.memory.bandwidth_GBps"][2][1])
    (b1, m1), (b4, m4), (b8, m8) = result["batch"]
    assert (b1, m1, b4, m4, b8) == (1, 1.5, 4, 6.5, 8) and math.isnan(m8)  # batch 8 has no feasible point


def test_missing_objective_and_constant_knobs() -> None:
    assert all(math.isnan(m) for points in sensitivity(ROWS, "energy_per_token_J").values() for _, m in points)
    assert sensitivity(ROWS[:1], "tpot_s") == {}
    assert [value_label(v) for v in (4, 2000.0, 0.5, None, "h100-sxm")] == ["4", "2000", "0.5", "default",
                                                                            "h100-sxm"]


def test_tensor_parallel_degree_is_ranked() -> None:
    """A sweep over `parallel: {tp: ...}` ranks tp beside the other knobs: a system price that doubles with tp has
    a 2x effect (4 devices over 2), larger than the device's."""
    rows = [_row(device, 1, 1.0) | {"tp": tp, "usd_per_hour": price * tp}
            for device, price in (("a", 2.5), ("b", 3.8)) for tp in (2, 4)]
    assert "tp" in varying_knobs(rows)
    assert sensitivity(rows, "usd_per_hour")["tp"] == [(2, (5.0 + 7.6) / 2), (4, (10.0 + 15.2) / 2)]
    assert effect_sizes(rows, "usd_per_hour")[0][0] == "tp"


def test_a_steered_search_says_its_rows_mix_effects() -> None:
    """TPOT here depends on the batch alone; a search that tried bandwidth 1000 only with batch 4 and 2000 only with
    batch 1 shows bandwidth moving TPOT 4x. The caption of a search's figure must not claim the other knobs take all
    their values at each value (what makes a grid's medians an effect); a grid's keeps that claim."""
    from explore.report_pareto import sensitivity_figures

    searched = [_row("a", 4, 4.0, bandwidth=1000), _row("a", 4, 4.0, bandwidth=1000),
                _row("a", 1, 1.0, bandwidth=2000), _row("a", 1, 1.0, bandwidth=2000)]
    objectives = {"minimize": ["tpot_s"], "maximize": []}
    for search in ("nsga2", "tpe"):
        (figure,) = sensitivity_figures(searched, objectives, search)
        assert "device.memory.bandwidth_GBps 4×" in figure.caption  # the search's points, as they are
        assert "at all their values" not in figure.caption
        assert f"the {search} search chose, not every combination" in figure.caption
    for search in (None, "grid", "random"):
        (figure,) = sensitivity_figures(searched, objectives, search)
        assert "the other knobs at all their values" in figure.caption and "search chose" not in figure.caption


def test_an_alias_of_another_knob_is_ranked_once() -> None:
    """A serving point's batch is its max_seqs, and spread experts' ep is the tp: each pair moves the objective
    together, so only the knob the sweep set is ranked; an ep that splits (1) on some rows is a knob of its own."""
    rows = [_row("a", seqs, 1.0 * seqs) | {"max_seqs": seqs, "tp": tp, "ep": tp} for seqs in (8, 32) for tp in (2, 4)]
    assert varying_knobs(rows) == ["tp", "max_seqs"]
    rows[0]["ep"] = 1
    assert varying_knobs(rows) == ["tp", "ep", "max_seqs"]


def test_a_knob_is_ranked_over_the_rows_that_read_it() -> None:
    """think_s is read by conversations only: one-turn rows show it empty. Their TPOT (the turns' effect) must not
    make think_s look like it moves TPOT; with one think time over the rows that read it, it is no knob that varies.
    A node link empty on points within one node likewise."""
    rows = [_row("a", 1, tpot) | {"conversation_turns": turns, "think_s": think}
            for turns, think, tpot in ((1, None, 1.0), (4, 10.0, 3.0), (8, 10.0, 5.0))]
    assert varying_knobs(rows) == ["conversation_turns"]
    rows = [_row("a", 1, tpot) | {"tp": tp, "node_link": link}
            for tp, link, tpot in ((8, "", 1.0), (16, "infiniband-ndr", 2.0), (16, "roce-400g", 4.0))]
    assert sensitivity(rows, "tpot_s")["node_link"] == [("infiniband-ndr", 2.0), ("roce-400g", 4.0)]


def test_a_format_part_is_ranked_over_the_rows_whose_format_reads_it() -> None:
    """A sweep of weight_bits [4, 16] x group_size [32, 128] stores one 16-bit row per other knob, at the default group
    size 128 (its format reads no group): that row's TPOT must not count at 128, or the group size would seem to move
    TPOT as much as the weight bits do. Over the 4-bit rows alone: 32 -> 2.0, 128 -> 2.2."""
    rows = [_row("a", 1, tpot) | {"weight_bits": bits, "group_size": group}
            for bits, group, tpot in ((4, 32, 2.0), (4, 128, 2.2), (16, 128, 8.0))]
    assert sensitivity(rows, "tpot_s")["group_size"] == [(32, 2.0), (128, 2.2)]
    # Every row at 16-bit weights beside a 16-bit KV cache: no row reads the group size, so it does not vary.
    assert "group_size" not in varying_knobs([row | {"weight_bits": 16} for row in rows])
