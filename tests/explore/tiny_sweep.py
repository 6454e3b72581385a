"""Shared by the explore tests: a tiny Llama config.json, a preset's config with a longer context, and sweep files
written into a test's folder."""

from __future__ import annotations

import json
from pathlib import Path

TINY_CONFIG = {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16", "hidden_act": "silu",
}


def write_tiny_model(folder: Path, config: dict | None = None) -> str:
    """Path of the tiny model's config.json (or `config`'s), written under folder/tiny/."""
    path = folder / "tiny" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TINY_CONFIG if config is None else config))
    return str(path)


PRESETS = Path(__file__).resolve().parents[2] / "workloads" / "presets"


def write_long_context(folder: Path, preset: str, positions: int) -> str:
    """Path of a config.json of `preset`'s architecture with a context of `positions` tokens, as a paper runs a
    long-context version of a model (Llama-2-7B-32K, Llama-3-8B-1048K keep their base model's shapes)."""
    data = json.loads((PRESETS / f"{preset}.json").read_text()) | {"max_position_embeddings": positions}
    path = folder / f"{preset}-{positions}.json"
    path.write_text(json.dumps(data))
    return str(path)


def write_sweep(folder: Path, text: str) -> str:
    """Path of folder/sweep.yaml holding `text`."""
    path = folder / "sweep.yaml"
    path.write_text(text)
    return str(path)


def write_tiny_serving_sweep(folder: Path, serving: str) -> str:
    """Path of a sweep serving six requests of 32 prompt and 4 output tokens with the tiny model on an H100 (CUDA
    graphs), `serving` the rest of its serving: section (indented lines)."""
    model = write_tiny_model(folder)
    return write_sweep(folder, f"name: tiny\nmodel: {model}\ndevice: h100-sxm\nexecution: graphs\nserving:\n"
                               f"  requests: 6\n  prompt: 32\n  output: 4\n{serving}")


def write_four_point_sweep(folder: Path, search: str = "{strategy: grid}") -> str:
    """Path of a sweep of 4 design points of the tiny model: 2 batches (a task of the run each: explore/runner.py
    _tasks) by 2 weight widths, searched by `search`."""
    model = write_tiny_model(folder)
    return write_sweep(folder, f"name: part\nmodel: {model}\ndevice: h100-sxm\n"
                               f"workload: {{batch: [1, 2], prompt: 16, output: 4}}\n"
                               f"format: {{weight_bits: [16, 8]}}\nsearch: {search}\n")


def interrupted_after_one_task(monkeypatch, argv: list[str]) -> None:
    """Run the sweep, a Ctrl-C arriving as its second task starts: the first task's points are stored."""
    from explore import runner
    from explore.cli import main

    real, calls = runner._evaluate_task, []

    def first_only(blocks, evaluator=None):
        calls.append(blocks)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(blocks, evaluator)

    with monkeypatch.context() as patched:
        patched.setattr(runner, "_evaluate_task", first_only)
        assert main(argv) == 130
    assert len(calls) == 2
