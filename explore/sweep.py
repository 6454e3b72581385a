"""sweep.yaml: the schema, its validation (one clear line per mistake), and its design points."""

from __future__ import annotations

import itertools
import logging
import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import (
    AfterValidator,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from explore.derived import EvaluationError, Expression
from explore.design_point import DesignPoint, canonical_format, generic_knobs, with_knobs
from explore.format_checks import check_sweep_formats
from explore.knobs import KNOBS, knobs
from explore.metrics import metric, metric_names, numeric_metrics
from explore.point_blocks import PointBlock, PointSet
from explore.pool_what_ifs import POOL_WHAT_IFS
from explore.run_support import (
    LINK_PREFIX,
    WHAT_IF_PREFIXES,
    link_what_ifs,
    named_link_refusal,
    override_error,
    text_refusal,
)
from explore.schema import (
    ExpressionText,
    Number,
    Strict,
    SweepName,
    as_list,
    distinct,
    knob_type,
    one_or_more,
    section_model,
)
from explore.serving_settings import data_parallel_ranks
from explore.sweep_serving import (
    Parallel,
    Serving,
    check_parallel,
    check_serving,
    node_link_readers,
    serving_dimensions,
    serving_knobs_set,
    serving_spec,
)
from hw_models.device_block import knob_corners
from hw_models.link import default_link, load_link_model
from hw_models.registry import load_device
from hw_models.validation import check_keys, did_you_mean, input_error
from kernels.kv_policy import budget_error
from sim.serving_spec import BUSY_THRESHOLDS, SCALED_POOLS, ServingSpec, trace_requests
from sim.speculative import MEDUSA, MTP, NGRAM, draft_error, mtp_error
from workloads.errors import InputError, found_document, found_value
from workloads.model_config import check_context, load_model_config
from workloads.yaml_lines import LocatedYAML

# Limits checked before anything is expanded, so that a typo cannot hang `explore check` or a run.
# An override's values (a range's steps or a list) are each loaded on every device when the file is checked
# (about 1 ms each); 1,000 values is finer than any figure can show.
MAX_RANGE_STEPS = 1_000
# Design points a sweep visits (a grid's size, or a search's budget): at about 1 ms each, a million points is
# about 20 minutes on one worker before storing and the report, which are already slow to draw over them.
MAX_SWEEP_POINTS = 1_000_000
# The design space a search draws from (and a derived knob's inputs, which `check` evaluates one by one
# only up to MAX_SWEEP_POINTS): point indices are 64-bit integers, and 10^15 leaves room for any real space.
MAX_SEARCH_SPACE = 10**15

OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}
CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w]*)\s*(<=|>=|<|>|==)\s*([-+0-9.eE]+)\s*$")
CONSTRAINT_FORM = f"'METRIC OP NUMBER' with OP one of {', '.join(OPS)} (e.g. 'tpot_s <= 0.1')"
log = logging.getLogger(__name__)


def _constraint_text(text: str) -> str:
    """One constraint of a sweep file, or ValueError saying only what is allowed (input_error names the value found
    and its place in the list)."""
    try:
        name = Constraint.parse(text).metric
    except ValueError:
        raise ValueError(CONSTRAINT_FORM) from None
    known = numeric_metrics()
    if name not in known:
        raise ValueError(f"a numeric metric{did_you_mean(name, known)} as METRIC in 'METRIC OP NUMBER' (README, "
                         f"Sweep files: the metrics table)")
    return text


ConstraintText = Annotated[str, AfterValidator(_constraint_text)]


def _metric_name(name: str) -> str:
    """An objective's metric, or ValueError saying only what is allowed (input_error names the name found and its
    place in the list, as a constraint's)."""
    known = numeric_metrics()
    if name not in known:
        raise ValueError(f"a metric name{did_you_mean(name, known)}: one of {', '.join(known)}")
    return name


MetricName = Annotated[str, AfterValidator(_metric_name)]


class Range(Strict):
    """Values from lo to hi inclusive: `steps` of them, evenly spaced (linear) or geometric (log)."""

    range: tuple[Number, Number]
    steps: Annotated[StrictInt, Field(ge=2, le=MAX_RANGE_STEPS)]
    scale: Literal["linear", "log"] = "linear"

    @model_validator(mode="after")
    def _positive_for_log(self):
        if self.range[0] == self.range[1]:  # every step the same value: one design point, counted `steps` times
            raise ValueError(f"range: found {list(self.range)} with steps: {self.steps}, allowed: two different "
                             f"bounds (for one value, give the value)")
        if self.scale == "log" and min(self.range) <= 0:
            raise ValueError(f"range: found {list(self.range)} with scale: log, allowed: two positive bounds (a "
                             f"geometric sequence cannot reach 0 or change sign)")
        return self

    def values(self) -> list[float]:
        lo, hi = self.range
        if self.scale == "log":
            return np.geomspace(lo, hi, self.steps).tolist()
        return np.linspace(lo, hi, self.steps).tolist()


class Objectives(Strict):
    minimize: list[MetricName] = []
    maximize: list[MetricName] = []

    @field_validator("minimize", "maximize", mode="before")
    @classmethod
    def _metric_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            return value  # each item is checked as a metric name
        raise ValueError(f"found {found_value(value)}, allowed: a list of metric names (e.g. [tpot_s])"
                         if isinstance(value, dict) else "a list of metric names (e.g. [tpot_s])")

    @field_validator("minimize", "maximize")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        return distinct(names)

    @model_validator(mode="after")
    def _one_direction(self):
        both = [name for name in self.minimize if name in self.maximize]
        if both:
            raise ValueError(f"found {both[0]!r} in minimize and maximize, allowed: each metric in one of them")
        return self


class Search(Strict):
    """grid evaluates every point; random, nsga2 and tpe evaluate `budget` distinct points chosen with `seed`."""

    strategy: Literal["grid", "random", "nsga2", "tpe"] = "grid"
    budget: Annotated[StrictInt, Field(ge=1)] | None = None
    # numpy's and Optuna's samplers take a 32-bit seed: a larger one passed `check` and failed the run.
    seed: Annotated[StrictInt, Field(ge=0, le=2**32 - 1)] = 0
    # Points proposed at once; fixed (not tied to --workers) so that results do not depend on the worker count.
    batch: Annotated[StrictInt, Field(ge=1)] = 16

    @model_validator(mode="after")
    def _budget_for_searches(self):
        if self.strategy != "grid" and self.budget is None:
            raise ValueError(f"found no budget with strategy {self.strategy!r}, allowed: a budget (the number of "
                             f"design points to evaluate, e.g. budget: 100) with strategy random, nsga2 or tpe")
        idle = [key for key in ("budget", "seed", "batch") if key in self.model_fields_set]
        if self.strategy == "grid" and idle:
            raise ValueError(f"found {idle[0]} {getattr(self, idle[0])} with strategy 'grid', allowed: budget, seed "
                             f"and batch with strategy random, nsga2 or tpe (a grid evaluates every point, in order)")
        return self


STRATEGY_NAMES: tuple[str, ...] = get_args(Search.model_fields["strategy"].annotation)


class SweepFile(Strict):
    """The sweep file's schema; its workload: and format: sections are built from the knobs registry
    (sweep_file() gives the class with them)."""

    name: SweepName
    model: one_or_more(str)
    device: one_or_more(str)
    workload: Strict = Strict()  # the registry's workload knobs (sweep_file)
    serving: Serving | None = None
    parallel: Parallel | None = None
    format: Strict = Strict()  # the registry's format knobs (sweep_file)
    execution: one_or_more(knob_type(KNOBS["execution"])) = KNOBS["execution"].default
    calibrated: StrictBool = True  # false: price every device on its datasheet roofline, fitted or not
    overrides: dict[str, one_or_more(Number) | Range] = {}
    # Knobs computed per design point from its other knobs, e.g. {"device.memory.capacity_GB": "2 * batch"}.
    derived: dict[str, ExpressionText] = {}
    objectives: Objectives = Objectives()
    constraints: list[ConstraintText] = []
    search: Search = Search()

    @model_validator(mode="after")
    def _objectives_for_optimizers(self):
        if self.search.strategy in ("nsga2", "tpe") and not (self.objectives.minimize or self.objectives.maximize):
            raise ValueError(f"objectives: found none with search strategy {self.search.strategy!r}, allowed: metrics "
                             f"to optimize (objectives: {{minimize: [tpot_s]}}, maximize or both) with nsga2 or tpe")
        return self

    @field_validator("constraints", mode="before")
    @classmethod
    def _constraint_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            return value  # each item is checked as a ConstraintText
        allowed = f"a list of constraints, each {CONSTRAINT_FORM}"
        # input_error quotes a wrong value itself, but not a mapping: it reads one as a section under a rule that
        # spans its fields ('constraints: {tpot_s: {max: 0.1}}' is a user's guess at a form this file lacks).
        raise ValueError(f"found {found_value(value)}, allowed: {allowed}" if isinstance(value, dict) else allowed)

    @field_validator("overrides")
    @classmethod
    def _device_paths(cls, overrides: dict) -> dict:
        for path in overrides:
            if why := named_link_refusal(path, sweep=True):
                raise ValueError(why)
            device = path.startswith(("device.", *POOL_PREFIXES)) and len(path.split(".")) >= 3
            link = path.startswith(LINK_PREFIX) and len(path.split(".")) == 2
            if not (device or link):
                pools = ", ".join(f"'{prefix}memory.bandwidth_GBps'" for prefix in POOL_PREFIXES)
                raise ValueError(f"keys like 'device.memory.bandwidth_GBps', 'link.bandwidth_GBps', {pools} "
                                 f"(found {path!r})")
        return overrides


def sweep_file() -> type[SweepFile]:
    """SweepFile with the workload: and format: sections of the knobs registered now (built once per registry
    state)."""
    return KNOBS.view("sweep file", _sweep_file)


def _sweep_file() -> type[SweepFile]:
    workload_model = section_model("Workload", knobs(section="workload"))
    format_model = section_model("Format", knobs(section="format"))
    return create_model("SweepFile", __base__=SweepFile, __doc__=SweepFile.__doc__,
                        workload=(workload_model, workload_model()), format=(format_model, format_model()))


def derivable() -> tuple[str, ...]:
    """Knobs a sweep may derive besides device fields (explore/knobs.py: derivable)."""
    return tuple(k.name for k in knobs() if k.derivable)


def text_knobs() -> tuple[str, ...]:
    return tuple(k.name for k in knobs() if k.type is str)


POOL_PREFIXES = tuple(pool.prefix for pool in POOL_WHAT_IFS)  # what-ifs on other pools' devices
DERIVED_DIGITS = 12  # significant digits a derived device field keeps: 0.1 * 3000 is 300, not 300.00000000000006


def derived_value(target: str, value: Any) -> int | float | str:
    """A derived knob's value as stored: text for text knobs, an int for integer knobs, a float rounded to
    DERIVED_DIGITS for a device field. ValueError ('found X, allowed: Y') where the knob cannot take the value."""
    knob = None if target.startswith(("device.", *POOL_PREFIXES)) else KNOBS[target]
    if knob is not None and knob.type is str:
        if not isinstance(value, str):
            raise ValueError(f"found {value!r}, allowed: quoted text, {knob.allowed_words()}")
        return knob.validate(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"found {value!r}, allowed: a finite number")
    if target.startswith(("device.", *POOL_PREFIXES)):
        return value if isinstance(value, int) else float(f"{value:.{DERIVED_DIGITS}g}")
    knob = KNOBS[target]
    if knob.type is int:
        if value != int(value):
            raise ValueError(f"found {value!r}, allowed: {knob.allowed_words()}")
        value = int(value)
    return knob.validate(value)


def unread_at_default(values: dict[str, Any], serving: ServingSpec | None = None) -> dict[str, Any]:
    """Each knob of `values` that the point there does not read (Knob.read_where: its switches all off, or its model
    without what it reads), at its default: nothing reads it (a link on one device, tp and pp 1: no pool, replica, KV
    hand-off or host transfer reads it either; a node link there without a prefill pool; an acceptance rate without a
    draft; moe_routing beside a model without routed experts), so points that differ only there are one design with
    one key. A serving switch (node_link's prefill_replicas) is read in `serving`, off where there is none."""
    def value(switch):
        if switch.scope == "serving":
            return switch.default if serving is None else getattr(serving, switch.name)
        return values.get(switch.name, switch.default)

    return {knob.name: knob.default for knob in knobs()
            if knob.name in values and not knob.read_where(value, values.get("model"))}


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """A constraint from 'METRIC OP NUMBER', e.g. 'ttft_s <= 0.5'."""
        match = CONSTRAINT.match(text)
        try:
            metric, op, bound = match.groups() if match else ("", "", "")
            if not math.isfinite(float(bound)):  # 1e999 reads as inf: a bound that holds or fails everywhere
                raise ValueError(bound)
            return cls(metric, op, float(bound))
        except ValueError:  # no match, or a number the pattern lets through ('1e', '..')
            raise ValueError(f"found {text!r}, allowed: {CONSTRAINT_FORM}") from None

    @classmethod
    def parse_all(cls, texts: Sequence[str] | None) -> list[Constraint]:
        return [cls.parse(text) for text in texts or ()]

    def holds(self, metrics: dict[str, Any]) -> bool:
        return self.accepts(metrics.get(self.metric, float("nan")))

    def accepts(self, value: Any) -> bool:
        """Whether a value of the metric meets the bound (NaN never does)."""
        return OPS[self.op](float(value), self.bound)

    def excess(self, metrics: dict[str, Any]) -> float:
        """How far a value is past the bound: <= 0 where the constraint holds (NaN where the metric is missing)."""
        value = float(metrics.get(self.metric, float("nan")))
        if self.op == "==":
            return abs(value - self.bound)
        return value - self.bound if self.op in ("<=", "<") else self.bound - value


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file and its design points."""

    path: str
    spec: SweepFile

    @property
    def name(self) -> str:
        return self.spec.name

    def override_values(self) -> dict[str, list]:
        """Each overridden device field (without the 'device.' prefix) and the values it takes."""
        return {path.removeprefix("device."): value.values() if isinstance(value, Range) else as_list(value)
                for path, value in self.spec.overrides.items() if path.startswith("device.")}

    def link_override_values(self) -> dict[str, list]:
        """Each overridden field of the link between parallel devices ('link.<field>') and the values it takes."""
        return {path: value.values() if isinstance(value, Range) else as_list(value)
                for path, value in self.spec.overrides.items() if path.startswith(LINK_PREFIX)}

    def pool_override_values(self, prefix: str | tuple[str, ...] = POOL_PREFIXES) -> dict[str, list]:
        """Each overridden field of other pools' devices ('attention_device.<path>', 'prefill_device.<path>'; those of
        `prefix`) and the values it takes."""
        return {path: value.values() if isinstance(value, Range) else as_list(value)
                for path, value in self.spec.overrides.items() if path.startswith(prefix)}

    def pool_derived_values(self, prefix: str | tuple[str, ...] = POOL_PREFIXES) -> dict[str, list]:
        """Each derived field of other pools' devices (those of `prefix`) and the values it takes over the grid."""
        return {target: values for target, values in self.derived_values().items() if target.startswith(prefix)}

    def constraints(self) -> list[Constraint]:
        return Constraint.parse_all(self.spec.constraints)

    @cached_property
    def derived(self) -> dict[str, Expression]:
        """Each derived knob and its expression, in file order."""
        return {target: Expression.parse(text) for target, text in self.spec.derived.items()}

    def override_columns(self) -> list[str]:
        """The results columns of device fields (swept overrides, then derived ones), then of link fields, then of the
        attention devices' fields."""
        return ([f"device.{path}" for path in self.override_values()]
                + [target for target in self.derived if target.startswith("device.")]
                + list(self.link_override_values()) + list(self.pool_override_values())
                + [target for target in self.derived if target.startswith(POOL_PREFIXES)])

    def set_knobs(self) -> list[str]:
        """The generic knobs (explore/design_point.py) the file sets or derives: they have results columns."""
        return [k.name for k in generic_knobs() if k.name in self.derived
                or k.name in getattr(getattr(self.spec, k.section), "model_fields_set", ())]

    def limits_slowdown(self) -> bool:
        """Whether the serving SLO limits slowdowns: the results then have the slowdown columns."""
        serving = self.spec.serving
        return serving is not None and serving.slo is not None and serving.slo.slowdown is not None

    def autoscales(self) -> bool:
        """Whether a serving pool may scale (its most replicas, SCALED_POOLS, set or derived): the results then
        have the autoscale columns."""
        serving = self.spec.serving
        return serving is not None and any(getattr(serving, most) is not None or most in self.derived
                                           for most, _ in SCALED_POOLS)

    def sheds(self) -> bool:
        """Whether the gateway may reject requests (a busy threshold set or derived): the results then have the
        rejection columns."""
        serving = self.spec.serving
        return serving is not None and any(getattr(serving, name) is not None or name in self.derived
                                           for name in BUSY_THRESHOLDS)

    def prioritized(self) -> bool:
        """Whether the serving requests may differ in priority: the results then have the urgent columns."""
        serving = self.spec.serving
        return serving is not None and (serving.priority_fraction is not None or (
            bool(serving.trace) and trace_requests(serving.trace).priority is not None))

    def column_knobs(self) -> list[str]:
        """The knobs with a column only where set that this file sets: its generic knobs, and serving knobs its
        serving section sets."""
        serving = self.spec.serving
        return self.set_knobs() + ([] if serving is None else serving_knobs_set(serving, self.derived))

    def dimensions(self) -> dict[str, list]:
        """Each knob of the sweep and the values it takes; override knobs are named 'device.<path>'.

        Derived knobs are not dimensions: point() computes them from the dimensions' values. A generic knob is
        one where the file sets it (after the built-in knobs, so existing sweeps keep their order and search
        space).
        """
        s, w, f = self.spec, self.spec.workload, self.spec.format
        dims = {"model": as_list(s.model), "device": as_list(s.device)}
        dims.update({f"device.{path}": values for path, values in self.override_values().items()})
        dims.update(self.link_override_values())
        dims.update(self.pool_override_values())
        if s.serving is None:
            dims.update(batch=as_list(w.batch), prompt=as_list(w.prompt), output=as_list(w.output))
        else:
            dims.update(serving_dimensions(s.serving))
        if s.parallel is not None:
            dims.update(tp=as_list(s.parallel.tp), pp=as_list(s.parallel.pp), link=as_list(s.parallel.link),
                        ep=as_list(s.parallel.ep))
        dims.update(weight_bits=as_list(f.weight_bits), act_bits=as_list(f.act_bits), kv_bits=as_list(f.kv_bits),
                    sparsity=as_list(f.sparsity), execution=as_list(s.execution))
        dims.update({name: as_list(getattr(getattr(s, KNOBS[name].section), name)) for name in self.set_knobs()})
        return {name: values for name, values in dims.items() if name not in self.derived}

    def derive(self, values: dict[str, Any], targets: list[str] | None = None) -> dict[str, Any]:
        """The derived knobs at the given knob values, in file order (each may read those derived above it).

        targets: only these derived knobs (with every derived knob they read); default all.
        """
        env = dict(values)
        targets = list(self.derived) if targets is None else targets
        for target in targets:
            env[target] = derived_value(target, self.derived[target](env))
        return {target: env[target] for target in targets}

    def derived_inputs(self, target: str) -> tuple[dict[str, list], list[str]]:
        """The dimensions a derived knob reads (directly or through derived knobs), with their values, and the
        derived knobs to compute for it in file order (itself last)."""
        read, chain, todo = set(), {target}, [target]
        while todo:
            for name in self.derived[todo.pop()].names:
                if name in self.derived and name not in chain:
                    chain.add(name)
                    todo.append(name)
                elif name not in self.derived:
                    read.add(name)
        dims = self.dimensions()
        return {name: dims[name] for name in dims if name in read}, [t for t in self.derived if t in chain]

    def derived_values(self) -> dict[str, list]:
        """Each derived knob and the distinct values it takes over the grid, in first-seen order."""
        values: dict[str, list] = {}
        for target in self.derived:
            dims, chain = self.derived_inputs(target)
            seen = (self.derive(dict(zip(dims, combo, strict=True)), chain)[target]
                    for combo in itertools.product(*dims.values()))
            values[target] = list(dict.fromkeys(seen))
        return values

    def point(self, values: dict[str, Any]) -> DesignPoint:
        """The design point at one value of every dimension (derived knobs computed from them)."""
        if self.derived:
            values = {**values, **self.derive(values)}
        overrides = tuple((k.removeprefix("device."), v) for k, v in values.items() if k.startswith("device."))
        if "ep" in values:  # experts split over the tp devices (ep 1), or spread whole over them (ep = tp)
            values["ep"] = values.get("tp", 1) if values["ep"] == "spread" else 1
        serving = None
        if self.spec.serving is not None:
            serving = serving_spec(self.spec.serving, values)
            # A serving point has no static batch: batch is its sequence limit, prompt and output are 0.
            # (and of the serving knobs a derived: section computes, which the spec took).
            served = {*serving_dimensions(self.spec.serving), *(k.name for k in knobs(scope="serving"))}
            values = {k: v for k, v in values.items() if k not in served}
            values.update(batch=serving.max_seqs, prompt=0, output=0)
        # A point on one device has no link to change: it is the point without its link what-ifs.
        link_overrides = link_what_ifs(values) if values.get("tp", 1) * values.get("pp", 1) > 1 else ()
        # A point without a pool (attention_device: none, no prefill pool) has none to change: it is the point
        # without its what-ifs.
        pools = {pool.field: pool.pairs(values) if pool.present(serving) else () for pool in POOL_WHAT_IFS}
        # Format settings that change nothing at the point's format: the point without them (NumericFormat.canonical).
        fields = canonical_format({k: v for k, v in values.items() if not k.startswith(WHAT_IF_PREFIXES)})
        if fields.get("link") == "default":
            fields["link"] = ""
        fields.update(unread_at_default(fields, serving))
        # A point none of whose pools reads the node link has none to change: the point without it (node_link_readers:
        # a prefill pool's KV handover, a KV store's fetches, a pool whose devices span nodes).
        if fields.get("node_link") and not node_link_readers(fields["device"], fields.get("link", ""),
                                                             fields.get("tp", 1), fields.get("pp", 1), link_overrides,
                                                             serving):
            fields["node_link"] = ""
        return DesignPoint(**with_knobs(fields), overrides=overrides, use_calibration=self.spec.calibrated,
                           serving=serving, link_overrides=link_overrides, **pools)

    def size(self) -> int:
        return math.prod(len(v) for v in self.dimensions().values())  # exact: np.prod wraps past 2^63

    def visits(self) -> int:
        """Design points the search evaluates: all of them for a grid, at most the budget otherwise."""
        search = self.spec.search
        return self.size() if search.strategy == "grid" else min(search.budget, self.size())

    def points(self) -> PointSet:
        """Every design point of the grid, in a fixed order: device what-if values vary fastest, so the points a
        block prices together (explore/blocks.py) are neighbours. Held as blocks of the points that differ only in
        those values (explore/point_blocks.py): a DesignPoint is made where one is read. Made once per Sweep: a
        command reads them several times (explore check: to count, to note and to leave out the points not run)."""
        return self._points

    @cached_property
    def unrun(self) -> list[tuple[PointBlock, str]]:
        """The blocks of a grid's points that ask what their run cannot answer (DesignPoint.unjudged), each with the
        reason its points are recorded unevaluated; none for a search. Judged once per Sweep."""
        if self.spec.search.strategy != "grid":
            return []
        return [(block, reason) for block in self.points().blocks if (reason := block.first.unjudged())]

    @cached_property
    def _points(self) -> PointSet:
        dims = self.dimensions()
        inner = [name for name in dims if name.startswith("device.")]
        outer = [name for name in dims if name not in inner]
        if not inner or self._derived_read(inner):
            return PointSet([PointBlock.of(point) for point in self._each_point(dims)])
        # Each combination of the other knobs is one block; its overrides are the swept device fields in dimension
        # order, then the derived ones (constant within the block: they read no device field).
        combos = list(itertools.product(*(dims[name] for name in inner)))
        swept = {name.removeprefix("device."): column for name, column in zip(inner, zip(*combos, strict=True),
                                                                              strict=True)}
        blocks = []
        for combo in itertools.product(*(dims[name] for name in outer)):
            values = dict(zip(outer, combo, strict=True))
            first = self.point({name: values[name] if name in values else dims[name][0] for name in dims})
            paths = tuple(path for path, _ in first.overrides)
            columns = tuple(swept[path] if path in swept else (value,) * len(combos) for path, value in first.overrides)
            blocks.append(PointBlock(base=replace(first, overrides=()), paths=paths, values=columns, size=len(combos)))
        return PointSet(blocks)

    def _derived_read(self, names: list[str]) -> bool:
        """Whether a derived knob reads any of these dimensions (directly or through another derived knob)."""
        return any(name in names for target in self.derived for name in self.derived_inputs(target)[0])

    def _each_point(self, dims: dict[str, list]) -> list[DesignPoint]:
        """Every point of the grid made one by one (points() in that order)."""
        order = sorted(dims, key=lambda name: name.startswith("device."))  # stable: the others keep their order
        position = [order.index(name) for name in dims]  # each dimension's place in a combination
        return [self.point(dict(zip(dims, (combo[i] for i in position), strict=True)))
                for combo in itertools.product(*(dims[name] for name in order))]


def _section_of_knob(path: tuple) -> str:
    """Where a key found in the wrong section of a sweep file belongs, if it is a knob of another one
    (' (a key of serving:)'), else ''."""
    knob = KNOBS.get(path[-1]) if len(path) == 2 else None
    if knob is None or knob.section == path[0]:
        return ""
    return " (a top-level key)" if knob.section == "top" else f" (a key of {knob.section}:)"


def load_sweep(path: str) -> Sweep:
    """Parse and validate a sweep file as a whole: schema, presets it names, and device overrides."""
    located = LocatedYAML(path)
    schema = sweep_file()
    if not isinstance(located.data, dict):
        raise InputError(f"{path}: found {found_document(located.data)}, allowed: a mapping of sweep keys "
                         f"({', '.join(schema.model_fields)})")
    check_keys(located.data, schema, path, line_of=located.line_of, elsewhere=_section_of_knob)
    _check_text_what_ifs(located)
    try:
        spec = schema.model_validate(_beside(located.data, Path(path).parent))
    except ValidationError as err:
        raise input_error(err, path, line_of=located.line_of, cls=schema) from None
    sweep = Sweep(path=path, spec=spec)
    _check_workload_or_serving(spec, located)
    _warn_directions(sweep, located)
    _check_size(sweep, located)
    _check_derived(sweep, located)
    _check_references(sweep, located)
    return sweep


def _check_text_what_ifs(located: LocatedYAML) -> None:
    """A device override given text or a yes/no where the sweep's device holds a name or a yes/no there
    (pim.row_buffers: single) is refused as `--set` refuses it, saying where such a field is changed (a device file),
    before the schema asks for a number."""
    overrides, devices = located.data.get("overrides"), located.data.get("device")
    if not isinstance(overrides, dict):
        return
    texts = [(key, value, device) for key, values in overrides.items()
             for value, device in itertools.product(as_list(values), as_list(devices))
             if isinstance(key, str) and isinstance(value, str | bool) and isinstance(device, str)]
    for key, value, device in texts:
        try:
            why = text_refusal(device, key, str(value))
        except InputError:  # a device that cannot be read: the checks after the schema's name it
            continue
        if why:
            raise InputError(f"{located.where(('overrides', key))}: overrides.{key}: found {value!r}; {why}")


# Keys whose values may name files: a model's config.json, a device or link YAML, a request trace, a draft model.
PATH_KEYS = (("model",), ("device",), ("parallel", "link"), ("parallel", "node_link"), ("serving", "trace"),
             ("serving", "prefill_device"), ("serving", "kv_link"), ("serving", "attention_device"),
             ("serving", "attention_link"), ("serving", "prefill_node_link"), ("serving", "mixed_node_link"),
             ("workload", "spec_draft"), ("workload", "host_link"))


def _beside(data: dict, folder: Path) -> dict:
    """The sweep's data with each file it names by a relative path that is not there from the current folder, but is
    beside the sweep file, named from there: a sweep and its files move together."""
    if folder == Path("."):
        return data
    out = dict(data)
    for *sections, key in PATH_KEYS:
        node = out
        for section in sections:  # copied on the way down: the located data stays as read
            if not isinstance(node.get(section), dict):
                break
            node[section] = node = dict(node[section])
        else:
            if key in node:
                node[key] = _resolved(node[key], folder)
    return out


def _resolved(value: Any, folder: Path) -> Any:
    """A relative path (or each of a list) named from `folder` where only there is it a file."""
    if isinstance(value, list):
        return [_resolved(v, folder) for v in value]
    if not isinstance(value, str) or not value or Path(value).is_absolute() or Path(value).exists():
        return value
    return str(folder / value) if (folder / value).is_file() else value


def _check_workload_or_serving(spec: SweepFile, located: LocatedYAML) -> None:
    """A static workload or a serving section, and the metrics each has: a serving sweep's requests have their own
    lengths (generic workload knobs such as kv_budget apply to both)."""
    serving = spec.serving
    static = [key for key in ("batch", "prompt", "output") if key in spec.workload.model_fields_set]
    if serving is not None and static:
        raise InputError(f"{located.where(('workload', static[0]))}: workload.{static[0]}: found "
                         f"{getattr(spec.workload, static[0])!r} with serving:, allowed: left out (a serving run's "
                         f"requests have their own lengths: serving.prompt and serving.output)")
    named = [(("objectives", goal, i), name) for goal in ("minimize", "maximize")
             for i, name in enumerate(getattr(spec.objectives, goal))]
    named += [(("constraints", i), Constraint.parse(text).metric) for i, text in enumerate(spec.constraints)]
    if serving is None:
        wrong, allowed = metric_names("serving", "slowdown"), "a static sweep's metric, or a serving: section"
    elif serving.slo is None or serving.slo.slowdown is None:
        wrong, allowed = metric_names("slowdown"), "with serving.slo.slowdown limits (a slowdown is judged by them)"
    else:
        return
    for loc, name in named:
        if name in wrong:
            kind = "a static sweep" if serving is None else "a sweep whose SLO has no slowdown limits"
            raise InputError(f"{located.where(loc)}: {'.'.join(map(str, loc))}: found {name!r} in {kind}, allowed: "
                             f"{allowed}")


def _warn_directions(sweep: Sweep, located: LocatedYAML) -> None:
    """One warning per objective that goes against its metric's better direction (explore/metrics.py): minimizing
    tokens_per_s is allowed (a what-if may ask for it) but is more often a slip."""
    objectives = sweep.spec.objectives
    for goal, names, wrong in (("minimize", objectives.minimize, "max"), ("maximize", objectives.maximize, "min")):
        for i, name in enumerate(names):
            if metric(name).better == wrong:
                log.warning("%s: objectives.%s: %s is better %s; %s it only if that is the question",
                            located.where(("objectives", goal, i)), goal, name,
                            "higher" if wrong == "max" else "lower", goal)


def _check_size(sweep: Sweep, located: LocatedYAML) -> None:
    """The sweep's points within the limits, counted (not expanded) before any is made."""
    size, search = sweep.size(), sweep.spec.search
    for key, value in sweep.spec.overrides.items():
        if isinstance(value, list) and len(value) > MAX_RANGE_STEPS:
            raise InputError(f"{located.where(('overrides', key))}: overrides.{key}: found {len(value):,} values, "
                             f"allowed: at most {MAX_RANGE_STEPS:,}")
    dims = ", ".join(f"{len(v)} {k}" for k, v in sweep.dimensions().items() if len(v) > 1) or "one of each knob"
    if search.strategy == "grid" and size > MAX_SWEEP_POINTS:
        raise InputError(f"{located.where(('search', 'strategy'))}: search: found a grid of {size:,} design points "
                         f"({dims}), allowed: at most {MAX_SWEEP_POINTS:,}; sweep fewer values or use a search "
                         f"strategy (random, nsga2, tpe) with a budget")
    if search.budget is not None and search.budget > MAX_SWEEP_POINTS:
        raise InputError(f"{located.where(('search', 'budget'))}: search.budget: found {search.budget:,}, allowed: "
                         f"at most {MAX_SWEEP_POINTS:,} design points")
    if size > MAX_SEARCH_SPACE:
        raise InputError(f"{located.where(('search', 'strategy'))}: search: found a design space of {size:.3g} "
                         f"points ({dims}), allowed: at most {MAX_SEARCH_SPACE:.0e}")
    for target in sweep.derived:
        inputs, _ = sweep.derived_inputs(target)
        combos = math.prod(len(v) for v in inputs.values())
        if combos > MAX_SWEEP_POINTS:
            raise InputError(f"{located.where(('derived', target))}: derived.{target}: reads {combos:,} combinations "
                             f"of {', '.join(inputs)}, allowed: at most {MAX_SWEEP_POINTS:,}")


def _check_target(sweep: Sweep, target: str, where: str, located: LocatedYAML) -> None:
    """A derived knob must be a derivable knob (explore/knobs.py) or a device field (of the point's device or another
    pool's), and must not also be swept (or set)."""
    if target.startswith(("device.", *POOL_PREFIXES)):
        if len(target.split(".")) < 3:
            raise InputError(f"{where}: derived.{target}: found {target!r}, allowed: a device field like "
                             f"'device.memory.capacity_GB'")
        if target in sweep.spec.overrides:
            raise InputError(f"{where}: derived.{target}: also swept at {located.where(('overrides', target))}; "
                             f"allowed: a knob that is either swept or derived")
        return
    allowed = derivable()
    if target not in allowed:
        raise InputError(f"{where}: derived.{target}: found {target!r}{did_you_mean(target, allowed)}, allowed: "
                         f"{', '.join(allowed)} or a device field like 'device.memory.capacity_GB'")
    section = KNOBS[target].section
    if target in getattr(sweep.spec, section).model_fields_set:
        raise InputError(f"{where}: derived.{target}: also set at {located.where((section, target))} "
                         f"({section}.{target}); allowed: a knob that is either swept or derived")


def _check_names(sweep: Sweep, target: str, above: list[str], where: str) -> None:
    """Every name an expression reads must be a numeric dimension or a numeric knob derived above it, or a text
    dimension or a text knob derived above it compared with quoted text."""
    text = text_knobs()
    dimensions = sweep.dimensions()
    numeric = [name for name in [*dimensions, *above] if name not in text]
    expression = sweep.derived[target]
    for name in expression.names:
        if name in numeric or (name in [*dimensions, *above] and name in expression.text_compared):
            continue
        if name in text and name in expression.text_compared:
            why = f"{name!r} is not set in the sweep (its default at every point: set it to compare it)"
        elif name in text:
            why = f"{name!r} is text (compare it with quoted text: {name} == '...')"
        elif name in sweep.derived:
            why = f"{name!r} is derived at or below this line"
        else:
            hint = ("; a device field must be swept under overrides to be read"
                    if name.startswith(("device.", *POOL_PREFIXES)) else "")
            why = f"unknown knob {name!r}{did_you_mean(name, numeric)}{hint}"
        raise InputError(f"{where}: derived.{target}: {why}; allowed: the numeric knobs {', '.join(numeric)}")
    for name, value in expression.text_values:  # a value the knob never takes: a comparison constant at every point
        if name not in text:  # a number (a numeric knob or a device field) is never equal to text
            number = value.strip() if re.fullmatch(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?", value.strip()) else "..."
            raise InputError(f"{where}: derived.{target}: found the number {name} compared with quoted text "
                             f"{value!r}, allowed: a number ({name} == {number}, unquoted)")
        allowed = KNOBS[name].allowed if name in KNOBS else ()
        if allowed and value not in allowed:
            raise InputError(f"{where}: derived.{target}: {name} == {value!r}: found {value!r}"
                             f"{did_you_mean(value, allowed)}, allowed: a value of {name} ({', '.join(allowed)})")


def _check_derived(sweep: Sweep, located: LocatedYAML) -> None:
    """Targets and names of derived knobs, and every value each takes over the grid."""
    for i, (target, expression) in enumerate(sweep.derived.items()):
        where = located.where(("derived", target))
        _check_target(sweep, target, where, located)
        _check_names(sweep, target, list(sweep.derived)[:i], where)
        dims, chain = sweep.derived_inputs(target)
        for combo in itertools.product(*dims.values()):
            values = dict(zip(dims, combo, strict=True))
            try:
                sweep.derive(values, chain)
            except ValueError as err:  # EvaluationError: no value; else a value the knob cannot take
                at = f" at {', '.join(f'{k}={v}' for k, v in values.items())}" if values else ""
                allowed = "; allowed: a value at every design point" if isinstance(err, EvaluationError) else ""
                raise InputError(f"{where}: derived.{target}: {expression.text!r}{at}: {err}{allowed}") from None


def _check_references(sweep: Sweep, located: LocatedYAML) -> None:
    """Every model and device must load, and every override must apply to every device."""
    models = as_list(sweep.spec.model)
    if sweep.spec.serving is not None:
        parallel = sweep.spec.parallel
        stages = tuple(as_list(parallel.pp)) if parallel is not None else (1,)
        ranks = tuple(data_parallel_ranks(tp, layout) for tp in as_list(parallel.tp)
                      for layout in as_list(parallel.attention_parallel)) if parallel is not None else (1,)
        check_serving(sweep.spec.serving, models, located, stages, ranks)
    if sweep.spec.parallel is not None:
        check_parallel(sweep.spec.parallel, models, located)
    for key in ("model", "device"):
        for i, name in enumerate(as_list(getattr(sweep.spec, key))):
            loc = (key, i) if isinstance(getattr(sweep.spec, key), list) else (key,)
            try:
                load_model_config(name) if key == "model" else load_device(name)
            except InputError as err:
                raise InputError(f"{located.where(loc)}: {key}: {_strip_prefix(str(err), key)}") from None
    _check_context(sweep, located)
    _check_drafts(sweep, located)
    _check_models_read(sweep, located)
    check_sweep_formats(sweep, located)  # explore/format_checks.py: part combinations and group sizes
    _check_link_overrides(sweep, located)
    fields = {("overrides", f"device.{path}"): values for path, values in sweep.override_values().items()}
    fields.update({("derived", target): values for target, values in sweep.derived_values().items()
                   if target.startswith("device.")})
    for device in as_list(sweep.spec.device):
        _check_device_fields(sweep, device, fields, located, "device.")
    for pool in POOL_WHAT_IFS:
        pool_fields = {("overrides", key): values for key, values in sweep.pool_override_values(pool.prefix).items()}
        pool_fields.update({("derived", key): values for key, values in sweep.pool_derived_values(pool.prefix).items()})
        if not pool_fields:
            continue
        devices = pool.sweep_devices(sweep.spec.serving, as_list(sweep.spec.device))
        if not devices:
            section, key = next(iter(pool_fields))
            raise InputError(f"{located.where((section, key))}: {section}.{key}: found without the {pool.pool}, "
                             f"allowed: with {pool.needs} (fields of those devices alone)")
        for device in devices:
            _check_device_fields(sweep, device, pool_fields, located, pool.prefix)


def _check_device_fields(sweep: Sweep, device: str, fields: dict[tuple[str, str], list], located: LocatedYAML,
                         prefix: str) -> None:
    """Each what-if on `device` (keys `prefix` + a field's path) must load alone and with the others."""
    for (section, key), values in fields.items():
        for value in values:
            try:
                load_device(device, {key.removeprefix(prefix): value})
            except InputError as err:
                at = _derived_at(sweep, key, value) if section == "derived" else ""
                raise InputError(f"{located.where((section, key))}: {section}.{key}: value {value!r}{at} on "
                                 f"{device}: {override_error(device, key.removeprefix(prefix), err, _named(prefix))}"
                                 ) from None
    _check_override_corners(device, fields, located, prefix)


def _named(prefix: str) -> str:
    """How a device's messages name the fields of what-ifs with `prefix`: the attention devices' by their own prefix,
    the point's device's as the device names them."""
    return "" if prefix == "device." else prefix


def _check_override_corners(device: str, fields: dict[tuple[str, str], list], located: LocatedYAML,
                            prefix: str) -> None:
    """Device what-ifs that each load alone must load together where a check compares fields (a power cap above
    idle power): at the corners of their ranges (hw_models/device_block.py knob_corners), as a block of the sweep's
    points would price them."""
    if len(fields) < 2:
        return
    sections = {key.removeprefix(prefix): (section, key) for section, key in fields}
    for corner in knob_corners({key.removeprefix(prefix): values for (_, key), values in fields.items()}):
        try:
            load_device(device, dict(corner))
        except InputError as err:
            section, key = sections[corner[0][0]]
            together = ", ".join(f"{_named(prefix)}{path}={value!r}" for path, value in corner)
            raise InputError(f"{located.where((section, key))}: {section}: the values {together} together on "
                             f"{device}: {override_error(device, corner[0][0], err, _named(prefix))}") from None


def _derived_at(sweep: Sweep, target: str, value: Any) -> str:
    """' at k=v, ...': the first knob values at which a derived knob takes `value` ('' where it reads none)."""
    dims, chain = sweep.derived_inputs(target)
    for combo in itertools.product(*dims.values()):
        values = dict(zip(dims, combo, strict=True))
        if values and sweep.derive(values, chain)[target] == value:
            return f" at {', '.join(f'{k}={v}' for k, v in values.items())}"
    return ""


def _combinations(sweep: Sweep, names: tuple[str, ...]) -> list[dict[str, Any]] | None:
    """The values `names` take together over a sweep's grid (each a dimension or a derived knob): every
    combination of the dimensions they are or read, with the derived ones computed; None where those are more
    than MAX_SWEEP_POINTS (too many to pair)."""
    dims = sweep.dimensions()
    derived = [t for t in names if t in sweep.derived]
    inputs, chain = {}, set()
    for target in derived:
        read, targets = sweep.derived_inputs(target)
        inputs.update(read)
        chain.update(targets)
    inputs.update({t: dims[t] for t in names if t not in sweep.derived})
    if math.prod(len(v) for v in inputs.values()) > MAX_SWEEP_POINTS:
        return None
    order = [t for t in sweep.derived if t in chain]
    out = []
    for combo in itertools.product(*inputs.values()):
        values = dict(zip(inputs, combo, strict=True))
        values.update(sweep.derive(values, order))
        out.append({t: values[t] for t in names})
    return out


def _largest(sweep: Sweep, name: str) -> Any:
    """The largest value a dimension or derived knob takes over the grid."""
    if name in sweep.derived:
        return max(sweep.derived_values()[name])
    return max(sweep.dimensions()[name])


def _longest_request(sweep: Sweep) -> tuple[int, int]:
    """The (prompt, output) of a static sweep's point with the most tokens in all: the largest of each where
    neither is derived, else the largest sum over the combinations the derived ones read."""
    if not {"prompt", "output"} & set(sweep.derived):
        dims = sweep.dimensions()
        return max(dims["prompt"]), max(dims["output"])
    combos = _combinations(sweep, ("prompt", "output"))
    if combos is None:  # too many to pair: the largest of each
        return _largest(sweep, "prompt"), _largest(sweep, "output")
    longest = max(combos, key=lambda c: c["prompt"] + c["output"])
    return longest["prompt"], longest["output"]


def _check_context(sweep: Sweep, located: LocatedYAML) -> None:
    """A static sweep's prompt and output must fit every model's context (a serving sweep's requests are clipped
    to it instead, and counted in clipped_requests); a KV budget must not exceed what a point can cache."""
    _check_kv_budget(sweep, located)
    if sweep.spec.serving is not None:
        return
    prompt, output = _longest_request(sweep)
    loc = ("derived", "prompt") if "prompt" in sweep.derived else ("workload", "prompt")
    keys = ", ".join(f"{'derived' if t in sweep.derived else 'workload'}.{t}" for t in ("prompt", "output"))
    for model in as_list(sweep.spec.model):
        check_context(load_model_config(model), prompt, output, where=f"{located.where(loc)}: {keys}")


def _check_kv_budget(sweep: Sweep, located: LocatedYAML) -> None:
    """kv_budget at most each static point's prompt + output, or a serving sweep's model context
    (kernels/kv_policy.py budget_error): a larger budget would keep every token and change nothing."""
    if "kv_budget" not in sweep.derived and "kv_budget" not in sweep.set_knobs():
        return
    section = "derived" if "kv_budget" in sweep.derived else "workload"
    where = f"{located.where((section, 'kv_budget'))}: {section}.kv_budget"
    if sweep.spec.serving is not None:
        budget = _largest(sweep, "kv_budget")
        for model in as_list(sweep.spec.model):
            cfg = load_model_config(model)
            reason = budget_error(budget, cfg.max_positions, f"{cfg.name}'s context (max_position_embeddings)")
            if reason:
                raise InputError(f"{where}: {reason}")
        return
    combos = _combinations(sweep, ("prompt", "output", "kv_budget"))
    if combos is None:  # too many to pair: the largest budget against the shortest request
        values = {**sweep.dimensions(), **sweep.derived_values()}
        combos = [{"prompt": min(values["prompt"]), "output": min(values["output"]),
                   "kv_budget": max(values["kv_budget"])}]
    for c in combos:
        reason = budget_error(c["kv_budget"], c["prompt"] + c["output"],
                              f"the point's prompt + output ({c['prompt']:,} + {c['output']:,})")
        if reason:
            raise InputError(f"{where}: {reason}")


def _check_drafts(sweep: Sweep, located: LocatedYAML) -> None:
    """A speculative draft model must be smaller than every model it drafts for, with its vocabulary, and an MTP
    draft's models ship one (sim/speculative.py); the drafting knobs set where no point drafts are refused, as explore
    run refuses the flags without --spec-draft (they would only show in the results as if they had been run)."""
    workload = sweep.spec.workload
    if not any(as_list(workload.spec_draft)) and "spec_draft" not in sweep.derived:
        for name in ("acceptance", "spec_tokens", "spec_tree"):
            if name in workload.model_fields_set:
                raise InputError(f"{located.where(('workload', name))}: workload.{name}: found "
                                 f"{getattr(workload, name)!r} with no spec_draft, allowed: with workload.spec_draft "
                                 f"(speculative decoding), or left out")
    for draft in as_list(workload.spec_draft):
        if draft in ("", MEDUSA, NGRAM):
            continue
        for model in as_list(sweep.spec.model):
            target = load_model_config(model)
            reason = mtp_error(target) if draft == MTP else draft_error(target, load_model_config(draft))
            if reason:
                raise InputError(f"{located.where(('workload', 'spec_draft'))}: workload.spec_draft: {reason}")


def _check_models_read(sweep: Sweep, located: LocatedYAML) -> None:
    """A knob set where none of the sweep's models has what it reads (Knob.only_for: moe_routing beside dense models
    alone) is refused, as explore run refuses its flag: it would only show in the results as if it had been run. A
    grid crossing it with models that have it runs the others' points without it (unread_at_default)."""
    models, dims = as_list(sweep.spec.model), sweep.dimensions()
    for knob in knobs():
        if knob.only_for is None or not any(value != knob.default for value in dims.get(knob.name, ())):
            continue
        if not any(knob.only_for.of(model) for model in models):
            words, where = knob.only_for.words, located.where((knob.section, knob.name))
            shown = ", ".join(map(str, dims[knob.name]))
            raise InputError(f"{where}: {knob.section}.{knob.name}: found {shown} with model {', '.join(models)}, "
                             f"which {'has' if len(models) == 1 else 'have'} no {words}, allowed: with a model that "
                             f"has {words}, or left out")


def _check_link_overrides(sweep: Sweep, located: LocatedYAML) -> None:
    """Link overrides need a system of devices, and every value must apply to every link the sweep uses."""
    overrides = sweep.link_override_values()
    if not overrides:
        return
    first = next(iter(overrides))
    if sweep.spec.parallel is None:
        raise InputError(f"{located.where(('overrides', first))}: overrides.{first}: found without a parallel: "
                         f"section, allowed: link fields of a system of devices (parallel: {{tp: [...]}})")
    parallel = sweep.spec.parallel
    if max(as_list(parallel.tp)) * max(as_list(parallel.pp)) < 2:
        raise InputError(f"{located.where(('overrides', first))}: overrides.{first}: found where every point runs on "
                         f"one device (tp and pp 1), allowed: with tp or pp above 1 (a link joins several devices)")
    links = [link for link in as_list(sweep.spec.parallel.link) if link != "default"]
    links += [default_link(load_device(device).name) for device in as_list(sweep.spec.device)
              if "default" in as_list(sweep.spec.parallel.link)]
    for key, values in overrides.items():
        for link in dict.fromkeys(links):
            for value in values:
                try:
                    load_link_model(link, {key.removeprefix(LINK_PREFIX): value})
                except InputError as err:
                    raise InputError(f"{located.where(('overrides', key))}: overrides.{key}: value {value!r} on "
                                     f"{link}: {err}") from None


def _strip_prefix(message: str, key: str) -> str:
    return message.removeprefix(f"{key}: ")
