"""DeepSeek-V3's block fp8 reaches sweeps and the command line: the MTP example runs the checkpoint's format (a
float32 scale per 128 x 128 weight block, activations per token and 128 values, bf16 embeddings and LM head), and
2-D blocks on weights no kernel scales that way are refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from explore.cli import main
from explore.sweep import load_sweep

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_mtp_example_serves_deepseek_v3_in_its_checkpoints_format():
    """DeepSeek-V3's config.json: quantization_config {"fmt": "e4m3", "weight_block_size": [128, 128]}; its
    weight_scale_inv tensors are float32 (README_WEIGHTS.md): 8 + 32 / 16384 bits a weight, 8 + 32 / 128 an
    activation; inference/model.py keeps the embeddings and LM head in bf16."""
    point = next(iter(load_sweep(str(EXAMPLES / "mtp.yaml")).points()))
    fmt = point.numeric_format
    assert point.model == "deepseek-v3"
    assert fmt.weight_storage_bits == 8.001953125
    assert fmt.act_storage_bits == 8.25
    assert fmt.module_bits("model.layers.3.mlp.experts.0.up_proj") == 8 and fmt.head_bits == 16
    assert fmt.block_scaled_variant == "fp8/block128"


@pytest.mark.parametrize("flags, message", [
    (["--weight-bits", "4", "--scale-granularity", "block"],
     "--scale-granularity: found 'block' with --weight-type 'int', allowed: group, channel or tensor"),
    (["--weight-bits", "8", "--act-bits", "8", "--weight-type", "fp8_e4m3", "--act-type", "fp8_e4m3", "--scale-type",
      "fp32", "--scale-granularity", "channel"],
     "--scale-type: found 'fp32' with --scale-granularity 'channel', allowed: fp16"),
])
def test_a_block_no_kernel_runs_is_refused_in_one_line(capsys, flags, message):
    assert main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", *flags]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line
