"""highest_rate (sim/capacity.py) on a known threshold: bisection alone, and bracketing from a guess first."""

from __future__ import annotations

import pytest

from sim.capacity import highest_rate

THRESHOLD = 7.3  # req/s: meets(rate) holds up to here


def _counting():
    asked: list[float] = []

    def meets(rate: float) -> bool:
        asked.append(rate)
        return rate <= THRESHOLD

    return meets, asked


@pytest.mark.parametrize("guess", [None, 0.5, 7.0, 8.0, 60.0])
def test_answer_is_within_tolerance_below_the_threshold(guess):
    meets, _ = _counting()
    rate = highest_rate(meets, low=0.1, high=100.0, rel_tol=0.05, guess=guess)
    assert THRESHOLD / 1.05 <= rate <= THRESHOLD


def test_a_guess_keeps_every_run_within_a_factor_two_of_the_bracket():
    """From a guess of 5, the bracket is (5, 10): nothing below 5 or above 10 is run, where bisection over
    [0.1, 100] runs both ends."""
    meets, asked = _counting()
    highest_rate(meets, low=0.1, high=100.0, rel_tol=0.05, guess=5.0)
    assert min(asked) == 5.0 and max(asked) == 10.0
    meets, asked = _counting()
    highest_rate(meets, low=0.1, high=100.0, rel_tol=0.05)
    assert min(asked) == 0.1 and max(asked) == 100.0


@pytest.mark.parametrize("guess", [None, 3.0])
def test_bounds_answer_when_the_threshold_lies_outside(guess):
    assert highest_rate(lambda rate: True, low=1.0, high=50.0, guess=guess) == 50.0
    assert highest_rate(lambda rate: False, low=1.0, high=50.0, guess=guess) == 0.0
