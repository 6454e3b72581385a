"""The decode-time figure of the report (explore/report_decode.py): what its lines are called."""

from __future__ import annotations

from matplotlib.figure import Figure

import explore.report_decode as report_decode


def _row(kv_budget: int, spec_draft: str, acceptance: float, retrieval_heads: float = 0.0) -> dict:
    return {"model": "llama-2-7b", "batch": 8, "prompt": 3584, "output": 256, "device": "h100-sxm",
            "kv_budget": kv_budget, "retrieval_heads": retrieval_heads, "spec_draft": spec_draft,
            "acceptance": acceptance, "tpot_s": 0.01, "energy_per_token_J": 1.0}


def test_speculative_lines_name_a_whole_cache_as_such(monkeypatch):
    """At kv_budget 0 every head keeps the whole 3,840-token context: nothing is windowed, and the line says so (it
    read 'KV 3840 / every head windowed'); at a budget of 512 the heads are windowed."""
    drawn = {}

    def capture(by_budget, by_acceptance):
        drawn["acceptance"] = [series.label for series in by_acceptance]
        return Figure()

    monkeypatch.setattr(report_decode, "decode_figure", capture)
    rows = [_row(budget, "medusa", a) for budget in (0, 512) for a in (0.3, 0.6)]
    rows += [_row(budget, "", 0.0) for budget in (0, 512)]
    (figure,) = report_decode.decode_section(rows)
    assert sorted(drawn["acceptance"]) == ["h100-sxm / medusa / KV 512 / every head windowed",
                                           "h100-sxm / medusa / whole KV cache"]


def test_designs_that_differ_beyond_the_figures_knobs_are_lines_of_their_own(monkeypatch):
    """Speculative points with and without top-k token selection are two designs: one line each, named by what tells
    them apart (one line labelled 'whole KV cache' held both, two points at each acceptance rate); the format, the
    same at every point, is not named. Only the acceptance column is drawn, and the caption says no 'Left/Right'."""
    drawn = {}

    def capture(by_budget, by_acceptance):
        drawn["budget"] = by_budget
        drawn["acceptance"] = {series.label: list(series.x) for series in by_acceptance}
        return Figure()

    monkeypatch.setattr(report_decode, "decode_figure", capture)
    rows = [_row(0, "medusa", a) | {"weight_bits": 16, "act_bits": 16, "kv_bits": 16, "topk_fraction": share,
                                    "topk_method": "tidal_decode"}
            for share in (1.0, 0.25) for a in (0.3, 0.6)]
    (figure,) = report_decode.decode_section(rows)
    assert drawn["acceptance"] == {
        "h100-sxm / medusa / whole KV cache": [0.3, 0.6],
        "h100-sxm / medusa / whole KV cache / topk_fraction=0.25 / topk_method=tidal_decode": [0.3, 0.6]}
    assert not drawn["budget"]
    assert "Left" not in figure.caption and "Right" not in figure.caption
    assert "Speculative decoding against the acceptance rate" in figure.caption


def test_duoattentions_own_window_is_not_called_a_kv_budget(monkeypatch):
    """examples/decode-time.yaml crosses kv_budget [0, 2048, 512] with retrieval_heads [0, 0.25]: at kv_budget 0 the
    streaming heads keep DuoAttention's 64 sinks + 256 recent tokens, the fewest any point keeps, so the acceptance
    column's lower end is that window, which no kv_budget of the sweep gave: its line names it (it read 'KV 320'),
    and the caption says the column's ends are the fewest and most tokens kept, not the smallest and largest budget."""
    drawn = {}

    def capture(by_budget, by_acceptance):
        drawn["acceptance"] = [series.label for series in by_acceptance]
        return Figure()

    monkeypatch.setattr(report_decode, "decode_figure", capture)
    rows = [_row(budget, "medusa", a, retrieval) for budget in (0, 512, 2048) for retrieval in (0.0, 0.25)
            for a in (0.3, 0.6)]
    (figure,) = report_decode.decode_section(rows)
    assert sorted(drawn["acceptance"]) == [
        "h100-sxm / medusa / DuoAttention's 64 sinks + 256 recent / 25% retrieval heads",
        "h100-sxm / medusa / whole KV cache"]
    assert "smallest and largest KV budget" not in figure.caption
    assert "the fewest and most tokens a windowed head keeps" in figure.caption
