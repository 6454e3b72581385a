"""Captured traces kept on disk, so a model traced once is never traced again (capture costs seconds, a cached
trace loads in milliseconds, and a cache hit does not import torch).

A trace is stored as gzipped JSON (Trace.to_dict: plain values, no pickle); a full model's fake trace as captured, its
distinct layers' trace and the layer each layer repeats (workloads/layer_replication.py LayerTrace), expanded on load:
DeepSeek-V3's file holds 3 layers of 61, the JSON of a twentieth of the ops to write and read. Each file's name hashes
everything the trace depends on: every field of the model config but the file it was read from (the same config.json in
another folder is the same model), the phase and shape, the torch version (read from the
installed package's metadata, not by importing torch) and the source of the code that captures it. Writes go to a
temporary file renamed into place, so a reader or a concurrent writer never sees half a file; a file that cannot
be read, does not match its key or holds text where a number goes is ignored and written again.

Where: $LLM_CODESIGN_CACHE/traces when that variable is set, else $XDG_CACHE_HOME/llm-codesign/traces, else
~/.cache/llm-codesign/traces. Deleting the folder clears the cache.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import logging
import os
import re
import zlib
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from workloads.atomic_write import replacing
from workloads.collector import collector_paused
from workloads.layer_replication import LayerTrace, layer_regions
from workloads.model_config import ModelConfig
from workloads.trace import TRACE_VERSION, Trace

log = logging.getLogger(__name__)

CACHE_ENV = "LLM_CODESIGN_CACHE"
CACHE_VERSION = 2  # of the file layout below; a change makes every older file miss
SUFFIX = ".json.gz"
# The modules whose code decides what a captured trace holds: an edit to any of them makes older traces miss.
CAPTURE_SOURCES = ("capture.py", "decoder.py", "layer_replication.py", "op_costs.py", "trace.py")
# What a broken file raises on reading: gzip (OSError, EOFError, zlib.error), JSON and UTF-8 (ValueError),
# a JSON document of the wrong shape (KeyError, TypeError, AttributeError, IndexError; InputError is a ValueError).
UNREADABLE = (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError, AttributeError, IndexError,
              RecursionError)


def cache_dir() -> Path:
    """The folder traces are kept in (see the module docstring)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "traces"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "llm-codesign" / "traces"


@functools.cache
def torch_version() -> str:
    """The installed torch's version without importing torch ('none' when it is not installed)."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"


@functools.cache
def capture_code_digest() -> str:
    """A hash of the capture code's source files."""
    return source_digest(CAPTURE_SOURCES)


@functools.cache
def source_digest(names: tuple[str, ...]) -> str:
    """A hash of the named source files of this package."""
    digest = hashlib.sha256()
    for name in names:
        try:
            digest.update((Path(__file__).parent / name).read_bytes())
        except OSError:  # installed without sources (bytecode only): the key keeps the name, and the torch version
            digest.update(name.encode())
    return digest.hexdigest()[:16]


# Config fields a trace does not depend on: where the file was read from, and the MTP modules a model does not build;
# `mtp` (the config is an MTP module) is keyed as the module traced and its code.
UNTRACED_FIELDS = ("source", "mtp_layers", "mtp")


def trace_key(config: ModelConfig, *, phase: str, batch: int, seq_len: int, context_len: int = 0,
              sampled: int = 1) -> dict[str, Any]:
    """Everything a fake-tensor trace of `config` depends on, as plain JSON values (not the config's source: where
    its file was read from); an MTP module's adds the module and workloads/mtp.py's source, a pass with logits at
    more than its last position their count."""
    # A tuple as the list JSON reads it back (ModelConfig.layer_windows), so that a stored key compares equal.
    shape = {field: list(value) if isinstance(value, tuple) else value for field, value in asdict(config).items()
             if field not in UNTRACED_FIELDS}
    module = {"module": "mtp", "module_code": source_digest(("mtp.py",))} if config.mtp else {}
    logits = {"sampled": sampled} if sampled != 1 else {}
    return {"cache_version": CACHE_VERSION, "trace_version": TRACE_VERSION, "config": shape,
            "phase": phase, "batch": batch, "seq_len": seq_len, "context_len": context_len,
            "torch": torch_version(), "capture_code": capture_code_digest()} | module | logits


def trace_path(key: dict[str, Any]) -> Path:
    """The file of a key: the model's name (to find it by eye) and a hash of the whole key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(key["config"]["name"]))[:48]
    return cache_dir() / f"{name}-{key['phase']}-{digest}{SUFFIX}"


def load(key: dict[str, Any]) -> Trace | None:
    """The cached trace of a key (expanded, where its layers were stored once each); None when there is none or its
    file cannot be read or holds another key."""
    stored = load_stored(key)
    return None if stored is None else expanded(stored)


def expanded(stored: Trace | LayerTrace) -> Trace:
    """The full trace of what the cache stores: a trace itself, a LayerTrace its layers repeated."""
    return stored.expanded() if isinstance(stored, LayerTrace) else stored


def load_stored(key: dict[str, Any]) -> Trace | LayerTrace | None:
    """The cached trace of a key as stored (a full model's fake trace as its distinct layers, not expanded); None when
    there is none or its file cannot be read, holds another key or layers that cannot be repeated."""
    path = trace_path(key)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f, collector_paused():  # the JSON holds no cycles
            data = json.load(f)
            if data["key"] != key:  # a hash collision or a file copied in by hand: not this trace
                raise ValueError("the file holds another key")
            trace = _numbers_checked(Trace.from_dict(data["trace"], where=str(path)))
        layers = data.get("layers")
        if layers is None:
            return trace
        stored = _layer_trace(trace, layers)
        layer_regions(trace.ops, len(stored.layer_sizes))  # what expanded() raises on, raised here
        return stored
    except (FileNotFoundError, NotADirectoryError):  # no such file (the cache folder lies under a file: none either)
        return None
    except UNREADABLE as err:
        log.warning("%s: cached trace ignored and captured again (%s: %s)", path, type(err).__name__, err)
        return None


def _layer_trace(traced: Trace, layers: dict) -> LayerTrace:
    """A trace of distinct layers from its stored `layers` (store writes them); ValueError where a source or a size
    is not an integer or a source names no traced layer."""
    sources, sizes = tuple(layers["sources"]), tuple(tuple(size) for size in layers["sizes"])
    if any(s.__class__ is not int or not 0 <= s < len(sizes) for s in sources):
        raise ValueError(f"layers: sources: found {list(sources)}, allowed: indices of the {len(sizes)} traced layers")
    if any(len(size) != 2 or any(n.__class__ is not int for n in size) for size in sizes):
        raise ValueError(f"layers: sizes: found {[list(size) for size in sizes]}, allowed: pairs of integers")
    return LayerTrace(traced=traced, sources=sources, layer_sizes=sizes)


_NUMBERS = (int, float)
# The Trace fields that hold counts; a capture writes each as an int.
_COUNTS = ("batch", "seq_len", "context_len", "param_count", "param_bytes", "peak_activation_bytes")


def _numbers_checked(trace: Trace) -> Trace:
    """The trace, where every count and cost it holds is a number; else ValueError naming the first that is not. A
    file edited by hand (or written by other code) can hold valid JSON of the trace's shape with text in place of a
    number, which Trace.from_dict keeps and pricing fails on far from the file (a traceback). The classes are
    gathered in bulk (some 3% of a load) and the ops walked one by one only to name a bad value."""
    for name in _COUNTS:
        if getattr(trace, name).__class__ is not int:
            raise ValueError(f"{name}: found {getattr(trace, name)!r}, allowed: an integer")
    ops = trace.ops
    kinds = {op.flops.__class__ for op in ops}
    kinds.update(n.__class__ for op in ops for part in (op.bytes_read, op.bytes_written) for n in part.values())
    dims = {d.__class__ for op in ops for tensor in (*op.inputs, *op.outputs) for d in tensor.shape}
    if kinds <= set(_NUMBERS) and dims <= {int}:
        return trace
    for i, op in enumerate(ops):
        values = {"flops": op.flops, **{f"bytes_read: {r}": n for r, n in op.bytes_read.items()},
                  **{f"bytes_written: {r}": n for r, n in op.bytes_written.items()}}
        for where, value in values.items():
            if value.__class__ not in _NUMBERS:
                raise ValueError(f"op {i} ({op.name}): {where}: found {value!r}, allowed: a number")
        for tensor in (*op.inputs, *op.outputs):
            if any(d.__class__ is not int for d in tensor.shape):
                raise ValueError(f"op {i} ({op.name}): shape: found {list(tensor.shape)}, allowed: integers")
    raise AssertionError("unreachable: a value of another class was found above")


_unwritable: set[Path] = set()  # cache folders a store failed in (warned about once)


def store(key: dict[str, Any], trace: Trace | LayerTrace) -> None:
    """Write a trace (or a full model's as captured from its distinct layers) under its key atomically; a cache that
    cannot be written is logged, not raised (the trace is still good, only the next run captures it again)."""
    path = trace_path(key)
    with collector_paused():  # the document's dicts hold no cycles and die with it
        if isinstance(trace, LayerTrace):
            layers = {"sources": trace.sources, "sizes": trace.layer_sizes}
            document = {"key": key, "trace": trace.traced.to_dict(), "layers": layers}
        else:
            document = {"key": key, "trace": trace.to_dict()}
        payload = gzip.compress(json.dumps(document, separators=(",", ":")).encode(), compresslevel=6)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Concurrent writers of one key each rename a whole file of the same content (workloads/atomic_write.py).
        with replacing(path) as tmp, tmp.open("xb") as f:
            f.write(payload)
    except OSError as err:  # the folder itself may be what fails, the temporary file's removal included
        # Once per folder and process: a folder this user cannot write fails every trace of a run alike.
        if path.parent not in _unwritable:
            _unwritable.add(path.parent)
            log.warning("%s: traces not cached (%s); they are captured again on each run until the folder can be "
                        "written (or %s names another)", path.parent, err, CACHE_ENV)


def is_cached(config: ModelConfig, **shape: Any) -> bool:
    """Whether the cache has a file for the trace of `shape` (trace_key's arguments; not read: a broken one is found
    when it is loaded)."""
    return trace_path(trace_key(config, **shape)).is_file()


def cached_trace(config: ModelConfig, **shape: Any) -> Trace:
    """trace_model(config, **shape) on fake tensors (shape: trace_key's arguments), from the cache when it holds it
    (torch is imported only to capture a trace the cache lacks)."""
    return expanded(cached_stored(config, **shape))


def cached_stored(config: ModelConfig, **shape: Any) -> Trace | LayerTrace:
    """cached_trace's trace as the cache stores it: a full model's as captured from its distinct layers (LayerTrace),
    an MTP module's whole."""
    key = trace_key(config, **shape)
    stored = load_stored(key)
    if stored is None:  # torch is imported only here
        if config.mtp:
            from workloads.mtp import trace_mtp

            stored = trace_mtp(config, **shape)
        else:
            from workloads.capture import trace_layers

            stored = trace_layers(config, **shape)
        store(key, stored)
    return stored
