"""The eager host cost per kernel is a field of a GPU spec (overhead.framework_dispatch_us): gpt-fast's figure unless
a device file or a sweep sets a host's own, which moves eager steps and nothing else."""

from __future__ import annotations

import pytest

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from hw_models.device import EAGER_DISPATCH_S, dispatch_s
from hw_models.registry import load_device, read_device_yaml, what_if_fields
from workloads.errors import InputError


def test_the_default_is_gpt_fasts_and_an_override_sets_a_hosts_own():
    assert load_device("h200").spec.overhead.framework_dispatch_us * 1e-6 == pytest.approx(EAGER_DISPATCH_S)
    device = load_device("h200", {"overhead.framework_dispatch_us": 30.0})
    assert dispatch_s(device, "eager") == pytest.approx(30e-6)
    assert dispatch_s(device, "graphs") == dispatch_s(device, "engine") == 0.0


def test_a_misspelled_or_negative_host_cost_is_refused():
    with pytest.raises(InputError, match="no such field to override"):
        load_device("h200", {"overhead.framework_dispatch_usx": 30.0})
    with pytest.raises(InputError, match="greater than or equal to 0"):
        load_device("h200", {"overhead.framework_dispatch_us": -1.0})


def test_the_what_ifs_a_device_lists_include_fields_its_file_leaves_to_their_default():
    """No GPU preset writes framework_dispatch_us (each takes the default), yet it is a what-if: `--set` lists it when
    it refuses an unknown field. Fields a cost model does not read stay out."""
    fields = what_if_fields("h200")
    assert "overhead.framework_dispatch_us" in fields and "memory.bandwidth_GBps" in fields
    assert "framework_dispatch_us" not in read_device_yaml("h200")[0]["overhead"]
    assert not any(field.endswith("source") or field == "name" for field in fields)


def test_a_host_bound_eager_step_scales_with_the_host_and_a_graph_step_does_not():
    # Batch 1 of Llama-2-7B launched eagerly is host-bound at 20 us per kernel and more: its step is the kernels'
    # dispatch, so doubling the host cost doubles it; replayed from a CUDA graph the host does not launch them.
    evaluator = Evaluator()

    def tpot(execution: str, dispatch_us: float) -> float:
        point = DesignPoint(model="llama-2-7b", device="h200", batch=1, prompt=512, output=2, execution=execution,
                            overrides=(("overhead.framework_dispatch_us", dispatch_us),))
        return evaluator.evaluate(point).metrics["tpot_s"]

    assert tpot("eager", 40.0) == pytest.approx(2 * tpot("eager", 20.0), rel=1e-9)
    assert tpot("graphs", 40.0) == tpot("graphs", 20.0)
