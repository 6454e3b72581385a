"""Shared fixtures: tiny model configs and a session-wide cache of captured traces.

Full-size fake traces of a 7B model take one to three seconds each, so every test asks `trace_of` and a
trace with the same arguments is captured once per test session.
"""

from __future__ import annotations

import functools
import os

import pytest

from workloads.model_config import ModelConfig, load_model_config


def _tiny(**fields) -> ModelConfig:
    base = dict(
        model_type="llama", hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
        head_dim=16, vocab_size=128, max_positions=256, norm="rms", positions="rope", mlp="gated_silu",
        attention_bias=False, mlp_bias=False, tie_embeddings=False,
    )
    base.update(fields)
    return ModelConfig(**base)


@pytest.fixture(scope="session")
def tiny_llama() -> ModelConfig:
    """Llama family, GQA: hidden 64, 2 layers, 4 heads of 16, 2 KV heads, FFN 128, vocab 128."""
    return _tiny(name="tiny-llama")


@pytest.fixture(scope="session")
def tiny_mixtral() -> ModelConfig:
    """Mixtral family: the tiny llama with 4 experts, 2 per token."""
    return _tiny(name="tiny-mixtral", model_type="mixtral", num_experts=4, experts_per_token=2)


@pytest.fixture(scope="session")
def tiny_opt() -> ModelConfig:
    """OPT family: LayerNorm, learned positions, ReLU MLP, biases, tied embeddings, full MHA."""
    return _tiny(name="tiny-opt", model_type="opt", num_kv_heads=4, norm="layer", positions="learned", mlp="relu",
                 attention_bias=True, mlp_bias=True, tie_embeddings=True, dtype="float16")


@functools.cache
def _cached_trace(config: ModelConfig, phase: str, batch: int, seq_len: int, context_len: int, fake: bool):
    from workloads.capture import trace_model

    return trace_model(config, phase=phase, batch=batch, seq_len=seq_len, context_len=context_len, fake=fake)


@pytest.fixture(scope="session")
def trace_of():
    """trace_of(model, phase, batch, seq_len, context_len=0, fake=True): a captured Trace, memoized.

    `model` is a preset name or a ModelConfig.
    """

    def get(model, phase: str, batch: int, seq_len: int, context_len: int = 0, fake: bool = True):
        config = load_model_config(model) if isinstance(model, str) else model
        return _cached_trace(config, phase, batch, seq_len, context_len, fake)

    return get


@pytest.fixture(scope="session")
def one_line_error():
    """one_line_error(call) -> (where, rest): call() must raise an InputError of one line that quotes no whole
    section; `where` is the file (and line) it names, `rest` the message after it, so that checks on the rest
    cannot be satisfied by the name of a test's temporary folder."""
    from workloads.errors import InputError

    def check(call) -> tuple[str, str]:
        with pytest.raises(InputError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "{'" not in message, message
        where, _, rest = message.partition(": ")
        return where, rest

    return check


@pytest.fixture(scope="session", autouse=True)
def trace_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """The on-disk trace cache (workloads/trace_cache.py) of the whole test run, in a temporary folder: tests never
    read or write the user's cache, and subprocesses they start inherit the variable. The run's pytest-xdist workers
    share one folder (their temporary folders lie side by side in the run's own), so a model one worker traced loads
    on the other instead of being traced twice; the cache's writes are atomic, so concurrent writers are safe."""
    from workloads.trace_cache import CACHE_ENV

    run_folder = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_folder = run_folder.parent  # a worker's basetemp is the run's folder / its worker id
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(run_folder / "llm-codesign-cache"))
        yield


@pytest.fixture(scope="session")
def evaluator():
    """One Evaluator for the session: everything it memoizes (traces, tables, devices) is a pure function of its
    key, so tests share the full-size traces instead of capturing them once per module."""
    from explore.evaluate import Evaluator

    return Evaluator()
