"""Derived knobs: expressions that compute one knob of a design point from the point's other knobs.

An expression is parsed with `ast` and evaluated by walking the tree; nothing is ever passed to eval().
Allowed: numbers, knob names (a device field is written as in the sweep file: device.memory.bandwidth_GBps, and
a field of a serving point's other pools' devices so too: attention_device.memory.bandwidth_GBps),
+ - * / // ** %, unary minus, comparisons, `a if c else b` and calls of min, max, round, abs, log2, sqrt; a text
knob (execution, device, attention_parallel, ...) compares with == or != to quoted text: "32 if execution ==
'engine' else 8". A text knob's value is quoted text as the expression's result, or a branch of its `a if c else b`:
"'fp8_e4m3' if weight_bits == 8 else 'int'".
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# The names a device field's attribute chain starts with: the point's device, and a serving point's other pools'
# (explore/pool_what_ifs.py: what-ifs on them are written so).
DEVICE_ROOTS = ("device", "attention_device", "prefill_device")
ALLOWED = ("numbers, knob names, + - * / // ** %, unary -, comparisons (== and != also with quoted text), "
           "'a if c else b' and calls of min, max, round, abs, log2, sqrt; quoted text as a result")
EQUALITY = (ast.Eq, ast.NotEq)  # the comparisons quoted text takes part in
# An expression's size: longest text and deepest tree (operators, calls and conditionals count a level each;
# evaluation recurses through them, and a knob formula needs a handful).
MAX_EXPRESSION_CHARS = 2000
MAX_EXPRESSION_DEPTH = 100
# Largest integer power computed exactly (in bits of the result); beyond it ** works in floats, which overflow
# to an error instead of building a huge integer.
MAX_POWER_BITS = 1024

BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
# name: (function, fewest arguments, most arguments); round takes no digits argument (round(x, -10**9) is slow).
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "min": (min, 2, None), "max": (max, 2, None), "round": (round, 1, 1), "abs": (abs, 1, 1),
    "log2": (math.log2, 1, 1), "sqrt": (math.sqrt, 1, 1),
}


class EvaluationError(ValueError):
    """An expression has no value at some knob values (division by zero, log2 of a negative, overflow)."""


def _power(base: Any, exponent: Any) -> Any:
    """base ** exponent; exact for small integer results, in floats otherwise (OverflowError when too big)."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent >= 0:
        if exponent == 0 or abs(base) <= 1 or base.bit_length() * exponent <= MAX_POWER_BITS:
            return base ** exponent
    result = float(base) ** float(exponent)
    if isinstance(result, complex):
        raise ValueError("a negative number to a fractional power")
    return result


def knob_name(node: ast.expr) -> str | None:
    """'batch' for a name, 'device.memory.bandwidth_GBps' for an attribute chain on 'device' (or on a pool's device:
    'attention_device', 'prefill_device'); None otherwise."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or (parts and node.id not in DEVICE_ROOTS):
        return None
    return ".".join([node.id, *reversed(parts)])


def _not_allowed(node: ast.AST, text: str) -> ValueError:
    """The error for a construct outside the allowed set; its message reads after 'allowed: '."""
    segment = ast.get_source_segment(text, node) or type(node).__name__
    return ValueError(f"{ALLOWED} (not {segment!r})")


def _check_call(node: ast.Call, text: str) -> None:
    name = node.func.id if isinstance(node.func, ast.Name) else None
    if name not in FUNCTIONS:
        raise ValueError(f"calls of {', '.join(FUNCTIONS)} (not {ast.get_source_segment(text, node.func)!r})")
    if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
        raise _not_allowed(node, text)
    _, fewest, most = FUNCTIONS[name]
    if len(node.args) < fewest or (most is not None and len(node.args) > most):
        count = f"{fewest}" if most == fewest else f"{fewest} or more"
        raise ValueError(f"{name}() with {count} argument{'' if count == '1' else 's'} "
                         f"(not {len(node.args)})")


def _check(node: ast.AST, text: str, names: list[str], compared: list[tuple[str, str]], result: bool = False) -> None:
    """Raise ValueError on the first construct that is not allowed; collect the knob names used, and in `compared`
    (name, quoted text) for each name compared with quoted text. `result`: the node is the expression's value (the
    whole, or a branch of a conditional that is), where quoted text (a text knob's value) may stand."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float | str) or (
                isinstance(node.value, str) and not result):
            raise _not_allowed(node, text)
        return
    name = knob_name(node) if isinstance(node, ast.Name | ast.Attribute) else None
    if name is not None:
        names.append(name)
        return
    if isinstance(node, ast.BinOp) and (type(node.op) in BINARY or isinstance(node.op, ast.Pow)):
        children: list[ast.AST] = [node.left, node.right]
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        children = [node.operand]
    elif isinstance(node, ast.Compare) and all(type(op) in COMPARE for op in node.ops):
        # Quoted text is a text knob's value, only compared for (in)equality.
        operands = [node.left, *node.comparators]
        quoted = [isinstance(child, ast.Constant) and isinstance(child.value, str) for child in operands]
        if any(quoted) and all(isinstance(op, EQUALITY) for op in node.ops):
            texts = [child.value for child, is_text in zip(operands, quoted, strict=True) if is_text]
            compared.extend((name, text) for child in operands if (name := knob_name(child)) is not None
                            for text in texts)
            operands = [child for child, is_text in zip(operands, quoted, strict=True) if not is_text]
        children = operands
    elif isinstance(node, ast.IfExp):
        _check(node.test, text, names, compared)
        for branch in (node.body, node.orelse):
            _check(branch, text, names, compared, result)
        return
    elif isinstance(node, ast.Call):
        _check_call(node, text)
        children = list(node.args)
    else:
        raise _not_allowed(node, text)
    for child in children:
        _check(child, text, names, compared)


@dataclass(frozen=True)
class Expression:
    """A checked expression: its text, its tree and the knob names it reads (in order of first use)."""

    text: str
    tree: ast.expr
    names: tuple[str, ...]
    text_compared: tuple[str, ...] = ()  # the names it compares with quoted text (text knobs may be read so)
    text_values: tuple[tuple[str, str], ...] = ()  # (name, quoted text) of each such comparison

    @classmethod
    def parse(cls, text: str) -> Expression:
        """Parse and check; ValueError says what is allowed and names the first thing that is not."""
        if len(text) > MAX_EXPRESSION_CHARS:
            raise ValueError(f"an expression of at most {MAX_EXPRESSION_CHARS:,} characters (found {len(text):,})")
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as err:
            raise ValueError(f"an expression of {ALLOWED} ({err.msg})") from None
        except (RecursionError, MemoryError):
            raise ValueError(f"an expression nested at most {MAX_EXPRESSION_DEPTH} levels deep") from None
        if _depth(tree) > MAX_EXPRESSION_DEPTH:
            raise ValueError(f"an expression nested at most {MAX_EXPRESSION_DEPTH} levels deep (operators, calls "
                             f"and conditionals each add one)")
        names: list[str] = []
        compared: list[tuple[str, str]] = []
        _check(tree, text.strip(), names, compared, result=True)
        return cls(text, tree, tuple(dict.fromkeys(names)), tuple(dict.fromkeys(name for name, _ in compared)),
                   tuple(dict.fromkeys(compared)))

    def __call__(self, env: Mapping[str, Any]) -> Any:
        """The value at the knob values in env; EvaluationError where it has none (division by zero, ...)."""
        try:
            return _evaluate(self.tree, env)
        except ZeroDivisionError:
            raise EvaluationError("division by zero") from None
        except OverflowError:
            raise EvaluationError("a result too large for a number") from None
        except (ValueError, TypeError) as err:  # log2(-1), sqrt(-1), a text knob in arithmetic
            raise EvaluationError(str(err)) from None


def _depth(tree: ast.AST) -> int:
    """Levels of the tree, counted without recursion (a long chain of + is as deep as it is long)."""
    deepest, todo = 0, [(tree, 1)]
    while todo:
        node, depth = todo.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_EXPRESSION_DEPTH:  # past the limit the answer is known
            todo.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _evaluate(node: ast.AST, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name | ast.Attribute):
        return env[knob_name(node)]
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, env), _evaluate(node.right, env)
        return _power(left, right) if isinstance(node.op, ast.Pow) else BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, env)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.Compare):
        return _compare(node, env)
    if isinstance(node, ast.IfExp):
        return _evaluate(node.body if _evaluate(node.test, env) else node.orelse, env)
    function = FUNCTIONS[node.func.id][0]  # a Call: the only node left after _check
    return function(*(_evaluate(arg, env) for arg in node.args))


def _compare(node: ast.Compare, env: Mapping[str, Any]) -> bool:
    """A comparison chain: a < b <= c is a < b and b <= c."""
    left = _evaluate(node.left, env)
    for op, comparator in zip(node.ops, node.comparators, strict=True):
        right = _evaluate(comparator, env)
        if not COMPARE[type(op)](left, right):
            return False
        left = right
    return True
