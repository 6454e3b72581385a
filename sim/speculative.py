"""Speculative decoding of a static batch: a draft proposes tokens, the target verifies them in one pass.

Each speculative step (Leviathan et al., "Fast Inference from Transformers via Speculative Decoding", ICML 2023)
runs the draft's k decode steps (another model on the same device, or the target's multi-token-prediction module
run k times, each step reading its own KV cache), or, with Medusa heads (Cai et al., ICML 2024), nothing before the
target's pass (the heads run inside it, on its hidden states: kernels/medusa.py); then one pass of the target over
the k + 1 query tokens of each sequence (the last accepted token and the k drafted ones; with a Medusa tree, its
candidates plus one) against its KV cache. That pass is traced as a decode step of k + 1 tokens after the prompt:
its GEMMs have batch x (k + 1) rows, its LM head too (logits at every verified token, which rejection sampling
compares with the drafts), its attention reads every key once. Each step yields E = (1 - a^(k+1)) / (1 - a)
tokens per sequence in expectation (Leviathan et al., eq. 1; k + 1 at a = 1) for an acceptance rate a, so a
sequence's O - 1 decode tokens take about (O - 1) / E steps: more by the last step, which runs whole though the output
ends within it (expected_steps). Each sequence draws its own acceptances, so a batch's sequences finish apart
(ragged_steps): a request's timing is a sequence's in expectation, its steps cheaper for each other sequence that has
finished, and the batch's makespan adds the steps its slowest sequences take after the others, a step's cost taken
linear in the sequences it runs between the whole batch's and one sequence's (the same passes traced at a batch of
one: SpeculativeTables.one_sequence). The serving simulation of the same batch (its requests arriving at once on the
static scheduler, each drawing its acceptances) agrees within 1% on Llama-2-7B (tests/explore/
test_speculative_points.py checks a tiny model within 4%).

The draft's first step of each speculative step runs over every token the target just verified, as vLLM v1's
proposers run it (vllm/v1/spec_decode/eagle.py SpecDecodeBaseProposer, since moved to llm_base_proposer.py: propose()
and set_inputs_first_pass; by default, disable_padded_drafter_batch False in vllm/config/speculative.py, all k + 1
tokens of a sequence are kept, the rejected ones as padding whose KV is not written, and one logit a sequence is
sampled, at its last accepted token), then k - 1 steps of one token: an MTP module (EAGLE-style, fed the target's
hidden states) over the k + 1 tokens, each beside the token after it (SGLang's draft-extend does the same); a draft
model (vllm/v1/spec_decode/draft_model.py DraftModelProposer, pass_hidden_states_to_model False, which only runs
padded) over the k + 1 and the token the target just sampled, in a slot of its own a sequence
(extra_slots_per_request 1, extend_all_queries_by_N: k + 2 a sequence, its keys one past the verification's). The
first step writes the draft's KV of the accepted tokens and drafts from the last (first_draft_tokens). The draft
runs after every pass of the target, the prefill's too, over every sequence of the batch
(vllm/v1/worker/gpu_model_runner.py sample_tokens and propose_draft_token_ids: a pass without drafts hands the
drafter all its scheduled tokens), where the batch's longest sequence fits the draft's context (drafter_fits).

The steps are priced at ceil(steps) evenly spaced points of the generation (the middle of each step's share of it)
and their sum scaled to the expected steps: the decode time then falls as E grows, with no jump where the step count
rounds. Host dispatch overlaps each pass as it does a plain decode step (sim/step_costs.py). Under a serving engine
each pass launches as the serving core launches an iteration of its shape (step_launches): a uniform decode of its own
query length (the verification's k + 1, the draft's first step's, its later steps' one) in its own mode, padded to a
captured size (sim/cuda_graphs.py; explore/evaluate.py traces the padded passes: kernels/padded_pass.py).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from hw_models.device import dispatch_s
from kernels.kv_policy import Window
from kernels.table import KernelTable
from sim.cuda_graphs import DEFAULT_LIMITS, CaptureLimits, PassLaunch
from sim.draft_restarts import restart_gain
from sim.memory import MemoryFootprint
from sim.result import RequestTiming, SimResult
from sim.step_costs import (
    DYNAMIC_ENERGY_FIELDS,
    HOST_WAIT,
    DecodeCosts,
    batch_modes,
    pass_execution,
    pass_host_wait_s,
    pass_launch,
)
from sim.workload import BatchWorkload, PassTables
from workloads.model_config import ModelConfig

MEDUSA = "medusa"  # the spec_draft value that drafts with Medusa heads on the target
# The spec_draft value that drafts with the target's multi-token-prediction module (DeepSeek-V3's; workloads/mtp.py),
# as vLLM's speculative method 'deepseek_mtp' does: its one layer run k times a step (the first over the verified
# tokens: first_draft_tokens), a KV cache of its own.
MTP = "mtp"
# The spec_draft value that drafts with no model: vLLM's n-gram proposer (method 'ngram', prompt lookup decoding;
# vllm/v1/spec_decode/ngram_proposer.py at 016e8ede: _find_longest_matched_ngram_and_propose_tokens) looks up the
# request's last prompt_lookup_min..max tokens in its own prompt and output, on the host after each pass, and proposes
# the k that followed the latest longest match; a request with none proposes nothing (an empty list) and its next
# pass computes its one token. The proposer's host time is not priced: neither vLLM's source nor a figure found gives
# one a step. Its drafts are priced as k a match (it proposes fewer where fewer tokens follow the match).
NGRAM = "ngram"


def names_draft_model(spec_draft: str) -> bool:
    """Whether a spec_draft value names a draft model (a preset or config.json), not off, Medusa heads, the target's MTP
    module or the n-gram lookup."""
    return spec_draft not in ("", MEDUSA, MTP, NGRAM)


def expected_tokens(acceptance: float, drafted: int) -> float:
    """Tokens a speculative step yields per sequence in expectation (Leviathan et al. 2023, eq. 1): the accepted
    drafts and the target's own next token."""
    if acceptance >= 1.0:
        return float(drafted + 1)
    return (1.0 - acceptance ** (drafted + 1)) / (1.0 - acceptance)


@dataclass(frozen=True, kw_only=True)
class Speculation:
    """k drafted tokens per step (Medusa: k heads), each accepted with probability `acceptance`; `tree` > 0
    verifies that many candidates (a Medusa tree, whose acceptance along its best path the knob then gives); `match`:
    the share of a sequence's steps that have drafts (an n-gram lookup's matches, NGRAM), the others verifying none
    and computing one token."""

    drafted: int
    acceptance: float
    tree: int = 0
    match: float = 1.0

    def __post_init__(self) -> None:
        if self.drafted < 1:
            raise ValueError(f"spec_tokens: found {self.drafted}, allowed: an integer >= 1")
        if not 0.0 <= self.acceptance <= 1.0:
            raise ValueError(f"acceptance: found {self.acceptance}, allowed: a fraction from 0 to 1")
        if self.tree < 0:
            raise ValueError(f"spec_tree: found {self.tree}, allowed: an integer >= 0")
        if not 0.0 <= self.match <= 1.0:
            raise ValueError(f"ngram_match: found {self.match}, allowed: a fraction from 0 to 1")

    @property
    def verified(self) -> int:
        """Query tokens per sequence in the target's verification pass."""
        return (self.tree or self.drafted) + 1

    @property
    def tokens_per_step(self) -> float:
        """Tokens a step yields a sequence in expectation: E with drafts, 1 without (step_token_odds' mean)."""
        return self.match * expected_tokens(self.acceptance, self.drafted) + 1.0 - self.match


def drops_last_hit(draft: str) -> bool:
    """Whether a serving engine drafting with `draft` recomputes the last block of each prefix hit: vLLM v1 does where
    its draft reads the target's hidden states (use_eagle(): methods eagle, eagle3 and mtp, deepseek_mtp among the
    last; not draft_model, medusa or ngram: vllm/config/speculative.py at 002e77c1 of vllm-project/vllm), our MTP
    (sim/kv_cache.py PagedKVCache.cached_prefix)."""
    return draft == MTP


def draft_slots(draft: str) -> int:
    """Slots vLLM v1's proposer adds to each sequence of a draft's first step (llm_base_proposer.py
    set_inputs_first_pass, extend_all_queries_by_N: net_num_new_slots_per_request): a draft model's one, for the token
    the target sampled after the sequence's last (extra_slots_per_request 1, no hidden states passed); an MTP module's
    none (its inputs shift by one onto the target's hidden states, the sampled token in the last slot)."""
    return 0 if draft == MTP else 1


def first_draft_tokens(draft: str, speculation: Speculation) -> int:
    """Tokens a decoding sequence the draft's first step of each speculative step runs on, padded as vLLM v1 pads them
    (module docstring): every token the target verified and the draft's slots (draft_slots)."""
    return speculation.verified + draft_slots(draft)


def draft_error(target: ModelConfig, draft: ModelConfig) -> str:
    """Empty when `draft` can draft for `target`, else why not: a draft no smaller than its target in the parameters
    a token's pass reads (a mixture of experts' active ones, which a decode step's time follows) only costs."""
    draft_B, target_B = draft.active_param_count(), target.active_param_count()
    if draft_B >= target_B:
        return (f"found {draft.name} ({draft_B / 1e9:.2f} B parameters active per token), allowed: a model smaller "
                f"than the target {target.name} ({target_B / 1e9:.2f} B active per token)")
    if draft.vocab_size != target.vocab_size:  # the target verifies the draft's tokens: one tokenizer for both
        return (f"found {draft.name} (a vocabulary of {draft.vocab_size:,} tokens), allowed: a model of the target "
                f"{target.name}'s vocabulary ({target.vocab_size:,} tokens)")
    return ""


def mtp_error(target: ModelConfig) -> str:
    """Empty when `target` ships a multi-token-prediction module to draft with, else why not."""
    if target.mtp_layers:
        return ""
    return (f"found {MTP!r} with {target.name}, whose config has no num_nextn_predict_layers (no multi-token-"
            f"prediction module), allowed: {MTP!r} with a model that ships one (deepseek-v3), {MEDUSA!r}, or a draft "
            f"model")


@dataclass(frozen=True, kw_only=True)
class DecodePasses:
    """The passes of a speculative step: the target's verification (Medusa heads included) and the draft's first step
    and later decode step (None with Medusa heads); with n-gram drafts (NGRAM), `plain`: the target's one-token decode
    that the sequences without a match run in the verification's pass."""

    verify: KernelTable
    draft_first: KernelTable | None = None
    draft_decode: KernelTable | None = None
    plain: KernelTable | None = None


@dataclass(frozen=True, kw_only=True)
class SpeculativeTables:
    """The target's prefill, its verification pass (Medusa heads included) traced after the prompt, and the draft's
    prefill (over the prompt and its slots: draft_slots), decode step and first step of each speculative step (None
    with Medusa heads)."""

    prefill: KernelTable
    verify: KernelTable
    draft: PassTables | None
    speculation: Speculation
    window: Window = None  # the KV window or policy the target's and the draft's attention keep
    # The draft model's context (its max_position_embeddings), past which it stops drafting (drafter_fits; None:
    # Medusa heads, no limit of their own).
    draft_positions: int | None = None
    # The draft's first step of each speculative step, over `draft_query` tokens a sequence (first_draft_tokens); set
    # where `draft` is (None: Medusa heads).
    draft_first: KernelTable | None = None
    draft_query: int = 1
    # The same step's passes run by one sequence, which price the steps the batch's slowest sequences take after the
    # others finish (evaluate_speculative; None: a batch of one, or that tail left unpriced).
    one_sequence: DecodePasses | None = None
    plain: KernelTable | None = None  # with n-gram drafts, the target's one-token decode (DecodePasses.plain)

    @property
    def passes(self) -> DecodePasses:
        """The batch's speculative step."""
        return DecodePasses(verify=self.verify, draft_first=self.draft_first,
                            draft_decode=None if self.draft is None else self.draft.decode, plain=self.plain)


@dataclass(frozen=True)
class StepLaunches:
    """How an engine launches each pass of a speculative step (PassLaunch: its mode and the tokens it runs, padding
    included)."""

    verify: PassLaunch
    draft_first: PassLaunch
    draft_decode: PassLaunch


def step_launches(device, execution: str, batch: int, speculation: Speculation, draft_query: int = 1,
                  limits: CaptureLimits = DEFAULT_LIMITS) -> StepLaunches:
    """How the passes of a speculative step of `batch` sequences launch, each a uniform decode of its own query length
    as the serving core's iterations launch them (sim/costs.py IterationCostModel.launched, through pass_launch): the
    verification of `verified` tokens a sequence, the draft's first step of `draft_query` (first_draft_tokens) and its
    later steps of one."""
    def launch(query: int) -> PassLaunch:
        return pass_launch(device, execution, decode_only=True, tokens=batch * query, query=query, limits=limits)

    return StepLaunches(verify=launch(speculation.verified), draft_first=launch(draft_query), draft_decode=launch(1))


def drafter_fits(longest: int, speculation: Speculation, draft_positions: int | None) -> bool:
    """Whether the draft runs after a target pass whose longest sequence holds `longest` tokens (those cached and
    those the pass computes), deciding for the whole batch as vLLM v1 does (vllm/v1/worker/gpu_model_runner.py
    _input_fits_in_drafter: max_seq_len + k <= the draft's max_model_len, its max_position_embeddings here). Past it
    sample_tokens hands every sequence k zero draft tokens, which the next pass verifies as drafts (k + 1 query tokens
    a sequence; Scheduler.update_draft_token_ids keeps them and schedule() schedules them) and rejects. It decides
    again after every pass, on that pass's sequences: once those past the context finish, the others draft again
    (sim/draft_restarts.py). None: no limit (Medusa heads run on the target)."""
    return draft_positions is None or longest + speculation.drafted <= draft_positions


def step_token_odds(speculation: Speculation) -> np.ndarray:
    """P(a speculative step yields x tokens) for x = 1 .. k + 1: x - 1 drafts accepted, then one rejected (or all k
    accepted), each with the acceptance rate; the target's own token is the last (expected_tokens' mean). A step
    without drafts (1 - match of them) yields one token."""
    k, a, m = speculation.drafted, speculation.acceptance, speculation.match
    odds = a ** np.arange(k + 1) * (1.0 - a)
    odds[k] = a**k
    odds *= m
    odds[0] += 1.0 - m
    return odds


def draft_reach(workload: BatchWorkload, speculation: Speculation,
                draft_positions: int | None) -> tuple[float, float]:
    """(the decode tokens a sequence of the static batch yields in steps with drafts, in expectation; the chance the
    draft does not run after the last of those steps, its verification past the draft's context). A step's drafts
    are made after the pass before it (the prefill, or the previous step's verification) where drafter_fits that
    pass's longest sequence, so every sequence stops drafting a step after the verification in which the longest
    crosses, and yields one token a step from then on. Sequences advance independently (step_token_odds); a finished
    one leaves the batch, and, as vLLM v1 decides on each pass's own sequences, the batch drafts again where those
    past the context finish before the next one reaches it (sim/draft_restarts.py restart_gain: what those restarts
    add to the tokens drafted where the batch never drafts again, which this computes exactly)."""
    total, k, prompt = workload.decode_steps, speculation.drafted, workload.prompt_len
    if not drafter_fits(prompt, speculation, draft_positions):  # no draft after the prefill: none ever
        return 0.0, 1.0
    # The draft runs after a verification whose sequences each held at most `held_most` decode tokens before it (and
    # fed the last generated token and k drafts): its longest then holds prompt + held_most + k + 1 tokens.
    held_most = total if draft_positions is None else draft_positions - 2 * k - prompt - 1
    if held_most >= total - 1:
        return float(total), 0.0
    odds, ahead = step_token_odds(speculation), np.arange(1, k + 2)
    # The tokens a step yields to a sequence holding s decode tokens (fewer near the output's end).
    gain = (np.minimum(np.arange(total)[:, None] + ahead, total) - np.arange(total)[:, None]) @ odds
    # held[i]: the chance a sequence holds first + i decode tokens before the step (fewer than all), over the runs in
    # which the draft ran after each of its own earlier passes; done: that it holds them all, so; others: the chance
    # another sequence let the draft run after each pass so far. Odds below 1e-18 of the largest are dropped: the
    # distribution's tails, which no figure resolves, would otherwise widen the array by k a step.
    held, first, done, others, tokens = np.ones(1), 0, 0.0, 1.0, 0.0
    while len(held):
        tokens += others ** (workload.batch - 1) * float(held @ gain[first:first + len(held)])
        held = held[:max(held_most + 1 - first, 0)]  # past the draft's context with this step's verification
        others = float(held.sum()) + done
        if not len(held):
            break
        held, first = np.convolve(held, odds), first + 1
        done += float(held[total - first:].sum())
        held = held[:total - first]
        kept = np.flatnonzero(held > held.max() * 1e-18) if len(held) else held
        held, first = (held[kept[0]:kept[-1] + 1], first + kept[0]) if len(kept) else (held[:0], first)
    again, stop = restart_gain(workload.batch, total, held_most, tuple(odds.tolist()))
    return tokens + again, 1.0 - done ** workload.batch + stop


def expected_steps(tokens: int, speculation: Speculation) -> float:
    """Speculative steps a sequence takes to yield `tokens` decode tokens, in expectation: each yields 1 to k + 1
    (step_token_odds), and the last runs whole though the output ends within it, so at least tokens / E. The renewal
    recursion steps(t) = 1 + sum over x of P(x) steps(t - x), steps(t <= 0) = 0, taken `tokens` times at once: its
    state (steps(t) .. steps(t - k) and a constant 1) advances by one matrix, raised to that power."""
    if tokens <= 0:
        return 0.0
    odds = step_token_odds(speculation)
    size = len(odds) + 1
    advance = np.zeros((size, size))
    advance[0, :-1], advance[0, -1] = odds, 1.0
    advance[np.arange(1, size - 1), np.arange(size - 2)] = 1.0  # the older values shift down by one
    advance[-1, -1] = 1.0
    return float(np.linalg.matrix_power(advance, tokens)[0, -1])


def steps_survival(tokens: int, speculation: Speculation) -> np.ndarray:
    """P(a sequence takes more than s speculative steps to yield `tokens` decode tokens) for s = 0, 1, ...: the chance
    its first s steps yield fewer, each step's yield drawn apart (step_token_odds). Its sum is expected_steps."""
    odds = step_token_odds(speculation)
    # held[i]: the chance the first s steps yield first + i tokens, fewer than `tokens`; each step yields at least one,
    # so the lowest sum rises by one a step. Odds below 1e-18 of the largest are dropped, as in draft_reach.
    held, first, survival = np.ones(1), 0, []
    while len(held) and first < tokens:
        survival.append(float(held.sum()))
        held, first = np.convolve(held, odds)[:max(tokens - first - 1, 0)], first + 1
        kept = np.flatnonzero(held > held.max() * 1e-18) if len(held) else held
        held, first = (held[kept[0]:kept[-1] + 1], first + kept[0]) if len(kept) else (held[:0], first)
    return np.minimum(survival, 1.0)  # a sum of odds may pass 1 by its rounding


@dataclass(frozen=True)
class RaggedSteps:
    """How a static batch's sequences finish apart, each drawing its own acceptances, in steps of `tokens` decode
    tokens: `tail`, the steps the batch runs after its mean sequence's (expected_steps) until its last finishes,
    E[max of the batch's step counts] - E[one's]; `apart`, the steps a sequence runs beside another that has already
    finished, E[#s: S_i > s >= S_j] = sum over s of P(S > s) (1 - P(S > s)) (steps_survival)."""

    tail: float = 0.0
    apart: float = 0.0


@functools.lru_cache(maxsize=256)  # a sweep's points repeat a few settings; 0.07 s each at 16K tokens
def ragged_steps(batch: int, tokens: int, speculation: Speculation) -> RaggedSteps:
    """RaggedSteps of a batch of `batch` sequences yielding `tokens` decode tokens each."""
    if batch <= 1 or tokens <= 0 or step_token_odds(speculation).max() == 1.0:  # every sequence yields alike
        return RaggedSteps()
    survival = steps_survival(tokens, speculation)
    with np.errstate(divide="ignore"):  # a step every sequence is still in: log(0)
        any_left = -np.expm1(batch * np.log1p(-survival))  # 1 - (1 - P(S > s))^batch, exact for tiny odds
    return RaggedSteps(tail=float(any_left.sum() - survival.sum()), apart=float(survival @ (1.0 - survival)))


def step_plan(workload: BatchWorkload, speculation: Speculation,
              tokens: float | None = None) -> tuple[float, np.ndarray]:
    """(expected speculative steps, tokens each sequence has generated before each priced step) of speculative steps
    yielding `tokens` decode tokens (None: all the batch's). Steps that run to the output's end take expected_steps;
    fewer, ended by the draft's context (draft_reach), take tokens / E (Wald's identity: the steps stop by a rule of
    what they yielded, and each yields E in expectation)."""
    total = workload.decode_steps
    remaining = total if tokens is None else tokens
    if remaining == 0:
        return 0.0, np.zeros(0)
    steps = (expected_steps(total, speculation) if remaining >= total
             else remaining / speculation.tokens_per_step)
    priced = math.ceil(steps - 1e-9)
    share = remaining / priced  # tokens per priced step; the middle of each step's share of the generation
    return steps, 1.0 + np.arange(priced) * share + (share - 1.0) / 2.0


def _pass(device, table: KernelTable, kv_lens: np.ndarray, window: Window, mode: str, batch: int) -> DecodeCosts:
    """A pass priced at every step: its attention rows at that step's keys, the rest once."""
    return DecodeCosts(batch=batch, base=device.cost_table(table, mode),
                       attention=device.cost_table(table.attention_at_kv_lengths(kv_lens, window), mode),
                       attention_mask=table.attention_mask, steps=len(kv_lens), class_masks=table.class_masks,
                       dispatch_s=dispatch_s(device, mode))


def _decode_passes(device, passes: DecodePasses, batch: int, tables: SpeculativeTables, workload: BatchWorkload,
                   generated: np.ndarray, drafted: float, launches: StepLaunches, mixed: str = "",
                   weights: tuple[float, ...] = (1.0, 1.0, 1.0)) -> tuple[list, list[DecodeCosts]]:
    """(the passes of every speculative step, the plain steps' past the draft's context) of `passes` run by `batch`
    sequences, each priced at the keys of the steps the batch's mean sequence takes (`generated`: its tokens before
    each priced step, step_plan) in its launch mode (`launches`); with n-gram drafts (DecodePasses.plain) the
    verification and the plain decode again in `mixed` mode, the launch mode of a pass whose sequences verify unequal
    tokens. Of the verification's passes those of zero `weights` (the share of steps that run them) are not priced:
    None (_totals skips them)."""
    spec, prompt, window = tables.speculation, workload.prompt_len, tables.window
    mode = launches.verify.mode
    # Keys of the verification: the prompt, the tokens generated so far and the drafted ones after the last.
    verify_kv = prompt + generated + spec.verified - 1
    speculative = [_pass(device, passes.verify, verify_kv, window, mode, batch) if weights[0] else None]
    if passes.plain is not None and len(generated):  # the sequences without an n-gram match: one token at its keys
        speculative += [_pass(device, passes.verify, verify_kv, window, mixed, batch) if weights[1] else None,
                        _pass(device, passes.plain, prompt + generated, window, mixed, batch) if weights[2] else None]
    if passes.draft_first is not None and len(generated):
        # A first draft step attends to the verification's keys, one more for a draft model's own slot: vLLM v1 runs
        # it padded over all k + 1 verified positions (the accepted ones end 1 to k + 1 keys before), with the
        # verification's seq_lens (vllm/v1/spec_decode/llm_base_proposer.py at 00c4f22d: prepare_inputs_padded keeps
        # common_attn_metadata.seq_lens; set_inputs_first_pass extends them by net_num_new_slots_per_request).
        speculative.append(_pass(device, passes.draft_first, prompt + generated + tables.draft_query - 1, window,
                                 launches.draft_first.mode, batch))
        if spec.drafted > 1:
            # Draft step i (from 1) of each speculative step attends to the prompt, the generated tokens and i drafts
            # (vLLM's: the verification's seq_lens less its rejected tokens, + i, so its accepted drafts and slots
            # more: propose() seq_lens -= num_rejected_tokens_gpu; priced as the serving replica prices them).
            draft_kv = (prompt + generated[:, None] + np.arange(1, spec.drafted)[None, :]).ravel()
            speculative.append(_pass(device, passes.draft_decode, draft_kv, window, launches.draft_decode.mode, batch))
    plain = []
    if drafted < workload.decode_steps:
        # Past the draft's context each step verifies k zero drafts and yields one token: the steps from the first a
        # sequence may reach.
        plain_kv = workload.decode_kv_lengths()[math.floor(drafted):] + spec.verified - 1
        plain.append(_pass(device, passes.verify, plain_kv, window, mode, batch))
    return speculative, plain


def _totals(passes: list[DecodeCosts | None], scales: list[float]) -> dict[str, float]:
    """Time, dynamic energy, time by kernel class and wait on the host of `passes`, each scaled (None: a pass left
    unpriced, of scale 0)."""
    priced = [(f, p) for f, p in zip(scales, passes, strict=True) if p is not None]
    totals = {name: sum(f * p.total(name) for f, p in priced) for name in ("time_s", *DYNAMIC_ENERGY_FIELDS)}
    for f, part in priced:
        for label, total in part.class_totals("time_s").items():
            totals[label] = totals.get(label, 0.0) + f * total
    totals[HOST_WAIT] = sum(f * part.wait_s for f, part in priced)
    return totals


def _ragged_costs(batch: int, whole: dict[str, float], alone: dict[str, float], steps: float,
                  ragged: RaggedSteps) -> tuple[dict[str, float], dict[str, float]]:
    """(what the steps after the mean sequence's add to the batch, what a sequence's own steps cost less than at the
    whole batch) where `whole` and `alone` are `steps` steps' totals at `batch` sequences and at one. A step's cost is
    taken linear in the sequences it runs, c0 + c1 n for n = 1 .. batch: the tail's steps each pay c0 and c1 for the
    few left, which the mean's steps at the whole batch already count; a sequence's steps pay c1 less for each other
    sequence that has finished (RaggedSteps.apart). Linear from one sequence to the batch is an upper bound on a cost
    convex in the sequences (a GEMM's time flat until it is compute-bound), which the tail's few sequences sit near."""
    if not steps:
        return {}, {}
    per = {name: ((whole[name] - alone.get(name, 0.0)) / (batch - 1) / steps) for name in whole}  # c1
    fixed = {name: max(alone.get(name, 0.0) / steps - per[name], 0.0) for name in whole}  # c0
    return ({name: fixed[name] * ragged.tail for name in whole},
            {name: max(per[name], 0.0) * (batch - 1) * ragged.apart for name in whole})


def evaluate_speculative(device, tables: SpeculativeTables, workload: BatchWorkload, memory: MemoryFootprint,
                         execution: str = "eager") -> SimResult:
    """Timings and energy of the batch decoded speculatively (sim/analytic.py's result, speculative steps): before
    the first token the target's prefill and, where it fits, the draft's first round (its prefill over the prompt
    and its slots, sampling one draft, then k - 1 steps: vLLM v1 drafts after every target pass, the prefill's too);
    then the verifications, each after the draft's round that drafted for it (a round after the last, whose drafts
    no step verifies, where the draft never stops: draft_reach), and past the draft's context one-token steps that
    verify k zero drafts. Each request's timing is a sequence's in expectation and the batch's makespan adds the
    steps its slowest sequences take after the others (ragged_steps, priced from `tables.one_sequence`; past the
    draft's context only that tail, as the lag the drafted steps left, made up a token a step)."""
    spec, prompt, batch = tables.speculation, workload.prompt_len, workload.batch
    prefill_mode, _ = batch_modes(device, execution, workload, spec.verified)
    drafted, stop_odds = draft_reach(workload, spec, tables.draft_positions)
    drafts_prompt = tables.draft is not None and drafter_fits(prompt, spec, tables.draft_positions)
    prefills = [tables.prefill] + ([tables.draft.prefill] if drafts_prompt else [])
    priced_prefills = [device.cost_table(t, prefill_mode) for t in prefills]
    prefill_waits_s = [pass_host_wait_s(dispatch_s(device, prefill_mode), len(c), c.sum("time_s"))
                       for c in priced_prefills]
    # The draft's k - 1 steps after its prefill, the first attending to the prompt, its slots and the first draft.
    drafted_prompt = prompt + tables.draft_query - spec.verified
    before = ([_pass(device, tables.draft.decode, drafted_prompt + np.arange(1, spec.drafted), tables.window,
                     step_launches(device, execution, batch, spec, tables.draft_query).draft_decode.mode, batch)]
              if drafts_prompt and spec.drafted > 1 else [])
    steps, generated = step_plan(workload, spec, drafted)
    plain_steps = workload.decode_steps - drafted
    # A verification each step; a draft round after each that drafts for the next, or for none after the batch's last
    # step: one fewer where the draft does not run after the last step with drafts (the prefill's round drafted for the
    # first); past the draft's context the steps left in expectation (by 1 where the drafts end on a whole token).
    per = steps / len(generated) if len(generated) else 0.0
    drafts = max(steps - stop_odds, 0.0) / len(generated) if len(generated) else 0.0

    def phases(passes: DecodePasses, n: int) -> tuple[dict[str, float], dict[str, float]]:
        """The totals of the speculative steps and of the plain ones of `passes` run by n sequences."""
        m = spec.match
        # With n-gram drafts a step's pass computes k + 1 tokens of each sequence with a match and one of each other
        # (DecodePasses.plain), its cost taken linear in the sequences as the ragged steps take it (_ragged_costs): the
        # verification's where all n matched (chance m^n), a uniform decode; else a pass of unequal query lengths,
        # which vLLM runs as it runs chunks (sim/cuda_graphs.py: a uniform decode has every sequence at the decode's
        # query length), m - m^n of the verification's cost and 1 - m of the plain decode's in that mode.
        mixed = pass_execution(device, execution, decode_only=False,
                               tokens=max(round(n * (m * spec.verified + 1.0 - m)), 1))
        verify = [per * m**n, per * (m - m**n), per * (1.0 - m)] if passes.plain is not None else [per]
        launches = step_launches(device, execution, n, spec, tables.draft_query)
        speculative, plain = _decode_passes(device, passes, n, tables, workload, generated, drafted, launches, mixed,
                                            tuple(verify))
        scales = verify + [drafts] * 2
        return (_totals(speculative, scales[:len(speculative)]),
                _totals(plain, [plain_steps / p.steps for p in plain]))

    speculative, plain = phases(tables.passes, batch)
    decoded = {name: speculative[name] + plain.get(name, 0.0) for name in speculative}
    # The steps the batch's slowest sequences take after its mean one, priced where they run: past the draft's context
    # as one-token steps that make up the tokens they lag (the spread of the drafted steps, E tokens a step).
    tail, saved = {}, {}
    if tables.one_sequence is not None and batch > 1 and drafted >= 1:
        alone = phases(tables.one_sequence, 1)
        if drafted < workload.decode_steps:  # the lag, in tokens, is made up a token a step; the mean's steps kept
            lag = ragged_steps(batch, math.floor(drafted), spec).tail * spec.tokens_per_step
            tail, _ = _ragged_costs(batch, plain, alone[1], plain_steps, RaggedSteps(tail=lag))
        else:
            tail, saved = _ragged_costs(batch, speculative, alone[0], steps,
                                        ragged_steps(batch, workload.decode_steps, spec))
    ahead = _totals(before, [1.0] * len(before))
    first_token_s = sum(float(p.time_s.sum()) for p in priced_prefills) + sum(prefill_waits_s) + ahead["time_s"]
    decode_s, tail_s = decoded["time_s"], tail.get("time_s", 0.0)
    prefill_J = {name: sum(float(getattr(p, name).sum()) for p in priced_prefills) + ahead[name]
                 for name in DYNAMIC_ENERGY_FIELDS}
    energy = {name: prefill_J[name] + decoded[name] + tail.get(name, 0.0) for name in DYNAMIC_ENERGY_FIELDS}
    energy["static_J"] = device.idle_power_W * (first_token_s + decode_s + tail_s)
    by_class: dict[str, float] = {}
    for table, costs in zip(prefills, priced_prefills, strict=True):
        for label, mask in table.class_masks.items():
            by_class[label] = by_class.get(label, 0.0) + float(costs.time_s[mask].sum())
    # The draft's steps before the first token, the decode steps and the tail's busy time by class, then the waits.
    parts = (ahead, decoded, tail)
    for part in parts:
        for label in [name for name in part if name not in ("time_s", HOST_WAIT, *DYNAMIC_ENERGY_FIELDS)]:
            by_class[label] = by_class.get(label, 0.0) + part[label]
    by_class[HOST_WAIT] = sum(prefill_waits_s) + sum(part.get(HOST_WAIT, 0.0) for part in parts)
    timing = RequestTiming(count=batch, arrival_s=0.0, first_token_s=first_token_s,
                           finish_s=first_token_s + decode_s - saved.get("time_s", 0.0),
                           output_tokens=workload.output_len)
    return SimResult(request_groups=(timing,), makespan_s=first_token_s + decode_s + tail_s, memory=memory,
                     energy_parts_J=energy, time_by_class_s=by_class, prefill_dynamic_J=sum(prefill_J.values()))


class ServingSpeculation:
    """Speculative decoding in a serving replica's iterations (sim/replica.py): an iteration with decoding sequences
    verifies `verified` tokens of each (the target's pass, priced from its step template with that many query tokens
    per sequence); after it the draft runs its k steps over every sequence of the iteration (the draft's own step
    template: the first over the prefill chunks and its slots and `draft_query` tokens of each decode
    (first_draft_tokens), k - 1 of one token a sequence), or the Medusa heads run over the verified rows, or, with
    n-gram drafts, nothing runs and a sequence whose lookup found no match verifies one token (unmatched); each
    sequence then advances by its accepted drafts plus one, drawn from the acceptance rate with a seeded generator.
    The draft runs where drafter_fits the iteration's longest sequence, for all of its sequences or for none; a
    sequence whose last iteration it did not run after verifies k zero drafts and advances by one token (the replica
    keeps which: this object prices, and is shared by a pool's replicas and a capacity search's runs)."""

    def __init__(self, speculation: Speculation, *, draft=None, heads=None, device=None, execution: str = "eager",
                 draft_positions: int | None = None, draft_query: int = 1, lookup: bool = False,
                 drops_last_hit: bool = False):
        """`draft`: the draft's IterationCostModel; `heads(rows)`: the Medusa heads' KernelTable over `rows` hidden
        states, priced on `device` (one of the two); `draft_positions`: the draft model's context
        (max_position_embeddings; None: no limit, Medusa heads run on the target); `draft_query`: tokens a decoding
        sequence of the draft's first step (first_draft_tokens); `lookup`: n-gram drafts (NGRAM), nothing run beside
        the target's pass; `drops_last_hit`: the replicas' KV caches recompute the last block of each prefix hit (the
        module's drops_last_hit)."""
        self.speculation, self.draft, self.heads, self.draft_query = speculation, draft, heads, draft_query
        self.lookup, self.drops_last_hit = lookup, drops_last_hit
        self.device, self.execution, self.draft_positions = device, execution, draft_positions
        self._memo: dict[tuple, object] = {}

    @property
    def lookahead_slots(self) -> int:
        """KV slots a decoding sequence holds beyond its next token: the k tokens past it that it verifies (their KV
        is written before acceptance), and for a draft (a model or an MTP module) k more for the proposals it writes
        after the pass, as vLLM v1 reserves them (vllm/v1/core/sched/scheduler.py: num_lookahead_tokens =
        num_spec_tokens where use_eagle() or uses_draft_model(), which allocate_slots holds past the scheduled
        tokens; Medusa's heads write no KV and reserve none)."""
        return self.speculation.verified - 1 + (self.speculation.drafted if self.draft is not None else 0)

    @property
    def chunk_slots(self) -> int:
        """Slots the draft's first step adds to each prefill chunk (draft_slots: those it adds to a decode's verified
        tokens)."""
        return self.draft_query - self.speculation.verified

    def drafts_after(self, batch) -> bool:
        """Whether the draft runs after an iteration of `batch` (sim/schedulers Batch): drafter_fits its longest
        sequence, a chunk's cached and new tokens or a decode's cached and verified ones (the decode whose drafts the
        budget cut or a handed-over one, Batch.short, its fewer: vLLM's max_seq_len takes each request's scheduled
        tokens)."""
        verified = [self.speculation.verified] * len(batch.decodes)
        if batch.short:
            verified[-len(batch.short):] = batch.short
        longest = max([seq.computed + chunk for seq, chunk in batch.prefills]
                      + [seq.computed + tokens for seq, tokens in zip(batch.decodes, verified, strict=True)])
        return drafter_fits(longest, self.speculation, self.draft_positions)

    def price(self, cost, shape, draft_shapes: tuple, short: int = 0) -> object:
        """The iteration's cost with the draft's steps (or the heads) added: `cost` is the target's verification
        iteration of `shape`, `draft_shapes` the draft's: its first step and its k - 1 later ones (Batch.draft_shapes);
        `short`: the tokens the decodes verifying fewer than the others verify (Batch.short; the shape counts them
        among its chunks), over which the heads run too, as over each whole decode's verified rows."""
        # Keyed on the priced costs' identities, which are stable and few: both cost models memoize every cost
        # they return, one per bucket of shapes, for the replica's lifetime (raw shapes would grow per iteration).
        if self.draft is not None:
            steps = [self.draft.price(s) for s in draft_shapes]
            key = (id(cost), *map(id, steps))
        else:
            key = (id(cost), shape.decode_seqs, short)
        if key not in self._memo:
            extra = []
            if self.draft is not None:
                extra = steps
            elif not self.lookup and (shape.decode_seqs or short):
                extra = [self._heads_cost(shape.decode_seqs * self.speculation.verified + short)]
            self._memo[key] = _sum_costs([cost, *extra])
        return self._memo[key]

    @property
    def iterations_priced(self) -> int:
        """How many distinct speculative iteration costs have been summed."""
        return len(self._memo)

    def _heads_cost(self, rows: int):
        from sim.costs import TIME_CLASS_NAMES, IterationCost  # sim.costs imports nothing of this module

        table = self.heads(rows)
        mode = pass_execution(self.device, self.execution, decode_only=True, tokens=rows)
        costs = self.device.cost_table(table, mode)
        device_s = float(costs.time_s.sum())
        # The host launches the heads' kernels as it launches the target's: it waits where dispatching them takes
        # longer than they run (an eager pass), as the static path's verification with the heads in its table does.
        wait_s = pass_host_wait_s(dispatch_s(self.device, mode), len(costs), device_s)
        class_time = np.zeros(len(TIME_CLASS_NAMES))
        class_time[TIME_CLASS_NAMES.index("gemm")] = device_s
        class_time[-1] = wait_s
        return IterationCost(time_s=device_s + wait_s, compute_J=float(costs.compute_J.sum()),
                             memory_J=float(costs.memory_J.sum()), class_time_s=class_time)

    def unmatched(self, rng: np.random.Generator, indices: list[int]) -> list[int]:
        """Those of `indices` (the sequences an iteration ran) whose n-gram lookup after it finds no match, each with
        chance 1 - match (Speculation.match): their next pass verifies no drafts and computes one token."""
        if self.speculation.match >= 1.0 or not indices:
            return []
        draws = rng.random(len(indices))
        return [i for i, drawn in zip(indices, draws, strict=True) if drawn >= self.speculation.match]

    def accepted_tokens(self, rng: np.random.Generator, sequences: int) -> np.ndarray:
        """Tokens each of `sequences` verified sequences advances by: its accepted drafts (each accepted with the
        acceptance rate until the first rejection, at most k) plus the target's own token."""
        k, a = self.speculation.drafted, self.speculation.acceptance
        if a >= 1.0:
            return np.full(sequences, k + 1)
        if a <= 0.0:
            return np.ones(sequences, dtype=int)
        # P(at least i accepted) = a^i: the count of leading successes of a geometric draw.
        draws = np.floor(np.log(rng.random(sequences)) / math.log(a)).astype(int)
        return np.minimum(draws, k) + 1


def _sum_costs(costs: list):
    """One IterationCost for passes run back to back."""
    if len(costs) == 1:
        return costs[0]
    first = costs[0]
    return type(first)(time_s=sum(c.time_s for c in costs), compute_J=sum(c.compute_J for c in costs),
                       memory_J=sum(c.memory_J for c in costs),
                       class_time_s=sum((c.class_time_s for c in costs), np.zeros_like(first.class_time_s)))
