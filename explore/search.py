"""Search strategies: which design points of a sweep to evaluate, and in what order.

Each strategy calls `evaluate(points) -> rows` (the runner's: stored rows are reused, new ones are
evaluated and written as they finish) and never evaluates anything itself. grid takes every point;
random draws `budget` distinct designs; nsga2 and tpe are Optuna's multi-objective samplers over the
sweep's dimensions (each a categorical choice), steered by the sweep's objectives and constraints. A search
spends nothing on points not modeled (DesignPoint.unjudged), which a grid records not run.
All are deterministic for a given seed and batch size, so running a sweep again replays the same
proposals and resumes from the stored rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from explore.design_point import DesignPoint
from explore.sweep import Constraint, Sweep

Evaluate = Callable[[list[DesignPoint]], list[dict[str, Any]]]
# Give up proposing once this many proposals per budgeted point have been made (a small grid runs out).
MAX_PROPOSALS_PER_POINT = 50


def grid_search(sweep: Sweep, evaluate: Evaluate) -> None:
    evaluate(sweep.points())


def distinct_draws(rng: np.random.Generator, size: int, count: int) -> list[int]:
    """`count` distinct indices below `size`: the first k of a larger count are the k of count k, so a search given a
    bigger budget with the same seed evaluates the points of the smaller one first, stored already. Up to half the
    space they are drawn uniformly in turn (a repeat is drawn again); past it, where repeats would take most of the
    draws, the rest of the space follows in an order drawn after that half."""
    half = size // 2
    chosen: dict[int, None] = {}
    while len(chosen) < min(count, half):
        # Draws in chunks of one size whatever the count: the same stream of indices for every budget.
        for index in rng.integers(size, size=DRAW_CHUNK).tolist():
            chosen.setdefault(index)
            if len(chosen) == min(count, half):
                break
    drawn = list(chosen)
    if count > len(drawn):
        rest = np.setdiff1d(np.arange(size), np.array(drawn, dtype=np.int64))
        drawn += rest[rng.permutation(len(rest))[:count - len(drawn)]].tolist()
    return drawn


DRAW_CHUNK = 256


def random_search(sweep: Sweep, evaluate: Evaluate) -> None:
    """`budget` distinct designs drawn from the grid: grid points that are one design (a pool what-if where the point
    has no such pool) count once, so more are drawn, in the order of distinct_draws, until the budget is met or the
    grid has no other design."""
    search = sweep.spec.search
    dims = sweep.dimensions()
    sizes = [len(v) for v in dims.values()]
    budget, drawn = min(search.budget, sweep.size()), 0
    designs: dict[str, DesignPoint] = {}
    while len(designs) < budget and drawn < sweep.size():
        count = min(sweep.size(), drawn + budget - len(designs))
        for index in distinct_draws(np.random.default_rng(search.seed), sweep.size(), count)[drawn:]:
            point = sweep.point({name: dims[name][i] for name, i in zip(dims, np.unravel_index(index, sizes),
                                                                        strict=True)})
            if not point.unjudged():  # settings not modeled together are no design to spend the budget on
                designs.setdefault(point.point_id, point)
        drawn = count
    points = list(designs.values())
    for start in range(0, len(points), search.batch):
        evaluate(points[start:start + search.batch])


def _violations(row: dict[str, Any], constraints: list[Constraint]) -> list[float]:
    """Optuna's constraint values: <= 0 where a constraint holds; a missing metric counts as broken."""
    return [excess if math.isfinite(excess := c.excess(row)) else 1.0 for c in constraints]


def optuna_search(sweep: Sweep, evaluate: Evaluate) -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(logging.WARNING)
    search, objectives = sweep.spec.search, sweep.spec.objectives
    names = objectives.minimize + objectives.maximize
    constraints = sweep.constraints()
    dims = sweep.dimensions()
    space = {name: CategoricalDistribution(list(range(len(values)))) for name, values in dims.items()}

    if search.strategy == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(population_size=max(search.batch, 2), seed=search.seed)
    else:
        sampler = optuna.samplers.TPESampler(multivariate=True, seed=search.seed)
    study = optuna.create_study(directions=["minimize"] * len(objectives.minimize)
                                + ["maximize"] * len(objectives.maximize), sampler=sampler)
    # A budget past the space's size takes every design that can run: asking for more would repeat stored ones (or
    # propose points not modeled) until the cap.
    budget = search.budget if search.budget < sweep.size() else \
        len({point.point_id for point in sweep.points() if not point.unjudged()})
    seen: set[str] = set()
    proposals = 0
    while len(seen) < budget and proposals < MAX_PROPOSALS_PER_POINT * budget:
        trials = [study.ask(space) for _ in range(min(search.batch, budget - len(seen)))]
        proposals += len(trials)
        points = [sweep.point({n: dims[n][t.params[n]] for n in dims}) for t in trials]
        runnable = []
        for trial, point in zip(trials, points, strict=True):
            if point.unjudged():  # settings not modeled together: no design, so neither evaluated nor counted
                study.tell(trial, state=TrialState.FAIL)
            else:
                runnable.append((trial, point))
        rows = evaluate([point for _, point in runnable]) if runnable else []
        for (trial, point), row in zip(runnable, rows, strict=True):
            seen.add(point.point_id)
            values = [float(row.get(n, math.nan)) for n in names]
            if not all(math.isfinite(v) for v in values):  # does not fit in memory: nothing to rank
                study.tell(trial, state=TrialState.FAIL)
                continue
            for i, excess in enumerate(_violations(row, constraints)):
                trial.set_constraint(f"c{i}", excess)
            study.tell(trial, values)


STRATEGIES: dict[str, Callable[[Sweep, Evaluate], None]] = {
    "grid": grid_search, "random": random_search, "nsga2": optuna_search, "tpe": optuna_search,
}
