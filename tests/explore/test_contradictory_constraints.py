"""explore check says where two constraints on one metric leave it no value (a note, before anything runs), and
says nothing where some value meets both: the cases by hand."""

from __future__ import annotations

import pytest

from explore.cli import main
from tests.explore.tiny_sweep import write_sweep, write_tiny_model


@pytest.mark.parametrize(("constraints", "empty"), [
    (["tpot_s <= 0.01", "tpot_s >= 0.02"], True),
    (["tpot_s < 0.01", "tpot_s > 0.01"], True),  # strict on both sides of one value
    (["tpot_s == 0.01", "tpot_s == 0.02"], True),
    (["tpot_s <= 0.01", "tpot_s >= 0.01"], False),  # 0.01 meets both
    (["tpot_s < 0.02", "tpot_s > 0.01"], False),  # 0.015 does
    (["tpot_s >= 0.01", "tpot_s >= 0.02"], False),  # two lower bounds: 0.02 meets both
    (["tpot_s <= 0.01", "ttft_s >= 0.02"], False),  # different metrics
])
def test_constraints_that_leave_a_metric_no_value_are_noted(tmp_path, capsys, constraints, empty):
    model = write_tiny_model(tmp_path)
    listed = ", ".join(f'"{text}"' for text in constraints)
    path = write_sweep(tmp_path, f"name: c\nmodel: {model}\ndevice: h100-sxm\n"
                                 f"workload: {{batch: 1, prompt: 16, output: 4}}\nconstraints: [{listed}]\n")
    assert main(["check", path]) == 0
    captured = capsys.readouterr()
    noted = "leave tpot_s no value: no design point can meet them" in captured.out + captured.err
    assert noted == empty
