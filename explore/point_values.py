"""The values of a design point, checked as one: for `explore run` (naming its flags) and for a point built in Python
(naming its fields).

A sweep file's reader refuses a bad value before a DesignPoint exists, naming its key and line. `explore run` builds
its point from its flags and a notebook builds one directly (DesignPoint(...) into Evaluator.evaluate): both are
checked here, with the same registry (explore/knobs.py) and the same model and format checks, in one InputError line
instead of a torch error from deep in a trace, or a number for a point no model can run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import fields

from explore.design_point import DesignPoint
from explore.format_checks import check_format, format_knob_names
from explore.knobs import KNOBS, knobs, off_words
from explore.pool_what_ifs import POOL_WHAT_IFS
from explore.serving_settings import renamed
from hw_models.device import EXECUTION_MODES
from kernels.data_parallel import check_data_parallel_attention
from kernels.formats import IDLE_WHERE
from kernels.kv_eviction import STREAMING
from kernels.kv_policy import budget_error
from kernels.parallel import (
    check_decode_context_parallel,
    check_expert_parallel,
    check_pipeline_parallel,
    check_tensor_parallel,
)
from workloads.errors import InputError
from workloads.model_config import ModelConfig, check_context

# DesignPoint fields that are registered knobs, checked by the registry; a serving point's batch, prompt and output
# are its scheduler's and its requests' (ServingSpec checks them), not a static batch's.
STATIC_FIELDS = ("batch", "prompt", "output")
POINT_FIELDS = ("weight_bits", "act_bits", "kv_bits", "sparsity", "tp", "pp", "ep")
_FIELDS = frozenset(f.name for f in fields(DesignPoint))


def field_name(name: str) -> str:
    """How a point built in Python names a value: its DesignPoint field or generic knob."""
    return name


def check_point_values(point: DesignPoint, config: ModelConfig, name: Callable[[str], str] = field_name,
                       context: bool = True) -> None:
    """InputError ('<name>: found X, allowed: Y') for the first value of `point` no evaluation can run, each named by
    `name` (a field, or `explore run`'s flag): overrides or knobs not given as (name, value) pairs, a knob's value
    outside the registry's, an unknown generic knob, a static batch longer than the model's context, a kv_budget above
    what a sequence caches, a parallel layout the model cannot be split into, a numeric format no kernel runs.
    `context`: whether a static batch must fit in the model's context (a priced measurement need not)."""
    static = point.serving is None
    for pairs_name in ("overrides", "link_overrides", *(pool.field for pool in POOL_WHAT_IFS), "knobs"):
        pairs = getattr(point, pairs_name)
        if not (isinstance(pairs, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in pairs)):
            shown = f"a {type(pairs).__name__}" if not isinstance(pairs, tuple) else repr(pairs)
            raise InputError(f"{pairs_name}: found {shown}, allowed: a tuple of (name, value) pairs, e.g. "
                             f"(('memory.bandwidth_GBps', 5025.0),) or tuple(mapping.items())")
    for pool in POOL_WHAT_IFS:
        if getattr(point, pool.field) and not pool.present(point.serving):
            raise InputError(f"{pool.field}: found {dict(getattr(point, pool.field))} without the {pool.pool}, "
                             f"allowed: with {pool.needs} (fields of those devices alone)")
    for knob in (STATIC_FIELDS if static else ()) + POINT_FIELDS:
        _check_knob(knob, getattr(point, knob), name)
    if point.execution not in EXECUTION_MODES:  # 'device' too: kernel time alone, as a profiler sums it
        raise InputError(f"{name('execution')}: found {point.execution!r}, allowed: {', '.join(EXECUTION_MODES)}")
    for knob, value in point.knobs:
        registered = KNOBS.get(knob)
        if registered is None or registered.scope == "serving" or knob in _FIELDS:
            raise InputError(f"knobs: found {knob!r}, allowed: a generic knob of explore/knobs.py (the knobs table "
                             f"of the README), each a DesignPoint field's name only where it has no field")
        _check_knob(knob, value, name)
    if static and context:
        check_context(config, point.prompt, point.output, where=f"{name('prompt')}, {name('output')}")
    limit = ((point.prompt + point.output, f"{name('prompt')} + {name('output')} ({point.prompt:,} + "
                                           f"{point.output:,})") if static else
             (config.max_positions, f"{config.name}'s context (max_position_embeddings)"))
    reason = budget_error(point.knob("kv_budget"), *limit)
    if reason:
        raise InputError(f"{name('kv_budget')}: {reason}")
    if config.is_mla:
        _check_latent_attention(point, config, name)
    method, kept = point.knob("kv_budget_method"), point.knob("prefill_kept")
    if kept != 1.0 and point.knob("kv_budget") and method != STREAMING:
        raise InputError(f"{name('prefill_kept')}: found {kept:g} with {name('kv_budget_method')} {method!r}, "
                         f"allowed: 1 (dense), or {name('kv_budget_method')} {STREAMING!r} ({method}'s "
                         f"prefill runs unfused to write every pair's attention probability it scores tokens by, "
                         f"which a block-sparse prefill does not compute: kernels/kv_eviction.py)")
    # Data-parallel ranks attend whole (kernels/data_parallel.py): their tp splits no heads.
    sharded = (("tp", check_tensor_parallel),) if point.knob("attention_parallel") != "data" else ()
    for knob, check in (*sharded, ("pp", check_pipeline_parallel)):
        try:
            if getattr(point, knob) != 1:
                check(config, getattr(point, knob))
        except ValueError as err:
            raise InputError(f"{name(knob)}: {err}") from None
    try:
        check_expert_parallel(config, point.ep, point.tp)
    except ValueError as err:
        raise InputError(f"{name('ep')}: {err}") from None
    if point.knob("dcp") != 1:
        try:
            check_decode_context_parallel(config, point.tp, point.knob("dcp"))
        except ValueError as err:
            raise InputError(f"{name('dcp')}: {err}") from None
    if point.knob("attention_parallel") == "data":
        try:
            check_data_parallel_attention(config, point.tp, point.ep)
        except ValueError as err:
            raise InputError(f"{name('attention_parallel')}: {err}") from None
    typed = (point.weight_bits, point.act_bits, point.kv_bits, point.sparsity)
    parts = tuple((knob, value) for knob, value in point.knobs if KNOBS[knob].applies == "format")
    data_parallel = point.knob("attention_parallel") == "data"
    try:
        error = _format_reason(typed, parts, config, point.tp, point.ep, data_parallel)
    except TypeError:  # a value that cannot be a cache key (a list from YAML): checked as it is
        error = _format_reason.__wrapped__(typed, parts, config, point.tp, point.ep, data_parallel)
    if error:  # the format's parts it names ('attn_weight_bits: found 4 with weight_bits 8'), each by `name`
        raise InputError(renamed(error, name, KNOBS) or error)


# Knobs that keep, select or score each KV head's keys and values (kernels/kv_policy.py, kv_eviction.py,
# token_select.py, block_sparse.py); each does nothing at its default.
PER_HEAD_KV_KNOBS = ("kv_budget", "topk_fraction", "retrieval_heads", "prefill_kept")


def _check_latent_attention(point: DesignPoint, config: ModelConfig, name: Callable[[str], str]) -> None:
    """MLA caches one latent a token that every query head reads (kernels/parallel.py, workloads/decoder.py): what
    keeps, selects or scores keys per KV head, sends every head's keys to attention devices apart or reads a shared
    prefix in a kernel of its own (cascade attention), is not modeled over it."""
    for knob in PER_HEAD_KV_KNOBS:
        off = KNOBS[knob].default
        if point.knob(knob) != off:
            raise InputError(f"{name(knob)}: found {point.knob(knob)!r} with {config.name}, allowed: {off!r} (its "
                             f"multi-head latent attention caches one latent a token that every head reads; a "
                             f"per-head KV policy over it is not modeled)")
    if point.serving is not None and point.serving.attends_apart:
        raise InputError(f"attention_device: found {point.serving.attention_device!r} with {config.name}, allowed: "
                         f"none (attention on devices apart from the model's is not modeled for multi-head latent "
                         f"attention)")
    if point.serving is not None and point.serving.cascade:  # its prefix kernel is a prefill's: per-head keys
        raise InputError(f"prefix_attention: found 'cascade' with {config.name}, allowed: paged (cascade attention "
                         f"over the latent is not modeled)")


@functools.lru_cache(maxsize=4096)
def _format_reason(typed: tuple, parts: tuple, config: ModelConfig, tp: int, ep: int, data_parallel: bool) -> str:
    """check_format's error for a point's format on a model, tensor-parallel degree, expert spread and attention
    layout ('' where it runs), once per distinct combination: a sweep's points share a handful
    (explore/format_checks.py: part combinations, group sizes)."""
    values = {knob: KNOBS[knob].default for knob in format_knob_names()}
    values.update(zip(("weight_bits", "act_bits", "kv_bits", "sparsity"), typed, strict=True))
    values.update(parts)
    try:
        check_format(values, config, tp, ep, data_parallel)
    except ValueError as err:
        return str(err)
    return ""


def check_idle_knobs(point: DesignPoint, name: Callable[[str], str] = field_name) -> None:
    """InputError for a knob set where every knob that turns it on (Knob.only_with) is off, or beside a model without
    what it reads (Knob.only_for), so it changes nothing: a drafting knob without a draft, act_predictor at act_kept 1,
    a link on one device (tp and pp 1), moe_routing on a dense model. `explore run` refuses such a flag; a sweep's grid
    may cross a knob with its switches or models (such a point is the design without it), so a sweep notes a crossing
    (explore/sweep_notes.py crossed_switch_note)."""
    for knob in knobs():
        value, switches = point.knob(knob.name), knob.switches
        if value != knob.default and not point.reads(knob):
            shown = repr(value) if isinstance(value, str) else f"{value:g}"
            if knob.only_for is not None and not knob.only_for.of(point.model):
                words = knob.only_for.words
                raise InputError(f"{name(knob.name)}: found {shown} with {name('model')} {point.model}, which has no "
                                 f"{words}, allowed: with a model that has {words}, or left out")
            raise InputError(f"{name(knob.name)}: found {shown} {off_words(switches, name)}, allowed: with "
                             f"{' or '.join(name(s.name) for s in switches)} set, or left out")
    check_idle_format(point, name)


def check_idle_format(point: DesignPoint, name: Callable[[str], str] = field_name) -> None:
    """InputError for a format part set to a value its format does not read (NumericFormat.canonical: a group size
    beside 16-bit weights and KV cache, a bit override equal to weight_bits), which changes nothing; the sweep
    counterpart is explore/sweep_notes.py idle_format_note."""
    canonical = point.numeric_format.canonical
    for field in IDLE_WHERE:
        value = point.knob(field)
        if value != getattr(canonical, field):
            shown = repr(value) if isinstance(value, str) else f"{value:g}"
            raise InputError(f"{name(field)}: found {shown}, which changes nothing {IDLE_WHERE[field]}; allowed: "
                             f"with a format that reads it, or left out")


def _check_knob(knob: str, value, name: Callable[[str], str]) -> None:
    try:
        KNOBS[knob].validate(value)
    except ValueError as err:
        raise InputError(f"{name(knob)}: {err}") from None
