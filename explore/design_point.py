"""DesignPoint: one combination of model, device, workload, numeric format and device overrides.

The knobs with a typed field here are read by name; every other registered knob of the point or system scope
(explore/knobs.py) is generic: its value, where it differs from the knob's default, is kept in `knobs`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from explore.knobs import KNOBS, Knob, knobs
from explore.pool_what_ifs import POOL_WHAT_IFS
from explore.serving_settings import refused_limits
from hw_models.registry import calibration_file, read_device_yaml
from kernels.formats import NumericFormat
from sim.lora import lora_unjudged
from sim.serving_spec import ServingSpec
from workloads.model_config import config_file, load_model_config


@dataclass(frozen=True, kw_only=True)
class DesignPoint:
    model: str
    device: str
    batch: int
    prompt: int
    output: int
    weight_bits: int = 16
    act_bits: int = 16
    kv_bits: int = 16
    sparsity: str = "dense"  # structured N:M weight sparsity ("dense", "2:4", ...)
    # Which kernels run and how they are launched: "eager" (PyTorch eager: framework dispatch and a host launch per
    # aten op), "graphs" (the same kernels replayed from CUDA graphs) or "engine" (a serving engine's fused
    # kernels, kernels/fusion.py: decode replayed from CUDA graphs, prefill launched from the host).
    execution: str = "eager"
    use_calibration: bool = True  # False: the datasheet roofline even where a preset has a fitted calibration
    overrides: tuple[tuple[str, Any], ...] = ()  # device fields by dotted path, e.g. ("memory.bandwidth_GBps", 4000)
    # A serving workload (requests arriving, a scheduler) instead of the static batch of batch, prompt, output.
    serving: ServingSpec | None = None
    tp: int = 1  # tensor-parallel devices (kernels/parallel.py)
    pp: int = 1  # pipeline stages, each of tp devices
    ep: int = 1  # expert parallelism: 1, or tp to spread an MoE model's experts over the tp devices
    link: str = ""  # the link between them: a link preset name or path; empty: the device's own (hw_models/link.py)
    link_overrides: tuple[tuple[str, Any], ...] = ()  # link fields, e.g. ("bandwidth_GBps", 300)
    # Fields of a serving point's other pools' devices alone (explore/pool_what_ifs.py): its attention devices
    # (ServingSpec.attention_device), its prefill pool's and its mixed replicas', e.g. ("memory.bandwidth_GBps", 8000).
    attention_overrides: tuple[tuple[str, Any], ...] = ()
    prefill_overrides: tuple[tuple[str, Any], ...] = ()
    mixed_overrides: tuple[tuple[str, Any], ...] = ()
    # Generic registry knobs set to other than their default, sorted by name (explore/knobs.py); a knob at its
    # default is left out, so a point's key does not change when a knob is added to the registry.
    knobs: tuple[tuple[str, Any], ...] = ()

    @cached_property
    def point_id(self) -> str:
        """Stable hash of the inputs: the key under which the result is stored (resume skips stored keys)."""
        return key_of(self.canonical())

    def canonical(self) -> str:
        """The JSON text point_id hashes: every field, less those at a value that keeps older points' keys."""
        values = self._values()
        if values["sparsity"] == "dense":
            del values["sparsity"]  # points stored before sparsity existed keep their keys (resume still works)
        if values["serving"] is None:
            del values["serving"]  # static points keep the keys they had before serving existed
        else:
            values["serving"] = values["serving"].key_text(self.device, self.knob("node_link"))
        if values["tp"] == 1 and not values["link"]:
            del values["tp"], values["link"]  # one-device points keep their keys
        if values["pp"] == 1:
            del values["pp"]
        if values["ep"] == 1:
            del values["ep"]
        if not values["link_overrides"]:
            del values["link_overrides"]
        for pool in POOL_WHAT_IFS:
            if not values[pool.field]:
                del values[pool.field]
        if not values["knobs"]:
            del values["knobs"]  # points without a generic knob keep the keys they had before knobs existed
        files = self.input_files()
        if files:  # a file's contents are part of what was evaluated: an edited file is a new point
            values["files"] = {path: file_digest(path) for path in files}
        return json.dumps(values, sort_keys=True, default=str)

    def input_files(self) -> list[str]:
        """The files the point reads by path (a model's config.json, a device or link YAML, a request trace, a draft
        model, a pool's device): string inputs naming an existing file, not a preset name; a model named by its
        folder reads the folder's config.json."""
        models = [config_file(name) for name in (self.model, *(v for _, v in self.knobs if isinstance(v, str))) if name]
        names = [*models, self.device, self.link]
        if self.serving is not None:
            names += [getattr(self.serving, f.name) for f in fields(self.serving)
                      if isinstance(getattr(self.serving, f.name), str)]
        files = {name for name in names if _path_like(name) and os.path.isfile(name)}
        devices = [self.device, *(getattr(self.serving, name, "") for name in ("prefill_device", "attention_device",
                                                                             "mixed_device"))]
        fits = {cal for name in devices if name in files and (cal := calibration_file(name)) and os.path.isfile(cal)}
        return sorted(files | fits)

    @property
    def numeric_format(self) -> NumericFormat:
        """The format of the point: its bit widths and sparsity, and every generic knob that applies to the format
        (a NumericFormat field of the same name)."""
        if not self.knobs:  # most points: no generic knob, so no format knob to gather (read several times a point)
            return _numeric_format(self.weight_bits, self.act_bits, self.kv_bits, self.sparsity, (), ())
        parts = tuple((name, value) for name, value in self.knobs if KNOBS[name].applies == "format")
        try:
            return _numeric_format(self.weight_bits, self.act_bits, self.kv_bits, self.sparsity, parts,
                                   tuple(type(value) for _, value in parts))
        except TypeError:  # a value that cannot be a cache key (a list from YAML): built as it is
            return NumericFormat(weight_bits=self.weight_bits, act_bits=self.act_bits, kv_bits=self.kv_bits,
                                 sparsity=self.sparsity, **dict(parts))

    def knob(self, name: str) -> Any:
        """The point's value of any registered knob of the point or system scope: a typed field, or a generic knob's
        value (its default where the point does not set it)."""
        if name in _FIELD_SET:
            return getattr(self, name)
        for knob, value in self.knobs:  # a handful at most: no dict built per read
            if knob == name:
                return value
        return KNOBS[name].default

    def unjudged(self) -> str:
        """Why the point's run cannot answer what it asks, as one line naming the key ('' where it can): its serving
        spec's reason (ServingSpec.unjudged), scheduler limits vLLM refuses (serving_settings.refused_limits), or
        settings not modeled together: offloading, layer skipping or decode context parallelism beside speculative
        decoding, decode context parallelism beside a quantized cache of latent attention, experts offloaded from a
        model without routed experts, a sliding window beside offloading other than the weights, offloading,
        speculation, pruning, layer skipping, token splitting or decode context parallelism on pipeline stages, a
        hybrid attention placement off one model device beside one CPU host, attention devices beside what they do not
        run (pipeline stages, a draft, cascade, swapping, token splitting), data-parallel attention beside what its
        ranks do not run, a chunked cap on a request's tokens below those a speculating decode verifies. `explore run`
        refuses such a point; a sweep records it unevaluated, this its infeasible_reason, and runs its other points."""
        if self.serving is not None:
            return (self.serving.unjudged() or refused_limits(self.serving) or self._hybrid_unjudged()
                    or self._attention_unjudged() or self._data_parallel_unjudged() or self._stage_unjudged()
                    or self._long_prefill_unjudged() or self._lora_unjudged() or self._context_parallel_unjudged())
        if reason := self._draft_unjudged() or self._context_parallel_unjudged():
            return reason
        offload = self.knob("offload")
        if offload == "experts" and not load_model_config(self.model).is_moe:
            return (f"offload: found 'experts' for {self.model}, which has no routed experts, allowed: weights, kv or "
                    f"auto (experts: a mixture-of-experts model's)")
        if (window := self.knob("offload_window")) and offload not in ("none", "weights"):
            return (f"offload_window: found {window} with offload {offload!r}, allowed: offload weights (the window "
                    f"slides over layers' weights; beside the KV cache or experts offloaded it is not modeled)")
        return self._stage_unjudged()

    def _draft_unjudged(self) -> str:
        """Why speculative decoding (sim/speculative.py) is not modeled beside this static point's settings ('' where
        it is): its draft and target run from device memory, every layer of each."""
        draft = self.knob("spec_draft")
        if not draft:
            return ""
        for name, on, allowed in (
                ("offload", self.knob("offload") != "none", "none with speculative decoding (an offloaded draft and "
                 "target are not modeled)"),
                ("exit_depth", self.knob("exit_depth") != 1.0, "1 (every layer) with speculative decoding (a draft "
                 "verified by a target skipping layers is not modeled yet)"),
                ("dcp", self.knob("dcp") != 1, "1 with speculative decoding (a verification's keys split over "
                 "devices, and a draft's cache, are not modeled yet)")):
            if on:
                return f"{name}: found {self.knob(name)!r} with spec_draft {draft!r}, allowed: {allowed}"
        return ""

    def _stage_unjudged(self) -> str:
        """Why what is modeled on one pipeline stage is not on this point's `pp` stages ('' where it is):
        offloading, speculative decoding, prompt-token pruning, layer skipping, token splitting, decode context
        parallelism."""
        if self.pp == 1:
            return ""
        for name, on, allowed in (
                ("offload", self.knob("offload") != "none",
                 "none, or offloading on one stage (pp = 1; offloading a pipelined model is not modeled)"),
                ("spec_draft", bool(self.knob("spec_draft")), "speculative decoding on one stage (pp = 1; a pipelined "
                 "draft and target are not modeled yet)"),
                ("prompt_kept", self.knob("prompt_kept") != 1.0, "1 (no pruning), or prompt-token pruning on one "
                 "stage (pp = 1; pruning on pipeline stages is not modeled yet)"),
                ("exit_depth", self.knob("exit_depth") != 1.0, "1 (every layer), or layer skipping on one stage (pp = "
                 "1; skipping on pipeline stages is not modeled yet)"),
                ("overlap", self.knob("overlap") != "none", "none, or token splitting on one stage (pp = 1; splitting "
                 "a pipelined iteration is not modeled)"),
                ("dcp", self.knob("dcp") != 1, "1, or decode context parallelism on one stage (pp = 1; on pipeline "
                 "stages it is not modeled yet)")):
            if on:
                return f"{name}: found {self.knob(name)!r} on {self.pp} pipeline stages, allowed: {allowed}"
        return ""

    def _long_prefill_unjudged(self) -> str:
        """Why long_prefill_tokens is not modeled beside this point's speculation ('' where it is): vLLM v1 caps every
        request's new tokens at it, a decode's too (vllm/v1/core/sched/scheduler.py schedule(), commit 00024d31), so
        one below the tokens a speculating decode verifies cuts every decode's drafts, where the iteration priced cuts
        the drafts of one decode at most, the one the token budget cuts (its entry in Batch.short)."""
        cap, draft = self.serving.long_prefill_tokens, self.knob("spec_draft")
        verified = (self.knob("spec_tree") or self.knob("spec_tokens")) + 1
        if not draft or not 0 < cap < verified:
            return ""
        return (f"long_prefill_tokens: found {cap} with spec_draft {draft!r} verifying {verified} tokens a decode, "
                f"allowed: 0 or an integer >= {verified} (vLLM v1 caps a decode's verified tokens at it too, cutting "
                f"every decode's drafts: not modeled)")

    def _context_parallel_unjudged(self) -> str:
        """Why decode context parallelism is not modeled beside this point's settings ('' where it is: a 16-bit cache
        of latent attention; in serving, one pool of replicas, or a prefill pool at dcp 1 beside a decode pool of latent
        attention at dcp tp, attending on their own tp devices, decoding plainly, its model's KV in one group of
        blocks)."""
        dcp = self.knob("dcp")
        if dcp == 1:
            return ""
        if self.kv_bits < 16 and load_model_config(self.model).is_mla:
            # vLLM's MLA decode asserts `not fp8_attention` when dcp_world_size > 1 (its one quantized MLA cache is
            # fp8): vllm/v1/attention/backends/mla/common.py MLACommonImpl.forward, commit 00a817ad.
            return (f"kv_bits: found {self.kv_bits} with dcp {dcp} on {self.model}'s latent attention, allowed: 16 "
                    f"(vLLM's MLA decode refuses a quantized KV cache under decode context parallelism)")
        spec = self.serving
        if spec is None:
            return ""
        for on, name, value, allowed in (
                (bool(self.knob("spec_draft")), "spec_draft", self.knob("spec_draft"), "none (a verification's keys "
                 "split over devices, and a draft's cache, are not modeled yet)"),
                # vLLM's NIXL connector hands a prefill instance's KV to a decode instance under DCP for MLA models
                # alone, each side at dcp 1 (every device a whole copy) or its tp (each device a slice): a decode
                # device reads its slice from one prefill device (vLLM pull request #50611, "[Nixl][PD] DCP support
                # for MLA models"; vllm/distributed/kv_transfer/kv_connector/utils.py TransferTopology
                # handshake_target_ranks and dcp_source_ranks as docs.vllm.ai gives them).
                (spec.disaggregated and not (load_model_config(self.model).is_mla and dcp == self.tp),
                 "prefill_replicas", spec.prefill_replicas, f"0, or a model of latent attention at dcp {self.tp}, its "
                 f"tp (vLLM's NIXL connector hands KV over to a decode pool under DCP there alone)"),
                (spec.mixed, "mixed_replicas", spec.mixed_replicas, "0 (one pool of replicas)"),
                (spec.attends_apart, "attention_device", spec.attention_device, "none (the split keys are the tp "
                 "devices' own)"),
                (self.knob("attention_parallel") == "data", "attention_parallel", "data", "tensor (a data-parallel "
                 "rank holds its sequences' KV whole)"),
                (spec.cascade, "prefix_attention", "cascade", "paged (a shared prefix read once over split keys is not "
                 "modeled)"),
                (bool(load_model_config(self.model).layer_windows), "model", self.model, "a model whose layers share "
                 "one attention window (vLLM's hybrid KV cache coordinator asserts dcp_world_size == 1: "
                 "vllm/v1/core/kv_cache_coordinator.py, commit 52b9a57d)")):
            if on:
                return f"{name}: found {value!r} with dcp {dcp}, allowed: {allowed}"
        return ""

    def _lora_unjudged(self) -> str:
        """Why LoRA adapters are not modeled beside this point's settings ('' where they are: sim/lora.py)."""
        spec = self.serving
        if not spec.lora_adapters:
            return ""
        # The host_link knob gives every device of the point a link to load adapters over (Evaluator.host_link).
        unlinked = "" if self.knob("host_link") else next(
            (name for name in (self.device, spec.mixed_device) if name and not _loads_adapters(name)), "")
        return lora_unjudged(moe=load_model_config(self.model).is_moe, spec_draft=self.knob("spec_draft"),
                             attention_parallel=self.knob("attention_parallel"), overlap=self.knob("overlap"),
                             disaggregated=spec.disaggregated, attends_apart=spec.attends_apart,
                             preemption=spec.preemption, unlinked_device=unlinked)

    def _hybrid_unjudged(self) -> str:
        """Why a hybrid attention placement (sim/attention_pool.py, APEX) is not modeled here ('' where it is): it
        holds a sequence's whole KV on one model device or on one CPU's host memory, in iterations not split in
        micro-batches."""
        spec = self.serving
        if not spec.attends_apart or spec.attention_placement != "hybrid":
            return ""
        kind = _device_kind(spec.attention_device)
        for conflict, what in (
                (kind != "cpu", f"attention_device {spec.attention_device!r} (a {kind} device), allowed: a CPU (kind: "
                 f"cpu), whose host memory holds the sequences the model's devices do not"),
                (self.tp > 1, f"tp {self.tp}, allowed: 1 (one model device beside the host)"),
                (spec.attention_devices > 1, f"attention_devices {spec.attention_devices}, allowed: 1 (one host)"),
                (not spec.micro_batches_unread,
                 f"attention_micro_batches {spec.attention_micro_batches}, allowed: left out (a hybrid iteration runs "
                 f"as one batch, APEX's asynchronous overlap)")):
            if conflict:
                return f"attention_placement: found 'hybrid' with {what}"
        return ""

    def _attention_unjudged(self) -> str:
        """Why attention on devices of its own (sim/attention_pool.py) is not modeled here ('' where it is): it runs
        a plain decode on one stage of model devices, each sequence's KV paged and recomputed where preempted, each
        iteration whole."""
        spec = self.serving
        if not spec.attends_apart:
            return ""
        draft, overlap = self.knob("spec_draft"), self.knob("overlap")
        for conflict, what in (
                (self.pp > 1, f"on {self.pp} pipeline stages, allowed: one stage (pp = 1)"),
                (bool(draft), f"with spec_draft {draft!r}, allowed: none (speculative decoding beside attention "
                 f"devices is not modeled)"),
                (spec.cascade, "with prefix_attention 'cascade', allowed: paged (a cascade on attention devices is "
                 "not modeled)"),
                (spec.preemption == "swap", "with preemption 'swap', allowed: recompute (swapping from attention "
                 "devices is not modeled)"),
                (overlap != "none", f"with overlap {overlap!r}, allowed: none (token splitting beside attention "
                 f"devices is not modeled)")):
            if conflict:
                return f"attention_device: found {spec.attention_device!r} {what}"
        return ""

    def _data_parallel_unjudged(self) -> str:
        """Why data-parallel attention (sim/data_parallel.py) is not modeled here ('' where it is): its ranks run on one
        stage of devices that attend themselves, decoding plainly and all-reducing nothing, their all-to-alls overlapped
        by dual_batch alone; dual_batch overlaps nothing else."""
        overlap = self.knob("overlap")
        if self.knob("attention_parallel") != "data":
            return ("overlap: found 'dual_batch' with attention_parallel 'tensor', allowed: none or token_split "
                    "(dual_batch overlaps data-parallel ranks' all-to-alls: attention_parallel data)"
                    if overlap == "dual_batch" else "")
        spec, allreduce, draft = self.serving, self.knob("allreduce"), self.knob("spec_draft")
        for conflict, what in (
                (self.pp > 1, f"pp {self.pp}, allowed: 1 (the ranks on one pipeline stage)"),
                (spec.attends_apart, f"attention_device {spec.attention_device!r}, allowed: none (the ranks attend to "
                 f"their own sequences)"),
                (overlap == "token_split", f"overlap {overlap!r}, allowed: none or dual_batch (the ranks all-reduce "
                 f"nothing to split: dual_batch overlaps their all-to-alls)"),
                (allreduce != "nccl", f"allreduce {allreduce!r}, allowed: nccl (the ranks all-reduce nothing: their "
                 f"MoE layers exchange tokens by all-to-all)"),
                (bool(draft), f"spec_draft {draft!r}, allowed: none (speculative decoding on data-parallel ranks is "
                 f"not modeled)")):
            if conflict:
                return f"attention_parallel: found 'data' with {what}"
        if overlap == "dual_batch" and self.ep != self.tp:  # the ep to change: dual_batch already asks for data ranks
            return (f"ep: found {self.ep} with overlap 'dual_batch', allowed: {self.tp}, the tp (dual_batch overlaps "
                    f"spread experts' all-to-alls, as vLLM runs it beside expert parallelism alone)")
        return ""

    def reads(self, knob: Knob) -> bool:
        """Whether the point reads `knob` (Knob.read_where): it has no switches (Knob.only_with), or one of them is on
        here (a serving switch in its serving spec: node_link's prefill_replicas), and its model has what the knob
        reads (Knob.only_for: moe_routing's routed experts)."""
        return knob.read_where(self._switch, self.model)

    def _switch(self, switch: Knob) -> Any:
        """The point's value of a switch (Knob.only_with): a serving knob's in its serving spec (its default on a
        static point), any other's as knob() reads it."""
        if switch.scope == "serving":
            return switch.default if self.serving is None else getattr(self.serving, switch.name)
        return self.knob(switch.name)

    def _values(self) -> dict[str, Any]:
        """Field values by name (shallow: the fields are numbers, strings and tuples)."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    def row(self) -> dict[str, Any]:
        """Input columns of the results table, one column per override ('device.memory.bandwidth_GBps')."""
        return {"point_id": self.point_id, **self.row_fields(),
                **{f"device.{path}": value for path, value in self.overrides}, **self.system_what_if_columns()}

    def row_fields(self) -> dict[str, Any]:
        """The input columns before the device overrides' (row() less point_id, device.*, link.* and
        attention_device.*)."""
        values = self._values()
        for name in ("overrides", "link_overrides", *(pool.field for pool in POOL_WHAT_IFS), "serving", "knobs"):
            del values[name]
        row = {**values, "link": self.link or "default"}
        # A knob the point does not read (every knob that turns it on is off: an acceptance rate without a draft)
        # shows empty, as a serving setting the point does not read does; a format's part shows the value its
        # canonical format takes (NumericFormat.canonical), as every format part does.
        set_knobs = dict(self.knobs)
        row.update({k.name: set_knobs.get(k.name, k.default) if self.reads(k) or k.applies == "format" else None
                    for k in generic_knobs()})
        if self.serving is not None:
            row.update(self.serving.columns())
        return row

    def system_what_if_columns(self) -> dict[str, Any]:
        """The input columns of the what-ifs on the rest of the system, after the device overrides': the link's
        ('link.bandwidth_GBps'), then other pools' devices' ('attention_device.memory.bandwidth_GBps')."""
        return {**{f"link.{path}": value for path, value in self.link_overrides},
                **{f"{pool.prefix}{path}": value for pool in POOL_WHAT_IFS
                   for path, value in getattr(self, pool.field)}}


@functools.lru_cache(maxsize=1024, typed=True)  # typed: 4 and 4.0 validate apart
def _numeric_format(weight_bits: int, act_bits: int, kv_bits: int, sparsity: str,
                    parts: tuple[tuple[str, Any], ...], types: tuple[type, ...]) -> NumericFormat:
    """The NumericFormat of these fields, built (and validated) once per distinct format: a sweep has a few formats
    over many points, and a point reads its format several times per evaluation. The format is a frozen value.
    `types`: the types of the parts' values, in the key only (typed=True does not look inside a tuple: a knob at 2
    and at 2.0 would share an entry, and NumericFormat checks some knobs' types)."""
    return NumericFormat(weight_bits=weight_bits, act_bits=act_bits, kv_bits=kv_bits, sparsity=sparsity, **dict(parts))


FORMAT_FIELDS = tuple(f.name for f in fields(NumericFormat))


def canonical_format(values: dict[str, Any]) -> dict[str, Any]:
    """Knob values by name with each format part at the value the point's NumericFormat.canonical holds: a setting
    that changes nothing at the format (group_size beside 16-bit weights and KV cache, edge_layers without
    edge_layer_bits) at its default, one the format normalizes (an override equal to weight_bits) normalized, so
    points that differ only there are one design with one key. As given where the parts make no valid format: the
    point's own check refuses it."""
    given = {name: value for name, value in values.items() if name in FORMAT_FIELDS}
    if not given:
        return values
    parts = {name: given.get(name, KNOBS[name].default) for name in ("weight_bits", "act_bits", "kv_bits", "sparsity")}
    generic = tuple((name, value) for name, value in given.items() if name not in parts)
    try:
        fmt = _numeric_format(*parts.values(), generic, tuple(type(value) for _, value in generic)).canonical
    except (TypeError, ValueError):  # unhashable (a list from YAML) or invalid: the point's checks say why
        return values
    return values | {name: getattr(fmt, name) for name in given}


# What a file a point reads by path ends in (a preset name, a knob's word, never): only such names are looked up on
# disk, as a point's key is made for every point of a search.
FILE_SUFFIXES = (".json", ".yaml", ".yml", ".csv", ".gz")


def _path_like(name: str) -> bool:
    return bool(name) and (os.sep in name or name.endswith(FILE_SUFFIXES))


@functools.lru_cache(maxsize=256)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def file_digest(path: str) -> str:
    """A short hash of a file's bytes (read again only when its modification time or size changes)."""
    stat = os.stat(path)
    return _digest(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


def key_of(canonical: str) -> str:
    """A point_id from a point's canonical JSON text (DesignPoint.canonical)."""
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


_FIELD_NAMES = tuple(f.name for f in fields(DesignPoint))
_FIELD_SET = frozenset(_FIELD_NAMES)


def generic_knobs() -> tuple[Knob, ...]:
    """The registered knobs of the point and system scope without a typed field: their values live in
    DesignPoint.knobs."""
    return KNOBS.view("generic", _generic)


# Where a generic knob is set: the sweep-file sections built from the registry (explore/schema.py section_model) and
# the parallel: section (explore/sweep_serving.py Parallel, which names its generic knobs' fields itself).
GENERIC_SECTIONS = ("workload", "format", "parallel")


def _generic() -> tuple[Knob, ...]:
    generic = tuple(k for k in knobs() if k.scope != "serving" and k.name not in _FIELD_NAMES)
    for k in generic:
        if k.section not in GENERIC_SECTIONS:
            raise ValueError(f"knob {k.name!r}: section {k.section!r}, allowed for a knob without a DesignPoint "
                             f"field: {', '.join(GENERIC_SECTIONS)}")
    return generic


def with_knobs(values: dict[str, Any]) -> dict[str, Any]:
    """DesignPoint keyword arguments from knob values by name: generic knobs gathered into `knobs` (those at their
    default left out, so the key stays as it was before they existed)."""
    fields = {name: value for name, value in values.items() if name in _FIELD_NAMES}
    generic = sorted((name, value) for name, value in values.items()
                     if name not in _FIELD_NAMES and value != KNOBS[name].default)
    return fields | ({"knobs": tuple(generic)} if generic else {})


@functools.lru_cache(maxsize=64)
def _loads_adapters(name: str) -> bool:
    """Whether a device can load LoRA adapters from host memory: a CPU holds them in its own memory, another device
    over the host link its preset names (sim/lora.py)."""
    preset = read_device_yaml(name)[0]
    return preset["kind"] == "cpu" or preset.get("host_link") is not None


@functools.lru_cache(maxsize=64)
def _device_kind(name: str) -> str:
    """A device preset's or file's kind, read once (a grid's hybrid points judge the same few devices)."""
    return read_device_yaml(name)[0]["kind"]
