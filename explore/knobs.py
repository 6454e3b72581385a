"""The knobs registry: every input of a design point that a sweep may set and a results table shows, with its
type, unit, allowed values, help and where it applies. The one list that sweep validation (the workload: and
format: sections are built from it: explore/schema.py section_model), derived-knob targets, results columns,
the `explore run` flags, report labels, sensitivity and the README's knob table read.

Adding a knob: one `register(Knob(...))` with section "workload" or "format" (where a sweep sets it), plus its
use in the cost model (below); tests/explore/test_registries.py does it with NumericFormat.group_size.

How a knob's value reaches the cost model. A knob that is a typed field of DesignPoint (model ... link) is
read there as before. Any other knob of the point or system scope is generic: a sweep (or `explore run`)
value different from its default is kept in DesignPoint.knobs, a sorted tuple of (name, value) pairs that
enters point_id only when it is not empty, so every point stored before the knob existed keeps its key.
Where the cost model reads it is the knob's `applies`:
- "format": a field of kernels.formats.NumericFormat (DesignPoint.numeric_format passes it on), so every
  device, table and cache keyed by the format sees it;
- "point": read by the evaluator with DesignPoint.knob(name) (its default when the point does not set it); what
  the evaluator memoizes from it must carry it in its key (blocks and task order already do: point.knobs).
Serving-scope knobs are ServingSpec fields (sim/serving_spec.py): the serving: section builds the spec and
ServingSpec.columns() fills their columns; the registry describes them.

A generic knob's results column is there only in sweeps that set it (`column="when set"`): a results folder
written before the knob existed keeps its column list and resumes. The knobs listed below always have theirs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from explore.registry import Registry
from kernels.formats import ALLOWED_BITS, ALLOWED_SPARSITY, DENSE, parse_sparsity
from sim.schedulers import SCHEDULERS
from sim.serving_spec import ARRIVALS, PREEMPTIONS, ServingSpec

Section = Literal["top", "workload", "format", "parallel", "serving"]  # where a sweep file sets it
Scope = Literal["point", "system", "serving"]  # which sweeps have its column: all, with parallel:, with serving:
Applies = Literal["point", "format"]
REQUIRED = object()  # the default of a knob every point must name (model, device)


@dataclass(frozen=True, kw_only=True)
class Knob:
    name: str  # results column, sweep key (in its section) and `explore run --<name>` flag
    type: type  # int, float or str
    help: str  # one line: what it sets
    section: Section
    scope: Scope = "point"
    default: Any = REQUIRED
    allowed: tuple = ()  # the values it may take; empty: any value of its type (at least `minimum`)
    minimum: int | float | None = None
    maximum: int | float | None = None  # the largest value that still means something (say why at the entry)
    check: Callable[[Any], Any] | None = None  # raises ValueError for a value it refuses (allowed_text says why)
    allowed_text: str = ""  # what is allowed, in words, where `allowed` and `minimum` cannot say it
    unit: str = ""  # SI unit suffix where the value has one ('s'); '' for counts, bits and names
    label: str = ""  # words in figures (default: the name with spaces)
    derivable: bool = False  # a sweep's derived: section may compute it (a numeric knob of the point)
    flag: bool = True  # `explore run` has --<name> (point and system scope)
    applies: Applies = "point"  # where the cost model reads a generic knob (see the module docstring)
    column: Literal["always", "when set"] = "when set"

    @property
    def words(self) -> str:
        return self.label or self.name.replace("_", " ")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def flag_name(self) -> str:
        return f"--{self.name.replace('_', '-')}"

    def allowed_words(self) -> str:
        """What the knob takes, as error messages and the README say it."""
        if self.allowed_text:
            return self.allowed_text
        if self.allowed:
            return ", ".join(map(str, self.allowed))
        kind = {int: "an integer", float: "a number", str: "a name"}[self.type]
        if self.minimum is not None and self.maximum is not None:
            return f"{kind} from {self.minimum:,} to {self.maximum:,}"
        return f"{kind} >= {self.minimum:g}" if self.minimum is not None else kind

    def validate(self, value: Any) -> Any:
        """The value if the knob takes it, else ValueError('found X, allowed: Y')."""
        ok = isinstance(value, self.type) and not isinstance(value, bool) or (
            self.type is float and isinstance(value, int) and not isinstance(value, bool))
        if ok and self.type is float:
            ok = math.isfinite(value)
        if ok and self.allowed:
            ok = value in self.allowed
        if ok and self.minimum is not None:
            ok = value >= self.minimum
        if ok and self.maximum is not None:
            ok = value <= self.maximum
        if ok and self.check is not None:
            try:
                self.check(value)
            except ValueError:
                ok = False
        if not ok:
            raise ValueError(f"found {value!r}, allowed: {self.allowed_words()}")
        return value


KNOBS: Registry[Knob] = Registry("knob")


def register(knob: Knob) -> Knob:
    return KNOBS.register(knob)


def knob(name: str) -> Knob | None:
    return KNOBS.get(name)


def knobs(*, section: Section | None = None, scope: Scope | None = None) -> tuple[Knob, ...]:
    """The registered knobs of a sweep-file section and/or a scope, in registry order."""
    return KNOBS.view(("knobs", section, scope), lambda: tuple(
        k for k in KNOBS.entries() if section in (None, k.section) and scope in (None, k.scope)))


def input_columns(*, system: bool, serving: bool, set_knobs: Iterable[str] = ()) -> list[str]:
    """The input columns of a results table: the key, then every knob of the point scope, the system scope
    (with parallel:) and the serving scope (with serving:) that always has a column or that the sweep sets."""
    chosen = set(set_knobs)
    scopes = ("point",) + (("system",) if system else ()) + (("serving",) if serving else ())
    return ["point_id"] + [k.name for scope in scopes for k in knobs(scope=scope)
                           if k.column == "always" or k.name in chosen]


def _knob(name: str, type_: type, help_: str, section: Section, **kw: Any) -> None:
    register(Knob(name=name, type=type_, help=help_, section=section, column="always", **kw))


def _sparsity(pattern: str) -> str:
    parse_sparsity(pattern)
    return pattern


# ---- every sweep: the point's model, device, static workload, format and execution ---------------------------
_knob("model", str, "model preset name or path to a config.json", "top",
      allowed_text="a model preset (explore presets models) or a path to a config.json")
_knob("device", str, "device preset name or path to a device YAML", "top",
      allowed_text="a device preset (explore presets devices) or a path to a device YAML")
# A static batch of more than 2^20 sequences is 1,000x any serving engine's (vLLM caps max_num_seqs in the
# hundreds to a few thousand); beyond it tracing's shape arithmetic overflows (a batch of 10^20 crashed torch).
# Prompt and output are bounded by each model's context (max_position_embeddings).
MAX_BATCH = 2**20
for _name, _default, _help, _maximum in (("batch", 1, "sequences in the static batch", MAX_BATCH),
                                         ("prompt", 512, "prompt tokens per sequence", None),
                                         ("output", 128, "output tokens per sequence", None)):
    _knob(_name, int, _help, "workload", default=_default, minimum=1, maximum=_maximum, derivable=True)
for _name, _what in (("weight_bits", "weights"), ("act_bits", "activations"), ("kv_bits", "the KV cache")):
    _knob(_name, int, f"bits per value of {_what}", "format", default=16, allowed=ALLOWED_BITS[_name],
          derivable=True)
_knob("sparsity", str, "structured N:M weight sparsity, e.g. 2:4", "format", default=DENSE, check=_sparsity,
      allowed_text=ALLOWED_SPARSITY)
_knob("execution", str, "kernel launches: eager (PyTorch: framework dispatch and a host launch per aten op), graphs "
      "(the same kernels replayed from CUDA graphs) or engine (a serving engine's fused kernels, decode from CUDA "
      "graphs)", "top", default="eager", allowed=("eager", "graphs", "engine"))
# ---- decode-time techniques (generic knobs: a column only in sweeps that set them) -----------------------------
# StreamingLLM (Xiao et al., "Efficient Streaming Language Models with Attention Sinks", ICLR 2024): a sequence
# keeps the KV of its first tokens (attention sinks; the paper keeps 4) and of a recent window, and decode attends
# to those alone, so its reads and the cache it holds stop growing with the context. The prefill still attends to
# the whole prompt. Read by explore/evaluate.py (point_tables, batch_memory) like a model's own sliding window.
register(Knob(name="kv_budget", type=int, section="workload", default=0, minimum=0, unit="tokens",
              label="KV budget", help="KV-cache tokens a sequence keeps in decode (attention sinks + a recent window, "
              "StreamingLLM); 0 keeps all", allowed_text="0 (keep all) or a number of tokens >= 1", derivable=True))
# ---- systems of several devices (parallel:) -------------------------------------------------------------------
_knob("tp", int, "tensor-parallel devices: Megatron-style sharding, an all-reduce per block", "parallel",
      scope="system", default=1, minimum=1)
_knob("pp", int, "pipeline stages, each of tp devices holding its share of the layers; one batch in flight",
      "parallel", scope="system", default=1, minimum=1)
_knob("ep", int, "expert parallelism for MoE models: 1, or tp to spread the experts whole over the tensor-parallel "
      "devices instead of splitting each", "parallel", scope="system", default=1, minimum=1)
_knob("link", str, "the link between the tp devices: a link preset (explore presets links) or a YAML path; "
      "default: the device's own interconnect", "parallel", scope="system", default="",
      allowed_text="a link preset (explore presets links) or a path to a link YAML")
# ---- serving (serving:): ServingSpec fields, in ServingSpec.columns() order ----------------------------------
_SPEC = ServingSpec()
for _name, _type, _help, _kw in (
        ("scheduler", str, "how a replica batches requests, iteration by iteration", {"allowed": tuple(SCHEDULERS)}),
        ("arrival", str, "the arrival process", {"allowed": ARRIVALS}),
        ("rate_per_s", float, "requests arriving per second (the sweep's rate:)",
         {"label": "arrival rate", "unit": "requests/s", "allowed_text": "a number > 0"}),
        ("cv", float, "gamma arrivals: coefficient of variation of the gaps", {"allowed_text": "a number > 0"}),
        ("requests", int, "requests simulated", {"minimum": 1}),
        ("max_seqs", int, "sequences per iteration", {"minimum": 1}),
        ("max_batched_tokens", int, "tokens per iteration of a non-chunked scheduler", {"minimum": 1}),
        ("chunk_tokens", int, "chunked prefill's token budget per iteration", {"minimum": 1}),
        ("block_tokens", int, "tokens per KV block", {"minimum": 1}),
        ("prefix_tokens", int, "a system prompt every request shares (cached once)", {"minimum": 0}),
        ("preemption", str, "when KV blocks run out: recompute, or swap to host memory", {"allowed": PREEMPTIONS}),
        ("replicas", int, "replicas serving requests (the decode pool's, disaggregated)", {"minimum": 1}),
        ("prefill_replicas", int, "replicas of a separate prefill pool (0: none)", {"minimum": 0}),
        ("prefill_device", str, "the prefill pool's device (default: the point's)",
         {"allowed_text": "a device preset or a path to a device YAML"})):
    _knob(_name, _type, _help, "serving", scope="serving", default=getattr(_SPEC, _name), flag=False, **_kw)
