"""Writes agents.jsonl: a synthetic Mooncake-format trace of tool-using agent sessions (a prefix tree), seeded.

Generated here, not measured: it exists to show the prefix tree's mechanics in examples/prefix-tree.yaml. Each
session starts with one of four agents' system prompts (6 blocks of 512 tokens: tool descriptions) and a task
(1-2 blocks); each later call of the session (7 calls in 10 continue one) sends everything so far plus the tool's
output (1-3 blocks), and one in five of those in a session past 7 blocks retries from an earlier call instead (it
forks the session there). Sessions end past 10 blocks (Llama-3-8B's 8,192-token context keeps every prompt and
answer). Arrivals are Poisson at 6 calls per second. The format is
Mooncake's (kvcache-ai/Mooncake FAST25-release/traces): timestamp in ms, input_length, output_length, and one hash id
per 512 tokens, alike where two prompts agree up to that block's end; a prompt's last block is partial (its id names
the partial block: a later call that extends it gets a new id there).

Run: python3 examples/traces/agents.py  (rewrites examples/traces/agents.jsonl; --calls N --out PATH writes another,
e.g. a long one for bench/bench_serving.py)
"""

from __future__ import annotations

import argparse
import json
from itertools import count
from pathlib import Path

import numpy as np

BLOCK_TOKENS = 512
CALLS = 400
SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=CALLS, help=f"calls to write (default {CALLS})")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".jsonl"),
                        help="the trace written (default agents.jsonl beside this file)")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    fresh = count()
    systems = [[next(fresh) for _ in range(6)] for _ in range(4)]
    open_sessions: list[list[int]] = []  # each session's whole blocks so far
    clock_ms = 0.0
    lines = []
    for _ in range(args.calls):
        clock_ms += rng.exponential(1000 / 6)
        if open_sessions and rng.random() < 0.7:
            session = open_sessions[rng.integers(len(open_sessions))]
            if rng.random() < 0.2 and len(session) > 7:  # a retry: fork from an earlier call
                session = session[:rng.integers(7, len(session))]
                open_sessions.append(session)
            session.extend(next(fresh) for _ in range(rng.integers(1, 4)))
        else:
            session = list(systems[rng.integers(len(systems))]) + [next(fresh) for _ in range(rng.integers(1, 3))]
            open_sessions.append(session)
        partial = int(rng.integers(1, BLOCK_TOKENS))  # the call's own last tokens, in a block of its own
        ids = [*session, next(fresh)]
        lines.append({"timestamp": round(clock_ms), "input_length": len(session) * BLOCK_TOKENS + partial,
                      "output_length": int(rng.integers(50, 300)), "hash_ids": ids})
        if len(session) > 10:
            open_sessions.remove(session)
    args.out.write_text("".join(json.dumps(line) + "\n" for line in lines))


if __name__ == "__main__":
    main()
