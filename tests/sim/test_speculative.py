"""Speculative decoding's arithmetic (sim/speculative.py): expected tokens per step, the priced steps, and the
accepted tokens a serving replica draws."""

from __future__ import annotations

import numpy as np
import pytest

from sim.speculative import ServingSpeculation, Speculation, drafted_tokens, expected_tokens, step_plan
from sim.workload import BatchWorkload


@pytest.mark.parametrize(("acceptance", "drafted", "tokens"), [
    (0.0, 4, 1.0),  # every draft rejected: the target's own token
    (1.0, 4, 5.0),  # every draft accepted: k + 1
    (0.5, 1, 1.5),  # 1 + 0.5
    (0.5, 3, 1.875),  # 1 + 0.5 + 0.25 + 0.125
    (0.8, 2, 2.44),  # 1 + 0.8 + 0.64
])
def test_expected_tokens_by_hand(acceptance, drafted, tokens):
    """Leviathan et al. 2023, eq. 1: (1 - a^(k+1)) / (1 - a), summed by hand as 1 + a + ... + a^k."""
    assert expected_tokens(acceptance, drafted) == pytest.approx(tokens)


def test_more_acceptance_never_yields_fewer_tokens():
    for drafted in (1, 3, 8):
        values = [expected_tokens(a, drafted) for a in np.linspace(0.0, 1.0, 41)]
        assert values == sorted(values)


def test_steps_cover_the_decode_tokens():
    """33 outputs: 32 decode tokens; at 2 tokens per step (a = 1, k = 1) 16 steps, the first after 1 generated token."""
    steps, generated = step_plan(BatchWorkload(batch=1, prompt_len=10, output_len=33),
                                 Speculation(drafted=1, acceptance=1.0))
    assert steps == 16 and len(generated) == 16
    assert generated[0] == pytest.approx(1.5) and np.diff(generated) == pytest.approx(np.full(15, 2.0))
    plain_steps, plain = step_plan(BatchWorkload(batch=1, prompt_len=10, output_len=33),
                                   Speculation(drafted=3, acceptance=0.0))
    assert plain_steps == 32 and plain.tolist() == list(range(1, 33))  # one token per step, as plain decode


def test_the_last_speculative_step_within_the_drafts_context_runs_whole():
    """A 100-token prompt, k = 2, a draft of 105 positions: a sequence drafts while 100 + g + 2 < 105 for g tokens
    generated, i.e. while it holds s = g - 1 < 2 decode tokens, and a step that starts there drafts its 2 tokens
    whole. At a = 0.5 a step yields 1, 2 or 3 tokens with odds 0.5, 0.25, 0.25. From s = 1 one step ends at 2, 3 or 4:
    0.5 x 2 + 0.25 x 3 + 0.25 x 4 = 2.75; from s = 0 a step reaches 1 (then 2.75), 2 or 3: 0.5 x 2.75 + 0.25 x 2 +
    0.25 x 3 = 2.625 decode tokens drafted (2 before: the step past the context counted to it alone). At a = 1, k = 4
    and a 128-token draft: steps start at 0, 5, 10, 15 and 20 < 123 - 100 decode tokens, the last ending at 25, or at
    the output's last token (24 of 25 outputs)."""
    def drafted(output: int, k: int, a: float, positions: int) -> float:
        return drafted_tokens(BatchWorkload(batch=1, prompt_len=100, output_len=output),
                              Speculation(drafted=k, acceptance=a), positions)

    assert drafted(40, 2, 0.5, 105) == pytest.approx(2.625, rel=1e-12)
    assert drafted(28, 4, 1.0, 128) == 25
    assert drafted(25, 4, 1.0, 128) == 24
    assert drafted(24, 4, 1.0, 128) == 23  # every decode token within the context
    assert drafted(40, 4, 0.7, 104) == 0  # none: 100 + 1 + 4 reaches 104
    assert drafted(40, 4, 0.7, None) == 39  # Medusa heads: no context of their own


@pytest.mark.parametrize("bad", [dict(drafted=0, acceptance=0.5), dict(drafted=2, acceptance=1.5),
                                 dict(drafted=2, acceptance=-0.1), dict(drafted=2, acceptance=0.5, tree=-1)])
def test_bad_speculation_is_refused(bad):
    with pytest.raises(ValueError, match="found"):
        Speculation(**bad)


def test_accepted_tokens_follow_the_rate_and_the_seed():
    spec = ServingSpeculation(Speculation(drafted=4, acceptance=0.6))
    draws = spec.accepted_tokens(np.random.default_rng([7, 0, 0]), 20_000)
    assert draws.min() >= 1 and draws.max() <= 5
    # The mean is eq. 1's expectation (1 + 0.6 + 0.36 + 0.216 + 0.1296 = 2.3056) within sampling error.
    assert draws.mean() == pytest.approx(2.3056, abs=0.03)
    again = spec.accepted_tokens(np.random.default_rng([7, 0, 0]), 20_000)
    assert (draws == again).all()
    for acceptance, tokens in ((0.0, 1), (1.0, 5)):
        fixed = ServingSpeculation(Speculation(drafted=4, acceptance=acceptance))
        assert (fixed.accepted_tokens(np.random.default_rng(0), 10) == tokens).all()


class _BucketedDraft:
    """A draft cost model that, as sim.costs.IterationCostModel does, memoizes one cost per bucket of KV lengths."""

    def __init__(self, bucket_tokens: int):
        self.bucket_tokens, self.memo = bucket_tokens, {}

    def price(self, kv_tokens: int):
        from sim.costs import IterationCost

        key = kv_tokens // self.bucket_tokens
        return self.memo.setdefault(key, IterationCost(time_s=1e-3 * (key + 1), compute_J=1.0, memory_J=1.0,
                                                       class_time_s=np.zeros(3)))


def test_a_long_run_sums_one_cost_per_priced_bucket_not_per_iteration():
    """Draft shapes that grow by a token every iteration fall into a few KV buckets: the speculative sums are as
    many as the bucket combinations priced, and each sum is the target's time plus the draft's k steps."""
    from sim.costs import IterationCost

    draft = _BucketedDraft(bucket_tokens=16)
    spec = ServingSpeculation(Speculation(drafted=3, acceptance=0.5), draft=draft)
    target = IterationCost(time_s=0.01, compute_J=2.0, memory_J=2.0, class_time_s=np.ones(3))
    for kv in range(96, 160):  # 64 iterations over 4 buckets of 16 tokens (96-111, ..., 144-159)
        cost = spec.price(target, None, (kv, kv))
        assert cost.time_s == pytest.approx(0.01 + 3 * 1e-3 * (kv // 16 + 1))
    assert spec.iterations_priced == 4


def test_a_draft_shares_its_targets_vocabulary():
    """The target verifies the draft's tokens, so the two share a tokenizer: Llama-2-7B (32,000 tokens, its config)
    cannot draft for Llama-3-8B (128,256) though it is smaller; Llama-2-7B drafts for Llama-2-13B."""
    from sim.speculative import draft_error
    from workloads.model_config import load_model_config

    llama2_7b = load_model_config("llama-2-7b")
    assert "vocabulary of 32,000 tokens" in draft_error(load_model_config("llama-3-8b"), llama2_7b)
    assert draft_error(load_model_config("llama-2-13b"), llama2_7b) == ""


# Qwen3-0.6B's config.json (Hugging Face Qwen/Qwen3-0.6B; the same numbers as its GGUF's tensor list and as engines'
# configs for it): the Qwen3 family's smallest model, the draft vLLM's and SGLang's Qwen3 examples pair with it.
QWEN3_0_6B = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "attention_bias": False, "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 1024, "intermediate_size": 3072, "max_position_embeddings": 40960,
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "vocab_size": 151936,
}


def test_a_draft_is_smaller_in_the_parameters_a_token_reads(tmp_path):
    """A decode step reads the parameters a token is routed through, so a draft is compared with its target by those.
    Qwen3-30B-A3B (its config): per layer, attention 2 x 2,048 x 4,096 + 2 x 2,048 x 512 = 18,874,368 and 256 of
    q/k norms, 8 of 128 experts of 3 x 2,048 x 768 = 37,748,736, the router 2,048 x 128 = 262,144, two norms 4,096:
    56,889,600 x 48 layers = 2,730,700,800; embeddings and LM head 2 x 151,936 x 2,048 = 622,329,856; the final norm
    2,048: 3.353 B active (its model card: 3.3B activated of 30.5B). Qwen3-8B is 8.19 B dense (card: 8.2B): more than
    the target reads a token, so refused though it is smaller in total. Qwen3-0.6B, 0.6 B, drafts for it."""
    import json

    from sim.speculative import draft_error
    from workloads.model_config import load_model_config

    target = load_model_config("qwen3-30b-a3b")
    assert target.active_param_count() == 3_353_032_704
    assert load_model_config("qwen3-8b").param_count() / 1e9 == pytest.approx(8.19, abs=0.005)
    assert draft_error(target, load_model_config("qwen3-8b")) == (
        "found qwen3-8b (8.19 B parameters active per token), allowed: a model smaller than the target qwen3-30b-a3b "
        "(3.35 B active per token)")
    path = tmp_path / "qwen3-0.6b" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(QWEN3_0_6B))
    assert draft_error(target, load_model_config(str(path))) == ""


def test_a_drafts_first_step_over_the_verified_tokens_samples_one_logit_a_sequence():
    """A first draft step of k + 1 = 3 tokens a decode (an MTP module's: first_draft_tokens): 3 decodes cached at 80
    tokens run 9 query tokens against 83 keys each, as their verification does, and sample 3 logits, with a
    20-token chunk that ends its prompt (one more); the next draft steps run a token each. A draft model's first step
    (vLLM v1's DraftModelProposer): the 3 verified tokens and the one sampled after them, 4 a decode against 84 keys
    (its slot one past the verification's), still 4 sampled; one token a decode: 81 keys."""
    from sim.schedulers import Batch, Sequence
    from sim.speculative import MTP, first_draft_tokens

    assert first_draft_tokens(MTP, Speculation(drafted=2, acceptance=0.5)) == 3
    assert first_draft_tokens("llama-3.2-1b", Speculation(drafted=2, acceptance=0.5)) == 4
    seqs = [Sequence(index=i, arrival_s=0.0, prompt=80, output=8) for i in range(4)]
    for seq in seqs[:3]:
        seq.computed = seq.target = 80
    seqs[3].computed = 60
    batch = Batch(prefills=[(seqs[3], 20)], decodes=seqs[:3])
    first, rest = batch.draft_shapes(None, first_query=3)
    assert (first.tokens, first.sampled, first.decode_kv, first.decode_query) == (20 + 9, 1 + 3, 3 * 83, 3)
    assert (rest.tokens, rest.sampled, rest.decode_kv) == (3, 3, 3 * 81)
    model, _ = batch.draft_shapes(None, first_query=4)
    assert (model.tokens, model.sampled, model.decode_kv, model.decode_query) == (20 + 12, 1 + 3, 3 * 84, 4)
    one, _ = batch.draft_shapes(None)
    assert (one.tokens, one.sampled, one.decode_kv) == (20 + 3, 1 + 3, 3 * 81)
