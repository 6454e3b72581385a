"""Published collective timings scored against the link models (hw_models/collective_tables.py), and `explore
validate` on such a table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from explore.cli import main
from hw_models.collective_tables import is_collective_table, score_collectives
from hw_models.link import load_link_model
from hw_models.nvls import PUBLISHED, load_nvls_fit, nvls_all_reduce_time_s
from workloads.errors import InputError

TABLE = Path(__file__).resolve().parents[2] / PUBLISHED


def test_groups_priced_by_the_model_each_names():
    """NCCL rows by nvlink4's NCCL fit (HGX H200's, another source), NVLS all-reduce rows by the NVLS fit, its two
    held-out sizes apart from its eight fitted ones; NVLS rows of other collectives have no model and are said."""
    scored, notes = score_collectives(TABLE)
    groups = scored["h100-sxm"]
    assert set(groups) == {"all_reduce nccl (fit: h200-hgx)", "all_gather nccl (fit: h200-hgx)",
                           "reduce_scatter nccl (fit: h200-hgx)", "all_reduce nvls (held out)",
                           "all_reduce nvls (fitted)"}
    assert len(groups["all_reduce nvls (held out)"][0]) == 2 and len(groups["all_reduce nvls (fitted)"][0]) == 8
    link = load_link_model("nvlink4")
    # The 1 MiB all-reduce (64 tokens x 8,192 x 2 B) as each model prices it.
    assert groups["all_reduce nccl (fit: h200-hgx)"][0][0] == pytest.approx(
        link.collective_time_s("all_reduce", 2**20, 8))
    assert groups["all_reduce nvls (fitted)"][0][0] == pytest.approx(
        nvls_all_reduce_time_s(2**20, 8, link.spec, load_nvls_fit().all_reduce))
    assert any("reduce_scatter over nvls: no model" in note for note in notes)
    assert all(np.all(measured > 0) for _, measured in groups.values())


def test_explore_validate_prints_the_groups(tmp_path, capsys):
    assert is_collective_table(TABLE)
    assert main(["validate", str(TABLE), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "all_reduce nvls (held out)" in out and "all_reduce nccl (fit: h200-hgx)" in out
    assert (tmp_path / "validate-h100-sxm.png").is_file()


def test_a_collective_table_beside_a_kernel_table_or_missing_columns_is_refused(tmp_path, capsys):
    kernels = tmp_path / "kernels.csv"
    kernels.write_text("device,kernel,time_s\nh100-sxm,gemm,1e-3\n")
    assert main(["validate", str(TABLE), str(kernels), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "collective table" in err and "alone" in err, err
    short = tmp_path / "short.csv"
    short.write_text("device,collective,message_bytes\nh100-sxm,all_reduce,1024\n")
    with pytest.raises(InputError, match="columns backend, devices, time_s missing"):
        score_collectives(short)
