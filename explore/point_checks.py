"""A sweep's design points judged before anything runs: combinations of its values that evaluation refuses.

A sweep file's keys are each valid alone, yet some combinations are not (a draft model on two devices, layer
skipping in a serving run, a prompt's uniform bounds the wrong way round). Evaluation refuses them point by point
(explore/evaluate.py Evaluator.check_point); here every distinct point of the sweep is judged that way up front,
without tracing, so `explore check` finds what the run would stop on, with the file, the line of the key and the
values of the point.
"""

from __future__ import annotations

import itertools
from typing import Any

from explore.design_point import DesignPoint
from explore.run_support import WHAT_IF_PREFIXES
from explore.serving_settings import renamed, sweep_key_of
from explore.sweep import Sweep
from workloads.errors import InputError
from workloads.yaml_lines import LocatedYAML

# The most combinations judged: a search's space may hold 10^15 points, never enumerated (its device and link what-ifs,
# which no check reads, aside, a sweep rarely holds more than a few thousand).
MAX_JUDGED = 100_000


def check_sweep_points(sweep: Sweep, evaluator) -> None:
    """Judge every point of the sweep as its evaluation would, its device and link what-ifs at their first values (no
    check reads them); the first refused one is a one-line InputError naming the sweep file, the line of the key the
    message starts with and, where several values are swept, the point's. A point whose run cannot answer what it asks
    (DesignPoint.unjudged) is recorded unrun while others run; where every point judged is such, the sweep is refused
    by the first one's reason, as `explore run` refuses it."""
    dims = sweep.dimensions()
    judged = {name: values for name, values in dims.items() if not name.startswith(WHAT_IF_PREFIXES)}
    fixed = {name: values[0] for name, values in dims.items() if name not in judged}
    combos = itertools.islice(itertools.product(*judged.values()), MAX_JUDGED)
    unanswered: tuple[DesignPoint, str] | None = None  # the first point whose run cannot answer what it asks
    answerable = False
    for combo in combos:
        try:
            point = sweep.point(dict(zip(judged, combo, strict=True)) | fixed)
        except InputError as err:  # a combination no point can be made of (a serving section's lengths)
            raise _located(sweep, err, None) from None
        try:
            evaluator.check_point(point)
        except InputError as err:
            raise _located(sweep, err, point) from None
        if not answerable:  # one answerable point is enough: the points not run are Sweep.unrun's, judged there
            reason = point.unjudged()
            answerable = not reason
            if reason and unanswered is None:
                unanswered = (point, reason)
    if unanswered is not None and not answerable:  # else recorded beside those that run (sweep_notes.unjudged_note)
        raise _located(sweep, InputError(unanswered[1]), unanswered[0])


def _located(sweep: Sweep, err: InputError, point: DesignPoint | None) -> InputError:
    message = str(err)
    if message.startswith(sweep.path):
        return err  # located already
    if point is None or point.serving is not None:
        # A serving setting's message names it as the sweep does ('serving.max_replicas'); none other changes.
        message = renamed(message, sweep_key_of) or message
    line = _line_of_key(LocatedYAML(sweep.path), message.split(":", 1)[0].strip())
    at = _swept_values(sweep, point) if point is not None else ""
    return InputError(f"{sweep.path}{f':{line}' if line else ''}: {message}{f' (at {at})' if at else ''}")


def _line_of_key(located: LocatedYAML, key: str) -> int | None:
    """The line of the key a message leads with ('serving.autoscale_target', 'batch'): where the file writes it, else
    (a key found missing) the line of the deepest section along its path that the file writes (LocatedYAML.line_of,
    as the sweep's own serving checks locate theirs)."""
    return located.key_line(key.rsplit(".", 1)[-1]) or located.line_of(tuple(key.split(".")))


def _swept_values(sweep: Sweep, point: DesignPoint) -> str:
    """The point's value of each knob the sweep gives several values (device what-ifs aside)."""
    shown = []
    for name, values in sweep.dimensions().items():
        if len(values) > 1 and not name.startswith(WHAT_IF_PREFIXES):
            value = _value(point, name)
            if value is not None:
                shown.append(f"{name}={value}")
    return ", ".join(shown)


def _value(point: DesignPoint, name: str) -> Any:
    if name == "link" and not point.link:
        return "default"  # as a sweep names each device's own link
    if name == "ep":
        return "spread" if point.ep > 1 else "split"  # as a sweep names it (Sweep.point: spread is ep = tp)
    if hasattr(point, name):
        return getattr(point, name)
    if point.serving is not None and hasattr(point.serving, name):
        return getattr(point.serving, name)
    try:
        return point.knob(name)
    except KeyError:
        return None
