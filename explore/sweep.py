"""sweep.yaml: the schema, its validation (one clear line per mistake), and its design points."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from explore.design_point import BREAKDOWN_COLUMNS, METRIC_COLUMNS, DesignPoint
from explore.yaml_lines import LocatedYAML
from hw_models.registry import load_device
from hw_models.validation import check_keys, did_you_mean, input_error
from kernels.formats import parse_sparsity
from workloads.errors import InputError
from workloads.model_config import load_model_config

PositiveInt = Annotated[StrictInt, Field(ge=1)]
WeightBits = Literal[16, 8, 4, 3, 2]


def _sparsity(pattern: str) -> str:
    parse_sparsity(pattern)  # ValueError says what is allowed
    return pattern


SparsityName = Annotated[str, AfterValidator(_sparsity)]
Bits = Literal[16, 8, 4]
Number = StrictInt | StrictFloat
NUMERIC_METRICS = tuple(m for m in METRIC_COLUMNS + BREAKDOWN_COLUMNS
                        if m not in ("fits_in_memory", "infeasible_reason", "calibrated"))
CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w]*)\s*(<=|>=|<|>|==)\s*([-+0-9.eE]+)\s*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """Values from lo to hi inclusive: `steps` of them, evenly spaced (linear) or geometric (log)."""

    range: tuple[Number, Number]
    steps: Annotated[StrictInt, Field(ge=2)]
    scale: Literal["linear", "log"] = "linear"

    def values(self) -> list[float]:
        lo, hi = self.range
        if self.scale == "log":
            if lo <= 0 or hi <= 0:
                raise ValueError("a log range needs positive bounds")
            return np.geomspace(lo, hi, self.steps).tolist()
        return np.linspace(lo, hi, self.steps).tolist()


class Workload(_Strict):
    batch: PositiveInt | list[PositiveInt] = 1
    prompt: PositiveInt | list[PositiveInt] = 512
    output: PositiveInt | list[PositiveInt] = 128


class Format(_Strict):
    weight_bits: WeightBits | list[WeightBits] = 16
    act_bits: Bits | list[Bits] = 16
    kv_bits: Bits | list[Bits] = 16
    sparsity: SparsityName | list[SparsityName] = "dense"


class Objectives(_Strict):
    minimize: list[str] = []
    maximize: list[str] = []

    @field_validator("minimize", "maximize")
    @classmethod
    def _known_metrics(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in NUMERIC_METRICS:
                raise ValueError(f"a metric name{did_you_mean(name, NUMERIC_METRICS)}: one of "
                                 f"{', '.join(NUMERIC_METRICS)} (found {name!r})")
        return names


class Search(_Strict):
    """grid evaluates every point; random, nsga2 and tpe evaluate `budget` distinct points chosen with `seed`."""

    strategy: Literal["grid", "random", "nsga2", "tpe"] = "grid"
    budget: Annotated[StrictInt, Field(ge=1)] | None = None
    seed: StrictInt = 0
    # Points proposed at once; fixed (not tied to --workers) so that results do not depend on the worker count.
    batch: Annotated[StrictInt, Field(ge=1)] = 16

    @model_validator(mode="after")
    def _budget_for_searches(self):
        if self.strategy != "grid" and self.budget is None:
            raise ValueError(f"a budget (number of design points to evaluate) for strategy {self.strategy!r}")
        return self


class SweepFile(_Strict):
    name: str
    model: str | list[str]
    device: str | list[str]
    workload: Workload = Workload()
    format: Format = Format()
    execution: Literal["eager", "graphs"] | list[Literal["eager", "graphs"]] = "eager"
    calibrated: bool = True  # false: price every device on its datasheet roofline, fitted or not
    overrides: dict[str, Number | list[Number] | Range] = {}
    objectives: Objectives = Objectives()
    constraints: list[str] = []
    search: Search = Search()

    @model_validator(mode="after")
    def _objectives_for_optimizers(self):
        if self.search.strategy in ("nsga2", "tpe") and not (self.objectives.minimize or self.objectives.maximize):
            raise ValueError(f"objectives to optimize (minimize/maximize) for search strategy "
                             f"{self.search.strategy!r}")
        return self

    @field_validator("constraints")
    @classmethod
    def _parse_constraints(cls, items: list[str]) -> list[str]:
        for item in items:
            metric = Constraint.parse(item).metric
            if metric not in NUMERIC_METRICS:
                raise ValueError(f"a metric name{did_you_mean(metric, NUMERIC_METRICS)} (found {item!r})")
        return items

    @field_validator("overrides")
    @classmethod
    def _device_paths(cls, overrides: dict) -> dict:
        for path in overrides:
            if not path.startswith("device.") or len(path.split(".")) < 3:
                raise ValueError(f"keys like 'device.memory.bandwidth_GBps' (found {path!r})")
        return overrides


def _as_list(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """A constraint from 'METRIC OP NUMBER', e.g. 'ttft_s <= 0.5'."""
        match = CONSTRAINT.match(text)
        if not match:
            raise ValueError(f"'METRIC OP NUMBER' with OP one of <=, <, >=, >, == (found {text!r})")
        metric, op, bound = match.groups()
        return cls(metric, op, float(bound))

    def holds(self, metrics: dict[str, Any]) -> bool:
        value = float(metrics.get(self.metric, float("nan")))
        return {"<=": value <= self.bound, "<": value < self.bound, ">=": value >= self.bound,
                ">": value > self.bound, "==": value == self.bound}[self.op]

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
        return {path.removeprefix("device."): value.values() if isinstance(value, Range) else _as_list(value)
                for path, value in self.spec.overrides.items()}

    def constraints(self) -> list[Constraint]:
        return [Constraint.parse(item) for item in self.spec.constraints]

    def dimensions(self) -> dict[str, list]:
        """Each knob of the sweep and the values it takes; override knobs are named 'device.<path>'."""
        s, w, f = self.spec, self.spec.workload, self.spec.format
        dims = {"model": _as_list(s.model), "device": _as_list(s.device)}
        dims.update({f"device.{path}": values for path, values in self.override_values().items()})
        dims.update(batch=_as_list(w.batch), prompt=_as_list(w.prompt), output=_as_list(w.output),
                    weight_bits=_as_list(f.weight_bits), act_bits=_as_list(f.act_bits), kv_bits=_as_list(f.kv_bits),
                    sparsity=_as_list(f.sparsity), execution=_as_list(s.execution))
        return dims

    def point(self, values: dict[str, Any]) -> DesignPoint:
        """The design point at one value of every dimension."""
        fields = {k: v for k, v in values.items() if not k.startswith("device.")}
        overrides = tuple((k.removeprefix("device."), v) for k, v in values.items() if k.startswith("device."))
        return DesignPoint(**fields, overrides=overrides, use_calibration=self.spec.calibrated)

    def size(self) -> int:
        return int(np.prod([len(v) for v in self.dimensions().values()]))

    def points(self) -> list[DesignPoint]:
        """Every design point of the grid, in a fixed order."""
        dims = self.dimensions()
        return [self.point(dict(zip(dims, combo, strict=True))) for combo in itertools.product(*dims.values())]


def load_sweep(path: str) -> Sweep:
    """Parse and validate a sweep file as a whole: schema, presets it names, and device overrides."""
    located = LocatedYAML(path)
    if not isinstance(located.data, dict):
        raise InputError(f"{path}: found {type(located.data).__name__}, allowed: a mapping of sweep keys "
                         f"({', '.join(SweepFile.model_fields)})")
    check_keys(located.data, SweepFile, path, line_of=located.line_of)
    try:
        spec = SweepFile.model_validate(located.data)
    except ValidationError as err:
        raise input_error(err, path, line_of=located.line_of) from None
    sweep = Sweep(path=path, spec=spec)
    _check_references(sweep, located)
    return sweep


def _check_references(sweep: Sweep, located: LocatedYAML) -> None:
    """Every model and device must load, and every override must apply to every device."""
    for key in ("model", "device"):
        for i, name in enumerate(_as_list(getattr(sweep.spec, key))):
            loc = (key, i) if isinstance(getattr(sweep.spec, key), list) else (key,)
            try:
                load_model_config(name) if key == "model" else load_device(name)
            except InputError as err:
                raise InputError(f"{located.where(loc)}: {key}: {_strip_prefix(str(err), key)}") from None
    overrides = sweep.override_values()
    for device in _as_list(sweep.spec.device):
        for path, values in overrides.items():
            for value in values:
                try:
                    load_device(device, {path: value})
                except InputError as err:
                    raise InputError(f"{located.where(('overrides', 'device.' + path))}: overrides.device.{path}: "
                                     f"value {value!r} on {device}: {err}") from None


def _strip_prefix(message: str, key: str) -> str:
    return message.removeprefix(f"{key}: ")
