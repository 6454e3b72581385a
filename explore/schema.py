"""Building blocks of the sweep file's schema (pydantic types with the one-line errors users get)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainValidator,
    StrictFloat,
    StrictInt,
    create_model,
)
from pydantic_core import PydanticCustomError, core_schema

from explore.derived import Expression
from explore.knobs import Knob
from workloads.requests import MAX_TOKENS

PositiveInt = Annotated[StrictInt, Field(ge=1)]
# A request's length in tokens: at most what RequestSet holds (workloads/requests.py), or sampling it overflowed.
TokenLength = Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS)]


def expression_text(text: Any) -> str:
    if not isinstance(text, str):
        raise ValueError("an expression in quotes, e.g. \"200 + 0.1 * device.memory.bandwidth_GBps\"")
    Expression.parse(text)  # ValueError names what is not allowed
    return text


class ExpressionText(str):
    """A derived knob's expression (plain text once validated). A class, not Annotated[str, AfterValidator]:
    check_keys reads the metadata of an Annotated type as a dataclass of keys."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(expression_text)


# A sweep's name is its default output folder (out/<name>), so it must be one plain folder name: no path
# separators, no '.' or '..', no control characters; then the folder cannot land outside the output root.
# 255 bytes: the longest file name ext4, APFS and NTFS take (one path component, UTF-8).
MAX_NAME_BYTES = 255
NAME_ALLOWED = (f"a folder name of 1 to {MAX_NAME_BYTES} bytes without '/', '\\', control characters, a leading "
                f"'.' or surrounding spaces (the sweep writes into out/<name>)")


def folder_name(name: str) -> str:
    bad = (not name or name != name.strip() or name.startswith(".") or len(name.encode("utf-8")) > MAX_NAME_BYTES
           or any(c in "/\\" or not c.isprintable() for c in name))
    if bad:
        raise ValueError(NAME_ALLOWED)
    return name


SweepName = Annotated[str, AfterValidator(folder_name)]


def finite(value: int | float) -> int | float:
    if not math.isfinite(value):
        raise ValueError("a finite number")  # .inf and .nan are no what-if values
    return value


def number(value: Any) -> int | float:
    """An override's value: an integer or a decimal. Text that reads as one is taken too: YAML 1.1 reads 1e-3
    or 8e3 (an exponent without a '.' or a sign) as text, as device files' numbers are read."""
    if isinstance(value, str):
        try:
            value = int(value) if value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float):
        # A type error (its name ends in _type) as pydantic's own: of a union's errors, a list member's says more.
        raise PydanticCustomError("number_type", "a number (an integer or a decimal, e.g. 6700 or 1.5e3; 0 or 1 for "
                                                 "a yes/no field such as link.multimem)")
    return finite(value)


Number = Annotated[int | float, PlainValidator(number)]


def distinct(values: list) -> list:
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        # A repeated value is one design point: counting it twice would overstate the sweep.
        raise ValueError(f"distinct values ({repeated[0]!r} is listed twice)")
    return values


def one_or_more(item: Any) -> Any:
    """A knob's type: one value, or a list of at least one distinct value (an empty list would sweep nothing)."""
    return item | Annotated[list[item], Field(min_length=1), AfterValidator(distinct)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveNumber = Annotated[StrictInt | StrictFloat, AfterValidator(finite), Field(gt=0)]


def as_list(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def _checked(knob: Knob):
    """A validator running the knob's own check; its error says only what is allowed (pydantic's message names
    the key and the value once)."""
    def check(value: Any) -> Any:
        try:
            return knob.check(value)
        except ValueError:
            raise ValueError(knob.allowed_words()) from None

    return check


def knob_type(knob: Knob) -> Any:
    """The pydantic type of one value of a knob (explore/knobs.py): its allowed values, else its type with its
    minimum and its check."""
    if knob.allowed:
        # An integer knob's values are written as integers, as StrictInt takes them (batch: 1.0 is refused): a
        # Literal alone would take 4.0, or false, as 4 or 0.
        return Annotated[Literal[knob.allowed], BeforeValidator(_integer(knob))] if knob.type is int else \
            Literal[knob.allowed]
    bound = [Field(ge=knob.minimum, le=knob.maximum)] if knob.minimum is not None else []
    if knob.type is int:
        return Annotated[StrictInt, BeforeValidator(_number(knob)), *bound]
    if knob.type is float:
        checked = [AfterValidator(_checked(knob))] if knob.check is not None else []
        return Annotated[StrictInt | StrictFloat, BeforeValidator(_number(knob)), AfterValidator(finite), *bound,
                         *checked]
    checked = [AfterValidator(_checked(knob))] if knob.check is not None else []
    return Annotated[str, BeforeValidator(_text(knob)), *checked]


def _number(knob: Knob):
    """A validator refusing text where a knob takes a number (memory_utilization: abc) with what the knob takes, not
    pydantic's 'a valid number'; a YAML boolean keeps pydantic's error, which input_error explains."""
    def number_(value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(knob.allowed_words())
        return value

    return number_


def _integer(knob: Knob):
    """A validator refusing anything but an integer where a knob takes integers from a list (weight_bits: 4.0, a YAML
    boolean), with what the knob takes."""
    def integer(value: Any) -> Any:
        # Past 64 bits pydantic's Literal check said 'Unable to parse input string as an integer, exceeded maximum size'
        if isinstance(value, bool) or not isinstance(value, int) or not -2**63 <= value < 2**63:
            raise ValueError(f"one of the integers {knob.allowed_words()}")
        return value

    return integer


def _text(knob: Knob):
    """A validator refusing a number where a knob takes text (sparsity: 1.5) with what the knob takes, not pydantic's
    'a valid string'; a YAML boolean keeps pydantic's error, which input_error explains."""
    def text(value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(knob.allowed_words())
        return value

    return text


def section_model(name: str, knobs: tuple[Knob, ...]) -> type[Strict]:
    """A sweep-file section (workload:, format:) with one field per knob: one value or a list of them, the knob's
    default where the file leaves it out."""
    fields: dict[str, Any] = {k.name: (one_or_more(knob_type(k)), k.default) for k in knobs}
    return create_model(name, __base__=Strict, **fields)
