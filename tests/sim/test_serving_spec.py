"""A serving section's requests against what its trace and prompts hold: the counts a run reports are the
requests it simulated, and a shared prefix fits in every prompt."""

from __future__ import annotations

import pytest

from sim.serving_spec import DEFAULT_REQUESTS, ServingSpec
from workloads.requests import Fixed, LogNormal, Uniform


@pytest.fixture
def three_requests(tmp_path):
    trace = tmp_path / "three.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,40,6\n0.5,90,8\n1.0,60,4\n")
    return str(trace)


def test_the_default_count_takes_a_shorter_trace_whole_and_says_so(three_requests):
    spec = ServingSpec(trace=three_requests, rate_per_s=1.0)
    assert DEFAULT_REQUESTS > 3 and spec.requests == 3 and len(spec.request_set()) == 3
    two = ServingSpec(trace=three_requests, rate_per_s=1.0, requests=2)
    assert two.request_set().prompt_tokens.tolist() == [40, 90]


@pytest.mark.parametrize("requests", [5, DEFAULT_REQUESTS])
def test_more_requests_than_the_trace_holds_is_one_line(three_requests, one_line_error, requests):
    """Given explicitly, the default's count too: it was taken for the default and served the trace's three."""
    where, message = one_line_error(lambda: ServingSpec(trace=three_requests, rate_per_s=1.0, requests=requests))
    assert where == "requests" and f"found {requests}, allowed: at most 3, the requests in trace" in message


@pytest.mark.parametrize(("fields", "shortest"), [
    ({"prompt": Fixed(tokens=1024)}, 1024),
    ({"prompt": Uniform(low=100, high=101)}, 100),  # 1,000 draws of two lengths: the shorter is among them
    ({"trace": "TRACE"}, 40),  # the trace's shortest prompt among the requests taken
])
def test_a_shared_prefix_longer_than_a_prompt_is_one_line(three_requests, one_line_error, fields, shortest):
    fields = {k: (three_requests if v == "TRACE" else v) for k, v in fields.items()}
    ServingSpec(rate_per_s=1.0, prefix_tokens=shortest, **fields)  # as long as the shortest prompt: allowed
    where, message = one_line_error(lambda: ServingSpec(rate_per_s=1.0, prefix_tokens=shortest + 1, **fields))
    assert where == "prefix_tokens" and f"allowed: at most {shortest} tokens, the shortest prompt" in message


def test_a_prefix_is_judged_against_the_prompts_drawn_not_the_distributions_floor():
    """A lognormal's floor is 1 token, but its prompts around a median of 1,024 (sigma 0.6) all hold a 64-token
    prefix: 64 / 1,024 is 4.6 sigmas below the median."""
    ServingSpec(rate_per_s=1.0, prompt=LogNormal(median=1024, sigma=0.6), prefix_tokens=64)


@pytest.mark.parametrize("name", ["prompt", "output"])
def test_lengths_given_as_a_number_are_one_line(name, one_line_error):
    """From Python, prompt=8000 reads as a length; it was an AttributeError ('int' object has no attribute 'sample')
    only once requests were drawn. It is a distribution: Fixed(tokens=8000)."""
    _, message = one_line_error(lambda: ServingSpec(**{name: 8000}))
    assert message.startswith("found 8000, allowed: a length distribution of workloads/requests.py") and \
        message.endswith("e.g. Fixed(tokens=8000)"), message


def test_conversations_behind_a_prefill_pool_are_taken(tmp_path):
    """Two conversations of two turns given by a trace, as conversation_turns gives them, and documents sharing a
    prefix: behind a prefill pool each is served (the prefill replica that served a turn keeps its prompt cached for
    the next: tests/explore/test_prefix_tree_runs.py counts what it finds)."""
    chat = tmp_path / "chat.csv"
    chat.write_text("arrival_s,prompt_tokens,output_tokens,prefix_group,shared_tokens,after_previous_s\n"
                    "0.0,40,6,0,0,\n0.5,40,6,1,0,\n0.5,90,6,0,45,2.0\n0.5,90,6,1,45,2.0\n")
    assert ServingSpec(trace=str(chat), rate_per_s=1.0, prefill_replicas=1).traced_turns
    assert ServingSpec(prompt=Fixed(tokens=40), output=Fixed(tokens=6), rate_per_s=1.0, requests=2,
                       conversation_turns=2, prefill_replicas=1).conversations
    documents = tmp_path / "documents.csv"
    documents.write_text("arrival_s,prompt_tokens,output_tokens,prefix_group,shared_tokens\n"
                         "0.0,40,6,0,0\n0.5,40,6,1,0\n1.0,50,6,0,32\n")
    ServingSpec(trace=str(documents), rate_per_s=1.0, prefill_replicas=1)


def test_cascade_over_several_groups_is_allowed_and_over_conversations_needs_a_system_prompt(tmp_path):
    """Cascade attention reads each group's prefix once for its sequences: several prefix_groups, or a trace's
    prefix_group column, with prefix_tokens run with it, as conversations behind a system prompt do. Conversations
    without one have no prefix two sequences share (one turn of a conversation runs at a time), nor several groups
    behind a prefill pool: not modeled, the spec's unjudged reason (a sweep records such a point not run)."""
    assert not ServingSpec(prompt=Fixed(tokens=40), output=Fixed(tokens=6), rate_per_s=1.0, prefix_tokens=32,
                           prefix_groups=3, prefix_attention="cascade").unjudged()
    grouped = tmp_path / "grouped.csv"
    grouped.write_text("arrival_s,prompt_tokens,output_tokens,prefix_group\n0.0,40,6,0\n0.5,40,6,1\n1.0,50,6,0\n")
    assert not ServingSpec(trace=str(grouped), rate_per_s=1.0, prefix_tokens=32, prefix_attention="cascade").unjudged()
    assert not ServingSpec(prompt=Fixed(tokens=40), output=Fixed(tokens=6), rate_per_s=1.0, requests=4,
                           conversation_turns=2, prefix_tokens=32, prefix_attention="cascade").unjudged()
    reason = ServingSpec(prompt=Fixed(tokens=40), output=Fixed(tokens=6), rate_per_s=1.0, requests=4,
                         conversation_turns=2, prefix_attention="cascade").unjudged()
    assert reason.startswith("prefix_attention: found 'cascade' with conversation_turns 2, allowed: paged"), reason
    reason = ServingSpec(prompt=Fixed(tokens=40), output=Fixed(tokens=6), rate_per_s=1.0, prefix_tokens=32,
                         prefix_groups=3, prefix_attention="cascade", prefill_replicas=1).unjudged()
    assert reason.startswith("prefix_attention: found 'cascade' with prefix_groups 3, allowed: paged (behind a "
                             "prefill pool"), reason
    assert not ServingSpec(prompt=Fixed(tokens=40), output=Fixed(tokens=6), rate_per_s=1.0, prefix_tokens=32,
                           prefix_attention="cascade", prefill_replicas=1).unjudged()  # one prefix, held once
