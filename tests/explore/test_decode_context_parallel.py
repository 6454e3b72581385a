"""Decode context parallelism as a design point (the dcp knob): the KV cache a static batch holds, by hand, a sweep
crossing it, and the settings it is refused beside."""

from __future__ import annotations

from dataclasses import replace

import pytest

from explore.cli import main
from explore.design_point import DesignPoint

# DeepSeek-V3: 61 layers, each caching a 512-wide latent and a 64-wide RoPE key a token, 2 bytes a value.
V3_KV_B_PER_TOKEN = 61 * (512 + 64) * 2


def _v3(dcp: int) -> DesignPoint:
    """DeepSeek-V3 at 8-bit weights on 8 H200s: 16 sequences of a 65,536-token prompt and 64 output tokens."""
    return DesignPoint(model="deepseek-v3", device="h200", batch=16, prompt=65536, output=64, weight_bits=8, tp=8,
                       execution="engine", knobs=(("dcp", dcp),) if dcp > 1 else ())


def test_deepseek_v3_on_eight_h200s_holds_a_long_batch_only_with_its_cache_split(evaluator):
    """Every one of the 8 devices caches every token's latent under tensor parallelism (vLLM: 8 copies); dcp 8 keeps
    one: the prompt and 63 fed-back tokens of 16 sequences, 16 x 65,599 x 70,272 B, once instead of 8 times. Those 8
    copies (590 GB) overflow the 8 x 150 GB with the 682 GB of weights and the prefill's activations; one fits."""
    copies = evaluator.evaluate(_v3(1))
    split = evaluator.evaluate(_v3(8))
    tokens = 16 * (65536 + 63)
    assert copies.result is None and "needs" in copies.metrics["infeasible_reason"]
    assert split.result.memory.kv_cache_B == pytest.approx(tokens * V3_KV_B_PER_TOKEN, rel=1e-12)
    assert split.metrics["fits_in_memory"] is True and split.metrics["tpot_s"] > 0
    # The weights and activations are the same either way: the whole difference is 7 of the 8 copies.
    assert (float(copies.metrics["peak_memory_B"]) - float(split.metrics["peak_memory_B"])
            == pytest.approx(7 * tokens * V3_KV_B_PER_TOKEN, rel=1e-9))


def test_a_sweep_crosses_dcp_and_each_point_holds_its_share(tmp_path, capsys):
    """The tiny llama (2 KV heads of 16, 2 layers) on 4 H100s: a token's keys and values take 2 layers x 2 x 2 heads x
    16 x 2 B = 256 B; two devices hold each KV head, 512 B a token over the 4 at dcp 1, 256 B at dcp 2, for 8
    sequences of 256 + 7 tokens; the exchanges dcp adds take link time."""
    from explore.results import read_results
    from tests.explore.tiny_sweep import write_sweep, write_tiny_model

    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: dcp\nmodel: {model}\ndevice: h100-sxm\nparallel: {{tp: 4, dcp: [1, 2]}}\n"
                                 "workload: {batch: 8, prompt: 256, output: 8}\nexecution: graphs\n")
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = {int(row["dcp"]): row for row in read_results(tmp_path / "out")}
    assert sorted(rows) == [1, 2]
    held = {dcp: float(row["peak_memory_B"]) for dcp, row in rows.items()}
    assert held[1] - held[2] == pytest.approx(8 * (256 + 7) * 256, rel=1e-12)
    assert float(rows[2]["time_communication_s"]) > float(rows[1]["time_communication_s"])
    capsys.readouterr()


def test_a_dcp_that_does_not_split_the_copies_is_one_line(capsys):
    assert main(["run", "--model", "llama-3-8b", "--device", "h100-sxm", "--tp", "8", "--dcp", "4"]) == 2
    err = capsys.readouterr().err.strip()
    # Llama 3 8B's 8 KV heads on 8 devices: one device a head, no copies to split.
    assert err.count("\n") == 0 and "--dcp: found 4, allowed: a divisor of the 1 tp devices" in err, err


@pytest.mark.parametrize("change, named", [
    (dict(pp=2), "dcp: found 4 on 2 pipeline stages"),
    (dict(knobs=(("dcp", 4), ("spec_draft", "ngram"))), "dcp: found 4 with spec_draft 'ngram'"),
])
def test_what_dcp_is_not_modeled_beside_is_recorded_unjudged(tiny_llama_path, change, named):
    point = replace(DesignPoint(model=tiny_llama_path, device="h100-sxm", batch=2, prompt=32, output=4, tp=8,
                                knobs=(("dcp", 4),)), **change)
    assert point.unjudged().startswith(named)


@pytest.fixture
def tiny_llama_path(tmp_path) -> str:
    from tests.explore.tiny_sweep import write_tiny_model

    return write_tiny_model(tmp_path)


def test_a_quantized_latent_cache_under_dcp_is_one_line(capsys):
    """vLLM's MLA decode asserts no fp8 KV cache when its decode context parallel group has more than one device."""
    argv = ["run", "--model", "deepseek-v3", "--device", "h200", "--tp", "8", "--weight-bits", "8", "--dcp", "8"]
    assert main([*argv, "--kv-bits", "8"]) == 2
    err = capsys.readouterr().err.strip()
    named = "--kv-bits: found 8 with --dcp 8 on deepseek-v3's latent attention, allowed: 16"
    assert err.count("\n") == 0 and named in err, err


def test_a_sweep_records_a_quantized_latent_cache_under_dcp_unevaluated(tmp_path, capsys):
    """A tiny DeepSeek-V2 (one latent a token, 4 query heads) on 4 H100s at dcp 2: the 8-bit cache's point is recorded
    with its reason, the 16-bit one runs; a grouped-query model's 8-bit cache under dcp is not refused."""
    from explore.results import read_results
    from tests.explore.tiny_sweep import write_sweep, write_tiny_model

    model = write_tiny_model(tmp_path / "mla", {
        "model_type": "deepseek_v2", "architectures": ["DeepseekV2ForCausalLM"], "hidden_size": 64,
        "intermediate_size": 96, "moe_intermediate_size": 32, "num_hidden_layers": 2, "first_k_dense_replace": 1,
        "n_routed_experts": 4, "num_experts_per_tok": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
        "q_lora_rank": None, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 6,
        "vocab_size": 128, "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "torch_dtype": "bfloat16",
        "hidden_act": "silu"})
    path = write_sweep(tmp_path, f"name: dcp-kv\nmodel: {model}\ndevice: h100-sxm\nparallel: {{tp: 4, dcp: 2}}\n"
                                 "format: {kv_bits: [8, 16]}\nworkload: {batch: 2, prompt: 32, output: 4}\n")
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = {int(row["kv_bits"]): row for row in read_results(tmp_path / "out")}
    assert rows[8]["infeasible_reason"].startswith("kv_bits: found 8 with dcp 2")
    assert not rows[16]["infeasible_reason"] and float(rows[16]["tpot_s"]) > 0
    llama = DesignPoint(model=write_tiny_model(tmp_path), device="h100-sxm", batch=2, prompt=32, output=4, tp=4,
                        kv_bits=8, knobs=(("dcp", 2),))
    assert llama.unjudged() == ""
    capsys.readouterr()
