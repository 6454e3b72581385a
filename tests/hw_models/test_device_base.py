"""A device file built on a base preset: the base's fields with its changes, priced as the same what-if override."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable
from workloads.errors import InputError


def _table() -> KernelTable:
    gemv = Kernel(kind=KernelKind.GEMM, op="mm", flops=2 * 4096 * 4096, weight_bytes=2 * 4096 * 4096,
                  act_bytes=4 * 4096, kv_bytes=0.0, dtype="bf16", tensor_core=True, m=1, n=4096, k=4096, batch=1)
    norm = Kernel(kind=KernelKind.NORM, op="rms_norm", flops=4096, weight_bytes=0.0, act_bytes=4 * 4096,
                  kv_bytes=0.0, dtype="bf16", tensor_core=False)
    return KernelTable.from_kernels([gemv, norm])


def test_a_file_on_a_base_preset_prices_as_the_override_does(tmp_path):
    path = tmp_path / "h100-2x-hbm.yaml"
    path.write_text("base: h100-sxm\nmemory:\n  bandwidth_GBps: 6700\n")
    derived = load_device(str(path))
    override = load_device("h100-sxm", {"memory.bandwidth_GBps": 6700})
    assert derived.name == "h100-2x-hbm" and derived.bandwidth_Bps == 6.7e12
    assert derived.calibration is not None  # the base's fits are kept, as an override keeps them
    table = _table()
    np.testing.assert_allclose(derived.cost_table(table).time_s, override.cost_table(table).time_s)
    np.testing.assert_allclose(derived.cost_table(table).compute_J, override.cost_table(table).compute_J)
    # More bandwidth is never slower than the base.
    assert np.all(derived.cost_table(table).time_s <= load_device("h100-sxm").cost_table(table).time_s)


@pytest.mark.parametrize(("text", "line", "message"), [
    ("base: h100-sx\n", 1, "base: found 'h100-sx' \\(did you mean 'h100-sxm'\\?\\), allowed: a device preset name"),
    ("base: h100-sxm\nmemory:\n  l2_cache_MB: 100\n", 3, "memory.l2_cache_MB: not a what-if knob"),
    ("base: h100-sxm\nmemory:\n  bandwith_GBps: 6700\n", 3, "memory.bandwith_GBps: no such field"),
    # T-MAC's LUT kernels on an Altra: lut is a CPU field, but a section the Altra preset leaves out (it said 'no such
    # field to override', as for a misspelling).
    ("base: ampere-altra\nlut:\n  engine: simd\n", 3, "lut: a section ampere-altra leaves out, which an "
     "override cannot add \\(a device file of its own, without base:, may have it\\)"),
])
def test_bad_base_files_are_one_line_errors(tmp_path, text, line, message):
    """Each names the file and the line of the key, what was found and what is allowed."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        load_device(str(path))
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{path}:{line}: ")
    # The key as the file writes it, straight after the line (no 'device.' that the file does not have).
    assert re.match(message, str(err.value).removeprefix(f"{path}:{line}: "))


def test_a_file_on_a_base_preset_may_change_a_yes_no_or_name_field(tmp_path):
    """What a what-if may not set (it sets numbers) a device file may: NeuPIMs with one row buffer and no sub-batch
    interleaving, the naive NPU+PIM design, and a source for a changed number."""
    path = tmp_path / "neupims-single.yaml"
    path.write_text("base: neupims\npim:\n  row_buffers: single\n  sub_batch_interleaving: false\n"
                    "memory:\n  bandwidth_GBps: 2048\n  source: a what-if\n")
    spec = load_device(str(path)).spec
    assert (spec.pim.row_buffers, spec.pim.sub_batch_interleaving) == ("single", False)
    assert spec.memory.bandwidth_GBps == 2048
    with pytest.raises(InputError, match="device.pim.row_buffers: not a what-if knob: a name"):
        load_device("neupims", {"pim.row_buffers": 1})
