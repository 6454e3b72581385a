"""The iteration log's tokens are the query tokens an iteration computed (a speculating decode's verified k + 1, not
one), and its prefill tokens say which iterations prefilled: what the latency predictor and the Chrome trace read,
rather than inferring a prefill from more tokens than sequences. Figures by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import simpy

from kernels.shapes import step_shape
from sim.chrome_trace import serving_trace_events
from sim.kv_cache import PagedKVCache
from sim.latency_prediction import predict_latency
from sim.replica import IterationRow, Replica
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.serving import Pool, serve_pools, serving_memory
from sim.serving_metrics import IterationLog
from sim.speculative import ServingSpeculation, Speculation
from workloads.requests import RequestSet

BLOCK = 16
KV_PER_TOKEN_B = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)


def _served(costs, scheduler: str, speculation: ServingSpeculation | None, **limits):
    """Four requests of a 16-token prompt and 7 output tokens arriving together on one replica."""
    memory = serving_memory(capacity_B=10_000 * BLOCK * KV_PER_TOKEN_B, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN_B, block_tokens=BLOCK)
    pool = Pool(name="serve", role="serve", replicas=1, costs=costs, scheduler=scheduler,
                limits=SchedulerLimits(max_seqs=8, **limits), memory=memory, idle_power_W=costs.device.idle_power_W,
                speculation=speculation)
    requests = RequestSet(arrival_s=np.zeros(4), prompt_tokens=np.full(4, 16), output_tokens=np.full(4, 7))
    return serve_pools([pool], requests).iterations


@pytest.mark.parametrize("scheduler", ["continuous", "orca"])
def test_a_speculating_decode_logs_the_tokens_it_verified(costs, scheduler):
    """k = 2, every draft accepted (the draft: the target's own costs, within its context): one prefill of the four
    prompts (4 x 16 = 64 tokens), then each request's 6 further tokens in 2 iterations verifying 3 tokens of each of the
    4: 12 tokens each, 64 + 24 = 88 in all (before: 64 + 4 + 4 = 72, one a decode). Without speculation: 6 decode
    iterations of 4 tokens, 64 + 24 = 88 too (the invariant)."""
    spec = ServingSpeculation(Speculation(drafted=2, acceptance=1.0), draft=costs, draft_positions=100_000,
                              draft_query=3)
    log = _served(costs, scheduler, spec)
    assert log.tokens.tolist() == [64, 12, 12] and log.prefill_tokens.tolist() == [64, 0, 0]
    assert log.batch_size.tolist() == [4, 4, 4]
    plain = _served(costs, scheduler, None)
    assert plain.tokens.tolist() == [64] + [4] * 6 and plain.prefill_tokens.tolist() == [64] + [0] * 6


def test_a_speculating_chunked_iteration_logs_its_budget_of_verified_tokens():
    """A chunked budget of 8, k = 2, 8 decoding: two verify 3 tokens, the third 2 (its drafts cut), the rest sit out:
    the row says 3 sequences, 3 + 3 + 2 = 8 tokens, none of them a prefill's (before: 3, one a decode)."""
    kv = PagedKVCache(capacity_blocks=4000, block_tokens=BLOCK)
    state = EngineState(kv=kv)
    for index in range(8):
        seq = Sequence(index=index, arrival_s=0.0, prompt=4, output=20, computed=4, generated=1)
        kv.hold(index, 5)
        state.running.append(seq)
    speculation = ServingSpeculation(Speculation(drafted=2, acceptance=1.0))
    replica = Replica(simpy.Environment(), None, make_scheduler("chunked", SchedulerLimits(max_seqs=8, chunk_tokens=8)),
                      state, window=None, swap_s_per_token=0.0, on_finish=lambda seq: None, speculation=speculation)
    batch = replica.scheduler.next_batch(state)
    row = replica.row(0.0, 1.0, batch, speculation.speculation.verified, 0.0)
    assert (row.seqs, row.tokens, row.prefill_tokens, row.prefills) == (3, 8, 0, 0)


def test_the_predictor_reads_a_speculating_replica_s_decode_only_iterations_as_decodes(costs):
    """An Orca replica decoding 63 sequences at 4,000 tokens whose last 64 iterations each verified 3 tokens of 63
    decodes (189 tokens, no prompt): a joining request's TPOT is one decode step of the 64, priced by hand (read as
    more tokens than sequences, every iteration would have been taken for one beside a 127-token prompt)."""
    state = EngineState(kv=PagedKVCache(capacity_blocks=40_000, block_tokens=BLOCK))
    state.running.extend(Sequence(index=i, arrival_s=0.0, prompt=16, output=8192, computed=3999, generated=3984)
                         for i in range(63))
    replica = Replica(simpy.Environment(), costs, make_scheduler("orca", SchedulerLimits()), state, window=None,
                      swap_s_per_token=0.0, on_finish=lambda seq: None)
    replica.log = [IterationRow(0.0, 0.0, 63, 189, 0, 0.0, 0, 0)] * 64
    decode_s = costs.price(step_shape([], [4000] * 64, sampled=64)).time_s
    assert predict_latency(replica, 4000).tpot_s == pytest.approx(decode_s, rel=1e-9)


def test_the_chrome_trace_names_an_iteration_by_whether_it_prefilled():
    """A one-token chunk beside 3 decodes (4 sequences, 4 tokens) prefilled: 'prefill'; 2 speculating decodes verifying
    3 tokens each (2 sequences, 6 tokens) did not: 'decode' (before, both by tokens against sequences: the reverse)."""
    log = IterationLog(start_s=[0.0, 1.0], duration_s=[1.0, 1.0], batch_size=[4, 2], tokens=[4, 6],
                       kv_blocks_used=[1, 1], kv_blocks_total=10, prefill_tokens=[1, 0])
    none = np.array([])
    result = SimpleNamespace(iterations=log, records=SimpleNamespace(arrival_s=none, first_token_s=none, finish_s=none))
    names = [event["name"] for event in serving_trace_events(result, "tiny") if event["ph"] == "X"]
    assert names == ["prefill", "decode"]
