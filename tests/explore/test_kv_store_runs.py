"""A KV store the replicas share as a user runs it (`--kv-store-GB`): two H100 replicas dealt agent calls in turn,
each with a quarter of its memory, find more of the prompts' prefixes beside the store (what one replica computed
the other fetches), fetching takes time on the node link's NIC, and the header says the store is there; settings that
cannot run are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explore.cli import main

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

ROOT = Path(__file__).resolve().parents[2]
HEAD = ["run", "--model", "llama-3-8b", "--device", "h100-sxm", "--serving", "--execution", "engine"]
AGENTS = ["--trace", str(ROOT / "examples" / "traces" / "agents.jsonl"), "--arrival", "trace", "--rate", "12",
          "--requests", "120", "--replicas", "2", "--router", "round_robin", "--memory-utilization", "0.25"]


def _metrics(capsys, *extra: str) -> dict:
    assert main([*HEAD, *AGENTS, *extra, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_replicas_beside_a_store_find_what_the_other_computed(capsys):
    alone = _metrics(capsys)
    shared = _metrics(capsys, "--kv-store-GB", "64")
    faster = _metrics(capsys, "--kv-store-GB", "64", "--kv-store-GBps", "400")
    assert alone["swap_s"] == 0 < faster["swap_s"] < shared["swap_s"]
    assert shared["prefix_hit_rate"] > alone["prefix_hit_rate"]
    assert main([*HEAD, *AGENTS, "--kv-store-GB", "64"]) == 0
    assert "a 64 GB KV store the replicas share, reached over each device's node-link NIC" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--rate", "2", "--prompt", "64", "--output", "4", "--kv-store-GB", "8"],
     "--kv-store-GB: found 8 with no shared prefix"),
    (["--rate", "2", "--prompt", "64", "--output", "4", "--prefix-tokens", "32", "--kv-store-GBps", "8"],
     "--kv-store-GBps: found 8 with no KV store"),
    (["--rate", "2", "--prompt", "64", "--output", "4", "--prefix-tokens", "32", "--kv-store-GB", "nan"],
     "--kv-store-GB: found nan, allowed: gigabytes >= 0"),
    # Llama-3-8B's 16-token block is 16 x 128 KiB = 2.1 MB: a store of 1 MB holds none.
    (["--rate", "2", "--prompt", "64", "--output", "4", "--prefix-tokens", "32", "--kv-store-GB", "0.001"],
     "--kv-store-GB: found 0.001, allowed: 0 (none) or at least one KV block, 0.0021 GB"),
])
def test_a_store_that_cannot_run_is_one_line(capsys, args, message):
    assert main([*HEAD, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
