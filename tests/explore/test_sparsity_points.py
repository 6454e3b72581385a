"""Sparsity beyond N:M as a user meets it: `explore run` says when a device runs a pattern dense, the sparsity_use
column says how each point ran, and bad patterns or activation shares are one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from explore.cli import main

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")


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
    # dense fp16 bytes, and beside 4-bit values with a 16-bit scale per 128, 4.125 bits, (1 - 0.7) x (4.125 + 16) /
    # 4.125 = 1.46: stored and computed dense instead.
    (16, 0.1, "1.80x"),
    (4, 0.7, "1.46x"),
    (16, 0.7, None),  # 0.3 x 2 = 0.60: it saves bytes, nothing to say
])
def test_run_says_when_a_compressed_layout_would_outweigh_dense_weights(tiny_config, capsys, weight_bits, zeros,
                                                                         scale):
    code, out, _ = _run(capsys, "--model", tiny_config, "--device", "a100-sxm-80gb", "--output", "2",
                        "--sparsity", f"unstructured:{zeros}", "--weight-bits", str(weight_bits))
    assert code == 0
    notices = " ".join(line for line in out.splitlines() if line.startswith("# "))
    said = (f"sparsity unstructured:{zeros} runs dense on a100-sxm-80gb (weights stored and computed dense): its "
            f"compressed layout would take {scale} the bytes of dense {weight_bits}-bit weights")
    assert (said in notices) if scale else ("compressed layout would take" not in notices), notices


def test_unstructured_sparsity_below_its_break_even_runs_exactly_dense(tiny_config, capsys):
    """At 4 bits a weight the Tiled-CSL layout is smaller than dense weights only above 16 / (16 + 4.125) = 80%
    sparsity: at 70% the weights are stored and read dense (the same memory and decode time as dense, not the 1.46x
    bytes), and the sparsity_use column says why; at 90%, 0.1 x 20.125 / 4.125 = 0.49 of dense, it is exploited."""
    runs = {}
    for pattern in ("dense", "unstructured:0.7", "unstructured:0.9"):
        code, out, _ = _run(capsys, "--model", tiny_config, "--device", "a100-sxm-80gb", "--output", "4",
                            "--execution", "graphs", "--weight-bits", "4", "--sparsity", pattern, "--json")
        assert code == 0
        runs[pattern] = json.loads(out)
    dense, below, above = runs["dense"], runs["unstructured:0.7"], runs["unstructured:0.9"]
    assert below["peak_memory_B"] == dense["peak_memory_B"] and below["tpot_s"] == dense["tpot_s"]
    assert below["sparsity_use"] == ("unstructured:0.7 run dense: its compressed layout would take 1.46x the bytes of "
                                     "dense 4-bit weights, its position bits outweighing the zeros left out, and "
                                     "skip no math")
    assert above["sparsity_use"] == "unstructured:0.9 exploited"
    assert above["peak_memory_B"] < dense["peak_memory_B"]


def test_sparsity_use_column(tiny_config, capsys):
    code, out, _ = _run(capsys, "--model", tiny_config, "--device", "a100-sxm-80gb", "--output", "2",
                        "--sparsity", "block64:0.5", "--act-kept", "0.5", "--act-predictor", "deja_vu", "--json")
    assert code == 0
    assert json.loads(out)["sparsity_use"] == "block64:0.5 exploited; activations 0.5 exploited, deja_vu predictor"
    code, out, _ = _run(capsys, "--model", tiny_config, "--device", "a100-sxm-80gb", "--output", "2", "--json")
    assert json.loads(out)["sparsity_use"] == ""


@pytest.mark.parametrize("flags, said", [
    # Each decode token keeps half the MLP's rows, drawn apart: 8 tokens read 1 - 0.5^8 = 99.6% of its weights, 2 read
    # 75%, 64 all but 0.5^64; a serving run's steps hold at most max_seqs (4: 1 - 0.5^4 = 93.75%).
    (["--batch", "8"], ", a decode step of 8 sequences reading 99.6% of the MLP's weights (the union of their kept "
                       "rows)"),
    (["--batch", "2"], ", a decode step of 2 sequences reading 75.0% of the MLP's weights"),
    (["--batch", "64"], ", a decode step of 64 sequences reading over 99.9% of the MLP's weights"),
    (["--serving", "--rate", "50", "--requests", "6", "--max-seqs", "4"],
     ", a decode step of up to 4 sequences reading up to 93.8% of the MLP's weights"),
])
def test_the_sparsity_use_column_says_how_much_of_the_mlp_a_batch_reads(tiny_config, capsys, flags, said):
    """Activation sparsity exploited at a batch whose tokens' kept rows cover most of the MLP saves little: the column
    says how much a decode step reads, where it read 'exploited' alone (Llama-2-7B on an H100 at batch 8: 99.6% read,
    TPOT 0.15% shorter)."""
    code, out, _ = _run(capsys, "--model", tiny_config, "--device", "h100-sxm", "--prompt", "16", "--output", "2",
                        "--act-kept", "0.5", "--json", *flags)
    assert code == 0
    assert json.loads(out)["sparsity_use"].startswith(f"activations 0.5 exploited{said}"), out


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
    (("--act-kept", "0"), "--act-kept: found 0, allowed: a fraction in (0, 1]"),
    (("--act-predictor", "oracle"), "--act-predictor: found 'oracle', allowed: none, deja_vu"),
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
