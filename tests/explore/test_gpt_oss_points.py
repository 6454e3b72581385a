"""gpt-oss design points: a static batch's KV cache, held or offloaded, counts each layer's window; a serving run
holds vLLM's hybrid KV groups and prices each layer's attention at its window, its prefix cache taking hits as vLLM's
hybrid groups do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explore.cli import main
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from explore.results import read_results
from sim.hybrid_kv import KVGroups
from sim.serving_spec import ServingSpec
from sim.workload import BatchWorkload
from tests.explore.tiny_sweep import PRESETS, TINY_CONFIG, write_sweep, write_tiny_model
from workloads.requests import Fixed

RUN = ["run", "--model", "gpt-oss-20b", "--device", "h200", "--batch", "2", "--prompt", "512", "--execution", "engine",
       "--json"]


def _peak_memory_B(capsys, output: int) -> float:
    assert main([*RUN, "--output", str(output)]) == 0
    return json.loads(capsys.readouterr().out)["peak_memory_B"]


def test_more_output_tokens_grow_the_full_layers_kv_alone(capsys):
    """1,024 more output tokens (all past the 128-token window) add KV in gpt-oss-20b's 12 full layers only: 2
    sequences x 1,024 tokens x 12 layers x 8 KV heads x 64 x 2 (K and V) x 2 bytes; the weights and the prefill's
    activations stay as they were."""
    grown = _peak_memory_B(capsys, 1088) - _peak_memory_B(capsys, 64)
    assert grown == pytest.approx(2 * 1024 * 12 * 8 * 64 * 2 * 2, rel=1e-12)


def _tiny_gpt_oss(folder: Path, layer_types: list[str], layers: int = 4) -> str:
    """A config.json of gpt-oss-20b's architecture at toy sizes: 4 layers (or `layers`), a 32-token window where a
    layer has one."""
    data = json.loads((PRESETS / "gpt-oss-20b.json").read_text()) | dict(
        hidden_size=64, intermediate_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_local_experts=4, experts_per_token=2, num_experts_per_tok=2, vocab_size=128, num_hidden_layers=layers,
        layer_types=layer_types, sliding_window=32)
    return write_tiny_model(folder / "_".join(sorted(set(layer_types))), data)


def _served(capsys, model: str, *extra: str) -> dict:
    assert main(["run", "--model", model, "--device", "h100-sxm", "--serving", "--rate", "200", "--requests", "24",
                 "--prompt", "256", "--output", "64", "--execution", "engine", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_tiny_gpt_oss_serves_in_less_kv_and_attention_than_full_layers(tmp_path, capsys):
    """Served (before: refused in one line), sliding layers beside full ones hold less KV at their busiest (vLLM's
    hybrid KV groups: sim/hybrid_kv.py) and spend less time in attention than the same model with every layer full,
    the requests alike."""
    windowed = _served(capsys, _tiny_gpt_oss(tmp_path, ["sliding_attention", "full_attention"] * 2))
    full = _served(capsys, _tiny_gpt_oss(tmp_path, ["full_attention"] * 4))
    assert 0 < windowed["kv_utilization_max"] < full["kv_utilization_max"]
    assert 0 < windowed["time_attention_s"] < full["time_attention_s"]


def test_a_tiny_gpt_oss_finds_its_shared_prefix_cached(tmp_path, capsys):
    """Prefix caching beside the hybrid groups (before: refused in one line): 24 requests of 256 tokens sharing their
    first 192 (a warm prefix: 12 whole blocks of 16 in the full group, the 2 sliding blocks before its end, cdiv(32 -
    1, 16)) find all 12 blocks, so each computes 64 tokens where it computed 256: time to first token falls, no
    request waits longer, and the requests running at once hold the prefix's blocks once, less KV in use."""
    model = _tiny_gpt_oss(tmp_path, ["sliding_attention", "full_attention"] * 2)
    plain = _served(capsys, model)
    shared = _served(capsys, model, "--prefix-tokens", "192")
    assert plain["prefix_hit_rate"] is None and shared["prefix_hit_rate"] == 1  # None: nothing sought
    assert shared["ttft_mean_s"] < plain["ttft_mean_s"] and shared["ttft_p99_s"] <= plain["ttft_p99_s"]
    assert shared["kv_utilization_mean"] < plain["kv_utilization_mean"]


@pytest.mark.parametrize("extra,message", [
    (("--prefix-tokens", "32", "--host-cache-GB", "1"), "--host-cache-GB: found 1 with 'gpt-oss-20b'"),
    (("--prefix-tokens", "32", "--prefix-attention", "cascade"), "--prefix-attention: found 'cascade' with "
                                                                 "'gpt-oss-20b'"),
])
def test_a_host_tier_or_cascade_beside_layer_windows_is_refused_in_one_line(capsys, extra, message):
    assert main(["run", "--model", "gpt-oss-20b", "--device", "h200", "--serving", "--rate", "10", "--requests", "4",
                 "--prompt", "64", "--output", "8", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"explore: error: {message}, whose attention windows differ by layer, allowed: ")
    assert err.count("\n") == 1


def test_an_offloaded_cache_moves_each_layers_window():
    """gpt-oss-20b, 16 sequences of 8,192 prompt tokens on an H100 cut to 46 GB: part of the KV cache lives in host
    memory. The prefill sends it there as 4,160 tokens' worth of what one decode token sends, (12 full layers x
    8,192 + 12 sliding layers x 128) / 24, and each decode step reads back as much (its full layers' share growing by
    half a token a step), not 8,192 tokens' worth."""
    evaluator = Evaluator()
    point = DesignPoint(model="gpt-oss-20b", device="h100-sxm", batch=16, prompt=8192, output=4, execution="engine",
                        knobs=(("offload", "kv"),), overrides=(("memory.capacity_GB", 46),))
    device, workload = evaluator.point_device(point), BatchWorkload(batch=16, prompt_len=8192, output_len=4)
    memory = evaluator.batch_memory(point, device, workload, evaluator.kv_window(point))
    held, reason, traffic = evaluator.offloaded(point, device, workload, memory)
    assert not reason and held.offloaded_B > 0
    token_B = traffic.decode_to_host_B[0]
    assert traffic.prefill_B[1] / token_B == pytest.approx((12 * 8192 + 12 * 128) / 24)
    assert (traffic.decode_to_device_B / token_B).tolist() == pytest.approx([4160, 4160.5, 4161])


def test_a_tiny_gpt_oss_speculates_with_medusa_in_less_kv_and_attention_than_full_layers(tmp_path, capsys):
    """Medusa's 2 heads beside sliding layers (before: refused in one line): each verification of 3 tokens a sequence
    reads 32 + 2 keys in a sliding layer (kernels/shapes.py step_shape), its blocks held in vLLM's hybrid KV groups;
    the same requests with every layer full hold more KV and spend longer in attention."""
    medusa = ("--spec-draft", "medusa", "--spec-tokens", "2", "--acceptance", "0.7")
    windowed = _served(capsys, _tiny_gpt_oss(tmp_path, ["sliding_attention", "full_attention"] * 2), *medusa)
    full = _served(capsys, _tiny_gpt_oss(tmp_path, ["full_attention"] * 4), *medusa)
    assert 0 < windowed["kv_utilization_max"] < full["kv_utilization_max"]
    assert 0 < windowed["time_attention_s"] < full["time_attention_s"]


def test_a_tiny_gpt_oss_speculates_with_ngram_lookups_in_less_kv_and_attention_than_full_layers(tmp_path, capsys):
    """An n-gram lookup drafts with no model, so beside sliding layers it adds no layers to the KV groups (before:
    the point failed looking up a model named 'ngram'); the same requests with every layer full hold more KV and spend
    longer in attention."""
    ngram = ("--spec-draft", "ngram", "--spec-tokens", "2", "--acceptance", "0.7", "--ngram-match", "0.5")
    windowed = _served(capsys, _tiny_gpt_oss(tmp_path, ["sliding_attention", "full_attention"] * 2), *ngram)
    full = _served(capsys, _tiny_gpt_oss(tmp_path, ["full_attention"] * 4), *ngram)
    assert 0 < windowed["kv_utilization_max"] < full["kv_utilization_max"]
    assert 0 < windowed["time_attention_s"] < full["time_attention_s"]


# A one-layer EAGLE-3 head over gpt-oss (SpecForge's configs/gpt-oss-120B-eagle3.json, LlamaForCausalLMEagle3: hidden
# 2880, 64 heads, 8 KV heads of 64, MLP 17280, no layer_types: a full-attention layer), run as a draft model.
EAGLE3 = {"model_type": "llama", "hidden_size": 2880, "intermediate_size": 17280, "num_hidden_layers": 1,
          "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 201088,
          "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16", "hidden_act": "silu"}


def _point(model: str, draft: str = "", **serving) -> DesignPoint:
    spec = ServingSpec(**{"requests": 1, "rate_per_s": 1.0, "prompt": Fixed(tokens=16), "output": Fixed(tokens=60),
                          **serving})
    knobs = {"spec_draft": draft, "spec_tokens": 2, "acceptance": 0.0} if draft else {}
    return DesignPoint(model=model, device="h100-sxm", batch=spec.max_seqs, prompt=0, output=0, execution="engine",
                       serving=spec, knobs=tuple(sorted(knobs.items())))


@pytest.mark.parametrize("model,layers", [("gpt-oss-20b", 13), ("gpt-oss-120b", 19)])
def test_an_eagle_layer_joins_gpt_oss_kv_groups_as_vllm_groups_them(tmp_path, model, layers):
    """vLLM's example (kv_cache_utils.py _get_kv_cache_groups_uniform_page_size): gpt-oss-20b's 12 sliding layers and
    12 full ones with an EAGLE layer (full) are 12 sliding and 13 full, 13 < 1.5 x 12, so two groups of 13 layers, the
    sliding one padded; gpt-oss-120b's 18 + 19: two groups of 19. Before: a draft beside them was refused."""
    draft = write_tiny_model(tmp_path, EAGLE3)
    assert Evaluator().engine_kv_groups(_point(model, draft)) == KVGroups(windows=(128, None), layers=layers)


def test_a_tiny_gpt_oss_holds_its_drafts_kv_in_the_groups_blocks(tmp_path):
    """The tiny gpt-oss (sliding 32, full, sliding, full; 2 KV heads of 16: 2 x 2 x 16 x 2 = 128 bytes a token a layer)
    drafting with the tiny Llama of one full layer of the same KV heads: 2 sliding layers and 3 full, 3 >= 1.5 x 2, so
    groups of 2 layers, one sliding and two full (the second padded), a block 16 tokens x 2 layers x 128 B = 4,096 B
    (not the target's blocks with the draft's 16 x 128 B added). One request of 16 + 60 tokens, 2 drafts a step all
    rejected: a verification at c computed tokens holds c + 1 + 2 + 2 slots (the 2 drafts verified, the 2 the draft
    writes after: lookahead), ceil((c + 5) / 16) blocks in each full group, and in the sliding one those from the
    block of token c - 31 on. The most at c = 60 to 62: 5 blocks in each full group, and token 29 to 31 in block 1,
    blocks 1 to 4 sliding: 5 + 5 + 4 = 14. Without the draft (c + 1 slots, two groups): the most at c = 64 to 74, 5
    blocks full, blocks 2 to 4 sliding (token 33 to 43 in block 2): 5 + 3 = 8."""
    oss = _tiny_gpt_oss(tmp_path, ["sliding_attention", "full_attention"] * 2)
    draft = write_tiny_model(tmp_path / "draft", TINY_CONFIG | {"num_hidden_layers": 1})
    evaluator = Evaluator()
    point = _point(oss, draft)
    assert evaluator.engine_kv_groups(point) == KVGroups(windows=(32, None, None), layers=2)
    drafting, plain = (evaluator.evaluate(p).result for p in (point, _point(oss)))
    assert drafting.memory.kv_block_B == plain.memory.kv_block_B == 16 * 2 * 128
    assert (drafting.peak_kv_blocks, plain.peak_kv_blocks) == (14, 8)


def test_a_sweep_serves_a_tiny_gpt_oss_with_draft_models_each_layer_at_its_window(tmp_path):
    """A sweep of the tiny gpt-oss drafting with the one-layer tiny Llama, or with a two-layer draft of its own shape,
    sliding then full, or with both layers full (before: each point refused): all serve and accept drafts, and the
    windowed draft spends less time in attention than the full one, its sliding layer reading 32 keys + its queries
    where the full one reads all 256 + (kernels/shapes.py step_shape; by hand in
    tests/sim/test_hybrid_kv_speculation.py)."""
    oss = _tiny_gpt_oss(tmp_path, ["sliding_attention", "full_attention"] * 2)
    drafts = [write_tiny_model(tmp_path / "eagle", TINY_CONFIG | {"num_hidden_layers": 1})] + [
        _tiny_gpt_oss(tmp_path / "draft", types, layers=2)
        for types in (["sliding_attention", "full_attention"], ["full_attention"] * 2)]
    path = write_sweep(tmp_path, f"name: drafts\nmodel: {oss}\ndevice: h100-sxm\nexecution: engine\n"
                                 f"workload:\n  spec_draft: [{', '.join(drafts)}]\n  spec_tokens: 2\n"
                                 f"  acceptance: 0.7\nserving:\n  requests: 24\n  rate: 200\n  prompt: 256\n"
                                 f"  output: 64\n")
    assert main([path, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = {Path(row["spec_draft"]).parents[1].name: row for row in read_results(tmp_path / "out")}
    assert set(rows) == {"eagle", "full_attention_sliding_attention", "full_attention"}
    assert all(row["acceptance"] == 0.7 and row["fits_in_memory"] and row["tpot_s"] > 0 for row in rows.values())
    assert 0 < rows["full_attention_sliding_attention"]["time_attention_s"] < rows["full_attention"]["time_attention_s"]


def test_a_draft_whose_layers_hold_other_kv_bytes_is_refused_in_one_line(tmp_path, capsys):
    """vLLM's hybrid groups share one page size; a draft of 4 KV heads a layer (256 bytes a token) beside the tiny
    gpt-oss's 2 (128) would grow some groups' blocks, which is not modeled."""
    oss = _tiny_gpt_oss(tmp_path, ["sliding_attention", "full_attention"] * 2)
    draft = write_tiny_model(tmp_path / "draft", TINY_CONFIG | {"num_hidden_layers": 1, "num_key_value_heads": 4})
    assert main(["run", "--model", oss, "--device", "h200", "--serving", "--rate", "10", "--requests", "4", "--prompt",
                 "64", "--output", "8", "--spec-draft", draft]) == 2
    err = capsys.readouterr().err
    assert err.startswith("explore: error: --spec-draft: found tiny (256 bytes of KV a token in each layer), allowed "
                          "with ")
    assert err.count("\n") == 1
