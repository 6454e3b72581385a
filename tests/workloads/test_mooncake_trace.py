"""Mooncake traces (workloads/requests.py read_mooncake_trace): requests and their prefix tree read from JSON lines,
against the lines written here; bad lines refused with the file, line and key."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from workloads.errors import InputError
from workloads.requests import MOONCAKE_BLOCK_TOKENS, RequestSet, read_mooncake_trace, read_request_trace

# Dynamo's example of the format (ai-dynamo benchmarks/data_generator README): prompts of 6,755 and 7,319 tokens
# sharing their first block, the third a third branch, the fourth a short one on the same first block.
LINES = [
    {"timestamp": 0, "input_length": 6755, "output_length": 500, "hash_ids": list(range(14))},
    {"timestamp": 0, "input_length": 7319, "output_length": 490, "hash_ids": [0, *range(14, 28)]},
    {"timestamp": 3052, "input_length": 7234, "output_length": 794, "hash_ids": [0, *range(28, 42)]},
    {"timestamp": 3052, "input_length": 2287, "output_length": 316, "hash_ids": [0, 42, 43, 44, 45]},
]


def _write(tmp_path, lines, name="trace.jsonl"):
    path = tmp_path / name
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    return path


@pytest.mark.parametrize("name", ["trace.jsonl", "trace.jsonl.gz"])
def test_requests_and_their_tree_are_read_as_written(tmp_path, name):
    requests = read_request_trace(_write(tmp_path, LINES, name))
    assert requests.prompt_tokens.tolist() == [6755, 7319, 7234, 2287]
    assert requests.output_tokens.tolist() == [500, 490, 794, 316]
    assert requests.arrival_s.tolist() == [0.0, 0.0, 3.052, 3.052] and requests.has_arrivals
    nodes = requests.prefix_nodes
    # One node per distinct prefix: the shared first block once, then each request's own blocks.
    assert len({node for path in nodes for node in path}) == 14 + 14 + 14 + 4 + 1 - 1
    assert nodes[0][0] == nodes[1][0] == nodes[2][0] == nodes[3][0]
    assert len(set(nodes[0][1:]) | set(nodes[1][1:])) == 13 + 14
    # The last node of a prompt ends at the prompt's end: 6,755 = 13 x 512 + 99.
    path = requests.prefix_path(0)
    assert path[0][1] == MOONCAKE_BLOCK_TOKENS and path[-1][1] == 6755 and len(path) == 14


def test_an_id_after_another_prefix_is_another_node(tmp_path):
    """Hash id 7 after 1 and after 2 names different prompts' blocks (a block is hashed with all before it)."""
    lines = [{"timestamp": 0, "input_length": 1024, "output_length": 1, "hash_ids": [1, 7]},
             {"timestamp": 1, "input_length": 1024, "output_length": 1, "hash_ids": [2, 7]}]
    nodes = read_mooncake_trace(_write(tmp_path, lines)).prefix_nodes
    assert nodes[0][1] != nodes[1][1]


def test_without_timestamps_nothing_has_an_arrival(tmp_path):
    lines = [{k: v for k, v in line.items() if k != "timestamp"} for line in LINES]
    requests = read_mooncake_trace(_write(tmp_path, lines))
    assert not requests.has_arrivals and not requests.arrival_s.any()


def test_a_prompt_cut_to_a_context_keeps_the_nodes_it_reaches(tmp_path):
    requests = read_mooncake_trace(_write(tmp_path, LINES))
    clipped, count = requests.clipped_to_context(4096)  # an output keeps at most 2,048, the prompt the rest
    assert count == 3  # the fourth, 2,287 + 316 tokens, fits
    assert clipped.prompt_tokens.tolist() == [4096 - 500, 4096 - 490, 4096 - 794, 2287]
    assert [len(path) for path in clipped.prefix_nodes] == [8, 8, 7, 5]  # ceil(prompt / 512)
    assert clipped.prefix_nodes[1] == requests.prefix_nodes[1][:8]
    assert clipped.head(2).prefix_nodes == clipped.prefix_nodes[:2]


@pytest.mark.parametrize("line, key, found", [
    ("{not json", None, "not JSON"),
    ("[1, 2]", None, "found list"),
    ({"timestamp": 5, "output_length": 3, "hash_ids": [0]}, "input_length", "missing"),
    ({"timestamp": 5, "input_length": 600, "output_length": 0, "hash_ids": [0, 1]}, "output_length", "0"),
    ({"timestamp": 5, "input_length": 600, "output_length": 3, "hash_ids": [0]}, "hash_ids", "1 ids"),
    ({"timestamp": 5, "input_length": 600, "output_length": 3, "hash_ids": [0, "a"]}, "hash_ids", "found 'a'"),
    ({"timestamp": 5, "input_length": 600, "output_length": 3, "hash_ids": [0, 1.0]}, "hash_ids", "found 1.0"),
    ({"timestamp": 5, "input_length": 600, "output_length": 3, "hash_ids": [None, 1]}, "hash_ids", "found null"),
    # AIPerf's multi-turn rows: a turn's new input only, after the previous answer (not a whole prompt)
    ({"session_id": "s1", "input_length": 600, "output_length": 3, "hash_ids": [0, 1]}, "session_id", "'s1'"),
    ({"timestamp": 5, "delay": 200, "input_length": 600, "output_length": 3, "hash_ids": [0, 1]}, "delay", "200"),
    ({"timestamp": -1, "input_length": 600, "output_length": 3, "hash_ids": [0, 1]}, "timestamp", "-1"),
    ({"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [0, 1]}, "timestamp", "0 after 10"),
    ({"input_length": 600, "output_length": 3, "hash_ids": [0, 1]}, "timestamp", "missing"),
    ({"timestamp": None, "input_length": 600, "output_length": 3, "hash_ids": [0, 1]}, "timestamp", "found null"),
])
def test_a_bad_line_is_refused_naming_the_file_line_and_key(tmp_path, line, key, found):
    first = {"timestamp": 10, "input_length": 512, "output_length": 1, "hash_ids": [9]}
    path = _write(tmp_path, [first, line])
    with pytest.raises(InputError) as err:
        read_mooncake_trace(path)
    message = str(err.value)
    assert message.startswith(f"{path}: line 2") and found in message and "\n" not in message
    if key:
        assert f"key {key}" in message


def test_a_tree_beside_prefix_groups_is_refused():
    with pytest.raises(InputError, match="prefix_nodes beside prefix_group"):
        RequestSet(arrival_s=np.zeros(1), prompt_tokens=np.array([10]), output_tokens=np.array([1]),
                   prefix_group=np.array([0]), prefix_nodes=((0,),))


def test_a_json_file_is_told_to_be_named_jsonl(tmp_path):
    """A Mooncake trace saved as .json was read as a CSV ('found a header and no rows')."""
    path = _write(tmp_path, LINES, "trace.json")
    with pytest.raises(InputError, match=r"trace\.json: found a \.json file, allowed: a CSV trace, or a Mooncake trace "
                                         r"of one JSON object a line named \.jsonl"):
        read_request_trace(path)
