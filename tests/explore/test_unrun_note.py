"""The note a sweep's check and start print for its points recorded not run (explore/sweep_notes.py unjudged_note):
every distinct reason with its count of points, not the first reason alone."""

from __future__ import annotations

from explore.cli import main
from tests.explore.tiny_sweep import write_sweep, write_tiny_model

# Six requests of the tiny model on an H100 beside a CPU host over PCIe, as a hybrid placement (APEX) needs, at two
# rates; `{}` the attention_micro_batches list.
HYBRID = ("execution: graphs\nserving:\n  requests: 6\n  prompt: 32\n  output: 4\n  rate: [5, 10]\n"
          "  attention_link: pcie4-x16\n  attention_device: ampere-altra\n  attention_micro_batches: {}\n"
          "  attention_placement: [apart, hybrid]\n")


def _reason(micro_batches: int) -> str:
    """The reason a hybrid point split in `micro_batches` is not run, by hand from the README's rule (a hybrid
    iteration runs as one batch)."""
    return (f"attention_placement: found 'hybrid' with attention_micro_batches {micro_batches}, allowed: left out (a "
            f"hybrid iteration runs as one batch, APEX's asynchronous overlap)")


def _check_note(tmp_path, capsys, micro_batches: str) -> str:
    """The 'not run' note of `explore check` on the hybrid grid over `micro_batches`."""
    path = write_sweep(tmp_path, f"name: hybrid\nmodel: {write_tiny_model(tmp_path)}\ndevice: h100-sxm\n"
                                 f"{HYBRID.format(micro_batches)}")
    assert main(["check", path]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "are not run" in line]
    assert len(notes) == 1, notes
    return notes[0]


def test_the_note_names_each_reason_with_its_points(tmp_path, capsys):
    """3 and 4 micro-batches x [apart, hybrid] x two rates: by hand, the two hybrid points at each count are not run,
    two reasons of two points each; the note named the first reason alone (3 micro-batches) before."""
    note = _check_note(tmp_path, capsys, "[3, 4]")
    assert note == (f"note: 4 of 8 points are not run, each row's infeasible_reason saying why: {_reason(3)} "
                    f"(2 points); {_reason(4)} (2 points)")


def test_the_note_names_the_first_reasons_and_counts_the_rest(tmp_path, capsys):
    """Five micro-batch counts: five reasons of two points each, the first three quoted and the other two counted."""
    note = _check_note(tmp_path, capsys, "[3, 4, 5, 6, 7]")
    assert note == (f"note: 10 of 20 points are not run, each row's infeasible_reason saying why: {_reason(3)} "
                    f"(2 points); {_reason(4)} (2 points); {_reason(5)} (2 points); and 2 more reasons (4 points)")


def test_one_reason_is_named_alone(tmp_path, capsys):
    """One micro-batch count: one reason, its two points the note's count (the note as it read before)."""
    note = _check_note(tmp_path, capsys, "[4]")
    assert note == f"note: 2 of 4 points are not run, each row's infeasible_reason saying why: {_reason(4)}"


def test_check_makes_and_judges_each_point_once(tmp_path, capsys, monkeypatch):
    """explore check makes the grid's points once (Sweep.points) and judges once which are not run (Sweep.unrun),
    for the count, the estimate and the note alike; judging the sweep's combinations (check_sweep_points) stops at the
    first point that runs. The 8 points of 3 and 4 micro-batches by hand: 8 made for the check of each combination
    and 8 for the grid, 8 judged for the grid and 1 (apart, which runs) for the check: 16 and 9 (it made 32 and
    judged 24: the grid's points three times)."""
    from explore.design_point import DesignPoint
    from explore.sweep import Sweep

    calls = {"point": 0, "unjudged": 0}

    def counted(name, method):
        def call(self, *args):
            calls[name] += 1
            return method(self, *args)
        return call

    monkeypatch.setattr(Sweep, "point", counted("point", Sweep.point))
    monkeypatch.setattr(DesignPoint, "unjudged", counted("unjudged", DesignPoint.unjudged))
    note = _check_note(tmp_path, capsys, "[3, 4]")
    assert note.startswith("note: 4 of 8 points are not run"), note
    assert calls == {"point": 16, "unjudged": 9}, calls
