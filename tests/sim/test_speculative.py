"""Speculative decoding's arithmetic (sim/speculative.py): expected tokens per step, the priced steps, and the
accepted tokens a serving replica draws."""

from __future__ import annotations

import numpy as np
import pytest

from sim.speculative import (
    ServingSpeculation,
    Speculation,
    draft_reach,
    expected_steps,
    expected_tokens,
    ragged_steps,
    step_plan,
    steps_survival,
)
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


def test_the_last_step_runs_whole_though_the_output_ends_within_it():
    """Steps to yield t tokens, by hand: k = 1 at a = 0.5 yields 1 or 2 (odds 0.5 each), so one token takes 1 step and
    two take 1 + 0.5 x 1 + 0.5 x 0 = 1.5 (2 / E = 1.33 where a step's tokens past the end counted); one decode token at
    k = 5, a = 1 takes a whole step (1 / 6 before); 12 at k = 5, a = 1 take exactly 2; a = 0 one a token."""
    half = Speculation(drafted=1, acceptance=0.5)
    assert expected_steps(1, half) == pytest.approx(1.0) and expected_steps(2, half) == pytest.approx(1.5)
    assert expected_steps(3, half) == pytest.approx(1 + 0.5 * 1.5 + 0.5 * 1.0)
    assert expected_steps(1, Speculation(drafted=5, acceptance=1.0)) == pytest.approx(1.0)
    assert expected_steps(12, Speculation(drafted=5, acceptance=1.0)) == pytest.approx(2.0)
    assert expected_steps(13, Speculation(drafted=5, acceptance=1.0)) == pytest.approx(3.0)
    assert expected_steps(40, Speculation(drafted=3, acceptance=0.0)) == pytest.approx(40.0)
    steps, generated = step_plan(BatchWorkload(batch=4, prompt_len=10, output_len=2), Speculation(drafted=5,
                                                                                                  acceptance=1.0))
    assert steps == pytest.approx(1.0) and generated.tolist() == [1.0]


def test_a_batchs_sequences_finish_apart_by_hand():
    """k = 1 at a = 0.5: two tokens take one step (odds 0.5) or two, so P(S > 0) = 1 and P(S > 1) = 0.5. Two sequences:
    the batch runs 2 steps unless both take one (0.25), 1.75 in all, 0.25 past one's 1.5 (tail); a sequence runs
    its second step beside the other finished with odds 0.5 x 0.5 (apart). One sequence, or every draft accepted or
    none, finishes alike."""
    half = Speculation(drafted=1, acceptance=0.5)
    assert steps_survival(2, half) == pytest.approx([1.0, 0.5])
    pair = ragged_steps(2, 2, half)
    assert pair.tail == pytest.approx(0.25) and pair.apart == pytest.approx(0.25)
    # Four sequences: 2 - 0.5^4 steps in all.
    assert ragged_steps(4, 2, half).tail == pytest.approx(2 - 0.5**4 - 1.5)
    for batch, spec in ((1, half), (8, Speculation(drafted=3, acceptance=1.0)), (8, Speculation(drafted=3,
                                                                                                 acceptance=0.0))):
        assert ragged_steps(batch, 40, spec).tail == 0.0 and ragged_steps(batch, 40, spec).apart == 0.0


@pytest.mark.parametrize(("tokens", "drafted", "acceptance"), [(127, 5, 0.6), (255, 4, 0.6), (1023, 1, 0.85),
                                                              (3, 1, 0.5)])
def test_the_step_counts_odds_sum_to_the_expected_steps(tokens, drafted, acceptance):
    """Two computations of one figure: the sum over s of P(S > s) (steps_survival, a convolution a step) is E[S], which
    expected_steps gets from the renewal recursion; the tail grows with the batch."""
    spec = Speculation(drafted=drafted, acceptance=acceptance)
    assert steps_survival(tokens, spec).sum() == pytest.approx(expected_steps(tokens, spec), rel=1e-9)
    tails = [ragged_steps(b, tokens, spec).tail for b in (2, 8, 64)]
    assert 0.0 < tails[0] < tails[1] < tails[2]


def test_the_draft_stops_a_step_after_the_verification_its_longest_sequence_crosses_in():
    """vLLM v1 drafts after a pass only where its longest sequence + k <= the draft's context (gpu_model_runner.py
    _input_fits_in_drafter), for every sequence of the batch or for none. A 100-token prompt, k = 2, a draft of 105
    positions: the prefill's 100 + 2 fits, so the first step drafts; a verification of a sequence holding s decode
    tokens runs 100 + s + 3 tokens, and 100 + s + 3 + 2 <= 105 only at s = 0, so the second step drafts too and the
    third does not. At a = 0.5 a step yields 1, 2 or 3 tokens (odds 0.5, 0.25, 0.25), 1.75 in expectation: 2 x 1.75 =
    3.5 decode tokens drafted, whatever the first yields (before, as vLLM v0's Top1Proposer decided per sequence:
    2.625). A draft of 104 positions: 100 + 4 <= 104 after the prefill, so one k = 4 step at a = 0.7 drafts (2.7731
    tokens) and none after (before: none)."""
    def reach(output: int, k: int, a: float, positions: int | None, batch: int = 1) -> tuple[float, float]:
        return draft_reach(BatchWorkload(batch=batch, prompt_len=100, output_len=output),
                           Speculation(drafted=k, acceptance=a), positions)

    assert reach(40, 2, 0.5, 105) == (pytest.approx(3.5, rel=1e-12), pytest.approx(1.0))
    assert reach(40, 4, 0.7, 104)[0] == pytest.approx(1 + 0.7 + 0.7**2 + 0.7**3 + 0.7**4, rel=1e-12)
    assert reach(40, 4, 0.7, 103) == (0.0, 1.0)  # 100 + 4 passes 103: no draft after the prefill, none ever
    assert reach(40, 4, 0.7, None) == (39.0, 0.0)  # Medusa heads: no context of their own


def test_a_batch_stops_drafting_when_its_longest_sequence_crosses():
    """vLLM v1 decides for the whole batch on its longest sequence (gpu_model_runner.py _input_fits_in_drafter: the
    batch's max_seq_len). A 100-token prompt, k = 1 at a = 0.5 (a step yields 1 or 2 tokens, 1.5 in expectation), a
    draft of 104 positions: the draft runs after a verification whose sequences each held at most 104 - 2 - 100 - 1 = 1
    decode token before it. Steps 1 and 2 always draft (the prefill fits; every sequence holds 0 before step 1). Step 3
    drafts where each sequence yielded 1 token in step 1 (holding 1 before step 2): alone, with odds 0.5 (1.5 + 1.5 +
    0.5 x 1.5 = 3.75 tokens); beside a second sequence, with odds 0.25, both having to (1.5 + 1.5 + 0.25 x 1.5 =
    3.375); the draft does not run after the last step that drafts, for certain. At a = 1 (2 tokens a
    step) the two sequences stay together: two steps, 4 tokens, batch or not. Before, each sequence decided alone
    (vLLM v0): the batch of two drafted as one sequence does, 2.25 tokens."""
    def reach(batch: int, a: float) -> tuple[float, float]:
        return draft_reach(BatchWorkload(batch=batch, prompt_len=100, output_len=41), Speculation(drafted=1,
                                                                                                  acceptance=a), 104)

    assert reach(1, 0.5) == (pytest.approx(3.75, rel=1e-12), pytest.approx(1.0))
    assert reach(2, 0.5) == (pytest.approx(3.375, rel=1e-12), pytest.approx(1.0))
    assert reach(2, 1.0)[0] == reach(1, 1.0)[0] == pytest.approx(4.0)


def test_a_draft_within_its_context_to_the_end_runs_after_the_last_step():
    """A 100-token prompt, k = 4 at a = 1, a 128-token draft: a verification of a sequence holding s decode tokens
    runs 100 + s + 5 tokens, and the draft runs after it while s <= 19. 21 outputs (20 decode tokens): steps hold 0,
    5, 10 and 15, and the draft runs after each, the last too (its drafts verified by no step). 24 outputs (23): a
    fifth step holds 20 and ends the output, and the draft does not run after it. 28 outputs (27): the same five
    steps, then 2 tokens without drafts."""
    def reach(output: int) -> tuple[float, float]:
        return draft_reach(BatchWorkload(batch=3, prompt_len=100, output_len=output),
                           Speculation(drafted=4, acceptance=1.0), 128)

    assert reach(21) == (20.0, 0.0)
    assert reach(24) == (pytest.approx(23.0), pytest.approx(1.0))
    assert reach(28) == (pytest.approx(25.0), pytest.approx(1.0))


def _vllm_drafted(batch: int, prompt: int, output: int, k: int, a: float, positions: int, runs: int,
                  seed: int) -> tuple[float, float]:
    """(decode tokens a sequence yields in steps with drafts, the chance the draft did not run after the batch's last
    pass), over `runs` seeded runs of a static batch under vLLM v1's rule as its source states it: after every pass,
    the draft runs for all the pass's sequences where the longest of them (its cached tokens, the last one and the k
    verified drafts) + k <= the draft's context (gpu_model_runner.py _input_fits_in_drafter on the pass's
    max_seq_len), a finished sequence not being scheduled again; a step with drafts yields 1 + its accepted drafts,
    each accepted at a until the first rejection, at most k; one without yields 1."""
    rng = np.random.default_rng(seed)
    total = output - 1
    held = np.zeros((runs, batch), dtype=int)
    drafts = np.full(runs, prompt + k <= positions)  # after the prefill
    drafted = np.zeros(runs)
    while (held < total).any():
        live = held < total
        step = np.where(drafts[:, None], np.minimum(rng.geometric(1 - a, size=held.shape) - 1, k) + 1, 1)
        step = np.where(live, np.minimum(held + step, total) - held, 0)
        drafted += np.where(drafts, step.sum(axis=1), 0)
        longest = np.where(live, prompt + held + k + 1, 0).max(axis=1)
        drafts = np.where(live.any(axis=1), longest + k <= positions, drafts)
        held += step
    return float(drafted.mean()) / batch, float(np.mean(~drafts))


def test_a_batch_drafts_again_once_its_sequences_past_the_drafts_context_finish():
    """vLLM v1 decides after each pass on that pass's sequences (_input_fits_in_drafter on its max_seq_len), and a
    finished one is not scheduled again: once the sequences past the draft's context finish, the draft runs again for
    the others where the longest of them fits. Four sequences of a 100-token prompt and 41 outputs, k = 2 at a = 0.6,
    a draft of 142 positions (it runs after a pass whose sequences each held at most 37 of the 40 decode tokens): the
    tokens drafted, against 4,000 seeded runs of that rule (38.45 tokens; the draft does not run after the last pass
    in 92% of them). Before, a batch that stopped drafting never drafted again: 36.81 tokens, the draft not running
    after the last pass in 99.9%."""
    reference, stopped = _vllm_drafted(4, 100, 41, 2, 0.6, 142, runs=4000, seed=1)
    tokens, stop = draft_reach(BatchWorkload(batch=4, prompt_len=100, output_len=41),
                               Speculation(drafted=2, acceptance=0.6), 142)
    assert tokens == pytest.approx(reference, abs=0.1)  # the runs' standard error: 0.02
    assert stop == pytest.approx(stopped, abs=0.02)


def test_a_batch_within_the_drafts_context_drafts_as_with_no_context():
    """A static batch whose sequences never pass the draft's context drafts every step, as with no context (Medusa
    heads), whatever the restarts: 40 decode tokens, k = 2, a 100-token prompt; a verification's longest sequence
    holds at most 39 decode tokens before it, so 100 + 39 + 3 tokens, and + k = 144 fits a draft of 144 positions,
    not one of 143."""
    workload, spec = BatchWorkload(batch=8, prompt_len=100, output_len=41), Speculation(drafted=2, acceptance=0.6)
    assert draft_reach(workload, spec, 144) == draft_reach(workload, spec, 4096) == draft_reach(workload, spec, None)
    assert draft_reach(workload, spec, 144) == (40.0, 0.0)
    assert draft_reach(workload, spec, 143)[0] < 40.0


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


def test_a_draft_reserves_slots_for_the_proposals_it_writes_after_the_pass():
    """KV slots past a decoding sequence's next token: the k it verifies, and k more for a draft's next proposals
    (vLLM v1's num_lookahead_tokens): k = 4 and a draft 8, heads 4; a tree of 7 candidates verifies 7 past it."""
    assert ServingSpeculation(Speculation(drafted=4, acceptance=0.5), draft=object()).lookahead_slots == 8
    assert ServingSpeculation(Speculation(drafted=4, acceptance=0.5)).lookahead_slots == 4
    assert ServingSpeculation(Speculation(drafted=4, acceptance=0.5, tree=7)).lookahead_slots == 7


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
    many as the bucket combinations priced, and each sum is the target's time plus the draft's k steps (its first and
    k - 1 later ones, each a shape: Batch.draft_shapes)."""
    from sim.costs import IterationCost

    draft = _BucketedDraft(bucket_tokens=16)
    spec = ServingSpeculation(Speculation(drafted=3, acceptance=0.5), draft=draft)
    target = IterationCost(time_s=0.01, compute_J=2.0, memory_J=2.0, class_time_s=np.ones(3))
    for kv in range(96, 160):  # 64 iterations over 4 buckets of 16 tokens (96-111, ..., 144-159)
        cost = spec.price(target, None, (kv,) * 3)
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
    tokens run 9 query tokens against 83 keys each, as their verification does, with a 20-token chunk after 60 cached
    tokens, and sample one logit a sequence, 4; the next draft steps run a token a sequence, the chunk's sequence's
    too (vLLM v1's propose loops over the batch), step i (from 1) at i keys more than the first step left: the decodes'
    at 80 + 1 + i (their cached keys, the token the target sampled and i drafts, none accepted taken: propose() takes
    the first step's seq_lens less the rejected tokens and adds one each step), 82 and 83, the chunk's at 60 + 20 + i
    (it was 81 for every later step of every decode, a key short and not growing). A draft model's
    first step (vLLM v1's DraftModelProposer): the 3 verified tokens and the one sampled after them, 4 a decode against
    84 keys (its slot one past the verification's), and the chunk with its slot, 21 tokens (draft_slots 1:
    extend_all_queries_by_N adds it to every sequence); its next step reads 82 keys for the chunk's sequence."""
    from sim.schedulers import Batch, Sequence
    from sim.speculative import MTP, draft_slots, first_draft_tokens

    assert first_draft_tokens(MTP, Speculation(drafted=2, acceptance=0.5)) == 3
    assert first_draft_tokens("llama-3.2-1b", Speculation(drafted=2, acceptance=0.5)) == 4
    assert (draft_slots(MTP), draft_slots("llama-3.2-1b")) == (0, 1)
    seqs = [Sequence(index=i, arrival_s=0.0, prompt=80, output=8) for i in range(5)]
    for seq in seqs[:3]:
        seq.computed = seq.target = 80
    seqs[3].computed = 60
    batch = Batch(prefills=[(seqs[3], 20)], decodes=seqs[:3])
    first, rest, last = batch.draft_shapes(None, first_query=3, later_steps=2)
    assert (first.tokens, first.sampled, first.decode_kv, first.decode_query) == (20 + 9, 4, 3 * 83, 3)
    assert (rest.tokens, rest.sampled, rest.decode_kv) == (4, 4, 3 * 82 + 81)
    assert (last.tokens, last.sampled, last.decode_kv) == (4, 4, 3 * 83 + 82)
    model, model_rest = batch.draft_shapes(None, first_query=4, chunk_slots=1)
    assert (model.tokens, model.sampled, model.decode_kv, model.decode_query) == (21 + 12, 4, 3 * 84, 4)
    assert model_rest.decode_kv == 3 * 82 + 82
    one, _ = batch.draft_shapes(None)
    assert (one.tokens, one.sampled, one.decode_kv) == (20 + 3, 4, 3 * 81)
    # A chunk that does not end its prompt samples a draft token too (its drafts are dropped).
    seqs[4].computed = 10
    partial, _ = Batch(prefills=[(seqs[4], 20)], decodes=seqs[:3]).draft_shapes(None, first_query=3)
    assert partial.sampled == 4


def test_a_served_batch_drafts_for_all_its_sequences_or_for_none():
    """vLLM v1 runs the draft after an iteration for the whole batch where its longest sequence + k fits the draft's
    context (gpu_model_runner.py _input_fits_in_drafter on the iteration's max_seq_len). A 128-token draft, k = 4: a
    decode cached at 118 verifies 5 tokens, 123 + 4 <= 128, so after an iteration of it alone the draft runs; beside a
    decode cached at 120 (125 + 4 > 128) it runs for neither (both then verify zero drafts: the replica's _apply); a
    124-token prefill chunk (124 + 4 <= 128) lets it run, a 125-token one does not. Before (vLLM v0), each decided
    alone: the one at 118 drafted beside the one at 120."""
    from sim.schedulers import Batch, Sequence

    spec = ServingSpeculation(Speculation(drafted=4, acceptance=0.5), draft_positions=128, draft_query=6)
    short, long, prompt = (Sequence(index=i, arrival_s=0.0, prompt=100, output=50) for i in range(3))
    short.computed, long.computed = 118, 120
    assert spec.drafts_after(Batch(decodes=[short]))
    together = Batch(decodes=[short, long])
    assert not spec.drafts_after(together)
    assert spec.drafts_after(Batch(prefills=[(prompt, 124)]))
    assert not spec.drafts_after(Batch(prefills=[(prompt, 125)], decodes=[short]))
    assert spec.chunk_slots == 1


def test_a_decode_whose_drafts_the_budget_cut_counts_its_verified_tokens_toward_the_drafters_context():
    """vLLM v1's _input_fits_in_drafter takes max_seq_len over seq_lens, each request's computed + scheduled tokens,
    and a request whose spec tokens the budget trimmed schedules fewer. A 128-token draft, k = 4: a decode cached at
    120 verifying all 5 (125 + 4 > 128) stops the draft; cut to 2 (122 + 4 = 126 <= 128) or 4 (124 + 4 = 128) it
    lets the draft run, beside a whole decode cached at 118 (123 + 4 = 127)."""
    from sim.schedulers import Batch, Sequence

    spec = ServingSpeculation(Speculation(drafted=4, acceptance=0.5), draft_positions=128, draft_query=6)
    whole, cut = (Sequence(index=i, arrival_s=0.0, prompt=100, output=50) for i in range(2))
    whole.computed, cut.computed = 118, 120
    assert not spec.drafts_after(Batch(decodes=[whole, cut]))
    assert spec.drafts_after(Batch(decodes=[whole, cut], short=(2,)))
    assert spec.drafts_after(Batch(decodes=[whole, cut], short=(4,)))
    # The whole decode is measured at its 5 verified tokens still: cached at 120 it stops the draft beside the cut one.
    whole.computed = 120
    assert not spec.drafts_after(Batch(decodes=[whole, cut], short=(2,)))
