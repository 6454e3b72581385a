"""A host cache as a user runs it (`--host-cache-GB`): on an L4 whose KV cache cannot hold 128 shared documents, host
memory that holds them all finds more of them, its loads cross the host link, and the header says it is there; the
setting is refused in one line where nothing is shared or its value is no size."""

from __future__ import annotations

import json

import pytest

from explore.cli import main

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# Questions over 128 documents of 3,000 tokens (examples/prefix-cache.yaml): 128 x 3,000 tokens x 128 KiB of
# Llama-3-8B's KV a token is about 50 GB, against the L4's 24 GB.
HEAD = ["run", "--model", "llama-3-8b", "--device", "l4", "--serving", "--execution", "engine"]
DOCUMENTS = ["--requests", "120", "--prompt", "3150", "--output", "50", "--rate", "4", "--scheduler", "chunked",
             "--prefix-tokens", "3000", "--prefix-groups", "128"]
RUN = [*HEAD, *DOCUMENTS]


def _metrics(capsys, *extra: str) -> dict:
    assert main([*RUN, *extra, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_host_memory_that_holds_every_document_finds_more_of_them(capsys):
    alone = _metrics(capsys)
    tiered = _metrics(capsys, "--host-cache-GB", "64")
    assert alone["swap_s"] == 0 < tiered["swap_s"]
    assert tiered["prefix_hit_rate"] > alone["prefix_hit_rate"]
    assert tiered["ttft_p50_s"] < alone["ttft_p50_s"]
    assert main([*RUN, "--host-cache-GB", "64"]) == 0
    assert "64 GB of host memory a replica keeping evicted prefix blocks" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--rate", "2", "--prompt", "64", "--output", "4", "--host-cache-GB", "8"],
     "--host-cache-GB: found 8 with no shared prefix, allowed: with --prefix-tokens N"),
    ([*DOCUMENTS, "--host-cache-GB", "-1"], "--host-cache-GB: found -1, allowed: gigabytes >= 0"),
    # A negative size is no size, shared prefix or not: refused for its sign, not for what it is set beside.
    (["--rate", "2", "--prompt", "64", "--output", "4", "--host-cache-GB", "-1"],
     "--host-cache-GB: found -1, allowed: gigabytes >= 0"),
    # Llama-3-8B's 16-token block is 16 x 128 KiB = 2.1 MB: a megabyte of host memory holds none.
    ([*DOCUMENTS, "--host-cache-GB", "0.001"], "--host-cache-GB: found 0.001, allowed: 0 (none) or at least one KV "
     "block for each of a replica's 1 engine(s), 0.0021 GB"),
])
def test_a_host_cache_that_cannot_run_is_one_line(capsys, args, message):
    assert main([*HEAD, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
