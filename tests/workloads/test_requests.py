"""Request sources: synthetic arrivals and lengths against their defining statistics, the shipped traces
against figures computed from the raw files, user CSVs round-tripped, and one-line errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from workloads.errors import InputError
from workloads.requests import (
    SHIPPED_TRACES,
    Empirical,
    Fixed,
    Gamma,
    LogNormal,
    Phased,
    Poisson,
    RequestSet,
    Together,
    Uniform,
    read_request_trace,
    resolve_trace,
    sample_conversations,
    sample_requests,
    think_times,
)

# The shared data folder beside the project (DESIGN.md, "Calibration and validation data"), where the traces came from.
RAW_TRACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "vidur" / "request_traces"


def _gaps(process, count: int, seed: int = 7) -> np.ndarray:
    times = process.times(np.random.default_rng(seed), count)
    return np.diff(np.concatenate([[0.0], times]))


def _cv(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


# --- arrival processes ---------------------------------------------------------------------------------

def test_poisson_gaps_are_exponential_with_mean_one_over_rate():
    gaps = _gaps(Poisson(rate_per_s=4.0), 20_000)
    assert gaps.mean() == pytest.approx(0.25, rel=0.03)
    assert _cv(gaps) == pytest.approx(1.0, rel=0.05)
    assert gaps.min() > 0  # the first request arrives after one gap, not at 0


def test_gamma_gaps_have_the_requested_mean_and_cv():
    gaps = _gaps(Gamma(rate_per_s=2.0, cv=3.0), 200_000)
    assert gaps.mean() == pytest.approx(0.5, rel=0.05)
    assert _cv(gaps) == pytest.approx(3.0, rel=0.08)
    calm = _gaps(Gamma(rate_per_s=2.0, cv=0.5), 20_000)
    assert _cv(calm) == pytest.approx(0.5, rel=0.05)


def test_together_is_a_static_batch():
    assert np.array_equal(Together().times(np.random.default_rng(0), 5), np.zeros(5))


# --- length distributions ------------------------------------------------------------------------------

def test_fixed_is_exact():
    assert np.array_equal(Fixed(tokens=512).sample(np.random.default_rng(0), 4), [512] * 4)


def test_uniform_is_inclusive_and_reaches_both_ends():
    values = Uniform(low=3, high=7).sample(np.random.default_rng(0), 2_000)
    assert values.dtype == np.int64
    assert set(values.tolist()) == {3, 4, 5, 6, 7}


def test_lognormal_median_and_clipping():
    free = LogNormal(median=1000.0, sigma=0.8).sample(np.random.default_rng(1), 20_000)
    assert np.median(free) == pytest.approx(1000, rel=0.03)
    assert np.log(free).std() == pytest.approx(0.8, rel=0.05)
    clipped = LogNormal(median=1000.0, sigma=0.8, low=500, high=1500).sample(np.random.default_rng(1), 20_000)
    assert clipped.dtype == np.int64
    assert clipped.min() == 500 and clipped.max() == 1500
    # Clipping moves the tails onto the bounds: P(X < 500) = Phi(ln 0.5 / 0.8) = 0.193 for a log-normal.
    assert np.mean(clipped == 500) == pytest.approx(0.193, abs=0.015)


def test_lognormal_with_zero_sigma_is_the_median():
    assert set(LogNormal(median=99.6, sigma=0.0).sample(np.random.default_rng(0), 10).tolist()) == {100}


def test_empirical_resamples_the_observed_values():
    observed = np.array([10, 20, 20, 90])
    values = Empirical(values=observed).sample(np.random.default_rng(0), 40_000)
    assert set(values.tolist()) == {10, 20, 90}
    assert np.mean(values == 20) == pytest.approx(0.5, abs=0.02)
    observed[0] = 5  # the distribution keeps its own copy
    assert 5 not in Empirical(values=[10, 20]).sample(np.random.default_rng(0), 100)


# --- sample_requests -----------------------------------------------------------------------------------

def _sample(arrivals=None, seed: int = 3, count: int = 1_000) -> RequestSet:
    return sample_requests(arrivals=arrivals or Poisson(rate_per_s=2.0),
                           prompt=LogNormal(median=800.0, sigma=1.0, high=8192),
                           output=Uniform(low=16, high=512), count=count, seed=seed)


def test_same_seed_same_requests_other_seed_other_requests():
    first, again, other = _sample(), _sample(), _sample(seed=4)
    for name in ("arrival_s", "prompt_tokens", "output_tokens"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
        assert not np.array_equal(getattr(first, name), getattr(other, name))
    assert len(first) == 1_000 and first.has_arrivals
    assert "poisson 2 req/s" in first.source and "seed 3" in first.source


def test_changing_the_arrivals_leaves_the_lengths():
    slow, fast, bursty = _sample(), _sample(Poisson(rate_per_s=8.0)), _sample(Gamma(rate_per_s=2.0, cv=4.0))
    for other in (fast, bursty):
        assert np.array_equal(slow.prompt_tokens, other.prompt_tokens)
        assert np.array_equal(slow.output_tokens, other.output_tokens)
    np.testing.assert_allclose(fast.arrival_s * 4, slow.arrival_s, rtol=1e-12)


def test_prompt_and_output_streams_are_independent():
    requests = _sample(count=20_000)
    assert abs(np.corrcoef(requests.prompt_tokens, requests.output_tokens)[0, 1]) < 0.03


# --- RequestSet ----------------------------------------------------------------------------------------

def test_head_rate_and_scaled_to_rate():
    requests = RequestSet(arrival_s=[5.0, 6.0, 8.0, 9.0], prompt_tokens=[1, 2, 3, 4], output_tokens=[4, 3, 2, 1])
    assert requests.rate_per_s == pytest.approx(3 / 4)
    scaled = requests.scaled_to_rate(3.0)
    np.testing.assert_allclose(scaled.arrival_s, [0.0, 0.25, 0.75, 1.0])
    assert scaled.rate_per_s == pytest.approx(3.0)
    assert np.array_equal(scaled.prompt_tokens, [1, 2, 3, 4])
    assert len(requests.head(2)) == 2 and np.array_equal(requests.head(2).output_tokens, [4, 3])
    assert len(requests.head(10)) == 4
    assert RequestSet(arrival_s=[0.0, 0.0], prompt_tokens=[1, 1], output_tokens=[1, 1]).rate_per_s == np.inf
    assert requests.head(1).scaled_to_rate(2.0).arrival_s.tolist() == [0.0]


def test_a_later_turn_s_arrival_s_leaves_the_rate_alone():
    """Two conversations of two turns opening at 0 and 2 s: four requests over the openers' 2 s are 1.5 req/s by
    hand, whatever arrival_s a later turn (which arrives after its previous answer) carries; scaled to 3 req/s the
    second conversation opens at 1 s."""
    for later_s in (2.0, 50.0):
        requests = RequestSet(arrival_s=[0.0, 2.0, later_s, later_s], prompt_tokens=[10, 10, 30, 30],
                              output_tokens=[5, 5, 5, 5], prefix_group=[0, 1, 0, 1], shared_tokens=[0, 0, 14, 14],
                              after_previous_s=[np.nan, np.nan, 1.0, 1.0])
        assert requests.rate_per_s == pytest.approx(1.5)
        assert requests.scaled_to_rate(3.0).arrival_s[:2].tolist() == pytest.approx([0.0, 1.0])


def test_request_set_arrays_are_read_only():
    requests = _sample(count=3)
    with pytest.raises(ValueError):
        requests.prompt_tokens[0] = 7


def test_with_arrivals_keeps_the_lengths_and_order():
    trace = read_request_trace(resolve_trace("arxiv-summarization")).head(500)
    timed = trace.with_arrivals(Poisson(rate_per_s=5.0), seed=0)
    assert timed.has_arrivals and np.array_equal(timed.prompt_tokens, trace.prompt_tokens)
    assert timed.rate_per_s == pytest.approx(5.0, rel=0.15)


# --- traces --------------------------------------------------------------------------------------------

def test_splitwise_conv_matches_the_raw_file():
    # 19,366 rows; means computed from the raw CSV with numpy.genfromtxt (prompt 1154.6974, output 211.1259).
    trace = read_request_trace(resolve_trace("splitwise-conv"))
    assert len(trace) == 19_366 and trace.has_arrivals
    assert np.all(np.diff(trace.arrival_s) >= 0) and trace.arrival_s[0] == 0.0
    assert trace.arrival_s[-1] == pytest.approx(3501.721937)
    assert trace.prompt_tokens.mean() == pytest.approx(1154.6974, abs=1e-3)
    assert trace.output_tokens.mean() == pytest.approx(211.1259, abs=1e-3)
    scaled = trace.scaled_to_rate(10.0)
    assert scaled.rate_per_s == pytest.approx(10.0)
    np.testing.assert_allclose(scaled.arrival_s, trace.arrival_s * trace.rate_per_s / 10.0)


def test_splitwise_code_and_arxiv_match_the_raw_files():
    code = read_request_trace(resolve_trace("splitwise-code"))
    assert len(code) == 8_819 and code.prompt_tokens.mean() == pytest.approx(2047.8483, abs=1e-3)
    arxiv = read_request_trace(resolve_trace("arxiv-summarization"))
    assert len(arxiv) == 28_257 and not arxiv.has_arrivals and not arxiv.arrival_s.any()
    assert arxiv.prompt_tokens.mean() == pytest.approx(2588.0780, abs=1e-3)
    assert arxiv.output_tokens.mean() == pytest.approx(291.4304, abs=1e-3)
    with pytest.raises(InputError, match="no inter-arrival times"):
        arxiv.scaled_to_rate(1.0)


@pytest.mark.skipif(not RAW_TRACES.is_dir(), reason="shared data folder not present")
def test_shipped_traces_are_the_shared_files_unchanged():
    raw = {"arxiv-summarization": "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv.gz"}
    for name, file in SHIPPED_TRACES.items():
        assert resolve_trace(name).read_bytes() == (RAW_TRACES / raw.get(name, file)).read_bytes()


def test_user_csv_round_trips(tmp_path):
    text = "arrival_s,prompt_tokens,output_tokens,note\n0.5,100,20,a\n0.5,3772.0,1e2,b\n\n2.25,7,1,c\n"
    for path, opener in ((tmp_path / "t.csv", open), (tmp_path / "t.csv.gz", gzip.open)):
        with opener(path, "wt") as file:
            file.write(text)
        requests = read_request_trace(path)
        assert requests.arrival_s.tolist() == [0.5, 0.5, 2.25]
        assert requests.prompt_tokens.tolist() == [100, 3772, 7]
        assert requests.output_tokens.tolist() == [20, 100, 1]
        assert requests.prompt_tokens.dtype == np.int64 and requests.has_arrivals


def test_a_trace_s_prefix_groups_are_read_and_kept_by_every_request_set_it_makes(tmp_path):
    path = tmp_path / "groups.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens,prefix_group\n0,100,20,7\n1,3000,900,3\n3,50,5,7\n")
    requests = read_request_trace(path)
    assert requests.prefix_group.tolist() == [7, 3, 7] and requests.prefix_group.dtype == np.int64
    assert requests.head(2).prefix_group.tolist() == [7, 3]
    assert requests.scaled_to_rate(4.0).prefix_group.tolist() == [7, 3, 7]
    assert requests.with_arrivals(Poisson(rate_per_s=2.0), seed=1).prefix_group.tolist() == [7, 3, 7]
    clipped, count = requests.clipped_to_context(1024)
    assert count == 1 and clipped.prefix_group.tolist() == [7, 3, 7]
    assert not requests.prefix_group.flags.writeable
    assert read_request_trace(tmp_path / "groups.csv").prefix_group is not None
    plain = tmp_path / "plain.csv"
    plain.write_text("prompt_tokens,output_tokens\n1,1\n")
    assert read_request_trace(plain).prefix_group is None


def test_a_trace_s_priorities_are_read_and_kept_by_every_request_set_it_makes(tmp_path):
    path = tmp_path / "tiers.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens,priority\n0,100,20,1\n1,3000,900,-2\n3,50,5,0\n")
    requests = read_request_trace(path)
    assert requests.priority.tolist() == [1, -2, 0] and requests.priority.dtype == np.int64
    assert requests.head(2).priority.tolist() == [1, -2]
    assert requests.scaled_to_rate(4.0).priority.tolist() == [1, -2, 0]
    assert requests.clipped_to_context(1024)[0].priority.tolist() == [1, -2, 0]
    assert not requests.priority.flags.writeable


def test_urgent_draws_take_their_share_apart_from_lengths_and_arrivals():
    """with_urgent marks each request urgent (priority 0, else 1) with the given probability: 10,000 draws at 0.2 fall
    within 4 standard deviations of 2,000; arrivals and lengths are untouched; the same seed draws the same; a
    conversation's turns share their first turn's draw; 0 and 1 mark none and all."""
    requests = sample_requests(arrivals=Poisson(rate_per_s=5.0), prompt=Uniform(low=8, high=64),
                               output=Uniform(low=1, high=32), count=10_000, seed=4)
    urgent = requests.with_urgent(0.2, seed=4)
    assert abs(int((urgent.priority == 0).sum()) - 2000) < 4 * (10_000 * 0.2 * 0.8) ** 0.5
    assert set(urgent.priority.tolist()) == {0, 1}
    for name in ("arrival_s", "prompt_tokens", "output_tokens"):
        np.testing.assert_array_equal(getattr(urgent, name), getattr(requests, name))
    np.testing.assert_array_equal(urgent.priority, requests.with_urgent(0.2, seed=4).priority)
    assert not np.array_equal(urgent.priority, requests.with_urgent(0.2, seed=5).priority)
    assert requests.with_urgent(0.0, seed=4).priority.min() == 1
    assert requests.with_urgent(1.0, seed=4).priority.max() == 0
    talks = sample_conversations(arrivals=Poisson(rate_per_s=1.0), prompt=Fixed(tokens=100), output=Fixed(tokens=20),
                                 count=400, turns=4, think_s=1.0, seed=2).with_urgent(0.5, seed=2)
    for group in np.unique(talks.prefix_group):
        assert len(set(talks.priority[talks.prefix_group == group].tolist())) == 1
    assert set(talks.priority.tolist()) == {0, 1}
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(InputError, match="priority_fraction"):
            requests.with_urgent(bad, seed=4)


def test_resolve_trace_takes_a_path_and_refuses_unknown_names(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("prompt_tokens,output_tokens\n1,1\n")
    assert resolve_trace(str(path)) == path
    with pytest.raises(InputError) as err:
        resolve_trace("splitwise-conversation")
    message = str(err.value)
    assert "\n" not in message and "did you mean 'splitwise-conv'" in message
    assert all(name in message for name in SHIPPED_TRACES)


BAD_TRACES = [  # file text, words the message must hold
    ("", ["no header"]),
    ("prompt_tokens,output_tokens\n", ["no rows"]),
    ("arrived_at,num_prefill_tokens,output\n0,1,1\n", ["output_tokens or num_decode_tokens", "arrived_at, "]),
    ("prompt_tokens,num_prefill_tokens,output_tokens\n1,1,1\n", ["prompt_tokens and num_prefill_tokens"]),
    ("prompt_tokens,output_tokens\n1,1\n2,abc\n", ["row 2", "output_tokens", "'abc'"]),
    ("prompt_tokens,output_tokens\n1,1\n2,\n", ["row 2", "output_tokens", "''"]),
    ("prompt_tokens,output_tokens\nnan,1\n", ["row 1", "prompt_tokens", "'nan'"]),
    ("prompt_tokens,output_tokens\ninf,1\n", ["row 1", "prompt_tokens", "'inf'"]),
    ("prompt_tokens,output_tokens\n1,1\n1,1\n-3,1\n", ["row 3", "prompt_tokens", "'-3'"]),
    ("prompt_tokens,output_tokens\n0,1\n", ["row 1", "prompt_tokens", "'0'", ">= 1"]),
    ("prompt_tokens,output_tokens\n1,2.5\n", ["row 1", "output_tokens", "'2.5'", "whole number"]),
    ("arrival_s,prompt_tokens,output_tokens\n-1,1,1\n", ["row 1", "arrival_s", "'-1'"]),
    ("arrival_s,prompt_tokens,output_tokens\n0,1,1\n2,1,1\n1,1,1\n", ["row 3", "arrival_s", "row 2", "sort"]),
    ("prompt_tokens,output_tokens\n1,1\n1,1,1\n", ["row 2", "3 fields"]),
    ("prompt_tokens,output_tokens,prefix_group\n1,1,0\n1,1,-2\n", ["row 2", "prefix_group", "'-2'", ">= 0"]),
    ("prompt_tokens,output_tokens,prefix_group\n1,1,1.5\n", ["row 1", "prefix_group", "'1.5'", "whole number"]),
    ("prompt_tokens,output_tokens,prefix_group\n1,1,doc\n", ["row 1", "prefix_group", "'doc'"]),
    ("prompt_tokens,output_tokens,prefix_group,shared_tokens\n10,1,0,0\n10,1,0,10\n",
     ["row 2", "shared_tokens", "found 10", "fewer than its prompt's 10 tokens"]),
    ("prompt_tokens,output_tokens,prefix_group,after_previous_s\n10,1,0,\n10,1,0,soon\n",
     ["row 2", "after_previous_s", "'soon'", "seconds >= 0"]),
    ("prompt_tokens,output_tokens,prefix_group,after_previous_s\n10,1,0,-1\n", ["row 1", "after_previous_s", "'-1'"]),
    ("prompt_tokens,output_tokens,shared_tokens\n10,1,3\n", ["shared_tokens or after_previous_s without prefix_group"]),
    ("prompt_tokens,output_tokens,prefix_group,shared_tokens\n300,200,0,0\n900,150,0,700\n",
     ["row 2", "shared_tokens", "found 700", "at most the 499 tokens the previous request of its group (row 1)"]),
    ("prompt_tokens,output_tokens,prefix_group,after_previous_s\n10,1,0,\n10,1,4,2.5\n10,1,0,1\n",
     ["row 2", "after_previous_s", "found 2.5", "first request of prefix_group 4", "empty"]),
    ("prompt_tokens,output_tokens,prefix_group,after_previous_s\n10,1,0,\n10,1,0,nan\n",
     ["row 2", "after_previous_s", "'nan'", "seconds >= 0"]),
    ("prompt_tokens,output_tokens,priority\n10,1,0\n10,1,high\n", ["row 2", "priority", "'high'", "whole number"]),
    ("prompt_tokens,output_tokens,priority\n10,1,0.5\n", ["row 1", "priority", "'0.5'", "whole number"]),
    ("prompt_tokens,output_tokens,priority\n10,1,\n", ["row 1", "priority", "''", "whole number"]),
]


@pytest.mark.parametrize(("text", "words"), BAD_TRACES)
def test_bad_trace_gives_one_line_naming_the_problem(tmp_path, text, words):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_request_trace(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    for word in words:
        assert word in message


@pytest.mark.parametrize("name", ["missing.csv", "not_gzip.csv.gz", "latin1.csv"])
def test_unreadable_trace_gives_one_line(tmp_path, name):
    (tmp_path / "not_gzip.csv.gz").write_text("prompt_tokens,output_tokens\n1,1\n")
    (tmp_path / "latin1.csv").write_bytes("prompt_tokens,output_tokens\n1,1 \xe9\n".encode("latin-1"))
    with pytest.raises(InputError) as err:
        read_request_trace(tmp_path / name)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(tmp_path / name))


# --- argument checks -----------------------------------------------------------------------------------

BAD_ARGUMENTS = [  # a call, words the message must hold
    (lambda: Poisson(rate_per_s=0), ["rate_per_s", "found 0", "> 0"]),
    (lambda: Poisson(rate_per_s=float("nan")), ["rate_per_s", "nan"]),
    (lambda: Gamma(rate_per_s=1.0, cv=-1.0), ["cv", "found -1.0", "> 0"]),
    (lambda: Uniform(low=5, high=4), ["high", "found 4", "low (5)"]),
    (lambda: Uniform(low=0, high=4), ["low", "found 0", ">= 1"]),
    (lambda: LogNormal(median=100.0, sigma=-0.5), ["sigma", "found -0.5", ">= 0"]),
    (lambda: LogNormal(median=0.0, sigma=1.0), ["median", "found 0.0"]),
    (lambda: LogNormal(median=10.0, sigma=1.0, low=20, high=10), ["high", "found 10", "low (20)"]),
    (lambda: Fixed(tokens=0), ["tokens", "found 0", ">= 1"]),
    (lambda: Fixed(tokens=2.5), ["tokens", "found 2.5", "integer"]),
    (lambda: Empirical(values=np.array([], dtype=np.int64)), ["values", "non-empty"]),
    (lambda: Empirical(values=[3, 0]), ["values", "found 0", "index 1"]),
    (lambda: _sample(count=0), ["count", "found 0", ">= 1"]),
    (lambda: _sample(seed=-1), ["seed", "found -1", ">= 0"]),
    (lambda: _sample(count=3).head(0), ["count", "found 0"]),
    (lambda: _sample(count=3).scaled_to_rate(-2.0), ["rate_per_s", "found -2.0"]),
    (lambda: RequestSet(arrival_s=[1.0, 0.5], prompt_tokens=[1, 1], output_tokens=[1, 1]),
     ["arrival_s", "index 1", "non-decreasing"]),
    (lambda: RequestSet(arrival_s=[0.0], prompt_tokens=[1, 1], output_tokens=[1, 1]), ["1 arrivals", "2 prompts"]),
]


@pytest.mark.parametrize(("call", "words"), BAD_ARGUMENTS)
def test_bad_argument_gives_one_line_naming_the_parameter(call, words):
    with pytest.raises(InputError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_conversations_by_hand():
    """Two conversations of three turns and one of one (7 requests), messages of 100 tokens and answers of 50: turn k
    carries the conversation so far, 150 tokens a turn before it, and shares the previous turn's cached tokens (its
    prompt and all but its last answer token)."""
    requests = sample_conversations(arrivals=Poisson(rate_per_s=1.0), prompt=Fixed(tokens=100),
                                    output=Fixed(tokens=50), count=7, turns=3, think_s=4.0, seed=2)
    assert requests.prompt_tokens.tolist() == [100, 250, 400, 100, 250, 400, 100]
    assert requests.shared_tokens.tolist() == [0, 149, 299, 0, 149, 299, 0]
    assert requests.prefix_group.tolist() == [0, 0, 0, 1, 1, 1, 2]
    gaps = requests.after_previous_s
    assert np.isnan(gaps[[0, 3, 6]]).all() and gaps[[1, 2, 4, 5]].tolist() == [4.0] * 4
    starts = requests.arrival_s
    assert starts[0] == starts[1] == starts[2] < starts[3] == starts[4] == starts[5] < starts[6]
    again = sample_conversations(arrivals=Poisson(rate_per_s=1.0), prompt=Fixed(tokens=100),
                                 output=Fixed(tokens=50), count=7, turns=3, think_s=4.0, seed=2)
    assert np.array_equal(again.arrival_s, starts)
    clipped, count = requests.clipped_to_context(300)  # outputs keep 50, prompts cut to 250: the third turns
    assert count == 2 and clipped.shared_tokens.tolist() == [0, 149, 249, 0, 149, 249, 0]
    assert requests.head(5).shared_tokens.tolist() == [0, 149, 299, 0, 149]


@pytest.mark.parametrize(("kwargs", "words"), [({"turns": 0}, "turns: found 0"),
                                               ({"think_s": -1.0}, "think_s: found -1.0")])
def test_bad_conversations_are_refused(kwargs, words):
    with pytest.raises(InputError, match=words):
        sample_conversations(**({"arrivals": Poisson(rate_per_s=1.0), "prompt": Fixed(tokens=10),
                                 "output": Fixed(tokens=5), "count": 4, "turns": 2, "think_s": 1.0, "seed": 0}
                                | kwargs))


def test_a_trace_gives_conversations_as_sample_conversations_makes_them(tmp_path):
    """A conversation written out as a trace (its groups, shared tokens and gaps after the previous answer; a group's
    first turn's gap empty) reads back as the same requests."""
    made = sample_conversations(arrivals=Poisson(rate_per_s=1.0), prompt=Fixed(tokens=100), output=Fixed(tokens=50),
                                count=5, turns=3, think_s=4.0, seed=2)
    lines = ["arrival_s,prompt_tokens,output_tokens,prefix_group,shared_tokens,after_previous_s"]
    for i in range(len(made)):
        gap = "" if np.isnan(made.after_previous_s[i]) else f"{made.after_previous_s[i]:g}"
        lines.append(f"{float(made.arrival_s[i])!r},{made.prompt_tokens[i]},{made.output_tokens[i]},{made.prefix_group[i]},"
                     f"{made.shared_tokens[i]},{gap}")
    path = tmp_path / "chat.csv"
    path.write_text("\n".join(lines) + "\n")
    read = read_request_trace(path)
    for column in ("arrival_s", "prompt_tokens", "output_tokens", "prefix_group", "shared_tokens"):
        assert np.array_equal(getattr(read, column), getattr(made, column)), column
    assert np.array_equal(read.after_previous_s, made.after_previous_s, equal_nan=True)


def test_think_times_vary_about_their_mean_with_the_asked_spread():
    """Gamma think times of mean 10 s: cv 1 (exponential) and 0.5 over 20,000 draws come within 2% of the mean and 3%
    of the spread asked; cv 0 is exactly the mean; the same seed draws the same times."""
    assert (think_times(10.0, 0.0, 3, 5) == 10.0).all()
    for cv in (1.0, 0.5):
        times = think_times(10.0, cv, 3, 20_000)
        assert times.mean() == pytest.approx(10.0, rel=0.02)
        assert times.std() / times.mean() == pytest.approx(cv, rel=0.03)
        assert (times > 0).all() and np.array_equal(times, think_times(10.0, cv, 3, 20_000))


def test_varying_think_times_leave_the_conversations_draws_alone():
    """The think times come from a stream of their own: the same seed draws the same arrivals, messages and answers
    with or without a spread, and only the later turns' gaps change."""
    args = dict(arrivals=Poisson(rate_per_s=5.0), prompt=Uniform(low=10, high=90), output=Uniform(low=1, high=30),
                count=40, turns=4, think_s=3.0, seed=11)
    fixed, varied = sample_conversations(**args), sample_conversations(**args, think_cv=1.0)
    for name in ("arrival_s", "prompt_tokens", "output_tokens", "shared_tokens", "prefix_group"):
        assert np.array_equal(getattr(fixed, name), getattr(varied, name)), name
    later = ~np.isnan(fixed.after_previous_s)
    assert (fixed.after_previous_s[later] == 3.0).all() and len(set(varied.after_previous_s[later])) == later.sum()


def test_several_system_prompts_are_drawn_per_conversation_and_leave_the_other_draws_alone():
    """With 3 system prompts each conversation's turns share one (prefix_root), every one of the 3 is drawn among
    100 conversations, the same seed draws the same, and arrivals, messages, answers and think times are those of one
    system prompt (a stream of its own)."""
    args = dict(arrivals=Poisson(rate_per_s=5.0), prompt=Uniform(low=10, high=90), output=Uniform(low=1, high=30),
                count=400, turns=4, think_s=3.0, seed=5, system_tokens=64, think_cv=1.0)
    one, three = sample_conversations(**args), sample_conversations(**args, system_groups=3)
    assert one.prefix_root is None
    roots = three.prefix_root
    for conversation in range(100):
        assert len(set(roots[three.prefix_group == conversation])) == 1
    assert set(roots.tolist()) == {0, 1, 2}
    assert np.array_equal(roots, sample_conversations(**args, system_groups=3).prefix_root)
    for name in ("arrival_s", "prompt_tokens", "output_tokens", "shared_tokens", "prefix_group", "after_previous_s"):
        assert np.array_equal(getattr(one, name), getattr(three, name), equal_nan=True), name
    assert np.array_equal(three.head(8).prefix_root, roots[:8])


def test_phased_arrivals_follow_each_phase_s_rate():
    """10 req/s x1 for 100 s, none for 50 s, x3 for 100 s, repeating: over 200,000 arrivals each phase's count per
    second is within 4 sigma of its rate (Poisson counts), and none falls in the empty phase."""
    phased = Phased(base=Poisson(rate_per_s=10.0), phases=((100.0, 1.0), (50.0, 0.0), (100.0, 3.0)))
    times = phased.times(np.random.default_rng(0), 200_000)
    cycles = times[-1] / 250.0
    counts, _ = np.histogram(times % 250.0, bins=[0.0, 100.0, 150.0, 250.0])
    for count, seconds, rate in zip(counts, (100.0, 50.0, 100.0), (10.0, 0.0, 30.0), strict=True):
        expected = rate * seconds * cycles
        assert abs(count - expected) <= 4 * np.sqrt(expected) + 1e-9, (count, expected)
    assert np.all(np.diff(times) >= 0)


def test_one_phase_at_the_rate_is_the_process_itself_and_bad_phases_are_refused():
    base = Gamma(rate_per_s=4.0, cv=2.0)
    np.testing.assert_allclose(Phased(base=base, phases=((30.0, 1.0),)).times(np.random.default_rng(5), 1000),
                               base.times(np.random.default_rng(5), 1000), rtol=1e-12)
    for phases in ((), ((10.0, 0.0),), ((0.0, 1.0),), ((10.0, -1.0),)):
        with pytest.raises(ValueError):
            Phased(base=base, phases=phases)
