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

import functools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from explore.quality import ANY_METHOD, methods
from explore.registry import Registry
from hw_models.link import STORAGE_TIER, load_link
from kernels.data_parallel import ATTENTION_PARALLELISMS
from kernels.formats import (
    ACT_TYPES,
    ALLOWED_BITS,
    ALLOWED_SPARSITY,
    DENSE,
    ENGINE_MOE_KERNEL,
    GRANULARITIES,
    GROUP_SIZES,
    MAX_OUTLIER_FRACTION,
    MOE_KERNELS,
    OVERRIDE_BITS,
    SCALE_BITS,
    SCALE_GROUP_SIZES,
    SPQR_GROUP_SIZES,
    WEIGHT_CODINGS,
    WEIGHT_TYPES,
    NumericFormat,
    parse_sparsity,
)
from kernels.kv_eviction import METHODS as KV_BUDGET_METHODS
from kernels.kv_eviction import STREAMING
from kernels.parallel import ALLREDUCE_IMPLEMENTATIONS
from kernels.sparsity import ACT_PREDICTORS
from kernels.token_prune import PAPER_PRUNE_START
from kernels.token_select import METHODS as TOPK_METHODS
from kernels.token_select import QUEST
from sim.attention_pool import PLACEMENTS
from sim.autoscalers import AUTOSCALERS, LOAD_PREDICTORS
from sim.autoscalers import METRICS as AUTOSCALE_METRICS
from sim.costs import OVERLAPS
from sim.cuda_graphs import LARGEST_CAPTURE
from sim.lora import LORA_RANKS
from sim.offload import OFFLOADS
from sim.routers import DECODE_PICKS, ROUTERS
from sim.schedulers import QUEUE_POLICIES, SCHEDULERS
from sim.serving_spec import ARRIVALS, BUSY_ACTIONS, PREEMPTIONS, PREFIX_ATTENTIONS, ServingSpec
from sim.speculative import names_draft_model
from workloads.errors import InputError
from workloads.model_config import BALANCED, EXPERT_LOADS, ModelConfig, load_model_config

Section = Literal["top", "workload", "format", "parallel", "serving"]  # where a sweep file sets it
Scope = Literal["point", "system", "serving"]  # which sweeps have its column: all, with parallel:, with serving:
Applies = Literal["point", "format"]
REQUIRED = object()  # the default of a knob every point must name (model, device)
_FORMAT = NumericFormat()  # the default of every format part


def off_words(switches: Iterable[Knob], name: Callable[[str], str]) -> str:
    """How a message says that `switches` (the knobs that turn another on, Knob.only_with) are all off: 'without
    --spec-draft', 'with --act-kept at 1 (off)', 'with --tp and --pp at 1 (off)'; `name` names a knob as the message's
    reader knows it."""
    switches = tuple(switches)
    words = [f"without {name(s.name)}" for s in switches if s.default == ""]
    at = [s for s in switches if s.default != ""]
    if at and len({off_value(s) for s in at}) == 1:
        words.append(f"with {' and '.join(name(s.name) for s in at)} at {off_value(at[0])} (off)")
    else:
        words += [f"with {name(s.name)} at {off_value(s)} (off)" for s in at]
    return " and ".join(words)


def off_where(switches: Iterable[Knob]) -> str:
    """Where `switches` are all off, as a sweep note says it: 'spec_draft is unset', 'tp and pp are 1'."""
    switches = tuple(switches)
    values = {off_value(s) for s in switches}
    if len(switches) > 1 and len(values) == 1:
        return f"{' and '.join(s.name for s in switches)} are {values.pop()}"
    return " and ".join(f"{s.name} is {off_value(s)}" for s in switches)


def off_value(switch: Knob) -> str:
    """A switch's default, the value at which it is off, as a message says it ('unset' for an empty word)."""
    if isinstance(switch.default, str):
        return switch.default or "unset"
    return f"{switch.default:g}"


def flag_name(name: str) -> str:
    """The `explore run` flag of a knob or DesignPoint field ('kv_budget' -> '--kv-budget')."""
    return f"--{name.replace('_', '-')}"


@dataclass(frozen=True)
class ModelPart:
    """What of a model a knob reads that not every model has (Knob.only_for): routed experts."""

    words: str  # what it is, as a message names it: 'routed experts'
    has: Callable[[ModelConfig], bool]

    def of(self, model: str | None) -> bool:
        """Whether `model` (a preset name or config path) has it; a model that does not load, or none, counts as having
        it, so that the model's own check refuses it with its own message."""
        return model is None or _model_has(self, model)


@functools.lru_cache(maxsize=256)
def _model_has(part: ModelPart, model: str) -> bool:
    """ModelPart.of, each model's config read once (a grid's points read the same few models)."""
    try:
        return part.has(load_model_config(model))
    except InputError:
        return True


ROUTED_EXPERTS = ModelPart("routed experts", lambda config: config.is_moe)


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
    # Returns the value the knob stores (one spelling of it: 'unstructured:.50' -> 'unstructured:0.5'); raises
    # ValueError for a value it refuses (allowed_text says why).
    check: Callable[[Any], Any] | None = None
    allowed_text: str = ""  # what is allowed, in words, where `allowed` and `minimum` cannot say it
    unit: str = ""  # SI unit suffix where the value has one ('s'); '' for counts, bits and names
    label: str = ""  # words in figures (default: the name with spaces)
    derivable: bool = False  # a sweep's derived: section may compute it (a knob of the point: a number, or text)
    flag: bool = True  # `explore run` has --<name> (point and system scope)
    applies: Applies = "point"  # where the cost model reads a generic knob (see the module docstring)
    column: Literal["always", "when set"] = "when set"
    # The knobs that turn this one on (switches): any one of them at other than its default turns it on; with all of
    # them at their defaults (off) this one changes nothing, and labels omit it. Empty: always on.
    only_with: tuple[str, ...] = ()
    # What of the point's model it reads, where not every model has it: a point whose model lacks it reads the knob no
    # more than one whose switches are off (moe_routing beside a model without routed experts). None: every model.
    only_for: ModelPart | None = None

    @property
    def switches(self) -> tuple[Knob, ...]:
        """The registered knobs that turn this one on (Knob.only_with)."""
        return tuple(KNOBS[name] for name in self.only_with)

    def read_where(self, switch: Callable[[Knob], Any], model: str | None) -> bool:
        """Whether a point reads the knob: it has no switches or one of them is on (`switch`: the point's value of
        one), and its `model` has what the knob reads (only_for)."""
        return ((not self.switches or any(switch(s) != s.default for s in self.switches))
                and (self.only_for is None or self.only_for.of(model)))

    @property
    def words(self) -> str:
        return self.label or self.name.replace("_", " ")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def flag_name(self) -> str:
        return flag_name(self.name)

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
        """The value if the knob takes it (as its check spells it), else ValueError('found X, allowed: Y')."""
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
        reason = ""
        if ok and self.check is not None:
            try:
                value = self.check(value)
            except InputError as err:
                if isinstance(value, str) and Path(value).exists():  # a file named that does not load: its own error
                    raise ValueError(f"found {value!r}, a file that does not load: {err}") from None
                ok = False
            except RefusedValueError as err:
                ok, reason = False, f", {err}"
            except ValueError:
                ok = False
        if not ok:
            raise ValueError(f"found {value!r}{reason}, allowed: {self.allowed_words()}")
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
    """The pattern's one spelling ('unstructured:.50' -> 'unstructured:0.5'), so that equal patterns are one point."""
    return parse_sparsity(pattern).pattern


def _host_link(name: str) -> str:
    """A link: empty (the device preset's own) or a link preset or YAML that loads."""
    if name:
        load_link(name)
    return name


def _device_link(name: str) -> str:
    """A link between devices: empty (the device preset's own) or a link preset or YAML that loads and joins devices
    (not a storage tier)."""
    if name and not load_link(name).joins_devices:
        raise RefusedValueError(STORAGE_TIER)
    return name


def _unit_fraction(value: float) -> float:
    """A share that must leave something: in (0, 1]."""
    if not 0.0 < value <= 1.0:
        raise ValueError(f"found {value!r}, allowed: a fraction in (0, 1]")
    return value


def _leading_fraction(value: float) -> float:
    """A share of the layers that must leave some after it: in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"found {value!r}, allowed: a fraction in [0, 1)")
    return value


class RefusedValueError(ValueError):
    """A knob's check refusing a value, saying what it is not ('no model preset (did you mean ...?)')."""


def _draft(name: str) -> str:
    """A speculative draft: off, Medusa heads, the target's MTP module, or a model that loads (its size is checked
    against the target's where both are known: sim/speculative.py draft_error; an MTP module's presence, mtp_error)."""
    if names_draft_model(name):
        try:
            load_model_config(name)
        except InputError as err:
            if Path(name).exists():
                raise
            hint = re.search(r"\(did you mean '[^']+'\?\)", str(err))
            hinted = f" {hint[0]}" if hint else ""
            raise RefusedValueError(f"which is no model preset{hinted} nor a config.json") from None
    return name


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
_knob("sparsity", str, "weight sparsity: N:M (e.g. 2:4), unstructured:S (Flash-LLM: stored compressed, computed "
      "dense) or blockB:S (zero B x B tiles skipped), S the share of zero weights; a device that does not exploit "
      "the pattern runs it dense (kernels/sparsity.py)", "format", default=DENSE, check=_sparsity,
      allowed_text=ALLOWED_SPARSITY, derivable=True)
_knob("execution", str, "kernel launches: eager (PyTorch: framework dispatch and a host launch per aten op), graphs "
      "(the same kernels replayed from CUDA graphs) or engine (a serving engine's fused kernels as vLLM launches "
      f"them: a pass of up to the largest captured size ({LARGEST_CAPTURE} tokens, less under a small max_seqs or "
      "token budget) from CUDA graphs at a captured size, a decode's full, another's piecewise around its attention; a "
      "larger one from the host)", "top", default="eager",
      allowed=("eager", "graphs", "engine"))
# ---- numeric format parts beyond the bit widths (kernels/formats.py NumericFormat; generic: a column only in
# sweeps that set them). Defaults give the integer formats with fp16 scales per 128 values of GPTQ/AWQ. MXFP4 is
# {weight_type: fp4_e2m1, act_type: fp4_e2m1, weight_bits: 4, act_bits: 4, scale_type: e8m0, group_size: 32},
# NVFP4 the same with scale_type e4m3 and group_size 16, DeepSeek-V3's block fp8 {weight_type: fp8_e4m3, act_type:
# fp8_e4m3, weight_bits: 8, act_bits: 8, scale_type: fp32, scale_granularity: block} (README "Numeric formats").
for _name, _help, _allowed in (
        ("weight_type", "element type of quantized weights: int, fp8_e4m3, fp8_e5m2, fp4_e2m1, nf4, lut "
         "(a non-uniform codebook, SqueezeLLM) or ternary (BitNet b1.58, stored in 2 bits)", tuple(WEIGHT_TYPES)),
        ("act_type", "element type of quantized activations: int, fp8_e4m3, fp8_e5m2 or fp4_e2m1", tuple(ACT_TYPES)),
        ("scale_type", "how each group of quantized weights stores its scale (and the activations' groups where both "
         "are floats, which move their scales: MX formats, NVFP4, block fp8): fp16, fp32 (DeepSeek-V3's block fp8), "
         "e8m0 (MX formats), e4m3 (NVFP4), two_level (QServe: 8-bit group scales and zeros under fp16 channel "
         "scales; integer weights) or spqr3 (SpQR: 3-bit group scales and zeros under fp16 statistics per "
         "scale_group_size groups; weight-only integers)",
         tuple(SCALE_BITS)),
        ("scale_granularity", "what shares one weight scale: a group of group_size values along k, a block of "
         "group_size x group_size weights (fp8 weights; the activations keep groups of group_size along k: "
         "DeepSeek-V3's 128 x 128 blocks), an output channel or the whole tensor", GRANULARITIES)):
    register(Knob(name=_name, type=str, help=_help, section="format", default=getattr(_FORMAT, _name),
                  allowed=_allowed, applies="format", derivable=True))
register(Knob(name="group_size", type=int, section="format", default=_FORMAT.group_size,
              allowed=tuple(sorted((*SPQR_GROUP_SIZES, *GROUP_SIZES))), applies="format",
              help="quantized values sharing one scale (along a GEMM's k dimension; under scale_granularity block "
              "the side of a weight block); must divide every k of the model that it is smaller than; 8 only with "
              "scale_type spqr3"))
# SpQR's second-level groups (kernels/formats.py NumericFormat.scale_group_size, the paper's beta2; ignored under other
# scale types).
register(Knob(name="scale_group_size", type=int, section="format", default=_FORMAT.scale_group_size,
              allowed=SCALE_GROUP_SIZES, applies="format", label="scale group size",
              help="with scale_type spqr3: groups whose 3-bit scales and zeros share one fp16 second-level "
              "statistic (SpQR's beta2: 16 near-lossless, 64 in its ~3.9-bit rows); ignored otherwise"))
# Mixed precision, outliers and entropy coding (kernels/formats.py NumericFormat; README "Numeric formats"). The
# override widths are weight widths above 2 bits (a module kept at fewer bits than weight_bits is weight_bits').
# edge_layers stops at 500, half of the most decoder layers a model config may have (workloads/model_config.py).
for _name, _help in (
        ("attn_weight_bits", "bits of the decoder layers' attention projections (0: weight_bits); more than "
         "weight_bits"),
        ("mlp_weight_bits", "bits of the decoder layers' MLP and expert weights (0: weight_bits; MoE routers keep 16 "
         "under every format); more than weight_bits"),
        ("edge_layer_bits", "bits of every weight of the first and last edge_layers decoder layers (0: as the rest; "
         "llama.cpp K-quant mixes keep them higher); more than weight_bits"),
        ("head_bits", "bits of the LM head and token embeddings, the weights outside the decoder layers (0: "
         "weight_bits; GPTQ, AWQ and most weight-only methods keep them at 16); more than weight_bits")):
    register(Knob(name=_name, type=int, section="format", default=0, allowed=OVERRIDE_BITS, applies="format",
                  help=_help, derivable=True))  # derived: keeps a mix apart from the weight widths it does not fit
register(Knob(name="edge_layers", type=int, section="format", default=_FORMAT.edge_layers, minimum=1, maximum=500,
              applies="format", only_with=("edge_layer_bits",),
              help="decoder layers at each end of the model that edge_layer_bits keeps (at most half the model's)"))
# Mixed precision by expert (kernels/formats.py NumericFormat.hot_experts: MC-MoE, Huang et al. 2025; Li et al. 2024;
# MxMoE): a share of each MoE layer's routed experts at hot_expert_bits, the rest at the experts' bits; a dense model
# is refused.
register(Knob(name="hot_experts", type=float, section="format", default=_FORMAT.hot_experts, minimum=0.0,
              maximum=1.0, applies="format", label="hot experts", derivable=True,
              help="share of each MoE layer's routed experts kept at hot_expert_bits (expert-level mixed precision: "
              "MC-MoE, frequency-based allocation); the rest keep the experts' bits; 0: off; MoE models only",
              allowed_text="a fraction from 0 to 1 (0: off)"))
register(Knob(name="hot_expert_bits", type=int, section="format", default=_FORMAT.hot_expert_bits,
              allowed=OVERRIDE_BITS, applies="format", label="hot expert bits", only_with=("hot_experts",),
              help="bits of the hot experts (hot_experts); more than the experts' (mlp_weight_bits, else weight_bits)"))
register(Knob(name="outlier_fraction", type=float, section="format", default=0.0, minimum=0.0,
              maximum=MAX_OUTLIER_FRACTION, applies="format", label="outlier fraction",
              help="fraction of quantized weights kept again in fp16 in a sparse CSR matrix (SpQR ~0.01, SqueezeLLM "
              "0.0005-0.0045), multiplied by a sparse kernel of its own (with scale_type spqr3 inside the quantized "
              "GEMM, as SpQR's fused kernel does)", allowed_text=f"a fraction from 0 to "
              f"{MAX_OUTLIER_FRACTION}"))
# The fused-MoE kernel of quantized experts (kernels/formats.py NumericFormat.moe_kernel, hw_models/gpu_moe.py).
register(Knob(name="moe_kernel", type=str, section="format", default=_FORMAT.moe_kernel,
              allowed=(ENGINE_MOE_KERNEL, *MOE_KERNELS), applies="format", label="MoE kernel",
              help="fused-MoE kernel of quantized experts: engine (vLLM's choice on the device: for MXFP4 weights "
              "FlashInfer's TensorRT-LLM MoE on Blackwell, OpenAI's Triton MoE on Hopper, Marlin's below; Marlin's "
              "for other weight-only formats), or marlin, oaitriton or trtllm (the last two MXFP4 weights only); a "
              "kernel with no MoE fit for the device is refused"))
register(Knob(name="weight_coding", type=str, section="format", default=_FORMAT.weight_coding, allowed=WEIGHT_CODINGS,
              applies="format", help="entropy coding of 16-bit weights: none, or dfloat11 (Huffman-coded bf16 at "
              "~11 bits, decompressed per transformer block and pass)"))
# Activation sparsity (kernels/sparsity.py): the share of the MLP's activations each decode token keeps (TEAL, R-Sparse,
# WINA: magnitude thresholding; Deja Vu: a low-rank predictor per layer, whose work is added); the MLP reads only the
# kept rows and columns of its weights on devices that exploit it (hw_models/sparsity_support.py).
register(Knob(name="act_kept", type=float, section="format", default=_FORMAT.act_kept, check=_unit_fraction,
              applies="format", label="kept MLP activations", derivable=True,
              help="share of the MLP's activations each decode token keeps (activation sparsity: TEAL, R-Sparse, "
              "WINA, Deja Vu); the MLP reads only their weight rows where the device exploits it; 1: dense",
              allowed_text="a fraction in (0, 1] (1: dense activations)"))
register(Knob(name="act_predictor", type=str, section="format", default=_FORMAT.act_predictor,
              allowed=ACT_PREDICTORS, applies="format", label="activation predictor", only_with=("act_kept",),
              help="how act_kept < 1 chooses the kept activations: none (magnitude thresholding: TEAL, R-Sparse, "
              "WINA) or deja_vu (a rank-1,000 predictor per layer, its work added)"))
# Unstructured KV-cache sparsity (kernels/kv_sparsity.py: Mustafar, Joo et al., NeurIPS 2025): each token's Key and
# Value vectors pruned by magnitude and stored in a bitmap layout, read compressed by decode attention, which does the
# dense math; the cache's memory, capacity, reads and writes all follow from NumericFormat.kv_scale.
register(Knob(name="kv_sparsity", type=float, section="format", default=_FORMAT.kv_sparsity, check=_leading_fraction,
              applies="format", label="KV sparsity", derivable=True,
              help="share of each token's Key and Value elements pruned by magnitude (Mustafar), the rest stored in "
              "a bitmap layout (64-element tiles: 64-bit bitmap, 32-bit offset, values at kv_bits) that decode "
              "attention reads compressed and computes dense; 0: dense",
              allowed_text="a fraction in [0, 1) (0: a dense cache)"))
# ---- decode-time techniques (generic knobs: a column only in sweeps that set them) -----------------------------
# StreamingLLM (Xiao et al., "Efficient Streaming Language Models with Attention Sinks", ICLR 2024): a sequence
# keeps the KV of its first tokens (attention sinks; the paper keeps 4) and of a recent window, and decode attends
# to those alone, so its reads and the cache it holds stop growing with the context. The prefill still attends to
# the whole prompt. Read by explore/evaluate.py (point_tables, batch_memory) like a model's own sliding window.
register(Knob(name="kv_budget", type=int, section="workload", default=0, minimum=0, unit="tokens",
              label="KV budget", help="KV-cache tokens a sequence keeps in decode (attention sinks + a recent window, "
              "StreamingLLM); 0 keeps all", allowed_text="0 (keep all) or a number of tokens >= 1", derivable=True))
# How kv_budget's tokens are chosen (kernels/kv_eviction.py): StreamingLLM's sinks + recent window (no scores), H2O
# (Zhang et al., NeurIPS 2023: heavy hitters by accumulated attention + recent tokens; attention runs unfused to
# expose the probabilities) or D2O (Wan et al., 2024: H2O's eviction plus merging each evicted token into its most
# similar kept key). Reads and the cache stay at the budget; the scores' traffic and work are added per step.
register(Knob(name="kv_budget_method", type=str, section="workload", default=STREAMING, allowed=KV_BUDGET_METHODS,
              label="KV budget method", only_with=("kv_budget",),
              help="how kv_budget's tokens are kept: streaming (attention sinks + recent window), h2o (heavy hitters "
              "by accumulated attention + recent tokens, unfused attention) or d2o (H2O plus merging evicted tokens "
              "into their most similar kept ones); ignored where kv_budget is 0"))
# DuoAttention (Xiao et al., ICLR 2025) and RazorAttention (Tang et al., 2024): a share of the KV heads (retrieval
# heads) keeps the whole cache, the others (streaming heads) keep kv_budget's sinks + window, or DuoAttention's 64
# sinks + 256 recent tokens where kv_budget is 0 (kernels/kv_policy.py); decode reads, the cache held and (as
# DuoAttention runs it) the prefill's streaming heads follow the mix. 0 leaves kv_budget to every head.
register(Knob(name="retrieval_heads", type=float, section="workload", default=0.0, minimum=0.0, maximum=1.0,
              label="retrieval heads", help="share of KV heads that keep the whole cache while the others keep "
              "the kv_budget window, or DuoAttention's 64 sinks + 256 recent tokens where kv_budget is 0 "
              "(DuoAttention/RazorAttention); 0: kv_budget applies to every head",
              allowed_text="a fraction from 0 to 1", derivable=True))
# Speculative decoding (Leviathan et al., ICML 2023; Medusa, Cai et al., ICML 2024): a draft proposes spec_tokens
# tokens, the target verifies them in one pass and keeps the accepted ones (sim/speculative.py).
register(Knob(name="spec_draft", type=str, section="workload", default="", label="draft",
              help="speculative decoding's draft: a smaller model preset or config.json on the same devices (sharded "
              "as the target), 'medusa' (spec_tokens extra decoding heads on the target) or 'mtp' (the target's "
              "multi-token-prediction module, DeepSeek-V3's, run spec_tokens times), 'ngram' (no model: vLLM's "
              "prompt lookup on the host, ngram_match of the steps finding drafts); empty: off", check=_draft,
              allowed_text="empty (off), 'medusa', 'mtp' (a model whose config has num_nextn_predict_layers), "
              "'ngram', or a model preset or config.json path smaller than the target in parameters active per token"))
# At most 32 drafted tokens: the chance that the last one is accepted, acceptance^32, is under 4% even at an
# acceptance of 0.9, so longer drafts only add cost (Medusa trains 5 heads; Leviathan et al. test up to 10 tokens).
register(Knob(name="spec_tokens", type=int, section="workload", default=5, minimum=1, maximum=32,
              label="drafted tokens", only_with=("spec_draft",),
              help="tokens the draft proposes per step (Medusa: its heads)", derivable=True))
# A Medusa tree's candidates (Medusa's Vicuna-7B tree, medusa_choices.mc_sim_7b_63, holds 63); 512 is 8x that.
register(Knob(name="spec_tree", type=int, section="workload", default=0, minimum=0, maximum=512,
              label="tree candidates", only_with=("spec_draft",),
              help="candidate tokens of a verification tree (Medusa); 0: a chain of spec_tokens tokens",
              allowed_text="0 (a chain) or a number of candidates from 1 to 512"))
register(Knob(name="acceptance", type=float, section="workload", default=0.0, minimum=0.0, maximum=1.0,
              label="acceptance rate", only_with=("spec_draft",),
              help="chance that each drafted token is accepted (Leviathan et al.'s alpha; 0: none are, speculation "
              "only costs)", allowed_text="a fraction from 0 to 1", derivable=True))
# vLLM's n-gram proposer drafts only where the request's last tokens recur in its prompt or output (sim/speculative.py
# NGRAM). No published share of steps with a match was found to default to: 1 is the upper bound, every step drafting.
register(Knob(name="ngram_match", type=float, section="workload", default=1.0, minimum=0.0, maximum=1.0,
              label="n-gram match share", only_with=("spec_draft",),
              help="share of a sequence's steps whose n-gram lookup finds drafts (spec_draft ngram); the others verify "
              "none and compute one token", allowed_text="a fraction from 0 to 1 (with spec_draft ngram)",
              derivable=True))
# Memory tiers (FlexGen, Sheng et al., ICML 2023, Section 4; DeepSpeed ZeRO-Inference): a static batch that does not fit
# in device memory keeps the excess in host memory (or flash) and streams it over the host link layer by layer,
# each layer's transfer overlapping the previous layer's compute (sim/offload.py). A point that fits offloads nothing.
register(Knob(name="offload", type=str, section="workload", default="none", allowed=OFFLOADS,
              help="what may live in host memory when the point does not fit in device memory: none, weights, kv "
              "(the KV cache), auto (weights first, then the KV cache) or experts (a mixture-of-experts model's "
              "routed experts alone, the device caching as many as fit); the least that must is offloaded"))
register(Knob(name="host_link", type=str, section="workload", default="", label="host link", check=_host_link,
              only_with=("offload", "lora_adapters"),
              help="the link offloaded bytes and LoRA adapters stream over: a link preset (pcie4-x16, pcie5-x16, "
              "nvme-pcie4-x4 ...) or a link YAML; empty: the device preset's host_link (its PCIe generation)",
              allowed_text="empty (the device's own host link), a link preset (explore presets links) or a path to "
              "a link YAML"))
register(Knob(name="offload_prefetch", type=int, section="workload", default=1, allowed=(0, 1),
              label="offload prefetch", only_with=("offload",),
              help="1: the next layer's transfer overlaps this layer's compute (a pass "
              "takes the longer of the two); 0: transfers and compute take turns (their sum)"))
# TPI-LLM's sliding window (Li et al., arXiv 2410.00531; sim/offload.py plan_window): the device holds a window of
# layers' weights and streams every layer's in each pass, whether or not the model would fit.
register(Knob(name="offload_window", type=int, section="workload", default=0, minimum=0, label="offload window",
              only_with=("offload",),
              help="a sliding window (TPI-LLM): the device holds this many layers' weights and every layer's weights "
              "stream over the host link each pass, fit or not (offload weights only); 0: no window, only what does "
              "not fit is offloaded", allowed_text="0 (no window) or a whole number of layers >= 1"))
# Dynamic top-k token selection (Quest, Tang et al., ICML 2024; Double Sparsity, Yang et al., 2024): each decode step
# scores every cached token from a compressed key summary and attends to the best topk_fraction of them; the cache
# stays whole (plus the summary). A share rather than a token count: both papers state sparsity as one (Double
# Sparsity's 1/16), and it is valid at every context a sweep sets (a budget of B tokens at context L is B / L).
# kernels/token_select.py prices the scoring, top-k and sparse attention; 1 selects nothing (no scoring either).
register(Knob(name="topk_fraction", type=float, section="workload", default=1.0, check=_unit_fraction,
              label="top-k token fraction", help="share of the cached tokens each decode step attends to after "
              "scoring them all from a key summary (Quest, Double Sparsity: topk_method); 1: every token, no "
              "selection", allowed_text="a fraction in (0, 1] (1: no selection)", derivable=True))
register(Knob(name="topk_method", type=str, section="workload", default=QUEST, allowed=TOPK_METHODS,
              label="top-k method", only_with=("topk_fraction",),
              help="how topk_fraction < 1 scores tokens: quest (per-page min/max keys, 16-token pages, first two "
              "layers dense), double_sparsity (a label cache of 1/8 of the head_dim key channels, 16 of 128) or "
              "tidal_decode (four dense layers, two of them choosing the tokens every other layer attends to; no key "
              "summary) or token_select (TokenSelect: every layer scores each token with its full key and soft-votes "
              "over the heads; no summary, the whole key cache read)"))
# TokenSelect's Selection Cache (Wu et al., arXiv 2411.02886): a decode step whose query resembles the last selecting
# one reuses its selection, skipping the scoring and top-k; the share of such steps is the user's
# (kernels/token_select.py).
register(Knob(name="topk_reuse", type=float, section="workload", default=0.0, check=_leading_fraction,
              label="top-k reuse", only_with=("topk_fraction",),
              help="share of decode steps that reuse the previous step's top-k selection instead of scoring the "
              "cache again (TokenSelect's Selection Cache hit rate), for any topk_method; 0: every step scores",
              allowed_text="a fraction in [0, 1) (0: every step scores)", derivable=True))
# Block-sparse prefill attention chosen by a low-bit estimate (SALE, Zhang et al., arXiv 2505.24179): the prefill's
# attention computes each query's 128-token local window plus this share of its other causal pairs, after a 4-bit
# Q.K estimate of every pair (its own kernels, priced at the device's int4 rate: kernels/block_sparse.py). SALE's
# per-head thresholds set the share and the paper publishes none: a what-if, not a fitted value. Decode unchanged.
register(Knob(name="prefill_kept", type=float, section="workload", default=1.0, check=_unit_fraction,
              label="kept prefill pairs", help="share of the prefill's causal attention pairs beyond each query's "
              "128-token local window that are computed, after a 4-bit Q.K estimate scores every pair (SALE-style "
              "block-sparse prefill; the estimate is priced at the device's int4 rate); decode unchanged; not with "
              "kv_budget_method h2o or d2o; 1: dense, no estimate", allowed_text="a fraction in (0, 1] (1: dense)",
              derivable=True))
# Early exit / layer skipping (SkipDecode, Del Corro et al., 2023): each decode token runs this share of the decoder
# layers (the upper ones; exits fall monotonically, so a later token never needs a layer's KV an earlier one
# skipped); the prefill runs every layer (kernels/early_exit.py).
register(Knob(name="exit_depth", type=float, section="workload", default=1.0, check=_unit_fraction,
              label="decode depth", help="share of the decoder layers each decode token runs (SkipDecode-style layer "
              "skipping; rounded to whole layers); the skipped layers do no work and hold no KV for it; 1: all",
              allowed_text="a fraction in (0, 1] (1: every layer)", derivable=True))
# Prompt-token pruning in the prefill (LazyLLM, Fu et al., arXiv 2407.14057, §3.2): the layers from prune_start of
# the depth on process only the prompt tokens the last token attends to most, prompt_kept of them on average (a
# progressive schedule at its mean share); the layers before run every token. prune_start's default is the paper's
# Llama 2 7B schedule (kernels/token_prune.py). Decode is priced on the whole prompt's KV: pruned tokens may be
# revived from LazyLLM's Aux Cache.
register(Knob(name="prompt_kept", type=float, section="workload", default=1.0, check=_unit_fraction,
              label="kept prompt tokens", help="share of the prompt tokens each prefill layer from prune_start on "
              "processes (LazyLLM-style dynamic token pruning; the mean of a progressive schedule); static batches "
              "only (serving: refuses it); 1: every token, no pruning",
              allowed_text="a fraction in (0, 1] (1: no pruning)", derivable=True))
register(Knob(name="prune_start", type=float, section="workload", default=PAPER_PRUNE_START,
              check=_leading_fraction, label="pruning start", only_with=("prompt_kept",),
              help="share of the decoder layers, from the first, that process every prompt token before pruning "
              "starts (rounded to whole layers; default: LazyLLM's Llama 2 7B schedule, 9 of 32 layers)",
              allowed_text="a fraction in [0, 1) (0: the first layer prunes)", derivable=True))
# How an MoE layer's tokens reach its experts (ModelConfig.moe_routing, kernels/moe.py): a model of the router, whose
# choices depend on the prompts; the traces, step templates and expert offloading all route by it.
register(Knob(name="moe_routing", type=str, section="workload", default=BALANCED, allowed=tuple(EXPERT_LOADS),
              label="MoE routing", help="how an MoE layer's tokens x top-k rows reach its E experts: balanced (spread "
              "over min(E, tokens x top-k) experts, the most weights a step can read; aiconfigurator's measured rows), "
              "uniform (each token's top-k picked independently and uniformly: E (1 - (1 - k/E)^tokens) experts "
              "in expectation, rounded) or power_law (aiconfigurator's default skew: expert loads drawn from a power "
              "law of exponent 1.01, the busiest expert-parallel device's experts and rows as its collector draws "
              "them, in expectation); a model without routed experts reads none", only_for=ROUTED_EXPERTS))
# The method behind a compressed format's published quality (explore/quality.py): the quality_delta metric reads
# the rows of this method in explore/data/quality.csv; "any" takes the best published figure of any method.
# It changes no price: the kernels of a format are the same whichever method chose its values.
register(Knob(name="quant_method", type=str, section="format", default=ANY_METHOD,
              allowed=(ANY_METHOD, *methods()), label="quantization method", derivable=True,
              help="the quantization or pruning method whose published quality quality_delta reports (any: the best "
              "published for the format)"))
# ---- systems of several devices (parallel:) -------------------------------------------------------------------
_knob("tp", int, "tensor-parallel devices: Megatron-style sharding, an all-reduce per block", "parallel",
      scope="system", default=1, minimum=1)
_knob("pp", int, "pipeline stages, each of tp devices holding its share of the layers; a static batch is one batch "
      "in flight, a serving replica one engine per stage with its own batches (vLLM's virtual engines)",
      "parallel", scope="system", default=1, minimum=1)
_knob("ep", int, "expert parallelism for MoE models: 1, or tp to spread the experts whole over the tensor-parallel "
      "devices instead of splitting each (a sweep's parallel.ep says split or spread, lists sweep)", "parallel",
      scope="system", default=1, minimum=1,
      allowed_text="1 or tp (explore run --ep); in a sweep split or spread, or a list of them")
# The link and the all-reduce join several devices: on one (tp and pp 1) they change nothing; pipeline stages pass
# activations over the link point to point, and only tensor parallelism all-reduces.
_knob("link", str, "the link between the tp devices: a link preset (explore presets links) or a YAML path; "
      "default: the device's own interconnect", "parallel", scope="system", default="", only_with=("tp", "pp"),
      allowed_text="a link preset (explore presets links) or a path to a link YAML")
# The link between nodes (hw_models/nodes.py): read where the tp x pp devices span more than one domain of the link
# (an NVSwitch board's eight: LinkSpec.domain_devices), and by a prefill pool's KV handover where kv_link is left out
# (ServingSpec.handoff_link: the KV crosses the fabric between the pools' nodes), and by a KV store fetched at its NIC
# rate (kv_store_GBps left out); a point whose pools each fit one node, and whose KV crosses no node link, is the point
# without it (explore/sweep_serving.py node_link_readers_of).
register(Knob(name="node_link", type=str, section="parallel", scope="system", default="", label="node link",
              check=_device_link, only_with=("tp", "pp", "prefill_replicas"),
              help="the link between nodes where the tp x pp devices span more than one domain of the link (nvlink4: "
              "an HGX board's 8 GPUs), a port per device, and the one a prefill pool hands KV over where kv_link is "
              "left out: a link preset (infiniband-ndr, infiniband-hdr, roce-400g ...) or a link YAML; empty: the "
              "device's (infiniband-hdr for A100s, infiniband-ndr otherwise); a point whose pools (a fleet's mixed "
              "replicas too) each fit one node, without a prefill pool or a KV store fetched at the NIC's rate, "
              "ignores it; a pool that names its own (prefill_node_link, mixed_node_link) takes that one instead",
              allowed_text="empty (the device's node link), a link preset that joins devices (explore presets links) "
              "or a path to a link YAML"))
# How the all-reduces of tensor parallelism run (kernels/parallel.py ALLREDUCE_IMPLEMENTATIONS; hw_models/link.py
# prices the first two, hw_models/nvls.py the third, hw_models/star.py the fourth): NCCL's collective, an engine's own
# P2P kernels, NVLink SHARP, or a master's gather and broadcast.
register(Knob(name="allreduce", type=str, section="parallel", scope="system", default="nccl",
              allowed=ALLREDUCE_IMPLEMENTATIONS, label="all-reduce", only_with=("tp",),
              help="how the tp devices all-reduce: nccl (NCCL's collective, fitted on measured calls where the link "
              "has them), custom (an engine's one-shot or two-shot kernels reading the peers' buffers over the "
              "link, up to 8 MiB, NCCL where faster or larger) or nvls (multimem loads and stores the NVSwitch "
              "reduces and multicasts: NVLink SHARP, on nvlink4 and nvlink5, NCCL where faster; NCCL elsewhere) or "
              "star (a master gathers every device's buffer and sends back the sum, 2 link hops instead of a ring's "
              "2 (tp-1): TPI-LLM's all-reduce between edge devices, datasheet model; refused on links whose "
              "collectives are fitted on measured calls)"))
# Compute-communication overlap inside an iteration (sim/costs.py OVERLAPS): priced in serving iterations only.
register(Knob(name="overlap", type=str, section="parallel", scope="system", default="none", allowed=OVERLAPS,
              only_with=("tp",),
              help="how a serving iteration on tp devices overlaps its communication with compute: none, token_split "
              "(TokenWeave: the tokens in two halves, one half's all-reduces beside the other's compute, where that "
              "is faster) or dual_batch (attention_parallel data beside spread experts: vLLM's dual-batch overlap, "
              "two micro-batches, one's all-to-alls beside the other's compute, where every rank's batch reaches "
              "vLLM's token thresholds; serving runs only)"))
# How an MoE model's attention and dense layers are split over the tp devices (kernels/data_parallel.py).
register(Knob(name="attention_parallel", type=str, section="parallel", scope="system", default="tensor",
              allowed=ATTENTION_PARALLELISMS, only_with=("tp",), label="attention parallelism",
              help="how an MoE model's attention and dense layers use the tp devices: tensor (Megatron sharding, "
              "all-reduces) or data (each device its own sequences whole; the experts spread over the devices, ep = "
              "tp, tokens dispatched and combined by two all-to-alls per MoE layer, or split over them, ep 1, tokens "
              "all-gathered and outputs reduce-scattered: SGLang's DP attention, vLLM's data parallel with expert "
              "parallel; serving runs only)"))
# Decode context parallelism (kernels/parallel.py context_parallel): vLLM's --decode-context-parallel-size, each
# sequence's KV tokens split over groups of the tp devices that would otherwise hold copies of its KV heads.
register(Knob(name="dcp", type=int, section="parallel", scope="system", default=1, minimum=1, only_with=("tp",),
              label="decode context parallelism",
              help="devices among the tp each sequence's KV cache is split over by token, where tp exceeds the KV "
              "heads (vLLM's decode context parallelism: a device holds 1/dcp of the tokens, a decode step gathers "
              "the group's query heads and merges the partial outputs by an all-gather of their log-sum-exps and a "
              "reduce-scatter); in serving: one pool, or the decode pool beside a prefill pool at dcp 1 (latent "
              "attention, dcp = tp), its KV blocks of block_tokens x dcp tokens as vLLM counts them; 1: none",
              allowed_text="1, or a divisor of the tp devices holding each KV head's copy (tp / KV heads; MLA: tp)"))
# A scheduler's limits a sweep's derived: section may compute (each engine's, so they may follow its layout).
DERIVABLE_LIMITS = ("max_seqs", "max_batched_tokens", "chunk_tokens")
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
        ("max_batched_tokens", int, "tokens per iteration of a non-chunked scheduler, under the continuous one at "
         "least max_seqs (vLLM refuses max_num_batched_tokens below max_num_seqs: such a point is not run)",
         {"minimum": 1}),
        ("chunk_tokens", int, "chunked prefill's token budget per iteration, at least max_seqs (vLLM refuses "
         "max_num_batched_tokens below max_num_seqs: such a point is not run)", {"minimum": 1}),
        ("block_tokens", int, "tokens per KV block", {"minimum": 1}),
        ("prefix_tokens", int, "a system prompt every request (every conversation) starts with, cached once",
         {"minimum": 0}),
        ("preemption", str, "when KV blocks run out: recompute, or swap to host memory", {"allowed": PREEMPTIONS}),
        ("replicas", int, "replicas serving requests (the decode pool's, disaggregated); 0 with max_replicas: a pool "
         "that scales to and from zero, as KEDA scales one beside the HPA", {"minimum": 0}),
        ("prefill_replicas", int, "replicas of a separate prefill pool (0: none)", {"minimum": 0}),
        ("prefill_device", str, "the prefill pool's device (default: the point's)",
         {"allowed_text": "a device preset or a path to a device YAML"})):
    _knob(_name, _type, _help, "serving", scope="serving", default=getattr(_SPEC, _name), flag=False,
          derivable=_name in DERIVABLE_LIMITS, **_kw)
# A column only in serving sweeps that set it: folders of serving sweeps written before it resume.
register(Knob(name="prompt_batch_tokens", type=int, section="serving", scope="serving", default=None, flag=False,
              minimum=1, help="prompt tokens prefilled together in one iteration; a longer prompt runs alone "
                              "(Splitwise batches prompts up to 2,048); unset: up to max_batched_tokens"))
register(Knob(name="long_prefill_tokens", type=int, section="serving", scope="serving", default=0, flag=False,
              minimum=0, help="chunked only: the most prompt tokens one request computes an iteration, so a long "
              "prompt takes several iterations however much of chunk_tokens is left, the rest going to the next prompt "
              "(vLLM v1's long_prefill_token_threshold); 0: no cap, vLLM's default"))
register(Knob(name="router", type=str, section="serving", scope="serving", default=None, flag=False,
              allowed=tuple(ROUTERS), help="how a pool picks the replica each request (arrival or prefill hand-over) "
              "joins: least_requests (fewest held), least_tokens (fewest pending tokens, Splitwise's JSQ), "
              "least_kv_usage (the smallest share of its KV cache in use, llm-d's kv-cache-utilization scorer), "
              "round_robin, cache_aware (the replica caching most of its prefix while the load is balanced, "
              "SGLang model gateway's policy), predicted_latency (the SLO headroom of the TTFT and TPOT each replica's "
              "own costs predict, weighted towards the least: llm-d's predicted-latency scheduling) or "
              "predicted_latency_most (towards the most headroom, which spreads requests to the faster devices of a "
              "fleet); unset: least_requests; read where a pool or a fleet has replicas or a replica pipeline stages "
              "or data-parallel ranks to pick among"))
register(Knob(name="decode_pick", type=str, section="serving", scope="serving", default=None, flag=False,
              allowed=DECODE_PICKS, help="disaggregated: when the decode pool's router picks a request's decode "
              "replica: prefill_done (once its prefill is done, as vLLM's proxies and NVIDIA Dynamo pick) or arrival "
              "(as it joins its prefill replica, as llm-d's scheduler picks both pods, from what the decode replicas "
              "report then: a request still prefilling counts on none); unset: prefill_done; read with a prefill pool"))
register(Knob(name="prefix_attention", type=str, section="serving", scope="serving", default=None, flag=False,
              allowed=PREFIX_ATTENTIONS,
              help="how decode attention reads the prefix_tokens the requests of a group share: paged (each sequence "
              "its copy of the shared blocks, vLLM's paged attention) or cascade (each group's prefix once for its "
              "sequences, then each its own tokens: FlashInfer's cascade inference, Hydragen); unset: paged"))
register(Knob(name="prefix_groups", type=int, section="serving", scope="serving", default=None, flag=False,
              minimum=1, help="distinct prefixes of prefix_tokens tokens the requests start with, each request's drawn "
              "evenly (a system prompt per task, a shared document): each group's prefix is cached while memory "
              "allows, the least recently used evicted first (vLLM's automatic prefix caching); beside "
              "conversation_turns, the system prompts each conversation draws one of; unset: 1, one prefix every "
              "request shares"))
register(Knob(name="queue_policy", type=str, section="serving", scope="serving", default=None, flag=False,
              allowed=QUEUE_POLICIES, help="the order waiting requests are admitted in: fcfs (arrival order), lpm "
              "(the longest cached prefix first: SGLang's longest-prefix-match policy, which keeps a prefix "
              "group's requests together as BatchLLM's groups do; as SGLang's, arrival order past 128 waiting, and a "
              "request sharing an uncached prefix with an earlier waiting one waits behind the rest) or priority (the "
              "most urgent first, and the least urgent preempted first: vLLM's priority scheduling); unset: fcfs"))
register(Knob(name="priority_fraction", type=float, section="serving", scope="serving", default=None, flag=False,
              minimum=0, maximum=1, allowed_text="a fraction in [0, 1]",
              help="the share of requests drawn urgent (priority 0, the others 1; a conversation's turns alike), "
              "which queue_policy priority serves first; the results add the urgent requests' TTFT and TPOT "
              "percentiles and SLO attainment; unset: every request alike (or a trace's priority column)"))
register(Knob(name="mixed_device", type=str, section="serving", scope="serving", default=None, flag=False,
              allowed_text="a device preset or a path to a device YAML",
              help="the device of the mixed_replicas (a preset or YAML, without the point's what-ifs)"))
register(Knob(name="mixed_replicas", type=int, section="serving", scope="serving", default=None, flag=False,
              minimum=0, help="replicas of mixed_device beside the point's, serving requests whole (or decoding beside "
              "a prefill pool), one router over them all (a fleet of mixed GPU types, Melange); unset: the point's "
              "replicas alone"))
# Autoscaling (sim/autoscalers/); derivable: a sweep may tie a target to the limits (max_seqs / 4).
register(Knob(name="max_replicas", type=int, section="serving", scope="serving", default=None, flag=False,
              derivable=True, minimum=1,
              help="the most replicas an autoscaled pool scales up to from its replicas, as the autoscaler decides "
              "(by default Kubernetes' Horizontal Pod Autoscaler on a server metric: autoscale_metric near "
              "autoscale_target per replica, every 15 s; scale-down after 300 s); the results add mean_replicas, "
              "and its price and idle energy are the replica-hours held; unset: the replicas throughout"))
register(Knob(name="autoscale_target", type=float, section="serving", scope="serving", default=None, flag=False,
              derivable=True, allowed_text="requests per replica > 0",
              help="the autoscale_metric's target per replica (with max_replicas): the pool wants ceil(its sum / "
              "target) replicas"))
register(Knob(name="autoscale_metric", type=str, section="serving", scope="serving", default=None, flag=False,
              allowed=AUTOSCALE_METRICS, help="the server metric an autoscaled pool scales on: waiting (queue size, "
              "vLLM's num_requests_waiting) or running (batch size, num_requests_running), GKE's recommended "
              "metrics; unset: waiting"))
register(Knob(name="cold_start_s", type=float, section="serving", scope="serving", default=None, flag=False,
              derivable=True, unit="s", allowed_text="seconds >= 0",
              help="seconds from an autoscaler's scale-up to the new replica serving (loading weights, starting the "
              "engine); unset: its weights read from a local NVMe SSD (nvme-pcie4-x4), the engine's start not "
              "counted"))
register(Knob(name="prefill_max_replicas", type=int, section="serving", scope="serving", default=None, flag=False,
              derivable=True, minimum=1,
              help="with a prefill pool: the most replicas it scales up to from prefill_replicas, by the same "
              "autoscaler as the decode pool scales to max_replicas (an HPA of each, on the same metric and target; "
              "or one Dynamo planner for both); unset: prefill_replicas throughout"))
register(Knob(name="mixed_max_replicas", type=int, section="serving", scope="serving", default=None, flag=False,
              derivable=True, minimum=1,
              help="with a fleet: the most replicas of mixed_device it scales up to from mixed_replicas, by an HPA of "
              "its own on the same metric and target (two Deployments behind one gateway, each with its HPA); unset: "
              "mixed_replicas throughout"))
register(Knob(name="autoscaler", type=str, section="serving", scope="serving", default=None, flag=False,
              allowed=tuple(AUTOSCALERS), help="how an autoscaled pool decides its replicas: hpa (Kubernetes' "
              "Horizontal Pod Autoscaler on autoscale_metric near autoscale_target per replica) or sla_planner "
              "(NVIDIA Dynamo's SLA planner: the replicas the last interval's requests, prompt and output lengths "
              "need at each replica's requests a second within the SLO, as Dynamo 1.x's throughput scaling computes "
              "them; needs slo.tpot_s, reads slo.ttft_s), load_planner (Dynamo's load-based scaling: a replica "
              "more where every replica's estimated TTFT or TPOT is over the SLO, one fewer where the others would "
              "hold it with a margin; needs slo.ttft_s and slo.tpot_s) or sla_load_planner (both, the SLA planner's "
              "replicas a floor); unset: hpa"))
register(Knob(name="autoscale_interval_s", type=float, section="serving", scope="serving", default=None, flag=False,
              derivable=True, unit="s", allowed_text="seconds > 0",
              help="seconds between an autoscaler's decisions; unset: the autoscaler's own (hpa: 15 s, Kubernetes' "
              "sync period; sla_planner: 180 s, Dynamo's adjustment interval; load_planner and sla_load_planner: "
              "5 s, Dynamo's load interval, the SLA planner's floor still every 180 s)"))
register(Knob(name="autoscale_predictor", type=str, section="serving", scope="serving", default=None, flag=False,
              allowed=tuple(LOAD_PREDICTORS), help="how the SLA planner (sla_planner, sla_load_planner) forecasts the "
              "next interval's requests and their prompt and output lengths: constant (the last interval's) or "
              "kalman (Dynamo's local linear trend Kalman filter, which follows a rising load); Dynamo's ARIMA and "
              "Prophet are not modeled; unset: constant"))
register(Knob(name="busy_kv_usage", type=float, section="serving", scope="serving", default=None, flag=False,
              derivable=True, allowed_text="a share in (0, 1]",
              help="reject a request arriving while every replica it may join is busy (HTTP 503, NVIDIA Dynamo's "
              "load shedding): a replica is busy while more than this share of its KV blocks is in use (Dynamo's "
              "active_decode_blocks_threshold); the results add rejected_share, and each rejected request misses the "
              "SLO; unset: no KV threshold"))
register(Knob(name="busy_prefill_tokens", type=int, section="serving", scope="serving", default=None, flag=False,
              derivable=True, minimum=0,
              help="a replica is busy too while it has more than this many prompt tokens still to prefill (Dynamo's "
              "active_prefill_tokens_threshold): a request arriving while every replica is busy is rejected; unset: "
              "no prefill threshold"))
register(Knob(name="busy_waiting_requests", type=int, section="serving", scope="serving", default=None, flag=False,
              derivable=True, minimum=0,
              help="a replica is busy too while more than this many requests wait on it (the Gateway API Inference "
              "Extension's saturation detector, whose default queue depth of 5 is 4 here); unset: no queue "
              "threshold"))
register(Knob(name="busy_action", type=str, section="serving", scope="serving", default=None, flag=False,
              allowed=BUSY_ACTIONS, help="what the gateway does with a request arriving while every replica is busy: "
              "reject it (NVIDIA Dynamo's load shedding) or queue it at the gateway until a replica is free, the "
              "most urgent first (llm-d's flow control); unset: reject"))
register(Knob(name="client_retries", type=int, section="serving", scope="serving", default=None, flag=False,
              minimum=0, help="how many times the client of a rejected request retries it (HTTP 503), backing off as "
              "OpenAI's Python client does: the n-th retry min(client_retry_s x 2^n, 8 s) x (1 - 0.25 u) after the "
              "rejection (its default, 2); a retried request keeps its first arrival, its wait in its TTFT; the "
              "results add retried_share; unset: a rejected request is gone"))
register(Knob(name="client_retry_s", type=float, section="serving", scope="serving", default=None, flag=False,
              allowed_text="seconds > 0", help="the first retry's backoff before jitter (OpenAI's Python client: "
              "INITIAL_RETRY_DELAY 0.5 s), doubling at each retry up to 8 s; unset: 0.5"))
register(Knob(name="conversation_turns", type=int, section="serving", scope="serving", default=None, flag=False,
              minimum=1, help="the requests as conversations of this many turns: each turn adds a message (the prompt "
              "distribution) to the conversation so far, arrives think_s after the previous answer and finds the "
              "conversation's context in the prefix cache while it stays there; conversations start at rate / turns, "
              "on the replica that serves all their turns; unset: independent requests"))
register(Knob(name="think_s", type=float, section="serving", scope="serving", default=None, flag=False, unit="s",
              allowed_text="seconds >= 0", help="seconds between a conversation turn's answer and its next turn "
              "(with conversation_turns); unset: 0"))
register(Knob(name="think_cv", type=float, section="serving", scope="serving", default=None, flag=False,
              allowed_text="a coefficient of variation >= 0", help="the think times' coefficient of variation "
              "(with conversation_turns and think_s > 0): gamma-distributed about think_s, 1 exponential (a "
              "closed-loop benchmark's user), 0 exact; unset: each turn exactly think_s after the previous answer"))
register(Knob(name="max_decode_preemptions", type=int, section="serving", scope="serving", default=None, flag=False,
              minimum=0, help="orca only: new prompts take the iteration's token budget (prompt_batch_tokens) first "
              "and running decodes past it sit out, each at most this many iterations (splitwise-sim's baseline "
              "machines: 4); unset: decodes never sit out"))
register(Knob(name="memory_utilization", type=float, section="serving", scope="serving", default=None, flag=False,
              check=_unit_fraction, allowed_text="a fraction in (0, 1]",
              help="the share of each device's memory a serving replica may use for its weights, activations and KV "
              "blocks (vLLM's gpu_memory_utilization, 0.9 by default there); unset: 1, every byte"))
register(Knob(name="host_cache_GB", type=float, section="serving", scope="serving", default=None, flag=False,
              minimum=0, allowed_text="gigabytes >= 0",
              help="host memory each replica keeps the prefix blocks its KV cache evicts in, loading a request's back "
              "over the host link (swap_GBps or the device's host_link) before it computes, instead of computing them "
              "again (vLLM's KV offloading, SGLang's HiCache, LMCache); read where requests share prefixes; unset: "
              "none"))
register(Knob(name="kv_store_GB", type=float, section="serving", scope="serving", default=None, flag=False,
              minimum=0, allowed_text="gigabytes >= 0",
              help="a KV store a pool's replicas share (Mooncake's store, LMCache's remote tier): every prefix block "
              "a replica computes is kept there, and a request whose replica lacks it fetches it over kv_store_GBps "
              "instead of computing it; read where requests share prefixes; unset: none"))
register(Knob(name="kv_store_GBps", type=float, section="serving", scope="serving", default=None, flag=False,
              minimum=0, allowed_text="GB/s > 0",
              help="what each device fetches from the KV store per second (beside kv_store_GB); unset: its node "
              "link's NIC (infiniband-ndr's 50 GB/s for Hopper and Blackwell GPUs, infiniband-hdr's 25 for A100s)"))
# A pool's own node link (ServingSpec.pool_node_link): real clusters mix fabrics (an H100 prefill pool on InfiniBand
# NDR beside an A100 decode pool on HDR); read where the pool's devices span nodes, where its KV store is fetched at
# its NIC's rate, and by the prefill pool's KV handover (explore/sweep_serving.py node_link_readers_of).
for _pool, _with in (("prefill", "a prefill pool (prefill_replicas above 0)"),
                     ("mixed", "a fleet's mixed replicas (mixed_replicas above 0)")):
    register(Knob(name=f"{_pool}_node_link", type=str, section="serving", scope="serving", default=None, flag=False,
                  check=_device_link,
                  allowed_text="a link preset that joins devices (explore presets links) or a path to a link YAML",
                  help=f"the link between the nodes of {_with}, a port per device, where its devices span nodes"
                  f"{', hand KV over' if _pool == 'prefill' else ''} or fetch a KV store at the NIC's rate (a link "
                  f"preset or YAML); unset: the point's node_link, else its devices' own"))
# Model-attention disaggregation (sim/attention_pool.py): columns in sweeps whose serving section names an attention
# device, every one of the four there.
register(Knob(name="attention_device", type=str, section="serving", scope="serving", default="none", flag=False,
              allowed_text="none, a device preset or a path to a device YAML (a list sweeps them)",
              help="the device that runs the serving (or decode) pool's attention and holds its KV cache, apart from "
              "the model's devices (model-attention disaggregation: Lamina); none: the model's devices attend"))
register(Knob(name="attention_devices", type=int, section="serving", scope="serving", default=None, flag=False,
              minimum=1, only_with=("attention_device",),
              help="attention devices per replica, splitting the heads (with attention_device; default 1)"))
register(Knob(name="attention_link", type=str, section="serving", scope="serving", default=None, flag=False,
              only_with=("attention_device",),
              allowed_text="a link preset (explore presets links) or a path to a link YAML",
              help="the link between the model's and the attention devices, a port per device (with "
              "attention_device; default roce-400g, Lamina's measured RoCE)"))
register(Knob(name="attention_micro_batches", type=int, section="serving", scope="serving", default=None,
              flag=False, minimum=1, only_with=("attention_device",),
              help="the most micro-batches an iteration splits in so that the model's and the attention devices "
              "take turns (with attention_device; default 2, Lamina's staggered pipelining on one model replica); "
              "each iteration uses as many as make it fastest"))
register(Knob(name="attention_placement", type=str, section="serving", scope="serving", default=None, flag=False,
              allowed=PLACEMENTS, only_with=("attention_device",),
              help="which sequences the attention devices attend to (with attention_device; default apart): every "
              "one (apart, Lamina), or those whose KV the model's devices' memory does not hold, the model's devices "
              "attending to theirs in the same batch (hybrid: APEX's CPU-GPU attention over the host link)"))
# Multi-LoRA serving (sim/lora.py): vLLM's --enable-lora with --max-lora-rank and --max-loras (vllm/config/lora.py).
register(Knob(name="lora_adapters", type=int, section="serving", scope="serving", default=0, flag=False, minimum=0,
              help="LoRA adapters over the base model, each request running one (drawn with lora_alpha); each layer "
              "adds its adapters' shrink and expand GEMMs (vLLM's punica kernels); 0: LoRA off"))
register(Knob(name="lora_rank", type=int, section="serving", scope="serving", default=16, flag=False,
              allowed=LORA_RANKS, only_with=("lora_adapters",),
              help="the adapters' rank, as vLLM pads them to max_lora_rank (its default 16)"))
register(Knob(name="max_loras", type=int, section="serving", scope="serving", default=1, flag=False, minimum=1,
              only_with=("lora_adapters",),
              help="distinct adapters the running requests may hold at once, each a GPU slot taken from the KV cache "
              "(vLLM's max_loras, default 1); a waiting request of another adapter is passed over"))
register(Knob(name="lora_alpha", type=float, section="serving", scope="serving", default=1.0, flag=False,
              only_with=("lora_adapters",), check=_unit_fraction, allowed_text="a number in (0, 1]",
              help="how requests pick adapters: S-LoRA's power law of this exponent (1: uniform; smaller crowds the "
              "first adapters)"))
