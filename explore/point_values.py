"""The values of a design point built in Python, checked as `explore run` and a sweep file check theirs.

The CLI and the sweep reader refuse a bad value before a DesignPoint exists, naming their flag or key and line. A
point made directly (a notebook: DesignPoint(...) into Evaluator.evaluate) passes neither, so Evaluator.evaluate
checks it here, with the same registry (explore/knobs.py) and the same model checks, naming the DesignPoint field:
one InputError line instead of a torch error from deep in a trace, or a number for a point no model can run.
"""

from __future__ import annotations

from dataclasses import fields

from explore.design_point import DesignPoint
from explore.knobs import KNOBS
from kernels.kv_policy import budget_error
from kernels.parallel import check_expert_parallel, check_pipeline_parallel, check_tensor_parallel
from workloads.errors import InputError
from workloads.model_config import ModelConfig, check_context

# DesignPoint fields that are registered knobs, checked by the registry; a serving point's batch, prompt and output
# are its scheduler's and its requests' (ServingSpec checks them), not a static batch's.
STATIC_FIELDS = ("batch", "prompt", "output")
FORMAT_FIELDS = ("weight_bits", "act_bits", "kv_bits", "sparsity", "execution", "tp", "pp", "ep")
_FIELDS = frozenset(f.name for f in fields(DesignPoint))


def check_point_values(point: DesignPoint, config: ModelConfig) -> None:
    """InputError ('field: found X, allowed: Y') for the first value of `point` that `explore run` would refuse:
    overrides or knobs not given as (name, value) pairs, a knob's value outside the registry's, an unknown generic
    knob, a static batch longer than the model's context, a kv_budget above what a sequence caches, a parallel
    layout the model cannot be split into."""
    static = point.serving is None
    for name in ("overrides", "link_overrides", "knobs"):
        pairs = getattr(point, name)
        if not (isinstance(pairs, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in pairs)):
            shown = f"a {type(pairs).__name__}" if not isinstance(pairs, tuple) else repr(pairs)
            raise InputError(f"{name}: found {shown}, allowed: a tuple of (name, value) pairs, e.g. "
                             f"(('memory.bandwidth_GBps', 5025.0),) or tuple(mapping.items())")
    for name in (STATIC_FIELDS if static else ()) + FORMAT_FIELDS:
        _check_knob(name, getattr(point, name))
    for name, value in point.knobs:
        knob = KNOBS.get(name)
        if knob is None or knob.scope == "serving" or name in _FIELDS:
            raise InputError(f"knobs: found {name!r}, allowed: a generic knob of explore/knobs.py (the knobs table "
                             f"of the README), each a DesignPoint field's name only where it has no field")
        _check_knob(name, value)
    if static:
        check_context(config, point.prompt, point.output, where="prompt, output")
    limit = ((point.prompt + point.output, f"prompt + output ({point.prompt:,} + {point.output:,})") if static else
             (config.max_positions, f"{config.name}'s context (max_position_embeddings)"))
    reason = budget_error(point.knob("kv_budget"), *limit)
    if reason:
        raise InputError(f"kv_budget: {reason}")
    for name, value, check in (("tp", point.tp, check_tensor_parallel), ("pp", point.pp, check_pipeline_parallel)):
        try:
            if value != 1:
                check(config, value)
        except ValueError as err:
            raise InputError(f"{name}: {err}") from None
    try:
        check_expert_parallel(config, point.ep, point.tp)
    except ValueError as err:
        raise InputError(f"ep: {err}") from None


def _check_knob(name: str, value) -> None:
    try:
        KNOBS[name].validate(value)
    except ValueError as err:
        raise InputError(f"{name}: {err}") from None
