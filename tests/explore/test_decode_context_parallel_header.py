"""explore run's header names decode context parallelism where a point sets it."""

from __future__ import annotations

from explore.cli import main
from tests.explore.tiny_sweep import write_tiny_model


def test_the_header_names_dcp_only_where_it_splits_the_kv(tmp_path, capsys):
    """The tiny llama's 2 KV heads on 4 devices (two copies of each): dcp 2 splits each copy's tokens over 2."""
    run = ["run", "--model", write_tiny_model(tmp_path), "--device", "h100-sxm", "--tp", "4", "--batch", "2",
           "--prompt", "32", "--output", "4"]
    assert main([*run, "--dcp", "2"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "4-way tensor parallel, each sequence's KV tokens split over 2 of them (decode context parallel)" in header
    assert main(run) == 0
    assert "decode context parallel" not in capsys.readouterr().out
