"""Sparsity beyond N:M as a user meets it: `explore run` says when a device runs a pattern dense, the sparsity_use
column says how each point ran, and bad patterns or activation shares are one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from explore.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["run", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_run_says_a_pattern_runs_dense(tiny_config, capsys):
    code, out, _ = _run(capsys, "--model", tiny_config, "--device", "npu-only", "--output", "2",
                        "--sparsity", "unstructured:0.7", "--act-kept", "0.5")
    assert code == 0
    notice = next(line for line in out.splitlines() if line.startswith("# "))
    assert "sparsity unstructured:0.7 runs dense on npu-only" in notice and "exploits block128" in notice
    assert "activation sparsity (act_kept 0.5) runs dense on npu-only" in notice


@pytest.mark.parametrize("weight_bits, zeros, scale", [
    # Flash-LLM's Tiled-CSL keeps a 16-bit location beside each kept value: (1 - 0.1) x (16 + 16) / 16 = 1.80 of the
    # dense fp16 bytes, and beside 4-bit values (1 - 0.7) x (4 + 16) / 4 = 1.50.
    (16, 0.1, "1.80x"),
    (4, 0.7, "1.50x"),
    (16, 0.7, None),  # 0.3 x 2 = 0.60: it saves bytes, nothing to say
])
def test_run_says_when_a_compressed_layout_outweighs_dense_weights(tiny_config, capsys, weight_bits, zeros, scale):
    code, out, _ = _run(capsys, "--model", tiny_config, "--device", "a100-sxm-80gb", "--output", "2",
                        "--sparsity", f"unstructured:{zeros}", "--weight-bits", str(weight_bits))
    assert code == 0
    notices = " ".join(line for line in out.splitlines() if line.startswith("# "))
    said = f"sparsity unstructured:{zeros} stored compressed takes {scale} the bytes of dense {weight_bits}-bit weights"
    assert (said in notices) if scale else ("stored compressed takes" not in notices), notices


def test_sparsity_use_column(tiny_config, capsys):
    code, out, _ = _run(capsys, "--model", tiny_config, "--device", "a100-sxm-80gb", "--output", "2",
                        "--sparsity", "block64:0.5", "--act-kept", "0.5", "--act-predictor", "deja_vu", "--json")
    assert code == 0
    assert json.loads(out)["sparsity_use"] == "block64:0.5 exploited; activations 0.5 exploited, deja_vu predictor"
    code, out, _ = _run(capsys, "--model", tiny_config, "--device", "a100-sxm-80gb", "--output", "2", "--json")
    assert json.loads(out)["sparsity_use"] == ""


def test_exploited_unstructured_sparsity_is_faster_in_decode(tiny_config, capsys):
    """Batch-1 decode is memory-bound: 90% unstructured weights (a fifth of the dense bytes) decode faster."""
    tpot = {}
    for pattern in ("dense", "unstructured:0.9"):
        code, out, _ = _run(capsys, "--model", tiny_config, "--device", "a100-sxm-80gb", "--output", "4",
                            "--execution", "graphs", "--sparsity", pattern, "--json")
        assert code == 0
        tpot[pattern] = json.loads(out)["tpot_s"]
    assert tpot["unstructured:0.9"] < tpot["dense"]


@pytest.mark.parametrize(("flags", "needle"), [
    (("--sparsity", "block48:0.5"), "--sparsity: found 'block48:0.5', allowed: dense or N:M"),
    (("--sparsity", "unstructured:1.2"), "--sparsity: found 'unstructured:1.2', allowed: dense or N:M"),
    (("--act-kept", "0"), "--act-kept: found 0.0, allowed: a fraction in (0, 1]"),
    (("--act-predictor", "oracle"), "--act-predictor: invalid choice: 'oracle'"),
])
def test_bad_run_flags_are_one_line_exit_2(tiny_config, capsys, flags, needle):
    code, _, err = _run(capsys, "--model", tiny_config, "--device", "a100-sxm-80gb", *flags)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize(("format_yaml", "needle"), [
    ("{sparsity: [dense, 'block64:1.5']}", "format.sparsity.1: found 'block64:1.5', allowed: dense or N:M"),
    ("{act_kept: [1.0, 1.5]}", "format.act_kept.1: found 1.5, allowed: a fraction in (0, 1]"),
])
def test_bad_sweep_values_are_one_line_exit_2(tiny_config, tmp_path, monkeypatch, capsys, format_yaml, needle):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: bad-sparsity\nmodel: {tiny_config}\ndevice: a100-sxm-80gb\n"
                     f"workload: {{batch: 1, prompt: 16, output: 2}}\nformat: {format_yaml}\n")
    code = main(["check", str(sweep)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
