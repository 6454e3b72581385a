"""What `explore run` adds around one evaluation: `--set KEY=VALUE` overrides, parsed and checked as a sweep's
overrides are, and hints for a point that does not fit (other formats, more devices, a device with more memory),
each evaluated before it is suggested."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace
from typing import Any

from explore.design_point import DesignPoint
from explore.pool_what_ifs import POOL_WHAT_IFS
from hw_models.link import default_link, load_link, load_link_model
from hw_models.nodes import nodes_of
from hw_models.registry import load_device, preset_names, read_device_yaml, what_if_fields, what_if_refusal
from kernels.parallel import check_tensor_parallel
from workloads.errors import InputError

SET_EXAMPLE = "memory.bandwidth_GBps=6700"
# What-if keys by what they change: the point's device ('device.memory.bandwidth_GBps'), the link between its parallel
# devices ('link.bandwidth_GBps'), the devices of a serving point's other pools (explore/pool_what_ifs.py).
DEVICE_PREFIX, LINK_PREFIX = "device.", "link."
WHAT_IF_PREFIXES = (DEVICE_PREFIX, LINK_PREFIX, *(pool.prefix for pool in POOL_WHAT_IFS))


def link_what_ifs(values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A point's or a sweep combination's link what-ifs ('link.bandwidth_GBps': 900) as (field, value) pairs."""
    return tuple((key.removeprefix(LINK_PREFIX), value) for key, value in values.items() if key.startswith(LINK_PREFIX))
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_INTEGER = re.compile(r"^[-+]?\d+$")
_WHERE = re.compile(r"^[^:]*\.ya?ml(:\d+)?: ")  # the file a device or link message starts with
# Links a point names by preset, with the flag and the sweep key that name one: no what-if changes their fields (a
# what-if's `link.` is the link between the tp devices); a link YAML with the field changed does.
NAMED_LINKS = {"node_link": ("--node-link", "parallel.node_link"), "kv_link": ("--kv-link", "serving.kv_link"),
               "attention_link": ("--attention-link", "serving.attention_link")}


def parse_sets(items: list[str], device_name: str) -> tuple[dict[str, int | float], dict[str, int | float],
                                                             dict[str, dict]]:
    """(device, link, pool) overrides by dotted path of `--set KEY=VALUE` items: a key names a device field
    ('memory.bandwidth_GBps', or 'device.memory.bandwidth_GBps' as a sweep writes it), a link field
    ('link.bandwidth_GBps') or a field of another pool's devices ('attention_device.memory.bandwidth_GBps', pool
    overrides by their prefix: explore/pool_what_ifs.py); a value is a number (an integer or a decimal). Text given a
    field of `device_name` that holds no number (a name) is refused as a number given it is: set in a device file."""
    device: dict[str, int | float] = {}
    link: dict[str, int | float] = {}
    pools: dict[str, dict] = {pool.prefix: {} for pool in POOL_WHAT_IFS}
    for item in items:
        key, eq, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not eq or not key:
            raise InputError(f"--set: found {item!r}, allowed: KEY=VALUE with a device field's dotted path, e.g. "
                             f"{SET_EXAMPLE}")
        if why := named_link_refusal(key):
            raise InputError(f"--set {key}: {why}")
        if not _NUMBER.match(text):
            if why := text_refusal(device_name, key, text):
                raise InputError(f"--set {key}: found {text!r}; {why}")
            raise InputError(f"--set {key}: found {text!r}, allowed: a number (an integer or a decimal, e.g. 6700 "
                             f"or 1.5e3; 0 or 1 for a yes/no field such as link.multimem)")
        value = int(text) if _INTEGER.match(text) else float(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"--set {key}: found {text!r}, allowed: a finite number")
        # The first prefix the key starts with ('' last: a device field's path as it is).
        target, path = next((target, key.removeprefix(prefix)) for target, prefix in (
            (link, LINK_PREFIX), *((pools[prefix], prefix) for prefix in pools), (device, DEVICE_PREFIX), (device, ""))
            if key.startswith(prefix))
        if path in target:
            raise InputError(f"--set {key}: found twice ({target[path]:g} and {value:g}), allowed: once")
        target[path] = value
    return device, link, pools


def named_link_refusal(path: str, sweep: bool = False) -> str:
    """Why a what-if on a field of a link the point names by preset ('node_link.bandwidth_GBps') is refused, with what
    is allowed and how such a link's fields change (a link YAML named by its flag, or by its key in a `sweep`'s
    overrides); '' for any other path."""
    name, _, field = path.removeprefix(DEVICE_PREFIX).partition(".")
    if name not in NAMED_LINKS or not field:
        return ""
    flag, key = NAMED_LINKS[name]
    device = f"{DEVICE_PREFIX if sweep else ''}{SET_EXAMPLE.partition('=')[0]}"
    return (f"found {f'{path!r}, ' if sweep else ''}a field of {name}, allowed: a device field ({device}), "
            f"link.<field> (the link between the tp devices) or a field of another pool's devices; {name}'s fields "
            f"change in a link YAML: a copy of its preset's file (explore presets links names them) with {field} "
            f"changed, named by {f'{key}: FILE.yaml' if sweep else f'{flag} FILE.yaml'}")


def text_refusal(device_name: str, key: str, text: str) -> str | None:
    """Why a what-if on `key` ('memory.bandwidth_GBps', 'device.pim.row_buffers') cannot take `text`, which reads as no
    number, where the device's own field there holds none (a name, set in a device file: what_if_refusal); None
    otherwise (a link's or a pool's field, or a number field: refused as a number is)."""
    if key.startswith(WHAT_IF_PREFIXES[1:]) or _NUMBER.match(text.strip()):
        return None
    return what_if_refusal(device_name, key.removeprefix(DEVICE_PREFIX))


def _without_where(message: str) -> str:
    """A device or link message without the file it starts with (the flag names what was set)."""
    return _WHERE.sub("", message, count=1)


def override_error(device_name: str, path: str, err: InputError, prefix: str = "") -> str:
    """A device's refusal of a what-if on `path`, without its file, and the fields a what-if may set where `path` is
    none of them; `prefix`: the what-if's own (ATTENTION_PREFIX), in place of the device's 'device.' where it names
    the field."""
    fields = what_if_fields(device_name)
    allowed = "" if path in fields else f"; allowed: {', '.join(fields)}"
    said = _without_where(str(err))
    return f"{prefix + said.removeprefix(DEVICE_PREFIX) if prefix else said}{allowed}"


def check_sets(device_name: str, overrides: dict[str, Any], link_name: str, link_overrides: dict[str, Any],
               devices: int, serving=None, pools: dict[str, dict] | None = None) -> None:
    """Each override must apply to the device (or link, or another pool's devices) as a sweep's override must: a
    field a cost model reads, a valid value. `devices`: how many the point runs on (link fields need more than one);
    `serving`: the point's ServingSpec (None: a static batch), whose pools `pools` (parse_sets) change."""
    load_device(device_name)  # a bad --device is the device's own error, not an override's
    _check_device_sets(device_name, overrides, "")
    for pool in POOL_WHAT_IFS:
        pool_overrides = (pools or {}).get(pool.prefix)
        if not pool_overrides:
            continue
        if not pool.present(serving):
            raise InputError(f"--set {pool.prefix}{next(iter(pool_overrides))}: found without the {pool.pool}, "
                             f"allowed: with {pool.needs_flags} (fields of those devices alone)")
        _check_device_sets(pool.device_name(serving, device_name), pool_overrides, pool.prefix)
    if link_overrides and devices < 2:
        first = next(iter(link_overrides))
        raise InputError(f"--set {LINK_PREFIX}{first}: found on one device, allowed: with --tp or --pp above 1 (a "
                         f"link joins several devices)")
    for path, value in link_overrides.items():
        try:
            load_link_model(link_name or default_link(load_device(device_name).name), {path: value})
        except InputError as err:  # a field's message names it bare ('bandwidth_GBps: found -5'), a key's with it
            said = _without_where(str(err))
            raise InputError(f"--set: {said if said.startswith(LINK_PREFIX) else LINK_PREFIX + said}") from None


def _check_device_sets(device_name: str, overrides: dict[str, Any], prefix: str) -> None:
    """Each of `overrides` must load on the device alone and all of them together (a power cap above idle power)."""
    for path, value in overrides.items():
        try:
            load_device(device_name, {path: value})
        except InputError as err:
            raise InputError(f"--set: {override_error(device_name, path, err, prefix)}"
                             f"{_other_parts(device_name, path) if not prefix else ''}") from None
    if len(overrides) > 1:
        try:
            load_device(device_name, overrides)
        except InputError as err:
            together = ", ".join(f"{prefix}{path}={value:g}" for path, value in overrides.items())
            raise InputError(f"--set: the values {together} together on {device_name}: "
                             f"{_without_where(str(err))}") from None


def _other_parts(device_name: str, path: str) -> str:
    """Where a key without a prefix names no section of the device's fields (node_link.bandwidth_GBps), the prefixes
    of the other parts of the system a what-if may change: a bare key is read as the device's."""
    sections = {field.split(".")[0] for field in what_if_fields(device_name)}
    if path.removeprefix(DEVICE_PREFIX).split(".")[0] in sections:
        return ""
    return f", or a field of another part of the system: {', '.join(f'{p}<field>' for p in WHAT_IF_PREFIXES[1:])}"


def overrides_text(point: DesignPoint) -> str:
    """The what-if overrides of a point as applied, with the preset's own value: 'memory.bandwidth_GBps = 6700
    (h100-sxm: 3350)'."""
    spec = load_device(point.device, calibrated=False).spec  # a field the file leaves out has its default there
    parts = []
    for path, value in point.overrides:
        node: Any = spec
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else getattr(node, key, None)
        shown = f"{node:g}" if isinstance(node, (int, float)) and not isinstance(node, bool) else "unset"
        parts.append(f"{path} = {value:g} ({point.device}: {shown})")
    parts += [f"link.{path} = {value:g}" for path, value in point.link_overrides]
    parts += [f"{pool.prefix}{path} = {value:g}" for pool in POOL_WHAT_IFS
              for path, value in getattr(point, pool.field)]
    return ", ".join(parts)


@dataclass(frozen=True)
class Hint:
    """A change to a point that does not fit, evaluated: it fits."""

    change: dict[str, Any]  # DesignPoint fields, e.g. {"weight_bits": 8}
    flags: str  # as `explore run` spells the change: '--weight-bits 8'
    peak_memory_B: float
    capacity_B: float

    def as_dict(self) -> dict[str, Any]:
        return {"flags": self.flags, "change": self.change, "peak_memory_B": self.peak_memory_B,
                "capacity_B": self.capacity_B}


# Formats a hint may suggest (weights and KV cache; fewer bits than the point's): the ones every family prices.
HINT_BITS = (16, 8, 4)
HINT_TP = (2, 4, 8)  # tensor-parallel sizes a hint may suggest: one server at most
HINT_DEVICES = 3  # devices with more memory a hint lists at most


def _flag(field: str, value: Any) -> str:
    return f"--{field.replace('_', '-')} {value}"


def _fits(evaluator, point: DesignPoint, change: dict[str, Any]) -> Hint | None:
    """The hint of changing the point, when the changed point fits (an invalid change is no hint)."""
    candidate = replace(point, **change)
    try:
        metrics = evaluator.evaluate(candidate).metrics
        capacity = evaluator.point_device(candidate).memory_bytes
    except (InputError, ValueError):
        return None
    if metrics["infeasible_reason"]:  # memory, or a limit of the scheduler: either way it cannot run
        return None
    flags = " ".join(_flag(k, v) for k, v in change.items() if k != "overrides")
    if "overrides" in change and point.overrides:
        flags += " (without --set)"  # another preset as shipped: the what-ifs were this device's
    return Hint(change={k: v for k, v in change.items() if k != "overrides"}, flags=flags,
                peak_memory_B=float(metrics["peak_memory_B"]), capacity_B=float(capacity))


def _fewer_bits(evaluator, point: DesignPoint) -> list[Hint]:
    """The format with the most bits kept (weights first) below the point's that fits."""
    options = sorted(((w, kv) for w in HINT_BITS if w <= point.weight_bits for kv in HINT_BITS if kv <= point.kv_bits
                      if (w, kv) != (point.weight_bits, point.kv_bits)), key=lambda o: (-(o[0] + o[1]), -o[0]))
    for w, kv in options:
        change = {k: v for k, v in (("weight_bits", w), ("kv_bits", kv)) if getattr(point, k) != v}
        if hint := _fits(evaluator, point, change):
            return [hint]
    return []


def _more_devices(evaluator, point: DesignPoint) -> list[Hint]:
    """The fewest tensor-parallel devices (up to HINT_TP's largest) that hold the point."""
    config = evaluator.config(point.model)
    for tp in (t for t in HINT_TP if t > point.tp):
        try:
            check_tensor_parallel(config, tp)
        except ValueError:
            continue
        if hint := _fits(evaluator, point, {"tp": tp}):
            return [hint]
    return []


def _bigger_devices(evaluator, point: DesignPoint) -> list[Hint]:
    """Presets of the point's device kind with more memory that hold the point (as shipped: without the
    point's overrides), the smallest first."""
    own = evaluator.point_device(replace(point, tp=1, pp=1))
    kind = read_device_yaml(point.device)[0].get("kind")
    needed = evaluator.evaluate(point).metrics["peak_memory_B"] / (point.tp * point.pp)
    bigger = sorted((evaluator.device(name).memory_bytes, name) for name in preset_names(kind) if name != point.device)
    hints: list[Hint] = []
    for capacity, name in bigger:
        if capacity <= own.memory_bytes or capacity < needed:  # the point's own footprint cannot fit there
            continue
        if hint := _fits(evaluator, point, {"device": name, "overrides": ()}):
            hints.append(hint)
        if len(hints) == HINT_DEVICES:
            break
    return hints


def infeasible_hints(evaluator, point: DesignPoint) -> list[Hint]:
    """Changes that make a static-batch point that does not fit fit: fewer weight or KV bits, more tensor-parallel
    devices, a device of the same kind with more memory; each evaluated. None for a serving point (checking
    one runs its requests)."""
    if point.serving is not None:
        return []
    return [*_fewer_bits(evaluator, point), *_more_devices(evaluator, point), *_bigger_devices(evaluator, point)]


@functools.lru_cache(maxsize=256)
def system_nodes(device: str, link: str, tp: int, pp: int, link_overrides: tuple = ()) -> int:
    """How many nodes a point's tp x pp devices span over its link (empty or 'default': the device's own), with the
    link's what-ifs (hw_models/nodes.py): 1 where they fit one domain of it, so the node link changes nothing."""
    name = link if link not in ("", "default") else default_link(load_device(device).name)
    return nodes_of(tp, pp, load_link(name, dict(link_overrides)))
