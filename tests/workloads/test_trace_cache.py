"""The on-disk trace cache: a stored trace loads equal, any change of what it depends on misses, a broken file is
captured again, and a cached `explore run` never imports torch."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from tests.workloads.same_trace import PASSES, assert_same_trace
from workloads import trace_cache
from workloads.layer_replication import LayerTrace
from workloads.model_config import ModelConfig, load_model_config
from workloads.trace import Trace
from workloads.trace_cache import CACHE_ENV, cache_dir, cached_trace, load, store, trace_key, trace_path

ROOT = Path(__file__).resolve().parents[2]
SHAPE = {"phase": "decode", "batch": 2, "seq_len": 1, "context_len": 8}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder of this test's own."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "traces"


@pytest.fixture
def decode_trace(trace_of, tiny_llama: ModelConfig) -> Trace:
    return trace_of(tiny_llama, "decode", 2, 1, context_len=8)


@pytest.fixture
def captures(monkeypatch: pytest.MonkeyPatch, tiny_llama: ModelConfig, decode_trace: Trace) -> list[dict]:
    """The calls cached_trace makes to the capture (which returns the tiny trace's layers without running torch);
    decode_trace is captured first, as trace_model calls trace_layers too."""
    import workloads.capture

    captured = workloads.capture.trace_layers(tiny_llama, **SHAPE)
    calls: list[dict] = []

    def fake_capture(config: ModelConfig, **shape) -> LayerTrace:
        calls.append(shape)
        return captured

    monkeypatch.setattr(workloads.capture, "trace_layers", fake_capture)
    return calls


def test_a_stored_trace_loads_equal(cache: Path, tiny_llama: ModelConfig, decode_trace: Trace) -> None:
    key = trace_key(tiny_llama, **SHAPE)
    assert load(key) is None
    store(key, decode_trace)
    assert trace_path(key).parent == cache and trace_path(key).name.startswith("tiny-llama-decode-")
    loaded = load(key)
    assert loaded == decode_trace and loaded is not decode_trace
    assert all(isinstance(t.shape, tuple) for op in loaded.ops for t in op.inputs + op.outputs)
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


@pytest.mark.parametrize("phase", PASSES)
@pytest.mark.parametrize("name", ["llama-2-7b", "mixtral-8x7b", "deepseek-v2-lite", "gpt-oss-20b"])
def test_a_full_size_trace_stored_as_its_layers_loads_as_captured(cache: Path, name: str, phase: str) -> None:
    """A full-size fake trace of a dense model, an MoE model, an MLA one (DeepSeek-V2-Lite: MLA, a dense first layer,
    then MoE layers) and one with windows in every other layer (gpt-oss-20b: each layer's window in the trace), stored
    from its distinct layers and loaded, equals trace_model's capture of the same pass field
    by field and op by op (Trace.to_dict: shapes as tuples, FLOPs int or float as captured, every layer's module path
    and number), and its file holds the ops of the traced layers only."""
    from workloads.capture import trace_model

    config, shape = load_model_config(name), PASSES[phase]
    captured = trace_model(config, **shape)
    assert_same_trace(cached_trace(config, **shape), captured)  # captured into the empty cache
    loaded = load(trace_key(config, **shape))
    assert loaded is not None
    assert_same_trace(loaded, captured)
    with gzip.open(trace_path(trace_key(config, **shape)), "rt") as f:
        stored = json.load(f)
    layers = {op.layer for op in captured.ops} - {None}
    assert len(stored["layers"]["sources"]) == len(layers) == config.num_layers
    assert len(stored["trace"]["ops"]) < len(captured.ops) / 4  # 2 or 3 traced layers of 27 or 32


def test_the_second_call_does_not_capture(cache: Path, tiny_llama: ModelConfig, captures: list[dict],
                                          decode_trace: Trace) -> None:
    first = cached_trace(tiny_llama, **SHAPE)
    second = cached_trace(tiny_llama, **SHAPE)
    assert first == second == decode_trace and len(captures) == 1
    assert captures[0] == SHAPE


@pytest.mark.parametrize("change", [
    {"config": {"num_layers": 3}}, {"config": {"rope_theta": 500000.0}}, {"config": {"name": "other"}},
    {"shape": {"batch": 4}}, {"shape": {"context_len": 16}}, {"shape": {"phase": "prefill", "context_len": 0}},
    {"torch": "0.0.1"},
])
def test_anything_the_trace_depends_on_misses(cache: Path, tiny_llama: ModelConfig, decode_trace: Trace,
                                              monkeypatch: pytest.MonkeyPatch, change: dict) -> None:
    stored = trace_key(tiny_llama, **SHAPE)
    store(stored, decode_trace)
    if "torch" in change:
        monkeypatch.setattr(trace_cache, "torch_version", lambda: change["torch"])
    other = trace_key(replace(tiny_llama, **change.get("config", {})), **(SHAPE | change.get("shape", {})))
    assert trace_path(other) != trace_path(stored) and load(other) is None


def test_logits_at_more_positions_are_another_trace_and_one_leaves_the_key_as_it_was(tiny_llama: ModelConfig) -> None:
    # A speculative verification of 4 tokens a sequence samples all 4 (its LM head runs 4 rows a sequence): not the
    # trace of a 4-token pass sampling its last; sampling one, the default, keys a trace as before the argument was.
    verify = SHAPE | {"seq_len": 4}
    assert trace_path(trace_key(tiny_llama, **verify, sampled=4)) != trace_path(trace_key(tiny_llama, **verify))
    assert trace_key(tiny_llama, **verify, sampled=1) == trace_key(tiny_llama, **verify)
    assert "sampled" not in trace_key(tiny_llama, **verify)


def test_the_same_config_read_from_another_file_hits(cache: Path, tiny_llama: ModelConfig, captures: list[dict],
                                                    decode_trace: Trace) -> None:
    # Where a config.json was read from is no part of what its trace holds: a copy in another folder (each test's
    # own temporary folder, a user's second checkout) loads the trace the first one stored.
    here = replace(tiny_llama, source="/one/folder/config.json")
    there = replace(tiny_llama, source="/another/folder/config.json")
    assert cached_trace(here, **SHAPE) == cached_trace(there, **SHAPE) == decode_trace
    assert len(captures) == 1


def test_the_capture_code_is_part_of_the_key(cache: Path, tiny_llama: ModelConfig, decode_trace: Trace,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store(trace_key(tiny_llama, **SHAPE), decode_trace)
    monkeypatch.setattr(trace_cache, "capture_code_digest", lambda: "edited")
    assert load(trace_key(tiny_llama, **SHAPE)) is None


def _other_key_file(key: dict, trace: Trace) -> bytes:
    """A well-formed cache file that holds another key (a hash collision, a file copied by hand)."""
    return gzip.compress(json.dumps({"key": dict(key, batch=99), "trace": trace.to_dict()}).encode())


def _edited_file(key: dict, trace: Trace, edit) -> bytes:
    """A cache file of the right key and shape whose last op with an output was edited by hand (text for a number):
    read as it was, it failed far from the file, pricing the trace (a traceback)."""
    data = trace.to_dict()
    edit(next(op for op in reversed(data["ops"]) if op["outputs"]))
    return gzip.compress(json.dumps({"key": key, "trace": data}).encode())


def _layers_file(key: dict, trace: Trace, layers: dict) -> bytes:
    """A cache file of the right key whose trace of distinct layers is stored with `layers` (LayerTrace's sources and
    sizes) that do not fit it: a source no traced layer, a size that is text, or 3 traced layers where it has 2."""
    return gzip.compress(json.dumps({"key": key, "trace": trace.to_dict(), "layers": layers}).encode())


@pytest.mark.parametrize("broken", [
    lambda key, trace: b"not gzip at all",
    lambda key, trace: gzip.compress(json.dumps({"key": key, "trace": trace.to_dict()}).encode())[:200],  # cut off
    lambda key, trace: gzip.compress(b"{not json"),
    lambda key, trace: gzip.compress(json.dumps({"key": key, "trace": {"format": "other"}}).encode()),
    lambda key, trace: gzip.compress(json.dumps([1, 2]).encode()),
    _other_key_file,
    lambda key, trace: _edited_file(key, trace, lambda op: op.update(flops="abc")),
    lambda key, trace: _edited_file(key, trace, lambda op: op["bytes_read"].update(weight="12")),
    lambda key, trace: _edited_file(key, trace, lambda op: op["outputs"][0].update(shape=["2", 8])),
    lambda key, trace: _layers_file(key, trace, {"sources": [0, 2], "sizes": [[1, 2], [3, 4]]}),
    lambda key, trace: _layers_file(key, trace, {"sources": [0, 1], "sizes": [[1, "2"], [3, 4]]}),
    lambda key, trace: _layers_file(key, trace, {"sources": [0, 0, 1], "sizes": [[1, 2], [3, 4], [5, 6]]}),
], ids=["not-gzip", "truncated", "not-json", "not-a-trace", "not-an-object", "other-key", "flops-text",
        "bytes-text", "shape-text", "source-not-traced", "size-text", "layers-not-traced"])
def test_a_broken_file_is_captured_again_and_rewritten(cache: Path, tiny_llama: ModelConfig, decode_trace: Trace,
                                                       captures: list[dict], broken) -> None:
    key = trace_key(tiny_llama, **SHAPE)
    trace_path(key).parent.mkdir(parents=True)
    trace_path(key).write_bytes(broken(key, decode_trace))
    assert cached_trace(tiny_llama, **SHAPE) == decode_trace and len(captures) == 1
    assert load(key) == decode_trace  # rewritten whole


def test_a_cache_that_cannot_be_written_still_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tiny_llama: ModelConfig, captures: list[dict],
                                                      decode_trace: Trace, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocker))  # the cache folder would have to be inside a file
    monkeypatch.setattr(trace_cache, "_unwritable", set(), raising=False)  # a fresh process: nothing warned yet
    with caplog.at_level(logging.WARNING, logger=trace_cache.__name__):
        assert cached_trace(tiny_llama, **SHAPE) == decode_trace and len(captures) == 1
        assert cached_trace(tiny_llama, **dict(SHAPE, batch=3)) == decode_trace and len(captures) == 2
    # One line for the folder, not two per trace (a lookup that "ignored" a file that is not there, and a store).
    assert [r.getMessage() for r in caplog.records] == [
        f"{blocker / 'traces'}: traces not cached ([Errno 20] Not a directory: '{blocker / 'traces'}'); they are "
        f"captured again on each run until the folder can be written (or {CACHE_ENV} names another)"]


def test_concurrent_writers_leave_one_whole_file(cache: Path, tiny_llama: ModelConfig, decode_trace: Trace) -> None:
    key = trace_key(tiny_llama, **SHAPE)
    seen: list[Trace | None] = []
    writers = [threading.Thread(target=store, args=(key, decode_trace)) for _ in range(8)]
    readers = [threading.Thread(target=lambda: seen.append(load(key))) for _ in range(8)]
    for thread in [t for pair in zip(writers, readers, strict=True) for t in pair]:
        thread.start()
    for thread in writers + readers:
        thread.join()
    assert all(trace is None or trace == decode_trace for trace in seen)  # never half a file
    assert load(key) == decode_trace and [p.name for p in cache.iterdir()] == [trace_path(key).name]


def test_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine" / "traces"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "llm-codesign" / "traces"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "llm-codesign" / "traces"


# A process in which importing torch fails: a cached `explore run` must not need it.
NO_TORCH_RUN = """
import sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
from explore.cli import main
code = main(sys.argv[1:])
assert sys.modules["torch"] is None and not [m for m in sys.modules if m.startswith("torch.")], "torch imported"
sys.exit(code)
"""


def test_a_cached_explore_run_does_not_import_torch(cache: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from explore.cli import main

    model = tmp_path / "tiny" / "config.json"
    model.parent.mkdir()
    model.write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128, "max_position_embeddings": 256,
        "torch_dtype": "bfloat16"}))
    args = ["run", "--model", str(model), "--device", "h100-sxm", "--batch", "2", "--prompt", "32", "--output", "4",
            "--json"]
    assert main(args) == 0  # traces the model (torch is in this process already) and fills the cache
    first = json.loads(capsys.readouterr().out)
    assert len(list(cache.glob("*.json.gz"))) == 2  # the prefill and the decode step
    done = subprocess.run([sys.executable, "-c", NO_TORCH_RUN, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == first
