"""A static speculative batch whose draft stopped at its context drafts again as its longest sequences finish.

vLLM v1 decides after every pass of the target, for the whole batch at once, whether the draft runs: where the pass's
longest sequence and k fit the draft's context (vllm/v1/worker/gpu_model_runner.py, vllm-project/vllm at 000fc94b:
GPUModelRunner._input_fits_in_drafter, `common_attn_metadata.max_seq_len + num_drafter_query_tokens <=
self.effective_drafter_max_model_len`, which sample_tokens asks of each pass's own attention metadata; past it every
sequence gets k zero drafts). The pass's metadata holds the sequences that pass runs; a finished request is no longer
scheduled, so once the sequences past the context finish, the draft runs again for the others where the longest of
them fits. A static batch that stopped drafting advances a token a step, every sequence alike, so it drafts again
where the sequences past the context lead the next one by more than the tokens left past it (their gap, fixed while
none drafts): near the end of a batch whose draft's context ends a few tokens short of its output.

sim/speculative.py draft_reach gives the tokens drafted where the batch never drafts again, exactly; restart_gain adds
what the restarts draft, the mean of seeded draws of the batch run both ways on the same draws (common random numbers:
a run that never restarts adds exactly nothing), from a step before any sequence can reach the context. Not
modelled: a restarted draft's acceptance is taken as before, though its KV cache then lacks the tokens of the steps
it did not run after (no source gives how acceptance falls); evaluate_speculative prices the restarts' steps at the
mean sequence's evenly spaced positions and the batch's tail as the lag made up a token a step, as before."""

from __future__ import annotations

import functools

import numpy as np

# The draws' seed: fixed, so a design point's figures repeat (the project's seeded generators; sim/replica.py's own).
RESTART_SEED = 0
# Runs x sequences drawn at once: about 32,000 (a run's sequences are drawn together, each run apart).
DRAWN_SEQUENCES = 1 << 15
NEGLIGIBLE = 1e-12  # odds below which an event is taken not to happen


def _advance(held: np.ndarray, first: int, odds: np.ndarray) -> tuple[np.ndarray, int]:
    """One step of a sequence's held-token odds (held[i]: first + i tokens), each step yielding 1 + i tokens with
    odds[i], tails below NEGLIGIBLE dropped."""
    held = np.convolve(held, odds)
    kept = np.flatnonzero(held > NEGLIGIBLE)
    return held[kept[0]:kept[-1] + 1], first + 1 + int(kept[0])


@functools.lru_cache(maxsize=256)  # a sweep's points repeat a few settings
def restart_gain(batch: int, total: int, held_most: int, odds: tuple[float, ...]) -> tuple[float, float]:
    """(the decode tokens a sequence yields in steps with drafts after the batch first stops drafting, in expectation;
    what that adds to the chance the draft does not run after the batch's last pass) for `batch` sequences of `total`
    decode tokens, each step's drafts made where every sequence of the pass before it held at most `held_most` tokens
    before it, each drafted step yielding 1 .. k + 1 tokens with `odds` (sim/speculative.py step_token_odds). Zero
    where no two sequences can part by the tokens past the context (total - held_most), which a restart needs."""
    odds_a = np.asarray(odds)
    if batch <= 1 or held_most >= total - 1 or np.count_nonzero(odds_a) <= 1:
        return 0.0, 0.0
    # start: a sequence's odds after the last step at which the batch holds no sequence past held_most, but at odds
    # below NEGLIGIBLE (the draft ran after every pass so far); at the last step at which a sequence may still hold no
    # more, the spread of its odds bounds how far two sequences part when the first passes.
    held, first = np.ones(1), 0
    start = held, first
    while True:
        past = float(held[max(held_most + 1 - first, 0):].sum())
        if past * batch < NEGLIGIBLE:
            start = held, first
        if first > held_most:  # every sequence past it (but at odds below NEGLIGIBLE)
            break
        held, first = _advance(held, first, odds_a)
    if len(held) - 1 < total - held_most:
        return 0.0, 0.0
    return _drawn_gain(batch, total, held_most, odds_a, *start)


def _drawn_gain(batch: int, total: int, held_most: int, odds: np.ndarray, held: np.ndarray,
                first: int) -> tuple[float, float]:
    """restart_gain's mean over seeded runs of the batch from `first` + i tokens held with odds held[i]: each run once
    as vLLM drafts (again after every pass that fits) and once never again after the first that does not."""
    rng = np.random.default_rng(RESTART_SEED)
    runs, k = max(DRAWN_SEQUENCES // batch, 64), len(odds) - 1
    tokens = first + rng.choice(len(held), size=(runs, batch), p=held / held.sum())
    drafting, stopped = np.ones(runs, dtype=bool), np.zeros(runs, dtype=bool)
    again, never = np.zeros(runs), np.zeros(runs)  # tokens drafted after `first`, summed over a run's sequences
    live = tokens < total
    while live.any():
        yields = np.where(drafting[:, None], 1 + rng.choice(k + 1, size=tokens.shape, p=odds), 1)
        yields = (np.minimum(tokens + yields, total) - tokens) * live
        drafted = np.where(drafting, yields.sum(axis=1), 0)
        again += drafted
        never += np.where(stopped, 0, drafted)
        running = live.any(axis=1)
        fits = ~(live & (tokens > held_most)).any(axis=1)  # the pass's sequences, by what each held before it
        drafting = np.where(running, fits, drafting)
        stopped |= running & ~fits
        tokens += yields
        live = tokens < total
    return float((again - never).mean()) / batch, float(np.mean(~drafting) - np.mean(stopped))
