"""explore run's header says where an engine pads a static point's decode steps to a captured size."""

from __future__ import annotations

import pytest

from explore.cli import main
from tests.explore.tiny_sweep import write_tiny_model


@pytest.mark.parametrize(("batch", "execution", "padded"), [
    # vLLM captures 1, 2, 4, every multiple of 8 below 256, every multiple of 16 up to 512 at its default limits
    # (vllm-project/vllm vllm/config/vllm.py at 000fc94, VllmConfig._set_cudagraph_sizes).
    (3, "engine", 4), (12, "engine", 16), (100, "engine", 104),
    (4, "engine", None), (16, "engine", None),  # captured sizes run as they are
    (600, "engine", None),  # past the largest captured size: launched from the host as it is
    (3, "eager", None), (3, "graphs", None),  # only an engine pads
])
def test_the_header_names_the_padded_decode(tmp_path, capsys, batch, execution, padded):
    run = ["run", "--model", write_tiny_model(tmp_path), "--device", "h100-sxm", "--batch", str(batch),
           "--prompt", "32", "--output", "4", "--execution", execution]
    assert main(run) == 0
    header = capsys.readouterr().out.splitlines()[0]
    if padded is None:
        assert "padded" not in header
    else:
        assert f", its decode padded from {batch} to {padded} sequences (vLLM's captured sizes)" in header
